"""Activity counts of a run of a ``QGraph``: what the energy model multiplies.

Every count is per token, from the token-time outputs of the populations
(``o_x[n, t, i]``, shape (N, T, size) or (B, N, T, size); docs/semantics.md).
The integer reference, the emulator and the Lava runner all produce such
outputs, so one function counts for all of them. Tokens are flattened in
(sequence, position) order.

    events_x[n]   = #{(t, i): o_x[n, t, i] != 0}           spikes (lif, input) or graded
                                                           messages (prod, graded, accum)
    fanout_s[i]   = #{j: W_s[j, i] != 0}                    non-zero fan-out of source neuron i
    synops_s[n]   = sum_(t, i) [o_src[n, t, i] != 0] * fanout_s[i]
    synops_{x}.self[n] = events_x[n]                        accum: its Dense self-loop, weight 1
    synops_{x}.decay[n] = sum_i [decay_i > 0] * msgs_x[n, i]  decaying accum: its -diag(decay) loop
    updates_x     = size_x * W                              every neuron of a Lava process is
                                                           updated at every global step of the
                                                           token's window W = T + depth
                                                           (0 for inputs: the host injects them)

A *decaying* accum changes at every global step while its state is non-zero,
so it sends a graded message at each of the ``W`` steps of a token's window,
not only at the token's ``T`` steps: for it, ``o_x[n, t]`` is extended to the
``W - T`` drain steps ``t = T .. W-1`` that follow ``(n, T-1)``, recomputed
exactly from ``o_x[n, T-1]`` with ``fixed_point.accum_step`` (no input), and
``events``, the synops of its outgoing synapses and of both loops count all
``W`` steps. (A non-decaying accum holds its value through the drain steps; as
before, only its ``T`` token steps are counted.)

Synaptic operations are attributed to the layer of their *source* population
(``spikes x fan-out``, the convention of the SNN energy literature).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping

import numpy as np


@dataclass
class Activity:
    """Per-token activity of one run. Arrays have length ``tokens``.

    Field names are stable: the benchmark harness and the Lava runner use them.
    """

    tokens: int                                   # number of tokens counted (all sequences)
    steps_per_token: int                          # T
    window: int                                   # W = T + depth: global steps per token
    events: Dict[str, np.ndarray]                 # population -> non-zero outputs per token
    synops: Dict[str, np.ndarray]                 # synapse (or "<accum>.self") -> synops per token
    neuron_updates: Dict[str, int]                # population -> neuron updates per token (size*W)
    layer: Dict[str, str] = field(default_factory=dict)      # population -> Population.layer
    kind: Dict[str, str] = field(default_factory=dict)       # population -> kind
    synapse_src: Dict[str, str] = field(default_factory=dict)  # synapse -> source population
    sent: Dict[str, np.ndarray] = field(default_factory=dict)  # synapse -> messages it carried

    # ---------------------------------------------------------------- totals
    def spikes(self) -> np.ndarray:
        """Binary spikes per token (lif populations only)."""
        return self._sum(self.events, [n for n, k in self.kind.items() if k == "lif"])

    def messages(self) -> np.ndarray:
        """Graded messages per token (prod, graded, accum populations)."""
        return self._sum(self.events, [n for n, k in self.kind.items()
                                       if k in ("prod", "graded", "accum")])

    def total_synops(self) -> np.ndarray:
        return self._sum(self.synops, list(self.synops))

    def total_neuron_updates(self) -> int:
        return int(sum(self.neuron_updates.values()))

    def totals(self) -> Dict[str, np.ndarray]:
        """Per-token totals over the whole graph."""
        return {"spikes": self.spikes(), "messages": self.messages(),
                "synops": self.total_synops(),
                "neuron_updates": np.full(self.tokens, self.total_neuron_updates(), np.int64)}

    def by_layer(self) -> Dict[str, Dict[str, np.ndarray]]:
        """Per-token totals per ``Population.layer`` (synops by their source's layer)."""
        out: Dict[str, Dict[str, np.ndarray]] = {}

        def row(layer: str) -> Dict[str, np.ndarray]:
            z = lambda: np.zeros(self.tokens, np.int64)  # noqa: E731
            return out.setdefault(layer, {"spikes": z(), "messages": z(), "synops": z(),
                                          "neuron_updates": z()})
        for name, ev in self.events.items():
            r = row(self.layer.get(name, ""))
            if self.kind.get(name) == "lif":
                r["spikes"] += ev
            elif self.kind.get(name) in ("prod", "graded", "accum"):
                r["messages"] += ev
            r["neuron_updates"] += self.neuron_updates.get(name, 0)
        for syn, so in self.synops.items():
            row(self.layer.get(self.synapse_src.get(syn, ""), ""))["synops"] += so
        return out

    def mean(self) -> Dict[str, float]:
        """Mean per token of every total."""
        return {k: float(v.mean()) if self.tokens else 0.0 for k, v in self.totals().items()}

    @staticmethod
    def _sum(d: Mapping[str, np.ndarray], names: List[str]) -> np.ndarray:
        acc = None
        for n in names:
            acc = d[n].astype(np.int64) if acc is None else acc + d[n]
        return acc if acc is not None else np.zeros(0, np.int64)

    @classmethod
    def concat(cls, parts: List["Activity"]) -> "Activity":
        """Join the activities of several runs of the same graph, token after token."""
        if not parts:
            raise ValueError("nothing to concatenate")
        p0 = parts[0]
        cat = lambda attr: {k: np.concatenate([getattr(p, attr)[k] for p in parts])  # noqa: E731
                            for k in getattr(p0, attr)}
        return cls(sum(p.tokens for p in parts), p0.steps_per_token, p0.window,
                   cat("events"), cat("synops"), dict(p0.neuron_updates), dict(p0.layer),
                   dict(p0.kind), dict(p0.synapse_src))


def _as_tokens(a, T: int, size: int, name: str) -> np.ndarray:
    """(N, T, size) or (B, N, T, size) -> (tokens, T, size) as a numpy array."""
    a = a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
    if a.ndim == 4:
        a = a.reshape(-1, *a.shape[2:])
    if a.ndim != 3 or a.shape[1:] != (T, size):
        raise ValueError(f"outputs of {name}: shape {a.shape}, expected (N, {T}, {size}) "
                         f"or (B, N, {T}, {size})")
    return a


def drain_messages(pop, last: np.ndarray, steps: int) -> np.ndarray:
    """Graded messages per neuron (tokens, size) that a decaying accum sends in the ``steps``
    input-free steps after a token's last step, whose value is ``last`` (tokens, size):
    ``x = accum_step(x, None, decay, decay_exp)``, one message per non-zero ``x``."""
    from snn_compile.hw_sim.fixed_point import accum_step

    x = np.asarray(last, dtype=np.int64)
    dec = np.asarray(pop.decay, np.int64)
    n = np.zeros(x.shape, np.int64)
    for _ in range(steps):
        x = accum_step(x, None, dec, int(pop.decay_exp))
        n += x != 0
    return n


def activity_from_token_time(qgraph, outputs: Mapping[str, object]) -> Activity:
    """Count the activity of a run from its token-time outputs (every population needed)."""
    T, W = qgraph.steps_per_token, qgraph.window
    per_neuron: Dict[str, np.ndarray] = {}
    events: Dict[str, np.ndarray] = {}
    for name, pop in qgraph.populations.items():
        if name not in outputs:
            raise KeyError(f"no outputs recorded for population {name!r}")
        o = _as_tokens(outputs[name], T, pop.size, name)
        per_neuron[name] = (o != 0).sum(axis=1, dtype=np.int64)    # (tokens, size)
        if pop.decaying:
            per_neuron[name] += drain_messages(pop, o[:, T - 1], W - T)
        events[name] = per_neuron[name].sum(axis=1)
    ntok = len(next(iter(events.values()))) if events else 0
    synops: Dict[str, np.ndarray] = {}
    sent: Dict[str, np.ndarray] = {}
    src: Dict[str, str] = {}
    for s in qgraph.synapses:
        fan = (np.asarray(s.weights) != 0).sum(axis=0).astype(np.int64)
        # a delayed (token-shift) synapse accumulates a spike into its delay ring when
        # the spike arrives, so its ops belong to the token that sent the spike
        synops[s.name] = per_neuron[s.src] @ fan
        sent[s.name] = per_neuron[s.src] @ (fan > 0).astype(np.int64)
        src[s.name] = s.src
    for name, pop in qgraph.populations.items():
        if pop.kind == "accum":
            synops[f"{name}.self"] = events[name].copy()
            sent[f"{name}.self"] = events[name].copy()
            src[f"{name}.self"] = name
        if pop.decaying:
            has = (np.asarray(pop.decay, np.int64) > 0).astype(np.int64)
            synops[f"{name}.decay"] = per_neuron[name] @ has
            sent[f"{name}.decay"] = synops[f"{name}.decay"].copy()
            src[f"{name}.decay"] = name
    updates = {n: (0 if p.kind == "input" else p.size * W) for n, p in qgraph.populations.items()}
    return Activity(ntok, T, W, events, synops, updates,
                    {n: p.layer for n, p in qgraph.populations.items()},
                    {n: p.kind for n, p in qgraph.populations.items()}, src, sent)
