"""Pretrained Hugging Face causal LMs, loaded from a local folder and spike-encoded.

``load_hf(path, encoding)`` loads ``AutoModelForCausalLM`` with
``local_files_only=True`` (nothing is downloaded) and replaces every linear
layer (``nn.Linear``, GPT-2's ``Conv1D``) by its spike-driven form
(``snn_compile.models.encodings``). ``HFBackend`` is a token backend for
``snn_compile.models.sampling.generate``: one token per call with the model's
key/value cache, so the spikes counted per call are those of one token.

Tokenizer: the folder's own (``AutoTokenizer``, ``tokenizer="auto"``); a folder without
tokenizer files is an error naming the fix, unless the byte-level tokenizer is asked for
(``tokenizer="bytes"``, ``--hf-tokenizer bytes``): token id = one UTF-8 byte (0..255),
which needs a vocabulary of at least 256 ids; ids above 255 decode to U+FFFD. The
commands print the tokenizer in use (``describe_tokenizer``).

``evaluate_hf`` scores the validation split of a corpus (non-overlapping windows of the
model's context, as ``train.evaluate``): loss per token, perplexity, bits per character
of the scored text, and the spikes and ACs of the spike-encoded layers per token;
``benchmarks/hf.py`` turns those counts into energy per token.
"""

from __future__ import annotations

import os
from typing import Iterable, List, Optional

import numpy as np
import torch

from snn_compile.data.corpus import load_corpus
from snn_compile.errors import UserError
from snn_compile.models.encodings import EncodedModel, apply_encoding, make_encoding
from snn_compile.models.sampling import TorchBackend

HF_HINT = "install the [hf] extra: pip install -e .[hf]"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model",
                   "spiece.model", "vocab.txt")


class ByteTokenizer:
    """Fallback for a model folder without a tokenizer: one token per UTF-8 byte."""

    kind = "bytes"

    def __init__(self, vocab_size: int):
        if vocab_size < 256:
            raise UserError(f"the model has a vocabulary of {vocab_size} < 256 ids and its folder "
                            "has no tokenizer; save a tokenizer next to it "
                            "(tokenizer.save_pretrained(PATH))")
        self.vocab_size = vocab_size

    def encode(self, text: str, strict: bool = True) -> List[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(i if 0 <= i < 256 else 0x3F for i in ids).decode("utf-8", errors="replace")


class HFTokenizer:
    """The folder's own tokenizer, behind the project's encode/decode interface."""

    kind = "hf"

    def __init__(self, tok):
        self.tok = tok
        self.vocab_size = len(tok)

    def encode(self, text: str, strict: bool = True) -> List[int]:
        return list(self.tok.encode(text, add_special_tokens=False))

    def decode(self, ids: Iterable[int]) -> str:
        return self.tok.decode(list(ids))


def _transformers():
    try:
        import transformers
    except ImportError:
        raise UserError(f"Hugging Face models need the transformers package; {HF_HINT}") from None
    return transformers


def load_hf(path: str, encoding: str = "none", bits: int = 8,
            threshold: Optional[float] = None, tokenizer: str = "auto"):
    """(model, tokenizer, EncodedModel or None) from a local model folder; ``tokenizer``:
    ``auto`` (the folder's own, required) or ``bytes`` (UTF-8 bytes as token ids)."""
    if tokenizer not in ("auto", "bytes"):
        raise UserError(f"tokenizer {tokenizer!r}: choose auto (the folder's own) or bytes")
    path = check_hf_folder(path, tokenizer)
    enc = make_encoding(encoding, bits, threshold)
    tf = _transformers()
    try:
        model = tf.AutoModelForCausalLM.from_pretrained(path, local_files_only=True,
                                                        torch_dtype=torch.float32)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"--hf {path}: cannot load a causal LM from it "
                        f"({str(e).splitlines()[0][:160]}); give a folder written by "
                        "save_pretrained with its weights") from None
    model.eval()
    tok = _tokenizer(tf, path, model.config.vocab_size, tokenizer)
    return model, tok, apply_encoding(model, enc)


def check_hf_folder(path, tokenizer: str = "auto") -> str:
    """The problems of a model folder found without loading anything (one UserError):
    missing, not a save_pretrained folder, no tokenizer when the folder's is wanted."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise UserError(f"--hf {path} does not exist; give the folder of a Hugging Face causal "
                        "LM saved with save_pretrained (models are never downloaded)")
    if not os.path.isdir(path) or not os.path.isfile(os.path.join(path, "config.json")):
        raise UserError(f"--hf {path} is not a Hugging Face model folder (no config.json); give "
                        "a folder written by save_pretrained")
    if tokenizer == "auto" and not any(os.path.isfile(os.path.join(path, f))
                                       for f in TOKENIZER_FILES):
        raise UserError(f"--hf {path} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); "
                        f"save the model's tokenizer there (tokenizer.save_pretrained('{path}')),"
                        " or feed UTF-8 bytes as token ids with --hf-tokenizer bytes")
    return path


def describe_tokenizer(tok) -> str:
    """One line naming the tokenizer in use (printed by the commands)."""
    if isinstance(tok, ByteTokenizer):
        return f"UTF-8 bytes as token ids (--hf-tokenizer bytes; model vocabulary {tok.vocab_size})"
    inner = getattr(tok, "tok", None)
    name = type(inner).__name__ if inner is not None else type(tok).__name__
    where = getattr(inner, "name_or_path", "") if inner is not None else ""
    return f"{name} from {where} ({tok.vocab_size} tokens)"


def _tokenizer(tf, path: str, vocab_size: int, which: str = "auto"):
    if which == "bytes":
        return ByteTokenizer(vocab_size)
    if any(os.path.isfile(os.path.join(path, f)) for f in TOKENIZER_FILES):
        try:
            return HFTokenizer(tf.AutoTokenizer.from_pretrained(path, local_files_only=True))
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"--hf {path}: its tokenizer files do not load "
                            f"({str(e).splitlines()[0][:160]}); save the tokenizer again") \
                from None
    raise UserError(f"--hf {path} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); save "
                    f"the model's tokenizer there (tokenizer.save_pretrained('{path}')), or "
                    "feed UTF-8 bytes as token ids with --hf-tokenizer bytes")


def context_of(config) -> int:
    for name in ("n_positions", "max_position_embeddings", "n_ctx"):
        v = getattr(config, name, None)
        if isinstance(v, int) and v > 0:
            return v
    raise UserError("the model's config names no context length (n_positions / "
                    "max_position_embeddings)")


class SpikeCounter:
    """Spikes and ACs of the spike-driven layers, summed over the tokens fed."""

    def __init__(self, encoded: Optional[EncodedModel]):
        self.encoded = encoded
        self.tokens = 0
        self.spikes = self.acs = 0
        self.activations = self.slots = 0

    def add_last_token(self) -> None:
        self.tokens += 1
        if self.encoded is None:
            return
        t = self.encoded.last_token()
        self.spikes += t["spikes"]
        self.acs += t["acs"]
        self.activations += t["activations"]
        self.slots += t["activations"] * self.encoded.encoding.planes

    def report(self) -> dict:
        """Per token; None where the model is not spike-encoded."""
        if self.encoded is None or not self.tokens:
            return {"spikes_per_token": None, "sparsity": None, "spikes_per_activation": None,
                    "acs_per_token": None, "tokens_counted": self.tokens}
        return {"spikes_per_token": self.spikes / self.tokens,
                "sparsity": 1.0 - self.spikes / max(self.slots, 1),
                "spikes_per_activation": self.spikes / max(self.activations, 1),
                "acs_per_token": self.acs / self.tokens, "tokens_counted": self.tokens,
                "encoding_params": self.encoded.encoding.describe()}


class HFBackend:
    """A Hugging Face causal LM as a token backend (key/value cache, one token per call)."""

    name = "hf"

    def __init__(self, model, encoded: Optional[EncodedModel] = None):
        self.model = model.eval()
        self.vocab_size = int(model.config.vocab_size)
        self.context = context_of(model.config)
        self.counter = SpikeCounter(encoded)
        self._past = None

    def reset(self) -> None:
        self._past = None

    @torch.no_grad()
    def feed(self, token: int) -> np.ndarray:
        x = torch.tensor([[int(token)]])
        out = self.model(input_ids=x, past_key_values=self._past, use_cache=True)
        self._past = out.past_key_values
        self.counter.add_last_token()
        return out.logits[0, -1].double().numpy()

    def close(self) -> None:
        self._past = None


class EncodedTorchBackend:
    """An snn_compile ANN checkpoint with spike-encoded linears as a token backend.

    Like ``TorchBackend`` it recomputes the window each call; the spikes counted
    per call are those of the newest position only (what a streamed run spends).
    """

    name = "torch"

    def __init__(self, model, encoded: Optional[EncodedModel]):

        self._inner = TorchBackend(model)
        self.vocab_size, self.context = self._inner.vocab_size, self._inner.context
        self.counter = SpikeCounter(encoded)

    def reset(self) -> None:
        self._inner.reset()

    def feed(self, token: int) -> np.ndarray:
        logits = self._inner.feed(token)
        self.counter.add_last_token()
        return logits

    def close(self) -> None:
        self._inner.close()


# ------------------------------------------------------------------ evaluation
@torch.no_grad()
def evaluate_hf(model, tok, encoded: Optional[EncodedModel], data: Optional[str] = None,
                max_tokens: Optional[int] = 4096, context: Optional[int] = None,
                progress=None) -> dict:
    """Validation loss of a (spike-encoded) causal LM on the last 10 % of ``data``.

    The text of the split is tokenized with ``tok``; non-overlapping windows of
    ``context`` tokens (default: the model's) predict every token after a window's first
    one, up to ``max_tokens`` targets. Returns loss (nats/token), perplexity, bits per
    character (nats of all targets / ln 2 / the characters scored, the split's length
    times the fraction of its tokens scored), the token and character counts, positions of the scored tokens (for the attention products) and, for
    an encoded model, its spike/AC summary per token.
    """
    import math


    text = load_corpus(data)
    val = text[int(len(text) * 0.9):]
    ids = np.asarray(tok.encode(val), dtype=np.int64)
    V = int(model.config.vocab_size)
    if ids.size and int(ids.max()) >= V:
        raise UserError(f"the tokenizer gives ids up to {int(ids.max())}, beyond the model's "
                        f"vocabulary of {V}; use the tokenizer the model was trained with")
    ctx = min(int(context or context_of(model.config)), context_of(model.config))
    if ids.size < 2:
        raise UserError("the validation text holds fewer than 2 tokens; give a longer --data")
    if encoded is not None:
        encoded.reset_counts()
    total, count, positions = 0.0, 0, []
    limit = max_tokens if max_tokens is not None else ids.size
    n_targets = min(limit, ids.size - 1)
    for s0 in range(0, ids.size - 1, ctx):       # inputs ids[s0:s0+ctx], targets shifted by 1
        take = min(ctx, ids.size - 1 - s0, limit - count)
        if take < 1:
            break
        x = torch.as_tensor(ids[None, s0: s0 + take])
        y = torch.as_tensor(ids[s0 + 1: s0 + take + 1])
        logits = model(input_ids=x).logits[0].double()
        total += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
        count += take
        positions.append(np.arange(take))
        if progress is not None:
            progress(count, n_targets)
    # characters scored: the split's length times the fraction of its tokens scored (a
    # tokenizer's decode may add spaces between tokens, so it cannot count them)
    chars = len(val) * count / ids.size
    loss = total / max(count, 1)
    res = {"val_loss": loss, "ppl": math.exp(min(loss, 50)), "tokens": count, "chars": chars,
           "bpc": total / max(chars, 1) / math.log(2), "context": ctx,
           "mean_position": float(np.concatenate(positions).mean()) if positions else 0.0,
           "tokenizer": describe_tokenizer(tok)}
    if encoded is not None:
        res["spikes"] = encoded.summary()
    return res
