"""Quantize a NIR graph (or a checkpoint, through NIR) to Loihi 2 fixed point and
report what it needs.

A SpikeDecoder (checkpoint, default:spikedecoder or its exported .nir) compiles
with its attention lowering; a foreign NIR graph of standard nodes compiles for
runs of ``--steps`` steps (or the steps of ``--calibrate X.npy``, spike trains
that set the membrane scales), and ``--check`` runs the calibration data (or
random input spikes) through the float NIR interpreter, the integer reference
and Lava.

Per population: membrane scale, threshold, decay, worst input against the
16-bit activation / 24-bit state ranges, and the headroom the integer graph measures on
the calibration text (worst dendritic input / 2^15, state / 2^23; a graph that reaches
either is refused unless --allow-saturation); per synapse: weight exponent and
rounding. Resources: neurons, synapses, fan-in/out, synaptic memory, Loihi 2
neurocores and chips with the partition. Writes the compiled graph (.qgraph)
with -o, atomically.
"""

from __future__ import annotations

import argparse

from snn_compile.cli._args import float_in, int_in, output_file, seed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL",
                        help="NIR file, checkpoint, default:spikedecoder, or a compiled .qgraph")
    parser.add_argument("-o", "--output", metavar="FILE.qgraph",
                        type=output_file(".qgraph", why=" (later stages recognise a compiled "
                                                       "graph by its suffix)"),
                        help="write the quantized graph here")
    parser.add_argument("--allow-saturation", action="store_true",
                        help="write the graph even when a population leaves Loihi 2's 16-bit "
                             "dendritic input or 24-bit state range on the calibration text "
                             "(Lava's simulator sums in int32 and would not notice)")
    parser.add_argument("--steps", type=int_in(1), metavar="S",
                        help="foreign NIR graphs: steps per run (one window from rest)")
    parser.add_argument("--calibrate", metavar="X.npy",
                        help="foreign NIR graphs: spike trains (samples, steps, inputs) that set "
                             "the membrane scales (and --steps); default: random spikes of "
                             "--check-rate")
    parser.add_argument("--check", action="store_true",
                        help="foreign NIR graphs: compare float NIR interpreter, integer "
                             "reference and Lava fixed_pt on the calibration data (or random "
                             "input spikes)")
    parser.add_argument("--check-rate", type=float_in(0, 1, lo_open=True), default=0.2, metavar="P",
                        help="firing probability of the random check/calibration inputs")
    parser.add_argument("--seed", type=seed(), default=0, help="seed of the random input spikes")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _load(args):
    """(qgraph, quantization report, check result or None, headroom or None), through
    ``api.compile``."""
    from snn_compile import api

    m = api.compile(args.model, steps=args.steps, calibrate=args.calibrate,
                    allow_saturation=args.allow_saturation, check=args.check,
                    check_rate=args.check_rate, seed=args.seed, output=args.output)
    return m.qgraph, m.report, m.check, m.headroom


def run(args: argparse.Namespace) -> int:
    from snn_compile.cli._common import print_json
    from snn_compile.compiler.resources import resource_report
    from snn_compile.loihi.limits import PAYLOAD_MAX

    q, rep, check, head = _load(args)
    res = resource_report(q)
    warnings = (rep or {}).get("warnings", [])
    out = {"check": check, "window": q.window, "steps_per_token": q.steps_per_token, "depth": q.depth,
           "populations": len(q.populations), "synapses": len(q.synapses),
           "quantization": rep, "resources": res, "output": args.output,
           "headroom": head}
    if args.json:
        print_json(out)
        return 0
    from rich.console import Console
    from rich.table import Table
    con = Console()
    t = Table(title=f"quantized graph: T={q.steps_per_token}, pipeline depth {q.depth}, "
                    f"window {q.window} steps/token")
    cols = ["population", "kind", "size", "depth", "vth", "dv", "max |a_in| / payload",
            "headroom"]
    if head is not None:
        cols += ["dendrite |a_in|/2^15", "state /2^23", "weights' worst /2^15"]
    for c in cols:
        t.add_column(c)
    pops_rep = (rep or {}).get("populations", {})
    hp = (head or {}).get("populations", {})
    for name in q.order():
        p = q.populations[name]
        r = pops_rep.get(name) or (pops_rep.get("stream", {}) if p.role == "stream" else {})
        peak = r.get("max_a_in", r.get("max_payload"))
        room = r.get("a_in_headroom", r.get("payload_headroom"))
        if room is None and peak:                       # graded payloads: 24 bits
            room = PAYLOAD_MAX / peak
        row = [name, p.kind, str(p.size), str(p.depth),
               str(p.vth) if p.kind == "lif" else "", str(p.dv) if p.kind == "lif" else "",
               f"{peak:.0f}" if peak else "", f"{room:.1f}x" if room else ""]
        if head is not None:
            h = hp.get(name, {})
            f = lambda k: "" if h.get(k) is None else f"{h[k]:.3g}"  # noqa: E731
            row += [f("dendrite"), f("state"), f("dendrite_bound")]
        t.add_row(*row)
    con.print(t)
    if head is not None:
        worst = max(((h.get("dendrite", 0), n) for n, h in hp.items()), default=(0, ""))
        con.print(f"range headroom measured on the {head['text']}: worst dendritic input "
                  f"{worst[0]:.3f} x 2^15 ({worst[1]}); the weights' worst case is looser "
                  "(every input at once) and is not what compile checks")
    tot = res.get("totals", {})
    con.print("resources: " + ", ".join(f"{k} {v}" for k, v in tot.items()))
    for w in warnings:
        con.print(f"[yellow]warning:[/] {w}")
    for w in (rep or {}).get("notes", []):
        con.print(f"note: {w}")
    if check is not None:
        what = "the calibration data" if args.calibrate else f"random spikes (p={args.check_rate})"
        con.print(f"check on {what}, Lava on {check['lava_samples']} x {q.steps_per_token} "
                  "steps: float NIR vs integer spike agreement "
                  + ", ".join(f"{n} {v['agreement']:.2%}" for n, v in check["populations"].items())
                  + f"; readout |float - int| {check['readout_mean_abs_diff']:.3f} "
                  f"(mean |float| {check['readout_float_mean_abs']:.3f}); "
                  f"Lava == integer reference: {check['lava_equals_int']}")
    if args.output:
        con.print(f"wrote {args.output}")
    return 0
