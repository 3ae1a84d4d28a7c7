"""Quantizer: the integer graph of a folded decoder reproduces its float spikes,
and the compiled shipped default runs identically on int, emulator and Lava."""

import numpy as np
import pytest
import torch

from snn_compile.models.spikedecoder import is_spike_record
from snn_compile.hw_sim.int_reference import run_token_time
from snn_compile.compiler.pipeline import calibration_tokens, load_qgraph
from snn_compile.compiler.quantize import lava_synapse, pow2_grid, quantize_decoder
from snn_compile.compiler.qgraph import QGraph
from snn_compile.models.checkpoint import build_model, load_checkpoint
from snn_compile.models.config import ModelConfig
from snn_compile.models.fold import fold
from snn_compile.models.sampling import generate


def test_pow2_grid_and_exact_synapse():
    w = np.array([[0.5, -0.25], [0.125, 0.0]])
    m, e, err = pow2_grid(w)
    assert err == 0 and np.array_equal(m * 2.0 ** e, w)
    syn, st = lava_synapse("s", "a", "b", w, k_log2=10)
    assert st.exact and syn.weights.max() % 2 == 0          # mixed sign → even values
    s = np.array([1, 1])
    a = syn.weights @ s << syn.weight_exp
    assert np.array_equal(a, (w @ s) * 2 ** 10)


@pytest.mark.parametrize("seed", [0, 1])
def test_integer_graph_equals_float_model(seed):
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=13, d_model=16, n_layers=2, n_heads=2, context=16,
                      timesteps=3, beta_init=0.6)
    f = fold(build_model(cfg))
    x = torch.randint(0, 13, (2, 16))
    q, rep = quantize_decoder(f, x[:1])
    ir = run_token_time(q, x)
    fr = f.forward(x)
    for k, v in fr["spikes"].items():
        if not k.endswith(".A"):
            assert np.array_equal(v.numpy() != 0, np.asarray(ir.outputs[k]) != 0), k
    assert np.allclose(fr["logits"].numpy(), np.asarray(ir.logits), atol=1e-9)


def test_shipped_default_compiles_and_matches(tmp_path):
    q, rep, tok = load_qgraph("default:spikedecoder")
    assert not rep["warnings"]          # nothing beyond 16-bit dendrites or 24-bit payloads
    p = tmp_path / "m.qgraph"
    q.save(str(p))
    q2 = QGraph.load(str(p))
    model, _, _ = load_checkpoint("default:spikedecoder")
    x = calibration_tokens(tok, 128, 48)
    fr = fold(model.double()).forward(x)
    ir = run_token_time(q2, x)
    spiking = [k for k in fr["spikes"] if is_spike_record(k)]
    diff = sum(int(((fr["spikes"][k].numpy() != 0) != (np.asarray(ir.outputs[k]) != 0)).sum())
               for k in spiking)
    total = sum(fr["spikes"][k].numel() for k in spiking)
    # the graded readers and the decaying memory round down (weight_exp < 0): the integer
    # graph follows the float model closely, not exactly (README: measured on the split)
    assert diff <= 0.03 * total, (diff, total)        # measured: 21 704 of 1 007 616
    y = x[0, 1:]
    ce = [float(torch.nn.functional.cross_entropy(torch.as_tensor(np.asarray(lg))[0, :-1], y))
          for lg in (fr["logits"].numpy(), ir.logits)]
    assert abs(ce[1] - ce[0]) <= 0.03 * ce[0], ce


def test_shipped_default_greedy_text_identical_on_int_emulator_and_lava():
    from snn_compile.hw_sim.int_reference import IntReferenceBackend
    from snn_compile.hw_sim.emulator import EmulatorBackend
    from snn_compile.hw_sim.lava_runner import LavaBackend
    q, _, tok = load_qgraph("default:spikedecoder")
    prompt = tok.encode("The")          # Lava runs the 4 x 128 default at seconds per token
    texts = []
    for b in (IntReferenceBackend(q), EmulatorBackend(q), LavaBackend(q)):
        try:
            texts.append(generate(b, prompt, 4))
        finally:
            b.close()
    assert texts[0] == texts[1] == texts[2]
