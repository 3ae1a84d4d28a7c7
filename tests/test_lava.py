"""Lava lowering vs the token-time integer reference, spike for spike.

Every graph here is tiny (Lava runs one OS process per Lava process). What is
checked: Lava's own timing conventions (Injector/Extractor latency, Dense and
DelayDense delays, the LIFReset offset), then, for hand-built graphs covering
every population kind and synapse variant and for random deployable decoders,
that every population's output at every token and step, and the readout sums,
equal ``run_token_time``; that ``reset()`` equals a fresh session; that greedy
generation on Lava equals the integer reference; and that the hardware backend
without lava-loihi is a clear ``UserError``.
"""

from __future__ import annotations

import numpy as np
import pytest

from snn_compile.compiler.qgraph import (QGraph, Synapse, assign_depths, population,
                                         lava_legal_weights)
from snn_compile.errors import UserError

lava_io = pytest.importorskip("lava.proc.io.injector")   # Lava is a pinned dependency


# ------------------------------------------------------------------ helpers
def _weights(rng, shape, lo, hi):
    return lava_legal_weights(rng.integers(lo, hi, shape)).astype(np.int64)


def all_kinds_graph(seed: int = 0, T: int = 3) -> QGraph:
    """Every population kind; fan-in from several synapses; graded synapses; delays;
    mixed-sign weights; negative and positive weight_exp; a LIF bias; the accum loop."""
    rng = np.random.default_rng(seed)
    V, C, d = 5, 4, 6
    P = population
    pops = {
        "tokens": P("tokens", "input", V), "positions": P("positions", "input", C),
        "a": P("a", "lif", d, dv=300, vth=20),
        "b": P("b", "lif", d, dv=0, vth=60, bias_mant=-3, bias_exp=2),
        "g": P("g", "graded", d, vth=2),
        "p": P("p", "prod", d, vth=1, exp=1),
        "m": P("m", "accum", d),
        "c": P("c", "lif", V, dv=100, vth=6),
        "r": P("r", "graded", V, vth=0),
    }
    eye = np.eye(d, dtype=np.int64)
    S = Synapse
    syn = [
        S("tok_a", "tokens", "a", _weights(rng, (d, V), 0, 90)),
        S("pos_a", "positions", "a", _weights(rng, (d, C), -40, 40)),
        S("a_b", "a", "b", _weights(rng, (d, d), -20, 60), weight_exp=1),
        S("tok_b", "tokens", "b", _weights(rng, (d, V), -30, 30)),           # delay 1
        S("b_g", "b", "g", _weights(rng, (d, d), 0, 9)),
        S("a_g", "a", "g", _weights(rng, (d, d), -9, 9)),                  # delay 1
        S("b_p1", "b", "p", eye * 3, port="a_in1"),                         # delay 1
        S("g_p2", "g", "p", eye, port="a_in2", graded=True),
        S("p_m", "p", "m", eye, graded=True),
        S("m_c", "m", "c", _weights(rng, (V, d), -6, 6), weight_exp=-1, graded=True),
        S("a_c", "a", "c", _weights(rng, (V, d), -30, 60)),                # delay 4
        S("c_r", "c", "r", _weights(rng, (V, V), -100, 100), weight_exp=-2),
        S("pos_r", "positions", "r", _weights(rng, (V, C), -100, 100), weight_exp=2),  # delay 6
    ]
    assign_depths(pops, syn, ["tokens", "positions"])
    return QGraph(pops, syn, T, ["tokens", "positions"], "r", logit_scale=0.125, context=C).validate()


def sparse_graph(seed: int = 1, T: int = 2) -> QGraph:
    """Graded identity synapses large enough to become Lava Sparse / DelaySparse."""
    rng = np.random.default_rng(seed)
    V, C, n = 6, 4, 32
    eye = np.eye(n, dtype=np.int64)
    P, S = population, Synapse
    pops = {"tokens": P("tokens", "input", V), "positions": P("positions", "input", C),
            "x": P("x", "lif", n, dv=200, vth=3),
            "y": P("y", "lif", n, dv=0, vth=0),
            "z": P("z", "graded", n, vth=0),
            "w": P("w", "graded", n, vth=3),
            "u": P("u", "graded", n, vth=5),
            "r": P("r", "graded", V, vth=0)}
    syn = [S("tok_x", "tokens", "x", _weights(rng, (n, V), -50, 120)),
           S("pos_x", "positions", "x", _weights(rng, (n, C), -50, 50)),
           S("x_y", "x", "y", eye * 2),                                   # Dense (binary)
           S("y_z", "y", "z", eye * 3),
           S("x_z", "x", "z", eye * 5),                                   # DelayDense, delay 1
           S("z_w", "z", "w", eye * 7, weight_exp=-1, graded=True),       # Sparse
           S("w_u", "w", "u", eye, graded=True),                          # Sparse
           S("z_u", "z", "u", eye * 2, weight_exp=1, graded=True),        # DelaySparse, delay 1
           S("u_r", "u", "r", _weights(rng, (V, n), -8, 8), graded=True),
           S("tok_r", "tokens", "r", _weights(rng, (V, V), -60, 60), weight_exp=-1)]  # delay 5
    assign_depths(pops, syn, ["tokens", "positions"])
    return QGraph(pops, syn, T, ["tokens", "positions"], "r", logit_scale=1.0, context=C).validate()


def _lava_chain(build, W: int, frames: np.ndarray) -> np.ndarray:
    """Run an Injector -> build(...) -> Extractor chain for len(frames) steps; return
    the extracted frames. ``build(out_port)`` connects processes and returns an OutPort."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.proc.io.extractor import Extractor
    from lava.proc.io.injector import Injector
    from snn_compile.hw_sim.loihi2 import run_config

    n = frames.shape[1]
    inj = Injector(shape=(n,), buffer_size=len(frames) + 1)
    out = build(inj.out_port)
    ex = Extractor(shape=out.shape, buffer_size=len(frames) + 1)
    out.connect(ex.in_port)
    ex.create_runtime(run_cfg=run_config(False))
    try:
        for f in frames:
            inj.send(f.astype(float))
        ex.run(condition=RunSteps(num_steps=len(frames)))
        return np.stack([ex.receive() for _ in frames])
    finally:
        ex.stop()


# ------------------------------------------------- Lava's timing conventions
def test_injector_extractor_and_dense_delays():
    """Injector -> Extractor: same step. Dense: +1 step. DelayDense(delays=k): +1+k."""
    from lava.proc.dense.process import DelayDense, Dense
    from lava.proc.graded.process import GradedVec

    frames = np.zeros((8, 2))
    frames[1, 0] = 1
    frames[2, 1] = 1
    got = _lava_chain(lambda p: p, 8, frames)
    assert np.array_equal(got, frames)

    def through(k):
        def build(port):
            syn = (Dense(weights=np.eye(2, dtype=int) * 3) if k is None
                   else DelayDense(weights=np.eye(2, dtype=int) * 3, delays=k))
            g = GradedVec(shape=(2,), vth=0)
            port.connect(syn.s_in)
            syn.a_out.connect(g.a_in)
            return g.s_out
        return build

    for k, lag in ((None, 1), (0, 1), (1, 2), (3, 4)):
        got = _lava_chain(through(k), 8, frames)
        want = np.zeros_like(frames)
        want[lag:] = 3 * frames[:8 - lag]
        assert np.array_equal(got, want), (k, got)


def test_lifreset_offset_is_depth_plus_one():
    """A LIF at depth d resets before computing g = n*W + d iff reset_offset = (d+1) % W,
    i.e. Lava's time_step is g + 1.

    Inputs arrive at every step here (T = W, no idle steps), so a reset one step
    early or late changes the spikes: only the offset (d+1) % W reproduces the
    token-time expectation (a fresh LIF per token), every other offset differs.
    """
    from lava.proc.dense.process import Dense
    from lava.proc.lif.process import LIFReset

    rng = np.random.default_rng(3)
    W, n, N, d = 4, 8, 6, 1
    w = lava_legal_weights(rng.integers(-60, 120, (n, n))).astype(np.int64)
    x = (rng.random((N, W, n)) < 0.5).astype(np.int64)
    vth, dv = 90, 500
    want = np.zeros((N, W, n), np.int64)       # token-time: LIF row of docs/semantics.md
    for k in range(N):
        v = np.zeros(n, np.int64)
        for t in range(W):
            u = (w @ x[k, t]) << 6
            v = np.sign(v) * ((np.abs(v) * (4096 - dv)) >> 12) + u
            s = v > (vth << 6)
            v[s] = 0
            want[k, t] = s
    frames = np.zeros(((N + 1) * W, n))
    frames[:N * W] = x.reshape(N * W, n)
    matches = []
    for off in range(W):
        def build(port, off=off):
            syn = Dense(weights=w)
            lif = LIFReset(shape=(n,), du=4095, dv=dv, vth=vth, reset_interval=W,
                           reset_offset=off)
            port.connect(syn.s_in)
            syn.a_out.connect(lif.a_in)
            return lif.s_out
        got = _lava_chain(build, W, frames)[d:d + N * W].reshape(N, W, n)
        matches.append(np.array_equal(got, want))
    assert want.any() and not want.all()
    assert matches == [off == (d + 1) % W for off in range(W)]


# ------------------------------------------------ lowered graphs vs reference
def _reference(q: QGraph, tokens, positions=None):
    from snn_compile.hw_sim.int_reference import run_token_time
    run = run_token_time(q, np.asarray(tokens), None if positions is None else np.asarray(positions))
    return ({k: v.cpu().numpy() for k, v in run.outputs.items()},
            run.logits_int.cpu().numpy())


def _lava_run(session, tokens, positions=None):
    """Feed tokens one window each; return stacked outputs (N, T, size) and sums (N, V)."""
    positions = range(len(tokens)) if positions is None else positions
    res = [session.feed(int(k), int(p)) for k, p in zip(tokens, positions)]
    outs = {k: np.stack([r.outputs[k] for r in res]) for k in res[0].outputs}
    return outs, np.stack([r.sums for r in res])


def _assert_same(q: QGraph, got, want, sums, logits_int):
    assert set(got) == set(q.populations)
    for name in q.populations:
        g, w = got[name], want[name]
        assert g.shape == w.shape, name
        bad = np.argwhere(g != w)
        assert bad.size == 0, (f"{name}: first mismatch at (token, step, neuron) "
                               f"{tuple(bad[0])}: lava {g[tuple(bad[0])]} vs ref {w[tuple(bad[0])]}")
    assert np.array_equal(sums, logits_int)


@pytest.mark.parametrize("make,tokens,kinds", [
    (all_kinds_graph, [1, 3, 0, 4], {"Dense", "DelayDense"}),
    (sparse_graph, [2, 5, 0, 2], {"Dense", "DelayDense", "Sparse", "DelaySparse"}),
])
def test_hand_graphs_match_reference(make, tokens, kinds):
    """The unmerged lowering (one process per synapse: ``kinds`` are its synapse
    processes); the merged one is checked in tests/test_lava_merge.py."""
    from snn_compile.hw_sim.lava_runner import LavaSession
    q = make()
    want, logits_int = _reference(q, tokens)
    with LavaSession(q, merge=False) as s:
        assert {type(p).__name__ for p in s.net.synapses.values()} == kinds
        got, sums = _lava_run(s, tokens)
    _assert_same(q, got, want, sums, logits_int)
    # the graphs are not trivially silent or saturated
    for name, p in q.populations.items():
        frac = float((want[name] != 0).mean())
        assert 0 < frac, name
        if p.kind == "lif":
            assert frac < 1, name


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_dag_graphs_match_reference(seed):
    from snn_compile.hw_sim.random_graphs import random_dag_qgraph
    from snn_compile.hw_sim.lava_runner import LavaSession
    q = random_dag_qgraph(seed=seed, n_pops=5, T=2, vocab=6, context=6, max_size=5)
    tokens = np.random.default_rng(seed).integers(0, 6, size=4)
    want, logits_int = _reference(q, tokens)
    with LavaSession(q) as s:
        got, sums = _lava_run(s, tokens)
    _assert_same(q, got, want, sums, logits_int)


def tiny_decoder(seed: int = 0):
    from snn_compile.hw_sim.random_graphs import random_decoder_qgraph
    return random_decoder_qgraph(seed=seed, vocab=8, d=8, heads=2, layers=1, T=3, context=8,
                                 calib_tokens=8)


def test_random_decoder_matches_reference_and_probes_count():
    from snn_compile.hw_sim.lava_runner import LavaSession
    from snn_compile.hw_sim.probes import activity_from_token_time
    q = tiny_decoder(0)
    tokens = [3, 1, 4, 1, 5]
    want, logits_int = _reference(q, tokens)
    with LavaSession(q) as s:
        got, sums = _lava_run(s, tokens)
        act = s.activity()
    _assert_same(q, got, want, sums, logits_int)
    from snn_compile.hw_sim.probes import compare_activity
    ref = activity_from_token_time(q, want)
    assert act.tokens == len(tokens)
    assert compare_activity(act, ref) == []        # every step of every window
    assert act.total_synops().sum() > 0 and act.messages().sum() > 0


def test_reset_equals_fresh_session():
    """reset() clears synaptic buffers, LIF state and the attention memory."""
    from snn_compile.hw_sim.lava_runner import LavaSession
    q = tiny_decoder(1)
    first, second = [7, 2, 2, 6], [5, 0, 3]
    with LavaSession(q) as s:
        _lava_run(s, first)
        s.reset()
        assert s.position == 0
        got, sums = _lava_run(s, second)
    with LavaSession(q) as fresh:
        want, want_sums = _lava_run(fresh, second)
    _assert_same(q, got, want, sums, want_sums)
    assert got[q.readout].any()
    # and the memory really held something that reset() had to clear
    mem = [n for n, p in q.populations.items() if p.kind == "accum"]
    assert mem and all(want[n].any() for n in mem)


def _greedy(backend, prompt, n_new):
    try:
        from snn_compile.models.sampling import generate
    except ImportError:
        generate = None
    if generate is not None:
        return generate(backend, prompt, n_new, temperature=0.0)
    # the same policy as docs/semantics.md "Context": roll over to the last N_ctx // 2 tokens
    backend.reset()
    seq, fed = list(prompt), []
    logits = None
    for t in seq:
        if backend.context and len(fed) >= backend.context:
            backend.reset()
            fed = fed[-(backend.context // 2):]
            for u in fed:
                backend.feed(u)
        logits = backend.feed(t)
        fed.append(t)
    out = []
    for _ in range(n_new):
        nxt = int(np.argmax(logits))
        out.append(nxt)
        if backend.context and len(fed) >= backend.context:
            backend.reset()
            fed = fed[-(backend.context // 2):]
            for u in fed:
                backend.feed(u)
        logits = backend.feed(nxt)
        fed.append(nxt)
    return out


def test_greedy_generation_lava_equals_int_reference():
    from snn_compile.hw_sim.int_reference import IntReferenceBackend
    from snn_compile.hw_sim.lava_runner import LavaBackend
    q = tiny_decoder(2)
    prompt, n_new = [1, 2, 3], 7          # 10 tokens > context 8: exercises the roll-over reset
    ref = IntReferenceBackend(q)
    want = _greedy(ref, prompt, n_new)
    with LavaBackend(q) as lava:
        assert lava.name == "lava-sim" and lava.vocab_size == 8 and lava.context == 8
        got = _greedy(lava, prompt, n_new)
        lava.reset()
        logits = lava.feed(prompt[0])
    ref.reset()
    assert np.array_equal(logits, ref.feed(prompt[0]))
    assert logits.dtype == np.float64
    assert got == want


def test_loihi2_without_lava_loihi_is_a_user_error():
    from snn_compile.hw_sim.lava_runner import LavaBackend
    from snn_compile.hw_sim.loihi2 import lava_loihi_installed
    if lava_loihi_installed():
        pytest.skip("lava-loihi is installed here: the hardware path is available")
    with pytest.raises(UserError) as e:
        LavaBackend(all_kinds_graph(), hardware=True)
    msg = str(e.value)
    assert "lava-loihi" in msg and "Loihi 2" in msg and "--backend lava-sim" in msg


def test_session_stops_runtime_on_error():
    from snn_compile.hw_sim.lava_runner import LavaSession
    q = all_kinds_graph()
    with pytest.raises(RuntimeError):
        with LavaSession(q, probe=False) as s:
            r = s.feed(1, 0)
            assert r.outputs is None and r.sums.shape == (q.pop(q.readout).size,)
            raise RuntimeError("user code failed")
    assert s.closed
    assert not s.net.anchor.runtime._is_started
    with pytest.raises(UserError):
        s.feed(1, 1)


_AFTER_START_METHOD = """
import multiprocessing as mp, sys
mp.set_start_method(sys.argv[1])          # as torch.compile's worker pool does on the CPU
import numpy as np
from snn_compile.errors import UserError
from snn_compile.hw_sim.lava_runner import LavaBackend
from snn_compile.hw_sim.int_reference import IntReferenceBackend
from snn_compile.hw_sim.random_graphs import random_decoder_qgraph
q = random_decoder_qgraph(seed=3, vocab=8, d=8, heads=2, layers=1, T=2, context=4)
try:
    with LavaBackend(q) as lava:
        got = [lava.feed(t) for t in (1, 5, 2)]
except UserError as e:
    print("UserError:", e)
    sys.exit(3)
ref = IntReferenceBackend(q)
want = [ref.feed(t) for t in (1, 5, 2)]
print("equal", bool(np.array_equal(np.stack(got), np.stack(want))))
"""


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_lava_after_the_start_method_was_set(method):
    """Lava's import calls ``set_start_method('fork')``, which raises once a process has
    fixed the method: with 'fork' already in use the run goes ahead (and equals the
    reference), with another one it is refused with one clear error."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _AFTER_START_METHOD, method],
                       capture_output=True, text=True, timeout=600)
    if method == "fork":
        assert r.returncode == 0 and "equal True" in r.stdout, r.stderr[-2000:]
    else:
        assert r.returncode == 3, r.stderr[-2000:]
        assert "needs the 'fork' multiprocessing start method" in r.stdout
        assert "Traceback" not in r.stderr
