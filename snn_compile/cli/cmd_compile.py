"""Quantize a deployable decoder to Loihi 2 fixed point and report what it needs.

Per population: membrane scale, threshold, decay, worst input against the
16-bit activation / 24-bit state ranges; per synapse: weight exponent and
rounding. Resources: neurons, synapses, fan-in/out, synaptic memory, Loihi 2
neurocores and chips with the partition. Writes the compiled graph (.qgraph)
with -o, atomically.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL",
                        help="checkpoint, default:spikedecoder, or a compiled .qgraph")
    parser.add_argument("-o", "--output", metavar="FILE.qgraph",
                        help="write the quantized graph here")
    parser.add_argument("--allow-saturation", action="store_true",
                        help="write the graph even when a population may leave the 16-bit "
                             "input range (Lava's simulator wraps like the chip would)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from snn_compile.cli._common import print_json
    from snn_compile.compiler.pipeline import load_qgraph
    from snn_compile.compiler.resources import resource_report
    from snn_compile.errors import UserError

    q, rep, _ = load_qgraph(args.model)
    res = resource_report(q)
    warnings = (rep or {}).get("warnings", [])
    over = [w for w in warnings if "16-bit" in w]
    if over and not args.allow_saturation:
        raise UserError("; ".join(over) + " — retrain with smaller weights or pass "
                        "--allow-saturation")
    if args.output:
        q.save(args.output)
    out = {"window": q.window, "steps_per_token": q.steps_per_token, "depth": q.depth,
           "populations": len(q.populations), "synapses": len(q.synapses),
           "quantization": rep, "resources": res, "output": args.output}
    if args.json:
        print_json(out)
        return 0
    from rich.console import Console
    from rich.table import Table
    con = Console()
    t = Table(title=f"quantized graph: T={q.steps_per_token}, pipeline depth {q.depth}, "
                    f"window {q.window} steps/token")
    for c in ("population", "kind", "size", "depth", "vth", "dv", "max |a_in|", "headroom"):
        t.add_column(c)
    for name in q.order():
        p = q.populations[name]
        r = (rep or {}).get("populations", {}).get(name, {})
        t.add_row(name, p.kind, str(p.size), str(p.depth),
                  str(p.vth) if p.kind == "lif" else "", str(p.dv) if p.kind == "lif" else "",
                  f"{r['max_a_in']:.0f}" if r else "", f"{r['a_in_headroom']:.1f}x" if r else "")
    con.print(t)
    tot = res.get("totals", {})
    con.print("resources: " + ", ".join(f"{k} {v}" for k, v in tot.items()))
    for w in warnings:
        con.print(f"[yellow]warning:[/] {w}")
    if args.output:
        con.print(f"wrote {args.output}")
    return 0
