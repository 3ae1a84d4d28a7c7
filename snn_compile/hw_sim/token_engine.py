"""Token-time engine: the integer reference's schedule in numpy, for streaming at small batch.

On a streamable graph (``qgraph.check_streamable``) the token-time outputs of Lava's
global-time run equal those of the token-time reference (``int_reference``), which
computes each population once per token on all T steps of the token. At batch 1 that
order is also the fast one: a global-time engine pays numpy's per-operation cost at each
of the W steps of a window, this one once per population and token:

* a synapse is one operation on the (N * T * B, size) outputs of its source: a matmul
  (on few rows or mostly zero sources ``jit.rows_matmul``, which adds the weight rows of
  the non-zeros), a gather (also of a sparse matrix's nonzeros), or the int64 forms of
  ``fixed_point.SynapseKernel`` (``_In``);
* a LIF loops over its T steps (``fixed_point.lif_token_float`` where nothing wraps,
  else ``fixed_point.lif_step``), adding its self-loops step by step;
* a stateless kind (``fixed_point.ELEMENTWISE``) is one update on all T steps; a
  stateful one (``fixed_point.STATEFUL``) steps its update (``stateful_token``);
* an accum without decay is a cumulative sum over the T steps plus its value before
  the token; a decaying one steps ``out = out + ((-decay * out) >> decay_exp) + a``.
  Between two tokens every decaying memory takes the W - T input-free steps of its
  window's drain; they depend on no input of the next token, so the drains of all
  memories run in one loop on their stacked state (float64 where no int32 wrap can
  happen: ``x * (-decay / 2^e)`` is exact there and ``floor`` is the arithmetic shift).

The loops over neurons, non-zeros and drain steps are numba-compiled (``loihi/jit.py``):
at batch 1 a token is a few rows per population, and numpy's cost of starting each
operation, not the arithmetic, set the pace.

Which form a synapse or LIF takes is decided on the values at hand where static bounds
are too loose: the float forms are taken only where they give the integer forms' numbers.
The arithmetic is ``fixed_point``'s, the schedule ``int_reference.compute_population``'s;
``tests/test_token_engine.py`` checks every population's outputs against the reference
token by token. Outputs are float64 arrays ``(T, B, size)`` (int32-valued, exact).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import Dict, List, Optional

import numpy as np

from snn_compile.compiler.qgraph import POPULATION_TYPES, QGraph, QGraphError
from snn_compile.errors import UserError
from snn_compile.hw_sim import token_program
from snn_compile.hw_sim.emulator_numpy import _Syn
from snn_compile.hw_sim.int_reference import GraphPlan, input_frames, plan_graph, population_pass
from snn_compile.loihi import fixed_point as fx
from snn_compile.loihi import jit

_F64 = np.float64
_I64 = np.int64
F32_EXACT = float(fx.F32_EXACT)
# a LIF with u = a << 6 (du = 4095) wraps nothing while |a| < 2^17: |u| < 2^23 (no
# 24-bit wrap) and |v| + |u| + |bias| stays inside int32
LIF_FLOAT_INPUT = fx.STATE_MAX >> fx.ACT_SHIFT


class _In:
    """One synapse of a port in row layout (rows = the T * B steps of a token), built on
    the numpy engine's kernel (``emulator_numpy._Syn``: modes, weights, exponent).

    Each call checks what the values at hand allow (``_amax``: the source's largest
    magnitude): a float64 matmul also keeps its weights in float32 and uses them on a
    source of spikes, or of values whose largest magnitude times the largest row sum of
    ``|w|`` stays below 2^24 (every partial sum is then an integer float32 holds
    exactly), or, for larger values, on their two halves ``x = hi * 2^k + lo`` stacked
    into one matmul; a matrix with few nonzeros per row (``fixed_point.sparse_rows``: an
    attention head's read-out sums 16 of 2048 values) is a gather of its K nonzero
    columns per row, exact in float64; a graded synapse whose int32 dot product may wrap (``inner``) has a
    float form on values too small for the wrap to happen. A source read by several
    synapses is cast to float32 and measured once per chunk (``_Rows``)."""

    __slots__ = ("syn", "src", "tlag", "slag", "spikes", "bound", "wt", "w32", "idx", "val",
                 "gval", "rowabs", "sidx", "sval")

    def __init__(self, k: fx.SynapseKernel, src: int, tlag: int, slag: int, spikes: bool,
                 bound: Optional[int] = None):
        syn = self.syn = _Syn(k, src, 1)
        self.src, self.tlag, self.slag, self.spikes = src, tlag, slag, spikes
        self.bound = None if bound is None else float(bound)     # of |source|, static
        self.wt = self.w32 = self.idx = self.val = self.gval = self.sidx = self.sval = None
        self.rowabs = 1.0
        if syn.mode in ("float", "int"):
            self.wt = np.ascontiguousarray(syn.w.T)            # (src, dst)
        if syn.mode == "float":
            self.rowabs = float(np.abs(syn.w).sum(axis=1).max()) if syn.w.size else 0.0
            if not spikes or self.rowabs < F32_EXACT:
                self.w32 = self.wt.astype(np.float32)
            sp = fx.sparse_rows(syn.w)          # on the weights with their shift folded in
            if sp is not None:
                self.sidx, self.sval = sp[0], sp[1].astype(_F64)
        elif syn.mode == "gather":
            self.idx = np.ascontiguousarray(syn.idx, _I64)
            self.gval = np.zeros(0)
            if syn.val is not None:
                self.val = syn.val.reshape(-1)
                self.gval = self.val.astype(_F64)
                self.rowabs = float(np.abs(self.val).max())

    def float_form(self, r: "_Rows", out: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
        """The synapse's output on the rows ``r`` (rows, src) in float (exact integers),
        before its outer int32 wrap, added into ``out`` where given (a port's running
        sum, returned); ``None`` where a float form could differ from the int one."""
        syn = self.syn
        m = syn.mode
        if m not in ("float", "identity", "gather"):
            return None
        x = r.x
        # the source's largest magnitude: 1 for spikes, else a static bound where it is
        # enough for the float64 forms, else measured (once per chunk and source)
        amax = 1.0 if self.spikes else self.bound
        if amax is None or amax * self.rowabs >= (fx.I32 if syn.inner else fx.F64_EXACT):
            amax = r.amax()
        if syn.inner and amax * self.rowabs >= fx.I32:
            return None
        add = out is not None
        if m == "gather":
            o = out if add else np.empty((x.shape[0], self.idx.shape[0]))
            return jit.gather(x, self.idx, self.gval, syn.scale, syn.exp < 0, add, o)
        if m == "float" and amax * self.rowabs < fx.F64_EXACT:
            # every product and partial sum an integer below 2^53: exact in float64
            if self.sidx is not None:
                o = out if add else np.empty((x.shape[0], self.sidx.shape[1]))
                return jit.sparse_gather(x, self.sidx, self.sval, syn.scale, syn.exp < 0,
                                         add, o)
            if r.few_nonzeros():        # the weight rows of x's non-zeros, added
                o = out if add else np.empty((x.shape[0], self.wt.shape[1]))
                return jit.rows_matmul(x, self.wt, syn.scale, syn.exp < 0, add, o)
        if not self.spikes and m != "identity":
            amax = r.amax()             # the tightest value for the float32 forms
        if m == "identity":
            y = x
        elif self.w32 is not None and amax * self.rowabs < F32_EXACT:
            # float64 from here on: sums with other synapses may pass 2^24
            y = (r.f32() @ self.w32).astype(_F64)
        elif self.w32 is not None and _halves(amax, self.rowabs):
            # x = hi * 2^k + lo with 0 <= lo < 2^k: both halves' sums stay below 2^24, so
            # one float32 matmul of the stacked halves (the weights read once) is exact
            k = _halves(amax, self.rowabs)
            hi = np.floor(x / k)
            y2 = (np.concatenate([hi, x - hi * k]).astype(np.float32) @ self.w32).astype(_F64)
            n = x.shape[0]
            y = y2[:n] * k + y2[n:]
        else:
            y = x @ self.wt
        if syn.exp > 0:
            y = y * syn.scale
        elif syn.exp < 0:
            y = np.floor(y * syn.scale)
        if add:
            out += y
            return out
        return y

    def int_form(self, r: "_Rows") -> np.ndarray:
        """The synapse's output as ``fixed_point.SynapseKernel`` delivers it before its
        outer int32 wrap, int64."""
        y = self.float_form(r) if self.spikes else None
        if y is not None:
            return y.astype(_I64)
        x = r.x
        syn = self.syn
        m = syn.mode
        if m == "float":
            y = (x @ self.wt).astype(_I64)
        elif m == "identity":
            y = x.astype(_I64)
        elif m == "gather":
            y = x.take(self.idx, axis=1).astype(_I64)
            if self.val is not None:
                y = y * self.val
        elif m == "int":
            y = x.astype(_I64) @ self.wt
        else:                       # DelayDense: int32 products, summed in int64
            y = fx.wrap32(x.astype(_I64)[:, None, :] * syn.w[None]).sum(-1)
        if syn.inner:
            y = fx.wrap32(y)
        return fx.shift(y, syn.exp)


# ``jit.rows_matmul`` (adding the weight rows of x's non-zeros) is taken over a float32 BLAS
# matmul on up to JIT_ROWS rows, where BLAS's fixed cost per call dominates, and on more
# where at most 1 in JIT_DENSITY entries is non-zero: a blocked BLAS multiply-add is about
# 8 x cheaper than one added weight row entry on the 2-core CPU (the break-even chosen
# from timing both on 128 x 512 weights; `bench_emulator --chunk` shows the result)
JIT_ROWS = 16
JIT_DENSITY = 8


class _Rows:
    """A synapse's source in row layout ``x`` (rows, src) float64, with its float32 copy,
    largest magnitude and sparsity computed once however many synapses read it."""

    __slots__ = ("x", "_f32", "_amax", "_few")

    def __init__(self, x: np.ndarray):
        self.x, self._f32, self._amax, self._few = np.ascontiguousarray(x), None, None, None

    def few_nonzeros(self) -> bool:
        """Few enough rows or non-zeros for ``jit.rows_matmul``."""
        if self._few is None:
            x = self.x
            self._few = x.shape[0] <= JIT_ROWS or \
                np.count_nonzero(x) * JIT_DENSITY <= x.size
        return self._few

    def f32(self) -> np.ndarray:
        if self._f32 is None:
            self._f32 = self.x.astype(np.float32)
        return self._f32

    def amax(self) -> float:
        if self._amax is None:
            self._amax = _amax(self.x)
        return self._amax


def _halves(amax: float, rowabs: float) -> float:
    """The split ``2^k`` for which both halves of values up to ``amax`` (``|hi| <= amax /
    2^k + 1``, ``0 <= lo < 2^k``) keep a row's sum below 2^24; 0 when there is none."""
    k = 2.0 ** np.ceil(np.log2(amax * rowabs / F32_EXACT + 1.0))
    ok = rowabs * k < F32_EXACT and rowabs * (amax / k + 1.0) < F32_EXACT
    return k if ok else 0.0


def _amax(x: np.ndarray) -> float:
    return float(max(x.max(), -x.min())) if x.size else 0.0


def _row_param(x):
    """A population field as a row-layout update takes it: an int, or a (size,) row."""
    a = np.asarray(x)
    return int(a) if a.ndim == 0 else a.astype(_I64).reshape(-1)


class _Pop:
    __slots__ = ("i", "name", "kind", "size", "ports", "wraps", "loops", "lif", "lif_float",
                 "fl", "fl_check", "loop_max", "rule", "rule_float", "fused", "srule", "params",
                 "wrap", "mem")


class TokenEngine:
    """Token-time run of one ``QGraph`` for ``batch`` sequences, numpy on the CPU, one token
    at a time (streaming) or a chunk of tokens at a time (a given text: scoring, prefill).

    ``step_frames({input: (T, B, size)})`` runs one token and returns the readout summed
    over its T steps, ``(B, V)`` int64; ``step_token(tokens (B,), positions (B,))`` makes
    the one-hot frames of a decoder. ``step_chunk({input: (N, T, B, size)})`` and
    ``step_tokens(tokens (B, N))`` run N tokens and return ``(N, B, V)``: each population
    once for all N tokens (the integer reference's schedule, ``int_reference``), so its
    synapses are matmuls of N * T * B rows and numpy's per-operation cost is paid once per
    chunk. Only the memories' recursions (``_decaying``) and the stateful kinds step token
    by token. Both give the same numbers; a chunk of one token is a streaming step.
    ``outputs`` holds the last token's outputs ``(T, B, size)`` float64 of every
    population, in ``names`` order (``chunk_outputs``: ``(N, T, B, size)`` of the last
    call). ``reset()`` starts fresh sequences. A single token (streaming) runs as one
    compiled call where the graph has a table (``token_program``; ``program_why_not``
    says why not, ``compiled_step=False`` turns it off), with the same numbers.
    """

    def __init__(self, qgraph: QGraph, batch: int = 1, plan: Optional[GraphPlan] = None,
                 compiled_step: bool = True):
        self.q, self.B = qgraph, int(batch)
        self.program = None
        self.plan = plan or plan_graph(qgraph, "cpu")
        if self.plan.device.type != "cpu":
            raise ValueError("the token-time engine runs on the CPU")
        self.T, self.W = qgraph.steps_per_token, qgraph.window
        self.names: List[str] = list(self.plan.order)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.sizes = [qgraph.pop(n).size for n in self.names]
        self.readout = self.index[qgraph.readout]
        self.history: Dict[int, int] = {self.index[n]: L for n, L in self.plan.history.items()}
        self.pops: List[_Pop] = []
        mems = []
        for name in self.names:
            pop = qgraph.pop(name)
            if pop.kind == "input":
                continue
            self.pops.append(self._population(name, pop))
            if pop.kind == "accum" and pop.decaying:
                mems.append((self.pops[-1], pop))
        # the decaying memories' state, stacked: one drain loop for all of them
        r, dec, dexp = 0, [], []
        for p, pop in mems:
            p.mem = slice(r, r + p.size)
            r += p.size
            dec.append(np.asarray([int(x) for x in pop.decay], _I64))
            dexp.append(np.full(p.size, int(pop.decay_exp), _I64))
        self.n_mem = r
        # int64 steps where a wrap may happen or the float form's exponent is too large
        self.mem_wrap = any(p.wrap or int(pop.decay_exp) > fx.ACCUM_FLOAT_EXP
                            for p, pop in mems)
        if mems:
            self.dec, self.dexp = np.concatenate(dec), np.concatenate(dexp)
            # one decay step without input is floor(out * lam) where no wrap can happen
            # (fixed_point.accum_step_float), two operations per step
            self.lam = fx.accum_lambda(self.dec, self.dexp)
        self.reset()
        # one token in one compiled call (token_program) where a token is few rows
        self.program_why_not: Optional[str] = "off (compiled_step=False)"
        if compiled_step and self.T * self.B > JIT_ROWS:
            self.program_why_not = (f"{self.T} x {self.B} rows per token (more than "
                                    f"{JIT_ROWS}: the per-population forms use BLAS)")
        elif compiled_step:
            self.program, self.program_why_not = token_program.build(self)

    def _population(self, name: str, pop) -> _Pop:
        """Constants and synapses of one non-input population."""
        q = self.q
        p = _Pop()
        p.i, p.name, p.kind, p.size = self.index[name], name, pop.kind, pop.size
        p.ports, p.wraps, p.loops, p.mem = [], [], [], None
        p.rule = fx.ELEMENTWISE.get(pop.kind)
        p.srule = p.fused = None
        for pp in self.plan.ports[name].values():
            ins = []
            for k, src, tlag, slag in zip(pp.synapses, pp.srcs, pp.lags,
                                          pp.steps or [0] * len(pp.srcs)):
                kind = q.pop(src).kind
                spikes = kind != "input" and not POPULATION_TYPES[kind].graded
                s = _In(k, self.index[src], tlag, slag, spikes, self.plan.out_bound.get(src))
                (p.loops if src == name else ins).append(s)
            p.ports.append(ins)
            # a port whose sum is unbounded is int32-wrapped once, after the sum (each
            # synapse's own output wrap commutes with the sum's)
            p.wraps.append(pp.bound is None)
        if pop.kind == "lif":
            c = self.plan.lif[name]
            bias = c.bias.cpu().numpy().astype(_I64) if hasattr(c.bias, "cpu") else int(c.bias)
            p.lif = fx.LifParams(int(c.fu), int(c.fv), int(c.vth6), bias,
                                 c.act_wrap, c.u_wrap, c.v_wrap)
            p.lif_float = dataclasses.replace(p.lif, act_wrap=False, u_wrap=False,
                                              v_wrap=False)
            syns = p.ports[0] + p.loops
            # float64 where no wrap can happen: always when the bounds say so, else at
            # each token whose input is small enough (|a| + |self-loops| < 2^17). Two
            # float64 sums of exact integers below 2^53 are exact when the result is small.
            p.fl = (p.lif.fu == 0 and not (c.act_wrap or c.u_wrap or c.v_wrap)
                    and self.plan.ports[name]["a_in"].bound is not None
                    and all(s.syn.exact_in_float() for s in syns))
            bmax = int(np.abs(np.asarray(bias)).max(initial=0))
            p.fl_check = (not p.fl and p.lif.fu == 0 and len(p.ports[0]) <= 2
                          and all(s.syn.mode in ("float", "identity", "gather") for s in syns)
                          and 2 * fx.STATE_MAX + bmax < fx.I32)
            p.loop_max = sum(s.rowabs for s in p.loops)
        elif p.rule is not None:
            p.params = tuple(_row_param(getattr(pop, f)) for f in p.rule.params)
            p.wrap = self.plan.elem_wrap[name]
            p.rule_float = (p.rule.float_update is not None and not p.wrap
                            and not any(p.wraps))
            syns = [port[0] for port in p.ports if len(port) == 1]
            if (p.rule_float and pop.kind == "prod" and len(syns) == 2 == len(p.ports)
                    and all(s.syn.mode in ("gather", "identity") and not s.syn.inner
                            for s in syns)
                    and all(np.ndim(v) == 0 for v in p.params)):
                for s in syns:
                    if s.syn.mode == "identity":
                        s.idx, s.gval = np.arange(pop.size, dtype=_I64), np.zeros(0)
                exp, vth = p.params
                p.fused = (tuple(syns), 2.0 ** -int(exp), float(vth))
        elif pop.kind in fx.STATEFUL:
            p.srule = fx.STATEFUL[pop.kind]
            p.params = tuple(_row_param(getattr(pop, f)) for f in p.srule.params)
            p.wrap = self.plan.elem_wrap[name]
        else:                        # accum (plan_graph refuses every other kind)
            p.wrap = self.plan.accum_wrap[name]
        return p

    def reset(self) -> None:
        """Fresh sequences: memories at zero, no token-shift history, position 0."""
        self.n = 0
        self._cache: Dict[tuple, _Rows] = {}
        self.chunk_outputs: List[Optional[np.ndarray]] = [None] * len(self.names)
        self.past: Dict[int, List[np.ndarray]] = {}
        self.acc: Dict[int, np.ndarray] = {}
        self.states: Dict[int, list] = {}     # fx.STATEFUL kinds: state after the last token
        self.mem = np.zeros((self.B, self.n_mem), _I64 if self.mem_wrap else _F64)
        if self.program is not None:
            self.program.invalidate()

    @property
    def outputs(self) -> List[Optional[np.ndarray]]:
        """The last token's outputs ``(T, B, size)`` of every population, ``names`` order."""
        return [None if o is None else o[-1] for o in self.chunk_outputs]

    # ----------------------------------------------------------------- token
    def step_token(self, tokens, positions=None) -> np.ndarray:
        """One token per sequence: ids (B,) (positions default to the token count since
        ``reset``) -> readout sums (B, V) int64."""
        tok = np.asarray(tokens, _I64).reshape(-1)
        if tok.shape != (self.B,):
            raise UserError(f"step_token takes {self.B} token ids, got {tok.shape[0]}")
        pos = None if positions is None else np.asarray(positions, _I64).reshape(-1, 1)
        return self.step_tokens(tok[:, None], pos)[0]

    def step_tokens(self, tokens, positions=None) -> np.ndarray:
        """N tokens per sequence: ids (B, N) (positions (B, N) default to the token count
        since ``reset`` onwards) -> readout sums (N, B, V) int64."""
        tok = np.asarray(tokens, _I64)
        tok = tok.reshape(self.B, -1) if tok.ndim == 1 and self.B == 1 else tok
        if tok.ndim != 2 or tok.shape[0] != self.B:
            raise UserError(f"step_tokens takes token ids of shape ({self.B}, N), got "
                            f"{tok.shape}")
        N = tok.shape[1]
        self._check_context(N)
        pos = np.broadcast_to(np.arange(self.n, self.n + N, dtype=_I64), tok.shape) \
            if positions is None else np.asarray(positions, _I64).reshape(tok.shape)
        if pos.shape != tok.shape:
            raise UserError(f"positions of shape {pos.shape} do not match tokens {tok.shape}")
        frames = {}
        for name in self.q.inputs:
            size = self.sizes[self.index[name]]
            ids = tok if name == "tokens" else pos if name == "positions" else None
            if ids is None:
                raise QGraphError(f"input population {name!r} is neither 'tokens' nor "
                                  "'positions'; give its frames (step_chunk)")
            if ids.size and (ids.min() < 0 or ids.max() >= size):
                bad = int(ids.max()) if ids.max() >= size else int(ids.min())
                raise UserError(f"{name[:-1]} {bad} is outside 0..{size - 1} of input {name!r}")
            oh = np.zeros((N, self.T, self.B, size), _F64)
            oh[np.arange(N)[:, None], :, np.arange(self.B)[None, :], ids.T] = 1.0
            frames[name] = oh
        return self.step_chunk(frames)

    def step_frames(self, frames: Dict[str, np.ndarray]) -> np.ndarray:
        """One token from frames ``{input: (T, B, size)}``; readout sums (B, V) int64."""
        chunk = {}
        for name in self.q.inputs:
            shape = (self.T, self.B, self.sizes[self.index[name]])
            f = np.asarray(frames[name], _F64)
            if f.shape != shape:
                raise UserError(f"frames of input {name!r}: shape {f.shape}, expected {shape}")
            chunk[name] = f[None]
        return self.step_chunk(chunk)[0]

    def step_chunk(self, frames: Dict[str, np.ndarray]) -> np.ndarray:
        """N tokens from frames ``{input: (N, T, B, size)}``; readout sums (N, B, V) int64."""
        out = self.chunk_outputs
        N = None
        for name in self.q.inputs:
            f = np.asarray(frames[name], _F64)
            N = f.shape[0] if N is None and f.ndim == 4 else N
            shape = (N, self.T, self.B, self.sizes[self.index[name]])
            if f.shape != shape:
                raise UserError(f"frames of input {name!r}: shape {f.shape}, expected "
                                f"(N, T, B, size) = {shape}")
            out[self.index[name]] = np.ascontiguousarray(f)
        if not N:
            raise UserError("step_chunk needs at least one token")
        self._check_context(N)
        self.N = N
        self._cache = {}
        if self.n and self.n_mem:
            self._drain()
        # a single token: the compiled step where it runs (False: a value check failed)
        if not (N == 1 and self.program is not None and self.program.run(self)):
            for p in self.pops:
                out[p.i] = self._compute(p)
        for i, L in self.history.items():        # the last L tokens of token-shift sources
            h = self.past.setdefault(i, [])
            h.extend(out[i][max(0, N - L):])
            del h[:-L]
        self.n += N
        self._cache = {}
        return out[self.readout].sum(axis=1).astype(_I64)

    def _check_context(self, N: int) -> None:
        if self.q.context and self.n + N > self.q.context:
            raise UserError(f"position {self.q.context} is beyond the model's context "
                            f"{self.q.context}; reset and feed at most context tokens "
                            f"({self.n} fed, {N} more asked)")

    def _drain(self, sl: slice = slice(None)) -> None:
        """The W - T input-free steps of the decaying memories ``sl`` (all: stacked)
        since their last token."""
        m = self.mem[:, sl]
        if self.mem_wrap:
            dec, dexp = self.dec[sl], self.dexp[sl]
            for _ in range(self.W - self.T):
                m = fx.accum_step(m, None, dec, dexp, True)
            self.mem[:, sl] = m
            return
        jit.decay_floor(m, self.lam[sl], self.W - self.T)

    # ------------------------------------------------------------ populations
    def _rows(self, s: _In) -> _Rows:
        """The synapse's source in row layout (N * T * B, size), built once per chunk for
        every synapse that reads the same source with the same lags."""
        key = (s.src, s.tlag, s.slag)
        r = self._cache.get(key)
        if r is None:
            x = self._source(s)
            r = self._cache[key] = _Rows(x.reshape(-1, x.shape[-1]))
        return r

    def _source(self, s: _In) -> np.ndarray:
        """The source's outputs (N, T, B, size) as the synapse sees them: ``tlag`` tokens
        back (zeros before the first), shifted ``slag`` steps later within the token."""
        x = self.chunk_outputs[s.src]
        N, L = self.N, s.tlag
        if L:
            h = self.past.get(s.src, [])
            y = np.empty_like(x)
            y[L:] = x[:N - L]
            for n in range(min(L, N)):           # tokens before the chunk: the history
                k = len(h) - (L - n)
                y[n] = h[k] if k >= 0 else 0.0
            x = y
        if s.slag:
            y = np.zeros_like(x)
            if s.slag < self.T:
                y[:, s.slag:] = x[:, :self.T - s.slag]
            x = y
        return x

    def _port(self, p: _Pop, j: int, fl: bool) -> Optional[np.ndarray]:
        """Sum of the port's synapses (N, T, B, size). ``fl``: in float (exact integers),
        or ``None`` where a synapse has no exact float form for these values; else int64,
        int32-wrapped unless its bound says the sum stays in int32 (a LIF with self-loops
        wraps after adding them, step by step)."""
        acc = None
        shape = (self.N, self.T, self.B, p.size)
        syns = p.ports[j]
        for k, s in enumerate(syns):
            r = self._rows(s)
            if fl:                      # later synapses add into the first one's array
                y = s.float_form(r, acc)
                if y is r.x and k + 1 < len(syns):
                    y = y.copy()        # an identity's source itself: not ours to add into
            else:
                y = s.int_form(r)
                y = y if acc is None else acc + y
            if y is None:
                return None
            acc = y
        if acc is None:
            return np.zeros(shape, _F64 if fl else _I64)
        if p.wraps[j] and not fl and not p.loops:
            acc = fx.wrap32(acc)
        return acc.reshape(shape)

    def _compute(self, p: _Pop) -> np.ndarray:
        N, T, B = self.N, self.T, self.B
        if p.kind == "lif":
            return self._lif(p)
        if p.rule is not None:
            R = N * T * B
            if p.fused is not None:      # a prod of two gathers, in one compiled pass
                (s1, s2), escale, vth = p.fused
                out = np.empty((R, p.size))
                jit.prod_gathers(self._rows(s1).x, s1.idx, s1.gval, s1.syn.scale,
                                 s1.syn.exp < 0, self._rows(s2).x, s2.idx, s2.gval,
                                 s2.syn.scale, s2.syn.exp < 0, escale, vth, out)
                return out.reshape(N, T, B, p.size)
            if p.rule_float:             # no wrap anywhere: float64 ports and update
                vals = [self._port(p, j, True) for j in range(len(p.ports))]
                if all(v is not None for v in vals):
                    o = p.rule.float_update([v.reshape(R, -1) for v in vals], *p.params)
                    return o.reshape(N, T, B, p.size)
            vals = [self._port(p, j, False).reshape(R, -1) for j in range(len(p.ports))]
            o = p.rule.update(vals, p.wrap, *p.params)
            return o.astype(_F64).reshape(N, T, B, p.size)
        if p.srule is not None:                 # the state cleared, or carried by the drain
            vals = [self._port(p, j, False) for j in range(len(p.ports))]
            o = np.empty((N, T, B, p.size), _F64)
            for n in range(N):
                o[n], self.states[p.i] = fx.stateful_token(
                    p.srule, [v[n] for v in vals], self.states.get(p.i), p.wrap, p.params,
                    T, self.W - T)
            return o
        if p.mem is not None:
            a = None
            if not (self.mem_wrap or p.wraps[0]):
                a = self._port(p, 0, True)
            return self._decaying(p, self._port(p, 0, False) if a is None else a)
        a = self._port(p, 0, False)
        # an accum without decay: the cumulative sum over p = n * T + t
        prev = self.acc.get(p.i)
        a = a.reshape(N * T, B, p.size)
        c = np.cumsum(a, axis=0)
        if prev is not None:
            c += prev
        o = fx.wrap32(c)
        if p.wrap and (o == -fx.I32).any():     # GradedVec drops -2^31: step by step
            x = np.zeros((B, p.size), _I64) if prev is None else prev
            for t in range(N * T):
                x = fx.accum_step(x, a[t], wrap=True)
                o[t] = x
        self.acc[p.i] = o[-1].copy()
        return o.astype(_F64).reshape(N, T, B, p.size)

    def _decaying(self, p: _Pop, a: np.ndarray) -> np.ndarray:
        """A decaying memory's T steps of each token from its stacked state; between two
        tokens of the chunk, its W - T drain steps."""
        N, T = self.N, self.T
        o = np.empty((N, T, self.B, p.size), _F64)
        if not self.mem_wrap:                # x + floor(-d x / 2^e) + a, as in _drain
            x = np.ascontiguousarray(self.mem[:, p.mem])
            jit.decaying_tokens(x, self.lam[p.mem], np.ascontiguousarray(a, _F64),
                                self.W - T, o)
            self.mem[:, p.mem] = x
            return o
        for n in range(N):
            if n:
                self._drain(p.mem)
            x = self.mem[:, p.mem]
            dec, dexp = self.dec[p.mem], self.dexp[p.mem]
            for t in range(T):
                x = fx.accum_step(x, a[n, t], dec, dexp, True)
                o[n, t] = x
            self.mem[:, p.mem] = x
        return o

    def _lif(self, p: _Pop) -> np.ndarray:
        """``fixed_point.lif_step`` over each token's T steps (all tokens of the chunk at
        once: the state starts from rest at every token), self-loops added step by step;
        in float64 where the bounds (``p.fl``) or this chunk's input (``p.fl_check``:
        ``|a| + |self-loops| < LIF_FLOAT_INPUT``) show that nothing wraps."""
        fl, c = p.fl, p.lif
        N, T, B = self.N, self.T, self.B
        a = self._port(p, 0, True) if (fl or p.fl_check) else None
        if a is not None and not p.loops:
            # without self-loops the check |a| < LIF_FLOAT_INPUT is made in the LIF's pass
            c, lim = (p.lif, None) if fl else (p.lif_float, LIF_FLOAT_INPUT)
            # step-major for the T-step loop: each step one contiguous (N, B, size) block
            x = a[0] if N == 1 else np.ascontiguousarray(a.swapaxes(0, 1))
            s = fx.lif_token_float(x, c.fv, c.vth6, c.bias, lim)
            if s is not None:
                return s[None] if N == 1 else np.ascontiguousarray(s.swapaxes(0, 1))
            fl = False
        elif not fl and a is not None:
            fl = _amax(a) + p.loop_max < LIF_FLOAT_INPUT
            c = p.lif_float
        if not fl:
            a, c = self._port(p, 0, False), p.lif
        s_out = np.zeros((N, T, B, p.size), _F64)
        u = v = None
        for t in range(T):
            xt = a[:, t]
            if p.loops:                  # recurrence: this population's spikes of step t - k
                for s in p.loops:
                    if t >= s.slag:
                        y = _Rows(s_out[:, t - s.slag].reshape(N * B, -1))
                        y = s.float_form(y) if fl else s.int_form(y)
                        xt = xt + y.reshape(N, B, -1)
                if p.wraps[0] and not fl:
                    xt = fx.wrap32(xt)
            st, u, v = fx.lif_step(xt, u, v, c)
            s_out[:, t] = st
        return s_out


class TorchTokenEngine:
    """The token-time schedule on torch tensors, for many sequences at once (CUDA).

    One token of ``batch`` sequences is the integer reference's population updates
    (``int_reference.population_pass``, in depth order, streaming: the memories' values,
    stateful kinds' states and the token-shift history carried from token to token), so
    it is the reference, spike for spike; where the bounds exclude every wrap, a LIF's T
    steps and a memory's recursion take their float64 forms (``GraphPlan.float_forms``:
    the same integers without int64 products and shifts; on CUDA with Triton a memory's
    token is one kernel, ``accum_triton``, unless ``SNN_KERNELS_TRITON=0``). ``compile``
    (default on CUDA) runs that token
    step through ``torch.compile``: the elementwise chains around the matmuls (the LIFs' T
    steps, a memory's drain and token steps, the products, the synapses' wraps and shifts)
    become fused kernels with the same int64 / float64 operations, so the same values; a
    failure warns once and runs eagerly. ``step_token(tokens (B,))`` returns the readout
    sums ``(B, V)`` int64.
    """

    def __init__(self, qgraph: QGraph, batch: int = 1, device="cuda",
                 compile: Optional[bool] = None):
        import torch

        self.q, self.B = qgraph, int(batch)
        triton = (torch.device(device).type == "cuda"
                  and os.environ.get("SNN_KERNELS_TRITON", "1") != "0"
                  and importlib.util.find_spec("triton") is not None)
        self.plan = plan_graph(qgraph, device, float_forms=True, triton_memories=triton)
        self.dev = self.plan.device
        self.compile = (self.dev.type == "cuda") if compile is None else bool(compile)
        self._fn = self._step
        if self.compile:
            try:
                self._fn = torch.compile(self._step, dynamic=False)
            except Exception:                 # noqa: BLE001 (no compiler here: eager)
                self._fn = self._step
        self.reset()

    def reset(self) -> None:
        """Fresh sequences: memories and states at zero, no history, position 0."""
        self.n = 0
        self.state: Dict[str, object] = {}

    def _step(self, frames: Dict[str, object], state: Dict[str, object]):
        """(readout sums (B, V), state after the token) of one token from its frames
        ``{input: (B, 1, T, size)}`` and the state after the previous token."""
        outs, new = population_pass(self.plan, frames, state, record=False)
        return outs[self.q.readout].sum(dim=2)[:, 0], new

    def step_token(self, tokens, positions=None):
        """One token per sequence: ids (B,) -> readout sums (B, V) int64 (a tensor on the
        engine's device)."""
        import torch

        if self.q.context and self.n >= self.q.context:
            raise UserError(f"position {self.n} is beyond the model's context {self.q.context}; "
                            "reset and feed at most context tokens")
        tok = torch.as_tensor(tokens).reshape(-1, 1)
        if tok.shape[0] != self.B:
            raise UserError(f"step_token takes {self.B} token ids, got {tok.shape[0]}")
        pos = torch.full_like(tok, self.n) if positions is None else \
            torch.as_tensor(positions).reshape(-1, 1)
        frames = input_frames(self.q, tok, pos, device=self.dev)
        try:
            sums, self.state = self._fn(frames, self.state)
        except Exception as e:                # noqa: BLE001
            if self._fn is self._step:
                raise
            import warnings
            warnings.warn(f"token-time engine: torch.compile failed ({e!r}); running eagerly")
            self._fn = self._step
            sums, self.state = self._fn(frames, self.state)
        self.n += 1
        return sums


def token_engine(qgraph: QGraph, batch: int = 1, device="cpu", compiled_step: bool = True):
    """The token-time engine for ``device``: ``TokenEngine`` (numpy) on the CPU (with its
    one-call streaming step unless ``compiled_step`` is false), ``TorchTokenEngine``
    (compiled torch) elsewhere."""
    import torch

    if torch.device(device).type == "cpu":
        return TokenEngine(qgraph, batch, compiled_step=compiled_step)
    return TorchTokenEngine(qgraph, batch, device)
