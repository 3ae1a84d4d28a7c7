"""Data-parallel training throughput: tokens/s and scaling efficiency on 1..N GPUs.

    python -m snn_compile.benchmarks.train_scaling --device cuda [--procs 1 2 4 8]
        [--models default:spikedecoder default:ann] [--batch-size 64] [--steps 20]
        [--warmup 3] [--rounds 3] [--out scaling.json] [--json]

For each process count W of ``--procs`` it starts ``torchrun --standalone
--nproc_per_node W`` on this machine: DistributedDataParallel with NCCL, one GPU
per process, under ``--device cuda``; gloo on the CPU otherwise (a smoke test of
the same code). Every process builds each model of ``--models`` (the
configurations of checkpoints, by default the shipped SpikeDecoder and its ANN
twin, or a kind: ``spikedecoder``, ``ann``; ``--d-model``, ``--layers``,
``--context``, ``--timesteps`` override them) and times the step of ``snn-compile
train`` (``models.train.train_step``: forward with BPTT over T, cross-entropy,
backward with DDP's gradient all-reduce, gradient clipping, the all-reduce and
finiteness check of the loss, AdamW) on random windows of the embedded corpus.

Weak scaling: the batch per process is fixed, the global batch is ``W x
--batch-size``. Per model: warm-up steps, then ``--steps`` timed steps, the models
alternating ``--rounds`` times; the median round is reported:

    tokens/s(W)   = steps x W x batch x context / seconds
    speed-up(W)   = tokens/s(W) / tokens/s(W0)
    efficiency(W) = speed-up(W) x W0 / W          (W0: the smallest W measured)

W = 1 runs under torchrun too (DDP of one process), so every row takes the same
code path; each process gets OMP_NUM_THREADS=1 unless it is set. Counts above the number of visible GPUs are skipped and listed. Prints
a table; ``--out`` writes every figure as JSON. Imports no Lava.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import List, Optional, Sequence

import numpy as np

from snn_compile.data import random_batch, tokenizer_from_dict
from snn_compile.errors import UserError, atomic_path, exits_on_user_error
from snn_compile.models import distributed
from snn_compile.models.checkpoint import build_model, load_raw
from snn_compile.models.config import MODEL_KINDS, ModelConfig
from snn_compile.models.distributed import NCCL_ENV
from snn_compile.models.train import make_optimizer, prepare_data, train_step

DEFAULT_MODELS = ("default:spikedecoder", "default:ann")
OVERRIDES = {"d_model": "--d-model", "n_layers": "--layers", "context": "--context",
             "timesteps": "--timesteps"}      # ModelConfig field -> option


def _model_spec(spec: str, overrides: dict):
    """(ModelConfig, tokenizer or None) of a checkpoint spec or a model kind."""
    if spec in MODEL_KINDS:
        cfg, tok = ModelConfig(kind=spec).to_dict(), None
    else:
        payload = load_raw(spec)
        cfg, tok = dict(payload["config"]), tokenizer_from_dict(payload["tokenizer"])
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return ModelConfig.from_dict(cfg), tok


def worker(a: argparse.Namespace) -> None:
    """One process of a torchrun launch: time every model, rank 0 writes the figures."""
    import torch


    d = distributed.setup(a.device)
    sync = torch.cuda.synchronize if d.device.startswith("cuda") else (lambda: None)
    overrides = {k: getattr(a, k) for k in OVERRIDES}
    runs = {}
    for spec in a.models:
        cfg, tok = _model_spec(spec, overrides)
        tok, train_ids, _ = prepare_data(None, "char", cfg.context, tok)
        cfg.vocab_size = tok.vocab_size
        torch.manual_seed(a.seed)
        model = build_model(cfg).to(d.device).train()
        net = distributed.wrap(model, d)
        opt = make_optimizer(model, 1e-3, 0.01)
        rng = np.random.default_rng(a.seed)
        batches = []
        for _ in range(max(a.steps, a.warmup)):
            x, y = random_batch(train_ids, a.batch_size * d.world, cfg.context, rng)
            batches.append((distributed.shard(x, d), distributed.shard(y, d)))
        runs[spec] = dict(cfg=cfg, net=net, opt=opt, batches=batches,
                          params=sum(p.numel() for p in model.parameters()), rounds=[])
    for r in runs.values():
        for x, y in r["batches"][:a.warmup]:
            train_step(r["net"], r["opt"], x, y, d)
    for _ in range(a.rounds):
        for r in runs.values():
            d.barrier()
            sync()
            t0 = time.perf_counter()
            for x, y in r["batches"][:a.steps]:
                train_step(r["net"], r["opt"], x, y, d)
            sync()
            d.barrier()
            dt = time.perf_counter() - t0
            r["rounds"].append(a.steps * d.world * a.batch_size * r["cfg"].context / dt)
    if d.main:
        dev = torch.cuda.get_device_name(d.local_rank) if d.device.startswith("cuda") else "cpu"
        out = {"procs": d.world, "backend": d.backend, "device": dev, "torch": torch.__version__,
               "models": {spec: {"kind": r["cfg"].kind, "params": r["params"],
                                 "config": r["cfg"].to_dict(),
                                 "tokens_per_s": statistics.median(r["rounds"]),
                                 "all_rounds_tokens_per_s": r["rounds"]}
                          for spec, r in runs.items()}}
        with open(a.worker, "w") as f:
            json.dump(out, f)
    d.barrier()
    d.close()


def worker_command(w: int, a: argparse.Namespace, result: str) -> List[str]:
    """The torchrun command line of the run with ``w`` processes."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           str(w), "-m", "snn_compile.benchmarks.train_scaling", "--worker", result,
           "--device", a.device, "--models", *a.models, "--batch-size", str(a.batch_size),
           "--steps", str(a.steps), "--warmup", str(a.warmup), "--rounds", str(a.rounds),
           "--seed", str(a.seed)]
    for k, flag in OVERRIDES.items():
        if getattr(a, k) is not None:
            cmd += [flag, str(getattr(a, k))]
    return cmd


def _launch(w: int, a: argparse.Namespace, result: str) -> None:
    env = {**NCCL_ENV, **os.environ}
    env.setdefault("OMP_NUM_THREADS", "1")     # the same for every W (torchrun's default)
    r = subprocess.run(worker_command(w, a, result), env=env, stdout=sys.stderr)
    if r.returncode != 0:
        raise UserError(f"the run with {w} process(es) failed (torchrun exit status "
                        f"{r.returncode}; its output is above)")


def run(a: argparse.Namespace) -> dict:
    """Launch every process count, gather the figures (module docstring)."""
    import torch
    if a.procs is None:
        n = torch.cuda.device_count() if a.device == "cuda" else 2
        a.procs = [w for w in (1, 2, 4, 8) if w <= max(n, 1)]
    procs = sorted(set(a.procs))
    if procs[0] < 1:
        raise UserError(f"--procs: process counts must be at least 1, got {procs[0]}")
    skipped: List[int] = []
    if a.device == "cuda":
        n = torch.cuda.device_count()
        if n == 0:
            raise UserError("--device cuda: no CUDA GPU is visible; use --device cpu")
        skipped = [w for w in procs if w > n]
        procs = [w for w in procs if w <= n]
        if not procs:
            raise UserError(f"--procs {' '.join(map(str, skipped))}: only {n} GPU(s) visible")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for w in procs:
            path = os.path.join(tmp, f"w{w}.json")
            _launch(w, a, path)
            with open(path) as f:
                results[w] = json.load(f)
    return summarize(results, a.batch_size, a.steps, a.warmup, a.rounds, skipped)


def summarize(results: dict, batch_size: int, steps: int, warmup: int, rounds: int,
              skipped: Sequence[int] = ()) -> dict:
    """The figures of every run (``{W: what rank 0 of that run wrote}``), with speed-up
    and efficiency against the smallest W."""
    procs = sorted(results)
    first = results[procs[0]]
    models = {}
    for spec, m in first["models"].items():
        base = m["tokens_per_s"]
        rows = {}
        for w in procs:
            t = results[w]["models"][spec]["tokens_per_s"]
            rows[w] = {"tokens_per_s": t, "tokens_per_s_per_process": t / w,
                       "global_batch": batch_size * w, "speedup": t / base,
                       "efficiency": t / base * procs[0] / w,
                       "all_rounds_tokens_per_s":
                           results[w]["models"][spec]["all_rounds_tokens_per_s"]}
        models[spec] = {"kind": m["kind"], "params": m["params"], "config": m["config"],
                        "runs": rows}
    return {"device": first["device"], "backend": first["backend"], "torch": first["torch"],
            "batch_per_process": batch_size, "steps_timed": steps, "warmup": warmup,
            "rounds": rounds, "procs": procs, "skipped_procs": list(skipped),
            "baseline_procs": procs[0], "models": models}


def table(r: dict) -> str:
    labels = {spec: f"{m['kind']} ({spec})" if spec != m["kind"] else spec
              for spec, m in r["models"].items()}
    n = max(len("model"), *map(len, labels.values()))
    lines = [f"data-parallel training throughput on {r['device']} (DDP, {r['backend']}), "
             f"batch {r['batch_per_process']} per process, median of {r['rounds']} rounds of "
             f"{r['steps_timed']} steps; efficiency against {r['baseline_procs']} process(es)",
             f"{'model':<{n}} {'procs':>5} {'global batch':>12} {'tokens/s':>12} "
             f"{'per process':>12} {'speed-up':>8} {'efficiency':>10}"]
    for spec, m in r["models"].items():
        for w, row in m["runs"].items():
            lines.append(f"{labels[spec]:<{n}} {w:>5} {row['global_batch']:>12} "
                         f"{row['tokens_per_s']:>12,.0f} {row['tokens_per_s_per_process']:>12,.0f} "
                         f"{row['speedup']:>8.2f} {row['efficiency'] * 100:>9.1f} %")
    if r["skipped_procs"]:
        lines.append(f"skipped (more processes than GPUs): {r['skipped_procs']}")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m snn_compile.benchmarks.train_scaling",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--procs", type=int, nargs="+", metavar="W",
                    help="process counts (GPUs with --device cuda) to measure (default: 1 2 4 "
                         "8 up to the visible GPUs with --device cuda, 1 2 on the CPU)")
    ap.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), metavar="SPEC",
                    help="checkpoints whose configuration to train, or kinds spikedecoder/ann "
                         "(default: the shipped SpikeDecoder and ANN twin)")
    ap.add_argument("--batch-size", type=int, default=64, help="windows per process and step")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per round and model")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per model first")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; median reported")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--d-model", dest="d_model", type=int, help="override the models' width")
    ap.add_argument("--layers", dest="n_layers", type=int, help="override the models' depth")
    ap.add_argument("--context", type=int, help="override the models' context")
    ap.add_argument("--timesteps", type=int, help="override the SNN's steps per token")
    ap.add_argument("--out", metavar="JSON", help="write every figure to this JSON file")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--worker", metavar="RESULT", help=argparse.SUPPRESS)
    return ap


@exits_on_user_error
def main(argv: Optional[Sequence[str]] = None) -> int:
    a = parser().parse_args(argv)
    if a.steps < 1 or a.rounds < 1 or a.warmup < 0 or a.batch_size < 1:
        raise UserError("--steps, --rounds and --batch-size must be at least 1, --warmup at "
                        "least 0")
    if a.worker:
        worker(a)
        return 0
    r = run(a)
    if a.out:
        with atomic_path(a.out) as tmp, open(tmp, "w") as f:
            json.dump(r, f, indent=1)
    print(json.dumps(r, indent=1) if a.json else table(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
