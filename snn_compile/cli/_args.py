"""Parse-time checks of the command line: every numeric option and every output path.

A value out of range, a number that is not one, or an output path that cannot be
written stops the command before any work starts, with one line naming the option,
the valid range and what was given, e.g.::

    error: argument --lr: must be a finite number > 0, got '-1' (snn-compile train --help lists the options)

Pure Python (no torch): ``snn-compile --help`` stays fast.
"""

from __future__ import annotations

import argparse
import math
import os
from typing import Callable, Optional

from snn_compile.errors import UserError, check_output_file

SEED_MAX = 2 ** 32 - 1


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one ``error: ...`` line, like a UserError."""

    help_prog = None    # the command whose --help to point at (set on the top-level parser)

    def error(self, message: str):
        self.exit(2, f"error: {message} ({self.help_prog or self.prog} --help lists the "
                     "options)\n")


def int_in(lo: int, hi: Optional[int] = None, why: str = "") -> Callable[[str], int]:
    """An argparse type: an integer in ``lo..hi`` (``hi`` None: no upper bound); ``why``
    (the reason for the range) is added to the message."""
    want = f"an integer >= {lo}" if hi is None else (
        f"an integer from {lo} to {hi}" if hi - lo > 2 else
        "one of " + ", ".join(str(v) for v in range(lo, hi + 1)))
    if why:
        want += f" ({why})"

    def parse(s: str) -> int:
        try:
            v = int(s.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {want}, got {s!r}") from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"must be {want}, got {s!r}")
        return v

    parse.__name__ = "integer"
    parse.valid = want
    return parse


def float_in(lo: float, hi: Optional[float] = None, lo_open: bool = False,
             hi_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in the interval from ``lo`` to ``hi``."""
    if hi is None:
        want = f"a finite number {'>' if lo_open else '>='} {lo:g}"
    else:
        want = (f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}")

    def parse(s: str) -> float:
        try:
            v = float(s.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {want}, got {s!r}") from None
        bad = (not math.isfinite(v) or v < lo or (lo_open and v == lo)
               or (hi is not None and (v > hi or (hi_open and v == hi))))
        if bad:
            raise argparse.ArgumentTypeError(f"must be {want}, got {s!r}")
        return v

    parse.__name__ = "number"
    parse.valid = want
    return parse


def seed() -> Callable[[str], int]:
    return int_in(0, SEED_MAX)


def output_file(*suffixes: str, why: str = "") -> Callable[[str], str]:
    """An argparse type: a path that can become a file (``errors.check_output_file``),
    ending in one of ``suffixes`` if any are given."""

    def parse(s: str) -> str:
        try:
            check_output_file(s, "output")
        except UserError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        if suffixes and not s.endswith(suffixes):
            raise argparse.ArgumentTypeError(
                f"{s} should end in {' or '.join(suffixes)}{why}; rename it")
        return s

    parse.__name__ = "output file"
    return parse


def checkpoint_output() -> Callable[[str], str]:
    """An argparse type: ``output_file()`` that also refuses to replace an existing file
    that is not a checkpoint (a text, a NIR graph, another program's safetensors)."""
    check = output_file()

    def parse(s: str) -> str:
        check(s)
        if os.path.isfile(s) and os.path.getsize(s) > 0:
            from snn_compile.models.checkpoint import is_checkpoint_file
            if not is_checkpoint_file(s):
                raise argparse.ArgumentTypeError(
                    f"{s} exists and is not an snn_compile checkpoint; training would "
                    "replace it: choose another path (or remove the file yourself)")
        return s

    parse.__name__ = "checkpoint file"
    return parse


def output_dir() -> Callable[[str], str]:
    """An argparse type: a report folder that can be written (``report.check_output_dir``)."""

    def parse(s: str) -> str:
        from snn_compile.benchmarks.report import check_output_dir
        try:
            check_output_dir(s, "output folder")
        except UserError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return s

    parse.__name__ = "output folder"
    return parse
