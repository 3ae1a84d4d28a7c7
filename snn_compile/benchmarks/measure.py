"""Operation counts of a run of a ``QGraph``, and the exact check against the reference.

Input: token-time outputs, one int array (N, T, size) per population (docs/semantics.md:
binary spikes for ``lif``/``input``, integer payloads for ``prod``/``graded``/``accum``).

Per population x and token n (W = the graph's window, T + pipeline depth):

    outputs[n]   = #{(t, i): o_x[n, t, i] != 0}              spikes or graded messages sent
    messages[n]  = sum_syn #{(t, i): o_x[n, t, i] != 0 and fanout_syn[i] > 0}
                   (+ outputs[n] for accum: its Dense self-loop; + a decaying accum's
                   decay loop)
    synops[n]    = sum_syn sum_(t, i) [o_x[n, t, i] != 0] * fanout_syn[i]
                   (+ outputs[n] for accum: one synapse of weight 1 per neuron; + one
                   per message of a decaying neuron: its decay loop)

    A decaying accum's ``t`` runs over all W steps of the window (its drain steps are
    recomputed by ``hw_sim.probes``).
    fanout_syn[i] = #{j: W_syn[j, i] != 0}                     non-zero fan-out
    active[n]    = outputs[n]                                 (not counted for inputs: host)
    idle[n]      = size * W - active[n]                       every neuron updates every step

Only Lava-visible work is counted: host-side injection and the readout's
summation on the host are not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Tuple

import numpy as np

from snn_compile.benchmarks.energy import LoihiCounts, loihi_energy_pj


class SpikeMismatchError(RuntimeError):
    """The spikes measured on a backend differ from the integer reference's."""


@dataclass
class PopulationCounts:
    """Per-token operation counts of one population (arrays of length N)."""

    name: str
    kind: str
    layer: str
    role: str
    outputs: np.ndarray
    messages: np.ndarray
    synops: np.ndarray
    active: np.ndarray
    idle: np.ndarray

    def loihi(self, n: slice = slice(None)) -> LoihiCounts:
        return LoihiCounts(float(self.synops[n].sum()), float(self.messages[n].sum()),
                           float(self.active[n].sum()), float(self.idle[n].sum()))


def _as_ntc(a) -> np.ndarray:
    a = np.asarray(a.detach().cpu() if hasattr(a, "detach") else a)
    if a.ndim != 3:
        raise ValueError(f"token-time outputs must have shape (N, T, size), got {a.shape}")
    return a


def count_operations(qgraph, outputs: Mapping[str, np.ndarray]) -> List[PopulationCounts]:
    """Per-population, per-token counts of a run, from its token-time outputs.

    The counting itself is ``hw_sim.probes.activity_from_token_time`` (the one
    definition the emulator and the Lava runner share); this regroups it by
    source population, the unit of the energy tables.
    """
    from snn_compile.hw_sim.probes import activity_from_token_time

    act = activity_from_token_time(qgraph, outputs)
    W = qgraph.window
    res = []
    for name in qgraph.order():
        pop = qgraph.pop(name)
        outs = act.events[name].astype(np.float64)
        mine = [k for k, src in act.synapse_src.items() if src == name]
        msgs = sum((act.sent[k] for k in mine), np.zeros_like(outs))
        syn = sum((act.synops[k] for k in mine), np.zeros_like(outs))
        if pop.kind == "input":
            active = np.zeros_like(outs)
            idle = np.zeros_like(outs)
        else:
            active = outs.copy()
            idle = pop.size * W - active
        res.append(PopulationCounts(name, pop.kind, pop.layer or name.split(".")[0], pop.role,
                                    outs, msgs.astype(np.float64), syn.astype(np.float64),
                                    active, idle))
    return res


def compare_outputs(measured: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
                    names) -> Tuple[bool, List[str]]:
    """Exact comparison, population by population; returns (equal, descriptions of mismatches)."""
    bad = []
    for name in names:
        if name not in measured or name not in reference:
            bad.append(f"{name}: missing in {'measured' if name not in measured else 'reference'}")
            continue
        a, b = _as_ntc(measured[name]), _as_ntc(reference[name])
        if a.shape != b.shape:
            bad.append(f"{name}: shape {a.shape} vs reference {b.shape}")
            continue
        diff = np.argwhere(a != b)
        if len(diff):
            n, t, i = diff[0]
            bad.append(f"{name}: {len(diff)} values differ, first at token {n} step {t} "
                       f"neuron {i} ({a[n, t, i]} vs reference {b[n, t, i]}); spike counts "
                       f"{int((a != 0).sum())} vs {int((b != 0).sum())}")
    return not bad, bad


def loihi_per_token(counts: List[PopulationCounts], mean_hops: float) -> np.ndarray:
    """Loihi-estimate energy (pJ) of each token, all populations together."""
    N = len(counts[0].outputs)
    return np.array([sum(loihi_energy_pj(c.loihi(slice(n, n + 1)), mean_hops)["total"]
                         for c in counts) for n in range(N)])


def concat_counts(parts: List[List[PopulationCounts]]) -> List[PopulationCounts]:
    """Join the counts of several sequences population by population."""
    out = []
    for cols in zip(*parts):
        c0 = cols[0]
        out.append(PopulationCounts(
            c0.name, c0.kind, c0.layer, c0.role,
            *[np.concatenate([getattr(c, f) for c in cols])
              for f in ("outputs", "messages", "synops", "active", "idle")]))
    return out


def summary(counts: List[PopulationCounts], mean_hops: float) -> Dict[str, object]:
    """Mean per token, per population and in total, with the Loihi energy of each."""
    rows = []
    tot = LoihiCounts()
    N = len(counts[0].outputs) if counts else 0
    for c in counts:
        lc = c.loihi()
        tot = tot + lc
        e = loihi_energy_pj(lc, mean_hops)
        rows.append({"population": c.name, "kind": c.kind, "layer": c.layer,
                     "outputs": float(c.outputs.mean()), "synops": float(c.synops.mean()),
                     "messages": float(c.messages.mean()),
                     "neuron_updates": float((c.active + c.idle).mean()),
                     "active_updates": float(c.active.mean()),
                     "loihi_pj": e["total"] / N,
                     "loihi_pj_by_op": {k: v / N for k, v in e.items() if k != "total"}})
    e = loihi_energy_pj(tot, mean_hops)
    return {"per_population": rows,
            "totals_per_token": {"synops": tot.synops / N, "messages": tot.messages / N,
                                 "active_updates": tot.active_updates / N,
                                 "idle_updates": tot.idle_updates / N},
            "loihi_pj_per_token": {k: v / N for k, v in e.items()}}
