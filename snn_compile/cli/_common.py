"""Helpers shared by the ``snn-compile`` subcommands: checkpoint specs, JSON output."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys


from snn_compile.benchmarks.report import to_jsonable
from snn_compile.errors import UserError
from snn_compile.models.assets import (ASSETS_DIR, DEFAULT_CHECKPOINTS,  # noqa: F401
                                       DEFAULT_PREFIX, resolve_checkpoint)

def to_json(obj) -> str:
    """One line of strict JSON for ``obj`` (``benchmarks.report.to_jsonable`` converts)."""
    return json.dumps(to_jsonable(obj), allow_nan=False, ensure_ascii=False)


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
