"""Spike encodings of the ANN twin vs the directly trained SpikeDecoder: loss and energy.

For each encoding (``snn_compile.models.encodings``) of the ANN twin, on the
first ``max_tokens`` tokens of the validation split (non-overlapping context
windows, as ``train.evaluate``): validation loss, spikes per activation, spikes
per token and the theoretical 45 nm energy per token,

    E = ACs x E_AC + (MACs + extras) x E_MAC

ACs = spikes x fan-out of the spike-driven linear layers (qkv, proj, ff1, ff2,
head), measured on the same tokens. MACs = what is not spike-driven: attention
scores QK^T and AV products at each token's position (``theory.ann_op_rows``)
and the multiply by the per-vector scale c at each linear layer output
(fan-out per token). Extras = element-wise ops listed as non-spiking: softmax,
LayerNorm, GELU, residual adds (``theory.ann_op_rows``) and the encoder itself
(2 d_in per layer: the statistic mean|x| or max|x| and the threshold/rounding).
The last column leaves the extras out, as the literature's headline does.
Rows for the plain ANN twin (``theory.ann_op_rows``) and the SpikeDecoder
(``theory.snn_op_rows`` on its float model's spikes) use the same tokens.

``python -m snn_compile.benchmarks.encodings [--out DIR] [--max-tokens N] [--json]``
writes report.md, results.json and energy_vs_loss.png into --out, atomically.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from snn_compile.benchmarks import energy, plots, theory
from snn_compile.benchmarks.report import to_jsonable, write_bundle
from snn_compile.benchmarks.theory import model_shape
from snn_compile.data import sequential_blocks
from snn_compile.errors import UserError, exits_on_user_error
from snn_compile.models.assets import resolve_checkpoint
from snn_compile.models.checkpoint import load_checkpoint
from snn_compile.models.encodings import (DEFAULT_THRESHOLD, NON_SPIKING, apply_encoding,
                                          make_encoding)
from snn_compile.models.train import evaluate, prepare_data

DEFAULT_TOKENS = 16384
DEFAULT_OUT = os.path.join("out", "encodings")
# (encoding name, keyword arguments of make_encoding)
DEFAULT_SET: Tuple[Tuple[str, dict], ...] = (
    ("binary", {}), ("ternary", {}), ("bitwise", {"bits": 8}),
    ("bitwise", {"bits": 8, "scheme": "twos"}), ("bitwise", {"bits": 4}),
)
# encoded layer name pattern of the ANN twin -> theory.ann_op_rows (layer, op)
_TWIN_OPS = {"qkv": "qkv", "proj": "proj", "fc1": "ff1", "fc2": "ff2"}


def make_label(name: str, bits: int = 8, threshold: Optional[float] = None,
               scheme: str = "sign-magnitude") -> str:
    """The table's name of an encoding and its parameters."""

    if name == "bitwise":
        return f"bitwise {bits} bit, " + ("two's complement" if scheme == "twos" else scheme)
    return f"{name} (theta {DEFAULT_THRESHOLD if threshold is None else threshold:g})"


def _op_key(name: str) -> Tuple[str, str]:
    if name == "head":
        return "head", "head"
    parts = name.split(".")
    if len(parts) == 3 and parts[0] == "blocks" and parts[2] in _TWIN_OPS:
        return f"block{parts[1]}", _TWIN_OPS[parts[2]]
    raise UserError(f"linear layer {name!r} is not one of the ANN twin's (qkv, proj, fc1, fc2, "
                    "head); the encodings benchmark costs the ANN twin only")


def _positions(val_ids: np.ndarray, context: int, max_tokens: int) -> np.ndarray:
    """Position in its window of every evaluated token (as ``train.evaluate`` feeds them)."""

    ids = val_ids[: max_tokens + 1]
    return np.concatenate([np.tile(np.arange(y.shape[1]), y.shape[0])
                           for _, y in sequential_blocks(ids, context, 16)])


def _energy(counts: Dict[str, float]) -> Tuple[float, float]:
    """(all, without extras) energy per token in pJ."""
    no_x = energy.e_snn_pj(counts["acs"], counts["macs"])
    return no_x + counts["extras"] * energy.E_MAC_PJ, no_x


def _row(model: str, encoding: str, val_loss: float, counts: Dict[str, float],
         spikes_tok=None, spikes_act=None, sparsity=None, check=None) -> dict:
    e_all, e_no = _energy(counts)
    return {"model": model, "encoding": encoding, "val_loss": val_loss,
            "spikes_per_activation": spikes_act, "spikes_per_token": spikes_tok,
            "sparsity": sparsity, "acs_per_token": counts["acs"],
            "macs_per_token": counts["macs"], "extras_per_token": counts["extras"],
            "energy_pj_per_token": e_all, "energy_pj_no_extras": e_no,
            "max_logit_diff_vs_reference": check}


def ann_row(model, val_ids, max_tokens: int, positions: np.ndarray) -> dict:

    loss = float(evaluate(model, val_ids, max_tokens)["val_loss"])
    counts = theory.counts_summary(theory.ann_op_rows(model_shape(model), positions))
    return _row("ANN twin", "none (float)", loss, counts)


def encoded_row(model, label: str, enc, val_ids, max_tokens: int,
                positions: np.ndarray) -> dict:
    """Loss, spikes and energy of a copy of ``model`` with spike-encoded linear layers."""

    m = copy.deepcopy(model)
    encoded = apply_encoding(m, enc)
    loss = float(evaluate(m, val_ids, max_tokens)["val_loss"])
    s = encoded.summary()
    per_layer = {_op_key(k): v for k, v in s["per_layer"].items()}
    counts = {"acs": 0.0, "macs": 0.0, "extras": 0.0}
    seen = set()
    for r in theory.ann_op_rows(model_shape(model), positions):
        key = (r.layer, r.op)
        if key in per_layer:
            L = per_layer[key]
            seen.add(key)
            counts["acs"] += L["spikes_per_token"] * L["fan_out"]     # spikes x fan-out
            counts["macs"] += L["fan_out"]                            # x c at the output
            counts["extras"] += 2 * L["d_in"]                         # the encoder
        else:
            counts[{"ac": "acs", "mac": "macs", "extra": "extras"}[r.kind]] += r.mean
    if seen != set(per_layer):
        raise UserError(f"encoded layers {sorted(set(per_layer) - seen)} have no row in the "
                        "ANN operation count; the model is not an ANN twin")
    # the plane path against the plain fake-quantised reference, on the first window
    ref = copy.deepcopy(model)
    apply_encoding(ref, enc, reference=True)
    x = torch.as_tensor(val_ids[: model.cfg.context])[None]
    with torch.no_grad():
        diff = float((m(x) - ref(x)).abs().max())
    row = _row("ANN twin", label, loss, counts, s["spikes_per_token"],
               s["spikes_per_activation"], s["sparsity"], diff)
    row["per_layer"] = s["per_layer"]
    return row


def spikedecoder_row(model, val_ids, max_tokens: int) -> dict:
    """The directly trained SpikeDecoder on the same tokens (its float torch model)."""

    loss = float(evaluate(model, val_ids, max_tokens)["val_loss"])
    shape = model_shape(model)
    rows, spikes, neurons, tokens = [], 0.0, 0, 0
    with torch.no_grad():
        for x, _ in sequential_blocks(val_ids[: max_tokens + 1], shape.context, 16):
            _, rec = model(torch.as_tensor(x), record=True)
            pops = {k: v.detach().numpy() for k, v in rec.items() if not k.endswith(".A")}
            for b in range(x.shape[0]):
                rows.append(theory.snn_op_rows(shape, {k: v[b] for k, v in pops.items()}))
            spikes += sum(float((v != 0).sum()) for v in pops.values())
            neurons = sum(v.shape[-1] for v in pops.values())
            tokens += x.size
    counts = theory.counts_summary(theory.concat_rows(rows))
    T = shape.steps_per_token
    return _row("SpikeDecoder", f"trained spiking (T = {T})", loss, counts, spikes / tokens,
                spikes / (tokens * neurons), 1.0 - spikes / (tokens * neurons * T))


def run(ann: str = "default:ann", snn: Optional[str] = "default:spikedecoder",
        encodings: Sequence[Tuple[str, dict]] = DEFAULT_SET, data: Optional[str] = None,
        max_tokens: int = DEFAULT_TOKENS, with_plain: bool = True,
        progress: Optional[Callable[[str, int, int], None]] = None) -> dict:
    """The table as a results dict (``rows`` plus what was measured and how)."""

    if max_tokens < 1:
        raise UserError(f"--max-tokens must be positive, got {max_tokens}")
    t0 = time.perf_counter()
    prog = progress or (lambda *a: None)
    model, tok, _ = load_checkpoint(ann)
    if model.cfg.kind != "ann":
        raise UserError(f"{ann} is a {model.cfg.kind} checkpoint; the encodings benchmark needs "
                        "the ANN twin (default:ann)")
    _, _, val_ids = prepare_data(data, tok.kind, model.cfg.context, tok)
    positions = _positions(val_ids, model.cfg.context, max_tokens)
    jobs: List[Tuple[str, Callable[[], dict]]] = []
    if with_plain:
        jobs.append(("ANN twin", lambda: ann_row(model, val_ids, max_tokens, positions)))
    for name, kw in encodings:
        enc, label = make_encoding(name, **kw), make_label(name, **kw)
        jobs.append((label, lambda label=label, enc=enc: encoded_row(
            model, label, enc, val_ids, max_tokens, positions)))
    if snn:
        def sd_job():
            sd, sd_tok, _ = load_checkpoint(snn)
            if sd_tok.to_dict() != tok.to_dict():
                raise UserError(f"{snn} and {ann} use different tokenizers; compare models "
                                "trained on the same corpus")
            return spikedecoder_row(sd, val_ids, max_tokens)
        jobs.append(("SpikeDecoder", sd_job))
    rows = []
    for i, (label, job) in enumerate(jobs):
        prog(label, i, len(jobs))
        rows.append(job())
    prog("done", len(jobs), len(jobs))
    return {"rows": rows, "tokens": int(len(positions)), "max_tokens": max_tokens,
            "text": f"validation split of {data or 'the embedded corpus'}, first "
                    f"{len(positions)} predicted tokens, context windows from a reset",
            "models": {"ann": ann, "spikedecoder": snn}, "non_spiking": list(NON_SPIKING),
            "constants": [c for c in energy.constants_table()
                          if c["name"] in ("E_MAC", "E_AC")],
            "seconds": time.perf_counter() - t0}


def markdown_table(rows: Sequence[dict]) -> str:
    head = ["model", "encoding", "val loss (nats/token)", "spikes / activation",
            "spikes / token", "ACs / token", "MACs / token", "extras / token",
            "energy / token (pJ)", "without extras (pJ)"]
    keys = ["model", "encoding", "val_loss", "spikes_per_activation", "spikes_per_token",
            "acs_per_token", "macs_per_token", "extras_per_token", "energy_pj_per_token",
            "energy_pj_no_extras"]
    fmt = {"val_loss": "{:.4f}", "spikes_per_activation": "{:.3f}", "spikes_per_token": "{:.1f}"}
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = []
        for k in keys:
            v = r.get(k)
            cells.append("n/a" if v is None else v if isinstance(v, str)
                         else fmt.get(k, "{:,.0f}").format(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def markdown(res: dict) -> str:
    s = ["# Spike encodings of the ANN twin vs the SpikeDecoder", "",
         f"Text: {res['text']} ({res['tokens']} tokens). Wall time {res['seconds']:.1f} s.",
         "Energy: theoretical, 45 nm, fp32 (E_AC = 0.9 pJ, E_MAC = 4.6 pJ, Horowitz 2014); "
         "see docs/encodings.md for what each count covers.", "", markdown_table(res["rows"]),
         "", "Non-spiking in the encoded models (costed as MACs or extras): "
         + ", ".join(res["non_spiking"]) + ".", ""]
    checks = [r for r in res["rows"] if r.get("max_logit_diff_vs_reference") is not None]
    if checks:
        s += ["Plane path vs plain fake-quantised reference, max |logit difference| on the "
              "first window: " + ", ".join(f"{r['encoding']}: {r['max_logit_diff_vs_reference']:.3g}"
                                           for r in checks) + ".", ""]
    s += ["![energy vs loss](energy_vs_loss.png)", ""]
    return "\n".join(s)


def plot_points(rows: Sequence[dict]) -> List[dict]:
    marker = {"ANN twin": "o", "SpikeDecoder": "s"}
    return [{"name": f"{r['model']}: {r['encoding']}", "energy_pj": r["energy_pj_per_token"],
             "val_loss": r["val_loss"], "marker": "^" if r.get("spikes_per_token") is not None
             and r["model"] == "ANN twin" else marker.get(r["model"], "o")} for r in rows]


def write(res: dict, out: str) -> str:
    """report.md, results.json and energy_vs_loss.png into ``out`` (atomically)."""

    return write_bundle(out, res, markdown(res), {
        "energy_vs_loss.png":
            lambda path: plots.encodings_energy_vs_loss(plot_points(res["rows"]), path)})


@exits_on_user_error
def main(argv: Optional[Sequence[str]] = None) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, \
        TimeElapsedColumn

    p = argparse.ArgumentParser(prog="python -m snn_compile.benchmarks.encodings",
                                description=__doc__.strip().splitlines()[0])
    p.add_argument("--ann", default="default:ann", help="the ANN twin (default: default:ann)")
    p.add_argument("--snn", default="default:spikedecoder",
                   help="the SpikeDecoder to compare with (default: default:spikedecoder)")
    p.add_argument("--data", metavar="PATH", help="text file (default: the embedded corpus)")
    p.add_argument("--max-tokens", type=int, default=DEFAULT_TOKENS, metavar="N",
                   help=f"validation tokens (default: {DEFAULT_TOKENS})")
    p.add_argument("--out", metavar="DIR", default=DEFAULT_OUT,
                   help=f"output folder (default: {DEFAULT_OUT})")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = p.parse_args(argv)
    ann, snn = resolve_checkpoint(args.ann), resolve_checkpoint(args.snn)
    if args.out == DEFAULT_OUT:
        os.makedirs(os.path.dirname(DEFAULT_OUT), exist_ok=True)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True)) as bar:
        task = bar.add_task("encodings", total=None)

        def progress(label, done, total):
            bar.update(task, description=f"encodings: {label}", completed=done, total=total)

        res = run(ann, snn, data=args.data, max_tokens=args.max_tokens, progress=progress)
    res["models"] = {"ann": args.ann, "spikedecoder": args.snn}
    path = write(res, args.out)
    res["out"] = path
    if args.json:
        print(json.dumps(to_jsonable(res), allow_nan=False, ensure_ascii=False), flush=True)
    else:
        print(markdown_table(res["rows"]))
        print(f"\n{res['tokens']} validation tokens, {res['seconds']:.1f} s; report: "
              f"{os.path.join(path, 'report.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
