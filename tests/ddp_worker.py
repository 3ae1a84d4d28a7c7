"""Run by tests/test_ddp.py under ``torchrun --nproc_per_node 2`` (gloo, CPU).

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_worker.py OUT CORPUS

Joins one process group and calls ``train`` several times inside it (the group is
reused, so one launch serves every case):

- one step of each model with 2 ranks x batch 4 -> OUT/step_{kind}.pt, twice
  (OUT/step_{kind}_again.pt: the same seed and world size give the same result);
- a 30-step SpikeDecoder run -> OUT/run.pt (copied to OUT/run30.pt), then
  ``resume=True`` up to 45 steps -> OUT/run.pt;
- the worker of the scaling benchmark on tiny models -> OUT/bench_w2.json.
"""

from __future__ import annotations

import os
import shutil
import sys

import torch

from snn_compile.benchmarks import train_scaling
from snn_compile.models.config import ModelConfig
from snn_compile.models.train import TrainArgs, train

TINY = dict(d_model=16, n_layers=1, n_heads=2, context=16, timesteps=2)
STEP_ARGS = dict(steps=1, batch_size=4, lr=1e-2, warmup=1, eval_interval=1, eval_tokens=256,
                 progress=False, learning_guard=False)
BENCH_ARGS = ["--models", "spikedecoder", "ann", "--batch-size", "2", "--steps", "2",
              "--warmup", "1", "--rounds", "1", "--d-model", "16", "--layers", "1",
              "--context", "16", "--timesteps", "2"]
RUN_ARGS = dict(batch_size=4, lr=1e-2, warmup=5, eval_interval=10, eval_tokens=512,
                progress=False)


def main(out: str, corpus: str) -> None:
    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    for kind in ("spikedecoder", "ann"):
        for name in (f"step_{kind}", f"step_{kind}_again"):
            train(ModelConfig(kind=kind, **TINY), TrainArgs(**STEP_ARGS),
                  os.path.join(out, f"{name}.pt"), corpus)
    path = os.path.join(out, "run.pt")
    train(ModelConfig(kind="spikedecoder", **TINY), TrainArgs(steps=30, **RUN_ARGS), path, corpus)
    if rank == 0:                 # train returns on every rank once the checkpoint is written
        shutil.copy(path, os.path.join(out, "run30.pt"))
    torch.distributed.barrier()
    train(ModelConfig(kind="spikedecoder", **TINY), TrainArgs(steps=45, **RUN_ARGS), path,
          corpus, resume=True)
    train_scaling.main(["--worker", os.path.join(out, "bench_w2.json"), *BENCH_ARGS])
    torch.distributed.destroy_process_group()   # only on success: see Dist.close

if __name__ == "__main__":
    main(*sys.argv[1:3])
