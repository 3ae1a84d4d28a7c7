"""Helpers shared by the ``snn-compile`` subcommands: checkpoint specs, JSON output."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

from snn_compile.errors import UserError

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"

# spec "default:<name>" → (file under snn_compile/assets/, the model kind to train it)
DEFAULT_CHECKPOINTS = {
    "spikedecoder": ("spikedecoder.pt", "spikedecoder"),
    "ann": ("ann.pt", "ann"),
}
DEFAULT_PREFIX = "default:"


def resolve_checkpoint(spec: str) -> str:
    """Turn ``default:spikedecoder`` / ``default:ann`` or a file path into an existing path."""
    spec = os.fspath(spec)
    if spec.startswith(DEFAULT_PREFIX):
        name = spec[len(DEFAULT_PREFIX):]
        if name not in DEFAULT_CHECKPOINTS:
            known = ", ".join(DEFAULT_PREFIX + k for k in DEFAULT_CHECKPOINTS)
            raise UserError(f"unknown shipped checkpoint {spec!r}; choose one of: {known}, "
                            "or give the path of a checkpoint file")
        filename, model = DEFAULT_CHECKPOINTS[name]
        path = ASSETS_DIR / filename
        if not path.is_file():
            raise UserError(f"shipped checkpoint {spec} is missing: {path} does not exist; make "
                            f"it with `snn-compile train --model {model} -o {path}` "
                            "or give the path of another checkpoint")
        return str(path)
    if not os.path.exists(spec):
        raise UserError(f"{spec} does not exist; give the path of a checkpoint or .nir file, "
                        f"or {DEFAULT_PREFIX}spikedecoder / {DEFAULT_PREFIX}ann for the shipped "
                        "models")
    if os.path.isdir(spec):
        raise UserError(f"{spec} is a directory (a folder), not a file; give the path of a "
                        "checkpoint, .nir or .qgraph file")
    return spec


def _jsonable(obj):
    """numpy scalars/arrays, paths, tuples and sets → JSON types; NaN/inf → null."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def to_json(obj) -> str:
    """One line of strict JSON for ``obj`` (see ``_jsonable`` for the conversions)."""
    return json.dumps(_jsonable(obj), allow_nan=False, ensure_ascii=False)


def print_json(obj) -> None:
    """Print ``obj`` as one JSON object on stdout (the only thing ``--json`` puts there)."""
    sys.stdout.write(to_json(obj) + "\n")
    sys.stdout.flush()


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object on stdout; progress and streaming go to "
                             "stderr")


def not_built(command: str) -> int:
    """Exit path of a subcommand whose stage does not exist yet: say so, never pretend."""
    print(f"snn-compile {command}: not built yet", file=sys.stderr)
    return 3


def add_encoding_flags(parser: argparse.ArgumentParser, what: str) -> None:
    """``--encoding/--bits/--threshold``: spike encodings of an ANN's activations."""
    parser.add_argument("--encoding", choices=("none", "binary", "ternary", "bitwise"),
                        default="none", help=f"{what} (docs/encodings.md)")
    from snn_compile.cli._args import float_in, int_in
    parser.add_argument("--bits", type=int_in(2, 16), default=8, metavar="K",
                        help="bits of the bitwise encoding (default: 8)")
    parser.add_argument("--threshold", type=float_in(0), metavar="X",
                        help="binary/ternary threshold, a multiple of mean |x| (default: 0.7)")


def load_ann(spec: str):
    """(model, tokenizer) of a non-spiking checkpoint; a clear error for anything else."""
    from snn_compile.models.checkpoint import load_checkpoint

    if spec.endswith((".nir", ".qgraph")):
        raise UserError(f"{spec} is a spiking graph; spike encodings (--encoding) apply to ANN "
                        "checkpoints (default:ann) and --hf models: drop --encoding")
    model, tok, _ = load_checkpoint(spec)
    if model.cfg.kind != "ann":
        raise UserError(f"{spec} is a {model.cfg.kind} checkpoint, which spikes already; spike "
                        "encodings (--encoding) apply to ANN models (default:ann or --hf "
                        "PATH): drop --encoding")
    return model, tok


@contextlib.contextmanager
def progress_bar(label: str):
    """A progress bar on stderr; yields ``update(done, total)``."""
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
                  transient=False) as bar:
        task = None

        def update(done: int, total: int) -> None:
            nonlocal task
            if task is None:
                task = bar.add_task(label, total=total)
            bar.update(task, completed=done, total=total)

        yield update
