"""Quantize a NIR graph to Loihi 2 fixed point and report the resources it needs.

Per population: scales, clipped weights, worst-case state against the 24-bit
range. Resources: neurons, synapses, fan-in/out, synaptic memory, Loihi 2
neurocores and chips. Values that do not fit are an error unless
--allow-saturation is given.
"""

from __future__ import annotations

import argparse

from snn_compile.cli._common import add_json_flag, not_built


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("graph", metavar="MODEL.nir", help="NIR graph file")
    parser.add_argument("--allow-saturation", action="store_true",
                        help="clip values that do not fit Loihi 2's fixed point instead of "
                             "refusing")
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    return not_built("compile")
