"""Deterministic train/validation split and batching of token ids.

A language model learns ``y[t] = ids[s + t + 1]`` from ``x[t] = ids[s + t]``
for windows of ``context`` tokens. Training samples windows at random
offsets from a seeded generator; evaluation walks non-overlapping blocks so
that every target token of the split is scored exactly once.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from snn_compile.errors import UserError


def _as_ids(ids) -> np.ndarray:
    a = np.asarray(ids)
    if a.ndim != 1:
        raise ValueError(f"token ids must be one-dimensional, got shape {a.shape}")
    return a.astype(np.int64, copy=False)


def check_corpus_length(ids, context: int) -> None:
    """Refuse a token sequence too short for one window of inputs plus its next-token target."""
    if context < 1:
        raise UserError(f"context must be at least 1 token, got {context}")
    n = len(ids)
    if n < context + 1:
        raise UserError(f"the text has {n} tokens but one context window needs {context + 1} "
                        f"({context} inputs + 1 next-token target); use a longer text or a "
                        f"smaller context (at most {max(n - 1, 0)})")


def train_val_split(ids, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous split: the first ``1 - val_fraction`` for training, the rest for validation.

    ``n_val = max(1, round(n * val_fraction))``; a contiguous tail keeps
    validation text unseen in training (random token-level splits would leak
    overlapping windows).
    """
    ids = _as_ids(ids)
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"validation fraction must be between 0 and 1 (exclusive), "
                        f"got {val_fraction}")
    n = len(ids)
    n_val = max(1, int(round(n * val_fraction)))
    if n_val >= n:
        raise UserError(f"the text has {n} tokens, too few to split into training and "
                        f"validation with fraction {val_fraction}; use a longer text")
    return ids[: n - n_val], ids[n - n_val:]


def random_batch(ids, batch: int, context: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``batch`` windows at offsets drawn from ``rng``: int64 x, y of shape (batch, context).

    ``y[b, t] = x[b, t + 1]`` shifted by one: the next token of every position.
    """
    ids = _as_ids(ids)
    check_corpus_length(ids, context)
    starts = rng.integers(0, len(ids) - context, size=batch)
    idx = starts[:, None] + np.arange(context)[None, :]
    return ids[idx], ids[idx + 1]


def sequential_blocks(ids, context: int,
                      batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Non-overlapping windows covering the split, ``batch`` at a time, for evaluation.

    Window ``k`` starts at ``k * context``; together the windows predict every
    token ``ids[1:]`` exactly once. All batches have shape (<= batch, context)
    except, when ``len(ids) - 1`` is not a multiple of ``context``, a last
    batch of shape (1, r) with ``r < context`` for the remainder: weight
    per-batch losses by ``y.size`` to get the per-token mean.
    """
    ids = _as_ids(ids)
    check_corpus_length(ids, context)
    if batch < 1:
        raise UserError(f"batch size must be at least 1, got {batch}")
    n_full = (len(ids) - 1) // context
    for b0 in range(0, n_full, batch):
        starts = np.arange(b0, min(b0 + batch, n_full)) * context
        idx = starts[:, None] + np.arange(context)[None, :]
        yield ids[idx], ids[idx + 1]
    rest = len(ids) - 1 - n_full * context
    if rest:
        s = n_full * context
        yield ids[None, s: s + rest], ids[None, s + 1: s + 1 + rest]
