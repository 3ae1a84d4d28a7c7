"""Operation counts of a run of a ``QGraph`` per population, chip time, the exact checks.

Input: the backend's ``probes.Activity`` -- counts at every step of every token
window (``hw_sim/probes.py`` defines them), token steps and drain steps apart.
Per population x and token n (W = T + pipeline depth; "token" = x's T token steps):

    outputs[n]        = sum_s events_x[n, s]                 spikes or graded messages
    messages[n]       = sum_syn from x sum_s sent_syn[n, s]  (accum: + self-loop, decay loop)
    synops_binary[n]  = sum over x's binary synapses of synops_syn[n, s]
    synops_graded[n]  = the same over graded synapses (payload x weight)
    payload_bits[n]   = graded messages x 24                 the configured graded width
    significant_bits  = sum of bitlength(|v|) + 1 of x's graded outputs
    active[n]         = outputs[n]; idle[n] = size * W - active[n]   (inputs: 0, the host)
    products[n]       = non-zero ProdNeuron outputs (prod populations)

Each count exists over the whole window (what autoregressive generation executes per
token) and over the token steps only (what a pipelined prefill executes per token: T
steps, the drain filled by the next tokens): ``PopulationCounts.all`` / ``.token``.

Only Lava-visible work is counted: host-side injection and the readout's summation on
the host are not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

from snn_compile.benchmarks import energy
from snn_compile.benchmarks.energy import ExecutedCounts, LoihiCounts, loihi_energy_pj
from snn_compile.compiler.qgraph import graded_kinds
from snn_compile.compiler.resources import LOIHI1_NEURONS_PER_CORE, resource_report
from snn_compile.hw_sim.probes import Activity, activity_from_token_time

METRICS = ("outputs", "messages", "synops", "synops_binary", "synops_graded", "payload_bits",
           "significant_bits", "active", "idle", "products")


class SpikeMismatchError(RuntimeError):
    """The spikes (or step counts) measured on a backend differ from the integer reference's."""


@dataclass
class PopulationCounts:
    """Per-token operation counts of one population (arrays of length N), over the whole
    window (``all``) and over its token steps (``token``)."""

    name: str
    kind: str
    layer: str
    role: str
    size: int
    all: Dict[str, np.ndarray]
    token: Dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def outputs(self) -> np.ndarray:
        return self.all["outputs"]

    @property
    def messages(self) -> np.ndarray:
        return self.all["messages"]

    @property
    def synops(self) -> np.ndarray:
        return self.all["synops"]

    @property
    def active(self) -> np.ndarray:
        return self.all["active"]

    @property
    def idle(self) -> np.ndarray:
        return self.all["idle"]

    def part(self, steps: str) -> Dict[str, np.ndarray]:
        """"all", "token" or "drain" (= all - token) counts per token."""
        if steps == "all":
            return self.all
        if steps == "token":
            return self.token
        return {k: self.all[k] - self.token[k] for k in self.all}

    def loihi(self, n: slice = slice(None), steps: str = "all") -> LoihiCounts:
        c = self.part(steps)
        return LoihiCounts(float(c["synops"][n].sum()), float(c["messages"][n].sum()),
                           float(c["active"][n].sum()), float(c["idle"][n].sum()))

    def executed(self, n: slice = slice(None), steps: str = "all") -> ExecutedCounts:
        c = self.part(steps)
        return ExecutedCounts(float(c["synops_binary"][n].sum()),
                              float(c["synops_graded"][n].sum()), float(c["products"][n].sum()))


def _as_ntc(a) -> np.ndarray:
    a = np.asarray(a.detach().cpu() if hasattr(a, "detach") else a)
    if a.ndim != 3:
        raise ValueError(f"token-time outputs must have shape (N, T, size), got {a.shape}")
    return a


def count_operations(qgraph, activity) -> List[PopulationCounts]:
    """Per-population, per-token counts of a run from its ``probes.Activity`` (or from
    token-time outputs ``{population: (N, T, size)}``, rebuilt to every window step by
    ``probes.activity_from_token_time``)."""

    act = activity if isinstance(activity, Activity) else \
        activity_from_token_time(qgraph, activity)
    W, N = act.window, act.tokens
    by_src: Dict[str, List[str]] = {}
    for k, src in act.synapse_src.items():
        by_src.setdefault(src, []).append(k)
    res = []
    for name in qgraph.order():
        pop = qgraph.pop(name)
        mask = act.token_steps[name]
        parts = {}
        for steps, m in (("all", np.ones(W, bool)), ("token", mask)):
            s = lambda a: a[:, m].sum(axis=1).astype(np.float64)  # noqa: E731
            c = {k: np.zeros(N) for k in METRICS}
            c["outputs"] = s(act.step_events[name])
            for k in by_src.get(name, []):
                c["messages"] += s(act.step_sent[k])
                c["synops"] += s(act.step_synops[k])
                c["synops_graded" if act.synapse_graded[k] else "synops_binary"] += \
                    s(act.step_synops[k])
                if act.synapse_graded[k]:
                    c["payload_bits"] += s(act.step_sent[k]) * energy.GRADED_PAYLOAD_BITS
            if name in act.step_bits:
                c["significant_bits"] = s(act.step_bits[name])
            if pop.kind != "input":
                c["active"] = c["outputs"].copy()
                c["idle"] = pop.size * int(m.sum()) - c["active"]
            if pop.kind == "prod":
                c["products"] = c["outputs"].copy()
            parts[steps] = c
        res.append(PopulationCounts(name, pop.kind, pop.layer or name.split(".")[0], pop.role,
                                    pop.size, parts["all"], parts["token"]))
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


def loihi_per_token(counts: List[PopulationCounts], mean_hops: float = 1.0,
                    prices: Optional[energy.LoihiPrices] = None,
                    steps: str = "all") -> np.ndarray:
    """Dynamic Loihi energy (pJ) of each token, all populations together."""
    N = len(counts[0].outputs)
    p = prices or energy.LoihiPrices(hops=mean_hops)
    return np.array([sum(loihi_energy_pj(c.loihi(slice(n, n + 1), steps), prices=p)["total"]
                         for c in counts) for n in range(N)])


def executed_per_token(counts: List[PopulationCounts], **prices) -> np.ndarray:
    """executed_45nm energy (pJ) of each token (every window step)."""
    N = len(counts[0].outputs)
    tot = np.zeros(N)
    for c in counts:
        for n in range(N):
            tot[n] += energy.executed_energy_pj(c.executed(slice(n, n + 1)), **prices)["total"]
    return tot


def concat_counts(parts: List[List[PopulationCounts]]) -> List[PopulationCounts]:
    """Join the counts of several sequences population by population."""
    out = []
    for cols in zip(*parts):
        c0 = cols[0]
        cat = lambda attr: {k: np.concatenate([getattr(c, attr)[k] for c in cols])  # noqa: E731
                            for k in getattr(c0, attr)}
        out.append(PopulationCounts(c0.name, c0.kind, c0.layer, c0.role, c0.size,
                                    cat("all"), cat("token")))
    return out


def summary(counts: List[PopulationCounts], mean_hops: float = 1.0,
            high_hops: Optional[float] = None) -> Dict[str, object]:
    """Mean per token, per population and in total: counts (all steps, drain steps), the
    Loihi energy (central, low and high dynamic parts) and the executed 45 nm energy."""
    rows = []
    tot = LoihiCounts()
    N = len(counts[0].outputs) if counts else 0
    hi = energy.loihi_high_prices(mean_hops if high_hops is None else high_hops)
    lo = energy.loihi_low_prices()
    totals = {k: 0.0 for k in METRICS}
    drain = {k: 0.0 for k in METRICS}
    for c in counts:
        lc = c.loihi()
        tot = tot + lc
        e = loihi_energy_pj(lc, mean_hops)
        dr = c.part("drain")
        for k in METRICS:
            totals[k] += float(c.all[k].sum()) / N
            drain[k] += float(dr[k].sum()) / N
        rows.append({"population": c.name, "kind": c.kind, "layer": c.layer, "size": c.size,
                     **{k: float(c.all[k].mean()) for k in METRICS},
                     "outputs_drain": float(dr["outputs"].mean()),
                     "messages_drain": float(dr["messages"].mean()),
                     "synops_drain": float(dr["synops"].mean()),
                     "idle_drain": float(dr["idle"].mean()),
                     "neuron_updates": float((c.active + c.idle).mean()),
                     "active_updates": float(c.active.mean()),
                     "loihi_pj": e["total"] / N,
                     "loihi_low_pj": loihi_energy_pj(lc, prices=lo)["total"] / N,
                     "loihi_high_pj": loihi_energy_pj(lc, prices=hi)["total"] / N,
                     "executed_45nm_pj": energy.executed_energy_pj(c.executed())["total"] / N,
                     "loihi_pj_by_op": {k: v / N for k, v in e.items() if k != "total"}})
    e = loihi_energy_pj(tot, mean_hops)
    return {"per_population": rows,
            "totals_per_token": {"synops": tot.synops / N, "messages": tot.messages / N,
                                 "active_updates": tot.active_updates / N,
                                 "idle_updates": tot.idle_updates / N,
                                 "spikes": sum(float(c.outputs.mean()) for c in counts
                                               if c.kind in ("lif", "input")),
                                 "graded_messages": sum(float(c.outputs.mean()) for c in counts
                                                        if c.kind in graded_kinds()),
                                 **{k: totals[k] for k in ("synops_binary", "synops_graded",
                                                           "payload_bits", "significant_bits",
                                                           "products")}},
            "drain_per_token": {"messages": drain["messages"], "synops": drain["synops"],
                                "outputs": drain["outputs"], "idle_updates": drain["idle"],
                                "active_updates": drain["active"]},
            "loihi_pj_per_token": {k: v / N for k, v in e.items()}}


def step_profile(activity) -> Dict[str, object]:
    """Per population: its token-step mask and the mean per token at each window step of
    outputs, messages sent and synops (for results.json and the raster's reading)."""
    N = max(activity.tokens, 1)
    by_src: Dict[str, List[str]] = {}
    for k, src in activity.synapse_src.items():
        by_src.setdefault(src, []).append(k)
    out = {}
    for name, ev in activity.step_events.items():
        syn = sum((activity.step_synops[k] for k in by_src.get(name, [])),
                  np.zeros_like(ev)).sum(axis=0)
        msg = sum((activity.step_sent[k] for k in by_src.get(name, [])),
                  np.zeros_like(ev)).sum(axis=0)
        out[name] = {"token_steps": activity.token_steps[name].astype(int).tolist(),
                     "outputs": (ev.sum(axis=0) / N).tolist(), "messages": (msg / N).tolist(),
                     "synops": (syn / N).tolist()}
    return {"window": activity.window, "steps_per_token": activity.steps_per_token,
            "populations": out,
            "graph_per_step": {k: (v / N).tolist() for k, v in activity.per_step().items()}}


# ------------------------------------------------------------------- chip time
def _loads(qgraph, activity) -> Dict[str, Dict[str, np.ndarray]]:
    """Per on-chip population: active updates and synops arriving, (N, W) each."""
    syn_in: Dict[str, np.ndarray] = {}
    for k, dst in activity.synapse_dst.items():
        syn_in[dst] = syn_in.get(dst, 0) + activity.step_synops[k]
    out = {}
    for name, pop in qgraph.populations.items():
        if pop.kind == "input":
            continue
        z = np.zeros_like(activity.step_events[name])
        out[name] = {"active": activity.step_events[name].astype(np.float64),
                     "synin": np.asarray(syn_in.get(name, z), np.float64)}
    return out


def chip_time(qgraph, activity, partition: Optional[List[dict]] = None) -> Dict[str, object]:
    """Bounds of the chip time per token (seconds), from published per-op latencies.

    A Loihi step ends with a mesh-wide barrier; cores work in parallel, and a core
    executes its neuron updates and synaptic ops one after another (Davies et al.
    2018, Table 2: update 5.3 ns inactive / 8.4 ns active, synop <= 3.5 ns, barrier
    113-465 ns for 1-32 tiles). With a population's activity spread evenly over its
    neurons:

        low:  t_step = 113 ns + max_x [ (active_x 8.4 + (size_x - active_x) 5.3) ns / k_x ]
              k_x = ceil(size_x / 1024) cores of Loihi 1 (1024 neurons) per population,
              no core shared, no synop time (only its maximum is published)
        high: t_step = 465 ns + max_core sum_{x on core} f_x (size_x 8.4 + synin_x 3.5) ns
              on the Loihi 2 partition of ``resources.resource_report`` (up to 8192
              neurons per core, populations sharing cores; f_x = its share on that core)

    generation: a token costs its W = T + depth window, sum_s t_step(n, s);
    prefill (pipelined prompt, one token every T steps, estimated): the T steps of one
    token period, where population x works on its token step (r - depth_x) mod T at
    residue r, with its load averaged over the measured tokens.
    """

    if partition is None:
        partition = resource_report(qgraph)["partition"]
    T, W, N = activity.steps_per_token, activity.window, activity.tokens
    loads = _loads(qgraph, activity)
    ta, ti, ts = energy.T_NEURON_ACTIVE_NS, energy.T_NEURON_IDLE_NS, energy.T_SYNOP_MAX_NS
    low_pop, high_pop = {}, {}
    for name, ld in loads.items():
        size = qgraph.pop(name).size
        k = math.ceil(size / LOIHI1_NEURONS_PER_CORE)
        low_pop[name] = (ld["active"] * ta + (size - ld["active"]) * ti) / k
        high_pop[name] = size * ta + ld["synin"] * ts
    z = np.zeros((N, W))
    low_step = np.max(np.stack(list(low_pop.values())), axis=0) if low_pop else z
    core_load = []
    for core in partition:
        acc = np.zeros((N, W))
        for sl in core["slices"]:
            name = sl["population"]
            lo_i, hi_i = sl["neurons"]
            acc = acc + high_pop[name] * (hi_i - lo_i) / qgraph.pop(name).size
        core_load.append(acc)
    high_step = np.max(np.stack(core_load), axis=0) if core_load else z
    gen_low = (low_step + energy.T_BARRIER_MIN_NS).sum(axis=1) * 1e-9
    gen_high = (high_step + energy.T_BARRIER_MAX_NS).sum(axis=1) * 1e-9

    def prefill(per_pop, reduce_cores):
        tot = 0.0
        for r in range(T):
            cols = {}
            for name, a in per_pop.items():
                d = qgraph.pop(name).depth
                t = (r - d) % T
                cols[name] = float(a[:, (d + t) % W].mean()) if N else 0.0
            tot += reduce_cores(cols)
        return tot

    pre_low = prefill(low_pop, lambda c: max(c.values(), default=0.0)
                      + energy.T_BARRIER_MIN_NS) * 1e-9

    def high_cores(cols):
        best = 0.0
        for core in partition:
            best = max(best, sum(cols[sl["population"]] * (sl["neurons"][1] - sl["neurons"][0])
                                 / qgraph.pop(sl["population"]).size for sl in core["slices"]))
        return best + energy.T_BARRIER_MAX_NS
    pre_high = prefill(high_pop, high_cores) * 1e-9
    return {"generation_s": [float(gen_low.mean()), float(gen_high.mean())],
            "prefill_s": [pre_low, pre_high],
            "generation_per_token_s": {"low": gen_low, "high": gen_high},
            "steps_per_token": {"generation": W, "prefill": T},
            "cores_low": int(sum(math.ceil(qgraph.pop(n).size / LOIHI1_NEURONS_PER_CORE)
                                 for n in loads)),
            "cores": len(partition),
            "chips": max(1, math.ceil(len(partition) / 128)) if partition else 0}
