"""Show what a NIR graph contains.

A table of nodes (type, shape, parameter count), the edges, the inputs and
outputs, which nodes are extensions, and whether the graph is deployable.
Works for graphs made by other NIR tools as well.
"""

from __future__ import annotations

import argparse

from snn_compile.cli._common import add_json_flag, not_built


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("graph", metavar="MODEL.nir", help="NIR graph file")
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    return not_built("inspect")
