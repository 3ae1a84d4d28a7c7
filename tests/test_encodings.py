"""Spike encodings (binary, ternary, bitwise), spike-driven linear layers, HF wrapper, CLI."""

from __future__ import annotations

import copy
import json
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from snn_compile.errors import UserError
from snn_compile.models.encodings import (Binary, Bitwise, SpikeDrivenLinear, Ternary,
                                          apply_encoding, make_encoding)
from snn_compile.models.sampling import TorchBackend, generate

PROMPT = "The with statement"


def _popcount(v: int) -> int:
    return bin(v).count("1")


# ------------------------------------------------------------- round trips
@pytest.mark.parametrize("scheme", ["sign-magnitude", "twos"])
@pytest.mark.parametrize("bits", [2, 3, 4, 8, 12])
def test_bitwise_is_exact_for_k_bit_integers(bits, scheme):
    qmax = 2 ** (bits - 1) - 1
    g = torch.Generator().manual_seed(bits)
    ints = torch.arange(-qmax, qmax + 1, dtype=torch.float32)
    x = ints[torch.randperm(ints.numel(), generator=g)].reshape(1, -1)
    for enc in (Bitwise(bits, scheme, scale=1.0), Bitwise(bits, scheme)):   # fixed / dynamic
        e = enc.encode(x)
        assert e.planes.shape == (bits - 1 if scheme == "sign-magnitude" else bits, 1, x.shape[1])
        assert set(e.planes.unique().tolist()) <= ({-1.0, 0.0, 1.0} if scheme == "sign-magnitude"
                                                   else {0.0, 1.0})
        assert torch.equal(e.decode(), x)
        assert torch.equal(enc.error(x), torch.zeros_like(x))
        # events: popcount of |q| (sign-magnitude) or of the k-bit pattern (two's complement)
        want = sum(_popcount(abs(int(v))) if scheme == "sign-magnitude"
                   else _popcount(int(v) % 2 ** bits) for v in x.reshape(-1).tolist())
        assert e.spike_count() == want == int(torch.count_nonzero(e.planes))


def test_sign_magnitude_is_sparser_than_twos_complement_for_small_negatives():
    x = torch.tensor([[-1.0, 0.0, 127.0]])
    sm, tc = Bitwise(8, scale=1.0).encode(x), Bitwise(8, "twos", scale=1.0).encode(x)
    assert sm.spike_count() == 1 + 7          # -1: one event of polarity -1; 127: seven
    assert tc.spike_count() == 8 + 7          # -1 = 11111111
    assert torch.equal(sm.decode(), tc.decode())


@pytest.mark.parametrize("scheme", ["sign-magnitude", "twos"])
@pytest.mark.parametrize("bits", [3, 8])
def test_bitwise_decode_equals_plain_fake_quantisation(bits, scheme):
    x = torch.randn(4, 7, 33, generator=torch.Generator().manual_seed(0)) * 3
    enc = Bitwise(bits, scheme)
    dec = enc.encode(x).decode()
    assert torch.equal(dec, enc.reference(x))
    step = x.abs().amax(-1, keepdim=True) / (2 ** (bits - 1) - 1)
    err = (x - dec).abs()
    assert bool((err <= step / 2 * (1 + 1e-5)).all())
    assert float(err.max()) > 0                    # it does quantise
    # the largest magnitude of every vector is represented exactly (it sets the scale)
    i = x.abs().argmax(-1, keepdim=True)
    assert torch.allclose(dec.gather(-1, i), x.gather(-1, i), rtol=1e-6, atol=0)


def _expected_one_plane(x: np.ndarray, theta: float, ternary: bool):
    """Independent numpy statement of the binary/ternary definitions, vector by vector."""
    out = np.zeros_like(x)
    spikes = 0
    for idx in np.ndindex(x.shape[:-1]):
        v = x[idx]
        m = np.abs(v).mean()
        fire = (np.abs(v) > theta * m) if ternary else (v > theta * m)
        spikes += int(fire.sum())
        if fire.any():
            c = np.abs(v[fire]).mean() if ternary else v[fire].mean()
            out[idx] = np.where(fire, (np.sign(v) if ternary else 1.0) * c, 0.0)
    return out, spikes


@pytest.mark.parametrize("cls,ternary", [(Binary, False), (Ternary, True)])
@pytest.mark.parametrize("theta", [0.0, 0.7, 1.5])
def test_binary_ternary_decode_error_matches_definition(cls, ternary, theta):
    x = torch.randn(3, 5, 40, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x[0, 0] = 0.0                                         # an all-zero vector: no spikes
    enc = cls(theta)
    e = enc.encode(x)
    want, spikes = _expected_one_plane(x.numpy(), theta, ternary)
    np.testing.assert_allclose(e.decode().numpy(), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(enc.error(x).numpy(), x.numpy() - want, rtol=1e-12, atol=1e-12)
    assert e.spike_count() == spikes == int(torch.count_nonzero(e.planes))
    assert torch.equal(e.spikes_per_vector().sum(), torch.tensor(spikes))
    assert torch.equal(e.decode(), enc.reference(x))
    assert e.planes.shape[0] == 1
    assert set(e.planes.unique().tolist()) <= ({-1.0, 0.0, 1.0} if ternary else {0.0, 1.0})


def test_stats_report_events_and_error():
    x = torch.randn(6, 50, generator=torch.Generator().manual_seed(4))
    for enc in (Binary(), Ternary(), Bitwise(4), Bitwise(8)):
        st = enc.stats(x)
        err = enc.error(x)
        assert st["spikes"] == enc.encode(x).spike_count()
        assert st["mse"] == pytest.approx(float(err.pow(2).mean()))
        assert st["relative_error"] == pytest.approx(float(err.norm() / x.norm()))
    assert Bitwise(8).stats(x)["relative_error"] < Bitwise(4).stats(x)["relative_error"] < 0.2


def test_bad_parameters_are_user_errors():
    with pytest.raises(UserError, match="--bits"):
        Bitwise(1)
    with pytest.raises(UserError, match="--threshold"):
        make_encoding("ternary", threshold=-1.0)
    assert make_encoding("none") is None


# ------------------------------------------------------- spike-driven layers
def _dyadic_linear(d_in, d_out, seed):
    """A layer whose weights are small multiples of 1/64: float sums are exact."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(d_in, d_out)
    with torch.no_grad():
        lin.weight.copy_(torch.randint(-64, 65, (d_out, d_in), generator=g) / 64.0)
        lin.bias.copy_(torch.randint(-64, 65, (d_out,), generator=g) / 64.0)
    return lin


@pytest.mark.parametrize("scheme", ["sign-magnitude", "twos"])
def test_spike_driven_linear_is_exactly_w_times_decode(scheme):
    lin = _dyadic_linear(24, 10, 0)
    x = torch.randint(-127, 128, (2, 5, 24), generator=torch.Generator().manual_seed(2)).float()
    enc = Bitwise(8, scheme, scale=1.0)
    layer = SpikeDrivenLinear(lin, enc, "l")
    y = layer(x)
    assert torch.equal(y, F.linear(enc.encode(x).decode(), lin.weight, lin.bias))
    assert torch.equal(y, lin(x))                       # integers: quantisation is lossless
    e = enc.encode(x)
    assert layer.spikes == e.spike_count() and layer.vectors == 10
    assert torch.equal(layer.last_spikes, e.spikes_per_vector())


def test_spike_driven_linear_counts_and_conv1d():
    from transformers.pytorch_utils import Conv1D

    conv = Conv1D(6, 8)                                  # y = x W + b, W (8, 6)
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(3))
    enc = Ternary()
    layer = SpikeDrivenLinear(conv, enc, "c")
    want = enc.encode(x).decode() @ conv.weight + conv.bias
    torch.testing.assert_close(layer(x), want, rtol=1e-6, atol=1e-6)
    assert layer.d_in == 8 and layer.d_out == 6
    assert layer.spikes == int(torch.count_nonzero(enc.encode(x).planes))


def test_apply_encoding_twice_is_refused():
    m = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    em = apply_encoding(m, Binary())
    assert [layer.name for layer in em.layers] == ["0", "2"]
    with pytest.raises(UserError, match="already spike-encoded"):
        apply_encoding(m, Binary())


# ------------------------------------------------------------ the ANN twin
@pytest.fixture(scope="module")
def twin():
    from snn_compile.models.checkpoint import load_checkpoint

    model, tok, _ = load_checkpoint("default:ann")
    return model, tok


def test_twin_bitwise8_cli_greedy_text_equals_fake_quantised_twin(twin, run_cli):
    model, tok = twin
    r = run_cli("generate", "default:ann", "--encoding", "bitwise", "--bits", "8", "--backend",
                "torch", "--prompt", PROMPT, "-n", "32", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for key in ("text", "tokens", "spikes_per_token", "sparsity"):
        assert key in out
    assert out["spikes_per_token"] > 0 and 0 < out["sparsity"] < 1
    # the reference: plain fake quantisation of every linear input, no bit planes
    ref = copy.deepcopy(model)
    apply_encoding(ref, Bitwise(8), reference=True)
    want = generate(TorchBackend(ref), tok.encode(PROMPT), 32)
    assert out["tokens"] == want
    assert out["text"] == tok.decode(want)
    # and the quantisation is real: the reference's logits are not the float model's
    x = torch.as_tensor([tok.encode(PROMPT)])
    with torch.no_grad():
        d = float((ref(x) - model(x)).abs().max())
    assert 0 < d < 0.5


def test_twin_plane_path_equals_reference_logits(twin):
    model, tok = twin
    x = torch.as_tensor([tok.encode(PROMPT * 3)])
    for enc in (Bitwise(8), Bitwise(4, "twos"), Binary(), Ternary(0.3)):
        a, b = copy.deepcopy(model), copy.deepcopy(model)
        em = apply_encoding(a, enc)
        apply_encoding(b, enc, reference=True)
        with torch.no_grad():
            la, lb = a(x), b(x)
        torch.testing.assert_close(la, lb, rtol=0, atol=1e-5)
        s = em.summary()
        assert s["tokens"] == x.shape[1] and s["spikes_per_token"] > 0
        assert s["activations_per_token"] == sum(layer.d_in for layer in em.layers)


# ----------------------------------------------------------------- HF GPT-2
@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=260, n_positions=32, n_embd=32, n_layer=2, n_head=2,
                     initializer_range=0.2)
    model = GPT2LMHeadModel(cfg).eval()
    path = tmp_path_factory.mktemp("gpt2")
    model.save_pretrained(path)
    return path, model


@pytest.mark.parametrize("name", ["none", "binary", "ternary", "bitwise"])
def test_hf_generation_runs_with_each_encoding(tiny_gpt2, name):
    from snn_compile.models.hf import ByteTokenizer, HFBackend, load_hf

    path, _ = tiny_gpt2
    model, tok, encoded = load_hf(path, name, tokenizer="bytes")
    assert isinstance(tok, ByteTokenizer)
    b = HFBackend(model, encoded)
    ids = generate(b, tok.encode("hi"), 40)                # passes the context (32): a reset
    assert len(ids) == 40 and all(0 <= i < 260 for i in ids)
    rep = b.counter.report()
    if name == "none":
        assert encoded is None and rep["spikes_per_token"] is None
    else:
        assert len(encoded.layers) == 2 * 4 + 1            # c_attn, c_proj, c_fc, c_proj; head
        assert rep["spikes_per_token"] > 0 and 0 < rep["sparsity"] < 1


def test_hf_none_equals_unwrapped_and_bitwise8_matches_its_reference(tiny_gpt2):
    from snn_compile.models.hf import load_hf

    path, raw = tiny_gpt2
    x = torch.randint(0, 260, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = raw(x).logits
        plain = load_hf(path, "none", tokenizer="bytes")[0](x).logits
        bw_model, _, em = load_hf(path, "bitwise", bits=8, tokenizer="bytes")
        bw = bw_model(x).logits
        ref_model = load_hf(path, "none", tokenizer="bytes")[0]
        apply_encoding(ref_model, Bitwise(8), reference=True)
        ref = ref_model(x).logits
    assert torch.equal(plain, want)
    torch.testing.assert_close(bw, ref, rtol=0, atol=1e-5)
    assert torch.equal(bw.argmax(-1), ref.argmax(-1))
    rel = float((bw - want).norm() / want.norm())
    assert 0 < rel < 0.05                                   # close, but quantised
    assert em.summary()["tokens"] == x.numel()


def test_hf_streaming_with_cache_equals_full_forward(tiny_gpt2):
    """Per-vector scales keep the encoding causal: cached streaming == batched forward."""
    from snn_compile.models.hf import HFBackend, load_hf

    path, _ = tiny_gpt2
    model, _, em = load_hf(path, "ternary", tokenizer="bytes")
    ids = [5, 77, 200, 3, 9, 250, 31]
    b = HFBackend(model, em)
    b.reset()
    streamed = np.stack([b.feed(t) for t in ids])
    with torch.no_grad():
        full = model(torch.tensor([ids])).logits[0].double().numpy()
    np.testing.assert_allclose(streamed, full, rtol=0, atol=1e-4)


def test_hf_folder_tokenizer_is_used(tiny_gpt2, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from snn_compile.models.hf import HFTokenizer, load_hf

    path, raw = tiny_gpt2
    vocab = {c: i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz ")}
    vocab["[UNK]"] = len(vocab)
    t = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    raw.save_pretrained(tmp_path)
    PreTrainedTokenizerFast(tokenizer_object=t, unk_token="[UNK]").save_pretrained(tmp_path)
    _, tok, _ = load_hf(tmp_path, "binary")
    assert isinstance(tok, HFTokenizer)
    assert tok.encode("ab c") == [0, 1, 26, 2]


def test_hf_without_transformers_is_a_user_error(tiny_gpt2, monkeypatch):
    from snn_compile.models import hf

    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(UserError, match=r"pip install -e \.\[hf\]"):
        hf.load_hf(tiny_gpt2[0], "bitwise", tokenizer="bytes")


def test_hf_cli_json(tiny_gpt2, run_cli):
    r = run_cli("generate", "--hf", tiny_gpt2[0], "--encoding", "bitwise", "--bits", "6",
                "--hf-tokenizer", "bytes", "--prompt", "hi", "-n", "6", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert len(out["tokens"]) == 6 and out["spikes_per_token"] > 0
    assert out["encoding_params"]["bits"] == 6 and "softmax" in out["non_spiking"]


# --------------------------------------------------------------- CLI errors
def _one_line_error(r, *words):
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in lines[0]


def test_cli_errors(run_cli, tmp_path):
    _one_line_error(run_cli("generate", "--hf", tmp_path / "missing", "--prompt", "x"),
                    "does not exist")
    (tmp_path / "empty").mkdir()
    _one_line_error(run_cli("generate", "--hf", tmp_path / "empty", "--prompt", "x"),
                    "config.json")
    _one_line_error(run_cli("generate", "default:spikedecoder", "--encoding", "bitwise",
                            "--prompt", "x"), "spikedecoder", "--encoding")
    _one_line_error(run_cli("eval", "default:spikedecoder", "--encoding", "binary"),
                    "--encoding")
    _one_line_error(run_cli("generate", "default:ann", "--encoding", "bitwise", "--backend",
                            "int", "--prompt", "x"), "--backend torch")


def test_cli_eval_encoded(run_cli):
    r = run_cli("eval", "default:ann", "--encoding", "bitwise", "--max-tokens", "1024",
                "--json")
    assert r.returncode == 0, r.stderr
    ev = json.loads(r.stdout)
    assert ev["tokens"] == 1024 and ev["encoding"] == "bitwise"
    assert 1.0 < ev["spikes_per_activation"] < 7.0         # at most 7 planes per activation
    assert ev["spikes_per_token"] == pytest.approx(ev["spikes_per_activation"]
                                                   * ev["activations_per_token"])


# ----------------------------------------------------------------- benchmark
def test_encodings_benchmark_table(tmp_path):
    from snn_compile.benchmarks import encodings as bench
    from snn_compile.benchmarks.energy import E_AC_PJ, E_MAC_PJ

    res = bench.run(max_tokens=256, encodings=[("binary", {}), ("bitwise", {"bits": 8})])
    rows = {r["encoding"]: r for r in res["rows"]}
    assert res["tokens"] == 256 and len(rows) == 4
    plain, b8 = rows["none (float)"], rows["bitwise 8 bit, sign-magnitude"]
    binary, sd = rows["binary (theta 0.7)"], rows["trained spiking (T = 4)"]
    assert abs(b8["val_loss"] - plain["val_loss"]) < 0.02
    assert binary["spikes_per_token"] < b8["spikes_per_token"]
    for r in (plain, b8, binary, sd):
        e = r["acs_per_token"] * E_AC_PJ + (r["macs_per_token"] + r["extras_per_token"]) * E_MAC_PJ
        assert r["energy_pj_per_token"] == pytest.approx(e)
    assert b8["max_logit_diff_vs_reference"] < 1e-5
    assert plain["spikes_per_token"] is None and b8["acs_per_token"] > plain["acs_per_token"]
    assert b8["macs_per_token"] < plain["macs_per_token"]
    out = bench.write(res, str(tmp_path / "enc"))
    text = (tmp_path / "enc" / "report.md").read_text()
    assert "bitwise 8 bit" in text and (tmp_path / "enc" / "energy_vs_loss.png").stat().st_size
    assert json.loads((tmp_path / "enc" / "results.json").read_text())["tokens"] == 256
    assert out.endswith("enc")
