"""Decoder zoo: shapes, causality, gradients, deployable restrictions, training,
checkpoints, folding, and neuron semantics against snnTorch."""

import math
import os

import numpy as np
import pytest
import torch

from snn_compile.errors import UserError
from snn_compile.models.checkpoint import build_model, load_checkpoint, save_checkpoint
from snn_compile.models.config import ModelConfig
from snn_compile.models.fold import fold
from snn_compile.models.sampling import TorchBackend, generate
from snn_compile.models.spikedecoder import LIF
from snn_compile.data import make_tokenizer


def tiny(kind="spikedecoder", **kw):
    cfg = dict(kind=kind, vocab_size=11, d_model=16, n_layers=2, n_heads=2, context=12,
               timesteps=3)
    cfg.update(kw)
    torch.manual_seed(0)
    return build_model(ModelConfig(**cfg))


@pytest.mark.parametrize("kind", ["spikedecoder", "ann"])
def test_shapes(kind):
    m = tiny(kind)
    x = torch.randint(0, 11, (3, 7))
    assert m(x).shape == (3, 7, 11)


CAUSAL_CASES = [("spikedecoder", {}), ("ann", {}),
                ("spikedecoder", {"embedding": "temporal"}),
                ("spikedecoder", {"embedding": "population"}),
                ("spikedecoder", {"residual": "stream"}),
                ("spikedecoder", {"residual": "stream", "attention_memory": "decay",
                                  "token_shift": 1}),
                ("spikedecoder", {"attention": "sdsa"}),
                ("spikedecoder", {"attention": "sdsa", "token_shift": 1})] + [
    ("partial", {"ann_blocks": (b,)})
    for b in ("embedding", "attention", "feedforward", "norm", "residual")]


@pytest.mark.parametrize("kind,extra", CAUSAL_CASES)
def test_causality(kind, extra):
    m = tiny(kind, **extra).double().eval()
    x = torch.randint(0, 11, (1, 10))
    base, rec = m(x, record=True)
    for j in (0, 4, 9):
        y = x.clone()
        y[0, j] = (y[0, j] + 3) % 11
        other, rec2 = m(y, record=True)
        assert torch.equal(base[:, :j], other[:, :j])
        for k in rec:
            assert torch.equal(rec[k][:, :j], rec2[k][:, :j]), k
        if kind != "ann" and j < 9:
            # the change is visible from position j on (otherwise the test proves nothing)
            assert any(not torch.equal(rec[k][:, j:], rec2[k][:, j:]) for k in rec)


@pytest.mark.parametrize("surrogate", ["atan", "fast_sigmoid"])
def test_surrogate_gradients_reach_every_parameter(surrogate):
    m = tiny(surrogate=surrogate, beta_init=0.9)
    m.train()
    x = torch.randint(0, 11, (4, 12))
    loss = torch.nn.functional.cross_entropy(m(x).reshape(-1, 11), x.reshape(-1))
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_lif_equals_snntorch_leaky():
    snn = pytest.importorskip("snntorch")
    torch.manual_seed(1)
    lif = LIF(0.8, "atan", deployable=False)
    cur = torch.randn(2, 5, 6, 7) * 1.5
    ours = lif(cur)
    leaky = snn.Leaky(beta=float(lif.beta()), threshold=1.0, reset_mechanism="zero")
    for n in range(5):
        mem = torch.zeros(2, 7)
        for t in range(6):
            spk, mem = leaky(cur[:, n, t], mem)
            assert torch.equal(spk, ours[:, n, t])


def test_deployable_quantization_grid_and_refusals():
    m = tiny()
    f = fold(m)
    for w in (f.E_tok, f.blocks[0].W_qkv, f.blocks[1].W_2, f.blocks[0].g1, f.W_head):
        e = math.ceil(math.log2(np.abs(w).max() / 127))
        assert np.allclose(w / 2.0 ** e, np.round(w / 2.0 ** e))
        assert np.abs(np.round(w / 2.0 ** e)).max() <= 127
    for b in f.betas().values():
        assert float(b * 4096).is_integer()
    with pytest.raises(UserError, match="not a spiking decoder"):
        fold(tiny("ann"))
    with pytest.raises(UserError, match="deployable"):
        fold(tiny(deployable=False))
    with pytest.raises(UserError, match="divisible"):
        ModelConfig(d_model=10, n_heads=3)


def test_fold_equals_model_spike_for_spike():
    m = tiny(beta_init=0.7).double().eval()
    x = torch.randint(0, 11, (2, 12))
    logits, rec = m(x, record=True)
    r = fold(m).forward(x)
    assert torch.allclose(logits, r["logits"], atol=1e-9)
    for k, v in rec.items():
        assert torch.equal(v, r["spikes"][k]), k
    assert sum(float(v.sum()) for k, v in rec.items() if not k.endswith(".A")) > 0


def test_tiny_training_lowers_loss_and_is_deterministic(tmp_path):
    from snn_compile.models.train import TrainArgs, train
    text = tmp_path / "c.txt"
    text.write_text("abcab cabca bcabc " * 200)
    args = TrainArgs(steps=30, batch_size=8, lr=1e-2, eval_interval=30, eval_tokens=512,
                     progress=False, warmup=5)
    cfg = dict(kind="spikedecoder", d_model=16, n_layers=1, n_heads=2, context=16, timesteps=2)
    infos = [train(ModelConfig(**cfg), args, str(tmp_path / f"m{i}.pt"), str(text))
             for i in range(2)]
    assert infos[0]["val_loss"] == infos[1]["val_loss"]
    assert infos[0]["val_loss"] < math.log(4) * 0.9      # well below a uniform guess
    m, tok, info = load_checkpoint(str(tmp_path / "m0.pt"))
    assert info["steps"] == 30 and tok.vocab_size == 5


def test_checkpoint_round_trip_and_corruption(tmp_path):
    m = tiny()
    tok = make_tokenizer("char", "abcdefghij")
    p = tmp_path / "c.pt"
    save_checkpoint(str(p), m, tok, {"steps": 1})
    m2, tok2, info = load_checkpoint(str(p))
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    assert tok2.to_dict() == tok.to_dict()
    data = p.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="corrupt or truncated"):
        load_checkpoint(str(tmp_path / "trunc.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError):
        load_checkpoint(str(tmp_path / "junk.pt"))
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(str(tmp_path / "nope.pt"))
    assert sorted(os.listdir(tmp_path)) == ["c.pt", "junk.pt", "trunc.pt"]


def test_generation_context_roll_over():
    m = tiny().double()
    b = TorchBackend(m)
    out = generate(b, [1, 2, 3], 20, temperature=0.0)
    assert len(out) == 20 and all(0 <= t < 11 for t in out)
    assert generate(b, [1, 2, 3], 20, temperature=1.0, seed=3) == \
        generate(b, [1, 2, 3], 20, temperature=1.0, seed=3)


def test_shipped_checkpoints_load_and_beat_uniform():
    from snn_compile.models.train import evaluate, prepare_data
    for spec in ("default:spikedecoder", "default:ann"):
        m, tok, info = load_checkpoint(spec)
        _, _, val = prepare_data(None, "char", m.cfg.context, tok)
        ev = evaluate(m, val, 1024)
        assert ev["val_loss"] < 0.7 * math.log(tok.vocab_size), spec


def test_decay_memory_weighs_past_steps_by_loihi_time_and_stays_bounded():
    """A_h[p] = sum_{p'<=p} lambda_h^(g(p) - g(p')) (q.k) v with g(n, t) = n W + t: the
    memory also decays through the W - T drain steps between tokens."""
    from snn_compile.models.spikedecoder import causal_spike_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randint(0, 2, (1, 3, 2, 4), generator=g).double() for _ in range(3))
    total = causal_spike_attention(q, k, v, 1)
    lam, W = torch.tensor([1 - 300 / 4096.0], dtype=torch.float64), 5
    dec = causal_spike_attention(q, k, v, 1, lam, W)
    qf, kf, vf = (x.reshape(6, 4) for x in (q, k, v))
    for p in range(6):
        n, t = divmod(p, 2)
        want_sum = sum((qf[p] @ kf[j]) * vf[j] for j in range(p + 1))
        want_dec = sum(float(lam) ** ((n * W + t) - (j // 2 * W + j % 2)) * (qf[p] @ kf[j])
                       * vf[j] for j in range(p + 1))
        assert torch.allclose(total[0, n, t], want_sum)
        assert torch.allclose(dec[0, n, t], want_dec)
    # the decayed memory of all-ones spikes stays below 1 / (1 - lambda^W) per token
    ones = torch.ones(1, 64, 2, 4, dtype=torch.float64)
    big = causal_spike_attention(ones, ones, ones, 1, lam, W)
    assert float(big.max()) < 4 * 2 / (1 - float(lam) ** W)
    with pytest.raises(UserError, match="needs --residual stream"):
        ModelConfig(attention_memory="decay")
    with pytest.raises(UserError, match="spikedecoder only"):
        ModelConfig(kind="ann", residual="stream")
    cfg = ModelConfig(residual="stream", attention_memory="decay", n_layers=4, n_heads=4)
    assert cfg.memory_window == cfg.timesteps + 9 * 4 + 3
    assert len(cfg.memory_decay) == 4 and all(1 <= m <= 255 for m in cfg.memory_decay)
    assert list(cfg.memory_decay) == sorted(cfg.memory_decay, reverse=True)


def test_sdsa_attention_reads_q_times_thresholded_channel_memory():
    from snn_compile.benchmarks import theory
    from snn_compile.benchmarks.theory import model_shape
    from snn_compile.models.spikedecoder import causal_sdsa_memory

    g = torch.Generator().manual_seed(1)
    k, v = (torch.randint(0, 2, (1, 3, 2, 4), generator=g).double() for _ in range(2))
    mem = causal_sdsa_memory(k, v)
    kf, vf = k.reshape(6, 4), v.reshape(6, 4)
    for p in range(6):
        assert torch.equal(mem.reshape(6, 4)[p], (kf[: p + 1] * vf[: p + 1]).sum(0))
    m = tiny(attention="sdsa").double().eval()
    x = torch.randint(0, 11, (1, 8))
    _, rec = m(x, record=True)
    d = m.cfg.d_model
    q = rec["block0.qkv"][..., :d]
    assert torch.all(rec["block0.attn"] <= q)           # the output is gated by q
    m.train()
    m(x).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    with pytest.raises(UserError, match="sdsa attention has no Loihi 2 lowering"):
        fold(m)
    with pytest.raises(UserError, match="--attention sdsa applies to"):
        ModelConfig(attention="sdsa", attention_memory="decay")
    shape = model_shape(m)
    assert shape.attention == "sdsa"
    spk = {k_: v_[0].detach().numpy() for k_, v_ in rec.items()}
    ops = {(r.layer, r.op): r.per_token for r in theory.snn_op_rows(shape, spk)}
    kv = rec["block1.qkv"][0, ..., d:2 * d] * rec["block1.qkv"][0, ..., 2 * d:]
    assert np.array_equal(ops[("block1", "accumulate")], kv.reshape(8, -1).sum(1).detach().numpy())
    assert ("block1", "qk") not in ops


def test_the_config_splits_the_deployable_core_from_the_training_options():
    from dataclasses import fields

    from snn_compile.models.config import DecoderConfig
    cfg = ModelConfig(d_model=32, n_layers=3, n_heads=4, residual="stream",
                      attention_memory="decay", embedding="temporal", surrogate="fast_sigmoid")
    core = cfg.core()
    assert type(core) is DecoderConfig and core.window() == cfg.window() == 4 + 9 * 3 + 3
    assert {f.name for f in fields(core)} == {f.name for f in fields(DecoderConfig)}
    assert core.memory_decay == cfg.memory_decay and len(core.memory_decay) == 4
    assert not {"kind", "embedding", "surrogate", "attention"} & {f.name for f in fields(core)}
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
