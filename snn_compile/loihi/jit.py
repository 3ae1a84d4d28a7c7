"""Compiled (numba) loops for the float64 forms of ``fixed_point``, for the CPU at small batch.

At batch 1 a token moves a few rows (T = 4) through each population: numpy then spends
most of its time starting operations, not computing. These loops do the same IEEE
float64 operations element by element, in one call each, so their results are the
numpy forms' bit for bit (every value is an integer below 2^53; no fast-math, no
reassociation where the order matters):

* ``lif_token`` — ``fixed_point.lif_token_float``'s recurrence for every neuron, with
  the caller's no-wrap check on the inputs in the same pass;
* ``rows_matmul`` — ``x @ w`` skipping the zero entries of ``x`` (spikes are mostly
  0): exact in any order while every partial sum stays below 2^53;
* ``sparse_gather`` — ``sum_k x[:, idx[k]] * val[k]`` of ``fixed_point.sparse_rows``;
* ``gather`` — ``x.take(idx, axis=1) * val`` of a gather synapse;

  each of the three then applies the synapse's shift (``a << e = a * 2^e``, ``a >> e =
  floor(a * 2^-e)``) and writes or adds its result into the port's sum ``out``;
* ``decay_floor`` — ``n`` steps of ``x = floor(x * lam)`` (``accum_step_float`` without
  input: a decaying memory's drain);
* ``decaying_tokens`` — a decaying memory over the tokens of a chunk: the drains between
  them and each token's T steps ``x = floor(x * lam) + a``;
* ``prod_gathers`` — a ``prod`` of two gathered ports (an attention head's ``k (x) v``
  and ``q . memory``) without the ports' intermediate arrays.

Compiled on first use and cached next to this file (``cache=True``); ``tests/test_jit.py``
compares each with its numpy form.
"""

from __future__ import annotations

import numba
import numpy as np

_JIT = dict(nopython=True, nogil=True, cache=True)


@numba.jit(**_JIT)
def lif_float_step(v, act, first, k, lim, th):
    """One step of the float LIF (``fixed_point.lif_token_float``): ``v = clip(trunc(v * k)
    + act, ±lim)`` (``v = act`` at a token's first step), spike ``v > th``, then ``v = 0``.
    Returns (spike 0/1, v). Every loop over LIF steps calls this one."""
    if first:
        v = act
    else:
        if k != 1.0:
            v = np.trunc(v * k)
        v += act
    if v > lim:
        v = lim
    elif v < -lim:
        v = -lim
    if v > th:
        return 1.0, 0.0
    return 0.0, v


@numba.jit(**_JIT)
def lif_token(a, k, vth6, bias, lim, alim, out):
    """LIF from rest over the T rows of ``a`` (T, n): ``v = clip(trunc(v * k) + a * 64 +
    bias, ±lim)``, spike ``v > vth6`` (then ``v = 0``); spikes (0/1) into ``out`` (T, n).
    ``vth6``, ``bias``: float64 (m,) with m = 1 or n % m == 0, neuron i taking entry i % m
    (the per-neuron constants of the last axis of a flattened (T, ..., size) array).
    False, with ``out`` unfinished, as soon as an input reaches ``|a| >= alim``."""
    T, n = a.shape
    mt, mb = vth6.shape[0], bias.shape[0]
    for i in range(n):
        th = vth6[i % mt]
        b = bias[i % mb]
        v = 0.0
        for t in range(T):
            ai = a[t, i]
            if ai >= alim or ai <= -alim:
                return False
            out[t, i], v = lif_float_step(v, ai * 64.0 + b, t == 0, k, lim, th)
    return True


@numba.jit(**_JIT)
def shift(v, scale, floor):
    """A synapse's shift of its output ``v``: ``v * scale`` (``scale = 2^exp``), floored
    for a right shift."""
    if scale != 1.0:
        v = v * scale
        if floor:
            v = np.floor(v)
    return v


@numba.jit(**_JIT)
def _put(o, d, v, scale, floor, add):
    """``o[d] (+)= shift(v)``: written, or added to the port's sum when ``add``."""
    v = shift(v, scale, floor)
    if add:
        o[d] += v
    else:
        o[d] = v


@numba.jit(**_JIT)
def _gathered(x, r, i, idx, val):
    """``x[r, idx[i]] * val[i]`` (``val`` (0,): no factor), before the shift."""
    v = x[r, idx[i]]
    if val.shape[0] > 0:
        v = v * val[i]
    return v


@numba.jit(**_JIT)
def _put_row(o, acc, scale, floor, add):
    for d in range(acc.shape[0]):
        _put(o, d, acc[d], scale, floor, add)


@numba.jit(**_JIT)
def rows_matmul(x, w, scale, floor, add, out):
    """``out (+)= shift(x @ w)`` for ``x`` (R, S), ``w`` (S, D) float64, adding the rows
    of ``w`` where ``x`` is non-zero."""
    R, S = x.shape
    D = w.shape[1]
    acc = np.empty(D)
    for r in range(R):
        acc[:] = 0.0
        for j in range(S):
            xv = x[r, j]
            if xv != 0.0:
                wj = w[j]
                for d in range(D):
                    acc[d] += xv * wj[d]
        _put_row(out[r], acc, scale, floor, add)
    return out


@numba.jit(**_JIT)
def sparse_gather(x, idx, val, scale, floor, add, out):
    """``out[r, d] (+)= shift(sum_k x[r, idx[k, d]] * val[k, d])`` (``idx`` (K, D) int64,
    ``val`` (K, D) float64), k in increasing order."""
    R = x.shape[0]
    K, D = idx.shape
    acc = np.empty(D)
    for r in range(R):
        xr = x[r]
        acc[:] = 0.0
        for k in range(K):
            ik = idx[k]
            vk = val[k]
            for d in range(D):
                acc[d] += xr[ik[d]] * vk[d]
        _put_row(out[r], acc, scale, floor, add)
    return out


@numba.jit(**_JIT)
def gather(x, idx, val, scale, floor, add, out):
    """``out[r, d] (+)= shift(x[r, idx[d]] * val[d])`` (``val`` (D,) float64, or (0,): no
    factor)."""
    for r in range(x.shape[0]):
        o = out[r]
        for d in range(idx.shape[0]):
            _put(o, d, _gathered(x, r, d, idx, val), scale, floor, add)
    return out


@numba.jit(**_JIT)
def decay_floor(x, lam, n):
    """``n`` times ``x = floor(x * lam)`` in place, ``x`` (R, M), ``lam`` (M,); step-major
    so each step is one vectorisable pass over a row."""
    R, M = x.shape
    for r in range(R):
        xr = x[r]
        for _ in range(n):
            for m in range(M):
                xr[m] = np.floor(xr[m] * lam[m])
    return x



@numba.jit(**_JIT)
def decaying_tokens(x, lam, a, drain, out):
    """Decaying memories over the tokens of a chunk: for each token ``n``, its ``drain``
    input-free steps first (from the second token on), then ``x = floor(x * lam) + a[n,
    t]`` for its T steps (``fixed_point.accum_step_float``), each step's ``x`` into
    ``out[n, t]``. ``x`` (B, M) state, updated in place; ``a``, ``out`` (N, T, B, M)."""
    N, T, B, M = a.shape
    for b in range(B):
        xb = x[b]
        for n in range(N):
            if n:
                for _ in range(drain):
                    for m in range(M):
                        xb[m] = np.floor(xb[m] * lam[m])
            for t in range(T):
                at = a[n, t, b]
                ot = out[n, t, b]
                for m in range(M):
                    v = np.floor(xb[m] * lam[m]) + at[m]
                    xb[m] = v
                    ot[m] = v
    return out


@numba.jit(**_JIT)
def prod_gathers(x1, i1, v1, s1, f1, x2, i2, v2, s2, f2, escale, vth, out):
    """A ``prod`` whose two ports are one gather each, in one pass: each port's value as
    ``gather`` computes it (index, factor, shift), then ``fixed_point``'s float update
    ``w = p1 * p2``, ``w = floor(w * 2^-exp)`` (``escale = 2^-exp``; 1: no shift) and
    ``w`` where ``|w| > vth``, else 0."""
    R = x1.shape[0]
    D = i1.shape[0]
    for r in range(R):
        o = out[r]
        for d in range(D):
            w = (shift(_gathered(x1, r, d, i1, v1), s1, f1)
                 * shift(_gathered(x2, r, d, i2, v2), s2, f2))
            if escale != 1.0:
                w = np.floor(w * escale)
            if vth != 0.0 and not abs(w) > vth:
                w = 0.0
            o[d] = w
    return out
