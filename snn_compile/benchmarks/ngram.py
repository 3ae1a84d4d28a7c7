"""Count-based n-gram baselines: how much context does a validation loss stand for?

``python -m snn_compile.benchmarks.ngram [--max-context 4] [--data PATH] [--json]``
fits interpolated n-gram models on the training split (the models' own tokenizer and
split, ``models.train.prepare_data``) and prints their loss on the validation split,
one row per context length. Interpolation (Witten-Bell style): the order-``k``
estimate is ``lam c(h, y) / c(h) + (1 - lam) p_{k-1}(y)`` with ``lam = c(h) / (c(h) + 5)``
and the uniform distribution below the unigram. Every validation token is scored with
all the left context the split gives it (the decoders' windows restart every
``context`` tokens, which costs them a little at each window start).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from typing import List, Optional

from snn_compile.errors import UserError, exits_on_user_error
from snn_compile.models.train import prepare_data

SMOOTHING = 5.0


def ngram_losses(train_ids, val_ids, vocab: int, max_context: int = 4) -> List[dict]:
    """Validation loss (nats/token) of the interpolated model with 0..max_context tokens."""
    if max_context < 0:
        raise UserError(f"--max-context must be >= 0, got {max_context}")
    tr, va = [int(i) for i in train_ids], [int(i) for i in val_ids]
    joint, hist = [], []
    for k in range(max_context + 1):
        joint.append(Counter(tuple(tr[i - k:i + 1]) for i in range(k, len(tr))))
        hist.append(Counter(tuple(tr[i - k:i]) for i in range(k, len(tr))))
    rows = []
    for order in range(max_context + 1):
        nll = 0.0
        for i, y in enumerate(va):
            p = 1.0 / vocab
            for k in range(min(order, i) + 1):
                h = tuple(va[i - k:i])
                c = hist[k].get(h, 0)
                if c:
                    lam = c / (c + SMOOTHING)
                    p = lam * joint[k].get(h + (y,), 0) / c + (1 - lam) * p
            nll -= math.log(p)
        loss = nll / len(va)
        rows.append({"context": order, "val_loss": loss, "bits_per_token": loss / math.log(2),
                     "tokens": len(va)})
    return rows


@exits_on_user_error
def main(argv: Optional[List[str]] = None) -> int:

    ap = argparse.ArgumentParser(prog="python -m snn_compile.benchmarks.ngram",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-context", type=int, default=4, metavar="K",
                    help="longest context in tokens (default: 4)")
    ap.add_argument("--data", metavar="PATH", help="text file (default: the embedded corpus)")
    ap.add_argument("--tokenizer", choices=("char", "word"), default="char")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    tok, train_ids, val_ids = prepare_data(args.data, args.tokenizer, 2)
    rows = ngram_losses(train_ids, val_ids, tok.vocab_size, args.max_context)
    if args.json:
        print(json.dumps({"rows": rows, "smoothing": SMOOTHING}))
        return 0
    print(f"interpolated n-gram models, {len(val_ids)} validation tokens")
    print("| context (tokens) | val loss (nats/token) | bits/token |")
    print("| --- | --- | --- |")
    for r in rows:
        print(f"| {r['context']} | {r['val_loss']:.4f} | {r['bits_per_token']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
