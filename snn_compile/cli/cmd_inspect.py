"""Show what a NIR graph contains.

A table of nodes (type, shape, parameter count), the edges, the inputs and
outputs, which nodes are extensions, and whether the graph is deployable
(compiles for Loihi 2 with ``snn-compile compile``). Works for graphs made by
other NIR tools as well. Every graph NIR can read is listed, even one that cannot
be run or compiled (a dangling edge, a cycle without a Delay, a NaN parameter,
types that NIR's own reader rejects): it is shown as not deployable, with the
reason.
"""

from __future__ import annotations

import argparse

from snn_compile.cli._common import add_json_flag


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("graph", metavar="MODEL.nir", help="NIR graph file")
    parser.add_argument("--edges", action="store_true", help="also list every edge")
    add_json_flag(parser)


def describe(graph, path: str | None = None) -> dict:
    """Nodes, edges, inputs/outputs, extensions and deployability of a NIR graph.

    Every graph NIR can read is listed, valid or not: a graph that breaks a rule
    (dangling edge, cycle without a Delay, shape mismatch, NaN parameter, a type NIR's
    own reader rejects, ...) is listed with ``deployable`` False and the reason.
    """
    import numpy as np

    from snn_compile.compiler.from_nir import is_decoder_graph
    from snn_compile.compiler.quantize_foreign import deployability
    from snn_compile.errors import UserError
    from snn_compile.export.extensions import EXTENSIONS
    from snn_compile.export.nir_io import (flatten, in_size, nir_type_problem, node_type,
                                           order, out_size, validate)

    flat = flatten(graph)
    try:
        validate(flat)
        invalid = None
    except UserError as e:
        invalid = str(e)
    try:
        names = order(flat)              # data-flow order, not the file's alphabetical one
    except Exception:                    # an invalid graph (dangling edge) may have none
        names = []
    names += [n for n in flat.nodes if n not in names]

    def size(fn, node):
        try:
            return fn(node)
        except Exception:                # a malformed parameter: shown as unknown
            return None

    rows = []
    for name in names:
        node = flat.nodes[name]
        t = node_type(node)
        params = 0
        for field in ("weight", "bias", "scale", "tau", "r", "v_leak", "v_threshold", "v_reset",
                      "tau_syn", "tau_mem", "w_in", "threshold", "delay"):
            v = getattr(node, field, None)
            if isinstance(v, np.ndarray):
                params += int(v.size)
        rows.append({"name": name, "type": t, "in": size(in_size, node),
                     "out": size(out_size, node), "params": params,
                     "extension": t in EXTENSIONS})
    nir_rejects = nir_type_problem(path) if path else None
    if invalid is not None:
        ok, why = False, invalid
    elif nir_rejects is not None:
        ok, why = False, (f"NIR's own reader (nir.read) rejects the file: {nir_rejects}; fix "
                          "the input/output types of the nodes it names")
    else:
        ok, why = deployability(graph)
    return {"nodes": rows, "edges": [list(e) for e in flat.edges], "inputs": flat.inputs,
            "outputs": flat.outputs, "extensions": sorted({r["type"] for r in rows
                                                           if r["extension"]}),
            "made_by_snn_compile": is_decoder_graph(graph),
            "metadata_keys": sorted(flat.metadata), "valid": invalid is None,
            "nir_read_accepts": nir_rejects is None if path else None,
            "deployable": ok, "deployable_why": why,
            "params": sum(r["params"] for r in rows)}


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from snn_compile.cli._common import print_json
    from snn_compile.export.nir_io import read_nir

    info = describe(read_nir(args.graph, strict=False), args.graph)
    if args.json:
        print_json(info)
        return 0
    con = Console()
    tab = Table(title=f"{args.graph}: {len(info['nodes'])} nodes, {len(info['edges'])} edges, "
                      f"{info['params']:,} parameters")
    for col in ("node", "type", "in", "out", "params", "ext"):
        tab.add_column(col, justify="right" if col in ("in", "out", "params") else "left")
    for r in info["nodes"]:
        tab.add_row(r["name"], r["type"], str(r["in"] or ""), str(r["out"] or ""),
                    f"{r['params']:,}", "extension" if r["extension"] else "")
    con.print(tab)
    if args.edges:
        for a, b in info["edges"]:
            con.print(f"  {a} -> {b}")
    con.print(f"inputs: {', '.join(info['inputs'])}; outputs: {', '.join(info['outputs'])}")
    con.print(f"extensions: {', '.join(info['extensions']) or 'none (standard NIR only)'}")
    con.print(f"deployable on Loihi 2: {'yes' if info['deployable'] else 'no'} "
              f"({info['deployable_why']})")
    return 0
