"""Loihi 2 fixed-point arithmetic, written once for numpy arrays and torch tensors.

The integer update of every population kind and synapse, transcribed from Lava 0.10's
bit-accurate models (``lava/proc/{lif,dense,prodneuron,graded}/models.py``). Every
integer executor runs these functions: the token-time reference and the torch emulator
on int64 tensors (CPU or CUDA, batch first or last), the numpy engine on int64 arrays,
the range report on int64 arrays. The functions use only operators both libraries share
(``+ - * >> << & abs``, comparisons, ``clip``); the few that differ go through
``_where`` / ``_zero_where`` / ``_trunc``. Values that Lava keeps in ``np.int32`` are
wrapped modulo 2^32 exactly where Lava's numpy code wraps:

* ports carry ``int32`` (a synapse's output is cast into an int32 channel,
  an ``InPort`` sums its channels in int32);
* a graded ``Dense`` computes ``weights.dot(s_in)`` in int32 before shifting,
  a binary one sums in int64 (``np.sum`` promotes) and wraps only on send;
* LIF: ``u, v`` are int32 arrays, ``a << 6`` is an int32 shift, the 24-bit
  "wrap" of ``u`` is Lava's single, asymmetric correction
  (``u > 2^23 -> u - 2^24``; ``u <= -2^23 -> u + 2^24``), ``v`` is clipped to
  ``±(2^23 - 1)``;
* ProdNeuron: ``a1 * a2`` in int32, then an arithmetic ``>> exp``;
  ``|v| > vth`` with int32 ``abs`` (``abs(-2^31) < 0``);
* accum (``accum_step``): the decay loop's ``weights.dot(s_in)`` is an int32
  product, its ``right_shift`` a floor; ``GradedVec(vth=0)`` drops ``-2^31``.

Wraps that a static bound proves to be no-ops are skipped (``*_bound`` arguments and the
``*_wrap`` flags); they never change a result. Where no wrap can happen, the LIF update
also runs on float64 arrays (exact below 2^53: ``decay`` is then ``trunc(x * f / 4096)``,
``a << 6`` is ``a * 64``); the numpy engine uses that form because it needs fewer ops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from snn_compile.loihi.limits import (DECAY_MAX, DECAY_SHIFT, DECAY_UNITY,  # noqa: F401
                                      INHIBITORY_MANTISSA_MAX, STATE_MAX, VTH_SHIFT,
                                      WEIGHT_BITS)

I32 = 2 ** 31
ACT_SHIFT = VTH_SHIFT          # input and threshold are MSB-aligned by the same 6 bits
F64_EXACT = 2 ** 53            # integers below this add exactly in float64
F32_EXACT = 2 ** 24            # ... and in float32
_ROUND = DECAY_UNITY - 1


# ------------------------------------------------------ the few ops numpy and torch spell apart
def _is_torch(x) -> bool:
    return isinstance(x, torch.Tensor)


def _is_float(x) -> bool:
    return x.is_floating_point() if _is_torch(x) else x.dtype.kind == "f"


def _where(c, a, b):
    return torch.where(c, a, b) if _is_torch(c) else np.where(c, a, b)


def _zero_where(x, m):
    """``x`` with the entries where ``m`` holds set to 0, in place (``x`` is a fresh array)."""
    if _is_torch(x):
        return x.masked_fill_(m, 0)
    x[m] = 0
    return x


def _trunc(x):
    return torch.trunc(x) if _is_torch(x) else np.trunc(x)


def _zeros_like(x):
    return torch.zeros_like(x) if _is_torch(x) else np.zeros_like(x)


# ------------------------------------------------------------ integer helpers
def wrap32(x):
    """Two's-complement wrap of int64 values into the int32 range (numpy's int32 overflow)."""
    return ((x + I32) & (2 * I32 - 1)) - I32


def decay(x, factor):
    """``sign(x) * ((|x| * factor) >> 12)`` = truncation of ``x * factor / 4096`` toward 0.

    ``factor`` is an int or a per-neuron int64 array/tensor broadcastable to ``x``. On
    integers the truncation is a floor shift after adding 4095 to negative products; on
    float64 (values below 2^40) ``trunc(x * (factor / 4096))`` is the same number."""
    if not (_is_torch(factor) or isinstance(factor, np.ndarray)):
        if factor == DECAY_UNITY:
            return x
        if factor == 0:
            return _zeros_like(x)
    if _is_float(x):
        return _trunc(x * (factor / DECAY_UNITY))
    if _is_torch(x):
        return torch.div(x * factor, DECAY_UNITY, rounding_mode="trunc")
    t = x * factor
    return (t + ((t >> 63) & _ROUND)) >> DECAY_SHIFT


def shift(a, exp: int):
    """Lava's weight-exponent shift: ``a << exp`` if exp > 0 else arithmetic ``a >> -exp``
    (on float64: ``a * 2^exp``, ``floor(a / 2^-exp)``, both exact)."""
    if exp == 0:
        return a
    if _is_float(a):
        return a * 2.0 ** exp if exp > 0 else (torch.floor if _is_torch(a) else np.floor)(
            a * 2.0 ** exp)
    return a << exp if exp > 0 else a >> -exp


def shift_bound(b: int, exp: int) -> int:
    """An upper bound of ``|shift(a, exp)|`` for ``|a| <= b``."""
    return b << exp if exp >= 0 else (b >> -exp) + 1


def lava_legal_weights(w) -> np.ndarray:
    """What Lava's fixed-point Dense does to a weight matrix on its first step.

    Mirrors ``lava.utils.weightutils.clip_weights`` + ``truncate_weights`` with the
    default 8 weight bits and the sign mode Lava infers from the matrix: excitatory
    0..255, inhibitory -255..0, mixed even values in -256..254.
    """
    w = np.asarray(w.cpu() if _is_torch(w) else w).astype(np.int64)
    full = 2 ** WEIGHT_BITS
    if w.size == 0 or (w.min() >= 0):          # excitatory (or all zero)
        return np.clip(w, 0, full - 1)
    if w.max() <= 0:                           # inhibitory
        return -np.clip(-w, 0, INHIBITORY_MANTISSA_MAX)
    w = np.clip(w, -full, full - 1)            # mixed: the sign takes one bit
    return (w >> 1) << 1


def is_lava_legal(w) -> bool:
    """True when Lava's Dense leaves ``w`` unchanged (``lava_legal_weights(w) == w``)."""
    a = np.asarray(w.cpu() if _is_torch(w) else w)
    return bool(np.array_equal(lava_legal_weights(a), a))


# ----------------------------------------------------------------- neurons
@dataclass
class LifParams:
    """Constants of one LIF population (PyLifResetModelBitAcc), ready for ``lif_step``.

    u = wrap24(decay(u, du + 1) + wrap32(a << 6))     ds_offset = 1
    v = clip(wrap32(decay(v, dv) + u + bias), ±(2^23 - 1))
    s = v > vth << 6;  v[s] = 0
    """

    fu: object                   # 4096 - (du + 1)           (int or per-neuron tensor)
    fv: object                   # 4096 - dv
    vth6: object                 # vth << 6
    bias: object                 # bias_mant << bias_exp: an int, or a per-neuron (size,) tensor
    act_wrap: bool = True        # |a << 6| may leave int32
    u_wrap: bool = True          # decay(u) + act may leave (-2^23, 2^23]  (or int32)
    v_wrap: bool = True          # decay(v) + u + bias may leave int32

    @classmethod
    def of(cls, pop, in_bound: Optional[int] = None) -> "LifParams":
        """``in_bound``: a bound of |a| (None: unknown, all wraps kept)."""
        b = pop.bias()                                  # (size,) int64, Lava's effective_bias
        bias = int(b[0]) if b.size == 0 or np.all(b == b[0]) else torch.as_tensor(b)
        p = cls(fu=DECAY_UNITY - (pop.du + 1), fv=DECAY_UNITY - pop.dv, vth6=pop.vth << VTH_SHIFT,
                bias=bias)
        if in_bound is not None:
            act = in_bound << ACT_SHIFT
            p.act_wrap = act >= I32
            # |u| <= act * 4096 / (du + 1) by the geometric series of the decay
            ub = act if pop.du == DECAY_MAX else act * DECAY_UNITY // (pop.du + 1) + 1
            p.u_wrap = ub >= STATE_MAX
            if not p.u_wrap:
                p.v_wrap = STATE_MAX + ub + int(np.abs(b).max(initial=0)) >= I32
        return p


def lif_step(a, u, v, p: LifParams, peaks: Optional[dict] = None):
    """One step of PyLifResetModelBitAcc; returns ``(spikes bool, u, v)``.

    ``a``: the port's int32-valued input; ``u`` / ``v``: the state, or ``None`` for a
    state at rest (zero). Int64 arrays or tensors, or float64 ones where the flags of
    ``p`` say nothing wraps. ``peaks``: a dict whose ``"u"`` / ``"v"`` keep the largest
    ``|u|`` before its wrap and ``|v|`` before its clip (the range report)."""
    act = a << ACT_SHIFT if not _is_float(a) else a * float(2 ** ACT_SHIFT)
    if p.act_wrap:
        act = wrap32(act)
    dc = act if (u is None or _is_zero(p.fu)) else decay(u, p.fu) + act
    if peaks is not None:
        peaks["u"] = max(peaks.get("u", 0), _absmax(dc))
    if p.u_wrap:
        dc = wrap32(dc)
        u = _where(dc > STATE_MAX, dc - 2 * STATE_MAX,
                   _where(dc <= -STATE_MAX, dc + 2 * STATE_MAX, dc))
    else:
        u = dc
    vv = u if v is None else decay(v, p.fv) + u
    if not _is_zero(p.bias):
        vv = vv + p.bias
    if p.v_wrap:
        vv = wrap32(vv)
    if peaks is not None:
        peaks["v"] = max(peaks.get("v", 0), _absmax(vv))
    vv = vv.clip(-(STATE_MAX - 1), STATE_MAX - 1)    # a new array: zeroed in place below
    s = vv > p.vth6
    return s, u, _zero_where(vv, s)


def lif_token_float(a: np.ndarray, fv: int, vth6, bias=0,
                    input_limit: Optional[float] = None) -> Optional[np.ndarray]:
    """``lif_step`` over the T steps of one token from rest (u = v = 0), for a LIF with
    ``du = 4095`` whose input wraps nothing (``|a| < 2^17`` and ``|v| + |u| + |bias|``
    inside int32), on float64 numpy arrays: ``a`` (T, ...) -> spikes (T, ...)::

        v = clip(trunc(v * fv / 4096) + (a << 6) + bias, ±(2^23 - 1));  s = v > vth << 6;  v[s] = 0

    The same numbers as ``lif_step`` (u is ``a << 6``; every value an integer below 2^53).
    ``vth6`` and ``bias`` are ints or per-neuron arrays over the last axis. The loop is
    ``jit.lif_token``: one compiled pass over the neurons, the same float64 operations in
    the same order, instead of eight numpy operations per step. ``input_limit``: ``None``
    instead of spikes where some ``|a| >= input_limit`` (the caller's check that nothing
    wraps, made in the same pass)."""
    from snn_compile.loihi import jit

    shape = a.shape
    a2 = np.ascontiguousarray(a, np.float64).reshape(shape[0], -1)
    th = np.asarray(vth6, np.float64).reshape(-1)
    b = np.asarray(bias, np.float64).reshape(-1)
    for c in (th, b):
        if c.size not in (1, shape[-1]):
            raise ValueError(f"lif_token_float: {c.size} per-neuron constants for a last "
                             f"axis of {shape[-1]}")
    s = np.empty_like(a2)
    alim = np.inf if input_limit is None else float(input_limit)
    if not jit.lif_token(a2, fv / DECAY_UNITY, th, b, float(STATE_MAX - 1), alim, s):
        return None
    return s.reshape(shape)


def _absmax(x) -> int:
    n = x.numel() if _is_torch(x) else x.size
    return int(abs(x).max()) if n else 0


def _is_zero(c) -> bool:
    return not (_is_torch(c) or isinstance(c, np.ndarray)) and c == 0


def per_neuron(c, size: int) -> np.ndarray:
    """A LifParams constant (int or per-neuron tensor) as an int64 array of ``size``."""
    if _is_torch(c):
        return c.cpu().numpy().astype(np.int64).reshape(-1)
    if isinstance(c, np.ndarray):
        return c.astype(np.int64).reshape(-1)
    return np.full(size, int(c), np.int64)


def bias_fires_from_rest(pop, steps: int) -> bool:
    """Whether a LIF fed nothing but its own bias spikes within ``steps`` steps from rest:
    what a population at depth ``d`` does in the ``d`` global steps before its window
    starts (``LIFReset`` clears u, v at the window's first step, but a spike sent before
    it reaches the population's self-loop or delayed synapses)."""
    p = LifParams.of(pop, 0)
    if _is_torch(p.bias):
        p.bias = p.bias.numpy()
    u = v = None
    zero = np.zeros(pop.size, np.int64)
    for _ in range(steps):
        s, u, v = lif_step(zero, u, v, p)
        if s.any():
            return True
    return False


# a decaying accum's float form is exact while |out| < 2^31 and 2^decay_exp <= 2^21
ACCUM_FLOAT_EXP = 21
# ... and its rounding form (``accum_half``) while 2^decay_exp <= 2^20
ACCUM_ROUND_EXP = 20
# y + ROUND_MAGIC - ROUND_MAGIC is y rounded to the nearest integer for |y| < 2^51
ROUND_MAGIC = 1.5 * 2.0 ** 52


def accum_lambda(decay, decay_exp):
    """``lam = (2^e - decay) / 2^e`` (float64, per neuron like ``decay``) of a decaying
    accum, the factor of ``accum_step_float``."""
    e = 2.0 ** decay_exp
    if _is_torch(decay):
        return (e - decay.to(torch.float64)) / e
    return (e - np.asarray(decay, np.float64)) / e


def accum_half(decay_exp) -> Optional[float]:
    """``h = 1/2 - 2^-(e+1)``, the offset of ``accum_step_float``'s rounding form, or None
    where ``e > ACCUM_ROUND_EXP`` (the floor form is then the exact one)."""
    e = int(decay_exp)
    return 0.5 - 2.0 ** -(e + 1) if e <= ACCUM_ROUND_EXP else None


def accum_step_float(prev, lam, a=None, half: Optional[float] = None):
    """``accum_step(prev, a, decay, decay_exp, wrap=False)`` on float64 values::

        out + ((-d * out) >> e) = floor(out * lam),   lam = (2^e - d) / 2^e

    ``out`` is an integer, so ``out + floor(y) = floor(out + y)``; with ``|out| < 2^31``
    (no wrap: ``qgraph.accum_state_bound``) and ``e <= ACCUM_FLOAT_EXP``, ``out * lam`` is
    an integer times ``2^-e`` below 2^53, exact in float64. Two operations per input-free
    step instead of an int64 product, shift and sum.

    ``half = accum_half(e)`` takes the floor by rounding instead: ``y = out * lam`` is
    ``n + k / 2^e`` with ``0 <= k < 2^e``, so ``y - h`` lies strictly between ``n - 1/2``
    and ``n + 1/2`` and rounds to ``n = floor(y)``; it is exact (a multiple of
    ``2^-(e+1)`` below 2^31, ``e <= 20``), and adding and subtracting ``ROUND_MAGIC``
    rounds it to the nearest integer in IEEE round-to-nearest. Three additions and a
    product instead of a product and a rounding to an integral value, a conversion
    instruction that an H100 runs at a quarter of its float64 rate (the token-time
    engine's memories on CUDA; docs/emulator.md)."""
    x = prev * lam
    if half is not None:
        x = ((x - half) + ROUND_MAGIC) - ROUND_MAGIC
    else:
        x = x.floor() if _is_torch(x) else np.floor(x)
    return x if a is None else x + a


def _abs32_gt(w, vth):
    """numpy's ``np.abs(w) > vth`` on int32 (``abs(-2^31)`` stays negative)."""
    return (abs(w) > vth) & (w != -I32)


def prod_step(a1, a2, exp, vth, wrap: bool = True):
    """ProdNeuron: ``w = wrap32(a1 * a2) >> exp``; out = w where |w| > vth, else 0."""
    w = a1 * a2
    if wrap:
        w = wrap32(w)
    if not _is_zero(exp):
        w = w >> exp
    if _is_zero(vth):                # |w| > 0 keeps every w but int32's -2^31
        return _zero_where(w, w == -I32) if wrap else w
    return w * _abs32_gt(w, vth)


def graded_step(a, vth):
    """GradedVec: out = a where |a| > vth, else 0 (``a`` already int32-valued)."""
    return a * _abs32_gt(a, vth)


def accum_step(prev, a=None, decay=None, decay_exp=0, wrap: bool = True):
    """One step of an ``accum``: GradedVec(vth=0) fed by its port, a graded weight-1
    Dense self-loop and, for a decaying memory, a graded ``Dense(-diag(decay),
    weight_exp=-decay_exp)`` self-loop (``PyDenseModelBitAcc``, ``PyGradedVecModelFixed``)::

        out[g] = wrap32(out[g-1] + (wrap32(-decay * out[g-1]) >> decay_exp) + a[g])
        out[g] = 0 where that is -2^31          (GradedVec: int32 abs(-2^31) > 0 is false)

    The decay loop's ``weights.dot(s_in)`` is an int32 product, its ``right_shift``
    an arithmetic (floor) shift; the port sums its three int32 channels in int32.
    ``a = None``: an input-free (drain) step; ``decay = None``: no decay loop
    (``out[g] = out[g-1] + a[g]``). ``decay`` is an int or an int64 array broadcastable
    to ``prev`` (per neuron, 0 where a neuron keeps its value), ``decay_exp`` an int
    or such an array. ``wrap=False`` when static bounds prove that no value leaves
    int32 (``qgraph.accum_state_bound``). Works on int64 torch tensors and numpy arrays
    alike (the numpy engine calls it too).
    """
    out = prev
    if decay is not None:
        loss = -decay * prev
        if wrap:
            loss = wrap32(loss)
        out = out + (loss >> decay_exp)
    if a is not None:
        out = out + a
    if wrap:
        out = wrap32(out)
        out = out * (out != -I32)
    return out


# ---------------------------------------------------------------- synapses
def dense_reference(x: torch.Tensor, weights: torch.Tensor, weight_exp: int, graded: bool,
                    delayed: bool = False) -> torch.Tensor:
    """Plain int64 form of one synapse (PyDenseModelBitAcc / PyDelayDenseModelBitAcc):

    binary: wrap32(shift(W @ x, e))                      (np.sum promotes to int64)
    graded: wrap32(shift(wrap32(W @ x), e))              (int32 dot), Dense
            wrap32(shift(sum_i wrap32(W_ji x_i), e))     DelayDense (elementwise int32 products)
    ``x``: (..., src) int64; returns (..., dst). CPU only (no integer matmul on CUDA).
    """
    if graded and delayed:
        acc = wrap32(x.unsqueeze(-2) * weights).sum(-1)
    else:
        acc = x @ weights.T
        if graded:
            acc = wrap32(acc)
    return wrap32(shift(acc, weight_exp))


class SynapseKernel:
    """An exact, fast form of one synapse for a given device.

    Rows with at most one non-zero weight (identity, replication, permutation)
    are a gather; other matrices are a float64 matmul, exact because every
    partial sum is an integer below 2^53 (checked here; otherwise an int64
    matmul on CPU); a graded DelayDense whose int32 products may wrap is
    computed product by product. ``bound`` is a static bound of |output|
    (None: unknown).

    Where the source's bound times the largest row sum of ``|w|`` is below 2^24 (every
    synapse on spikes: rows sum at most ``fan_in * 256``), the matmul is float32 instead
    (``f32``): every partial sum is an integer float32 holds, in any summation order. It
    is taken only while float32 matmuls are full float32 (``full_float32``, read at each
    call), since TF32 or bfloat16 tensor cores are not specified to accumulate exactly.

    On CUDA a synapse on spikes is an int8 matmul with int32 accumulation instead
    (``torch._int_mm``; integer arithmetic, exact by definition while the row sums stay
    below 2^31): the spikes are int8, and a weight matrix with entries outside int8 is
    split into pieces ``W = W_1 + ... + W_m``, ``W_i = clamp(W - W_1 - ... - W_(i-1),
    -128, 127)`` (two for Loihi's 8-bit mantissas, -256 ... 254; at most
    ``INT8_PIECES``), all in one product of m times the width (``int8``); sizes are
    padded to the multiples of 8 the kernel needs, and row counts it does not take
    (``int8_rows_ok``) take the float forms.

    A matrix with at most K non-zeros per row, ``K * SPARSE_ROWS <= src`` (an attention
    head's read-out sums 16 of 2048 graded values), is kept as its K (column, weight)
    pairs per row instead (``sparse``: ``sidx``, ``sval`` in (K, dst) layout, padding
    pairs of weight 0): ``y = sum_k x[:, sidx[k]] * sval[k]``, 2 K operations per output
    instead of a src-wide dot product, in float64 where the dense form is (exact below
    2^53), else in int64; the wraps and the shift are the dense form's.
    """

    def __init__(self, syn, src_kind: str, device="cpu", src_bound: Optional[int] = None):
        w = np.asarray(syn.weights, dtype=np.int64)
        self.name, self.exp, self.delay = syn.name, int(syn.weight_exp), int(syn.delay)
        self.graded = bool(syn.graded)
        # every form's attributes exist on every kernel (torch.compile's guards on one
        # kernel's attributes are evaluated on the others)
        self.sparse = self.int8 = self.wt = self.wt32 = self.wfull = None
        self.idx = self.val = self.sidx = self.sval = None
        self.f32 = self.float = self.unit = self.identity = False
        dev = torch.device(device)
        if not self.graded:
            src_bound = 1
        nnz_rows = (w != 0).sum(axis=1)
        rowabs = int(np.abs(w).sum(axis=1).max()) if w.size else 0
        exact_bound = None if src_bound is None else rowabs * src_bound
        self.mode = "gather" if (nnz_rows <= 1).all() else "dense"
        maxw = int(np.abs(w).max()) if w.size else 0
        if (self.mode == "dense" and self.graded and self.delay
                and (src_bound is None or maxw * src_bound >= I32)):
            # DelayDense multiplies elementwise in int32 (each product wraps), then sums in
            # int64: exact only product by product
            self.mode = "products"
            self.wfull = torch.as_tensor(w, device=dev)
            inner = False
        elif self.mode == "gather":
            idx = np.abs(w).argmax(axis=1)
            val = w[np.arange(w.shape[0]), idx]
            self.idx = torch.as_tensor(idx, device=dev)
            self.unit = bool((val == 1).all())
            self.identity = self.unit and w.shape[0] == w.shape[1] and bool(
                (idx == np.arange(w.shape[0])).all())
            self.val = torch.as_tensor(val, device=dev)
            # int32 source times one 9-bit weight: products leave int32 unless weights are 0/1
            inner = self.graded and not self.unit and (exact_bound is None or exact_bound >= I32)
        else:
            lim = rowabs * (I32 if src_bound is None else src_bound)
            self.float = lim < F64_EXACT
            if not self.float and dev.type != "cpu":
                raise ValueError(f"synapse {syn.name}: integer sums up to {lim} are not exact in "
                                 "float64 and CUDA has no int64 matmul")
            wt = torch.as_tensor(w.T.copy(), device=dev)
            self.wt = wt.to(torch.float64) if self.float else wt
            self.f32 = lim < F32_EXACT
            self.wt32 = wt.to(torch.float32) if self.f32 else None
            self.int8 = _int8_weights(w, dev) if (dev.type == "cuda" and not self.graded
                                                   and lim < I32) else None
            self.sparse = sparse_rows(w)
            if self.sparse is not None:
                self.sidx = torch.as_tensor(self.sparse[0].reshape(-1), device=dev)
                self.sval = torch.as_tensor(self.sparse[1], device=dev,
                                            dtype=torch.float64 if self.float else torch.int64)
            # Lava's graded Dense dots in int32 (wraps the sum); DelayDense sums in int64
            inner = (self.graded and not self.delay
                     and (exact_bound is None or exact_bound >= I32))
        self.inner_wrap = inner
        ob = None if (exact_bound is None or inner) else shift_bound(exact_bound, self.exp)
        self.outer_wrap = ob is None or ob >= I32
        self.bound = None if self.outer_wrap else ob

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (rows, src) int64 (or bool for binary sources) -> (rows, dst) int64."""
        if self.mode == "gather":
            acc = x if self.identity else x.index_select(-1, self.idx)
            acc = acc.to(torch.int64)
            if not self.unit:
                acc = acc * self.val
        elif self.mode == "products":
            acc = wrap32(x.to(torch.int64).unsqueeze(-2) * self.wfull).sum(-1)
        elif self.sparse is not None:
            acc = x.index_select(-1, self.sidx).to(self.sval.dtype)
            acc = (acc.reshape(*x.shape[:-1], *self.sval.shape) * self.sval).sum(-2)
            acc = acc.to(torch.int64)
        elif self.int8 is not None and x.is_cuda and int8_rows_ok(x.shape[0]):
            acc = _int8_matmul(x, *self.int8)
        elif self.f32 and full_float32(x):
            acc = (x.to(torch.float32) @ self.wt32).to(torch.int64)
        elif self.float:
            acc = (x.to(torch.float64) @ self.wt).to(torch.int64)
        else:
            acc = x.to(torch.int64) @ self.wt
        if self.inner_wrap:
            acc = wrap32(acc)
        acc = shift(acc, self.exp)
        return wrap32(acc) if self.outer_wrap else acc


SPARSE_ROWS = 32    # a dense matrix with at most src / SPARSE_ROWS non-zeros per row is sparse


def sparse_rows(w: np.ndarray):
    """``(sidx, sval)`` (K, dst) int64 of a matrix ``w`` (dst, src) with at most K
    non-zeros per row, ``K * SPARSE_ROWS <= src``: each row's non-zero columns and
    weights (padding pairs: column 0, weight 0); None for a denser matrix."""
    if not w.size:
        return None
    nz = w != 0
    K = int(nz.sum(axis=1).max())
    if K == 0 or K * SPARSE_ROWS > w.shape[1]:
        return None
    cols = np.argsort(~nz, axis=1, kind="stable")[:, :K]             # non-zeros first
    val = np.take_along_axis(w, cols, axis=1)
    cols = np.where(val != 0, cols, 0)
    return np.ascontiguousarray(cols.T), np.ascontiguousarray(val.T.astype(np.int64))


def full_float32(x: torch.Tensor) -> bool:
    """Float32 matmuls on ``x``'s device use float32 arithmetic: the matmul precision is
    "highest" and, on CUDA, TF32 is off."""
    if torch.get_float32_matmul_precision() != "highest":
        return False
    return not (x.is_cuda and torch.backends.cuda.matmul.allow_tf32)


INT8_PIECES = 4     # int8 pieces of one weight matrix at most: -512 <= w <= 508


def _int8_weights(w: np.ndarray, dev):
    """(int8 weights (pieces * n_pad, k_pad), whose transpose is the column-major operand
    cuBLASLt's int8 matmul takes, the output width n, the number of pieces m) of ``w``
    (n, k), with ``w = sum_i piece_i`` and every piece in int8 (``SynapseKernel``), or
    None where more than ``INT8_PIECES`` pieces would be needed. Sizes are padded with
    zeros to multiples of 8 (cuBLASLt), k to at least 32 and n to at least 16 (inductor's
    int8 kernel needs k > 16)."""
    n, k = w.shape
    pieces, rest = [], np.asarray(w, np.int64)
    while rest.any() or not pieces:
        if len(pieces) == INT8_PIECES:
            return None
        pieces.append(np.clip(rest, -128, 127))
        rest = rest - pieces[-1]
    npad, kpad = -(-max(n, 16) // 8) * 8, -(-max(k, 32) // 8) * 8
    wq = np.zeros((len(pieces) * npad, kpad), np.int8)
    for i, piece in enumerate(pieces):
        wq[i * npad: i * npad + n, :k] = piece
    return torch.as_tensor(wq, device=dev), n, len(pieces)


def int8_rows_ok(rows: int) -> bool:
    """Row counts ``torch._int_mm`` takes on cuBLASLt: more than 16, a multiple of 8."""
    return rows > 16 and rows % 8 == 0


def _int8_matmul(x: torch.Tensor, wq: torch.Tensor, n: int, pieces: int) -> torch.Tensor:
    """``x @ W^T`` (int64) for 0/1 ``x`` (rows, k; ``int8_rows_ok``) and
    ``_int8_weights``' form of W: the pieces' products, summed."""
    k = x.shape[-1]
    xq = x.to(torch.int8)
    if wq.shape[1] != k:
        xq = torch.nn.functional.pad(xq, (0, wq.shape[1] - k))
    acc = torch._int_mm(xq, wq.t())
    if pieces == 1:
        return acc[:, :n].to(torch.int64)
    return acc.view(acc.shape[0], pieces, -1)[:, :, :n].to(torch.int64).sum(1)


def add_bounds(*bs: Optional[int]) -> Optional[int]:
    """Bound of a port's input: the sum of its synapses' bounds (None if any is unknown)."""
    if any(b is None for b in bs):
        return None
    s = sum(bs)
    return s if s < I32 else None


# ---------------------------------------------------------------- stateless kinds
@dataclass(frozen=True)
class Elementwise:
    """A stateless population kind, as every executor runs it.

    Its output at a step is a function of that step's port values alone::

        out[g] = update(ports[g], wrap, *params)        (ports in the kind's port order)

    ``params``: the population fields the update takes (ints, or per-neuron columns
    where an executor stacks populations); ``bound(port_bounds)``: a bound of
    ``|out|`` from bounds of the ports (``None``: unknown), and ``wrap`` is true exactly
    when it is ``None`` (the update must wrap int32 where Lava's does);
    ``needs_all_ports``: the output is zero unless every port received something
    (a product), otherwise unless any did. ``update`` of all-zero ports is zero.

    The executors (``hw_sim``: the int reference, both emulator engines) and the range
    report read ``ELEMENTWISE`` instead of naming these kinds, so a new stateless kind
    is its entry here, its ``QGraph`` population dataclass and its Lava process
    (docs/architecture.md). The two stateful kinds, ``lif`` (state cleared at every
    token) and ``accum`` (state kept across tokens), have their schedules in each
    executor.
    """

    params: tuple
    update: object
    bound: object
    needs_all_ports: bool
    # the update on float64 numpy values where its bound excludes every wrap (``wrap``
    # false): the same integers, for an executor whose ports are float64
    float_update: object = None


def _prod_update(ports, wrap, exp, vth):
    return prod_step(ports[0], ports[1], exp, vth, wrap)


def _prod_bound(bounds):
    b1, b2 = bounds
    return b1 * b2 if b1 is not None and b2 is not None and b1 * b2 < I32 else None


def _graded_update(ports, wrap, vth):
    return graded_step(ports[0], vth)


def _above(w, vth):
    """``w`` where ``|w| > vth``, else 0, on float64 (no int32 ``-2^31`` without a wrap)."""
    return w if _is_zero(vth) else w * (np.abs(w) > vth)


def _prod_float(ports, exp, vth):
    """``prod_step`` without its wrap on float64 values: ``|a1 * a2| < 2^31`` (the bound)
    is exact, and ``w >> exp`` is ``floor(w * 2^-exp)``."""
    w = ports[0] * ports[1]
    if not _is_zero(exp):
        w = np.floor(w * np.exp2(-np.asarray(exp, np.float64)))
    return _above(w, vth)


ELEMENTWISE = {
    "prod": Elementwise(("exp", "vth"), _prod_update, _prod_bound, True, _prod_float),
    "graded": Elementwise(("vth",), _graded_update, lambda bounds: bounds[0], False,
                          lambda ports, vth: _above(ports[0], vth)),
}


# ---------------------------------------------------------------- stateful kinds
@dataclass(frozen=True)
class Stateful:
    """A stateful population kind, as every executor runs it generically.

    Its output at a step is a function of that step's port values and of a state it
    carries from step to step::

        out[g], state[g] = update(ports[g], state[g-1], wrap, *params)

    ``state``: the names of its state arrays (one int64 value per neuron each, zero at
    rest); ``params`` and ``bound`` as for ``Elementwise`` (``wrap`` is true exactly when
    ``bound`` is ``None``). In global time the update runs at every step, as Lava runs
    every process; ``reset_each_token``: the state is cleared at the first step of each
    token's window (as Lava's ``LIFReset`` clears ``u``, ``v``), otherwise it is kept, so
    between two tokens it takes the ``W - T`` input-free steps of the window's drain (the
    update on zero ports, outputs unused), which the token-time executors apply too.
    ``quiet``: zero ports give a zero output whatever the state (the population is then
    silent between tokens when its inputs are: ``check_streamable``); a kind that is not
    quiet holds its output like an ``accum`` and must be read through a gated product.
    ``update`` of zero ports on a zero state is a zero output and a zero state; it returns
    new arrays and writes none of its arguments (executors pass one zero array for several).

    ``STATEFUL`` holds the stateful kinds the executors (the int reference, both emulator
    engines, the token-time engine) and the range report run through this rule: a new
    kind is its entry here, its ``QGraph`` population dataclass and its Lava process
    (docs/architecture.md). ``lif`` and ``accum`` have schedules of their own in each
    executor (a lazy LIF skipped while silent, a memory's drain steps deferred, fused
    kernels), which the rule's generic path would give up.
    """

    params: tuple
    state: tuple
    update: object
    bound: object
    reset_each_token: bool
    quiet: bool


STATEFUL: dict = {}


def stateful_token(rule: Stateful, ports, state, wrap: bool, params, T: int, drain: int):
    """Token-time outputs of a ``STATEFUL`` kind for one token: ``ports`` a list of arrays
    (T, ..., size), ``state`` the list of state arrays after the previous token (``None``:
    a fresh sequence, no drain before this token), ``drain`` the W - T steps between two
    tokens. Returns (outputs (T, ..., size), state after the token's last step)."""
    like = ports[0][0] if ports else None
    if state is None or rule.reset_each_token:
        state = [_zeros_like(like) for _ in rule.state]
    else:
        zero = [_zeros_like(like) for _ in ports]
        for _ in range(drain):
            _, state = rule.update(zero, list(state), wrap, *params)
    outs = []
    for t in range(T):
        o, state = rule.update([p[t] for p in ports], list(state), wrap, *params)
        outs.append(o)
    stack = torch.stack if _is_torch(outs[0]) else np.stack
    return stack(outs), list(state)
