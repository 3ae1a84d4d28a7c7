"""The token-time engine's streaming step as one compiled call: a table of operations.

At batch 1 a token moves T * B rows through each population, and the Python around
``TokenEngine``'s compiled loops (building each port's rows, choosing each synapse's form
on the values at hand: about 1 200 calls per token of the default) costs more than the
arithmetic. ``TokenProgram`` lays one token's values out in one flat float64 buffer
(every population's outputs ``(T * B, size)`` and every port's sum at fixed offsets) and
writes the token's work as the rows of a table that ``run_program`` executes in one
numba call:

    MATMUL  port (+)= shift(x @ w), the rows of w added where x is non-zero (rows_matmul)
    SPARSE  port (+)= shift(sum_k x[:, idx[k]] * val[k])                   (sparse_gather)
    GATHER  port (+)= shift(x[:, idx] * val)                                      (gather)
    IDENT   port (+)= shift(x)                      ZERO  port = 0 (no synapses)
    LIF     fixed_point.lif_token_float on the port                            (lif_token)
    PROD2   a prod of two gathered sources                                  (prod_gathers)
    PRODF   a prod of two port sums: floor(p1 * p2 * 2^-exp) where |.| > vth   (_prod_float)
    GRADED  port where |port| > vth                 MEM   x = floor(x * lam) + a, T steps
    ACCUM   x = x + a, T steps (an accum without decay: the engine's cumulative sum)

(in brackets: the ``loihi/jit.py`` loop whose float64 operations the row repeats). A
source one token back (a token shift) is read from the previous token's buffer.

Every value is an integer the float64 form holds exactly, so the numbers are the
engine's. The checks the engine makes on the values at hand are made here as well: a
synapse's largest source magnitude times its largest row sum below 2^53 (below 2^31
for an int32 dot), a LIF's input below ``LIF_FLOAT_INPUT`` where its bounds do not
exclude a wrap. Where one fails, the call returns that row and the engine computes the
token its usual way from the state before it: the program writes only its own buffers
(the memories' state is a copy, committed on success). A graph with a population or
synapse the table has no row for (self-loops, step lags, token shifts of more than one
token, stateful kinds, integer or DelayDense synapses, memories that may wrap) gets no program (``build`` returns the reason, kept as the engine's
``program_why_not``) and streams as before.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import numba
import numpy as np

from snn_compile.loihi import fixed_point as fx
from snn_compile.loihi.jit import lif_float_step, shift

MATMUL, SPARSE, GATHER, IDENT, ZERO, LIF, PROD2, PROD2_B, GRADED, MEM, PRODF, ACCUM = \
    range(1, 13)
_NAMES = {MATMUL: "matmul", SPARSE: "sparse", GATHER: "gather", IDENT: "identity",
          ZERO: "zero", LIF: "lif", PROD2: "prod", PROD2_B: "prod", GRADED: "graded",
          MEM: "memory", PRODF: "prod", ACCUM: "accum"}
# code row (int64): op, src, from_prev, R, S, dst, D, add, io, io2, ne, floor
# (MATMUL: ne = 1 for weights in the float32 pool)
# fcode row (float64): scale, check limit (0: none), rowabs, p0, p1, p2
_C, _F = 12, 6
_JIT = dict(nopython=True, nogil=True, cache=True)


# The loops below take their rows as slices (views) of the flat buffers: LLVM then
# vectorises the inner loops, which it does not on computed flat indices (5 x slower).
@numba.jit(**_JIT)
def _amax(x):
    m = 0.0
    for i in range(x.shape[0]):
        v = abs(x[i])
        if v > m:
            m = v
    return m


@numba.jit(**_JIT)
def _put(o, a, scale, floor, add):
    """``o (+)= shift(a)`` as ``jit._put``: ``a * 2^e``, floored for a right shift."""
    for d in range(a.shape[0]):
        v = shift(a[d], scale, floor)
        if add:
            o[d] += v
        else:
            o[d] = v


@numba.jit(**_JIT)
def _rows_matmul(x, w, a, R, S, D):
    """``a (R*D) += x (R*S) @ w (S*D)`` adding weight row j where x is non-zero, each
    row read once for the R rows (at batch 1 the weights set the pace)."""
    for j in range(S):
        wj = w[j * D:(j + 1) * D]
        for r in range(R):
            xv = x[r * S + j]
            if xv != 0.0:
                ar = a[r * D:(r + 1) * D]
                for d in range(D):
                    ar[d] += xv * wj[d]


@numba.jit(**_JIT)
def _sparse(x, idx, val, a, R, S, K, D):
    """``a[r, d] = sum_k x[r, idx[k, d]] * val[k, d]``, k in increasing order."""
    for r in range(R):
        xr = x[r * S:(r + 1) * S]
        ar = a[r * D:(r + 1) * D]
        ar[:] = 0.0
        for k in range(K):
            ik = idx[k * D:(k + 1) * D]
            vk = val[k * D:(k + 1) * D]
            for d in range(D):
                ar[d] += xr[ik[d]] * vk[d]


@numba.jit(**_JIT)
def _gather(x, idx, val, a, R, S, D):
    """``a[r, d] = x[r, idx[d]] * val[d]`` (``val`` empty: no factor)."""
    nv = val.shape[0]
    for r in range(R):
        xr = x[r * S:(r + 1) * S]
        ar = a[r * D:(r + 1) * D]
        for d in range(D):
            v = xr[idx[d]]
            if nv > 0:
                v = v * val[d]
            ar[d] = v


@numba.jit(**_JIT)
def _lif(a, out, T, n, th, b, k, lim, alim, v):
    """``jit.lif_token`` on the (T, n) port ``a`` (``th``, ``b``: (n,)), step-major so each
    step is one vectorised pass over the neurons (``v``: (n,) scratch); False where some
    ``|a| >= alim`` (nothing written then)."""
    for j in range(T * n):
        if a[j] >= alim or a[j] <= -alim:
            return False
    for t in range(T):
        at = a[t * n:(t + 1) * n]
        ot = out[t * n:(t + 1) * n]
        for i in range(n):
            ot[i], v[i] = lif_float_step(v[i], at[i] * 64.0 + b[i], t == 0, k, lim, th[i])
    return True


@numba.jit(**_JIT)
def _gathered_row(xr, idx, val, scale, floor, o):
    """``o[d] = shift(xr[idx[d]] * val[d])`` (``val`` empty: no factor), one operation per
    pass so that each pass vectorises."""
    D = idx.shape[0]
    for d in range(D):
        o[d] = xr[idx[d]]
    if val.shape[0] > 0:
        for d in range(D):
            o[d] = o[d] * val[d]
    if scale != 1.0:
        for d in range(D):
            o[d] = shift(o[d], scale, floor)


@numba.jit(**_JIT)
def _prod(x1, i1, v1, s1, f1, S1, x2, i2, v2, s2, f2, S2, escale, vth, out, R, D, tmp):
    """``jit.prod_gathers``: each port's gathered value shifted, ``w = p1 * p2``, ``w =
    floor(w * 2^-exp)``, ``w`` where ``|w| > vth`` (``tmp``: (D,) scratch)."""
    for r in range(R):
        o = out[r * D:(r + 1) * D]
        _gathered_row(x1[r * S1:(r + 1) * S1], i1, v1, s1, f1, tmp)
        _gathered_row(x2[r * S2:(r + 1) * S2], i2, v2, s2, f2, o)
        for d in range(D):
            o[d] = tmp[d] * o[d]
        if escale != 1.0:
            for d in range(D):
                o[d] = np.floor(o[d] * escale)
        if vth != 0.0:
            for d in range(D):
                if not abs(o[d]) > vth:
                    o[d] = 0.0


@numba.jit(**_JIT)
def _prod_ports(a1, a2, out, ex, th, R, S):
    """``fixed_point._prod_float``: ``w = a1 * a2``, ``floor(w * ex)`` (``ex = 2^-exp`` per
    neuron), ``w * (|w| > vth)``; ``ex`` and ``th`` (1,) or (S,)."""
    me, mt = ex.shape[0], th.shape[0]
    for j in range(R * S):
        w = a1[j] * a2[j]
        e = ex[(j % S) % me]
        if e != 1.0:
            w = np.floor(w * e)
        w = w * (1.0 if abs(w) > th[(j % S) % mt] else 0.0)
        out[j] = w


@numba.jit(**_JIT)
def _graded(a, out, th, R, S):
    """``a`` where ``|a| > th`` (per neuron, ``th`` (1,) or (S,)), else ``a * 0``."""
    m = th.shape[0]
    for r in range(R):
        ar = a[r * S:(r + 1) * S]
        o = out[r * S:(r + 1) * S]
        for j in range(S):
            w = ar[j]
            o[j] = w * (1.0 if abs(w) > th[j % m] else 0.0)


@numba.jit(**_JIT)
def _memory(a, out, mem, lam, T, B, M, stride, col):
    """A decaying memory's T steps ``x = floor(x * lam) + a[t]`` (``jit.decaying_tokens``
    for one token), ``x`` the columns ``col:col + M`` of each sequence's row of ``mem``."""
    for b in range(B):
        x = mem[b * stride + col:b * stride + col + M]
        for t in range(T):
            at = a[(t * B + b) * M:(t * B + b + 1) * M]
            ot = out[(t * B + b) * M:(t * B + b + 1) * M]
            for m in range(M):
                v = np.floor(x[m] * lam[m]) + at[m]
                x[m] = v
                ot[m] = v


@numba.jit(**_JIT)
def _accum(a, out, x, T, n):
    """An accum without decay over a token's T steps: ``x = x + a[t]`` (``x``: (n,) state)."""
    for t in range(T):
        at = a[t * n:(t + 1) * n]
        ot = out[t * n:(t + 1) * n]
        for i in range(n):
            v = x[i] + at[i]
            x[i] = v
            ot[i] = v


@numba.jit(**_JIT)
def run_program(code, fcode, buf, prev, wf, w32, wi, mem, sums, acc):
    """Execute the table ``code``/``fcode`` (module docstring) on ``buf``; ``prev``: the
    previous token's buffer, ``wf``/``wi``: weights and indices, ``w32``: float32 copies of
    the matrices float32 holds exactly, ``mem``: the memories' state (B * n_mem),
    ``sums``: the state of the accums without decay, ``acc``: scratch of the widest row's R * D sums. Returns -1, or the row whose check
    failed (``buf`` and ``mem`` then partly written)."""
    n = code.shape[0]
    i = 0
    while i < n:
        c = code[i]
        f = fcode[i]
        op = c[0]
        src, R, S, dst, D = c[1], c[3], c[4], c[5], c[6]
        add = c[7] != 0
        io, io2, ne = c[8], c[9], c[10]
        fl = c[11] != 0
        scale = f[0]
        x = prev[src:src + R * S] if c[2] != 0 else buf[src:src + R * S]
        if f[1] > 0.0 and _amax(x) * f[2] >= f[1]:
            return i
        out = buf[dst:dst + R * D]
        if op == MATMUL:                        # w (S, D) at io; ne = 1: in w32
            a = acc[:R * D]
            a[:] = 0.0
            if ne:
                _rows_matmul(x, w32[io:io + S * D], a, R, S, D)
            else:
                _rows_matmul(x, wf[io:io + S * D], a, R, S, D)
            _put(out, a, scale, fl, add)
        elif op == SPARSE:                      # idx (ne, D) in wi, val (ne, D) in wf
            a = acc[:R * D]
            _sparse(x, wi[io:io + ne * D], wf[io2:io2 + ne * D], a, R, S, ne, D)
            _put(out, a, scale, fl, add)
        elif op == GATHER:                      # idx (D,) in wi, val (ne = 0 or D,) in wf
            a = acc[:R * D]
            _gather(x, wi[io:io + D], wf[io2:io2 + ne], a, R, S, D)
            _put(out, a, scale, fl, add)
        elif op == IDENT:
            _put(buf[dst:dst + R * S], x, scale, fl, add)
        elif op == ZERO:
            out[:] = 0.0
        elif op == LIF:                         # the (T = R, S) port; th, bias (S,) at io, io2
            if not _lif(x, buf[dst:dst + R * S], R, S, wf[io:io + S], wf[io2:io2 + S],
                        f[3], f[4], f[5], acc[:S]):
                return i
        elif op == PROD2:                       # this row the first source, the next the second
            c2 = code[i + 1]
            S2 = c2[4]
            x2 = prev[c2[1]:c2[1] + R * S2] if c2[2] != 0 else buf[c2[1]:c2[1] + R * S2]
            _prod(x, wi[io:io + D], wf[io2:io2 + ne], scale, fl, S,
                  x2, wi[c2[8]:c2[8] + D], wf[c2[9]:c2[9] + c2[10]], fcode[i + 1][0],
                  c2[11] != 0, S2, f[3], f[4], out, R, D, acc[:D])
            i += 1
        elif op == GRADED:                      # th (ne = 1 or S,) in wf; p0 = 1: scalar 0
            o = buf[dst:dst + R * S]
            if f[3] == 1.0:
                o[:] = x
            else:
                _graded(x, o, wf[io:io + ne], R, S)
        elif op == PRODF:                       # port 2 at io2; 2^-exp (ne,) at io, vth (D,) at c[11]
            _prod_ports(x, buf[io2:io2 + R * S], buf[dst:dst + R * S], wf[io:io + ne],
                        wf[c[11]:c[11] + D], R, S)
        elif op == ACCUM:                       # port (T = R, B * size = S); state at io2
            _accum(x, buf[dst:dst + R * S], sums[io2:io2 + S], R, S)
        elif op == MEM:                         # port (T = R, B = D, B * M = S); lam at io
            M = S // D
            _memory(x, buf[dst:dst + R * S], mem, wf[io:io + M], R, D, M, ne, io2)
        i += 1
    return -1


class Unsupported(Exception):
    """The graph has a population or synapse the table has no row for."""


def build(engine) -> Tuple[Optional["TokenProgram"], Optional[str]]:
    """(the program of ``engine``'s streaming step, None), or (None, why there is none)."""
    try:
        return TokenProgram(engine), None
    except Unsupported as e:
        return None, str(e)


class _Pool:
    """Arrays of one dtype laid end to end in one flat array (``add``: the offset)."""

    def __init__(self, dtype):
        self.dtype, self.parts, self.n = dtype, [], 0

    def add(self, a) -> int:
        a = np.ascontiguousarray(a, self.dtype).reshape(-1)
        o, self.n = self.n, self.n + a.size
        self.parts.append(a)
        return o

    def array(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.zeros(1, self.dtype)


class TokenProgram:
    """The streaming step of one ``TokenEngine`` (its graph, batch and constants) as a
    table (module docstring); ``tokens`` and ``fallbacks`` count the tokens it ran and
    those it left to the engine (``last_fallback``: the population and row of the last)."""

    def __init__(self, e):
        self.T, self.B = e.T, e.B
        self.rows = e.T * e.B
        self.code: List[list] = []
        self.fcode: List[list] = []
        pools = [_Pool(np.float64), _Pool(np.float32), _Pool(np.int64)]
        self._f, self._f32, self._i = (pool.add for pool in pools)
        self.size = 0
        self.off = {}
        self.inputs: List[Tuple[str, int, int]] = []
        for name in e.q.inputs:
            i = e.index[name]
            self.off[i] = self._alloc(self.rows * e.sizes[i])
            self.inputs.append((name, self.off[i], self.rows * e.sizes[i]))
        self.outputs: List[Tuple[int, int, int]] = []
        for p in e.pops:
            self.off[p.i] = self._alloc(self.rows * p.size)
            self.outputs.append((p.i, self.off[p.i], p.size))
        self.row_pop: List[str] = []
        self.sums: List[Tuple[int, int, int]] = []      # accums without decay: (i, offset, size)
        self.n_sums = 0
        for p in e.pops:
            self._population(e, p)
        self.code_a = np.asarray(self.code, np.int64).reshape(-1, _C)
        self.fcode_a = np.asarray(self.fcode, np.float64).reshape(-1, _F)
        self.wf, self.w32, self.wi = (pool.array() for pool in pools)
        width = [int(r[3] * r[6]) for r in self.code if r[0] in (MATMUL, SPARSE, GATHER)] + \
            [int(r[4]) for r in self.code if r[0] == LIF] + \
            [int(r[6]) for r in self.code if r[0] == PROD2]
        self.acc = np.empty(max(width, default=1))
        self.zeros = np.zeros(self.size)
        self.hist = sorted({s.src for p in e.pops for port in p.ports for s in port if s.tlag})
        self.tokens = self.fallbacks = 0
        self.last_fallback: Optional[str] = None
        self.invalidate()

    # --------------------------------------------------------------- building
    def _alloc(self, n: int) -> int:
        o, self.size = self.size, self.size + n
        return o

    def _row(self, pop: str, code, fcode=(1.0, 0.0, 0.0, 0.0, 0.0, 0.0)) -> None:
        code = list(code) + [0] * (_C - len(code))
        self.code.append([int(v) for v in code])
        self.fcode.append([float(v) for v in fcode])
        self.row_pop.append(pop)

    def _source(self, e, s) -> Tuple[int, int, int]:
        """(offset, from_prev, width) of a synapse's source."""
        if s.slag:
            raise Unsupported("a synapse with a step lag")
        if s.tlag > 1:
            raise Unsupported(f"a token shift of {s.tlag} tokens")
        return self.off[s.src], int(s.tlag == 1), e.sizes[s.src]

    @staticmethod
    def _check(s, lim: float) -> Tuple[float, float]:
        """(limit, rowabs) of the value check ``amax * rowabs < limit``; (0, 0) where the
        source's static bound (1 for spikes) already passes it, as ``_In.float_form``."""
        amax = 1.0 if s.spikes else s.bound
        if amax is not None and amax * s.rowabs < lim:
            return 0.0, 0.0
        return float(lim), float(s.rowabs)

    def _port(self, e, p, j: int) -> int:
        """Rows summing port ``j`` of ``p`` into a new region; returns its offset."""
        dst = self._alloc(self.rows * p.size)
        syns = p.ports[j]
        if not syns:
            self._row(p.name, (ZERO, 0, 0, self.rows, 0, dst, p.size))
        for k, s in enumerate(syns):
            src, prev, S = self._source(e, s)
            syn, add, floor = s.syn, int(k > 0), int(s.syn.exp < 0)
            base = (src, prev, self.rows, S, dst)
            if syn.mode == "float":
                lim, rowabs = self._check(s, fx.I32 if syn.inner else fx.F64_EXACT)
                f = (syn.scale, lim, rowabs, 0.0, 0.0, 0.0)
                if s.sidx is not None:
                    K, D = s.sidx.shape
                    self._row(p.name, (SPARSE, *base, D, add, self._i(s.sidx), self._f(s.sval),
                                       K, floor), f)
                else:
                    w32 = s.wt.astype(np.float32)
                    exact = bool(np.array_equal(w32.astype(np.float64), s.wt))
                    io = self._f32(w32) if exact else self._f(s.wt)
                    self._row(p.name, (MATMUL, *base, s.wt.shape[1], add, io, 0, int(exact),
                                       floor), f)
            elif syn.mode == "gather":
                lim, rowabs = self._check(s, fx.I32) if syn.inner else (0.0, 0.0)
                self._row(p.name, (GATHER, *base, s.idx.shape[0], add, self._i(s.idx),
                                   self._f(s.gval), s.gval.size, floor),
                          (syn.scale, lim, rowabs, 0.0, 0.0, 0.0))
            elif syn.mode == "identity":
                self._row(p.name, (IDENT, *base, S, add, 0, 0, 0, floor),
                          (syn.scale, 0.0, 0.0, 0.0, 0.0, 0.0))
            else:
                raise Unsupported(f"a synapse of mode {syn.mode!r} into {p.name!r}")
        return dst

    def _population(self, e, p) -> None:
        dst = self.off[p.i]
        if p.kind == "lif":
            if p.loops:
                raise Unsupported(f"LIF {p.name!r} has self-loops")
            if len(p.ports) != 1 or not (p.fl or p.fl_check):
                raise Unsupported(f"LIF {p.name!r} has no float form")
            a = self._port(e, p, 0)
            c = p.lif
            n = self.B * p.size            # its rows: T steps of B * size neurons
            th, b = (np.resize(np.asarray(v, np.float64).reshape(-1), n)   # neuron i: i % size
                     for v in (c.vth6, c.bias))
            alim = np.inf if p.fl else float(fx.STATE_MAX >> fx.ACT_SHIFT)
            self._row(p.name, (LIF, a, 0, self.T, n, dst, 0, 0, self._f(th), self._f(b), 0),
                      (1.0, 0.0, 0.0, c.fv / fx.DECAY_UNITY, float(fx.STATE_MAX - 1), alim))
        elif p.fused is not None:
            (s1, s2), escale, vth = p.fused
            rows = []
            for s in (s1, s2):
                src, prev, S = self._source(e, s)
                rows.append((src, prev, self.rows, S, dst, p.size, 0, self._i(s.idx),
                             self._f(s.gval), s.gval.size, int(s.syn.exp < 0)))
            self._row(p.name, (PROD2, *rows[0]), (s1.syn.scale, 0.0, 0.0, escale, vth, 0.0))
            self._row(p.name, (PROD2_B, *rows[1]), (s2.syn.scale, 0.0, 0.0, 0.0, 0.0, 0.0))
        elif p.rule is not None and p.rule_float and p.kind == "prod" and len(p.ports) == 2:
            a1, a2 = self._port(e, p, 0), self._port(e, p, 1)
            exp, vth = p.params
            ex = np.exp2(-np.asarray(exp, np.float64)).reshape(-1)
            th = np.asarray(vth, np.float64).reshape(-1)
            self._row(p.name, (PRODF, a1, 0, self.rows, p.size, dst, th.size, 0, self._f(ex),
                               a2, ex.size, self._f(th)))
        elif p.rule is not None:
            if not (p.rule_float and p.kind == "graded" and len(p.ports) == 1):
                raise Unsupported(f"{p.kind} {p.name!r} has no float form")
            a = self._port(e, p, 0)
            vth = p.params[0]
            zero = int(np.ndim(vth) == 0 and vth == 0)
            th = np.asarray(vth, np.float64).reshape(-1)
            self._row(p.name, (GRADED, a, 0, self.rows, p.size, dst, 0, 0, self._f(th), 0,
                               th.size), (1.0, 0.0, 0.0, float(zero), 0.0, 0.0))
        elif p.mem is not None:
            if e.mem_wrap or p.wraps[0]:
                raise Unsupported(f"memory {p.name!r} may wrap")
            a = self._port(e, p, 0)
            self._row(p.name, (MEM, a, 0, self.T, self.B * p.size, dst, self.B, 0,
                               self._f(e.lam[p.mem]), p.mem.start, e.n_mem))
        elif p.kind == "accum":
            if p.wrap or p.wraps[0]:
                raise Unsupported(f"accum {p.name!r} may wrap")
            a = self._port(e, p, 0)
            n = self.B * p.size
            self.sums.append((p.i, self.n_sums, p.size))
            self._row(p.name, (ACCUM, a, 0, self.T, n, dst, 0, 0, 0, self.n_sums))
            self.n_sums += n
        else:
            raise Unsupported(f"{p.kind} {p.name!r} (a stateful kind)")

    # ---------------------------------------------------------------- running
    def invalidate(self) -> None:
        """Forget the previous token's buffer (fresh sequences, or a step not run here)."""
        self.last: Optional[np.ndarray] = None
        self.last_n = -1

    def _prev(self, e) -> np.ndarray:
        """The previous token's buffer: the last run's, or the token-shift sources' last
        outputs (``e.past``) copied into zeros."""
        if e.n == 0 or not self.hist:
            return self.zeros
        if self.last is not None and self.last_n == e.n:
            return self.last
        prev = np.zeros(self.size)
        for i in self.hist:
            h = e.past.get(i)
            if h:
                o = self.off[i]
                prev[o:o + h[-1].size] = h[-1].reshape(-1)
        return prev

    def run(self, e) -> bool:
        """One token of ``e`` from its input frames in ``e.chunk_outputs`` (the memories
        already drained): its outputs into ``e.chunk_outputs`` and its memories into
        ``e.mem``; ``False`` (nothing of ``e`` written) where a value check failed."""
        buf = np.empty(self.size)
        for name, o, n in self.inputs:
            buf[o:o + n] = e.chunk_outputs[e.index[name]].reshape(-1)
        mem = e.mem.reshape(-1).copy()
        sums = np.zeros(max(self.n_sums, 1))
        for i, o, size in self.sums:
            x = e.acc.get(i)
            if x is not None:
                sums[o:o + x.size] = x.reshape(-1)
        bad = run_program(self.code_a, self.fcode_a, buf, self._prev(e), self.wf, self.w32,
                          self.wi, mem, sums, self.acc)
        if bad >= 0:
            self.fallbacks += 1
            self.last_fallback = f"{self.row_pop[bad]} ({_NAMES[int(self.code_a[bad, 0])]})"
            self.invalidate()
            return False
        e.mem = mem.reshape(e.mem.shape)
        for i, o, size in self.sums:
            e.acc[i] = sums[o:o + self.B * size].reshape(self.B, size).astype(np.int64)
        for i, o, size in self.outputs:
            e.chunk_outputs[i] = buf[o:o + self.rows * size].reshape(1, self.T, self.B, size)
        self.last, self.last_n = buf, e.n + 1
        self.tokens += 1
        return True
