"""Training and evaluation loops (BPTT through the T steps, surrogate gradients).

Deterministic for a fixed seed on CPU: the batches come from a seeded numpy
Generator and torch's RNG is seeded before the model is built.

Under ``torchrun`` the same loop trains with DistributedDataParallel
(``snn_compile.models.distributed``): ``batch_size`` is the per-rank batch, the
global batch is ``batch_size x world size``, rank 0 alone evaluates and writes
the checkpoint, and the same seed and world size give the same result.

Guards: a non-finite loss, gradient or validation loss stops the run (UserError)
before the optimiser step, and the checkpoint on disk stays the last good one; a
run whose best validation loss is still at or above the unigram loss of the
training split (``unigram_loss``) after a quarter of its steps (and after the
warm-up) stops without
writing a checkpoint (``learning_guard=False`` turns that off); a checkpoint is
only overwritten by a better validation loss, also across ``--resume``.
"""

from __future__ import annotations

import functools
import math
import os
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from snn_compile.data import (check_corpus_length, load_corpus, make_tokenizer, random_batch,
                              sequential_blocks, tokenizer_from_dict, train_val_split)
from snn_compile.errors import UserError
from snn_compile.models import distributed, kernels
from snn_compile.models.checkpoint import build_model, load_raw, save_checkpoint
from snn_compile.models.config import ModelConfig
from snn_compile.models.spikedecoder import is_spike_record


@dataclass
class TrainArgs:
    steps: int = 2000
    batch_size: int = 32              # per rank; global batch = batch_size x world size
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup: int = 100
    eval_interval: int = 250
    eval_tokens: int = 16384
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    learning_guard: bool = True       # stop a run still at the unigram loss after steps / 4
    attention_floor: float = 0.0      # attention spike-rate floor rho_0 (0: off)
    attention_floor_weight: float = 0.1
    cuda_graphs: bool = False         # replay each step as one CUDA graph (GraphedStep)
    # the spike x weight products (models.kernels.spike_products; None: as set already,
    # e.g. by SNN_KERNELS_TF32 / _INT8 / _BF16_GRADS)
    tf32: Optional[bool] = None       # TF32 forward and gradients
    int8: Optional[bool] = None       # int8 forward (exact)
    bf16_grads: Optional[bool] = None  # bfloat16 gradients


def prepare_data(data_path: Optional[str], tokenizer_kind: str, context: int, tokenizer=None):
    text = load_corpus(data_path)
    split = int(len(text) * 0.9)
    if tokenizer is None:
        tokenizer = make_tokenizer(tokenizer_kind, text)
    ids = np.asarray(tokenizer.encode(text, strict=False), dtype=np.int64)
    train_ids, val_ids = train_val_split(ids, 0.1)
    check_corpus_length(train_ids, context)
    check_corpus_length(val_ids, context)
    del split
    return tokenizer, train_ids, val_ids


def unigram_loss(train_ids: np.ndarray, target_ids: np.ndarray, vocab_size: int) -> float:
    """Cross-entropy (nats/token) on ``target_ids`` of the token frequencies of
    ``train_ids``, add-one smoothed over the vocabulary: what a model that ignores the
    context reaches. A language model that does not beat it has learnt nothing."""
    counts = np.bincount(np.asarray(train_ids), minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[np.asarray(target_ids)].mean())


@torch.no_grad()
def evaluate(model, val_ids: np.ndarray, max_tokens: Optional[int] = None, batch: int = 16,
             device: str = "cpu") -> dict:
    """Validation loss (nats/token) over non-overlapping context blocks, plus spike rates."""
    was = model.training
    model.eval()
    ctx = model.cfg.context
    ids = val_ids if max_tokens is None else val_ids[: max_tokens + 1]
    total, count = 0.0, 0
    rate_sum, rate_n = {}, {}
    for x, y in sequential_blocks(ids, ctx, batch):
        x_t = torch.as_tensor(x, device=device)
        logits, rec = model(x_t, record=True)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                               torch.as_tensor(y, device=device).reshape(-1), reduction="sum")
        total += float(loss)
        count += y.size
        for k, s in rec.items():
            if not is_spike_record(k):
                continue
            rate_sum[k] = rate_sum.get(k, 0.0) + float(s.float().mean()) * y.size
            rate_n[k] = rate_n.get(k, 0) + y.size
    model.train(was)
    val = total / max(count, 1)
    rates = {k: rate_sum[k] / rate_n[k] for k in rate_sum}
    return {"val_loss": val, "ppl": math.exp(min(val, 50)), "bpc": val / math.log(2),
            "tokens": count, "spike_rates": rates,
            "mean_spike_rate": (sum(rates.values()) / len(rates)) if rates else None}


def make_optimizer(model, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices only."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    other = [p for n, p in model.named_parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": other, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))


def attention_floor_penalty(rec: dict, floor: float, weight: float) -> torch.Tensor:
    """``weight * sum_b relu(1 - rho_b / rho_0)``, rho_b the mean spike rate of block b's
    attention population in this batch (its gradient flows through the surrogate).

    A spiking attention whose LIF stays silent carries nothing forward (ablating it
    costs nothing); the hinge pulls each silent block up to the floor ``rho_0`` and is
    zero above it, so blocks that fire are left to the cross-entropy."""
    rates = [s.mean() for k, s in rec.items() if k.endswith(".attn")]
    if not rates or floor <= 0:
        return torch.zeros(())
    return weight * sum(torch.relu(1 - r / floor) for r in rates)


def forward_backward(net, x_t: torch.Tensor, y_t: torch.Tensor, record: bool = False,
                     attention_floor: float = 0.0, attention_floor_weight: float = 0.1):
    """The gradient part of a step: forward, cross-entropy plus the attention floor
    penalty, backward (into ``.grad``), clipping to norm 1. Returns ``(loss, grad_norm,
    records)`` as tensors (``train_step`` runs it eagerly, ``GraphedStep`` captures it)."""
    want = record or attention_floor > 0
    out = net(x_t, record=want)
    logits, rec = out if want else (out, None)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y_t.reshape(-1))
    objective = loss
    if attention_floor > 0:
        objective = loss + attention_floor_penalty(rec, attention_floor,
                                                   attention_floor_weight).to(loss.device)
    objective.backward()
    return loss, torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0), rec


def train_step(net, opt, x: np.ndarray, y: np.ndarray, dist, record: bool = False,
               attention_floor: float = 0.0, attention_floor_weight: float = 0.1):
    """One optimisation step of ``net`` (a model or its DDP wrapper) on this rank's
    batch: forward (BPTT over T), cross-entropy plus, when ``attention_floor`` > 0, the
    attention floor penalty; backward (DDP averages the gradients over the ranks),
    gradient clipping to norm 1, AdamW -- unless the loss (mean over the ranks) or the
    gradient norm is not finite: then no step is taken.

    Returns ``(loss, grad_norm, records)``: the global mean cross-entropy and the
    gradient norm as floats (identical on every rank), the spike records of this rank
    if ``record``.
    """
    opt.zero_grad(set_to_none=True)
    loss, gnorm, rec = forward_backward(net, torch.as_tensor(x, device=dist.device),
                                        torch.as_tensor(y, device=dist.device), record,
                                        attention_floor, attention_floor_weight)
    loss_sum, gnorm_sum = dist.all_sum([loss, gnorm])     # gnorm is the same on every rank
    loss_g, gnorm_g = loss_sum / dist.world, gnorm_sum / dist.world
    if math.isfinite(loss_g) and math.isfinite(gnorm_g):
        opt.step()
    return loss_g, gnorm_g, rec


class GraphedStep:
    """``train_step`` with its forward, loss, backward and gradient clipping replayed as one
    CUDA graph (one CUDA device, fixed batch shape).

    A SpikeDecoder step launches thousands of small kernels (T steps of every LIF, the
    fake quantizations, the norm statistics); eager, the GPU waits on the Python that
    launches them. Captured once, the step is one launch. The first ``warmup`` calls are
    eager ``train_step`` calls on a side stream (the allocator, cuBLAS and autograd set
    up what the capture then reuses); the next call captures, and every call from then on
    copies its batch into the graph's input tensors and replays. The replay runs the same
    kernels on the same values as the eager step, so the losses are the eager ones; the
    finiteness check reads the loss and gradient norm on the host and the optimiser step
    (AdamW, learning rate from ``param_groups``) stays eager, exactly as in
    ``train_step``. The gradients live in the graph's memory: nothing may set them to
    None between replays, so this class replaces ``opt.zero_grad``, and the spike records
    it returns are overwritten by the next call."""

    def __init__(self, net, opt, dist, record: bool = False, attention_floor: float = 0.0,
                 attention_floor_weight: float = 0.1, warmup: int = 3):
        if not str(dist.device).startswith("cuda") or dist.world > 1:
            raise UserError(f"CUDA graphs need one CUDA device (this run: {dist.describe()}); "
                            "drop --cuda-graphs")
        self.net, self.opt, self.dist = net, opt, dist
        self.kw = dict(record=record, attention_floor=attention_floor,
                       attention_floor_weight=attention_floor_weight)
        self.warmup, self.calls, self.graph = warmup, 0, None
        self.stream = torch.cuda.Stream(device=dist.device)

    def __call__(self, x: np.ndarray, y: np.ndarray):
        self.calls += 1
        if self.calls <= self.warmup:
            self.stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.stream):
                out = train_step(self.net, self.opt, x, y, self.dist, **self.kw)
            torch.cuda.current_stream().wait_stream(self.stream)
            return out
        if self.graph is None:
            self.x = torch.as_tensor(x, device=self.dist.device).clone()
            self.y = torch.as_tensor(y, device=self.dist.device).clone()
            self.opt.zero_grad(set_to_none=True)     # backward allocates them in the graph
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.out = forward_backward(self.net, self.x, self.y, **self.kw)
        else:
            if tuple(x.shape) != tuple(self.x.shape):
                raise UserError(f"a CUDA-graph training step takes batches of one shape "
                                f"{tuple(self.x.shape)}, got {tuple(x.shape)}")
            self.x.copy_(torch.as_tensor(x), non_blocking=False)
            self.y.copy_(torch.as_tensor(y), non_blocking=False)
        self.graph.replay()
        loss, gnorm, rec = self.out
        loss_g, gnorm_g = float(loss.detach()), float(gnorm.detach())
        if math.isfinite(loss_g) and math.isfinite(gnorm_g):
            self.opt.step()
        return loss_g, gnorm_g, rec


def _kept(out_path: str, saved: Optional[dict]) -> str:
    if saved is not None:
        return (f"the last good checkpoint {out_path} (step {saved['steps']}, val loss "
                f"{saved['val_loss']:.4f}) is left untouched")
    if os.path.exists(out_path):
        return f"{out_path} is left as it was"
    return "no checkpoint was written"


def train(cfg: ModelConfig, args: TrainArgs, out_path: str, data_path: Optional[str] = None,
          tokenizer_kind: str = "char", resume: bool = False, command: str = "") -> dict:
    """Train ``cfg`` and keep its best-validation checkpoint at ``out_path``; in one
    process, or with DDP when launched by torchrun (module docstring). Returns the
    figures of the last evaluation (on rank 0; other ranks get the validation loss)."""
    out_dir = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(out_dir):     # found now, not at the first checkpoint
        raise UserError(f"output folder {out_dir} does not exist; create it or choose another "
                        "path")
    dist = distributed.setup(args.device)
    # an exception leaves the process group alone: the process is about to end, and a
    # collective here could wait for ranks that have stopped
    with kernels.spike_products(args.tf32, args.int8, args.bf16_grads):
        info = _train(cfg, args, out_path, data_path, tokenizer_kind, resume, command, dist)
    dist.barrier()                     # rank 0 has written the checkpoint
    dist.close()
    return info


def _train(cfg, args, out_path, data_path, tokenizer_kind, resume, command, dist) -> dict:
    tokenizer = None
    start_step, state, opt_state, best, history = 0, None, None, None, []
    if resume:
        if not os.path.exists(out_path):
            raise UserError(f"--resume: {out_path} does not exist yet; drop --resume to start")
        payload = load_raw(out_path)
        tokenizer = tokenizer_from_dict(payload["tokenizer"])
        cfg = ModelConfig.from_dict(payload["config"])
        prev = payload.get("train_info", {})
        start_step = prev.get("steps", 0)
        # the checkpoint is the best one so far: only a better validation loss replaces it
        best = prev.get("best_val_loss", prev.get("val_loss"))
        best = None if best is None else float(best)
        history = list(prev.get("history", []))
        state, opt_state = payload["state_dict"], payload.get("optimizer")
        if start_step >= args.steps:
            raise UserError(f"--resume: {out_path} is already at step {start_step}; give "
                            f"--steps above {start_step} to train on")
    tokenizer, train_ids, val_ids = prepare_data(data_path, tokenizer_kind, cfg.context, tokenizer)
    cfg.vocab_size = tokenizer.vocab_size
    torch.manual_seed(args.seed)
    model = build_model(cfg).to(dist.device)
    if state is not None:
        model.load_state_dict(state)
    net = distributed.wrap(model, dist) if dist.active else model
    opt = make_optimizer(model, args.lr, args.weight_decay)
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    rng = np.random.default_rng(args.seed + start_step)
    n_params = sum(p.numel() for p in model.parameters())
    global_batch = args.batch_size * dist.world
    unigram = unigram_loss(train_ids, val_ids[1: args.eval_tokens + 1], tokenizer.vocab_size)
    # the not-learning guard looks from a quarter of the steps on, and not during warm-up
    guard_step = max(math.ceil(args.steps / 4), min(args.warmup, args.steps))

    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        prog = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(prog, 1.0))))

    from rich.console import Console
    from rich.progress import (BarColumn, Progress, TextColumn, TimeRemainingColumn)
    console = Console(stderr=True)
    if dist.main:
        batch = (f"batch {args.batch_size} per rank x {dist.world} ranks = global batch "
                 f"{global_batch}" if dist.active else f"batch {args.batch_size}")
        console.print(f"train {cfg.kind}: {n_params:,} parameters; {dist.describe()}; {batch} "
                      f"x {cfg.context} tokens; unigram loss of the training split "
                      f"{unigram:.4f}" + (f"; resuming at step {start_step}" if resume else ""),
                      highlight=False, soft_wrap=True)
    tokens_seen, t0 = 0, time.perf_counter()
    info, saved = {}, None
    with Progress(TextColumn("[bold]train {task.fields[kind]}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"),
                  TextColumn("loss {task.fields[loss]:.3f} · {task.fields[tps]:.0f} tok/s · "
                             "spike rate {task.fields[rate]}"),
                  TimeRemainingColumn(), disable=not (args.progress and dist.main),
                  transient=False, console=console) as prog:
        task = prog.add_task("train", total=args.steps, completed=start_step, kind=cfg.kind,
                             loss=float("nan"), tps=0.0, rate="-")
        model.train()
        kw = dict(record=True, attention_floor=args.attention_floor,
                  attention_floor_weight=args.attention_floor_weight)
        step_fn = GraphedStep(net, opt, dist, **kw) if args.cuda_graphs else \
            functools.partial(train_step, net, opt, dist=dist, **kw)
        for step in range(start_step, args.steps):
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            x, y = random_batch(train_ids, global_batch, cfg.context, rng)
            x, y = distributed.shard(x, dist), distributed.shard(y, dist)
            loss, gnorm, rec = step_fn(x, y)
            if not (math.isfinite(loss) and math.isfinite(gnorm)):
                bad = [f"the {what} is {v}" for what, v in (("training loss", loss),
                                                            ("gradient norm", gnorm))
                       if not math.isfinite(v)]
                raise UserError(
                    f"step {step + 1}: {' and '.join(bad)}, not a finite number; training "
                    f"stopped before this step changed the weights, and "
                    f"{_kept(out_path, saved)}. Try a lower --lr (now {args.lr:g}), fewer "
                    "--layers, or check the data")
            tokens_seen += global_batch * cfg.context
            rate = ("%.3f" % float(np.mean([float(s.detach().float().mean())
                                             for k, s in rec.items() if is_spike_record(k)]))
                    if rec and dist.main else "-")
            tps = tokens_seen / (time.perf_counter() - t0)
            prog.update(task, advance=1, loss=loss, tps=tps, rate=rate)
            last = step + 1 == args.steps
            if not ((step + 1) % args.eval_interval == 0 or last):
                continue
            ev = evaluate(model, val_ids, args.eval_tokens, device=dist.device) if dist.main \
                else None
            (val,) = dist.from_main([ev["val_loss"] if ev else 0.0])
            if not math.isfinite(val):
                raise UserError(
                    f"step {step + 1}: the validation loss is {val}, not a finite number; "
                    f"training stopped and {_kept(out_path, saved)}. Try a lower --lr "
                    f"(now {args.lr:g}), fewer --layers, or check the data")
            improved = best is None or val < best
            best = val if improved else best
            if args.learning_guard and step + 1 >= guard_step and best >= unigram:
                raise UserError(
                    f"not learning: at step {step + 1} of {args.steps} the validation loss is "
                    f"{val:.4f} (best {best:.4f}), still at or above the unigram loss "
                    f"{unigram:.4f} of the training split (token frequencies alone); "
                    f"stopped: {_kept(out_path, saved)}. Try a "
                    f"lower --lr (now {args.lr:g}), fewer --layers, or check the data; "
                    "--no-learning-guard turns this check off")
            # a checkpoint no better than the unigram model is not worth keeping
            write = improved and (not args.learning_guard or val < unigram)
            if not dist.main:
                info = {"steps": step + 1, "val_loss": val}
                continue
            history.append({"step": step + 1, "train_loss": loss, "val_loss": val})
            prog.console.print(f"step {step + 1}: train {loss:.4f} val {val:.4f} "
                               f"(bpc {ev['bpc']:.3f})", highlight=False)
            info = {"steps": step + 1, "seed": args.seed, "val_loss": val,
                    "best_val_loss": best, "bpc": ev["bpc"], "params": n_params,
                    "tokens_per_s": tps, "history": history, "command": command,
                    "device": args.device, "world_size": dist.world,
                    "backend": dist.backend, "batch_size": args.batch_size,
                    "global_batch": global_batch, "unigram_loss": unigram,
                    "mean_spike_rate": ev["mean_spike_rate"], "lr": args.lr,
                    "attention_floor": args.attention_floor,
                    "attention_floor_weight": args.attention_floor_weight,
                    "spike_products": kernels.describe_products()}
            if write:      # keep the best validation checkpoint (early stopping)
                save_checkpoint(out_path, model, tokenizer, info, opt)
                saved = info
    if dist.main and saved is None and resume:
        console.print(f"no evaluation beat the best validation loss {best:.4f} of {out_path}; "
                      "the checkpoint is left as it was", highlight=False)
    return info
