"""Loss on text the models never saw: CPython's own docstrings, not its help topics.

    python -m snn_compile.benchmarks.unseen [CKPT ...] [--max-chars N] [--json]

The shipped models train and validate on ``pydoc_data.topics`` (the language
reference's help topics). This benchmark scores them on a different text of the same
interpreter: the docstrings of the public classes and functions of 24 standard-library
modules (``argparse``, ``collections``, ``json``, ... below), each module's docstring first,
joined in a fixed order with blank lines, so the text is the same on every run of one
Python version (3.10 here). It shares the domain (English about Python, with code) but
not the sentences. Characters outside a model's vocabulary are scored as its unknown
token, and their number is printed. Every checkpoint is evaluated by the same
``models.train.evaluate`` as ``snn-compile eval`` (non-overlapping context blocks, the
float model), and the ratio to the first ANN checkpoint given is reported.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import sys

import numpy as np

from snn_compile.errors import exits_on_user_error
from snn_compile.models.checkpoint import load_checkpoint
from snn_compile.models.evaluation import evaluate_with_progress

MODULES = ("argparse", "collections", "contextlib", "csv", "dataclasses", "datetime",
           "functools", "heapq", "itertools", "json", "logging", "os", "pathlib", "pickle",
           "queue", "random", "re", "shutil", "socket", "string", "subprocess", "tempfile",
           "threading", "unittest")
DEFAULT_CHARS = 100_000


def unseen_text(max_chars: int = DEFAULT_CHARS) -> str:
    """The docstrings of ``MODULES`` (module, then public members in name order)."""
    parts: list[str] = []
    for name in MODULES:
        mod = importlib.import_module(name)
        docs = [inspect.getdoc(mod)]
        for attr in sorted(vars(mod)):
            obj = getattr(mod, attr)
            if attr.startswith("_") or getattr(obj, "__module__", None) != name:
                continue
            if inspect.isclass(obj) or inspect.isfunction(obj):
                docs.append(inspect.getdoc(obj))
        parts += [d.strip() for d in docs if d and d.strip()]
    return "\n\n".join(parts)[:max_chars]


def score(spec: str, text: str) -> dict:
    """One checkpoint's loss on ``text``, with a progress bar on stderr."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, \
        TimeRemainingColumn

    model, tok, _ = load_checkpoint(spec)
    ids = np.asarray(tok.encode(text, strict=False), dtype=np.int64)
    with Progress(TextColumn(f"[bold]{spec}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True)) as bar:
        task = bar.add_task(spec, total=len(ids) - 1)
        ev = evaluate_with_progress(model, ids, progress=lambda d, n: bar.update(
            task, completed=d, total=n))
    return {"checkpoint": spec, "kind": model.cfg.kind, "val_loss": ev["val_loss"],
            "bpc": ev["bpc"], "tokens": ev["tokens"], "unknown": int((ids == 0).sum()),
            "layers": model.cfg.n_layers, "d_model": model.cfg.d_model}


@exits_on_user_error
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m snn_compile.benchmarks.unseen",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("ckpts", nargs="*", default=["default:spikedecoder", "default:ann"],
                    metavar="CKPT", help="checkpoints (default: the shipped two)")
    ap.add_argument("--max-chars", type=int, default=DEFAULT_CHARS,
                    help=f"characters of the text scored (default {DEFAULT_CHARS})")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args(argv)
    text = unseen_text(a.max_chars)
    rows = [score(c, text) for c in a.ckpts]
    ann = next((r["val_loss"] for r in rows if r["kind"] == "ann"), None)
    for r in rows:
        r["ratio_to_ann"] = r["val_loss"] / ann if ann else None
    out = {"text": f"docstrings of {len(MODULES)} standard-library modules, Python "
                   f"{sys.version_info.major}.{sys.version_info.minor}",
           "chars": len(text), "models": rows}
    if a.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"{out['text']}: {len(text)} characters")
    for r in rows:
        ratio = f"  {r['ratio_to_ann']:.3f} x ANN" if r["ratio_to_ann"] else ""
        print(f"{r['checkpoint']:32s} {r['kind']:13s} {r['layers']} x {r['d_model']:<4d} "
              f"loss {r['val_loss']:.4f}  bpc {r['bpc']:.3f}  unknown {r['unknown']}{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
