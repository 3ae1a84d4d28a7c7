"""Block exchange: accuracy and theoretical energy per token of every decoder variant.

``python -m snn_compile.benchmarks.variants CKPT... --out DIR`` evaluates each
checkpoint (SpikeDecoder, partial models, ANN twin) on the whole validation split
(windows of the model's context, each from a reset) and, from the spikes of the
same forward passes, its theoretical energy per token at 45 nm
(``theory.variant_op_rows``: ACs x 0.9 pJ for spike-driven synapses, MACs x 4.6 pJ
for the ANN parts). The reduction is against the ANN twin of the same sizes at the
same token positions. Writes README.md (table), results.json and
energy_vs_loss.png atomically into DIR. ``scripts/block_exchange.sh`` trains the grid.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shlex
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from snn_compile.benchmarks import energy, plots, theory
from snn_compile.benchmarks.report import write_bundle
from snn_compile.benchmarks.theory import model_shape
from snn_compile.data import sequential_blocks
from snn_compile.errors import exits_on_user_error
from snn_compile.models.checkpoint import load_checkpoint
from snn_compile.models.train import prepare_data

ALL_ANN = theory.BLOCK_KINDS
TITLE = "Block exchange: SpikeDecoder, partially spiking variants, ANN twin"


def ann_blocks_of(model) -> tuple:
    """Block kinds that are ANN: none for a SpikeDecoder, all five for the twin."""
    cfg = model.cfg
    if cfg.kind == "ann":
        return ALL_ANN
    return tuple(getattr(cfg, "ann_blocks", ()) or ())


def label(model) -> str:
    cfg = model.cfg
    emb = getattr(cfg, "embedding", "rate")
    tail = "" if emb == "rate" or cfg.kind == "ann" else f" ({emb} embedding)"
    if cfg.kind == "spikedecoder":
        parts = [f"{emb} embedding"] if emb != "rate" else []
        if getattr(cfg, "attention", "ssa") == "sdsa":
            parts.append("SDSA")
        if getattr(cfg, "token_shift", 0):
            parts.append(f"token shift {cfg.token_shift} {cfg.shift_mode}"
                         + ("" if cfg.shift_into == "both" else f" into {cfg.shift_into}"))
        if getattr(cfg, "residual", "spike") == "stream":
            parts.append("residual stream")
        if getattr(cfg, "attention_memory", "sum") == "decay":
            parts.append("decay memory")
        return "SpikeDecoder" + (f" ({', '.join(parts)})" if parts else "")
    if cfg.kind == "ann":
        return "ANN twin (all five ANN)"
    return "ANN " + "+".join(cfg.ann_blocks) + tail if cfg.ann_blocks else "partial (none)"


def evaluate_variant(model, tok, data: Optional[str] = None, max_tokens: Optional[int] = None,
                     batch: int = 16) -> dict:
    """Validation loss / BPC / spike rates and theoretical energy per token of one model."""
    import torch
    import torch.nn.functional as F


    _, _, val = prepare_data(data, tok.kind, model.cfg.context, tok)
    ids = val if max_tokens is None else val[: max_tokens + 1]
    shape = model_shape(model)
    twin_shape = dataclasses.replace(shape, shift_qkv=0, shift_ff=0, attention="ssa")
    ann = ann_blocks_of(model)
    emb, pop = getattr(model.cfg, "embedding", "rate"), getattr(model.cfg, "population", 4)
    model.eval()
    total, count = 0.0, 0
    spk_sum: Dict[str, float] = {}
    spk_n: Dict[str, float] = {}
    rows, twin_rows = [], []
    with torch.no_grad():
        for x, y in sequential_blocks(ids, model.cfg.context, batch):
            logits, rec = model(torch.as_tensor(x), record=True)
            total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]).double(),
                                           torch.as_tensor(y).reshape(-1), reduction="sum"))
            count += y.size
            rec = {k: v.cpu().numpy() for k, v in (rec or {}).items() if not k.endswith(".A")}
            for k, a in rec.items():
                spk_sum[k] = spk_sum.get(k, 0.0) + float(a.sum())
                spk_n[k] = spk_n.get(k, 0.0) + a.size
            for b in range(x.shape[0]):
                rows.append(theory.variant_op_rows(shape, ann, {k: a[b] for k, a in rec.items()},
                                                   embedding=emb, population=pop,
                                                   n_tokens=x.shape[1]))
                twin_rows.append(theory.variant_op_rows(twin_shape, ALL_ANN, {},
                                                        n_tokens=x.shape[1]))
    allr, twin = theory.concat_rows(rows), theory.concat_rows(twin_rows)
    e = theory.per_token_energy(allr)
    e_x = theory.per_token_energy(allr, include_extras=True)
    e_twin = theory.per_token_energy(twin)
    val_loss = total / max(count, 1)
    rates = {k: spk_sum[k] / spk_n[k] for k in spk_sum}
    return {"val_loss": val_loss, "bpc": val_loss / math.log(2) if tok.kind == "char" else None,
            "ppl": math.exp(min(val_loss, 50)), "tokens": count,
            "params": int(sum(p.numel() for p in model.parameters())),
            "spike_rates": rates,
            "mean_spike_rate": float(np.mean(list(rates.values()))) if rates else None,
            "energy_pj": float(e.mean()), "energy_pj_with_extras": float(e_x.mean()),
            "ann_twin_energy_pj": float(e_twin.mean()),
            "reduction_pct": energy.reduction_pct(float(e.mean()), float(e_twin.mean())),
            "ops_per_token": theory.counts_summary(allr),
            "per_layer_pj": theory.by_layer(allr)}


def evaluate_checkpoints(specs: Sequence[str], data: Optional[str] = None,
                         max_tokens: Optional[int] = None, progress=None) -> List[dict]:

    out = []
    for spec in specs:
        t0 = time.perf_counter()
        model, tok, info = load_checkpoint(spec)
        ann = ann_blocks_of(model)
        row = {"name": label(model), "checkpoint": spec, "kind": model.cfg.kind,
               "ann_blocks": list(ann),
               "spiking": ",".join(b for b in ALL_ANN if b not in ann) or "none",
               "embedding": None if model.cfg.kind == "ann" else model.cfg.embedding,
               "non_spiking_blocks": list(model.non_spiking_blocks())
               if hasattr(model, "non_spiking_blocks") else [],
               "train_steps": info.get("steps"), "trained_steps": _trained_steps(info),
               "training": _training(info, model.cfg),
               "train_command": info.get("command"),
               "train_device": info.get("device")}
        row.update(evaluate_variant(model, tok, data, max_tokens))
        row["seconds"] = time.perf_counter() - t0
        if progress:
            progress(row)
        out.append(row)
    return out


def _command_arg(info: dict, flag: str) -> Optional[str]:
    """The value of ``flag`` in the training command a checkpoint records (last one wins,
    as in argparse)."""
    cmd = (info.get("command") or "").split()
    vals = [cmd[i + 1] for i, a in enumerate(cmd[:-1]) if a == flag]
    return vals[-1] if vals else None


def _trained_steps(info: dict) -> Optional[int]:
    """Steps the run was asked for (its command's --steps); the checkpoint kept is the
    best validation one, at ``info["steps"]``."""
    v = _command_arg(info, "--steps")
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def _training(info: dict, cfg) -> str:
    """Learning rate, steps per token and seed of the run, as its command gave them."""
    parts = [f"lr {_command_arg(info, '--lr') or '3e-3 (default)'}"]
    if cfg.kind != "ann":
        parts.append(f"T {cfg.timesteps}")
    parts.append(f"seed {info.get('seed', _command_arg(info, '--seed') or 0)}")
    return ", ".join(parts)


def _fmt(x, nd=3):
    if x is None:
        return "—"
    return f"{x:,.{nd}f}" if isinstance(x, float) else str(x)


def markdown(res: dict) -> str:
    rows = res["variants"]
    s = [f"# {res.get('title') or TITLE}", "",
         f"Validation split of {res['data']}: {rows[0]['tokens'] if rows else 0} tokens per "
         "model (windows of the context, each from a reset). Theoretical energy per token, "
         "45 nm (Horowitz 2014): spike-driven synaptic ops x "
         f"{energy.E_AC_PJ} pJ + MACs x {energy.E_MAC_PJ} pJ (docs/models.md, "
         "`theory.variant_op_rows`); LayerNorm / softmax / GELU / residual-add ops are extras, "
         "in the last column only. Reduction: against the ANN twin's energy at the same "
         "token positions. Each run keeps its best validation checkpoint (validation on "
         "the first 16384 characters every 250 steps): the last column gives its step.", "",
         "| model | ANN blocks | training | val loss (nats/char) | BPC | params | "
         "mean spike rate | energy / token (nJ) | reduction vs ANN | with extras (nJ) | "
         "kept step / trained |",
         "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        s.append("| " + " | ".join([
            r["name"], ",".join(r["ann_blocks"]) or "none", r.get("training", "—"),
            _fmt(r["val_loss"], 4),
            _fmt(r["bpc"], 4), f"{r['params']:,}", _fmt(r["mean_spike_rate"], 3),
            _fmt(r["energy_pj"] / 1e3, 2), f"{r['reduction_pct']:.1f} %",
            _fmt(r["energy_pj_with_extras"] / 1e3, 2),
            f"{_fmt(r['train_steps'])} / {_fmt(r.get('trained_steps'))}"]) + " |")
    s += ["", "Ops per token (ACs / MACs / extras):", ""]
    for r in rows:
        o = r["ops_per_token"]
        s.append(f"- {r['name']}: {o['acs']:,.0f} / {o['macs']:,.0f} / {o['extras']:,.0f}")
    s += ["", "Spike rate per population (mean firing probability per neuron and step):", ""]
    for r in rows:
        if r["spike_rates"]:
            s.append(f"- {r['name']}: " + ", ".join(f"{k} {v:.3f}"
                                                     for k, v in r["spike_rates"].items()))
    s += ["", "Made by:", "", "```", res["command"], "```", "", "Training commands (from the "
          "checkpoints):", "", "```"]
    s += [f"{r['train_command']}" for r in rows if r.get("train_command")]
    s += ["```", "", "![energy vs loss](energy_vs_loss.png)", ""]
    return "\n".join(s)


def plot_points(res: dict) -> List[dict]:
    """energy_vs_loss points of a variants result; ``detail`` (the training settings) tells
    apart rows of the same name (``plots.distinct_labels``)."""
    return [{"name": r["name"], "energy_pj": r["energy_pj"], "val_loss": r["val_loss"],
             "detail": r.get("training", "")} for r in res["variants"]]


def write(res: dict, out: str) -> str:
    """README.md (the table), results.json and energy_vs_loss.png into ``out`` (atomically)."""

    points = plot_points(res)
    return write_bundle(out, res, markdown(res),
                        {"energy_vs_loss.png": lambda path: plots.energy_vs_loss(points, path)},
                        markdown_name="README.md")


@exits_on_user_error
def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m snn_compile.benchmarks.variants",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", metavar="CKPT")
    ap.add_argument("--out", required=True, metavar="DIR", help="folder to write (atomically)")
    ap.add_argument("--data", metavar="PATH", help="text file (default: the embedded corpus)")
    ap.add_argument("--max-tokens", type=int, metavar="N",
                    help="first N validation tokens only (default: the whole split)")
    ap.add_argument("--title", default=TITLE, help="heading of the README.md written")
    args = ap.parse_args(argv)
    rows = evaluate_checkpoints(
        args.checkpoints, args.data, args.max_tokens,
        progress=lambda r: print(f"{r['name']}: val loss {r['val_loss']:.4f}, "
                                 f"{r['energy_pj'] / 1e3:.2f} nJ/token "
                                 f"({r['seconds']:.0f} s)", file=sys.stderr))
    cmd = "python -m snn_compile.benchmarks.variants " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    res = {"variants": rows, "data": args.data or "the embedded corpus", "title": args.title,
           "command": cmd, "constants": energy.constants_table()}
    print(write(res, args.out), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
