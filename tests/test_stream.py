"""The residual-stream SpikeDecoder with the decaying attention memory, at every stage.

torch model == folded equations == NIR interpreter (spikes); quantized graph: integer
reference (batched and streamed) == numpy and torch emulators == Lava fixed_pt, every
population, every step, every token; the model trains at depth (gradients reach every
parameter at 6 blocks, causality at 6 blocks); ablation, the window rule and old formats.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from snn_compile.errors import UserError
from snn_compile.models.checkpoint import build_model
from snn_compile.models.config import ModelConfig
from snn_compile.models.fold import fold
from snn_compile.models.spikedecoder import is_spike_record


def stream_model(layers=2, decay=True, shift=1, seed=0, d=16, heads=2, context=10, T=2):
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=11, d_model=d, n_layers=layers, n_heads=heads,
                      context=context, timesteps=T, beta_init=0.7, residual="stream",
                      attention_memory="decay" if decay else "sum", token_shift=shift)
    m = build_model(cfg)
    with torch.no_grad():     # an untrained attention barely fires: make it matter
        for blk in m.blocks:
            blk.norm_attn.gamma.mul_(3.0)
            blk.W_o.mul_(3.0)
    return m


def calibrated(m, seed=1):
    """Running norm statistics from a few training-mode passes, then eval in float64."""
    g = torch.Generator().manual_seed(seed)
    m.train()
    with torch.no_grad():
        for _ in range(20):
            m(torch.randint(0, 11, (4, m.cfg.context), generator=g))
    return m.double().eval()


@pytest.mark.parametrize("decay", [True, False])
def test_fold_and_nir_interpreter_equal_the_model(tmp_path, decay):
    from snn_compile.compiler.from_nir import folded_from_nir
    from snn_compile.export.interpreter import NIRInterpreter, run_tokens
    from snn_compile.export.nir_io import read_nir, write_nir
    from snn_compile.export.to_nir import export_model, nir_node_of
    m = calibrated(stream_model(decay=decay))
    x = torch.randint(0, 11, (2, 10))
    logits, rec = m(x, record=True)
    r = fold(m).forward(x)
    assert torch.allclose(logits, r["logits"], atol=1e-9)
    spiking = [k for k in rec if is_spike_record(k)]
    assert len(spiking) == 2 * 5 + 1
    for k in spiking:
        assert torch.equal(rec[k], r["spikes"][k]), k
    path = str(tmp_path / "m.nir")
    write_nir(export_model(m), path)
    g = read_nir(path)
    r2 = folded_from_nir(g).forward(x)
    it = run_tokens(NIRInterpreter(g), x)
    for k in spiking:
        assert torch.equal(rec[k], r2["spikes"][k]), k
        assert torch.equal(rec[k], it["spikes"][nir_node_of(k)].to(rec[k].dtype)), k
    for i in range(2):
        assert torch.allclose(rec[f"block{i}.A"], it["spikes"][f"block{i}.attention"],
                              rtol=1e-9, atol=1e-9)
    assert torch.allclose(logits, it["logits"], atol=1e-9)


def _quantized(decay=True, shift=1):
    from snn_compile.compiler.quantize import quantize_decoder
    m = calibrated(stream_model(decay=decay, shift=shift))
    torch.manual_seed(2)
    x = torch.randint(0, 11, (3, 10))
    q, rep = quantize_decoder(fold(m), x)
    return m, q, rep, x


def test_quantized_graph_structure_and_float_agreement():
    from snn_compile.hw_sim.int_reference import IntReferenceBackend, run_token_time
    m, q, rep, x = _quantized()
    assert q.window == m.cfg.memory_window == m.cfg.timesteps + 9 * 2 + 3
    mem = q.pop("block0.mem")
    assert mem.kind == "accum" and mem.decaying
    dh = m.cfg.d_model // m.cfg.n_heads
    assert sorted(set(mem.decay)) == sorted(set(m.cfg.memory_decay))
    assert mem.decay[:dh * dh] == [m.cfg.memory_decay[0]] * (dh * dh)
    assert {p.role for p in q.populations.values() if p.kind == "graded"} == {"stream",
                                                                               "readout"}
    assert rep.populations["stream"]["payload_headroom"] > 1
    run = run_token_time(q, x)
    with torch.no_grad():
        _, rec = m(x, record=True)
    diff = sum(int((run.outputs[k].numpy() != 0).__ne__(v.numpy() != 0).sum())
               for k, v in rec.items() if is_spike_record(k))
    total = sum(v.numel() for k, v in rec.items() if is_spike_record(k))
    assert diff <= 0.02 * total, (diff, total)    # truncating shifts: nearly, not exactly
    be = IntReferenceBackend(q)
    streamed = np.stack([be.feed(int(t)) for t in x[0]])
    assert np.array_equal(streamed, run.logits[0].numpy())


@pytest.mark.parametrize("engine", ["numpy", "torch"])
@pytest.mark.parametrize("decay", [True, False])
def test_emulator_equals_integer_reference(engine, decay):
    from snn_compile.hw_sim.int_reference import run_token_time
    from snn_compile.hw_sim.emulator import Emulator
    _, q, _, x = _quantized(decay=decay)
    ref = run_token_time(q, x)
    got = Emulator(q, batch=x.shape[0], engine=engine).run_sequence(x)
    assert torch.equal(got.logits_int, ref.logits_int)
    for k, v in ref.outputs.items():
        assert torch.equal(got.outputs[k], v), k


def test_lava_equals_reference_every_population_step_and_token():
    pytest.importorskip("lava.proc.io.injector")
    from snn_compile.hw_sim.int_reference import run_token_time
    from snn_compile.hw_sim.lava_runner import LavaSession
    _, q, _, x = _quantized()
    tokens = [int(t) for t in x[0, :5]]
    ref = run_token_time(q, np.asarray(tokens))
    with LavaSession(q) as s:
        res = [s.feed(t, i) for i, t in enumerate(tokens)]
    for name in q.populations:
        got = np.stack([r.outputs[name] for r in res])
        assert np.array_equal(got, ref.outputs[name].numpy()), name
        if q.pop(name).kind != "input":
            assert got.any(), name
    assert np.array_equal(np.stack([r.sums for r in res]), ref.logits_int.numpy())


def test_six_blocks_train_gradients_reach_every_parameter_and_stay_causal():
    m = stream_model(layers=6, context=8)
    x = torch.randint(0, 11, (2, 8))
    m.train()
    loss = torch.nn.functional.cross_entropy(m(x).reshape(-1, 11), x.reshape(-1))
    loss.backward()
    dead = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, dead
    m.eval()
    with torch.no_grad():
        _, rec = m(x, record=True)
        for j in (3, 6):
            y = x.clone()
            y[:, j] = (y[:, j] + 1) % 11
            _, rec2 = m(y, record=True)
            for k, v in rec.items():
                assert torch.equal(v[:, :j], rec2[k][:, :j]), (k, j)


def test_ablating_attention_changes_the_loss_and_silences_it():
    from snn_compile.models.train import evaluate
    m = calibrated(stream_model()).float()
    ids = np.random.default_rng(0).integers(0, 11, 200)
    full = evaluate(m, ids, batch=4)
    m.set_ablation(attention=True)
    abl = evaluate(m, ids, batch=4)
    assert abl["val_loss"] != full["val_loss"]
    assert abl["spike_rates"]["block0.attn"] == 0 and full["spike_rates"]["block0.attn"] > 0


def test_window_mismatch_and_retired_formats_are_refused():
    from snn_compile.compiler.quantize import quantize_decoder
    f = fold(calibrated(stream_model()))
    f.window = f.window - 1
    with pytest.raises(UserError, match="trained for .* Loihi steps per token"):
        quantize_decoder(f)
    d = ModelConfig().to_dict()
    d.update(attention_memory="decay", attention_decay_shift=5)
    with pytest.raises(UserError, match="retired 'decay' attention-memory experiment"):
        ModelConfig.from_dict(d)
    d.update(attention_memory="sum")
    assert ModelConfig.from_dict(d).attention_memory == "sum"


def test_longer_trained_window_is_padded_at_the_readout():
    from snn_compile.hw_sim.int_reference import run_token_time
    from snn_compile.compiler.quantize import quantize_decoder
    from snn_compile.hw_sim.emulator import Emulator
    m = calibrated(stream_model(shift=1))
    f = fold(m)
    f.window += 3
    x = torch.randint(0, 11, (1, 6))
    q, _ = quantize_decoder(f, x)
    assert q.window == f.window
    ref = run_token_time(q, x)
    got = Emulator(q, batch=1).run_sequence(x)
    assert torch.equal(got.logits_int, ref.logits_int)
    assert math.isfinite(float(ref.logits.abs().max()))
