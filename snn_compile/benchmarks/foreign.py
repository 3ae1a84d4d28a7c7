"""Energy per sample of a foreign graph, from the spikes of a run (``snn-compile bench
GRAPH.nir --input X.npy``).

One sample is one window of ``W = S + depth`` global steps (``hw_sim.foreign``). From
the run's token-time outputs (one "token" per sample), ``measure.count_operations``
counts per population and sample: spikes (or graded messages), synaptic operations
(each spike times its non-zero fan-out), messages and neuron updates (every neuron of a
Lava process at every step of the window). Two views, per sample:

    Loihi estimate = synops x E_synop + updates x E_update + messages x E_route
                     (constants and sources: benchmarks/energy.py, docs/energy.md)
    45 nm view     = ACs x 0.9 pJ + MACs x 4.6 pJ        (Horowitz 2014, fp32)
                     ACs = synops of binary sources (inputs, LIF populations, the bias
                     input), MACs = synops of graded sources (a graded readout's inputs
                     are spikes; a graded *source* sends integers, costed as MACs)

and, for scale, the MACs of the same weights run once as a non-spiking network
(``ann_one_pass``: every non-zero weight once; a rate- or time-coded SNN runs S steps).
The counts come from the backend's own run (emulator or Lava), which is checked spike
for spike against the integer reference first.
"""

from __future__ import annotations

import numpy as np

from snn_compile.benchmarks import energy
from snn_compile.benchmarks.measure import count_operations, summary
from snn_compile.compiler.quantize_foreign import BIAS


def bench_samples(qgraph, res: dict, backend: str, mean_hops: float = 1.0) -> dict:
    """The energy report of one run (``hw_sim.foreign.run_samples``'s result)."""

    outs = res["outputs"]
    counts = count_operations(qgraph, outs)
    summ = summary(counts, mean_hops)
    B = int(next(iter(outs.values())).shape[0])
    binary = {n for n, p in qgraph.populations.items() if p.kind in ("input", "lif")}
    acs = sum(float(c.synops.sum()) for c in counts if c.name in binary) / B
    macs = sum(float(c.synops.sum()) for c in counts if c.name not in binary) / B
    spikes = {c.name: float(c.outputs.mean()) for c in counts if c.kind == "lif"}
    in_spikes = sum(float(c.outputs.mean()) for c in counts
                    if c.kind == "input" and c.name != BIAS)
    theo = energy.theoretical_energy_pj({"acs": acs, "macs": macs})
    ann_macs = float(sum(int(np.count_nonzero(s.weights)) for s in qgraph.synapses
                         if s.src != BIAS))
    S = qgraph.steps_per_token
    return {
        "backend": backend, "samples": B, "steps": S, "window": qgraph.window,
        # True: the backend's spikes were compared with the integer reference (a difference
        # raises); None: the backend is the integer reference
        "spikes_match_reference": res.get("reference_equal"),
        "energy_per_sample_pj": {"loihi_estimate": summ["loihi_pj_per_token"]["total"],
                                 "theoretical_45nm": theo["total"],
                                 "ann_one_pass_45nm": energy.e_ann_pj(ann_macs)},
        "loihi_pj_per_sample_by_op": {k: v for k, v in summ["loihi_pj_per_token"].items()
                                      if k != "total"},
        "per_sample": {"spikes": float(sum(spikes.values())), "input_spikes": in_spikes,
                       "acs": acs, "macs": macs, "ann_one_pass_macs": ann_macs,
                       **summ["totals_per_token"]},
        "spikes_per_sample_by_population": spikes,
        "per_population": summ["per_population"],
        "constants": energy.constants_table(),
        "mean_hops": mean_hops,
    }
