"""The token-time engine against the token-time integer reference, spike for spike.

Every population's outputs at every step of every token, on random graphs of every kind
(token shifts, step lags, self-loops, DelayDense, wraps, decaying memories), on the
decaying-attention graphs of ``test_decay`` and on a random decoder; the float forms the
engine picks on the values at hand against ``fixed_point``'s integer ones.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snn_compile.compiler.qgraph import Synapse
from snn_compile.errors import UserError
from snn_compile.hw_sim.emulator import EmulatorBackend
from snn_compile.hw_sim.int_reference import IntReferenceBackend, run_token_time
from snn_compile.hw_sim.random_graphs import random_dag_qgraph, random_decoder_qgraph
from snn_compile.hw_sim.token_engine import (F32_EXACT, LIF_FLOAT_INPUT, TokenEngine,
                                             TorchTokenEngine, _amax,
                                             _halves, _In, _Rows)
from snn_compile.loihi import fixed_point as fx

from test_decay import decaying_attention_graph, decaying_decoder, residual_stream_graph


def _check(q, tokens: np.ndarray) -> TokenEngine:
    """Feed ``tokens`` (B, N) one token at a time; every output equals the reference's."""
    ref = run_token_time(q, torch.as_tensor(tokens))
    B, N = tokens.shape
    e = TokenEngine(q, B)
    for n in range(N):
        sums = e.step_token(tokens[:, n])
        for i, name in enumerate(e.names):
            want = ref.outputs[name][:, n].numpy()                  # (B, T, size)
            got = e.outputs[i].transpose(1, 0, 2)
            assert np.array_equal(got, want), f"{name}, token {n}"
        assert np.array_equal(sums, ref.logits_int[:, n].numpy()), f"readout, token {n}"
    return e


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10 ** 6), n_pops=st.integers(2, 9), T=st.integers(1, 4),
       N=st.integers(1, 6), B=st.integers(1, 3))
def test_random_graphs_equal_reference(seed, n_pops, T, N, B):
    q = random_dag_qgraph(seed, n_pops=n_pops, T=T)
    _check(q, np.random.default_rng(seed).integers(0, 8, (B, N)))


def _check_chunks(q, tokens: np.ndarray, cuts, e: TokenEngine = None) -> TokenEngine:
    """Feed ``tokens`` (B, N) in chunks ending at ``cuts`` (into ``e``, by default a fresh
    engine); every population's outputs at every token of every chunk equal the
    reference's, and so do the readout sums."""
    ref = run_token_time(q, torch.as_tensor(tokens))
    B, N = tokens.shape
    e = TokenEngine(q, B) if e is None else e
    a = 0
    for b in sorted({c for c in cuts if c < N} | {N}):
        if b <= a:
            continue
        sums = e.step_tokens(tokens[:, a:b])
        for i, name in enumerate(e.names):
            want = ref.outputs[name][:, a:b].numpy()                # (B, n, T, size)
            got = e.chunk_outputs[i].transpose(2, 0, 1, 3)
            assert np.array_equal(got, want), f"{name}, tokens {a}..{b - 1}"
        assert np.array_equal(sums, ref.logits_int[:, a:b].numpy().transpose(1, 0, 2))
        a = b
    return e


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10 ** 6), n_pops=st.integers(2, 9), T=st.integers(1, 4),
       N=st.integers(1, 7), B=st.integers(1, 3), cuts=st.lists(st.integers(1, 6), max_size=3))
def test_chunks_of_tokens_equal_reference(seed, n_pops, T, N, B, cuts):
    """Several tokens per call (the whole chunk population by population) give the same
    numbers as the reference, across token shifts and memories that cross chunk edges."""
    q = random_dag_qgraph(seed, n_pops=n_pops, T=T)
    _check_chunks(q, np.random.default_rng(seed).integers(0, 8, (B, N)), cuts)


@pytest.mark.parametrize("make", [decaying_attention_graph, residual_stream_graph,
                                  decaying_decoder])
def test_decaying_graphs_in_chunks_equal_reference(make):
    q = make()
    V = q.pop("tokens").size
    n = min(9, q.context)
    _check_chunks(q, np.random.default_rng(4).integers(0, V, (2, n)), [1, 4])


@pytest.mark.parametrize("make", [decaying_attention_graph, residual_stream_graph,
                                  decaying_decoder])
def test_decaying_graphs_equal_reference(make):
    q = make()
    V = q.pop("tokens").size
    _check(q, np.random.default_rng(3).integers(0, V, (2, min(9, q.context))))


def test_decoder_equals_reference_and_spikes():
    q = random_decoder_qgraph(seed=1, vocab=24, d=16, heads=2, layers=2, T=3, context=16)
    e = _check(q, np.random.default_rng(0).integers(0, 24, (3, 12)))
    for i, name in enumerate(e.names):
        if q.pop(name).kind == "lif":
            assert e.outputs[i].any(), f"{name} never spikes in the last token"


def test_streaming_backend_equals_reference_backend():
    """``EmulatorBackend`` on the CPU (token engine by default) and the reference backend
    give the same logits, token by token, and again after a reset."""
    q = decaying_decoder(2)
    seq = np.random.default_rng(5).integers(0, q.pop("tokens").size, min(10, q.context))
    be, ib = EmulatorBackend(q), IntReferenceBackend(q)
    assert be.engine == "token"
    for t in seq:
        assert np.array_equal(be.feed(int(t)), ib.feed(int(t)))
    be.reset()
    ib.reset()
    assert np.array_equal(be.feed(int(seq[0])), ib.feed(int(seq[0])))


def test_bad_input_is_refused():
    q = random_decoder_qgraph(seed=1, vocab=24, d=16, heads=2, layers=1, T=2, context=4)
    e = TokenEngine(q, 2)
    with pytest.raises(UserError, match="outside 0..23"):
        e.step_token([0, 24])
    with pytest.raises(UserError, match="2 token ids"):
        e.step_token([0, 1, 2])
    with pytest.raises(UserError, match="shape"):
        e.step_frames({"tokens": np.zeros((2, 2, 5)), "positions": np.zeros((2, 2, 4))})
    for _ in range(4):
        e.step_token([1, 2])
    with pytest.raises(UserError, match="context 4"):
        e.step_token([1, 2])
    e.reset()
    assert e.step_token([1, 2]).shape == (2, 24)


@pytest.mark.parametrize("graded,delay,exp", [(False, 0, 3), (False, 0, -2), (True, 0, 1),
                                              (True, 2, -1), (True, 0, 0), (True, 0, -3)])
@pytest.mark.parametrize("scale", [2 ** 4, 2 ** 15, 2 ** 22, 2 ** 31])
def test_synapse_forms_equal_fixed_point(graded, delay, exp, scale):
    """Each form ``_In`` may take (float32, float32 halves, float64, int64, products) gives
    ``fixed_point.SynapseKernel``'s numbers after the port's int32 wrap, on values from
    small to int32-wide; the float form declines where it could differ."""
    rng = np.random.default_rng(scale % 97 + exp + 10 * delay)
    x = (rng.integers(-scale, scale, size=(6, 40)) if graded
         else (rng.random((6, 40)) < 0.5).astype(np.int64))
    mats = {"dense": rng.integers(-128, 128, size=(9, 40)) * 2,
            "wide": rng.integers(-255, 256, size=(9, 40)),
            "gather": np.eye(9, 40, dtype=np.int64) * rng.integers(-255, 255, size=(9, 1)),
            "identity": np.eye(40, dtype=np.int64)}
    for what, w in mats.items():
        syn = Synapse("s", "a", "b", w, exp, graded=graded, delay=delay)
        # bounds known (the float64 matmul) and unknown (inner int32 wraps kept)
        for bound in (scale, None):
            k = fx.SynapseKernel(syn, "prod" if graded else "lif", "cpu", bound)
            want = fx.wrap32(k(torch.as_tensor(x))).numpy()
            s = _In(k, 0, 0, 0, spikes=not graded)
            xf = _Rows(x.astype(np.float64))
            assert np.array_equal(fx.wrap32(s.int_form(xf)), want), (what, bound, "int")
            y = s.float_form(xf)
            if y is not None:
                assert np.array_equal(fx.wrap32(y.astype(np.int64)), want), (what, bound)


@pytest.mark.parametrize("spikes", [False, True])
def test_sparse_rows_equal_fixed_point(spikes):
    """A matrix with few nonzeros per row (a head's read-out: K of src) takes the sparse
    form, K (column, weight) pairs per row, and gives ``fixed_point.SynapseKernel``'s
    numbers on values whose sums fill int32, with and without a right shift."""
    rng = np.random.default_rng(7)
    dst, src, K = 24, 512, 8
    w = np.zeros((dst, src), np.int64)
    for i in range(dst):                     # rows of 1..K nonzeros, some columns shared
        cols = rng.choice(src, size=rng.integers(1, K + 1), replace=False)
        w[i, cols] = rng.integers(-255, 256, size=cols.size)
    x = ((rng.random((20, src)) < 0.5).astype(np.int64) if spikes
         else rng.integers(-2 ** 19, 2 ** 19, size=(20, src)))
    for exp in (0, -7):
        syn = Synapse("s", "a", "b", w, exp, graded=not spikes)
        k = fx.SynapseKernel(syn, "lif" if spikes else "prod", "cpu", 1 if spikes else 2 ** 19)
        s = _In(k, 0, 0, 0, spikes=spikes)
        assert s.sidx is not None and s.sidx.shape == (K, dst)
        y = s.float_form(_Rows(x.astype(np.float64)))
        assert y is not None
        want = fx.wrap32(k(torch.as_tensor(x))).numpy()
        assert np.array_equal(fx.wrap32(y.astype(np.int64)), want), exp


def test_float32_halves_are_exact_at_their_limits():
    """The split ``x = hi 2^k + lo`` keeps both halves' row sums below 2^24 at the largest
    values it accepts, and is refused where no split can."""
    for rowabs in (1.0, 255.0, 1728.0, 4000.0):
        for amax in (2.0 ** 16, 8e5, 2.0 ** 31 - 1):
            k = _halves(amax, rowabs)
            if k:
                assert rowabs * k < F32_EXACT and rowabs * (amax / k + 1) < F32_EXACT
    assert _halves(2.0 ** 31, 2.0 ** 12) == 0.0
    rng = np.random.default_rng(0)
    w = rng.integers(-255, 256, size=(16, 128))     # row sums of |w| near 2^14
    syn = Synapse("s", "a", "b", w, 0, graded=True)
    k = fx.SynapseKernel(syn, "prod", "cpu", 2 ** 15)
    s = _In(k, 0, 0, 0, spikes=False)
    x = rng.integers(-2 ** 15, 2 ** 15, size=(4, 128)).astype(np.float64)
    assert _halves(_amax(x), s.rowabs) and _amax(x) * s.rowabs >= F32_EXACT
    assert np.array_equal(s.float_form(_Rows(x)).astype(np.int64),
                          fx.wrap32(k(torch.as_tensor(x.astype(np.int64)))).numpy())


def test_synapse_kernel_float32_form_is_exact_at_its_limit():
    """``SynapseKernel`` takes its float32 matmul exactly where the source bound times the
    largest row sum of ``|w|`` stays below 2^24, and gives the int64 numbers there, on the
    row that reaches the bound (all products of one sign) and on random rows."""
    rng = np.random.default_rng(5)
    w = rng.integers(-255, 256, size=(12, 128))
    rowabs = int(np.abs(w).sum(axis=1).max())
    top = int(np.abs(w).sum(axis=1).argmax())
    for graded, bound in ((False, 1), (True, (fx.F32_EXACT - 1) // rowabs),
                          (True, fx.F32_EXACT // rowabs + 1)):
        syn = Synapse("s", "a", "b", w, -2, graded=graded)
        k = fx.SynapseKernel(syn, "prod" if graded else "lif", "cpu", bound)
        assert k.f32 == (rowabs * bound < fx.F32_EXACT), bound
        x = (rng.integers(-bound, bound + 1, size=(64, 128)) if graded
             else rng.integers(0, 2, size=(64, 128)))
        x[0] = np.sign(w[top]) * bound if graded else (w[top] > 0)
        xt = torch.as_tensor(x)
        want = fx.dense_reference(xt, torch.as_tensor(w), -2, graded)
        assert torch.equal(fx.wrap32(k(xt)), want), bound
        if graded:
            assert abs(int((xt[0] @ torch.as_tensor(w).T)[top])) == rowabs * bound
    old = torch.get_float32_matmul_precision()
    try:                                   # reduced float32 precision: float64 again
        torch.set_float32_matmul_precision("medium")
        assert not fx.full_float32(xt)
        assert torch.equal(fx.wrap32(k(xt)), want)
    finally:
        torch.set_float32_matmul_precision(old)
    assert fx.full_float32(xt)


def test_int8_form_is_taken_only_where_cublas_takes_it():
    """The int8 weights are padded to cuBLASLt's multiples of 8 (k to at least 32 for
    inductor's kernel), split into int8 pieces only when an entry leaves int8 (as many as
    the largest entry needs: 255 takes two, 508 four), the pieces sum to the weights, and
    rows go to the int8 kernel only in counts it takes."""
    w = np.arange(-150, 150).reshape(12, 25)
    for top, m in ((127, 1), (149, 2), (254, 2), (255, 3), (381, 3), (382, 4), (508, 4)):
        w_m = np.clip(w * top // 149, -top - 1, top)
        w_m[0, 0] = top
        wq, n, pieces = fx._int8_weights(w_m, "cpu")
        assert (n, pieces, tuple(wq.shape)) == (12, m, (16 * m, 32)), top
        parts = wq.numpy().astype(np.int64).reshape(m, 16, 32)
        assert np.array_equal(parts[:, :12, :25].sum(0), w_m), top
        assert not parts[:, 12:].any() and not parts[:, :, 25:].any()
    assert fx._int8_weights(np.array([[4 * 127 + 5]]), "cpu") is None
    assert fx._int8_weights(np.array([[-4 * 128 - 1]]), "cpu") is None
    assert [r for r in range(40) if fx.int8_rows_ok(r)] == [24, 32]
    assert fx.SynapseKernel(Synapse("s", "a", "b", w, 0), "lif", "cpu", 1).int8 is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_synapse_kernel_cuda_forms_equal_int64():
    """On CUDA a synapse on spikes is an int8 matmul (weights beyond int8 split into
    pieces, sizes padded to multiples of 8), and on row counts cuBLASLt's int8 kernel does
    not take a float32 one (float64 while TF32 is on): each gives the int64 numbers, with
    rows that reach the largest row sum."""
    rng = np.random.default_rng(6)
    for n, k, lo, hi, m in ((256, 1024, -256, 255, 2), (105, 37, -128, 128, 1),
                            (9, 12, -255, 256, 3), (40, 64, -500, 501, 4)):
        w = rng.integers(lo, hi, size=(n, k))
        w[0, 0], w[-1, -1] = lo, hi - 1
        kern = fx.SynapseKernel(Synapse("s", "a", "b", w, 1), "lif", "cuda", 1)
        assert kern.int8 is not None and kern.int8[2] == m
        for rows in (512, 24, 17, 16, 3):
            x = torch.as_tensor(rng.integers(0, 2, size=(rows, k)))
            x[0] = torch.as_tensor(w[0] > 0)
            x[-1] = torch.as_tensor(w[-1] < 0)
            want = fx.dense_reference(x, torch.as_tensor(w), 1, False)
            old = torch.backends.cuda.matmul.allow_tf32
            try:
                for tf32 in (False, True):
                    torch.backends.cuda.matmul.allow_tf32 = tf32
                    got = fx.wrap32(kern(x.cuda())).cpu()
                    assert torch.equal(got, want), (n, k, rows, tf32)
            finally:
                torch.backends.cuda.matmul.allow_tf32 = old


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_token_engine_on_cuda_equals_reference():
    """The CUDA engine (compiled, int8 and float32 matmuls) streams the reference's
    readout sums on a decoder with decaying memories and a token shift."""
    q = decaying_decoder()
    toks = np.random.default_rng(8).integers(0, q.pop("tokens").size, (24, 6))
    ref = run_token_time(q, torch.as_tensor(toks))
    e = TorchTokenEngine(q, toks.shape[0], "cuda")
    for n in range(toks.shape[1]):
        assert torch.equal(e.step_token(toks[:, n]).cpu(), ref.logits_int[:, n]), n
    assert e._fn is not e._step, "the compiled step fell back to eager"


@pytest.mark.parametrize("dv,vth,bias", [(0, 100, 0), (300, 40, 0), (4095, 10, 7),
                                         (1, 2000, -3)])
def test_lif_token_float_equals_lif_step(dv, vth, bias):
    """``fixed_point.lif_token_float`` is ``lif_step`` from rest over T steps for inputs up
    to the limit the engine gives it (|a| < 2^17)."""
    rng = np.random.default_rng(dv + vth)
    a = rng.integers(-LIF_FLOAT_INPUT + 1, LIF_FLOAT_INPUT, size=(6, 3, 50))
    a[:, :, :25] //= 2 ** 10                       # small inputs too: some spike, some not
    p = fx.LifParams(0, fx.DECAY_UNITY - dv, vth << fx.VTH_SHIFT, bias, False, False, False)
    pi = fx.LifParams(0, fx.DECAY_UNITY - dv, vth << fx.VTH_SHIFT, bias)   # every wrap kept
    got = fx.lif_token_float(a.astype(np.float64), p.fv, p.vth6, p.bias)
    u = v = None
    for t in range(a.shape[0]):
        s, u, v = fx.lif_step(a[t], u, v, pi)
        assert np.array_equal(got[t], s.astype(np.float64)), t
    assert 0 < got.sum() < got.size


# ------------------------------------------------------- the torch form (CUDA's engine)
def _check_torch(q, tokens: np.ndarray, compile: bool) -> TorchTokenEngine:
    ref = run_token_time(q, torch.as_tensor(tokens))
    e = TorchTokenEngine(q, tokens.shape[0], "cpu", compile=compile)
    for n in range(tokens.shape[1]):
        assert torch.equal(e.step_token(tokens[:, n]), ref.logits_int[:, n]), n
    return e


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10 ** 6), n_pops=st.integers(2, 9), T=st.integers(1, 4),
       N=st.integers(1, 6))
def test_torch_token_engine_equals_reference(seed, n_pops, T, N):
    """Streaming one token at a time through the reference's population updates gives the
    whole-sequence run's readout (memories, states and token-shift history carried)."""
    q = random_dag_qgraph(seed, n_pops=n_pops, T=T)
    _check_torch(q, np.random.default_rng(seed).integers(0, 8, (2, N)), compile=False)


def test_compiled_torch_token_engine_equals_reference():
    """``torch.compile`` of the token step (inductor's C++ here, Triton on CUDA) gives the
    reference's numbers, on a graph with a decaying memory and a token shift."""
    q = decaying_attention_graph()
    e = _check_torch(q, np.random.default_rng(4).integers(0, q.pop("tokens").size, (2, 5)),
                     compile=True)
    assert e._fn is not e._step, "the compiled step fell back to eager"
    with pytest.raises(UserError, match="2 token ids"):
        e.step_token([1, 2, 3])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10 ** 6), e=st.sampled_from([0, 1, 5, 12, 13, fx.ACCUM_ROUND_EXP, fx.ACCUM_FLOAT_EXP]))
def test_accum_step_float_equals_accum_step(seed, e):
    """``accum_step_float`` (floor(out * lam), and its rounding form up to e = 20) is
    ``accum_step`` without wraps, drain steps and input steps, on int32-wide values and
    every decay from 0 to 2^e, numpy and torch."""
    rng = np.random.default_rng(seed)
    dec = np.concatenate([[0, 2 ** e], rng.integers(0, 2 ** e + 1, size=62)]).astype(np.int64)
    x = rng.integers(-2 ** 31 + 1, 2 ** 31, size=(3, 64))
    x[0, :8] = [2 ** 31 - 1, -2 ** 31 + 1, 1, -1, 0, 2 ** 30, -2 ** 30 - 1, 7]
    lam = fx.accum_lambda(dec, e)
    xf = x.astype(np.float64)
    for step in range(6):
        a = None if step % 2 else rng.integers(-2 ** 20, 2 ** 20, size=x.shape)
        want = fx.accum_step(x, a, dec, e, wrap=False)
        got = fx.accum_step_float(xf, lam, a)
        tlam = fx.accum_lambda(torch.as_tensor(dec), e)
        ta = None if a is None else torch.as_tensor(a)
        tgot = fx.accum_step_float(torch.as_tensor(xf), tlam, ta)
        assert np.array_equal(got, want) and np.array_equal(tgot.numpy(), want), step
        half = fx.accum_half(e)
        if e <= fx.ACCUM_ROUND_EXP:          # the rounding form (the CUDA token engine's)
            rgot = fx.accum_step_float(xf, lam, a, half)
            trgot = fx.accum_step_float(torch.as_tensor(xf), tlam, ta, half)
            assert np.array_equal(rgot, want) and np.array_equal(trgot.numpy(), want), step
        else:
            assert half is None
        keep = np.abs(want) < 2 ** 31 - 2 ** 21        # stay inside int32 for the next step
        x, xf = np.where(keep, want, 0), np.where(keep, got, 0.0)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def test_memory_forms_benchmark_forms_equal_the_int64_form(device, capsys):
    """Every form ``benchmarks.memory_forms`` times (float64 floor and rounding, int64,
    int32 halves; on CUDA the ``accum_triton`` kernel, rounding and fma.rm) gives the int64 form's outputs over a
    token of the default memory's shape; bad input is one error line."""
    from snn_compile.benchmarks import memory_forms

    res = memory_forms.run(batch=3, device=device, compile=False)
    want = {"floor", "round", "int64", "int32"} | ({"triton", "triton-fma-rm"} if device == "cuda"
                                                       else set())
    assert want <= set(res["forms"])
    assert all(res["forms"][k].get("equal") is True for k in want), res["forms"]
    assert memory_forms.main(["--batch", "0", "--device", "cpu"]) == 2
    assert "give at least 1 sequence" in capsys.readouterr().err


@pytest.mark.parametrize("make", [decaying_attention_graph, decaying_decoder])
def test_torch_token_engine_float_forms_equal_reference(make):
    """The torch token engine's float64 forms (the LIFs without wraps, the decaying
    memories) give the reference's readout at every token; the graphs have both."""
    q = make()
    e = _check_torch(q, np.random.default_rng(5).integers(0, q.pop("tokens").size,
                                                          (2, min(9, q.context))),
                     compile=False)
    lifs = [p for p in e.plan.lif.values() if not (p.act_wrap or p.u_wrap or p.v_wrap)]
    mems = [n for n in e.plan.accum_decay if not e.plan.accum_wrap[n]]
    assert e.plan.float_forms and lifs and mems


ACCUM_TRITON_CHECK = r"""
import sys
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
import triton.language as tl
from triton.runtime import interpreter
if not hasattr(interpreter.Builder, "get_double_ty"):    # Triton 2.3's interpreter lacks float64
    interpreter.Builder.get_double_ty = lambda self: tl.float64
    interpreter.Builder.get_fp64 = lambda self, v: interpreter.TensorHandle(
        np.array([v], dtype=np.float64), tl.float64)
from snn_compile.hw_sim import accum_triton, int_reference as ir
from snn_compile.hw_sim.token_engine import TorchTokenEngine
from snn_compile.loihi import fixed_point as fx
from test_decay import decaying_attention_graph, decaying_decoder

rng = np.random.default_rng(3)
cases = 0
for e in (0, 5, 12, fx.ACCUM_ROUND_EXP):
    for B, N, T, S, drain, fresh in ((1, 1, 1, 1, 0, True), (3, 2, 4, 300, 39, False),
                                     (2, 3, 2, 257, 5, True), (5, 1, 3, 64, 7, False)):
        dec = torch.as_tensor(rng.integers(0, 2 ** e + 1, size=S))
        dec[0] = 2 ** e
        x = None if fresh else torch.as_tensor(rng.integers(-2 ** 30, 2 ** 30, size=(B, S)))
        a = torch.as_tensor(rng.integers(-2 ** 20, 2 ** 20, size=(B, N, T, S)))
        got = accum_triton.token_update(x, a, fx.accum_lambda(dec, e), e, drain)
        v = torch.zeros(B, S, dtype=torch.int64) if fresh else x
        for n in range(N):
            if n or not fresh:
                for _ in range(drain):
                    v = fx.accum_step(v, None, dec, e, wrap=False)
            for t in range(T):
                v = fx.accum_step(v, a[:, n, t], dec, e, wrap=False)
                assert torch.equal(got[:, n, t], v), (e, B, N, T, S, n, t)
        cases += 1
try:
    accum_triton.token_update(None, a, fx.accum_lambda(dec, 21), 21, 3)
    raise SystemExit("no error for e = 21")
except ValueError:
    pass

# the engine's path: every decaying memory through the kernel, streamed and whole
calls = []
update = accum_triton.token_update
accum_triton.token_update = lambda *a, **k: calls.append(1) or update(*a, **k)
for q in (decaying_attention_graph(), decaying_decoder()):
    toks = torch.as_tensor(rng.integers(0, q.pop("tokens").size, (3, min(7, q.context))))
    ref = ir.run_token_time(q, toks)
    plan = ir.plan_graph(q, "cpu", float_forms=True, triton_memories=True)
    whole = ir.run_token_time(q, toks, plan=plan)
    assert all(torch.equal(whole.outputs[k], v) for k, v in ref.outputs.items())
    eng = TorchTokenEngine(q, toks.shape[0], "cpu", compile=False)
    assert not eng.plan.triton_memories          # not on a CPU device by itself
    eng.plan = plan
    for n in range(toks.shape[1]):
        assert torch.equal(eng.step_token(toks[:, n]), ref.logits_int[:, n]), n
assert len(calls) > 7, calls
print("ok", cases, len(calls))
"""


def test_accum_triton_kernel_equals_accum_step_in_the_interpreter():
    """The decaying memory's Triton kernel (``accum_triton``, the CUDA token engine's) on
    CPU tensors through Triton's interpreter: ``accum_step``'s values at every step of
    every token (fresh and carried values, partial blocks, e up to ACCUM_ROUND_EXP, decays
    0 to 2^e), and through the engine's path the reference's outputs and readout."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-c", ACCUM_TRITON_CHECK, str(Path(__file__).parent)],
                       env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stderr[-3000:]
