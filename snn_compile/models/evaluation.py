"""Validation loss with progress: ``train.evaluate`` over chunks of the split.

``evaluate_with_progress`` cuts the validation ids into chunks of ``CHUNK_WINDOWS``
context windows (a multiple of the evaluation batch, so every batch is the one
``evaluate`` would form on the whole split), evaluates each, reports progress
after each, and merges the sums: the same loss, token count and spike rates as one
``evaluate`` call on the whole split, up to floating-point summation order
(~1e-15 relative).
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
from snn_compile.models.train import evaluate

CHUNK_WINDOWS = 64          # 4 batches of 16 windows


def evaluate_with_progress(model, val_ids: np.ndarray, max_tokens: Optional[int] = None,
                           progress: Optional[Callable[[int, int], None]] = None,
                           batch: int = 16, device: str = "cpu") -> dict:
    """``train.evaluate(model, val_ids, max_tokens, batch, device)``, calling
    ``progress(tokens done, tokens in all)`` after every chunk."""

    ctx = model.cfg.context
    ids = val_ids if max_tokens is None else val_ids[: max_tokens + 1]
    n_targets = len(ids) - 1
    full = (n_targets // ctx) * ctx          # targets in whole windows
    step = CHUNK_WINDOWS * ctx
    if full <= step or batch <= 0 or CHUNK_WINDOWS % batch:
        ev = evaluate(model, ids, None, batch, device)
        if progress:
            progress(ev["tokens"], ev["tokens"])
        return ev
    total, count = 0.0, 0
    rate_sum: dict = {}
    done = 0
    for s in range(0, full, step):
        end = s + step if s + step < full else n_targets     # the last chunk takes the rest
        ev = evaluate(model, ids[s: end + 1], None, batch, device)
        n = ev["tokens"]
        total += ev["val_loss"] * n
        count += n
        for k, r in ev["spike_rates"].items():
            rate_sum[k] = rate_sum.get(k, 0.0) + r * n
        done += n
        if progress:
            progress(done, n_targets)
    val = total / max(count, 1)
    rates = {k: v / count for k, v in rate_sum.items()}
    return {"val_loss": val, "ppl": math.exp(min(val, 50)), "bpc": val / math.log(2),
            "tokens": count, "spike_rates": rates,
            "mean_spike_rate": (sum(rates.values()) / len(rates)) if rates else None}
