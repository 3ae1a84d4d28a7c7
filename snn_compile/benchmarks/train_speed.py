"""Training throughput of the SpikeDecoder and its ANN twin, measured in one run.

    python -m snn_compile.benchmarks.train_speed [--device cuda] [--steps 20] [--rounds 3]
        [--like CKPT] [--layers L] [--d-model D] [--heads H] [--token-shift K]
        [--batch-size 64] [--attention-floor 0.02] [--with-reference] [--attention-chunk C]
        [--tf32] [--int8] [--bf16-grads] [--compile] [--cuda-graphs] [--profile] [--flops]
        [--json]

The SpikeDecoder is the configuration of ``--like`` (default ``default:spikedecoder``,
the shipped 4 x 128 residual-stream design with the decaying attention memory);
``--layers``, ``--d-model``, ``--heads``, ``--token-shift``, ``--timesteps`` override it
(the decay mantissas and the window are then recomputed, as ``snn-compile train`` does),
so the scaling table's sizes are ``--layers 2 --d-model 64 --heads 4 --token-shift 2``,
the default, and ``--layers 6 --d-model 256 --heads 16``. The ANN twin has the same
layers, d_model, heads and context.

Both take the step of ``snn-compile train`` (``models.train.train_step``: forward with
BPTT over T and the spike records, cross-entropy plus, for the SpikeDecoder, the
attention spike-rate floor of the shipped recipe, backward, gradient clipping, AdamW)
on the same random batches of the embedded corpus. Each model gets warm-up steps,
then ``--steps`` timed steps, the device synchronised at both ends; the models
alternate ``--rounds`` times and the median is reported, so the ratio SNN cost / ANN
cost comes from one run on one machine. ``--with-reference`` adds the SpikeDecoder with
the training kernels off (``models.kernels.use_kernels(False)``: the Python LIF loop and
the P x P attention) as a third model. ``--attention-chunk`` sets the tokens per chunk of the chunked
attention. ``--tf32`` (CUDA) runs the SpikeDecoder's spike x quantized-weight products on
TF32 tensor cores (exact in the forward, ``models.kernels.spike_matmul``; the run checks
it: the spikes of one evaluation forward with and without TF32 are compared and the
number of differing spikes reported) and gives the ANN twin TF32 for all its matmuls.
``--int8`` (CUDA) runs the forward of those products on int8 tensor cores instead
(``models.kernels.int8_spike_product``, exact; checked the same way, against FP32);
their gradients stay FP32, or TF32 with ``--tf32``. The ANN twin has no spikes, so
``--int8`` leaves it as it is (FP32, or TF32 with ``--tf32``). ``--bf16-grads`` (CUDA)
computes the gradients of the SpikeDecoder's spike products from bfloat16 operands
(``models.kernels.set_bf16_grads``) and runs the ANN twin under bfloat16 autocast
(``torch.autocast``: its usual mixed precision, forward and backward).
``--compile`` wraps both models in ``torch.compile``; ``--cuda-graphs`` (CUDA) replays
each model's step as one CUDA graph (``models.train.GraphedStep``, what ``snn-compile
train --cuda-graphs`` runs; the last warm-up step captures it). On CUDA, peak memory is
``torch.cuda.max_memory_allocated`` over each model's timed steps (both models' weights
and optimiser states stay resident). ``--profile`` adds one more step of each model under
``torch.profiler`` (``benchmarks/profiling.py``: kernel time by family of operation on
CUDA, so the cost is seen kernel by kernel; operator CPU time on the CPU). ``--flops``
counts the floating-point operations of one forward and backward of each model
(``torch.utils.flop_counter.FlopCounterMode``: matmuls and attention, 2 per
multiply-add; the int8 products are not counted), the work a faster kernel cannot
remove. Imports no
Lava, so it runs where only PyTorch is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import statistics
import sys
import time
from typing import Optional, Sequence

import numpy as np

from snn_compile.benchmarks.profiling import print_profile, profile_call
from snn_compile.data import tokenizer_from_dict
from snn_compile.data.batching import random_batch
from snn_compile.errors import UserError, exits_on_user_error
from snn_compile.models import kernels
from snn_compile.models.checkpoint import build_model, load_raw
from snn_compile.models.config import ModelConfig
from snn_compile.models.distributed import Dist
from snn_compile.models.spikedecoder import is_spike_record
from snn_compile.models.train import (GraphedStep, forward_backward, make_optimizer,
                                      prepare_data, train_step)

OVERRIDES = ("n_layers", "d_model", "n_heads", "token_shift", "timesteps", "context")


def model_configs(like: str = "default:spikedecoder", **overrides):
    """(SpikeDecoder config, ANN twin config, tokenizer) of checkpoint ``like`` with the
    given ModelConfig fields overridden (None: keep)."""

    payload = load_raw(like)
    cfg = dict(payload["config"])
    if cfg.get("kind") != "spikedecoder":
        raise UserError(f"--like {like}: a {cfg.get('kind')} checkpoint; give a SpikeDecoder "
                        "checkpoint (its ANN twin is built with the same sizes)")
    changed = {k: v for k, v in overrides.items() if v is not None and v != cfg.get(k)}
    cfg.update(changed)
    if changed and cfg.get("attention_memory") == "decay":
        cfg["memory_decay"], cfg["memory_window"] = (), 0     # recomputed for the new size
    snn = ModelConfig.from_dict(cfg)
    ann = ModelConfig(kind="ann", vocab_size=snn.vocab_size, d_model=snn.d_model,
                      n_layers=snn.n_layers, n_heads=snn.n_heads, context=snn.context)
    return snn, ann, tokenizer_from_dict(payload["tokenizer"])


def run(device: str = "cpu", steps: int = 20, warmup: int = 3, rounds: int = 3,
        batch_size: int = 64, context: Optional[int] = None, seed: int = 0,
        like: str = "default:spikedecoder", layers: Optional[int] = None,
        d_model: Optional[int] = None, heads: Optional[int] = None,
        token_shift: Optional[int] = None, timesteps: Optional[int] = None,
        attention_floor: float = 0.02, with_reference: bool = False,
        attention_chunk: Optional[int] = None, tf32: bool = False,
        compile_models: bool = False, cuda_graphs: bool = False,
        profile: bool = False, int8: bool = False, bf16_grads: bool = False,
        flops: bool = False) -> dict:
    """The measurement (module docstring); the kernels' settings are restored after."""
    kw = dict(locals())
    with kernels.spike_products():
        return _run(**kw)


def _run(*, device, steps, warmup, rounds, batch_size, context, seed, like, layers, d_model,
         heads, token_shift, timesteps, attention_floor, with_reference, attention_chunk,
         tf32, compile_models, cuda_graphs, profile, int8, bf16_grads, flops) -> dict:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible; use --device cpu")
    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    snn_cfg, ann_cfg, tok = model_configs(like, n_layers=layers, d_model=d_model,
                                          n_heads=heads, token_shift=token_shift,
                                          timesteps=timesteps, context=context)
    kernels.check_product_flags(tf32, int8, bf16_grads, device, snn_cfg.kind, snn_cfg.residual,
                                snn_cfg.deployable)
    ctx = snn_cfg.context
    tok, train_ids, _ = prepare_data(None, "char", ctx, tok)
    rng = np.random.default_rng(seed)
    batches = [random_batch(train_ids, batch_size, ctx, rng)
               for _ in range(max(steps, warmup))]
    dist = Dist(device=device)
    if attention_chunk is not None:
        kernels.set_chunk_tokens(attention_chunk)
    kernels.set_tf32(tf32)
    kernels.set_int8(int8)
    kernels.set_bf16_grads(bf16_grads)
    names = ["spikedecoder", "ann"] + (["spikedecoder_reference"] if with_reference else [])
    runs = {}
    for name in names:
        cfg = ann_cfg if name == "ann" else snn_cfg
        torch.manual_seed(seed)
        model = build_model(cfg).to(device).train()
        opt = make_optimizer(model, 1e-3, 0.01)
        net = torch.compile(model) if compile_models else model
        floor = 0.0 if name == "ann" else attention_floor
        if name.endswith("_reference"):
            mode = lambda: kernels.use_kernels(False)             # noqa: E731
        elif name == "ann" and (tf32 or bf16_grads):
            mode = functools.partial(_ann_precision, tf32, bf16_grads, device)
        else:
            mode = contextlib.nullcontext

        kw = dict(record=True, attention_floor=floor)
        one = GraphedStep(net, opt, dist, warmup=warmup - 1, **kw) if cuda_graphs else \
            functools.partial(train_step, net, opt, dist=dist, **kw)

        def step(x, y, one=one, mode=mode):
            with mode():
                one(x, y)
        runs[name] = dict(step=step, rounds=[], peak=0, model=model, floor=floor,
                          params=sum(p.numel() for p in model.parameters()))
    for r in runs.values():
        for x, y in batches[:warmup]:
            r["step"](x, y)
    sync()
    for _ in range(rounds):
        for r in runs.values():
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            sync()
            t0 = time.perf_counter()
            for x, y in batches[:steps]:
                r["step"](x, y)
            sync()
            r["rounds"].append(steps * batch_size * ctx / (time.perf_counter() - t0))
            if cuda:
                r["peak"] = max(r["peak"], torch.cuda.max_memory_allocated())
    profiles = {}
    if profile:                      # one more step of each model, under the profiler
        x, y = batches[0]
        for k, r in runs.items():
            def one(r=r):
                r["step"](x, y)
                sync()
            profiles[k] = profile_call(one, cuda)
    counted = {k: _step_flops(r["model"], batches[0], r["floor"], device)
               for k, r in runs.items()} if flops else {}
    med = {k: statistics.median(r["rounds"]) for k, r in runs.items()}
    check = _precision_check(runs["spikedecoder"]["model"], batches[0][0], device, tf32,
                             int8) if cuda and (tf32 or int8) else None
    out = {"device": torch.cuda.get_device_name() if cuda else "cpu",
           "torch": torch.__version__, "batch_size": batch_size, "context": ctx,
           "steps_timed": steps, "rounds": rounds, "like": like,
           "size": f"{snn_cfg.n_layers}x{snn_cfg.d_model}",
           "config": snn_cfg.to_dict(), "attention_floor": attention_floor,
           "kernels": kernels.describe(compile_models), "compiled": compile_models, "tf32": tf32,
           "int8": int8, "bf16_grads": bf16_grads,
           "cuda_graphs": cuda_graphs,
           "params": {k: r["params"] for k, r in runs.items()},
           "tokens_per_s": med,
           "all_rounds_tokens_per_s": {k: r["rounds"] for k, r in runs.items()},
           "snn_cost_over_ann": med["ann"] / med["spikedecoder"]}
    if with_reference:
        out["reference_over_kernels"] = med["spikedecoder"] / med["spikedecoder_reference"]
    if check is not None:
        out["precision_check"] = check
    if counted:
        out["flops_per_step"] = counted
        out["flops_snn_over_ann"] = counted["spikedecoder"] / max(counted["ann"], 1)
    if profiles:
        out["profile"] = profiles
        out["profile_snn_over_ann"] = (profiles["spikedecoder"]["total_ms"]
                                       / max(profiles["ann"]["total_ms"], 1e-9))
    if cuda:
        out["peak_memory_mib"] = {k: r["peak"] / 2 ** 20 for k, r in runs.items()}
    return out


def _step_flops(model, batch, floor: float, device: str) -> int:
    """Floating-point operations of one forward and backward (``forward_backward``) of
    ``model`` on ``batch``, counted by ``FlopCounterMode``; the gradients are cleared."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x, y = (torch.as_tensor(a, device=device) for a in batch)
    counter = FlopCounterMode(display=False)
    with counter:
        forward_backward(model, x, y, record=True, attention_floor=floor)
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


@contextlib.contextmanager
def _ann_precision(tf32: bool, bf16: bool, device: str):
    """The ANN twin's matmul precision: TF32 and/or bfloat16 autocast."""
    import torch

    with contextlib.ExitStack() as stack:
        if tf32:
            stack.enter_context(kernels._matmul_precision("high"))
        if bf16:
            stack.enter_context(torch.autocast(device_type=device, dtype=torch.bfloat16))
        yield


def _precision_check(model, x, device, tf32: bool, int8: bool) -> dict:
    """Spikes of one evaluation forward with the run's spike products (TF32 and/or int8)
    against full FP32 ones."""
    import torch

    was = model.training
    model.eval()
    recs = []
    with torch.no_grad():
        for on in (False, True):
            kernels.set_tf32(tf32 and on)
            kernels.set_int8(int8 and on)
            recs.append(model(torch.as_tensor(x, device=device), record=True)[1])
    model.train(was)
    keys = [k for k in recs[0] if is_spike_record(k)]
    differ = sum(int((recs[0][k] != recs[1][k]).sum()) for k in keys)
    total = sum(recs[0][k].numel() for k in keys)
    return {"products": "+".join(n for n, on in (("int8", int8), ("tf32", tf32)) if on),
            "differing_spikes": differ, "spike_decisions": total}


@exits_on_user_error
def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m snn_compile.benchmarks.train_speed",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per round and model")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per model first")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; median reported")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--like", default="default:spikedecoder",
                    help="SpikeDecoder checkpoint whose configuration is timed")
    ap.add_argument("--layers", type=int, help="override n_layers")
    ap.add_argument("--d-model", type=int, help="override d_model")
    ap.add_argument("--heads", type=int, help="override n_heads")
    ap.add_argument("--token-shift", type=int, help="override token_shift")
    ap.add_argument("--timesteps", type=int, help="override T")
    ap.add_argument("--context", type=int, help="override the context")
    ap.add_argument("--attention-floor", type=float, default=0.02,
                    help="attention spike-rate floor of the SpikeDecoder's loss (the shipped "
                         "recipe's 0.02; 0: off)")
    ap.add_argument("--with-reference", action="store_true",
                    help="also time the SpikeDecoder with the training kernels off")
    ap.add_argument("--attention-chunk", type=int,
                    help="tokens per chunk of the chunked attention (default 8)")
    ap.add_argument("--tf32", action="store_true",
                    help="TF32 spike x weight products (CUDA; the ANN twin gets TF32 too)")
    ap.add_argument("--int8", action="store_true",
                    help="int8 tensor cores for the forward of the SpikeDecoder's spike x "
                         "weight products (CUDA; exact)")
    ap.add_argument("--bf16-grads", action="store_true",
                    help="bfloat16 gradients of the SpikeDecoder's spike x weight products; "
                         "the ANN twin under bfloat16 autocast (CUDA)")
    ap.add_argument("--compile", action="store_true", help="torch.compile both models")
    ap.add_argument("--cuda-graphs", action="store_true",
                    help="replay every model's step as one CUDA graph (CUDA; needs --warmup 2 "
                         "or more)")
    ap.add_argument("--profile", action="store_true",
                    help="after the timing, profile one step of each model (torch.profiler: "
                         "kernel time by family of operation on CUDA, operator CPU time on "
                         "the CPU)")
    ap.add_argument("--flops", action="store_true",
                    help="also count the floating-point operations of one forward and "
                         "backward of each model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args(argv)
    for name in ("steps", "rounds", "batch_size"):
        if getattr(a, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if a.cuda_graphs and (a.device != "cuda" or a.warmup < 2):
        raise UserError("--cuda-graphs needs --device cuda and --warmup 2 or more (eager "
                        "steps, then the capture)")
    r = run(a.device, a.steps, a.warmup, a.rounds, a.batch_size, a.context, a.seed, a.like,
            a.layers, a.d_model, a.heads, a.token_shift, a.timesteps, a.attention_floor,
            a.with_reference, a.attention_chunk, a.tf32, a.compile, a.cuda_graphs,
            a.profile, a.int8, a.bf16_grads, a.flops)
    if a.json:
        print(json.dumps(r, indent=1))
        return 0
    print(f"training throughput on {r['device']} ({r['size']}, batch {r['batch_size']} x "
          f"context {r['context']}, median of {r['rounds']} rounds of {r['steps_timed']} "
          f"steps; kernels: {r['kernels']})")
    for k, v in r["tokens_per_s"].items():
        mem = f"   peak {r['peak_memory_mib'][k]:8.0f} MiB" if "peak_memory_mib" in r else ""
        print(f"  {k:<23} {v:12,.0f} tokens/s{mem}")
    print(f"  SpikeDecoder cost / ANN twin cost: {r['snn_cost_over_ann']:.2f} x")
    if "precision_check" in r:
        c = r["precision_check"]
        print(f"  {c['products']} check: {c['differing_spikes']} of "
              f"{c['spike_decisions']:,} spikes differ from FP32 products")
    if "flops_per_step" in r:
        fl = r["flops_per_step"]
        print("  FLOPs per forward + backward: " + ", ".join(f"{k} {v / 1e9:,.1f} G"
                                                           for k, v in fl.items())
              + f"; SpikeDecoder / ANN twin {r['flops_snn_over_ann']:.2f} x")
    if "reference_over_kernels" in r:
        print(f"  kernels speed-up over the reference: {r['reference_over_kernels']:.2f} x")
    for k, pr in r.get("profile", {}).items():
        print_profile(f"one step of {k}", pr)
    if "profile_snn_over_ann" in r:
        print(f"  profiled time, SpikeDecoder / ANN twin: {r['profile_snn_over_ann']:.2f} x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
