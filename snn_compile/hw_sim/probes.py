"""Activity counts of a run of a ``QGraph``: what the chip executes, step by step.

Lava runs a token as one *window* of ``W = T + depth`` global steps
(``g = n*W + s``, ``s = 0 .. W-1``) and updates every process at every one of
them. The counts here cover every step of every window, as the run executed it:

    frames_x[n, s, i]   output of neuron i of population x at global step n*W + s
    token step of x:    (s - depth_x) mod W < T   (x computes token n's step t = s - depth_x)
    drain step of x:    every other step of the window (the pipeline fills/drains)

    events_x[n, s]      = #{i: frames_x[n, s, i] != 0}   spikes (lif, input) or graded
                                                         messages (prod, graded, accum)
    fanout_syn[i]       = #{j: W_syn[j, i] != 0}          non-zero fan-out of source neuron i
    synops_syn[n, s]    = sum_i [frames_src[n, s, i] != 0] * fanout_syn[i]
    sent_syn[n, s]      = sum_i [frames_src[n, s, i] != 0] * [fanout_syn[i] > 0]
                                                         messages routed to dst (one per
                                                         source neuron and destination
                                                         population)
    bits_x[n, s]        = sum_i bitlength(|frames_x[n, s, i]|) + 1 over non-zero i
                                                         significant payload bits (graded)
    accum:  "<x>.self"  its weight-1 graded self-loop: synops = sent = events_x
            "<x>.decay" its -diag(decay) loop: sum_i [frames != 0] [decay_i > 0]
    active_x[n, s] = events_x[n, s]; idle_x = size_x - active_x   (inputs: 0, the host)

Outside its token steps a population of a streamable graph
(``qgraph.check_streamable``) outputs zero, except an ``accum``: it holds its
memory (or decays it) and sends it at every step. ``window_frames_from_token_time``
rebuilds the frames of every step from token-time outputs on that ground (the
integer reference), ``window_frames_from_global`` cuts a global-time record (the
emulator, Lava's extractors) into windows; both are counted by ``count_windows``,
so that counts from the reference and from the simulator can be compared message
for message at every step. A run of N tokens executes N*W steps: a population
deeper than the readout (none in a decoder) computes the last token's last steps
only in the next window, which such a run does not have.

Synaptic operations are attributed to the step at which their *source* sent
(``spikes x fan-out``, the convention of the SNN energy literature); a delayed
(token-shift) synapse accumulates a spike into its delay ring when it arrives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional

import numpy as np
from snn_compile.compiler.qgraph import check_streamable, graded_kinds, spiking_kinds
from snn_compile.loihi.fixed_point import accum_step

@dataclass
class Activity:
    """Per-token, per-window-step activity of one run; step arrays have shape (tokens, W).

    The per-token dicts ``events``, ``synops``, ``sent`` (sums over the window) keep
    the names the benchmark harness, the emulator and the Lava runner use.
    """

    tokens: int                                   # number of tokens (windows) counted
    steps_per_token: int                          # T
    window: int                                   # W = T + depth: global steps per token
    step_events: Dict[str, np.ndarray]            # population -> (N, W) non-zero outputs
    step_synops: Dict[str, np.ndarray]            # synapse (or "<accum>.self"/".decay") -> (N, W)
    step_sent: Dict[str, np.ndarray]              # synapse -> (N, W) messages it carried
    step_bits: Dict[str, np.ndarray]              # graded population -> (N, W) payload bits
    token_steps: Dict[str, np.ndarray]            # population -> (W,) bool: its token steps
    size: Dict[str, int] = field(default_factory=dict)
    layer: Dict[str, str] = field(default_factory=dict)        # population -> Population.layer
    kind: Dict[str, str] = field(default_factory=dict)         # population -> kind
    synapse_src: Dict[str, str] = field(default_factory=dict)  # synapse -> source population
    synapse_dst: Dict[str, str] = field(default_factory=dict)  # synapse -> destination
    synapse_graded: Dict[str, bool] = field(default_factory=dict)  # synapse -> graded payload

    # ---------------------------------------------------------- per token
    @property
    def events(self) -> Dict[str, np.ndarray]:
        return {k: v.sum(axis=1) for k, v in self.step_events.items()}

    @property
    def synops(self) -> Dict[str, np.ndarray]:
        return {k: v.sum(axis=1) for k, v in self.step_synops.items()}

    @property
    def sent(self) -> Dict[str, np.ndarray]:
        return {k: v.sum(axis=1) for k, v in self.step_sent.items()}

    @property
    def neuron_updates(self) -> Dict[str, int]:
        """Neuron updates per token: ``size * W`` (every step), 0 for inputs (the host)."""
        return {n: (0 if self.kind.get(n) == "input" else s * self.window)
                for n, s in self.size.items()}

    def part(self, name: str, what: str = "events", steps: str = "all") -> np.ndarray:
        """Per-token sum of a step array over ``steps``: "all", "token" or "drain" steps of
        the population (or, for a synapse, of its source)."""
        arr = getattr(self, "step_" + what)[name]
        if steps == "all":
            return arr.sum(axis=1)
        pop = self.synapse_src.get(name, name) if what in ("synops", "sent") else name
        m = self.token_steps[pop]
        return arr[:, m if steps == "token" else ~m].sum(axis=1)

    # ---------------------------------------------------------------- totals
    def spikes(self) -> np.ndarray:
        """Binary spikes per token (lif populations: ``spiking_kinds``)."""
        return self._sum(self.events, [n for n, k in self.kind.items() if k in spiking_kinds()])

    def messages(self) -> np.ndarray:
        """Graded messages per token (prod, graded, accum populations: ``graded_kinds``)."""
        return self._sum(self.events, [n for n, k in self.kind.items() if k in graded_kinds()])

    def total_synops(self) -> np.ndarray:
        return self._sum(self.synops, list(self.step_synops))

    def total_neuron_updates(self) -> int:
        return int(sum(self.neuron_updates.values()))

    def totals(self) -> Dict[str, np.ndarray]:
        """Per-token totals over the whole graph."""
        return {"spikes": self.spikes(), "messages": self.messages(),
                "synops": self.total_synops(),
                "neuron_updates": np.full(self.tokens, self.total_neuron_updates(), np.int64)}

    def per_step(self) -> Dict[str, np.ndarray]:
        """Whole-graph counts at each window step s (summed over tokens), shape (W,)."""
        z = np.zeros(self.window, np.int64)
        out = {"spikes": z.copy(), "graded_messages": z.copy(), "synops_binary": z.copy(),
               "synops_graded": z.copy(), "active_updates": z.copy()}
        for n, a in self.step_events.items():
            k = self.kind[n]
            if k in spiking_kinds():
                out["spikes"] += a.sum(axis=0)
            elif k in graded_kinds():
                out["graded_messages"] += a.sum(axis=0)
            if k != "input":
                out["active_updates"] += a.sum(axis=0)
        for s, a in self.step_synops.items():
            out["synops_graded" if self.synapse_graded[s] else "synops_binary"] += a.sum(axis=0)
        return out

    def by_layer(self) -> Dict[str, Dict[str, np.ndarray]]:
        """Per-token totals per ``Population.layer`` (synops by their source's layer)."""
        out: Dict[str, Dict[str, np.ndarray]] = {}

        def row(layer: str) -> Dict[str, np.ndarray]:
            z = lambda: np.zeros(self.tokens, np.int64)  # noqa: E731
            return out.setdefault(layer, {"spikes": z(), "messages": z(), "synops": z(),
                                          "neuron_updates": z()})
        upd = self.neuron_updates
        for name, ev in self.events.items():
            r = row(self.layer.get(name, ""))
            if self.kind.get(name) in spiking_kinds():
                r["spikes"] += ev
            elif self.kind.get(name) in graded_kinds():
                r["messages"] += ev
            r["neuron_updates"] += upd.get(name, 0)
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

    def select(self, tokens: slice) -> "Activity":
        """The activity of a range of tokens (windows)."""
        cut = lambda d: {k: v[tokens] for k, v in d.items()}  # noqa: E731
        ev = cut(self.step_events)
        n = len(next(iter(ev.values()))) if ev else 0
        return Activity(n, self.steps_per_token, self.window, ev, cut(self.step_synops),
                        cut(self.step_sent), cut(self.step_bits), dict(self.token_steps),
                        dict(self.size), dict(self.layer), dict(self.kind),
                        dict(self.synapse_src), dict(self.synapse_dst),
                        dict(self.synapse_graded))

    @classmethod
    def concat(cls, parts: List["Activity"]) -> "Activity":
        """Join the activities of several runs of the same graph, token after token."""
        if not parts:
            raise ValueError("nothing to concatenate")
        p0 = parts[0]
        cat = lambda attr: {k: np.concatenate([getattr(p, attr)[k] for p in parts])  # noqa: E731
                            for k in getattr(p0, attr)}
        return cls(sum(p.tokens for p in parts), p0.steps_per_token, p0.window,
                   cat("step_events"), cat("step_synops"), cat("step_sent"), cat("step_bits"),
                   dict(p0.token_steps), dict(p0.size), dict(p0.layer), dict(p0.kind),
                   dict(p0.synapse_src), dict(p0.synapse_dst), dict(p0.synapse_graded))


# ------------------------------------------------------------------ frames
def token_step_mask(depth: int, T: int, W: int) -> np.ndarray:
    """(W,) bool: the window steps s at which a population of ``depth`` computes a token
    step, ``(s - depth) mod W < T``."""
    return ((np.arange(W) - depth) % W) < T


def _as_tokens(a, T: int, size: int, name: str) -> np.ndarray:
    """(N, T, size) or (B, N, T, size) -> (tokens, T, size) as a numpy array."""
    a = a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
    if a.ndim == 4:
        a = a.reshape(-1, *a.shape[2:])
    if a.ndim != 3 or a.shape[1:] != (T, size):
        raise ValueError(f"outputs of {name}: shape {a.shape}, expected (N, {T}, {size}) "
                         f"or (B, N, {T}, {size})")
    return a


def frames_from_token_time(qgraph, name: str, o: np.ndarray) -> np.ndarray:
    """The outputs (N, W, size) of population ``name`` at every step of the N windows
    that a run from rest executed, from its token-time outputs ``o`` (N, T, size).

    Token step (n, t) sits at global step ``n*W + t + depth``; every other step is zero,
    except for an ``accum`` after its first token step: there it repeats its memory
    step without input, ``x = accum_step(x, None, decay, decay_exp)`` (held, or decayed).
    Valid for streamable graphs (``qgraph.check_streamable``; the caller checks)."""

    pop = qgraph.pop(name)
    T, W = qgraph.steps_per_token, qgraph.window
    N, size = o.shape[0], pop.size
    G = N * W
    g = (np.arange(N)[:, None] * W + pop.depth + np.arange(T)[None, :]).reshape(-1)
    vals = np.asarray(o, np.int64).reshape(-1, size)
    keep = g < G
    out = np.zeros((G, size), np.int64)
    out[g[keep]] = vals[keep]
    if pop.kind == "accum" and N:
        tok = np.zeros(G, bool)
        tok[g[keep]] = True
        dec = np.asarray(pop.decay, np.int64) if pop.decaying else None
        x = out[pop.depth] if pop.depth < G else None
        for k in range(pop.depth + 1, G):
            if tok[k]:
                x = out[k]
            else:
                x = accum_step(x, None, dec, int(pop.decay_exp))
                out[k] = x
    return out.reshape(N, W, size)


def count_windows(qgraph, frames: Callable[[str], np.ndarray],
                  tokens: Optional[int] = None) -> Activity:
    """Count the activity of N windows; ``frames(name)`` returns population ``name``'s
    outputs (N, W, size) at every step (module docstring). Populations are fetched one
    at a time, so only one population's frames need to be in memory."""
    T, W = qgraph.steps_per_token, qgraph.window
    events, bits, mask = {}, {}, {}
    synops, sent, src, dst, graded = {}, {}, {}, {}, {}
    out_syn: Dict[str, list] = {n: [] for n in qgraph.populations}
    for s in qgraph.synapses:
        out_syn[s.src].append(s)
    N = tokens
    for name in qgraph.order():
        pop = qgraph.pop(name)
        f = np.asarray(frames(name))
        if f.ndim != 3 or f.shape[1:] != (W, pop.size):
            raise ValueError(f"frames of {name}: shape {f.shape}, expected (N, {W}, {pop.size})")
        if N is None:
            N = f.shape[0]
        elif f.shape[0] != N:
            raise ValueError(f"frames of {name}: {f.shape[0]} windows, others have {N}")
        nz = f != 0
        flat = nz.reshape(N * W, pop.size)
        events[name] = nz.sum(axis=2, dtype=np.int64)
        mask[name] = token_step_mask(pop.depth, T, W)
        if pop.graded:
            e = np.frexp(np.abs(f).astype(np.float64))[1]      # bit length of |v| (0 for 0)
            bits[name] = np.where(nz, e + 1, 0).sum(axis=2, dtype=np.int64)
        for s in out_syn[name]:
            fan = (np.asarray(s.weights) != 0).sum(axis=0).astype(np.int64)
            synops[s.name] = _dot(flat, fan).reshape(N, W)
            sent[s.name] = _dot(flat, (fan > 0).astype(np.int64)).reshape(N, W)
            src[s.name], dst[s.name], graded[s.name] = s.src, s.dst, bool(s.graded)
        if pop.kind == "accum":
            k = f"{name}.self"
            synops[k], sent[k] = events[name].copy(), events[name].copy()
            src[k], dst[k], graded[k] = name, name, True
        if pop.decaying:
            k = f"{name}.decay"
            has = (np.asarray(pop.decay, np.int64) > 0).astype(np.int64)
            synops[k] = _dot(flat, has).reshape(N, W)
            sent[k] = synops[k].copy()
            src[k], dst[k], graded[k] = name, name, True
    return Activity(int(N or 0), T, W, events, synops, sent, bits, mask,
                    {n: p.size for n, p in qgraph.populations.items()},
                    {n: p.layer for n, p in qgraph.populations.items()},
                    {n: p.kind for n, p in qgraph.populations.items()}, src, dst, graded)


def _dot(flat: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Exact ``flat (rows, size) bool @ w (size,) int``: float32 BLAS while every sum stays
    below 2^24 (exact there), int64 otherwise."""
    if int(np.abs(w).sum()) < 2 ** 24:
        return np.rint(flat.astype(np.float32) @ w.astype(np.float32)).astype(np.int64)
    return flat.astype(np.int64) @ w


def activity_from_token_time(qgraph, outputs: Mapping[str, object]) -> Activity:
    """Counts of every window step from token-time outputs (N, T, size) of every
    population (the integer reference; ``frames_from_token_time``)."""

    check_streamable(qgraph)
    T = qgraph.steps_per_token
    for name, pop in qgraph.populations.items():
        if name not in outputs:
            raise KeyError(f"no outputs recorded for population {name!r}")
    return count_windows(qgraph, lambda name: frames_from_token_time(
        qgraph, name, _as_tokens(outputs[name], T, qgraph.pop(name).size, name)))


def window_frames_from_global(qgraph, glob: Mapping[str, object], tokens: int
                              ) -> Callable[[str], np.ndarray]:
    """``frames(name)`` for ``count_windows`` from a global-time record
    ``{name: (G, size)}`` (or (1, G, size)) of a run from rest, G >= tokens * W."""
    W = qgraph.window

    def frames(name: str) -> np.ndarray:
        a = glob[name]
        a = a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
        if a.ndim == 3:
            if a.shape[0] != 1:
                raise ValueError(f"record of {name}: batch {a.shape[0]}, expected 1")
            a = a[0]
        if a.shape[0] < tokens * W:
            raise ValueError(f"record of {name}: {a.shape[0]} steps, fewer than {tokens} x {W}")
        return a[: tokens * W].reshape(tokens, W, a.shape[1])
    return frames


def activity_from_global(qgraph, glob: Mapping[str, object], tokens: int) -> Activity:
    """Counts of every window step from a global-time record (emulator, Lava)."""
    return count_windows(qgraph, window_frames_from_global(qgraph, glob, tokens), tokens)


def compare_activity(measured: Activity, reference: Activity) -> List[str]:
    """Every step count of two activities, message for message; returns the mismatches
    (population or synapse, token, step, the two values), empty when equal."""
    bad = []
    if measured.tokens != reference.tokens:
        return [f"{measured.tokens} tokens counted vs {reference.tokens} in the reference"]
    for what in ("events", "synops", "sent", "bits"):
        a, b = getattr(measured, "step_" + what), getattr(reference, "step_" + what)
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                bad.append(f"{what} of {k}: missing in {'measured' if k not in a else 'reference'}")
                continue
            d = np.argwhere(a[k] != b[k])
            if len(d):
                n, s = d[0]
                bad.append(f"{what} of {k}: {len(d)} steps differ, first at token {n} window "
                           f"step {s} ({a[k][n, s]} vs reference {b[k][n, s]})")
    return bad
