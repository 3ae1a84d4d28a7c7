"""Event-driven numpy engine of the emulator: global time, per population, for the CPU.

It executes Lava's schedule exactly as ``emulator.Emulator``'s torch engine
does (``docs/emulator.md``), with the arithmetic of ``fixed_point`` transcribed
to numpy int64, but is organised around what is silent. At small batch a
step costs a few microseconds of per-operation overhead per tensor op, and in a
streamable decoder each population works during T of the W steps of a
window; so work is skipped whenever its result is provably zero or unchanged:

* pull instead of push: a population reads each synapse's source output of
  step ``g - 1 - delay`` from a short history (``L = max(1 + delay) + 1``
  steps); a synapse whose source was silent then is not evaluated;
* a stateful kind of ``fixed_point.STATEFUL`` is visited at every step;
* a stateless kind (``fixed_point.ELEMENTWISE``) is zero when its ports are: a
  ``prod`` when either port is empty (``0 * a >> e = 0``), so the attention
  read-out ``mem x q`` costs nothing outside ``q``'s steps, a ``graded`` when its
  port is; an ``accum`` without input keeps
  its value (the same array object, no copy) unless it decays: a decaying
  ``accum`` with a non-zero state is visited at every step (its drain steps
  ``out = out + ((-decay * out) >> decay_exp)``) until the state is a fixed point
  of that decay (zero, or a small negative value the floor cannot shrink), and
  then keeps it like any other accum; nothing changes for accums without decay;
* a LIF without input, with ``u`` that decays to zero (``du = 4095`` or
  ``u = 0``) and no bias, cannot spike (``v <= vth << 6`` after every step
  and the decay only shrinks ``|v|``); its ``v`` decays lazily: the pending
  decays are applied only if input arrives before the next ``LIFReset``,
  which in a streamable graph always comes first.

Outputs are float64 arrays ``(size, B)`` (exact: int32-valued), ``None`` when
all zero; arrays are never written after they are stored, so the history and
the recording hold references, not copies.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import torch

from snn_compile.loihi import fixed_point as fx

I32 = fx.I32
wrap32 = fx.wrap32

_F64 = np.float64
_I64 = np.int64


class _Syn:
    """One synapse as a numpy kernel: float64 (src, B) output of the source -> int64 (dst, B),
    wrapped inside as ``fixed_point.SynapseKernel`` (the outer int32 wrap is the port's)."""

    __slots__ = ("src", "lag", "mode", "idx", "val", "w", "inner", "exp", "scale")

    def __init__(self, k: fx.SynapseKernel, src: int, lag: int):
        self.src, self.lag, self.inner, self.exp = src, lag, bool(k.inner_wrap), int(k.exp)
        self.idx = self.val = self.w = None
        if k.mode == "gather":
            self.mode = "identity" if k.identity else "gather"
            self.idx = k.idx.cpu().numpy()
            self.val = None if k.unit else k.val.cpu().numpy()[:, None]
        elif k.mode == "dense" and k.float:
            self.mode = "float"
            w = k.wt.T.cpu().numpy().astype(_F64)
            e = self.exp
            if 0 < e and float(np.abs(w).sum(1).max()) * 2 ** (e + 31) < fx.F64_EXACT:
                w, self.exp = w * 2 ** e, 0              # exact: the left shift folded in
            self.w = np.ascontiguousarray(w)
        elif k.mode == "dense":
            self.mode = "int"
            self.w = np.ascontiguousarray(k.wt.T.cpu().numpy().astype(_I64))
        else:
            self.mode = "products"
            self.w = k.wfull.cpu().numpy().astype(_I64)
        self.scale = 2.0 ** self.exp

    def __call__(self, x: np.ndarray) -> np.ndarray:
        m = self.mode
        if m == "float":
            y = (self.w @ x).astype(_I64)
        elif m == "identity":
            y = x.astype(_I64)
        elif m == "gather":
            y = x.take(self.idx, 0).astype(_I64)
            if self.val is not None:
                y = y * self.val
        elif m == "int":
            y = self.w @ x.astype(_I64)
        else:                       # DelayDense: int32 products, summed in int64
            y = wrap32(self.w[:, :, None] * x.astype(_I64)[None]).sum(1)
        if self.inner:
            y = wrap32(y)
        return fx.shift(y, self.exp)

    def exact_in_float(self) -> bool:
        """Whether ``as_float`` is exact: no int32 wrap inside (the port's bound is checked
        by the caller) and a gather or float64 matmul."""
        return not self.inner and self.mode in ("float", "identity", "gather")

    def as_float(self, x: np.ndarray) -> np.ndarray:
        """The same output as ``__call__``, in float64 (only where ``exact_in_float``):
        ``a << e`` is ``a * 2^e`` and ``a >> e`` is ``floor(a / 2^e)``, both exact."""
        m = self.mode
        if m == "float":
            y = self.w @ x
        elif m == "identity":
            y = x
        else:
            y = x.take(self.idx, 0)
            if self.val is not None:
                y = y * self.val
        if self.exp > 0:
            return y * self.scale
        if self.exp < 0:
            return np.floor(y * self.scale)
        return y


class _Pop:
    """Constants of one non-input population and its incoming synapses per port."""

    __slots__ = ("i", "name", "kind", "ports", "wraps", "lif", "reset_res", "lazy", "rule",
                 "srule", "si", "params", "wrap", "li", "fl", "decay", "dexp")


class NumpyEngine:
    """Global-time state and step of one QGraph for ``batch`` sequences, numpy on the CPU.

    ``step(inject)`` advances one global step; ``outputs()`` is the list of the
    current outputs (float64 ``(size, B)`` or ``None``) in ``names`` order.
    """

    def __init__(self, qgraph, plan, batch: int):
        self.q, self.B, self.W = qgraph, int(batch), qgraph.window
        self.names: List[str] = list(plan.order)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.sizes = [qgraph.pop(n).size for n in self.names]
        self.lif_names: List[str] = []
        self.stateful: List[int] = []          # fx.STATEFUL populations
        self.consumers: List[list] = [[] for _ in self.names]   # (population, lag) per source
        lags = [1]
        self.pops: List[_Pop] = []
        for name in self.names:
            pop = qgraph.pop(name)
            if pop.kind == "input":
                continue
            p = _Pop()
            p.i, p.name, p.kind = self.index[name], name, pop.kind
            p.ports, p.wraps, p.rule = [], [], fx.ELEMENTWISE.get(pop.kind)
            p.srule = fx.STATEFUL.get(pop.kind)
            for pp in plan.ports[name].values():
                syns = [_Syn(k, self.index[s], 1 + k.delay) for k, s in zip(pp.synapses, pp.srcs)]
                lags += [s.lag for s in syns]
                for s in syns:
                    self.consumers[s.src].append((p.i, s.lag))
                p.ports.append(syns)
                p.wraps.append(pp.bound is None)
            if pop.kind == "lif":
                c = plan.lif[name]
                # the shared LIF constants with numpy values: an int, or a (size, 1) column
                bias = c.bias.cpu().numpy().astype(_I64)[:, None] if torch.is_tensor(c.bias) \
                    else int(c.bias)
                p.lif = fx.LifParams(int(c.fu), int(c.fv), int(c.vth6), bias,
                                     c.act_wrap, c.u_wrap, c.v_wrap)
                p.reset_res = pop.depth % self.W           # LIFReset clears u, v at g = depth
                p.lazy = _no_bias(bias)                     # silent without input (see module doc)
                # no wrap can happen: u, v in float64 (fewer ops), exact below 2^53
                p.fl = (p.lif.fu == 0 and not (c.act_wrap or c.u_wrap or c.v_wrap or p.wraps[0])
                        and all(s.exact_in_float() for s in p.ports[0]))
                p.li = len(self.lif_names)
                self.lif_names.append(name)
            elif p.rule is not None:                       # a stateless kind
                p.params = tuple(_np_param(getattr(pop, f)) for f in p.rule.params)
                p.wrap = plan.elem_wrap[name]
            elif p.srule is not None:                      # a stateful kind: every step
                p.params = tuple(_np_param(getattr(pop, f)) for f in p.srule.params)
                p.wrap = plan.elem_wrap[name]
                p.reset_res = pop.depth % self.W
                p.si = len(self.stateful)
                self.stateful.append(p.i)
            else:
                p.wrap = plan.accum_wrap[name]
                p.decay = (np.asarray(pop.decay, _I64)[:, None] if pop.decaying else None)
                p.dexp = int(pop.decay_exp)
            self.pops.append(p)
        self.L = max(lags) + 1
        self.by_index = {p.i: p for p in self.pops}
        self.accums = [p.i for p in self.pops if p.kind == "accum"]
        self.always = {p.i for p in self.pops if (p.kind == "lif" and not p.lazy)
                       or p.srule is not None}
        # an accum that kept its value need not wake a prod with a port fed by no accum: the
        # prod is zero unless that port's sources sent, and they wake it
        kinds = [qgraph.pop(n).kind for n in self.names]
        gated = {p.i for p in self.pops if p.rule is not None and p.rule.needs_all_ports and
                 any(all(kinds[s.src] != "accum" for s in port) for port in p.ports)}
        self.carry_consumers = {i: [(c, lag) for c, lag in self.consumers[i] if c not in gated]
                                for i in self.accums}
        self.record: Optional[list] = None
        self.record_states = False
        self.reset()

    def reset(self) -> None:
        P, nl, L = len(self.names), len(self.lif_names), self.L
        self.g = 0
        self.hist: List[List[Optional[np.ndarray]]] = [[None] * P for _ in range(L)]
        # todo[g % L]: populations that may have work at step g (a source was active
        # at g - lag, or the population cannot be skipped); the others are silent
        self.todo: List[set] = [set() for _ in range(L)]
        self.u: List[Optional[np.ndarray]] = [None] * nl
        self.v: List[Optional[np.ndarray]] = [None] * nl
        self.last = [-1] * nl                 # step of the last update of u, v
        self.acc: Dict[int, Optional[np.ndarray]] = {i: None for i in self.accums}
        self.states: List[Optional[list]] = [None] * len(self.stateful)
        if self.record is not None:
            self.record = []

    def outputs(self) -> List[Optional[np.ndarray]]:
        return self.hist[(self.g - 1) % self.L]

    # ------------------------------------------------------------------ step
    def step(self, inject: Optional[Dict[str, np.ndarray]] = None) -> None:
        """One global step ``g`` (Lava's ``time_step = g + 1``)."""
        g, L = self.g, self.L
        hist, todo_ring, cons = self.hist, self.todo, self.consumers
        rows = [hist[(g - lag) % L] for lag in range(L)]   # rows[lag]: outputs of g - lag
        cur = [None] * len(self.names)
        if inject:
            for name, f in inject.items():
                if f is not None and np.count_nonzero(f):
                    cur[self.index[name]] = f
        for i in self.accums:                  # an accum without input keeps its value
            cur[i] = rows[1][i]
        todo = todo_ring[g % L]
        todo_ring[g % L] = set()
        eager = self.record_states
        drained = self.drained = set()         # decaying accums that only decayed at g
        for p in (self.pops if eager else [self.by_index[i] for i in todo | self.always]):
            cur[p.i] = self._update(p, rows, g, eager)
        for i, o in enumerate(cur):            # schedule the consumers of what was sent
            if o is not None:
                for c, lag in (self.carry_consumers[i] if i in self.acc and (
                        o is rows[1][i] or i in drained) else cons[i]):
                    todo_ring[(g + lag) % L].add(c)
        hist[g % L] = cur
        if self.record is not None:
            self.record.append((cur, list(self.u), list(self.v)) if eager else (cur,))
        self.g = g + 1

    def _update(self, p: _Pop, rows, g: int, eager: bool) -> Optional[np.ndarray]:
        """Output of population ``p`` at step ``g`` (``None``: all zero)."""
        if p.rule is not None:                 # a stateless kind (fx.ELEMENTWISE)
            live = [_live(s, rows) for s in p.ports]
            if not (all(live) if p.rule.needs_all_ports else any(live)):
                return None                    # e.g. a product: 0 * a >> e = 0
            vals = [_port(s, rows, w) if ok else np.zeros((self.sizes[p.i], self.B), _I64)
                    for s, w, ok in zip(p.ports, p.wraps, live)]
            o = p.rule.update(vals, p.wrap, *p.params)
            return o.astype(_F64) if np.count_nonzero(o) else None
        if p.srule is not None:
            return self._stateful(p, rows, g)
        if p.kind == "lif":
            return self._lif(p, _port_f(p.ports[0], rows) if p.fl else
                             _port(p.ports[0], rows, p.wraps[0]), g, eager)
        a = _port(p.ports[0], rows, p.wraps[0])
        if p.decay is not None:
            return self._decaying_accum(p, a, rows, g)
        if a is None:                          # accum: out[g] = out[g-1] + a[g]
            return rows[1][p.i]
        prev = self.acc[p.i]
        acc = fx.accum_step(a, wrap=p.wrap) if prev is None else fx.accum_step(prev, a, wrap=p.wrap)
        self.acc[p.i] = acc
        return acc.astype(_F64) if np.count_nonzero(acc) else None

    def _stateful(self, p: _Pop, rows, g: int) -> Optional[np.ndarray]:
        """A ``fixed_point.STATEFUL`` kind at step ``g``: updated at every step, its state
        cleared at each window's first step where the kind resets each token."""
        zero = np.zeros((self.sizes[p.i], self.B), _I64)
        vals = [_port(s, rows, w) if _live(s, rows) else zero for s, w in zip(p.ports, p.wraps)]
        state = self.states[p.si]
        if state is None or (p.srule.reset_each_token and g % self.W == p.reset_res):
            state = [zero] * len(p.srule.state)
        o, self.states[p.si] = p.srule.update(vals, list(state), p.wrap, *p.params)
        return o.astype(_F64) if np.count_nonzero(o) else None

    def _decaying_accum(self, p: _Pop, a: Optional[np.ndarray], rows, g: int):
        """``fixed_point.accum_step`` with decay at step ``g``; a non-zero state that is not
        a fixed point of the decay is visited again at ``g + 1`` (drain steps included)."""
        prev = self.acc[p.i]
        if a is None:
            if prev is None:
                return None
            self.drained.add(p.i)
        acc = fx.accum_step(np.zeros((self.sizes[p.i], self.B), _I64) if prev is None else prev,
                            a, p.decay, p.dexp, p.wrap)
        if a is None and np.array_equal(acc, prev):
            return rows[1][p.i]                # a fixed point of the decay: kept, not revisited
        if not np.count_nonzero(acc):
            self.acc[p.i] = None
            return None
        self.acc[p.i] = acc
        self.todo[(g + 1) % self.L].add(p.i)
        return acc.astype(_F64)

    def _lif(self, p: _Pop, a: Optional[np.ndarray], g: int, eager: bool):
        """PyLifResetModelBitAcc at step ``g``, first catching up the steps it was skipped:
        a ``LIFReset`` among them zeroes u, v; otherwise each was a step without input
        (``u`` -> 0, ``v`` decays once)."""
        li = p.li
        u, v, last = self.u[li], self.v[li], self.last[li]
        self.last[li] = g
        r, W = p.reset_res, self.W
        if (g - r) // W != (last - r) // W:    # LIFReset at some g' in (last, g]
            u = v = None
        elif g - last > 1:
            u = None
            if v is not None:
                for _ in range(g - last - 1):
                    v = fx.decay(v, p.lif.fv)
        c = p.lif
        if a is None and p.lazy and (u is None or c.fu == 0):
            # no input: u -> 0, v decays, no spike (only reached when recording states)
            self.u[li] = None
            self.v[li] = None if v is None else fx.decay(v, c.fv)
            return None
        if a is None:
            a = np.zeros((self.sizes[p.i], self.B), _F64 if p.fl else _I64)
        # p.fl: u = a << 6 (du = 4095), all in float64
        s, u, vv = fx.lif_step(a, u, v, c)
        self.u[li], self.v[li] = u, vv
        if c.fu and not eager and np.count_nonzero(u):     # a leaky current: work at the next step too
            self.todo[(g + 1) % self.L].add(p.i)
        return s.astype(_F64) if np.count_nonzero(s) else None

    # ------------------------------------------------------------- recording
    def recorded(self) -> Dict[str, np.ndarray]:
        """Recorded steps as {name: (G, size, B) int64} (and ``name.u`` / ``name.v``)."""
        rec = self.record or []
        G, B = len(rec), self.B
        res = {}
        for i, name in enumerate(self.names):
            arr = np.zeros((G, self.sizes[i], B), _I64)
            for h, r in enumerate(rec):
                o = r[0][i]
                if o is not None:
                    arr[h] = o
            res[name] = arr
        if rec and self.record_states:
            for li, name in enumerate(self.lif_names):
                size = self.sizes[self.index[name]]
                for j, key in ((1, ".u"), (2, ".v")):
                    arr = np.zeros((G, size, B), _I64)
                    for h, r in enumerate(rec):
                        if r[j][li] is not None:
                            arr[h] = r[j][li]
                    res[name + key] = arr
        return res

    def recorded_one(self, name: str, steps: Optional[int] = None) -> np.ndarray:
        """The first ``steps`` recorded steps of one population, (G, size, B) int64
        (``recorded`` builds every population at once; this keeps memory to one)."""
        rec = (self.record or [])[:steps]
        i = self.index[name]
        arr = np.zeros((len(rec), self.sizes[i], self.B), _I64)
        for h, r in enumerate(rec):
            o = r[0][i]
            if o is not None:
                arr[h] = o
        return arr

    def token_time(self, N: int, T: int, depth: Dict[str, int]) -> Dict[str, np.ndarray]:
        """Recorded outputs at ``g = n*W + t + depth`` as {name: (N, T, size, B) int64},
        without building the whole global-time record."""
        rec = self.record or []
        res = {}
        for i, name in enumerate(self.names):
            arr = np.zeros((N, T, self.sizes[i], self.B), _I64)
            d = depth[name]
            for n in range(N):
                for t in range(T):
                    o = rec[n * self.W + t + d][0][i]
                    if o is not None:
                        arr[n, t] = o
            res[name] = arr
        return res


def _np_param(x):
    """A population field as a stateless update takes it: an int, or a (size, 1) column."""
    a = np.asarray(x)
    return int(a) if a.ndim == 0 else a.astype(_I64).reshape(-1, 1)


def _no_bias(b) -> bool:
    return bool(np.all(np.asarray(b) == 0))


def _live(syns: List[_Syn], rows) -> bool:
    """Whether any synapse of a port delivers something (its source was active)."""
    for s in syns:
        if rows[s.lag][s.src] is not None:
            return True
    return False


def _port_f(syns: List[_Syn], rows) -> Optional[np.ndarray]:
    """``_port`` in float64, for ports whose sum provably needs no wrap."""
    a = None
    for s in syns:
        x = rows[s.lag][s.src]
        if x is None:
            continue
        y = s.as_float(x)
        a = y if a is None else a + y
    return a


def _port(syns: List[_Syn], rows, wrap: bool) -> Optional[np.ndarray]:
    """Sum of a port's synapses whose source was active; ``None`` when none was."""
    a = None
    for s in syns:
        x = rows[s.lag][s.src]
        if x is None:
            continue
        y = s(x)
        a = y if a is None else a + y
    if wrap and a is not None:
        a = wrap32(a)
    return a
