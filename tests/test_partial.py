"""Partially spiking decoders (block exchange), spike embeddings, non-deployable refusals,
and the per-variant operation counts."""

import math

import numpy as np
import pytest
import torch

from snn_compile.benchmarks import theory
from snn_compile.benchmarks.theory import model_shape
from snn_compile.data import make_tokenizer
from snn_compile.errors import UserError
from snn_compile.models.checkpoint import (build_model, load_checkpoint, load_raw,
                                           save_checkpoint, write_raw)
from snn_compile.models.config import BLOCK_KINDS, ModelConfig
from snn_compile.models.embeddings import population_current, temporal_spikes
from snn_compile.models.fold import fold
from snn_compile.models.spikedecoder import LIF

SIZES = dict(vocab_size=11, d_model=16, n_layers=2, n_heads=2, context=12, timesteps=3)


def tiny(kind="partial", seed=0, **kw):
    torch.manual_seed(seed)
    return build_model(ModelConfig(kind=kind, **dict(SIZES, **kw)))


@pytest.mark.parametrize("block", BLOCK_KINDS)
def test_single_exchange_trains_with_gradients_in_both_parts(block):
    m = tiny(ann_blocks=(block,))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    x = torch.randint(0, 11, (8, 12), generator=torch.Generator().manual_seed(1))
    m.train()
    losses = []
    for step in range(2):
        loss = torch.nn.functional.cross_entropy(m(x[:, :-1]).reshape(-1, 11), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        if step == 0:
            ann_types = (torch.nn.Linear, torch.nn.Embedding, torch.nn.LayerNorm,
                         torch.nn.BatchNorm1d)
            ann_names = {f"{mn}.{pn}" if mn else pn for mn, mod in m.named_modules()
                         if isinstance(mod, ann_types) for pn, _ in mod.named_parameters()}
            snn_grads = [float(p.grad.abs().sum()) for n, p in m.named_parameters()
                         if n not in ann_names]
            ann_grads = [float(p.grad.abs().sum()) for n, p in m.named_parameters()
                         if n in ann_names]
            assert ann_grads and max(ann_grads) > 0, "no gradient reaches the ANN part"
            assert snn_grads and max(snn_grads) > 0, "no gradient reaches the spiking part"
        opt.step()
        losses.append(float(loss))
    assert all(math.isfinite(v) for v in losses)
    _, rec = m.eval()(x, record=True)
    assert rec and all(((v == 0) | (v == 1)).all() for k, v in rec.items() if not k.endswith(".A"))


def test_no_exchange_is_the_spikedecoder_and_all_five_the_ann_twin():
    x = torch.randint(0, 11, (2, 12))
    sd = tiny("spikedecoder").double().eval()
    p = tiny().double().eval()
    p.load_state_dict(sd.state_dict())       # same parameter names
    (a, ra), (b, rb) = sd(x, record=True), p(x, record=True)
    assert torch.equal(a, b) and sorted(ra) == sorted(rb)
    assert all(torch.equal(ra[k], rb[k]) for k in ra)
    assert p.non_spiking_blocks() == sd.non_spiking_blocks() == []
    ann = tiny("ann").double().eval()
    pa = tiny(ann_blocks=",".join(BLOCK_KINDS)).double().eval()
    pa.load_state_dict(ann.state_dict())
    assert torch.equal(ann(x), pa(x))
    assert pa.non_spiking_blocks() == ann.non_spiking_blocks()
    assert sum(q.numel() for q in pa.parameters()) == sum(q.numel() for q in ann.parameters())


def test_non_spiking_block_names():
    assert tiny(ann_blocks=("attention",)).non_spiking_blocks() == ["block0.attention",
                                                                    "block1.attention"]
    assert tiny(ann_blocks=("embedding",)).non_spiking_blocks() == ["embedding"]
    assert tiny(ann_blocks=("norm", "residual")).non_spiking_blocks() == [
        "embedding.norm", "block0.norm", "block0.residual", "block1.norm", "block1.residual",
        "head.norm"]
    assert tiny("ann").non_spiking_blocks()[:2] == ["embedding", "block0.attention"]
    with pytest.raises(UserError, match="unknown block kind"):
        ModelConfig(kind="partial", ann_blocks="attention,softmax")
    with pytest.raises(UserError, match="partial"):
        ModelConfig(kind="spikedecoder", ann_blocks=("norm",))
    with pytest.raises(UserError, match="not spiking"):
        ModelConfig(kind="partial", ann_blocks=("embedding",), embedding="temporal")


def test_temporal_embedding_fires_once_at_the_latency_of_its_value():
    # t* = min{t : (t + 1) e > 1}; none when T e <= 1 (strict >, so 0.5 fires at t = 2)
    e = torch.tensor([1.5, 0.6, 0.5, 0.3, 0.2, -1.0]).reshape(1, 1, 6)
    s = temporal_spikes(e, 4, "atan")[0, 0]          # (T, channels)
    expected = {0: 0, 1: 1, 2: 2, 3: 3, 4: None, 5: None}
    for c, t in expected.items():
        want = torch.zeros(4)
        if t is not None:
            want[t] = 1
        assert torch.equal(s[:, c], want), (c, s[:, c])


def test_population_embedding_tuning_curves_and_spikes():
    P = 4                                             # centres -1, -1/3, 1/3, 1; sigma 1/3
    e = torch.tensor([-1.0, 1.0 / 3.0]).reshape(1, 1, 2)
    cur = population_current(e, P)[0, 0]
    mu = np.array([-1, -1 / 3, 1 / 3, 1])
    want = [2 * math.exp(-(v - m) ** 2 / (2 * (1 / 3) ** 2)) for v in (-1, 1 / 3) for m in mu]
    assert np.allclose(cur.numpy(), want, atol=1e-6)
    lif = LIF(0.5, "atan", deployable=False)
    beta = float(lif.beta())
    with torch.no_grad():
        s = lif(cur.reshape(1, 1, 1, -1).expand(1, 1, 4, -1))[0, 0]
        v = torch.zeros(8)
        for t in range(4):                            # the LIF equations, literally
            v = beta * v + cur
            spk = (v > 1).float()
            assert torch.equal(s[t], spk)
            v = v * (1 - spk)
    assert s[:, 0].sum() == 4 and s[:, 6].sum() == 4  # preferred value: a spike every step
    assert s[:, 3].sum() == 0 and s[:, 4].sum() == 0  # far from it: silent
    m = tiny("spikedecoder", embedding="population", population=4)
    assert m.E_tok.shape == (11, 4)
    _, rec = m.eval()(torch.randint(0, 11, (1, 5)), record=True)
    assert rec["emb"].shape == (1, 5, 3, 16)


def _ckpt(tmp_path, name, **kw):
    m = tiny(**kw)
    path = tmp_path / f"{name}.pt"
    save_checkpoint(str(path), m, make_tokenizer("char", "abcdefghijk"), {"steps": 0})
    return path


def test_export_refuses_non_deployable_models_naming_them(tmp_path, run_cli):
    cases = {"partial": (dict(kind="partial", ann_blocks=("attention",)),
                         "block0.attention, block1.attention"),
             "ann": (dict(kind="ann"), "block0.feedforward"),
             "temporal": (dict(kind="spikedecoder", embedding="temporal"), "temporal")}
    for name, (kw, needle) in cases.items():
        path = _ckpt(tmp_path, name, **kw)
        r = run_cli("export", path, "-o", tmp_path / f"{name}.nir")
        assert r.returncode != 0, name
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], (name, r.stderr)
        assert not (tmp_path / f"{name}.nir").exists()
    with pytest.raises(UserError, match="partial"):
        fold(tiny(ann_blocks=()))
    r = run_cli("train", "--model", "ann", "--ann-blocks", "norm", "-o", tmp_path / "x.pt")
    assert r.returncode == 2 and "--model partial" in r.stderr


def test_partial_checkpoint_round_trip_and_eval(tmp_path):
    path = _ckpt(tmp_path, "p", ann_blocks=("feedforward", "norm"), embedding="population")
    m, _, _ = load_checkpoint(str(path))
    assert m.cfg.ann_blocks == ("feedforward", "norm") and m.cfg.embedding == "population"
    from snn_compile.models.train import evaluate
    ev = evaluate(m, np.arange(40) % 11, batch=2)
    assert math.isfinite(ev["val_loss"]) and "block0.qkv" in ev["spike_rates"]


def test_checkpoints_without_the_later_config_fields_load_with_same_logits(tmp_path):
    """A checkpoint written before embedding, ann_blocks, population, attention memory
    and token shift existed loads with their defaults, and the partial decoder with no
    ANN block computes it exactly."""
    m = tiny("spikedecoder").eval()
    tok = make_tokenizer("char", "abcdefghijk")
    path = str(tmp_path / "old.pt")
    save_checkpoint(path, m, tok, {"steps": 1})
    raw = load_raw(path)
    for k in ("embedding", "ann_blocks", "population", "attention_memory",
              "token_shift", "shift_mode", "shift_into", "attention", "residual",
              "memory_decay", "memory_window"):
        del raw["config"][k]
    write_raw(path, raw)
    m2, _, _ = load_checkpoint(path)
    assert m2.cfg.embedding == "rate" and m2.cfg.ann_blocks == () and m2.cfg.token_shift == 0
    x = torch.randint(0, 11, (2, 9))
    p = build_model(ModelConfig(**dict(m2.cfg.to_dict(), kind="partial"))).eval()
    p.load_state_dict(m2.state_dict())
    with torch.no_grad():
        assert torch.equal(m(x), m2(x)) and torch.equal(m2(x), p(x))
        f = fold(m2).forward(x)["logits"]
    assert torch.allclose(m2(x).double(), f, atol=1e-4)


def test_variant_op_counts_reduce_to_snn_and_ann_counts():
    m = tiny("spikedecoder").eval()
    x = torch.randint(0, 11, (1, 12))
    with torch.no_grad():
        _, rec = m(x, record=True)
    spk = {k: v[0].numpy() for k, v in rec.items()}
    shape = model_shape(m)
    a = theory.per_token_energy(theory.snn_op_rows(shape, spk))
    b = theory.per_token_energy(theory.variant_op_rows(shape, (), spk))
    assert np.allclose(a, b)
    for extras in (False, True):
        a = theory.per_token_energy(theory.ann_op_rows(shape, np.arange(12)), extras)
        b = theory.per_token_energy(theory.variant_op_rows(shape, BLOCK_KINDS, {}, n_tokens=12),
                                    extras)
        assert np.allclose(a, b)
    # an exchanged block adds its MACs: the ANN feed-forward costs 2 d d_ff per block
    p = tiny(ann_blocks=("feedforward",)).eval()
    with torch.no_grad():
        _, rec = p(x, record=True)
    rows = theory.variant_op_rows(shape, ("feedforward",), {k: v[0].numpy()
                                                            for k, v in rec.items()})
    macs = theory.counts_summary(rows)["macs"]
    d, T, V = 16, 3, 11
    ff_macs = 2 * (2 * d * 4 * d)            # fc1 + fc2 in each of the 2 blocks
    scale_macs = 2 * d * T + V               # attention count scales + the 1/T readout
    assert macs == pytest.approx(ff_macs + scale_macs)


def test_variant_table_and_bench_rows(tmp_path):
    from snn_compile.benchmarks import harness, variants
    text = tmp_path / "c.txt"
    text.write_text("abcab cabca bcabc dd " * 60)
    tok = make_tokenizer("char", text.read_text())
    specs = []
    for name, kw in {"snn": dict(kind="spikedecoder"), "att": dict(ann_blocks=("attention",)),
                     "twin": dict(kind="ann")}.items():
        m = tiny(**dict(dict(kind="partial", vocab_size=tok.vocab_size), **kw))
        path = tmp_path / f"{name}.pt"
        save_checkpoint(str(path), m, tok, {"steps": 3, "command": "snn-compile train --steps 5"})
        specs.append(str(path))
    rows = harness.variant_rows(specs, str(text))
    assert [r["spiking"] for r in rows] == [",".join(BLOCK_KINDS), "embedding,feedforward,norm,"
                                            "residual", "none"]
    assert rows[2]["reduction_pct"] == pytest.approx(0.0)
    assert all(math.isfinite(r["energy_pj"]) and math.isfinite(r["val_loss"]) for r in rows)
    out = tmp_path / "table"
    assert variants.main(specs + ["--out", str(out), "--data", str(text)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "energy_vs_loss.png",
                                                      "results.json"]
    assert "| ANN attention | attention |" in (out / "README.md").read_text()
