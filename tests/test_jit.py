"""The compiled loops of ``loihi/jit.py`` against the numpy forms they replace, value for
value (every value an exact integer in float64)."""

from __future__ import annotations

import numpy as np
import pytest

from snn_compile.loihi import fixed_point as fx
from snn_compile.loihi import jit


@pytest.mark.parametrize("rows,density", [(1, 0.0), (4, 0.2), (64, 0.05), (300, 0.9)])
def test_rows_matmul_is_the_matmul(rows, density):
    """Spikes and graded values (zeros skipped) times integer weights, sums up to 2^40."""
    rng = np.random.default_rng(rows)
    w = rng.integers(-2 ** 20, 2 ** 20, size=(96, 70)).astype(np.float64)
    for x in ((rng.random((rows, 96)) < density).astype(np.float64),
              np.where(rng.random((rows, 96)) < density,
                       rng.integers(-2 ** 12, 2 ** 12, size=(rows, 96)), 0).astype(np.float64)):
        got = jit.rows_matmul(x, w, np.full((rows, 70), np.nan))
        want = (x.astype(np.int64) @ w.astype(np.int64)).astype(np.float64)
        assert np.array_equal(got, want)


def test_sparse_gather_and_gather_are_take():
    rng = np.random.default_rng(1)
    x = rng.integers(-2 ** 20, 2 ** 20, size=(7, 200)).astype(np.float64)
    idx = rng.integers(0, 200, size=(5, 33))
    val = rng.integers(-255, 256, size=(5, 33)).astype(np.float64)
    got = jit.sparse_gather(x, idx, val, np.empty((7, 33)))
    assert np.array_equal(got, (x[:, idx] * val).sum(axis=1))
    g = jit.gather(x, idx[0], val[0], np.empty((7, 33)))
    assert np.array_equal(g, x.take(idx[0], axis=1) * val[0])
    assert np.array_equal(jit.gather(x, idx[0], np.zeros(0), np.empty((7, 33))),
                          x.take(idx[0], axis=1))


@pytest.mark.parametrize("e", [0, 6, 21])
def test_decay_floor_is_the_drain(e):
    """``n`` input-free steps ``floor(x * lam)`` equal ``accum_step`` without wraps, on a
    strided view (the engine drains a slice of its stacked memories in place)."""
    rng = np.random.default_rng(e)
    dec = np.concatenate([[0, 2 ** e], rng.integers(0, 2 ** e + 1, size=30)])
    x = rng.integers(-2 ** 31 + 1, 2 ** 31, size=(3, 32))
    big = np.zeros((3, 40))
    big[:, 4:36] = x
    jit.decay_floor(big[:, 4:36], fx.accum_lambda(dec, e), 9)
    want = x
    for _ in range(9):
        want = fx.accum_step(want, None, dec, e, wrap=False)
    assert np.array_equal(big[:, 4:36], want)
    assert not big[:, :4].any() and not big[:, 36:].any()
    assert (want != x).any()


def test_lif_token_float_per_neuron_constants():
    """Per-neuron thresholds and biases over the last axis of a (T, N, B, size) input, as
    the engine passes a chunk of N tokens, against ``lif_step`` from rest."""
    rng = np.random.default_rng(3)
    size = 40
    a = rng.integers(-2 ** 16, 2 ** 16, size=(4, 3, 2, size))
    a[..., :20] //= 2 ** 9
    vth6 = rng.integers(1, 2 ** 14, size=size) << fx.VTH_SHIFT
    bias = rng.integers(-2 ** 10, 2 ** 10, size=size)
    got = fx.lif_token_float(a.astype(np.float64), 3000, vth6, bias)
    p = fx.LifParams(0, 3000, vth6, bias)
    u = v = None
    for t in range(4):
        s, u, v = fx.lif_step(a[t], u, v, p)
        assert np.array_equal(got[t], s.astype(np.float64)), t
    assert 0 < got.sum() < got.size
    with pytest.raises(ValueError, match="per-neuron constants"):
        fx.lif_token_float(a.astype(np.float64), 3000, vth6[:7], 0)
