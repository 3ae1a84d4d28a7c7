"""Pretrained causal LMs through `eval --hf` and `bench --hf`: loss, bits per character,
spikes, ACs, MACs and energy per token of a tiny randomly initialised GPT-2 built here
(nothing downloaded); the tokenizer in use is printed; a missing one is an error."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import snn_compile as sc
from snn_compile.benchmarks.energy import E_AC_PJ, E_MAC_PJ
from snn_compile.errors import UserError

TEXT = "the quick brown fox jumps over the lazy dog; pack my box with five jugs. " * 40


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    """(folder with a character tokenizer, folder without one, corpus file)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=260, n_positions=32, n_embd=32, n_layer=2,
                                       n_head=2, initializer_range=0.2)).eval()
    d = tmp_path_factory.mktemp("gpt2")
    with_tok, bare = d / "with_tok", d / "bare"
    model.save_pretrained(with_tok)
    model.save_pretrained(bare)
    vocab = {c: i for i, c in enumerate(sorted(set(TEXT)))}
    vocab["[UNK]"] = len(vocab)
    t = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    PreTrainedTokenizerFast(tokenizer_object=t, unk_token="[UNK]").save_pretrained(with_tok)
    corpus = d / "corpus.txt"
    corpus.write_text(TEXT)
    return with_tok, bare, corpus, model


def _reference_loss(model, ids, ctx):
    total, n = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(ids) - 1, ctx):
            take = min(ctx, len(ids) - 1 - s)
            x = torch.as_tensor(ids[None, s:s + take])
            y = torch.as_tensor(ids[s + 1:s + take + 1])
            lg = model(input_ids=x).logits[0].double()
            total += float(torch.nn.functional.cross_entropy(lg, y, reduction="sum"))
            n += take
    return total / n, n


def test_eval_hf_loss_is_the_models(gpt2):
    with_tok, _, corpus, model = gpt2
    ev = sc.evaluate_hf(with_tok, data=str(corpus), max_tokens=None)
    val = TEXT[int(len(TEXT) * 0.9):]
    vocab = sorted(set(TEXT))
    ids = np.array([vocab.index(c) for c in val])
    loss, n = _reference_loss(model, ids, 32)
    assert ev["tokens"] == n and ev["val_loss"] == pytest.approx(loss, rel=1e-9)
    assert ev["chars"] == pytest.approx(n)     # one character per token
    assert ev["bpc"] == pytest.approx(loss / np.log(2), rel=1e-9)
    assert "PreTrainedTokenizerFast" in ev["tokenizer"]


def test_bench_hf_counts_and_energy(gpt2):
    with_tok, _, corpus, model = gpt2
    res = sc.evaluate_hf(with_tok, encoding="bitwise", bits=8, data=str(corpus),
                             max_tokens=64, energy=True)
    assert res["tokens"] == 64 and res["spikes_per_token"] > 0
    e = res["energy_per_token_pj"]
    assert e["theoretical_45nm"] == pytest.approx(res["acs_per_token"] * E_AC_PJ
                                                  + res["macs_per_token"] * E_MAC_PJ)
    # MACs: the scale c at every encoded output plus the attention products
    dense = sum(m.numel() for n, m in model.named_parameters()
                if n.endswith("weight") and m.dim() == 2 and "wpe" not in n)
    assert res["macs_per_token"] > res["attention_macs_per_token"] > 0
    plain = sc.evaluate_hf(with_tok, data=str(corpus), max_tokens=64, energy=True)
    assert plain["acs_per_token"] == 0 and plain["spikes_per_token"] is None
    assert plain["macs_per_token"] == pytest.approx(
        plain["attention_macs_per_token"] + dense - 32 * 260 + 260 * 32)    # head tied to wte
    assert e["dense_baseline_45nm"] == pytest.approx(plain["energy_per_token_pj"]["theoretical_45nm"])


def test_missing_tokenizer_is_an_error_unless_bytes_are_asked_for(gpt2):
    _, bare, corpus, _ = gpt2
    with pytest.raises(UserError, match="no tokenizer.*--hf-tokenizer bytes"):
        sc.evaluate_hf(bare, data=str(corpus))
    ev = sc.evaluate_hf(bare, tokenizer="bytes", data=str(corpus), max_tokens=40)
    assert ev["tokens"] == 40 and "UTF-8 bytes" in ev["tokenizer"]


def test_cli_eval_and_bench_hf(gpt2, run_cli):
    with_tok, bare, corpus, _ = gpt2
    r = run_cli("eval", "--hf", with_tok, "--data", corpus, "--json")
    assert r.returncode == 0, r.stderr
    ev = json.loads(r.stdout)
    assert ev["val_loss"] > 0 and ev["bpc"] > 0 and "tokenizer: PreTrainedTokenizerFast" in r.stderr
    r = run_cli("bench", "--hf", with_tok, "--data", corpus, "--encoding", "ternary",
                "--tokens", "48", "--json")
    assert r.returncode == 0, r.stderr
    b = json.loads(r.stdout)
    assert b["tokens"] == 48 and b["energy_per_token_pj"]["theoretical_45nm"] > 0
    assert b["spikes_per_token"] > 0 and "tokenizer:" in r.stderr
    r = run_cli("bench", "--hf", bare, "--data", corpus)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "--hf-tokenizer bytes" in r.stderr
    assert "Traceback" not in r.stderr
    r = run_cli("generate", "--hf", with_tok, "--prompt", "the", "-n", "3")
    assert r.returncode == 0 and "tokenizer: PreTrainedTokenizerFast" in r.stderr, r.stderr
