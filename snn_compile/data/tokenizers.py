"""Character and word tokenizers, saved inside checkpoints as plain dicts.

A model always decodes with the vocabulary it was trained with: the trainer
stores ``tokenizer.to_dict()`` in the checkpoint and every later stage rebuilds
it with ``tokenizer_from_dict``. Both tokenizers reserve id 0 for the unknown
token, so the vocabulary of the model is ``vocab_size`` including it.
"""

from __future__ import annotations

import collections
import re
from typing import Iterable, Sequence

from snn_compile.errors import UserError

UNK = "<unk>"          # word-level unknown token (also the name of char id 0)
UNK_CHAR = "\ufffd"    # what the char tokenizer's unknown id decodes to (U+FFFD)
FORMAT_VERSION = 1


def _check_ids(ids: Iterable[int], vocab_size: int, kind: str) -> list[int]:
    out = [int(i) for i in ids]
    bad = [i for i in out if not 0 <= i < vocab_size]
    if bad:
        raise UserError(f"token id {bad[0]} is outside the {kind} tokenizer's vocabulary "
                        f"(0..{vocab_size - 1}); the model and its tokenizer do not match — "
                        "use the tokenizer stored in the model's own checkpoint")
    return out


class CharTokenizer:
    """One token per Unicode character.

    ids: 0 = unknown, then the characters of the training text in sorted order.
    ``encode(strict=True)`` refuses characters outside the vocabulary;
    ``strict=False`` maps them to id 0, which decodes to U+FFFD.
    """

    kind = "char"
    unk_id = 0

    def __init__(self, chars: Sequence[str]):
        chars = list(chars)
        if any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise UserError("char tokenizer vocabulary must be single characters; "
                            "the checkpoint's tokenizer is corrupt — retrain or re-export it")
        if len(set(chars)) != len(chars):
            raise UserError("char tokenizer vocabulary has duplicate characters; "
                            "the checkpoint's tokenizer is corrupt — retrain or re-export it")
        self.chars = chars
        self._stoi = {c: i + 1 for i, c in enumerate(chars)}
        self._itos = [UNK_CHAR] + chars

    @classmethod
    def train(cls, text: str, max_vocab: int = 4096) -> "CharTokenizer":
        chars = sorted(set(text))
        if not chars:
            raise UserError("cannot build a char tokenizer from an empty text; give a corpus "
                            "with some text in it")
        if len(chars) + 1 > max_vocab:
            raise UserError(f"the text has {len(chars)} distinct characters, more than the "
                            f"vocabulary limit {max_vocab} (incl. the unknown token); raise "
                            "max_vocab or use the word tokenizer")
        return cls(chars)

    @property
    def vocab_size(self) -> int:
        return len(self._itos)

    def encode(self, text: str, strict: bool = True) -> list[int]:
        stoi = self._stoi
        ids = [stoi.get(c, 0) for c in text]
        if strict and 0 in ids:
            pos = ids.index(0)
            c = text[pos]
            raise UserError(f"character {c!r} (U+{ord(c):04X}) at position {pos} is not in the "
                            f"tokenizer's vocabulary of {len(self.chars)} characters; remove it, "
                            "or encode with strict=False to map unknown characters to the "
                            "unknown token")
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        itos = self._itos
        return "".join(itos[i] for i in _check_ids(ids, self.vocab_size, self.kind))

    def to_dict(self) -> dict:
        return {"kind": self.kind, "version": FORMAT_VERSION, "chars": list(self.chars)}

    def __eq__(self, other) -> bool:
        return isinstance(other, CharTokenizer) and self.chars == other.chars

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


# Word-level splitting (applied after lower-casing):
#   <unk>                 the unknown token written literally
#   \n                    line breaks are tokens (paragraph structure survives)
#   \d+(\.\d+)+           dotted numbers ("3.10") stay one token
#   \w+(['’]\w+)*         words, with inner apostrophes ("don't")
#   [^\w\s]               every other non-space character is a token of its own
# Spaces and tabs only separate tokens.
_TOKEN_RE = re.compile(r"<unk>|\n|\d+(?:\.\d+)+|\w+(?:['’]\w+)*|[^\w\s]")
_NO_SPACE_BEFORE = set(".,;:!?)]}%…’”\n-/")
_NO_SPACE_AFTER = set("([{“‘\n-/")
_TOGGLE_QUOTES = {'"', "'"}   # alternate opening / closing within one decode


class WordTokenizer:
    """Lower-cased words and single punctuation marks, a bounded vocabulary.

    ids: 0 = ``<unk>``, then the ``max_vocab - 1`` most frequent tokens of the
    training text, by decreasing count, ties in code-point order. Words outside
    the vocabulary always map to ``<unk>``: that is the normal case for a
    bounded vocabulary, so ``strict`` is accepted for a uniform interface only.
    ``decode`` joins tokens with single spaces and re-attaches punctuation;
    ``encode(decode(ids)) == ids`` for every id sequence.
    """

    kind = "word"
    unk_id = 0

    def __init__(self, vocab: Sequence[str], lowercase: bool = True):
        vocab = list(vocab)
        if not vocab or vocab[0] != UNK or len(set(vocab)) != len(vocab) or any(
                not isinstance(w, str) or not w for w in vocab):
            raise UserError("word tokenizer vocabulary must start with '<unk>' and hold unique, "
                            "non-empty tokens; the checkpoint's tokenizer is corrupt — retrain it")
        self.vocab = vocab
        self.lowercase = bool(lowercase)
        self._stoi = {w: i for i, w in enumerate(vocab)}

    @staticmethod
    def split(text: str, lowercase: bool = True) -> list[str]:
        """Text → token strings (before the vocabulary lookup)."""
        return _TOKEN_RE.findall(text.lower() if lowercase else text)

    @classmethod
    def train(cls, text: str, max_vocab: int = 4096, lowercase: bool = True) -> "WordTokenizer":
        if max_vocab < 2:
            raise UserError(f"max_vocab must be at least 2 (the unknown token and one word), "
                            f"got {max_vocab}")
        counts = collections.Counter(cls.split(text, lowercase))
        counts.pop(UNK, None)
        if not counts:
            raise UserError("cannot build a word tokenizer: the text has no words; give a "
                            "corpus with some text in it")
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: max_vocab - 1]
        return cls([UNK] + [w for w, _ in ranked], lowercase)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str, strict: bool = True) -> list[int]:
        stoi = self._stoi
        return [stoi.get(w, 0) for w in self.split(text, self.lowercase)]

    def decode(self, ids: Iterable[int]) -> str:
        words = [self.vocab[i] for i in _check_ids(ids, self.vocab_size, self.kind)]
        out: list[str] = []
        prev = None
        open_quote = {q: False for q in _TOGGLE_QUOTES}
        for w in words:
            attach = prev is None or prev in _NO_SPACE_AFTER or w in _NO_SPACE_BEFORE
            if w in _TOGGLE_QUOTES:
                closing = open_quote[w]
                open_quote[w] = not closing
                attach = prev is None or prev in _NO_SPACE_AFTER or closing
                if not closing:                 # an opening quote glues to what follows
                    out.append(w if attach else " " + w)
                    prev = "("
                    continue
            out.append(w if attach else " " + w)
            prev = w
        return "".join(out)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "version": FORMAT_VERSION, "lowercase": self.lowercase,
                "vocab": list(self.vocab)}

    def __eq__(self, other) -> bool:
        return (isinstance(other, WordTokenizer) and self.vocab == other.vocab
                and self.lowercase == other.lowercase)

    def __repr__(self) -> str:
        return f"WordTokenizer(vocab_size={self.vocab_size}, lowercase={self.lowercase})"


Tokenizer = CharTokenizer | WordTokenizer
TOKENIZER_KINDS = ("char", "word")


def make_tokenizer(kind: str, text: str, max_vocab: int = 4096) -> Tokenizer:
    """Build a tokenizer of ``kind`` ("char" | "word") from a training text."""
    if kind == "char":
        return CharTokenizer.train(text, max_vocab)
    if kind == "word":
        return WordTokenizer.train(text, max_vocab)
    raise UserError(f"unknown tokenizer {kind!r}; choose one of: {', '.join(TOKENIZER_KINDS)}")


def tokenizer_from_dict(d: dict) -> Tokenizer:
    """Rebuild a tokenizer from ``to_dict()`` output (as stored in a checkpoint)."""
    if not isinstance(d, dict) or "kind" not in d:
        raise UserError("the checkpoint's tokenizer entry is missing or not a dict; the "
                        "checkpoint is corrupt — retrain or re-save it")
    version = d.get("version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise UserError(f"tokenizer format version {version} is not supported (this "
                        f"snn_compile reads version {FORMAT_VERSION}); retrain the model")
    try:
        if d["kind"] == "char":
            return CharTokenizer(d["chars"])
        if d["kind"] == "word":
            return WordTokenizer(d["vocab"], d.get("lowercase", True))
    except (KeyError, TypeError):
        raise UserError(f"the checkpoint's {d['kind']} tokenizer entry lacks its vocabulary; "
                        "the checkpoint is corrupt — retrain or re-save it") from None
    raise UserError(f"unknown tokenizer kind {d['kind']!r} in checkpoint; expected one of: "
                    f"{', '.join(TOKENIZER_KINDS)}")
