"""Training throughput of the SpikeDecoder and its ANN twin, measured in one run.

    python -m snn_compile.benchmarks.train_speed [--device cuda] [--steps 50]
        [--batch-size 64] [--json]

Both models at the shipped size (d_model 64, 2 layers, 4 heads, context 128,
T = 4 for the SNN) take the same optimisation step as ``snn-compile train``
(forward with BPTT over T, cross-entropy, backward, gradient clipping, AdamW;
without the progress bar's spike-rate read-out) on the same random batches of
the embedded corpus. Each model gets warm-up
steps first, then ``--steps`` timed steps, the device synchronised at both
ends; the models alternate ``--rounds`` times and the median is reported, so
the ratio SNN cost / ANN cost comes from one run on one machine. Imports no
Lava, so it runs where only PyTorch is installed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Optional, Sequence

import numpy as np

from snn_compile.errors import exits_on_user_error


def _step_fn(model, device):
    import torch
    import torch.nn.functional as F

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))

    def step(x, y):
        logits = model(torch.as_tensor(x, device=device))
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                               torch.as_tensor(y, device=device).reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return step


def run(device: str = "cpu", steps: int = 20, warmup: int = 3, rounds: int = 3,
        batch_size: int = 64, context: int = 128, seed: int = 0) -> dict:
    import torch

    from snn_compile.data.batching import random_batch
    from snn_compile.models.checkpoint import build_model
    from snn_compile.models.config import ModelConfig
    from snn_compile.models.train import prepare_data

    if device == "cuda" and not torch.cuda.is_available():
        from snn_compile.errors import UserError
        raise UserError("--device cuda: no CUDA GPU is visible; use --device cpu")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    tok, train_ids, _ = prepare_data(None, "char", context)
    rng = np.random.default_rng(seed)
    batches = [random_batch(train_ids, batch_size, context, rng) for _ in range(steps)]
    torch.manual_seed(seed)
    models = {kind: build_model(ModelConfig(kind=kind, vocab_size=tok.vocab_size,
                                            context=context)).to(device).train()
              for kind in ("spikedecoder", "ann")}
    fns = {k: _step_fn(m, device) for k, m in models.items()}
    for fn in fns.values():
        for x, y in batches[:warmup]:
            fn(x, y)
    sync()
    rates = {k: [] for k in fns}
    for _ in range(rounds):
        for kind, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            for x, y in batches:
                fn(x, y)
            sync()
            rates[kind].append(steps * batch_size * context / (time.perf_counter() - t0))
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "torch": torch.__version__, "batch_size": batch_size, "context": context,
            "steps_timed": steps, "rounds": rounds,
            "tokens_per_s": med, "all_rounds_tokens_per_s": rates,
            "snn_cost_over_ann": med["ann"] / med["spikedecoder"]}


@exits_on_user_error
def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m snn_compile.benchmarks.train_speed",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per round and model")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; median reported")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args(argv)
    r = run(a.device, a.steps, rounds=a.rounds, batch_size=a.batch_size)
    if a.json:
        print(json.dumps(r, indent=1))
        return 0
    print(f"training throughput on {r['device']} (batch {r['batch_size']} x context "
          f"{r['context']}, median of {r['rounds']} rounds of {r['steps_timed']} steps)")
    for k, v in r["tokens_per_s"].items():
        print(f"  {k:<13} {v:12,.0f} tokens/s")
    print(f"  SpikeDecoder cost / ANN twin cost: {r['snn_cost_over_ann']:.1f} x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
