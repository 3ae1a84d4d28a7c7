"""Training and evaluation loops (BPTT through the T steps, surrogate gradients).

Deterministic for a fixed seed on CPU: the batches come from a seeded numpy
Generator and torch's RNG is seeded before the model is built.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from snn_compile.data import (check_corpus_length, load_corpus, make_tokenizer, random_batch,
                              sequential_blocks, train_val_split)
from snn_compile.errors import UserError
from snn_compile.models.checkpoint import build_model, load_raw, save_checkpoint
from snn_compile.models.config import ModelConfig
from snn_compile.models.spikedecoder import is_spike_record


@dataclass
class TrainArgs:
    steps: int = 2000
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup: int = 100
    eval_interval: int = 250
    eval_tokens: int = 16384
    seed: int = 0
    device: str = "cpu"
    progress: bool = True


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


def train(cfg: ModelConfig, args: TrainArgs, out_path: str, data_path: Optional[str] = None,
          tokenizer_kind: str = "char", resume: bool = False, command: str = "") -> dict:
    tokenizer = None
    start_step, state, opt_state = 0, None, None
    if resume:
        if not os.path.exists(out_path):
            raise UserError(f"--resume: {out_path} does not exist yet; drop --resume to start")
        payload = load_raw(out_path)
        from snn_compile.data import tokenizer_from_dict
        tokenizer = tokenizer_from_dict(payload["tokenizer"])
        cfg = ModelConfig.from_dict(payload["config"])
        start_step = payload["train_info"].get("steps", 0)
        state, opt_state = payload["state_dict"], payload.get("optimizer")
    tokenizer, train_ids, val_ids = prepare_data(data_path, tokenizer_kind, cfg.context, tokenizer)
    cfg.vocab_size = tokenizer.vocab_size
    torch.manual_seed(args.seed)
    model = build_model(cfg).to(args.device)
    if state is not None:
        model.load_state_dict(state)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    other = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=args.lr,
                            betas=(0.9, 0.95))
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    rng = np.random.default_rng(args.seed + start_step)
    n_params = sum(p.numel() for p in model.parameters())

    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        prog = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(prog, 1.0))))

    from rich.console import Console
    from rich.progress import (BarColumn, Progress, TextColumn, TimeRemainingColumn)
    history, best = [], None
    tokens_seen, t0 = 0, time.perf_counter()
    info = {}
    with Progress(TextColumn("[bold]train {task.fields[kind]}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"),
                  TextColumn("loss {task.fields[loss]:.3f} · {task.fields[tps]:.0f} tok/s · "
                             "spike rate {task.fields[rate]}"),
                  TimeRemainingColumn(), disable=not args.progress, transient=False,
                  console=Console(stderr=True)) as prog:
        task = prog.add_task("train", total=args.steps, completed=start_step, kind=cfg.kind,
                             loss=float("nan"), tps=0.0, rate="-")
        model.train()
        for step in range(start_step, args.steps):
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            x, y = random_batch(train_ids, args.batch_size, cfg.context, rng)
            x_t = torch.as_tensor(x, device=args.device)
            y_t = torch.as_tensor(y, device=args.device)
            logits, rec = model(x_t, record=True)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y_t.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            tokens_seen += x.size
            rate = ("%.3f" % float(np.mean([float(s.detach().float().mean())
                                             for k, s in rec.items() if is_spike_record(k)]))
                    if rec else "-")
            tps = tokens_seen / (time.perf_counter() - t0)
            prog.update(task, advance=1, loss=float(loss.detach()), tps=tps, rate=rate)
            last = step + 1 == args.steps
            if (step + 1) % args.eval_interval == 0 or last:
                ev = evaluate(model, val_ids, args.eval_tokens, device=args.device)
                history.append({"step": step + 1, "train_loss": float(loss.detach()),
                                "val_loss": ev["val_loss"]})
                prog.console.print(f"step {step + 1}: train {float(loss.detach()):.4f} "
                                   f"val {ev['val_loss']:.4f} (bpc {ev['bpc']:.3f})")
                improved = best is None or ev["val_loss"] < best
                best = ev["val_loss"] if improved else best
                info = {"steps": step + 1, "seed": args.seed, "val_loss": ev["val_loss"],
                        "bpc": ev["bpc"], "params": n_params, "tokens_per_s": tps,
                        "history": history, "command": command, "device": args.device,
                        "mean_spike_rate": ev["mean_spike_rate"]}
                if improved:      # keep the best validation checkpoint (early stopping)
                    save_checkpoint(out_path, model.cpu(), tokenizer, info, opt)
                    model.to(args.device)
    return info
