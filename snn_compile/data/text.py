"""Text a model did not see in training: one out-of-vocabulary policy for every command.

A character tokenizer knows exactly the characters of its training text; id 0 (the
unknown token) never occurs in training, so the model has learnt nothing about it.
Characters outside the vocabulary are mapped to the unknown token and *reported*: by
default (``oov="unk"``, ``--oov unk``) with one warning naming them, how many there
are and where the first one is; with ``oov="error"`` (``--oov error``) the text is
refused with that message. A word tokenizer's vocabulary is a frequency cut-off and
its training text is full of ``<unk>``: words outside it always map to ``<unk>``
(counted, never refused). See docs/data.md.
"""

from __future__ import annotations

import sys
from typing import Callable, Optional, Tuple

import numpy as np

from snn_compile.data.batching import train_val_split
from snn_compile.data.corpus import load_corpus
from snn_compile.errors import UserError

OOV_POLICIES = ("unk", "error")
DEFAULT_OOV = "unk"
VAL_FRACTION = 0.1


def add_oov_flag(parser, what: str = "the text") -> None:
    """``--oov unk|error``: the out-of-vocabulary policy (argparse)."""
    parser.add_argument("--oov", choices=OOV_POLICIES, default=DEFAULT_OOV,
                        help=f"characters of {what} outside the model's vocabulary: unk maps "
                             "them to the unknown token with a warning (default), error "
                             "refuses the text (docs/data.md)")


def _where(text: str, pos: int) -> str:
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f"position {pos} (line {line}, column {col})"


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def encode_text(tok, text: str, oov: str = DEFAULT_OOV, what: str = "the text",
                use: str = "scored", warn: Optional[Callable[[str], None]] = _warn
                ) -> Tuple[list, int]:
    """(token ids, number of unknown tokens) of ``text`` under the policy ``oov``.

    ``use`` says what happens to an unknown character ("scored", "fed") in messages.
    """
    ids = tok.encode(text, strict=False)
    return ids, check_oov(tok, text, ids, 0, len(ids), oov, what, use, warn)


def check_oov(tok, text: str, ids, start: int, stop: int, oov: str = DEFAULT_OOV,
              what: str = "the text", use: str = "scored",
              warn: Optional[Callable[[str], None]] = _warn) -> int:
    """Apply the policy to the unknown tokens among ``ids[start:stop]`` (the part of the
    text that is used); returns how many there are."""
    if oov not in OOV_POLICIES:
        raise UserError(f"unknown out-of-vocabulary policy {oov!r}; choose one of "
                        f"{', '.join(OOV_POLICIES)}")
    part = np.asarray(ids[start:stop])
    n_unk = int((part == 0).sum())
    if not n_unk or tok.kind != "char":
        return n_unk
    pos = start + int(np.argmax(part == 0))      # a char tokenizer: token i = character i
    c = text[pos]
    distinct = sorted({text[start + i] for i in np.flatnonzero(part == 0)})
    chars = " ".join(repr(ch) for ch in distinct[:8]) + (" ..." if len(distinct) > 8 else "")
    if oov == "error":
        more = f"; {n_unk} such characters in all ({chars})" if n_unk > 1 else ""
        raise UserError(f"{what}: character {c!r} (U+{ord(c):04X}) at {_where(text, pos)} is "
                        f"not in the model's vocabulary of {len(tok.chars)} characters{more}; "
                        f"remove {'them' if n_unk > 1 else 'it'}, or drop --oov error to have "
                        f"{'them' if n_unk > 1 else 'it'} {use} as the unknown token")
    if warn is not None:
        warn(f"{what}: {n_unk} character{'s' if n_unk > 1 else ''} outside the model's "
             f"vocabulary ({chars}; first at {_where(text, pos)}) {use} as the unknown "
             "token; --oov error refuses such text")
    return n_unk


def min_text_tokens(context: int, val_fraction: float = VAL_FRACTION) -> int:
    """The fewest tokens whose validation split holds one window of ``context`` + 1."""
    n = max(context + 2, int((context + 1) / val_fraction) - 10)
    while max(1, int(round(n * val_fraction))) < context + 1:
        n += 1
    return n


def validation_ids(path: Optional[str], tok, context: int, oov: str = DEFAULT_OOV,
                   max_tokens: Optional[int] = None,
                   warn: Optional[Callable[[str], None]] = _warn) -> Tuple[np.ndarray, int]:
    """(validation token ids, unknown tokens among those scored) of a corpus, for a model
    whose context is fixed: the split the trainer uses (the last 10 %). The policy
    ``oov`` applies to the part that is scored (the first ``max_tokens`` + 1 of the split
    if given)."""

    name = f"corpus file {path}" if path else "the embedded corpus"
    text = load_corpus(path)
    ids = np.asarray(tok.encode(text, strict=False), dtype=np.int64)
    unit = "characters" if tok.kind == "char" else "tokens"
    need = min_text_tokens(context)

    def count(n: int) -> str:
        return f"{n} {unit if n != 1 else unit[:-1]}"

    if len(ids) < 2:
        raise UserError(f"{name} has {count(len(ids))}; the model's context of {context} "
                        f"needs a text of at least {need} {unit} (its last 10 % is scored)")
    _, val = train_val_split(ids, VAL_FRACTION)
    if len(val) < context + 1:
        raise UserError(f"{name} is too short for this model: its validation split (the last "
                        f"10 %) holds {count(len(val))}, and one window of the model's context "
                        f"needs {context + 1} ({context} inputs + 1 target); give a text of at "
                        f"least {need} {unit} (the context is fixed by the model)")
    start = len(ids) - len(val)
    stop = len(ids) if max_tokens is None else min(len(ids), start + max_tokens + 1)
    n_unk = check_oov(tok, text, ids, start, stop, oov, what=name, warn=warn)
    return val, n_unk
