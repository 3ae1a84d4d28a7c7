"""Energy per token of what the chip executes, in every view, beside the loss of the same text.

Feeds the same text (teacher-forced) to the spiking decoder on the chosen backend, to its
integer reference and to the float torch model; counts spikes, binary and graded synaptic
operations, graded messages and their payload bits, active and idle neuron updates and
products at every step of every token window (token and drain steps apart), and checks
them against the reference message for message. Views side by side: the literature's
45 nm fp32 estimate, equal precision (int8 ANN vs integer SNN), the executed ops at
45 nm, and a Loihi range (low/high from the cited per-op figures, static power over a
chip-time bound, prefill apart from generation), with a sensitivity table, range headroom
per population (16-bit dendrite, 24-bit state) and the validation loss. Writes report.md,
results.json, per_layer.csv and plots into --out (atomically). With no arguments:
default:spikedecoder vs default:ann, the embedded corpus, the Lava simulator. See
docs/energy.md.
"""

from __future__ import annotations

import argparse
import os
import sys

from snn_compile.cli._args import float_in, int_in, output_dir
from snn_compile.cli._common import add_encoding_flags, add_json_flag, print_json
from snn_compile.data.text import add_oov_flag

DEFAULT_OUT = os.path.join("out", "bench")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", nargs="?", default="default:spikedecoder",
                        help="checkpoint or .nir file (default: default:spikedecoder); a foreign "
                             "NIR graph or its .qgraph with --input")
    parser.add_argument("--hf", metavar="PATH",
                        help="a local Hugging Face causal LM folder: spikes, ACs, MACs and "
                             "energy per token of its --encoding (45 nm view), on --tokens "
                             "validation tokens")
    parser.add_argument("--hf-tokenizer", choices=("auto", "bytes"), default="auto",
                        help="--hf: the folder's own tokenizer (auto) or UTF-8 bytes")
    parser.add_argument("--input", metavar="X.npy",
                        help="NIR graphs: spike trains (samples, steps, inputs); energy per "
                             "sample")
    parser.add_argument("--ann", metavar="CKPT", default="default:ann",
                        help="the ANN twin to compare with (default: default:ann)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--prompts", metavar="FILE", help="text file with one prompt per line")
    src.add_argument("--data", metavar="PATH",
                     help="UTF-8 text file whose validation split is fed "
                          "(default: the embedded corpus)")
    parser.add_argument("--tokens", type=int_in(1), metavar="N", default=256,
                        help="tokens to feed and measure (default: 256)")
    parser.add_argument("--backend", choices=("lava-sim", "emulator", "int"),
                        default=None, help="where the spikes are measured (default: lava-sim "
                                           "for decoders, emulator for NIR graphs: equal to "
                                           "Lava spike for spike)")
    parser.add_argument("--variants", metavar="CKPT", nargs="*", default=(),
                        help="partially spiking checkpoints for the block-exchange table")
    parser.add_argument("--gpu-results", metavar="FILE",
                        help="JSON written by `python -m snn_compile.benchmarks.gpu_energy`")
    parser.add_argument("--mean-hops", type=float_in(0), default=1.0,
                        help="tile hops per message in the Loihi estimate (default: 1)")
    add_encoding_flags(parser, "add the table of spike encodings of the ANN twin")
    add_oov_flag(parser, "the benchmark text")
    parser.add_argument("--out", metavar="DIR", type=output_dir(),
                        help=f"folder for report.md, results.json, plots (default: {DEFAULT_OUT})")
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, \
        TimeElapsedColumn

    from snn_compile.benchmarks.harness import run_benchmark
    from snn_compile.cli._common import resolve_checkpoint

    from snn_compile.benchmarks.report import check_output_dir
    from snn_compile.errors import UserError, check_folder_writable

    if args.hf:
        return _run_hf(args)
    model = resolve_checkpoint(args.model)
    if model.endswith((".nir", ".qgraph")):
        from snn_compile import api
        m = api.load(model)
        if m.foreign:
            return _run_foreign(args, m)
    if args.input is not None:
        raise UserError(f"{args.model} is a token decoder: it is benchmarked on text (--data, "
                        "--prompts); --input is for foreign NIR graphs")
    if args.backend is None:
        args.backend = "lava-sim"
    ann = resolve_checkpoint(args.ann) if args.ann else None
    out = args.out
    if out is None:            # out/bench: made only once there is a report to put in it
        out = DEFAULT_OUT
        if os.path.isdir(os.path.dirname(out)):
            check_output_dir(out)
        else:
            check_folder_writable(os.path.abspath("."), out, "report folder")
    console = Console(stderr=True)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as bar:
        tasks = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(f"{stage} ({args.backend})", total=total)
            bar.update(tasks[stage], completed=done)

        res = run_benchmark(model, ann, backend=args.backend, tokens=args.tokens,
                            prompts=args.prompts, data=args.data, out_dir=None,
                            mean_hops=args.mean_hops, variants=args.variants,
                            gpu_results=args.gpu_results, progress=progress, oov=args.oov)
        if args.encoding != "none":
            res["encodings_data"] = _encodings(args, model, ann, progress)
            res["encodings"] = _encoding_display(res["encodings_data"])
    from snn_compile.benchmarks.harness import write

    if args.out is None:
        os.makedirs(os.path.dirname(out), exist_ok=True)
    path = write(res, out)
    res["out"] = path
    res.pop("_raster", None)              # one token's frames: the raster plot, not JSON
    if args.json:
        res.pop("per_token_pj", None)
        print_json(res)
    else:
        _print_summary(Console(), res, path)   # the table on stdout
    return 0


def _run_hf(args) -> int:
    """Energy per token of a spike-encoded Hugging Face causal LM (benchmarks/hf.py)."""
    from snn_compile import api
    from snn_compile.cli._common import progress_bar
    from snn_compile.errors import UserError

    if args.model != "default:spikedecoder":
        raise UserError("give either MODEL or --hf PATH, not both")
    given = [o for o, v in (("--input", args.input), ("--prompts", args.prompts),
                            ("--variants", args.variants), ("--gpu-results", args.gpu_results),
                            ("--backend", args.backend)) if v]
    if given:
        raise UserError(f"{', '.join(given)} do not apply to --hf models (the float model with "
                        "spike-encoded activations, counted in torch)")
    from snn_compile.models.hf import check_hf_folder
    check_hf_folder(args.hf, args.hf_tokenizer)           # before the progress bar starts
    with progress_bar(f"bench --hf ({args.encoding})") as update:
        res = api.evaluate_hf(args.hf, encoding=args.encoding, bits=args.bits,
                              threshold=args.threshold, tokenizer=args.hf_tokenizer,
                              data=args.data, max_tokens=args.tokens, energy=True,
                              progress=update)
    print(f"tokenizer: {res['tokenizer']}", file=sys.stderr)
    if args.json:
        print_json(res)
        return 0
    e = res["energy_per_token_pj"]
    print(f"{args.hf} ({args.encoding} encoding) on {res['tokens']} validation tokens: "
          f"val_loss {res['val_loss']:.4f} nats/token, bpc {res['bpc']:.4f}")
    sp = res["spikes_per_token"]
    print(f"per token: {'' if sp is None else f'{sp:.1f} spikes, '}{res['acs_per_token']:.0f} "
          f"ACs, {res['macs_per_token']:.0f} MACs")
    print(f"energy per token (45 nm): {e['theoretical_45nm'] / 1e3:.3f} nJ; dense baseline "
          f"{e['dense_baseline_45nm'] / 1e3:.3f} nJ")
    return 0


def _run_foreign(args, m) -> int:
    """Energy per sample of a foreign NIR graph on --input (benchmarks/foreign.py)."""
    import json

    from snn_compile import api
    from snn_compile.errors import UserError, atomic_path

    if args.input is None:
        raise UserError(f"{args.model} is a foreign NIR graph: benchmark it on your data with "
                        f"`snn-compile bench {args.model} --input X.npy` (spike trains "
                        "(samples, steps, inputs))")
    given = [o for o, v in (("--prompts", args.prompts), ("--data", args.data),
                            ("--variants", args.variants), ("--gpu-results", args.gpu_results),
                            ("--encoding", args.encoding != "none")) if v]
    if given:
        raise UserError(f"{', '.join(given)} apply to token decoders; a foreign NIR graph is "
                        "benchmarked on --input")
    res = api.bench(m, inputs=args.input, backend=args.backend or "emulator",
                    mean_hops=args.mean_hops)
    res["model"] = args.model
    if args.out:
        from snn_compile.cli._common import to_json
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, "results.json")
        with atomic_path(path) as tmp:
            with open(tmp, "w") as fh:
                fh.write(to_json(res) + "\n")
            json.load(open(tmp))
        res["out"] = path
    if args.json:
        print_json(res)
        return 0
    e, p = res["energy_per_sample_pj"], res["per_sample"]
    check = {True: "checked spike for spike against the integer reference",
             None: "the integer reference itself"}[res["spikes_match_reference"]]
    print(f"{args.model}: {res['samples']} samples x {res['steps']} steps on {res['backend']} "
          f"({check})")
    print(f"per sample: {p['spikes']:.1f} spikes, {p['input_spikes']:.1f} input spikes, "
          f"{p['acs']:.0f} ACs, {p['macs']:.0f} MACs, {p['messages']:.0f} messages")
    print(f"energy per sample: Loihi estimate {e['loihi_estimate'] / 1e3:.3f} nJ; 45 nm view "
          f"{e['theoretical_45nm'] / 1e3:.3f} nJ (the same weights once as an ANN: "
          f"{e['ann_one_pass_45nm'] / 1e3:.3f} nJ)")
    return 0


def _encodings(args, model: str, ann, progress) -> list:
    """Rows of the encodings table: plain twin, the twin with --encoding, the SpikeDecoder."""
    from snn_compile.benchmarks import encodings as enc_bench
    from snn_compile.errors import UserError

    if ann is None:
        raise UserError("--encoding encodes the ANN twin: give it with --ann CKPT")
    kw = {"bits": args.bits} if args.encoding == "bitwise" else {"threshold": args.threshold}
    res = enc_bench.run(ann, None if model.endswith(".nir") else model,
                        encodings=[(args.encoding, kw)], data=args.data,
                        progress=lambda label, done, total: progress("encodings", done, total))
    return [dict(r, val_tokens=res["tokens"]) for r in res["rows"]]


def _encoding_display(rows: list) -> list:
    """The rows as report.md shows them (formatted here; the numbers stay in encodings_data)."""
    def f(v, spec):
        return "n/a" if v is None else spec.format(v)

    return [{"model": r["model"], "encoding": r["encoding"],
             "val loss": f(r["val_loss"], "{:.4f}"),
             "spikes / activation": f(r["spikes_per_activation"], "{:.3f}"),
             "spikes / token": f(r["spikes_per_token"], "{:.1f}"),
             "energy / token (pJ)": f(r["energy_pj_per_token"], "{:,.0f}"),
             "without extras (pJ)": f(r["energy_pj_no_extras"], "{:,.0f}"),
             "val tokens": str(r["val_tokens"])} for r in rows]


def _print_summary(console, r: dict, path: str) -> None:
    from rich.table import Table

    e = r["energy_per_token_pj"]
    t = Table(title=f"Energy per token ({r['tokens']} tokens, {r['backend']}, spikes and "
                    f"step counts match the reference: {r['spikes_match_reference']})")
    for col in ("model", "view", "nJ / token", "loss, same text"):
        t.add_column(col)
    tl = r.get("text_loss") or {}
    for model, views in e.items():
        for view, v in views.items():
            vl = tl.get(model)
            t.add_row(model, view, f"{v / 1e3:,.1f}", "" if vl is None else f"{vl:.4f}")
    console.print(t)
    lo, hi = r["paper_reduction_pct"]
    ct = r["chip_time_per_token_s"]
    worst = max(r["dendrite_headroom"].items(), key=lambda kv: kv[1], default=("", 0.0))
    console.print(f"reduction vs ANN twin: {r['reduction_pct']:.1f} % at 45 nm fp32 "
                  f"(paper: {lo:g}-{hi:g} %), {r['reduction_pct_equal_precision']:.1f} % at "
                  f"equal precision; chip time per token {ct['generation'][0] * 1e6:.3g}-"
                  f"{ct['generation'][1] * 1e6:.3g} us (generation), "
                  f"{ct['prefill'][0] * 1e6:.3g}-{ct['prefill'][1] * 1e6:.3g} us (prefill); "
                  f"worst dendritic input {worst[1]:.3f} x 2^15 ({worst[0]})")
    for msg in r.get("saturation", []):
        console.print(f"[yellow]warning:[/] {msg} on the benchmark text")
    console.print(f"report: {os.path.join(path, 'report.md')}")
    sys.stdout.flush()
