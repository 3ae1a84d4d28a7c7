"""The compiled loops of ``loihi/jit.py`` against the numpy forms they replace, value for
value (every value an exact integer in float64)."""

from __future__ import annotations

import numpy as np
import pytest

from snn_compile.loihi import fixed_point as fx
from snn_compile.loihi import jit


def _shifted(y, exp):
    """A synapse's shift on exact integers: ``a << e`` or ``a >> e`` (the floor)."""
    return y * 2 ** exp if exp >= 0 else np.floor_divide(y, 2 ** -exp)


@pytest.mark.parametrize("rows,density", [(1, 0.0), (4, 0.2), (64, 0.05), (300, 0.9)])
@pytest.mark.parametrize("exp", [0, 3, -5])
def test_rows_matmul_is_the_matmul(rows, density, exp):
    """Spikes and graded values (zeros skipped) times integer weights, sums up to 2^40,
    shifted, written or added into a running sum."""
    rng = np.random.default_rng(rows)
    w = rng.integers(-2 ** 20, 2 ** 20, size=(96, 70))
    base = rng.integers(-2 ** 30, 2 ** 30, size=(rows, 70))
    for x in ((rng.random((rows, 96)) < density).astype(np.int64),
              np.where(rng.random((rows, 96)) < density,
                       rng.integers(-2 ** 12, 2 ** 12, size=(rows, 96)), 0)):
        want = _shifted(x @ w, exp)
        args = (x.astype(np.float64), w.astype(np.float64), 2.0 ** exp, exp < 0)
        assert np.array_equal(jit.rows_matmul(*args, False, np.full((rows, 70), np.nan)), want)
        assert np.array_equal(jit.rows_matmul(*args, True, base.astype(np.float64)),
                              base + want)


@pytest.mark.parametrize("exp", [0, -3])
def test_sparse_gather_and_gather_are_take(exp):
    rng = np.random.default_rng(1)
    x = rng.integers(-2 ** 20, 2 ** 20, size=(7, 200))
    idx = rng.integers(0, 200, size=(5, 33))
    val = rng.integers(-255, 256, size=(5, 33))
    base = rng.integers(-2 ** 30, 2 ** 30, size=(7, 33))
    xf, sc, fl = x.astype(np.float64), 2.0 ** exp, exp < 0
    got = jit.sparse_gather(xf, idx, val.astype(np.float64), sc, fl, False, np.empty((7, 33)))
    assert np.array_equal(got, _shifted((x[:, idx] * val).sum(axis=1), exp))
    g = jit.gather(xf, idx[0], val[0].astype(np.float64), sc, fl, True, base.astype(np.float64))
    assert np.array_equal(g, base + _shifted(x.take(idx[0], axis=1) * val[0], exp))
    assert np.array_equal(jit.gather(xf, idx[0], np.zeros(0), sc, fl, False, np.empty((7, 33))),
                          _shifted(x.take(idx[0], axis=1), exp))


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


@pytest.mark.parametrize("kind", sorted(fx.ELEMENTWISE))
def test_elementwise_float_update_is_the_update(kind):
    """A stateless kind's float64 update equals its int64 update without wraps, on ports
    whose values keep every product inside int32, scalar and per-neuron parameters."""
    rule = fx.ELEMENTWISE[kind]
    rng = np.random.default_rng(len(kind))
    ports = [rng.integers(-2 ** 15, 2 ** 15, size=(6, 50)) for _ in range(2)]
    ports = ports[:2 if rule.needs_all_ports else 1]
    for params in ((0,) * len(rule.params), tuple(rng.integers(0, 9, size=50)
                                                  for _ in rule.params)):
        want = rule.update(ports, False, *params)
        got = rule.float_update([p.astype(np.float64) for p in ports], *params)
        assert got.dtype == np.float64 and np.array_equal(got, want), params
        assert (want != 0).any()


def test_decaying_tokens_is_accum_step():
    """A chunk of 3 tokens of 4 steps with 5 drain steps between them, against
    ``accum_step`` without wraps step by step."""
    rng = np.random.default_rng(4)
    dec = rng.integers(0, 2 ** 12 + 1, size=24)
    lam = fx.accum_lambda(dec, 12)
    x0 = rng.integers(-2 ** 28, 2 ** 28, size=(2, 24))
    a = rng.integers(-2 ** 20, 2 ** 20, size=(3, 4, 2, 24))
    x = x0.astype(np.float64)
    got = jit.decaying_tokens(x, lam, a.astype(np.float64), 5, np.empty(a.shape))
    want, ref = np.empty(a.shape, np.int64), x0
    for n in range(3):
        for _ in range(5 if n else 0):
            ref = fx.accum_step(ref, None, dec, 12, wrap=False)
        for t in range(4):
            ref = fx.accum_step(ref, a[n, t], dec, 12, wrap=False)
            want[n, t] = ref
    assert np.array_equal(got, want) and np.array_equal(x, ref)


def test_lif_token_float_refuses_inputs_at_the_limit():
    """With ``input_limit``, one input at ``|a| >= limit`` (either sign, at any step)
    gives None, so the caller takes the integer form; below it, the spikes."""
    a = np.zeros((4, 2, 8))
    a[2, 1, 5] = 2.0 ** 17 - 1
    assert fx.lif_token_float(a, 3000, 64, 0, 2 ** 17) is not None
    for v in (2.0 ** 17, -2.0 ** 17):
        a[3, 0, 7] = v
        assert fx.lif_token_float(a, 3000, 64, 0, 2 ** 17) is None
        assert fx.lif_token_float(a, 3000, 64, 0) is not None


@pytest.mark.parametrize("exp,vth", [(0, 0), (3, 0), (2, 5)])
def test_prod_gathers_is_gather_then_the_prod_update(exp, vth):
    """Two gathered ports (one with factors and a right shift, one an identity-like plain
    gather) and the prod's float update, fused, against the unfused forms."""
    rng = np.random.default_rng(exp + vth)
    x1 = rng.integers(-2 ** 7, 2 ** 7, size=(6, 40)).astype(np.float64)
    x2 = (rng.random((6, 30)) < 0.5).astype(np.float64)
    i1, i2 = rng.integers(0, 40, size=64), rng.integers(0, 30, size=64)
    v1 = rng.integers(-9, 10, size=64).astype(np.float64)
    p1 = jit.gather(x1, i1, v1, 0.5, True, False, np.empty((6, 64)))
    p2 = jit.gather(x2, i2, np.zeros(0), 1.0, False, False, np.empty((6, 64)))
    want = fx.ELEMENTWISE["prod"].float_update([p1, p2], exp, vth)
    got = jit.prod_gathers(x1, i1, v1, 0.5, True, x2, i2, np.zeros(0), 1.0, False,
                           2.0 ** -exp, float(vth), np.full((6, 64), np.nan))
    assert np.array_equal(got, want) and (want != 0).any()
