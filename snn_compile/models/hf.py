"""Pretrained Hugging Face causal LMs, loaded from a local folder and spike-encoded.

``load_hf(path, encoding)`` loads ``AutoModelForCausalLM`` with
``local_files_only=True`` (nothing is downloaded) and replaces every linear
layer (``nn.Linear``, GPT-2's ``Conv1D``) by its spike-driven form
(``snn_compile.models.encodings``). ``HFBackend`` is a token backend for
``snn_compile.models.sampling.generate``: one token per call with the model's
key/value cache, so the spikes counted per call are those of one token.

Tokenizer: the folder's own (``AutoTokenizer``) when it has tokenizer files;
otherwise a documented byte-level fallback, ``ByteTokenizer``: token id = one
UTF-8 byte (0..255), which needs a vocabulary of at least 256 ids; ids above
255 decode to U+FFFD.
"""

from __future__ import annotations

import os
from typing import Iterable, List, Optional

import numpy as np
import torch

from snn_compile.errors import UserError
from snn_compile.models.encodings import EncodedModel, apply_encoding, make_encoding

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
            threshold: Optional[float] = None):
    """(model, tokenizer, EncodedModel or None) from a local model folder."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise UserError(f"--hf {path} does not exist; give the folder of a Hugging Face causal "
                        "LM saved with save_pretrained (models are never downloaded)")
    if not os.path.isdir(path) or not os.path.isfile(os.path.join(path, "config.json")):
        raise UserError(f"--hf {path} is not a Hugging Face model folder (no config.json); give "
                        "a folder written by save_pretrained")
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
    tok = _tokenizer(tf, path, model.config.vocab_size)
    return model, tok, apply_encoding(model, enc)


def _tokenizer(tf, path: str, vocab_size: int):
    if any(os.path.isfile(os.path.join(path, f)) for f in TOKENIZER_FILES):
        try:
            return HFTokenizer(tf.AutoTokenizer.from_pretrained(path, local_files_only=True))
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"--hf {path}: its tokenizer files do not load "
                            f"({str(e).splitlines()[0][:160]}); save the tokenizer again") \
                from None
    return ByteTokenizer(vocab_size)


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
        from snn_compile.models.sampling import TorchBackend

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
