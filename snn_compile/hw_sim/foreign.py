"""Foreign graphs (standard NIR nodes, compiled by ``compiler.quantize_foreign``) on the
integer backends: one *sample* = one window of ``S`` steps from rest.

Input: spike trains ``{input name: (S, B, size)}`` (0/1), one column per sample. Output:
the NIR Output node's values in NIR time, ``(S, B, size)`` float64 — the readout
population's output at step ``t`` (spikes, or ``logit_scale`` times a graded value),
the pipeline latency of the lowered graph (``depth(readout)`` global steps) removed —
and every population's token-time outputs ``(B, 1, S, size)`` int64 (one "token" per
sample), from which ``benchmarks`` counts spikes and synaptic operations.

Backends: ``int`` (the token-time integer reference, ``hw_sim.int_reference``),
``emulator`` (global time, as Lava runs it), ``lava-sim`` / ``loihi2`` (Lava; one
window per sample, the network's state cleared between samples). All three give the
same integers; ``run_samples(..., check=True)`` asserts it against the reference.
"""

from __future__ import annotations

from typing import Dict

import numpy as np
import torch

from snn_compile.compiler.qgraph import QGraph
from snn_compile.compiler.quantize_foreign import BIAS
from snn_compile.errors import UserError
from snn_compile.hw_sim.emulator import Emulator
from snn_compile.hw_sim.int_reference import plan_graph, run_frames
from snn_compile.hw_sim.lava_runner import LavaSession

BACKENDS = ("int", "emulator", "lava-sim", "loihi2")


def frames_of(qgraph: QGraph, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Frames ``{input: (B, 1, S, size)}`` of the integer backends from (S, B, size) spikes
    (the bias input held at 1 where the graph has one); bad input is a ``UserError``."""
    frames = {}
    S = qgraph.steps_per_token
    B = next(iter(inputs.values())).shape[1]
    for name in qgraph.inputs:
        if name == BIAS:
            frames[name] = torch.ones(B, 1, S, 1, dtype=torch.int64)
            continue
        if name not in inputs:
            raise UserError(f"no spikes given for input {name!r} (inputs: "
                            f"{', '.join(n for n in qgraph.inputs if n != BIAS)})")
        x = torch.as_tensor(inputs[name])
        if x.shape[0] != S:
            raise UserError(f"input {name}: {x.shape[0]} steps given, the graph was compiled "
                            f"for {S} (--steps)")
        if x.shape[-1] != qgraph.pop(name).size:
            raise UserError(f"input {name}: {x.shape[-1]} values per step, the graph takes "
                            f"{qgraph.pop(name).size}")
        if not torch.all((x == 0) | (x == 1)):
            raise UserError(f"input {name} is not binary: Loihi 2 inputs are spikes (0/1); "
                            "encode real values as spikes first (e.g. rate coding: "
                            "x_spike = rand < x), or run the float graph with --backend nir")
        frames[name] = x.to(torch.int64).permute(1, 0, 2)[:, None]
    return frames


def run_samples(qgraph: QGraph, inputs: Dict[str, torch.Tensor], backend: str = "int",
                progress=None, check: bool = False) -> dict:
    """Run B samples; returns ``{"output": (S, B, V) float64, "outputs": {population:
    (B, 1, S, size) int64}, "reference_equal": bool | None}``.

    ``check``: also run the integer reference and compare every population's output
    spike for spike (``reference_equal``; a difference is a bug and raises).
    """

    if backend not in BACKENDS:
        raise UserError(f"backend {backend!r} cannot run a compiled graph; choose one of "
                        f"{', '.join(BACKENDS)} (or nir for the float interpreter)")
    frames = frames_of(qgraph, inputs)
    B = next(iter(frames.values())).shape[0]
    ref = None
    if backend == "int" or check:
        ref = {k: v.cpu().numpy() for k, v in
               run_frames(plan_graph(qgraph), frames).outputs.items()}
    if backend == "int":
        outs = ref
    elif backend == "emulator":
        emu = Emulator(qgraph, batch=B)
        outs = {k: v.cpu().numpy() for k, v in emu.run_sequence(None, frames=frames).outputs.items()}
    else:
        outs = _lava(qgraph, frames, hardware=backend == "loihi2", progress=progress)
    equal = None
    if check and backend != "int":
        bad = [n for n in qgraph.populations if not np.array_equal(outs[n], ref[n])]
        if bad:
            raise RuntimeError(f"{backend} differs from the integer reference on populations "
                               f"{', '.join(bad)}; please report this")
        equal = True
    ro = outs[qgraph.readout][:, 0].astype(np.float64) * qgraph.logit_scale   # (B, S, V)
    return {"output": np.ascontiguousarray(ro.transpose(1, 0, 2)), "outputs": outs,
            "reference_equal": equal}


def _lava(qgraph: QGraph, frames: Dict[str, torch.Tensor], hardware: bool = False,
          progress=None) -> Dict[str, np.ndarray]:
    """Token-time outputs (B, 1, S, size) of every population, one Lava window per sample."""
    import sys


    B = next(iter(frames.values())).shape[0]
    print(f"starting Lava ({'loihi2' if hardware else 'lava-sim'}): building and compiling "
          "the process graph ...", file=sys.stderr, flush=True)
    per: Dict[str, list] = {}
    with LavaSession(qgraph, probe=True, hardware=hardware) as sess:
        for b in range(B):
            if b:
                sess.reset()
            got = sess.feed_frames({k: v[b, 0].numpy() for k, v in frames.items()})
            for name, arr in got.outputs.items():
                per.setdefault(name, []).append(arr)
            if progress is not None:
                progress(b + 1, B)
    return {k: np.stack(v)[:, None] for k, v in per.items()}


def output_spike_counts(output: np.ndarray) -> np.ndarray:
    """(S, B, V) Output values → (B, V) sums over the steps (spike counts of a spiking
    readout), the score by which ``evaluate`` classifies."""
    return np.asarray(output).sum(axis=0)


def check_labels(labels, samples: int, classes: int) -> np.ndarray:
    """Integer labels (B,) in 0..classes-1, or one UserError naming the problem."""
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] == classes and np.isin(y, (0, 1)).all() \
            and (y.sum(axis=1) == 1).all():
        y = y.argmax(axis=1)          # one-hot labels
    y = y.reshape(-1) if y.ndim > 1 and y.size == samples else y
    if y.ndim != 1 or y.shape[0] != samples:
        raise UserError(f"labels: shape {tuple(np.shape(labels))}, expected ({samples},) — one "
                        "integer class per sample of the input")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.rint(y)):
            raise UserError("labels must be integer class indices")
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        raise UserError(f"labels must be integer class indices, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= classes):
        raise UserError(f"labels must lie in 0..{classes - 1} (the graph has {classes} outputs), "
                        f"got {int(y.min())}..{int(y.max())}")
    return y.astype(np.int64)


def accuracy(output: np.ndarray, labels: np.ndarray) -> dict:
    """Classification by output spike count: ``argmax_v sum_t out[t, b, v]`` (ties: the
    lowest index, as ``numpy.argmax``)."""
    counts = output_spike_counts(output)
    pred = counts.argmax(axis=1)
    correct = int((pred == labels).sum())
    return {"accuracy": correct / max(len(labels), 1), "correct": correct,
            "samples": int(len(labels)), "predictions": pred.tolist(),
            "silent_samples": int((counts.sum(axis=1) == 0).sum())}

