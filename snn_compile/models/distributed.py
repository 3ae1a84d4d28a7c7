"""Data-parallel training under ``torchrun``: PyTorch DistributedDataParallel (DDP).

``torchrun --standalone --nproc_per_node W -m snn_compile.cli.main train ...`` (or
``snn-compile train --nproc W ...``, which runs that) starts W processes; each
builds the same model, joins one process group (NCCL with ``--device cuda``, one
GPU per process, ``cuda:LOCAL_RANK``; gloo on the CPU) and wraps the model in DDP,
which averages the gradients of every step over the processes.

Batches: every rank draws the same *global* batch of ``W x B`` windows from the
same seeded generator and keeps rows ``[rank B, (rank + 1) B)``, ``B`` being
``--batch-size`` (the per-rank batch). So a run of W ranks sees exactly the data
of a single-process run with batch ``W B``, and one DDP step equals one such step:

    grad = 1/W sum_r grad L_r,   L_r = mean cross-entropy of rank r's B windows
         = grad of the mean cross-entropy over all W B windows.

The SpikeDecoder's membrane norms scale by the batch RMS of their input current in
training; under DDP their mean squares are averaged over the ranks before use
(``SyncMembraneNorm``, as ``SyncBatchNorm`` does for BatchNorm), so that equality
holds for them too. The BatchNorm and centred norms of partial models keep per-rank
statistics (PyTorch's default for BatchNorm under DDP).

Rank 0 alone evaluates, logs and writes checkpoints; decisions taken from its
evaluation (keep the checkpoint, stop) are broadcast so that every rank takes them.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch

from snn_compile.errors import UserError
from snn_compile.models.spikedecoder import MembraneNorm

# NVLink multicast (NVLS) off by default, for the machines this was written for
NCCL_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1"}


def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def env_rank() -> int:
    """This process's rank from the environment (0 outside torchrun)."""
    return int(os.environ.get("RANK", "0"))


@dataclass
class Dist:
    """Where this process stands: rank, world size, backend and its torch device."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: Optional[str] = None      # None: a single process, no process group
    device: str = "cpu"
    owns_group: bool = False           # this module made the group (and destroys it)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.backend is not None

    def describe(self) -> str:
        if not self.active:
            return f"single process (world size 1) on {self.device}"
        return (f"DistributedDataParallel, world size {self.world}, backend {self.backend}, "
                f"rank 0 on {self.device}")

    # --- collectives (no-ops in a single process) ---------------------------------
    def all_sum(self, values: Sequence[torch.Tensor]) -> List[float]:
        """Sum of each scalar over the ranks, as Python floats (one all-reduce)."""
        t = torch.stack([v.detach().float().reshape(()) for v in values]).to(self.device)
        if self.active:
            torch.distributed.all_reduce(t)
        return t.tolist()

    def from_main(self, values: Sequence[float]) -> List[float]:
        """Rank 0's ``values`` on every rank (one broadcast)."""
        if not self.active:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        torch.distributed.broadcast(t, 0)
        return t.tolist()

    def barrier(self) -> None:
        if self.active:
            if self.backend == "nccl":
                torch.distributed.barrier(device_ids=[self.local_rank])
            else:
                torch.distributed.barrier()

    def close(self) -> None:
        """Destroy the process group if ``setup`` made it (call on every rank together:
        destroying it while another rank still works can hang with gloo)."""
        if self.owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
            self.owns_group = False


def setup(device: str = "cpu") -> Dist:
    """Join torchrun's process group if this process was launched by torchrun.

    ``device`` is ``cpu`` or ``cuda``; under torchrun ``cuda`` becomes this process's
    own GPU, ``cuda:LOCAL_RANK``. A process group that already exists is used as it
    is (and left open).
    """
    dist = torch.distributed
    if not (launched_by_torchrun() or (dist.is_available() and dist.is_initialized())):
        return Dist(device=device)
    if not dist.is_available():
        raise UserError("this PyTorch build has no torch.distributed; train in one process "
                        "(without torchrun)")
    owns = not dist.is_initialized()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        n = torch.cuda.device_count()
        if local_rank >= n:
            raise UserError(f"torchrun started local rank {local_rank} but only {n} GPU(s) are "
                            f"visible; use --nproc_per_node {n} (or --nproc {n}) at most")
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    if owns:
        backend = "nccl" if device.startswith("cuda") else "gloo"
        for k, v in NCCL_ENV.items():
            os.environ.setdefault(k, v)
        if backend == "nccl":
            dist.init_process_group(backend, device_id=torch.device(device))
        else:
            dist.init_process_group(backend)
    backend = dist.get_backend()
    if backend == "nccl" and not device.startswith("cuda"):
        raise UserError("the process group uses NCCL, which needs GPUs: train with "
                        "--device cuda, or start the group with gloo")
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank,
                backend=backend, device=device, owns_group=owns)


def shard(batch_rows, d: Dist):
    """Rows ``[rank B, (rank + 1) B)`` of a global batch of ``world B`` rows."""
    n = batch_rows.shape[0]
    if n % d.world:
        raise ValueError(f"global batch of {n} rows does not split over {d.world} ranks")
    b = n // d.world
    return batch_rows[d.rank * b:(d.rank + 1) * b]


class SyncMembraneNorm(MembraneNorm):
    """MembraneNorm whose training statistic, the per-channel mean square of the input
    current, is averaged over the ranks: with equal per-rank batches this is the mean
    square over the global batch. Same parameters and buffers as MembraneNorm (the
    checkpoint does not change); eval mode (running statistics) is MembraneNorm's."""

    def scale(self, raw_current) -> torch.Tensor:
        if not (self.training and raw_current is not None):
            return super().scale(raw_current)
        ms = self.batch_mean_square(raw_current).clone()
        torch.distributed.all_reduce(ms)
        ms = ms / torch.distributed.get_world_size()
        with torch.no_grad():
            self.running_ms.mul_(1 - self.momentum).add_(self.momentum * ms)
        return self.gamma / torch.sqrt(ms + self.eps)


def sync_membrane_norms(model: torch.nn.Module) -> int:
    """Make every plain MembraneNorm of ``model`` a SyncMembraneNorm (in place; subclasses
    such as partial models' centred norms are left alone). Returns how many."""
    n = 0
    for m in model.modules():
        if type(m) is MembraneNorm:
            m.__class__ = SyncMembraneNorm
            n += 1
    return n


def wrap(model: torch.nn.Module, d: Dist) -> torch.nn.Module:
    """The module to train: ``model`` itself in one process, else DDP around it (with
    synchronised membrane norms). ``static_graph``: every step uses the same parameters
    (a few, like an unused decay of the temporal embedding, never get a gradient)."""
    if not d.active:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP
    sync_membrane_norms(model)
    if d.device.startswith("cuda"):
        return DDP(model, device_ids=[d.local_rank], output_device=d.local_rank,
                   static_graph=True)
    return DDP(model, static_graph=True)


# --- `snn-compile train --nproc N`: start torchrun on this machine --------------------------
def strip_option(argv: Sequence[str], name: str) -> List[str]:
    """``argv`` without ``name VALUE`` / ``name=VALUE`` (which must be there)."""
    out, skip, found = [], False, False
    for a in argv:
        if skip:
            skip = False
        elif a == name or a.startswith(name + "="):
            skip, found = a == name, True
        else:
            out.append(a)
    if not found:
        raise UserError(f"{name} works on the command line (sys.argv); from Python, run "
                        "torch.distributed.run yourself")
    return out


def launch(nproc: int, argv: Sequence[str], device: str = "cpu") -> int:
    """Run ``torchrun --standalone --nproc_per_node nproc -m snn_compile.cli.main ARGV`` in
    this process (torch.distributed.run's own code); returns the exit status of the first
    failed worker, 0 if all succeeded."""
    if nproc < 1:
        raise UserError(f"--nproc must be at least 1, got {nproc}")
    if launched_by_torchrun():
        raise UserError("--nproc starts torchrun itself; under torchrun leave --nproc out")
    if device == "cuda" and nproc > torch.cuda.device_count():
        raise UserError(f"--nproc {nproc} with --device cuda needs {nproc} GPUs, "
                        f"{torch.cuda.device_count()} visible; use --nproc "
                        f"{torch.cuda.device_count()} or fewer")
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    for k, v in NCCL_ENV.items():
        os.environ.setdefault(k, v)
    # torchrun would set 1 and warn; share this machine's cores between the processes
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    # a worker's own error is on stderr already; the agent's log lines would repeat it
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("torch.distributed.elastic", "torch.distributed.run")):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    targs = parse_args(["--standalone", "--nproc_per_node", str(nproc), "-m",
                        "snn_compile.cli.main", *argv])
    try:
        run(targs)
    except ChildFailedError as e:
        codes = [f.exitcode for _, f in sorted(e.failures.items())]
        code = next((c for c in codes if c), 1)
        if code != 2:                    # 2: a UserError, which rank 0 has printed
            print(f"error: a training process failed (exit status {code}); see its output "
                  "above", file=sys.stderr)
        return code if 0 < code < 256 else 1
    sys.stdout.flush()
    return 0
