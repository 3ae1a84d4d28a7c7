"""The scaling table: SpikeDecoders against their ANN twins at several sizes.

Reads the checkpoints that ``scripts/scaling.sh OUT`` trains (``sd_LxD.pt`` and
``ann_LxD.pt`` per size) and measures, for each size, on the whole validation split
of the embedded corpus: both validation losses and their ratio, the loss with the
attention memory zeroed (ablation) and its difference, the mean and per-block
attention spike rates, the theoretical 45 nm energy per token of both (theory.py, on
the first 512 validation characters), the Loihi 2 neurocores and chips of the
compiled graph (resources.py), the emulator's tokens/s (numpy engine, batch 1) and
the Lava simulator's tokens/s (4 tokens timed; reported where 32 tokens take under
10 minutes). Results are cached per checkpoint in ``OUT/NAME.scaling.json``.

    python -m snn_compile.benchmarks.scaling OUT [--out docs/results/scaling] [--no-lava]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
import time

import numpy as np

from snn_compile.benchmarks import theory
from snn_compile.benchmarks.harness import _torch_spikes
from snn_compile.benchmarks.theory import model_shape
from snn_compile.compiler.pipeline import load_qgraph
from snn_compile.compiler.resources import resource_report
from snn_compile.errors import UserError, atomic_path, exits_on_user_error
from snn_compile.hw_sim.emulator import EmulatorBackend
from snn_compile.hw_sim.lava_runner import measure_speed
from snn_compile.models.checkpoint import load_checkpoint
from snn_compile.models.fold import fold
from snn_compile.models.train import evaluate, prepare_data

LAVA_BUDGET_S = 600.0      # "where 32 tokens run in under 10 min"
ENERGY_TOKENS = 512


def _float_eval(path: str, ablate: bool = False) -> dict:
    model, tok, info = load_checkpoint(path)
    _, _, val = prepare_data(None, tok.kind, model.cfg.context, tok)
    if ablate:
        model.set_ablation(attention=True)
    ev = evaluate(model, val)
    return {"val_loss": ev["val_loss"], "mean_spike_rate": ev["mean_spike_rate"],
            "attention_rates": {k[:-5]: v for k, v in ev["spike_rates"].items()
                                if k.endswith(".attn")},
            "steps": info.get("steps"), "params": sum(p.numel() for p in model.parameters())}


def _energy(sd_path: str, ann_path: str) -> dict:
    model, tok, _ = load_checkpoint(sd_path)
    folded = fold(model)
    ann, _, _ = load_checkpoint(ann_path)
    _, _, val = prepare_data(None, tok.kind, model.cfg.context, tok)
    C = model.cfg.context
    snn, annp = [], []
    for start in range(0, ENERGY_TOKENS, C):
        seq = val[start:start + C]
        rows = theory.snn_op_rows(model_shape(folded), _torch_spikes(folded, seq))
        snn.append(theory.per_token_energy(rows))
        annp.append(theory.per_token_energy(theory.ann_op_rows(model_shape(ann),
                                                                 list(range(len(seq))))))
    return {"snn_nj": float(np.concatenate(snn).mean() / 1e3),
            "ann_nj": float(np.concatenate(annp).mean() / 1e3)}


def _hardware(sd_path: str, lava: bool) -> dict:
    q, _, tok = load_qgraph(sd_path)
    tot = resource_report(q)["totals"]
    be = EmulatorBackend(q)
    toks = np.random.default_rng(0).integers(0, tok.vocab_size, 64)
    be.feed(int(toks[0]))
    t0 = time.perf_counter()
    for t in toks[1:]:
        be.feed(int(t))
    emu = (len(toks) - 1) / (time.perf_counter() - t0)
    be.close()
    out = {"neurocores": tot.get("neurocores"), "chips": tot.get("chips"),
           "neurons": tot.get("neurons"), "window": q.window, "emulator_tok_s": emu,
           "emulator_engine": be.engine}
    if lava:
        sp = measure_speed(q, n_tokens=4)
        out.update(lava_tok_s=sp["tokens_per_s"], lava_processes=sp["processes"],
                   lava_32_tokens_s=32 / sp["tokens_per_s"])
    return out


def measure(folder: str, lava: bool = True) -> list:
    sizes = sorted({m.group(1) for f in glob.glob(os.path.join(folder, "sd_*.pt"))
                    if (m := re.match(r"sd_(\d+x\d+)\.pt$", os.path.basename(f)))},
                   key=lambda s: [int(x) for x in s.split("x")])
    if not sizes:
        raise UserError(f"no sd_LxD.pt checkpoints in {folder}; train them with "
                        f"`scripts/scaling.sh {folder}`")
    rows = []
    for size in sizes:
        sd, ann = (os.path.join(folder, f"{k}_{size}.pt") for k in ("sd", "ann"))
        if not os.path.exists(ann):
            raise UserError(f"{ann} is missing: every size needs its ANN twin")
        cache = os.path.join(folder, f"sd_{size}.scaling.json")
        row = json.load(open(cache)) if os.path.exists(cache) else {"size": size}
        for key, fn in (("snn", lambda: _float_eval(sd)), ("ann", lambda: _float_eval(ann)),
                        ("ablated", lambda: _float_eval(sd, ablate=True)),
                        ("energy", lambda: _energy(sd, ann)),
                        ("hardware", lambda: _hardware(sd, lava))):
            if key not in row or (key == "hardware" and lava and "lava_tok_s" not in row[key]):
                print(f"{size}: {key} ...", file=sys.stderr, flush=True)
                row[key] = fn()
                with atomic_path(cache) as tmp:
                    with open(tmp, "w") as fh:
                        json.dump(row, fh, indent=1)
        rows.append(row)
    return rows


def markdown(rows: list) -> str:
    head = ("| blocks x d_model | steps | SpikeDecoder val loss | ANN twin val loss | ratio | "
            "attention ablation Δ | attention rate, lowest block | mean spike rate | "
            "energy/token 45 nm SNN / ANN | neurocores / chips | emulator tok/s | "
            "Lava-sim tok/s |")
    lines = [head, "| " + " | ".join(["---"] * (head.count("|") - 1)) + " |"]
    for r in rows:
        s, a, ab, e, h = r["snn"], r["ann"], r["ablated"], r["energy"], r["hardware"]
        lava = (f"{h['lava_tok_s']:.2f}" if h.get("lava_tok_s") and
                h["lava_32_tokens_s"] <= LAVA_BUDGET_S else
                (f"— (32 tokens: {h['lava_32_tokens_s'] / 60:.0f} min)" if h.get("lava_tok_s")
                 else "not run"))
        low = min(s["attention_rates"].items(), key=lambda kv: kv[1])
        lines.append(
            f"| {r['size'].replace('x', ' x ')} | {s['steps']} | {s['val_loss']:.4f} | "
            f"{a['val_loss']:.4f} | {s['val_loss'] / a['val_loss']:.3f} | "
            f"{ab['val_loss'] - s['val_loss']:+.3f} | {low[0]} {low[1]:.3f} | "
            f"{s['mean_spike_rate']:.3f} | {e['snn_nj']:.0f} / {e['ann_nj']:.0f} nJ | "
            f"{h['neurocores']} / {h['chips']} | {h['emulator_tok_s']:.0f} | {lava} |")
    return "\n".join(lines) + "\n"


@exits_on_user_error
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m snn_compile.benchmarks.scaling",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", help="the OUT folder of scripts/scaling.sh")
    ap.add_argument("--out", help="write README.md and results.json here")
    ap.add_argument("--no-lava", action="store_true", help="skip the Lava speed measurement")
    args = ap.parse_args(argv)
    if not os.path.isdir(args.folder):
        raise UserError(f"{args.folder} is not a folder; give the OUT folder of "
                        "scripts/scaling.sh")
    rows = measure(args.folder, lava=not args.no_lava)
    md = markdown(rows)
    print(md)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with atomic_path(os.path.join(args.out, "results.json")) as tmp:
            with open(tmp, "w") as fh:
                json.dump(rows, fh, indent=1)
        with atomic_path(os.path.join(args.out, "table.md")) as tmp:
            with open(tmp, "w") as fh:
                fh.write(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
