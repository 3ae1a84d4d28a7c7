"""Token shift: blocks that also receive the spikes of the previous tokens.

Checked at every stage, spike for spike: torch model == folded equations == NIR
interpreter == integer reference (batched and streamed) == both emulator engines ==
Lava, including a reset in the middle of a stream (the delay rings must be cleared).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from snn_compile.compiler.qgraph import QGraph, QGraphError
from snn_compile.errors import UserError
from snn_compile.models.checkpoint import build_model
from snn_compile.models.config import ModelConfig
from snn_compile.models.fold import fold


def shifted(mode="diag", into="both", K=2, seed=0):
    torch.manual_seed(seed)
    m = build_model(ModelConfig(vocab_size=11, d_model=16, n_layers=2, n_heads=2, context=12,
                                timesteps=3, beta_init=0.7, token_shift=K, shift_mode=mode,
                                shift_into=into))
    with torch.no_grad():           # larger gains: the shifted spikes must matter
        for blk in m.blocks:
            for tgt in blk.shift_targets:
                p = getattr(blk, f"S_{tgt}")
                p.mul_(3.0 if mode == "diag" else 4.0)
    return m.double().eval()


@pytest.mark.parametrize("mode,into", [("diag", "both"), ("full", "qkv"), ("diag", "ff")])
def test_gradients_reach_the_shift_weights_and_parameters(mode, into):
    m = shifted(mode, into).float().train()
    x = torch.randint(0, 11, (3, 12))
    m(x).sum().backward()
    names = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not [n for n in names if ".S_" in n], names
    base = sum(p.numel() for p in build_model(ModelConfig(
        vocab_size=11, d_model=16, n_layers=2, n_heads=2, context=12, timesteps=3)).parameters())
    extra = sum(p.numel() for p in m.parameters()) - base
    per_target = {"qkv": 16, "ff": 16} if mode == "diag" else {"qkv": 48 * 16, "ff": 64 * 16}
    targets = ("qkv", "ff") if into == "both" else (into,)
    assert extra == 2 * 2 * sum(per_target[t] for t in targets)


def test_shift_reads_exactly_the_previous_tokens():
    """Changing token j changes nothing before j; block0's q/k/v see the embedding
    spikes of tokens n, n-1, n-2 only (K = 2), so they change at j, j+1, j+2 at most."""
    m = shifted()
    x = torch.randint(0, 11, (1, 12))
    _, rec = m(x, record=True)
    y = x.clone()
    y[0, 4] = (y[0, 4] + 5) % 11
    _, rec2 = m(y, record=True)
    for k in rec:
        assert torch.equal(rec[k][:, :4], rec2[k][:, :4]), k
    # block0.qkv sees emb of tokens n, n-1, n-2 only (emb is per token)
    diff = (rec["block0.qkv"] != rec2["block0.qkv"]).flatten(2).any(-1)[0]
    changed = set(torch.nonzero(diff).flatten().tolist())
    assert changed and changed <= {4, 5, 6}
    assert changed & {5, 6}, "the shifted spikes of token 4 reach tokens 5-6"


def test_refused_outside_the_spikedecoder():
    with pytest.raises(UserError, match="spikedecoder only"):
        ModelConfig(kind="partial", ann_blocks=("norm",), token_shift=1)
    with pytest.raises(UserError, match="token_shift"):
        ModelConfig(token_shift=3)


def test_fold_nir_interpreter_equal_the_model(tmp_path):
    from snn_compile.compiler.from_nir import folded_from_nir
    from snn_compile.export.interpreter import NIRInterpreter, run_tokens
    from snn_compile.export.nir_io import read_nir, write_nir
    from snn_compile.export.to_nir import export_model, nir_node_of
    m = shifted()
    x = torch.randint(0, 11, (2, 12))
    logits, rec = m(x, record=True)
    f = fold(m)
    assert f.token_shift == 2 and len(f.blocks[0].S_qkv) == 2 and len(f.blocks[1].S_ff) == 2
    r = f.forward(x)
    assert torch.allclose(logits, r["logits"], atol=1e-9)
    for k, v in rec.items():
        assert torch.equal(v, r["spikes"][k]), k
    path = str(tmp_path / "m.nir")
    write_nir(export_model(m), path)
    g = read_nir(path)
    assert type(g.nodes["block0.x_lag2"]).__name__ == "Delay"
    f2 = folded_from_nir(g)
    r2 = f2.forward(x)
    for k, v in rec.items():
        assert torch.equal(v, r2["spikes"][k]), k
    it = run_tokens(NIRInterpreter(g), x)
    for k, v in rec.items():
        assert torch.equal(v, it["spikes"][nir_node_of(k)].to(v.dtype)), k


def test_a_delay_that_is_not_whole_tokens_is_refused(tmp_path):
    from snn_compile.compiler.from_nir import folded_from_nir
    from snn_compile.export.to_nir import export_model
    g = export_model(shifted())
    g.nodes["block1.mid_lag1"].delay = g.nodes["block1.mid_lag1"].delay * 2 / 3
    with pytest.raises(UserError, match="block1.mid_lag1.*token shift of 1 must be 3 steps"):
        folded_from_nir(g)


def _quantized():
    from snn_compile.compiler.quantize import quantize_decoder
    m = shifted()
    torch.manual_seed(1)
    x = torch.randint(0, 11, (3, 12))
    q, _ = quantize_decoder(fold(m), x)
    return m, q, x


def test_quantized_graph_equals_the_model_and_streams():
    from snn_compile.hw_sim.int_reference import IntReferenceBackend, run_token_time
    m, q, x = _quantized()
    lagged = [s for s in q.synapses if s.token_lag]
    assert {s.token_lag for s in lagged} == {1, 2} and len(lagged) == 8
    for s in lagged:       # one whole window per lag, on top of the pipeline step
        assert s.delay == q.pop(s.dst).depth - q.pop(s.src).depth - 1 + s.token_lag * q.window
    run = run_token_time(q, x)
    _, rec = m(x, record=True)
    for k, v in rec.items():
        if k in run.outputs:
            assert torch.equal(run.outputs[k].double(), v), k
    be = IntReferenceBackend(q)
    streamed = np.stack([be.feed(int(t)) for t in x[0]])
    assert np.array_equal(streamed, run.logits[0].numpy())


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_emulator_equals_integer_reference(engine):
    from snn_compile.hw_sim.int_reference import run_token_time
    from snn_compile.hw_sim.emulator import Emulator
    _, q, x = _quantized()
    ref = run_token_time(q, x)
    emu = Emulator(q, batch=x.shape[0], engine=engine)
    got = emu.run_sequence(x)
    assert torch.equal(got.logits_int, ref.logits_int)
    for k, v in ref.outputs.items():
        assert torch.equal(got.outputs[k], v), k


def test_qgraph_checks_the_lag_timing_and_keeps_it_on_disk(tmp_path):
    _, q, _ = _quantized()
    p = str(tmp_path / "q.zip")
    q.save(p)
    q2 = QGraph.load(p)
    assert [s.token_lag for s in q2.synapses] == [s.token_lag for s in q.synapses]
    s = next(s for s in q2.synapses if s.token_lag == 2)
    s.delay -= 1
    with pytest.raises(QGraphError, match="token lag 2"):
        q2.validate()


def test_theoretical_ops_count_the_shifted_spikes():
    from snn_compile.benchmarks import theory
    from snn_compile.benchmarks.theory import model_shape
    m = shifted()
    shape = model_shape(m)
    assert (shape.shift_qkv, shape.shift_ff) == (2, 2)
    x = torch.randint(0, 11, (1, 12))
    _, rec = m(x, record=True)
    spk = {k: v[0].detach().numpy() for k, v in rec.items() if not k.endswith(".A")}
    rows = {(r.layer, r.op): r.per_token for r in theory.snn_op_rows(shape, spk)}
    emb = (spk["emb"] != 0).reshape(12, -1).sum(1)
    want = np.array([emb[n - 1] * (n >= 1) + emb[n - 2] * (n >= 2) for n in range(12)]) * 48
    assert np.array_equal(rows[("block0", "qkv_shift")], want)
    v = {(r.layer, r.op): r.per_token for r in theory.variant_op_rows(shape, (), spk)}
    assert np.array_equal(v[("block1", "ff1_shift")], rows[("block1", "ff1_shift")])


def test_lava_equals_reference_across_a_reset():
    pytest.importorskip("lava.proc.io.injector")
    from snn_compile.hw_sim.int_reference import IntReferenceBackend
    from snn_compile.hw_sim.lava_runner import LavaBackend
    _, q, x = _quantized()
    seq = [int(t) for t in x[0]]
    ib, lb = IntReferenceBackend(q, probes=True), LavaBackend(q, probe=True)
    try:
        for part in (seq[:5], seq[5:9]):
            ib.reset()
            lb.reset()
            a = np.stack([ib.feed(t) for t in part])
            b = np.stack([lb.feed(t) for t in part])
            assert np.array_equal(a, b)
    finally:
        lb.close()


def test_cli_trains_exports_and_compiles_a_shifted_model(run_cli, tmp_path):
    (tmp_path / "c.txt").write_text("the cat sat on the mat. " * 120)
    r = run_cli("train", "--data", "c.txt", "--token-shift", "1", "--shift-mode", "full",
                "--shift-into", "qkv", "--steps", "3", "--batch-size", "4", "--d-model", "16",
                "--heads", "2", "--layers", "1", "--context", "16", "--eval-interval", "3",
                "--no-learning-guard", "-o", "m.pt")
    assert r.returncode == 0, r.stderr
    r = run_cli("export", "m.pt", "-o", "m.nir")
    assert r.returncode == 0, r.stderr
    r = run_cli("compile", "m.nir", "-o", "m.qgraph")
    assert r.returncode == 0, r.stderr
    q = QGraph.load(str(tmp_path / "m.qgraph"))
    assert [s.token_lag for s in q.synapses if s.token_lag] == [1]
    r = run_cli("train", "--token-shift", "3", "--steps", "1", "-o", "bad.pt")
    assert r.returncode == 2 and "--token-shift: must be one of 0, 1, 2" in r.stderr
    assert "Loihi 2 delays end at 62 steps" in r.stderr
    assert not (tmp_path / "bad.pt").exists()


def test_a_shift_longer_than_the_delay_rings_is_refused():
    from snn_compile.compiler.quantize import quantize_decoder
    torch.manual_seed(0)
    m = build_model(ModelConfig(vocab_size=11, d_model=16, n_layers=4, n_heads=2, context=12,
                                timesteps=3, token_shift=2))
    with pytest.raises(UserError, match=r"needs a delay of \d+ steps \(2 token windows.*"
                                        r"smaller --token-shift"):
        quantize_decoder(fold(m))
