"""Verification of a compiled graph against what it was compiled from: a stage of its own,
after the compiler and the executors it runs.

* ``calibration_headroom``: the integer reference runs the calibration text and
  ``compiler.resources`` divides the exact maxima by Loihi 2's limits (the check
  ``compile`` refuses a saturating graph with);
* ``compare_float_int``: a foreign graph's float NIR interpreter against the integer
  reference, per spiking node, and (optionally) Lava against the integer reference spike
  for spike.
"""

from __future__ import annotations

from typing import Dict

import numpy as np
import torch

from snn_compile.compiler.pipeline import CALIBRATION_TOKENS, calibration_tokens
from snn_compile.compiler.qgraph import QGraph
from snn_compile.compiler.quantize_foreign import plan_foreign
from snn_compile.compiler.resources import (headroom, measured_ranges, range_report,
                                            saturation_errors)
from snn_compile.export.interpreter import NIRInterpreter
from snn_compile.hw_sim.foreign import frames_of
from snn_compile.hw_sim.int_reference import plan_graph, run_frames, run_token_time
from snn_compile.hw_sim.lava_runner import LavaSession


def calibration_headroom(qgraph: QGraph, tokenizer, n: int = CALIBRATION_TOKENS) -> dict:
    """Range headroom of the integer graph on the calibration text (``calibration_tokens``):
    the integer reference runs it, ``resources.measured_ranges`` takes the exact maxima,
    ``resources.headroom`` divides them by Loihi 2's limits (16-bit dendrite, 24-bit
    state); the weights' worst case is reported beside them (``range_report``), which for
    a decoder is far looser than any text drives (every input spike at once).

    Returns ``{"populations": headroom per population, "errors": saturation_errors,
    "text": what was run, "tokens": n}``."""
    ids = calibration_tokens(tokenizer, qgraph.context or n, n)
    run = run_token_time(qgraph, ids[0])
    outs = {k: v.numpy() for k, v in run.outputs.items()}
    head = headroom(qgraph, measured_ranges(qgraph, outs), range_report(qgraph))
    return {"populations": head, "errors": saturation_errors(head),
            "text": f"first {ids.shape[1]} validation tokens of the embedded corpus "
                    "(the calibration text), integer reference", "tokens": int(ids.shape[1])}


def compare_float_int(graph, qgraph: QGraph, inputs: Dict[str, torch.Tensor],
                      lava_samples: int = 0) -> dict:
    """Float NIR interpreter vs integer reference (vs Lava ``fixed_pt``) on spike inputs.

    Per spiking neuron node: fraction of (step, neuron) spike decisions that agree, spike
    counts; the Output node's values summed over the steps; and, for ``lava_samples``
    sequences, whether Lava equals the integer reference spike for spike (it must).
    """
    plan = plan_foreign(graph)
    rec = NIRInterpreter(plan.flat).run(inputs, record=list(plan.neurons))
    frames = frames_of(qgraph, inputs)
    run = run_frames(plan_graph(qgraph), frames)
    per = {}
    for n, nu in plan.neurons.items():
        if nu.kind != "lif":
            continue
        f = rec[n].permute(1, 0, 2)                       # (B, S, size)
        i = run.outputs[n][:, 0].double()
        per[n] = {"agreement": float((f == i).double().mean()),
                  "float_spikes": int(f.sum()), "int_spikes": int(i.sum())}
    fo = rec[plan.output].permute(1, 0, 2).sum(1)
    io = run.outputs[qgraph.readout][:, 0].double().sum(1) * qgraph.logit_scale
    res = {"populations": per, "readout_mean_abs_diff": float((fo - io).abs().mean()),
           "readout_float_mean_abs": float(fo.abs().mean()),
           "min_agreement": min(p["agreement"] for p in per.values())}
    if lava_samples:
        equal = True
        with LavaSession(qgraph, probe=True) as sess:
            for b in range(min(lava_samples, frames[qgraph.inputs[0]].shape[0])):
                if b:
                    sess.reset()
                got = sess.feed_frames({k: v[b, 0].numpy() for k, v in frames.items()})
                for name, arr in got.outputs.items():
                    equal &= bool(np.array_equal(arr, run.outputs[name][b, 0].numpy()))
        res["lava_samples"] = lava_samples
        res["lava_equals_int"] = equal
    return res
