"""GPU reference: joules per generated token of the ANN twin and the torch SNN (NVML).

    python -m snn_compile.benchmarks.gpu_energy [--ckpt SNN] [--ann-ckpt ANN]
        [--tokens N] [--batch B] [--random-init] [--out FILE]

Reads the GPU's total-energy counter (NVML ``nvmlDeviceGetTotalEnergyConsumption``,
millijoules since the driver loaded) through the ``pynvml`` module of
``nvidia-ml-py`` when it imports; otherwise it integrates
``nvidia-smi --query-gpu=power.draw`` sampled every 50 ms. The output's
``method`` says which one was used.

Protocol: idle power is measured first (GPU allocated, nothing running, 5 s);
then for each model one warm-up generation, then generations of N new tokens
for B sequences in parallel (greedy, prompt = one token, the full context re-run
for every token, nanoGPT-style, windows of the model's context), repeated until
``--min-seconds`` have passed. ``net = counter delta - idle W x seconds``;
joules per token = net / tokens. At batch 1 a model this small leaves the GPU
launch-bound: its draw stays at idle and the net figure is within the noise
(``net_below_idle`` says so); the gross figure is then the cost of holding the GPU.
Imports only torch and snn_compile.models (no Lava), so it runs where
only PyTorch is installed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from typing import Callable, Optional

from snn_compile.errors import atomic_path, exits_on_user_error
from snn_compile.models.checkpoint import build_model, load_checkpoint
from snn_compile.models.config import ModelConfig


class EnergyMeter:
    """Cumulative GPU energy in joules, from NVML or from sampled nvidia-smi power."""

    def __init__(self, index: int = 0):
        self.method = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._h = pynvml.nvmlDeviceGetHandleByIndex(index)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(self._h)     # raises if unsupported
            self._nv = pynvml
            self.method = "nvml.nvmlDeviceGetTotalEnergyConsumption"
            self.name = pynvml.nvmlDeviceGetName(self._h)
            self.name = self.name.decode() if isinstance(self.name, bytes) else self.name
        except Exception:
            if shutil.which("nvidia-smi") is None:
                raise SystemExit("gpu_energy: no NVIDIA GPU found (neither NVML via pynvml nor "
                                 "nvidia-smi is available); run this on a machine with an "
                                 "NVIDIA GPU")
            self.method = "nvidia-smi power.draw sampled every 50 ms, integrated"
            self.name = self._smi("name")
            self._index = index
            self._joules = 0.0
            self._lock = threading.Lock()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def _smi(self, field: str) -> str:
        return subprocess.check_output(
            ["nvidia-smi", f"--id={getattr(self, '_index', 0)}", f"--query-gpu={field}",
             "--format=csv,noheader,nounits"], text=True).strip()

    def _sample(self):
        last = time.perf_counter()
        while not self._stop.is_set():
            w = float(self._smi("power.draw"))
            now = time.perf_counter()
            with self._lock:
                self._joules += w * (now - last)
            last = now
            time.sleep(0.05)

    def joules(self) -> float:
        if self.method.startswith("nvml"):
            return self._nv.nvmlDeviceGetTotalEnergyConsumption(self._h) / 1000.0
        with self._lock:
            return self._joules


def measure(meter: EnergyMeter, fn: Callable[[], None], sync: Callable[[], None]) -> dict:
    """Energy (J) and wall time (s) of ``fn()``, the GPU synchronised at both ends."""
    sync()
    e0, t0 = meter.joules(), time.perf_counter()
    fn()
    sync()
    e1, t1 = meter.joules(), time.perf_counter()
    return {"joules": e1 - e0, "seconds": t1 - t0}


def _generate(model, ctx: int, vocab: int, n: int, batch: int, device) -> None:
    """Greedy generation of n tokens for a batch, re-running the window each token."""
    import torch

    idx = torch.zeros((batch, 1), dtype=torch.long, device=device)
    with torch.no_grad():
        for _ in range(n):
            logits = _logits(model, idx[:, -ctx:])
            nxt = logits[:, -1, :vocab].argmax(-1, keepdim=True)
            idx = torch.cat([idx, nxt], dim=1)


def _logits(model, idx):
    out = model(idx)
    if isinstance(out, (tuple, list)):
        out = out[0]
    if isinstance(out, dict):
        out = out["logits"]
    return out


def _load(spec: Optional[str], kind: str, random_init: bool, device):
    """A model from a checkpoint, or freshly initialised at the default size."""

    if random_init:
        model = build_model(ModelConfig(kind=kind))
    else:
        model, _, _ = load_checkpoint(spec)
    return model.to(device).eval()


@exits_on_user_error
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m snn_compile.benchmarks.gpu_energy",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", default="default:spikedecoder", help="spiking decoder checkpoint")
    ap.add_argument("--ann-ckpt", default="default:ann", help="ANN twin checkpoint")
    ap.add_argument("--random-init", action="store_true",
                    help="use randomly initialised models of the default size (no checkpoints)")
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--idle-seconds", type=float, default=5.0)
    ap.add_argument("--min-seconds", type=float, default=10.0,
                    help="repeat the generation until at least this long has been measured, "
                         "so the energy counter's resolution does not matter (default: 10)")
    ap.add_argument("--out", help="write the JSON result here (atomically)")
    a = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        raise SystemExit("gpu_energy: PyTorch is not installed")
    if not torch.cuda.is_available():
        raise SystemExit("gpu_energy: no CUDA GPU visible to PyTorch; run this on a machine "
                         "with an NVIDIA GPU")
    meter = EnergyMeter(0)
    dev = torch.device("cuda")
    sync = torch.cuda.synchronize
    torch.ones(1, device=dev)                       # create the context before idle
    idle = measure(meter, lambda: time.sleep(a.idle_seconds), sync)
    idle_w = idle["joules"] / idle["seconds"]
    res = {"device": meter.name, "method": meter.method, "idle_watts": idle_w,
           "idle_seconds": idle["seconds"], "tokens": a.tokens, "batch": a.batch,
           "weights": "random init, default size" if a.random_init else "checkpoints",
           "torch": torch.__version__, "models": {}}
    for name, spec, kind in (("ann", a.ann_ckpt, "ann"), ("spikedecoder", a.ckpt, "spikedecoder")):
        model = _load(spec, kind, a.random_init, dev)
        ctx, vocab = model.cfg.context, model.cfg.vocab_size
        _generate(model, ctx, vocab, min(8, a.tokens), a.batch, dev)   # warm-up
        reps = [0]

        def work(model=model):      # whole generations until min_seconds have passed
            t0 = time.perf_counter()
            while reps[0] == 0 or time.perf_counter() - t0 < a.min_seconds:
                _generate(model, ctx, vocab, a.tokens, a.batch, dev)
                reps[0] += 1

        m = measure(meter, work, sync)
        ntok = a.tokens * a.batch * reps[0]
        net = m["joules"] - idle_w * m["seconds"]
        res["models"][name] = {
            "gross_joules": m["joules"], "seconds": m["seconds"], "net_joules": net,
            "generations": reps[0], "tokens_generated": ntok,
            "joules_per_token": net / ntok, "gross_joules_per_token": m["joules"] / ntok,
            "net_below_idle": net <= 0,
            "tokens_per_s": ntok / m["seconds"],
            "params": int(sum(p.numel() for p in model.parameters())),
            "context": ctx}
        del model
        torch.cuda.empty_cache()
    text = json.dumps(res, indent=1)
    print(text)
    if a.out:
        with atomic_path(a.out) as tmp, open(tmp, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
