"""Export a deployable checkpoint to a NIR graph file.

Standard NIR nodes wherever NIR has one; the project's documented extension
nodes for spiking attention and token-boundary resets (docs/nir-extensions.md).
A model with blocks that cannot be deployed is refused with their names.
"""

from __future__ import annotations

import argparse

from snn_compile.cli._common import not_built


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CKPT",
                        help="checkpoint file, or default:spikedecoder")
    parser.add_argument("-o", "--output", metavar="MODEL.nir", required=True,
                        help="NIR file to write (atomically)")


def run(args: argparse.Namespace) -> int:
    return not_built("export")
