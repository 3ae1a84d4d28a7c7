"""The ``snn-compile`` command: one subcommand per stage of the toolchain.

Each subcommand lives in ``snn_compile.cli.cmd_<name>`` with
``add_arguments(parser)`` and ``run(args) -> int``. Only the module of the
command being run is imported, so ``snn-compile --help`` stays fast and a
stage that fails to import does not take the other commands down with it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading

from snn_compile import __version__
from snn_compile.cli._args import OneLineParser
from snn_compile.errors import UserError

# name → one-line summary shown by `snn-compile --help` (the module docstring is the long help)
COMMANDS = {
    "train": "train a spiking decoder (or its ANN twin) on a text corpus",
    "eval": "validation loss of a decoder (bits per character, perplexity, spike rates); "
            "accuracy of a NIR graph on your data",
    "export": "export a deployable checkpoint to a NIR graph",
    "inspect": "list the nodes, edges and extension nodes of a NIR graph",
    "compile": "quantize a NIR graph to Loihi 2 fixed point and report the resources it needs",
    "run": "run a NIR graph on spike trains (or a decoder on text) and write its output",
    "generate": "generate text token by token on a backend (torch, NIR, integer, Lava, Loihi 2)",
    "bench": "energy per token (decoders) or per sample (NIR graphs) from measured spikes",
}

DESCRIPTION = ("Neuromorphic deployment toolchain for spiking language models: train a spiking "
               "decoder, export it to NIR, compile it to Loihi 2 fixed point, run it on Lava's "
               "bit-accurate simulator and measure energy per token.")


def _selected_command(argv: list[str]) -> str | None:
    """The subcommand named in ``argv`` (the first non-option word), if any."""
    for a in argv:
        if a == "--":
            return None
        if not a.startswith("-"):
            return a if a in COMMANDS else None
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument tree; only ``command``'s module is imported to fill in its arguments."""
    parser = OneLineParser(
        prog="snn-compile", description=DESCRIPTION,
        epilog="Run `snn-compile COMMAND --help` for the options of one command.")
    if command is not None:
        parser.help_prog = f"snn-compile {command}"
    parser.add_argument("--version", action="version", version=f"snn-compile {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, summary in COMMANDS.items():
        if name != command:
            sub.add_parser(name, help=summary)
            continue
        module = importlib.import_module(f"snn_compile.cli.cmd_{name}")
        p = sub.add_parser(name, help=summary, description=(module.__doc__ or summary).strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _terminated(signum, frame):
    """SIGTERM (kill, a job scheduler) ends a command like Ctrl-C: outputs being written
    are removed from their temporary files, nothing half-written is left."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        return _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str]) -> int:
    try:
        parser = build_parser(_selected_command(argv))
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        return int(args._run(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (MemoryError, RuntimeError) as e:
        if not _out_of_memory(e):
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[-1][:200]
        print(f"error: out of memory ({first}); the sizes asked for need more memory than "
              "this machine has: choose smaller ones (--batch-size, --d-model, --layers, "
              "--context, --timesteps, --tokens)", file=sys.stderr)
        return 2
    except BrokenPipeError:          # e.g. `snn-compile ... | head`: the reader went away
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _out_of_memory(e: BaseException) -> bool:
    """An allocation that failed (numpy, torch CPU or CUDA): the machine's limit, not a bug."""
    if isinstance(e, MemoryError):
        return True
    msg = str(e)
    return "can't allocate memory" in msg or "out of memory" in msg.lower()


if __name__ == "__main__":
    sys.exit(main())
