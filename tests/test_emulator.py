"""The global-time emulator against Lava's fixed_pt simulator and the token-time reference.

Ground truth: one tiny real Lava network (LIFReset, Dense, DelayDense,
ProdNeuron, GradedVec, a graded self-loop) built here from a QGraph and run
once with ``Loihi2SimCfg(select_tag='fixed_pt')``; the emulator must give the
same output for every population at every global step, including int32/24-bit
wraps, voltage clipping, leaky current and bias.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snn_compile.hw_sim.int_reference import IntReferenceBackend, run_token_time
from snn_compile.compiler.qgraph import (Accum, assign_depths, Graded, Input, Lif, Prod, QGraph,
                                         QGraphError, Synapse)
from snn_compile.hw_sim.random_graphs import random_dag_qgraph, random_decoder_qgraph
from snn_compile.compiler.qgraph import check_streamable
from snn_compile.hw_sim.emulator import Emulator, EmulatorBackend, emulator_logits
from snn_compile.hw_sim.probes import activity_from_token_time


# ------------------------------------------------------------ Lava ground truth
def lava_global_run(q: QGraph, frames: dict, steps: int, states=()) -> dict:
    """Run ``q`` on Lava fixed_pt for ``steps`` global steps; frames {input: (G, size)}.

    Minimal lowering (docs/semantics.md table; written here, not by ``lower_lava``, so
    that the lowering is checked against it too): RingBuffer sources inject, a sink
    RingBuffer records every population's s_out at the step it is sent; a Monitor
    records u and v of the LIF populations named in ``states``.
    """
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import DelayDense, Dense
    from lava.proc.graded.process import GradedVec
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source
    from lava.proc.lif.process import LIFReset
    from lava.proc.monitor.process import Monitor
    from lava.proc.prodneuron.process import ProdNeuron

    W = q.window
    procs, sinks = {}, {}
    for name, p in q.populations.items():
        if p.kind == "input":
            procs[name] = Source(data=np.asarray(frames[name]).T.astype(np.int32))
        elif p.kind == "lif":
            procs[name] = LIFReset(shape=(p.size,), du=p.du, dv=p.dv, vth=p.vth,
                                   bias_mant=p.bias_mant, bias_exp=p.bias_exp,
                                   reset_interval=W, reset_offset=(p.depth + 1) % W)
        elif p.kind == "prod":
            procs[name] = ProdNeuron(shape=(p.size,), vth=p.vth, exp=p.exp)
        elif p.kind == "graded":
            procs[name] = GradedVec(shape=(p.size,), vth=p.vth)
        else:
            procs[name] = GradedVec(shape=(p.size,), vth=0)
            loop = Dense(weights=np.eye(p.size, dtype=np.int32), num_message_bits=24)
            procs[name].s_out.connect(loop.s_in)
            loop.a_out.connect(procs[name].a_in)
            if p.decaying:                   # the memory's decay: a second graded self-loop
                dloop = Dense(weights=-np.diag(np.asarray(p.decay, np.int32)),
                              weight_exp=-p.decay_exp, num_message_bits=24)
                procs[name].s_out.connect(dloop.s_in)
                dloop.a_out.connect(procs[name].a_in)
        if p.kind != "input":
            sinks[name] = Sink(shape=(p.size,), buffer=steps)
            procs[name].s_out.connect(sinks[name].a_in)
    for s in q.synapses:
        kw = dict(weights=s.weights.astype(np.int32), weight_exp=s.weight_exp,
                  num_message_bits=24 if s.graded else 0)
        conn = DelayDense(delays=s.delay, **kw) if s.delay else Dense(**kw)
        procs[s.src].s_out.connect(conn.s_in)
        conn.a_out.connect(getattr(procs[s.dst], s.port))
    mons = {}
    for name in states:
        for var in ("u", "v"):
            mons[f"{name}.{var}"] = m = Monitor()
            m.probe(getattr(procs[name], var), steps)
    anchor = next(iter(sinks.values()))
    anchor.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
    try:
        res = {k: np.asarray(v.data.get()).T.astype(np.int64) for k, v in sinks.items()}
        for key, m in mons.items():
            name, var = key.rsplit(".", 1)
            d = m.get_data()[procs[name].name][var]
            res[key] = np.asarray(d).reshape(steps, -1).astype(np.int64)
        return res
    finally:
        anchor.stop()


def lava_test_graph(seed: int = 3) -> QGraph:
    """A small graph of every kind plus a branch that overflows: LIF u wraps past 24 bits,
    v clips, a leaky current (du < 4095) and a bias, a ProdNeuron product that wraps int32,
    graded messages with vth, right and left weight shifts, delays."""
    rng = np.random.default_rng(seed)
    V, C, T = 6, 4, 3
    P = {"tokens": Input("tokens", V), "positions": Input("positions", C),
         "a": Lif("a", 5, dv=300, vth=20),
         "leaky": Lif("leaky", 4, du=2000, dv=100, vth=30, bias_mant=3, bias_exp=2),
         "big": Lif("big", 3, du=4095, dv=0, vth=131071),
         "wrapu": Lif("wrapu", 3, du=4095, dv=0, vth=100),
         "kv": Prod("kv", 5),
         "mem": Accum("mem", 5),
         "read": Prod("read", 5, exp=1, vth=1),
         "g": Graded("g", 4, vth=2),
         "huge": Prod("huge", 3),
         "out": Graded("out", V)}
    w = lambda *shape: (np.rint(rng.normal(8, 40, size=shape) / 2) * 2).clip(-256, 254).astype(np.int64)  # noqa: E731
    S = [Synapse("t_a", "tokens", "a", w(5, V)), Synapse("p_a", "positions", "a", w(5, C)),
         Synapse("t_l", "tokens", "leaky", w(4, V), weight_exp=-1),
         Synapse("a_l", "a", "leaky", w(4, 5)),
         Synapse("t_big", "tokens", "big", np.full((3, V), 254), weight_exp=9),
         Synapse("t_wu", "tokens", "wrapu", np.full((3, V), 254), weight_exp=10),
         Synapse("a_kv1", "a", "kv", np.eye(5, dtype=np.int64), port="a_in1"),
         Synapse("l_kv2", "leaky", "kv", np.ones((5, 4), dtype=np.int64), port="a_in2"),
         Synapse("kv_mem", "kv", "mem", np.eye(5, dtype=np.int64) * 3, graded=True),
         Synapse("mem_r", "mem", "read", np.eye(5, dtype=np.int64), port="a_in1", graded=True),
         Synapse("a_r", "a", "read", np.eye(5, dtype=np.int64) * 2, port="a_in2"),
         Synapse("r_g", "read", "g", w(4, 5), weight_exp=1, graded=True),
         Synapse("t_h1", "tokens", "huge", np.full((3, V), 255), weight_exp=12, port="a_in1"),
         Synapse("t_h2", "tokens", "huge", np.full((3, V), 255), weight_exp=12, port="a_in2"),
         Synapse("g_o", "g", "out", w(V, 4), graded=True),
         Synapse("b_o", "big", "out", w(V, 3), weight_exp=2),
         Synapse("h_o", "huge", "out", np.eye(V, 3, dtype=np.int64), graded=True),
         Synapse("l_o", "leaky", "out", w(V, 4)),
         Synapse("wu_o", "wrapu", "out", w(V, 3))]
    assign_depths(P, S, ["tokens", "positions"])
    return QGraph(P, S, T, ["tokens", "positions"], "out", context=C).validate()


@pytest.fixture(scope="module", params=["numpy", "torch"])
def lava_vs_emulator(request, lava_run):
    """The emulator's run of ``lava_test_graph`` on each engine, with Lava's."""
    q, tokens, lava = lava_run
    run = Emulator(q, batch=1, strict=False, engine=request.param).run_sequence(tokens,
                                                                                  states=True)
    assert run.steps == lava["a"].shape[0]
    return q, run, lava


@pytest.fixture(scope="module")
def lava_run():
    pytest.importorskip("lava.magma.core.run_configs",
                        reason="Lava is an optional runtime dependency of the hw_sim stage")
    q = lava_test_graph()
    tokens = torch.tensor([[1, 4, 0, 5]])
    G = Emulator(q, batch=1, strict=False).run_sequence(tokens).steps
    frames = {k: np.zeros((G, q.pop(k).size), np.int64) for k in q.inputs}
    from snn_compile.hw_sim.int_reference import input_frames
    fr = input_frames(q, tokens)
    for n in range(tokens.shape[1]):
        for k in q.inputs:
            frames[k][n * q.window: n * q.window + q.steps_per_token] = fr[k][0, n].numpy()
    lava = lava_global_run(q, frames, G, states=("a", "leaky", "big", "wrapu"))
    return q, tokens, lava


def test_emulator_equals_lava_fixed_pt_every_step(lava_vs_emulator):
    """Outputs of every population and u, v of four LIFs, at every global step."""
    q, run, lava = lava_vs_emulator
    assert len(lava) == len(q.populations) - len(q.inputs) + 8
    for name, got in lava.items():
        mine = run.global_outputs[name][0].numpy()
        diff = np.argwhere(mine != got)
        assert not len(diff), (f"{name}: first difference at global step {diff[0][0]}: "
                               f"emulator {mine[tuple(diff[0])]} vs Lava {got[tuple(diff[0])]}")


def test_lava_graph_exercises_the_corner_cases(lava_vs_emulator):
    q, run, lava = lava_vs_emulator
    assert lava["a"].any() and not lava["a"].all()
    assert lava["leaky"].any()
    assert lava["big"].any()                                  # v clipped at 2^23 - 1 > vth << 6
    assert not lava["wrapu"].any()                            # u = a << 6 > 2^23 wrapped negative
    assert (lava["wrapu.u"] < 0).any() and (lava["big.u"] == (254 << 9) << 6).any()
    assert (lava["leaky.v"] < 0).any() and (lava["leaky.u"] != 0).any()
    assert (np.abs(lava["huge"]) >= 2 ** 20).any()            # int32-wrapped product
    assert (lava["mem"] > 0).any() and (lava["read"] != 0).any() and (lava["g"] != 0).any()
    assert (lava["out"] < 0).any() and (lava["out"] > 0).any()


def decay_wrap_graph() -> QGraph:
    """A decaying memory at Lava's int32 corners: neuron 0 (no decay) integrates -2^30 per
    step and reaches -2^31, which GradedVec drops (int32 ``abs(-2^31) > 0`` is false);
    neuron 1 (decay 255) holds 2^30, so the decay loop's product ``-255 * 2^30`` wraps
    int32 and the sum wraps too; neuron 2 decays normally. The memory is read through a
    gated prod, so the graph is streamable."""
    V, C, T = 3, 4, 3
    P = {"tokens": Input("tokens", V), "positions": Input("positions", C),
         "hp": Prod("hp", 3),
         "wacc": Accum("wacc", 3, decay=[0, 255, 7]),
         "rd": Prod("rd", 3),
         "ro": Graded("ro", 3)}
    S = [Synapse("t_h1", "tokens", "hp", np.array([[128] * V, [128] * V, [32] * V]),
                 weight_exp=8, port="a_in1"),
         Synapse("t_h2", "tokens", "hp", np.array([[-128] * V, [128] * V, [16] * V]),
                 weight_exp=8, port="a_in2"),
         Synapse("h_w", "hp", "wacc", np.eye(3, dtype=np.int64), graded=True),
         Synapse("w_r", "wacc", "rd", np.eye(3, dtype=np.int64), port="a_in1", graded=True),
         Synapse("t_r", "tokens", "rd", np.ones((3, V), np.int64), port="a_in2"),
         Synapse("r_o", "rd", "ro", np.eye(3, dtype=np.int64), graded=True)]
    assign_depths(P, S, ["tokens", "positions"])
    return QGraph(P, S, T, ["tokens", "positions"], "ro", context=C).validate()


def _global_frames(q: QGraph, tokens: torch.Tensor, G: int) -> dict:
    from snn_compile.hw_sim.int_reference import input_frames
    frames = {k: np.zeros((G, q.pop(k).size), np.int64) for k in q.inputs}
    fr = input_frames(q, tokens)
    for n in range(tokens.shape[1]):
        for k in q.inputs:
            frames[k][n * q.window: n * q.window + q.steps_per_token] = fr[k][0, n].numpy()
    return frames


def test_decaying_memory_wraps_like_lava_every_step():
    """Both engines == Lava fixed_pt at every global step on ``decay_wrap_graph`` (int32
    wraps of the decay product and of the sum, the dropped -2^31), and == the token-time
    reference (which must leave its cumulative sum for the step-by-step recursion)."""
    pytest.importorskip("lava.magma.core.run_configs",
                        reason="Lava is an optional runtime dependency of the hw_sim stage")
    q = decay_wrap_graph()
    tokens = torch.tensor([[0, 2, 1]])
    G = Emulator(q, batch=1).run_sequence(tokens).steps
    lava = lava_global_run(q, _global_frames(q, tokens, G), G)
    w = lava["wacc"]
    assert (w[:, 0] == 0).any() and (w[:, 0] == -2 ** 30).any()     # -2^31 dropped
    assert (w[:, 1] < 0).any() and (w[:, 1] > 2 ** 29).any()        # wrapped past 2^31
    assert w[:, 2].max() > w[q.window - 1, 2] > 0                    # decays between tokens
    ref = run_token_time(q, tokens)
    for engine in ("numpy", "torch"):
        run = Emulator(q, batch=1, engine=engine).run_sequence(tokens)
        for name, got in lava.items():
            mine = run.global_outputs[name][0].numpy()
            diff = np.argwhere(mine != got)
            assert not len(diff), (engine, name, diff[0], mine[tuple(diff[0])], got[tuple(diff[0])])
        for name in q.populations:
            assert torch.equal(run.outputs[name], ref.outputs[name]), (engine, name)


# ------------------------------------------------ global time == token time
ENGINES = [("numpy", None), ("torch", True), ("torch", False)]   # (engine, event_driven)


def _compare(q, tokens, engine="numpy", event_driven=None):
    ref = run_token_time(q, tokens)
    emu = Emulator(q, batch=tokens.shape[0], engine=engine,
                   event_driven=event_driven).run_sequence(tokens)
    for name in q.populations:
        a, b = emu.outputs[name], ref.outputs[name]
        assert torch.equal(a, b), f"{name}: emulator differs from the token-time reference"
    assert torch.equal(emu.logits_int, ref.logits_int)
    return ref


@pytest.fixture(scope="module")
def decoder():
    return random_decoder_qgraph(seed=1, vocab=24, d=16, heads=2, layers=2, T=3, context=16)


@pytest.mark.parametrize("engine,event_driven", ENGINES)
def test_decoder_global_time_equals_token_time(decoder, engine, event_driven):
    tokens = torch.randint(0, 24, (3, 10), generator=torch.Generator().manual_seed(0))
    ref = _compare(decoder, tokens, engine, event_driven)
    for name, p in decoder.populations.items():
        if p.kind == "lif":
            o = ref.outputs[name]
            assert o.any() and not o.all(), f"{name} never or always spikes"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10 ** 6), n_pops=st.integers(2, 9), T=st.integers(1, 4),
       N=st.integers(1, 6), engine=st.sampled_from(ENGINES))
def test_random_dags_global_time_equals_token_time(seed, n_pops, T, N, engine):
    q = random_dag_qgraph(seed, n_pops=n_pops, T=T)
    tokens = torch.randint(0, 8, (2, N), generator=torch.Generator().manual_seed(seed))
    _compare(q, tokens, *engine)


def _perturbed(q: QGraph, rng) -> QGraph:
    """``q`` with leaky currents, biases and slow voltage decays on some LIFs (not
    streamable: the numpy engine's skips must then decline or catch up exactly)."""
    for p in q.populations.values():
        if p.kind == "lif" and rng.random() < 0.6:
            p.du = int(rng.choice([p.du, 0, 1500, 4000]))
            p.dv = int(rng.choice([0, 1, 300, 4095]))
            p.bias_mant, p.bias_exp = int(rng.choice([0, 0, 3, -5])), int(rng.integers(0, 3))
    return q.validate()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10 ** 6), n_pops=st.integers(2, 9), T=st.integers(1, 4),
       N=st.integers(1, 4), density=st.sampled_from([0.05, 0.3, 1.0]), perturb=st.booleans())
def test_numpy_engine_equals_torch_engine_every_step(seed, n_pops, T, N, density, perturb):
    """Global time, spike for spike, u and v of every LIF at every step, with sparse random
    input frames (inputs that stop and restart inside a window exercise the skipped steps)."""
    rng = np.random.default_rng(seed)
    q = random_dag_qgraph(seed, n_pops=n_pops, T=T)
    if perturb:
        q = _perturbed(q, rng)
    frames = {k: torch.as_tensor(rng.random((3, N, T, q.pop(k).size)) < density).long()
              for k in q.inputs}
    runs = {}
    for engine, ev in ENGINES:
        emu = Emulator(q, batch=3, strict=False, engine=engine, event_driven=ev)
        runs[engine, ev] = emu.run_sequence(None, frames=frames, states=bool(seed % 2))
        runs[engine, ev, "plain"] = emu.run_sequence(None, frames=frames)
    ref = runs["torch", False]
    for key, run in runs.items():
        glob = ref.global_outputs
        assert run.steps == ref.steps and torch.equal(run.logits_int, ref.logits_int), key
        for name, out in run.global_outputs.items():
            assert torch.equal(out, glob[name]), (key, name)
        assert set(run.global_outputs) <= set(glob)


def test_numpy_engine_is_the_cpu_default(decoder):
    """The emulator's global-time default on the CPU is numpy; its batch-1 backend runs
    the token-time engine unless probes need the global-time record."""
    assert Emulator(decoder).engine == "numpy"
    assert EmulatorBackend(decoder).engine == "token"
    assert EmulatorBackend(decoder, probes=True).emu.engine == "numpy"
    with pytest.raises(ValueError, match="global-time record"):
        EmulatorBackend(decoder, probes=True, engine="token")
    with pytest.raises(ValueError, match="numpy engine"):
        Emulator(decoder, engine="numpy", event_driven=False)
    with pytest.raises(ValueError, match="engine"):
        Emulator(decoder, engine="jax")


def test_random_dags_are_active():
    """The property test is only meaningful if the random graphs do something."""
    active = 0
    for seed in range(30):
        q = random_dag_qgraph(seed, n_pops=8)
        ref = run_token_time(q, torch.randint(0, 8, (2, 5)))
        active += sum(bool(ref.outputs[n].any()) for n, p in q.populations.items()
                      if p.kind != "input")
    assert active > 30 * 4


def test_non_streamable_graph_is_refused():
    q = lava_test_graph()
    with pytest.raises(QGraphError, match="du=2000"):
        check_streamable(q)
    with pytest.raises(QGraphError):
        Emulator(q)


# ----------------------------------------------------------------- backends
@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_emulator_backend_logits_equal_reference(decoder, engine):
    seq = [3, 7, 7, 1, 0, 23, 5]
    ref = run_token_time(decoder, torch.tensor(seq))
    be = EmulatorBackend(decoder, probes=True, engine=engine)
    ib = IntReferenceBackend(decoder)
    for n, tok in enumerate(seq):
        a, b = be.feed(tok), ib.feed(tok)
        assert a.dtype == np.float64 and a.shape == (decoder.pop("head").size,)
        assert np.array_equal(a, ref.logits[n].numpy()) and np.array_equal(b, a)
    probes = be.probe_outputs()
    for name in decoder.populations:
        assert np.array_equal(probes[name], ref.outputs[name].numpy()), name
    act = be.activity()
    assert act.tokens == len(seq) and act.total_synops().sum() > 0
    be.reset()
    assert np.array_equal(be.feed(seq[0]), ref.logits[0].numpy())
    be.close()


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_backend_probes_finish_populations_deeper_than_the_readout(engine):
    seeds = [s for s in range(60) if max(p.depth for p in random_dag_qgraph(s, n_pops=8)
                                         .populations.values())
             > random_dag_qgraph(s, n_pops=8).pop("readout").depth]
    assert seeds
    for s in seeds[:5]:
        q = random_dag_qgraph(s, n_pops=8)
        seq = [1, 5, 2, 7, 0]
        ref = run_token_time(q, torch.tensor(seq))
        be = EmulatorBackend(q, probes=True, engine=engine)
        for tok in seq:
            be.feed(tok)
        out = be.probe_outputs()
        for name in q.populations:
            assert np.array_equal(out[name], ref.outputs[name].numpy()), (s, name)
        assert np.array_equal(be.feed(3), run_token_time(q, torch.tensor(seq + [3])).logits[-1])


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_step_token_batches_sequences(decoder, engine):
    tokens = torch.randint(0, 24, (4, 6), generator=torch.Generator().manual_seed(2))
    ref = run_token_time(decoder, tokens)
    emu = Emulator(decoder, batch=4, engine=engine)
    for n in range(6):
        assert torch.equal(emu.step_token(tokens[:, n]), ref.logits_int[:, n])
    emu.reset()                     # explicit positions, and frames given directly
    for n in range(3):
        assert torch.equal(emu.step_token(tokens[:, n], positions=[n] * 4),
                           ref.logits_int[:, n])
    from snn_compile.hw_sim.int_reference import input_frames
    fr = input_frames(decoder, tokens)
    assert torch.equal(emu.step_frames({k: v[:, 3] for k, v in fr.items()}),
                       ref.logits_int[:, 3])
    assert torch.equal(emulator_logits(decoder, tokens, batch_size=3), ref.logits)


@pytest.mark.parametrize("engine", ["numpy", "torch", "token"])
def test_context_is_enforced(decoder, engine):
    be = EmulatorBackend(decoder, engine=engine)
    for _ in range(decoder.context):
        be.feed(1)
    from snn_compile.errors import UserError
    with pytest.raises(UserError, match="context"):
        be.feed(1)
    if engine == "token":
        return                          # the engine's own errors: tests/test_token_engine.py
    emu = Emulator(decoder, engine=engine)
    for _ in range(decoder.context):
        emu.step_token([2])
    with pytest.raises(UserError, match="context"):
        emu.step_token([2])
    emu.reset()
    with pytest.raises(UserError, match="outside"):
        emu.step_token([24])
    with pytest.raises(UserError, match="context"):
        emu.step_token([2], positions=[decoder.context])


def test_activity_counts(decoder):
    tokens = torch.randint(0, 24, (2, 5), generator=torch.Generator().manual_seed(3))
    emu = Emulator(decoder, batch=2).run_sequence(tokens)
    act = activity_from_token_time(decoder, emu.outputs)
    assert act.tokens == 10
    o = emu.outputs["block0.qkv"].reshape(10, -1)
    assert np.array_equal(act.events["block0.qkv"], (o != 0).sum(1).numpy())
    s = next(s for s in decoder.synapses if s.name == "block0.w_1")
    fan = (s.weights != 0).sum(0)
    per = (emu.outputs["block0.mid"] != 0).sum(2).reshape(10, -1).numpy()
    assert np.array_equal(act.synops["block0.w_1"], per @ fan)
    assert act.neuron_updates["block0.ff"] == 4 * 16 * decoder.window
    assert np.array_equal(act.synops["block0.mem.self"], act.events["block0.mem"])
    layers = act.by_layer()
    assert set(layers) == {"emb", "block0", "block1", "head"}
    tot = act.totals()
    assert np.array_equal(sum(row["synops"] for row in layers.values()), tot["synops"])
    assert np.array_equal(tot["spikes"] + tot["messages"],
                          sum(act.events[n] for n, p in decoder.populations.items()
                              if p.kind != "input"))


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="device-specific: the CUDA path needs a CUDA GPU, this machine has none")
def test_cuda_matches_cpu(decoder):
    tokens = torch.randint(0, 24, (3, 8), generator=torch.Generator().manual_seed(4))
    cpu = Emulator(decoder, batch=3).run_sequence(tokens)
    gpu = Emulator(decoder, batch=3, device="cuda").run_sequence(tokens.cuda())
    for name in decoder.populations:
        assert torch.equal(cpu.outputs[name], gpu.outputs[name].cpu()), name
    ref = run_token_time(decoder, tokens.cuda(), device="cuda")
    assert torch.equal(ref.logits_int.cpu(), cpu.logits_int)
    # token windows replayed as CUDA graphs (no recording): several windows per graph
    assert torch.equal(emulator_logits(decoder, tokens, device="cuda"), cpu.logits)
    be = EmulatorBackend(decoder, device="cuda")
    for n in range(8):
        assert np.array_equal(be.feed(int(tokens[0, n])), cpu.logits[0, n].numpy())


def test_speed_benchmark_runs(decoder, capsys):
    from snn_compile.benchmarks import bench_emulator

    res = bench_emulator.run(decoder, tokens=5, batch=3, batch_tokens=2)
    b1, b3 = res["runs"]
    assert b1["batch"] == 1 and b1["tokens"] == 5 and b1["tokens_per_s"] > 0
    assert b3["tokens"] == 6 and b3["timesteps_per_s"] > 0
    assert (b1["engine"], b3["engine"]) == ("token", "numpy")    # the CPU defaults
    res = bench_emulator.run(decoder, tokens=4, batch=[1, 2, 3], batch_tokens=2,
                             engines=["numpy", "torch", "token"], repeat=3)
    assert [(r["engine"], r["batch"]) for r in res["runs"]] == [
        (e, b) for b in (1, 2, 3) for e in ("numpy", "torch", "token")]
    assert "state_bytes_per_seq" in res["runs"][1] and "state_bytes_per_seq" not in res["runs"][2]
    assert len(res["runs"][0]["repeats"]) == 3
    assert res["runs"][0]["tokens_per_s"] == sorted(res["runs"][0]["repeats"])[1]
    assert bench_emulator.main(["--qgraph", "/nonexistent.qgraph"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert bench_emulator.main(["--random", "--tokens", "2", "--batch", "1", "--batch", "2",
                                "--batch-tokens", "1", "--repeat", "1", "--json"]) == 0
    import json
    out = json.loads(capsys.readouterr().out)
    assert [r["batch"] for r in out["runs"]] == [1, 2]


def test_speed_benchmark_times_the_token_engine_with_and_without_its_compiled_step():
    """``token`` and ``token-stepwise`` at batch 1 (the latter not in batched runs); the
    token row counts the tokens its compiled step ran and those it left to the engine."""
    from snn_compile.benchmarks import bench_emulator
    from snn_compile.errors import UserError
    from test_decay import decaying_decoder

    q = decaying_decoder()
    res = bench_emulator.run(q, tokens=6, batch=[1, 2], batch_tokens=2,
                             engines=["token", "token-stepwise"])
    assert [(r["engine"], r["batch"]) for r in res["runs"]] == [
        ("token", 1), ("token-stepwise", 1), ("token", 2)]
    c = res["runs"][0]["compiled_step"]
    assert c["tokens"] + c["fallbacks"] == 6 and c["tokens"] > 0
    assert "compiled_step" not in res["runs"][1]
    with pytest.raises(UserError, match="token-stepwise"):
        bench_emulator.run(q, tokens=2, device="cuda", engines=["token-stepwise"])


def test_speed_benchmark_checks_its_outputs(decoder, capsys, monkeypatch):
    """``--check S``: the timed run's readout sums of S sequences against the int
    reference, across a reset at the context (16 here, 20 tokens per sequence); an engine
    that computes one sum wrong makes the exit code 1, with the count on stderr."""
    from snn_compile.benchmarks import bench_emulator
    from snn_compile.hw_sim import token_engine as te

    res = bench_emulator.run(decoder, tokens=0, batch=3, batch_tokens=20,
                             engines=["numpy", "torch", "token"], check=2)
    for r in res["runs"]:
        assert r["check"] == {"sequences": 2, "tokens": 40, "readout_sums": 40 * 24,
                              "differ": 0}, r["engine"]
    real, calls = te.TokenEngine.step_token, []
    wrong_call = min(bench_emulator._warmup(decoder), 20) + 18   # token 17: 1 after the reset

    def off_by_one(self, tokens, positions=None):
        out = real(self, tokens, positions)
        calls.append(1)
        if len(calls) in (wrong_call, wrong_call + min(bench_emulator._warmup(decoder), 20) + 20):
            out[1, 5] += 1                 # sequence 1, readout 5, in each of the two runs
        return out

    monkeypatch.setattr(te.TokenEngine, "step_token", off_by_one)
    r, = bench_emulator.run(decoder, tokens=0, batch=3, batch_tokens=20, engines=["token"],
                            check=2)["runs"]
    assert r["check"]["differ"] == 1 and len(calls) == wrong_call + 2
    monkeypatch.setattr(bench_emulator, "load_graph", lambda *a: decoder)
    assert bench_emulator.main(["--random", "--tokens", "0", "--batch", "3", "--batch-tokens",
                                "20", "--engine", "token", "--check", "2"]) == 1
    cap = capsys.readouterr()
    assert "1 of 960 readout sums of 2 sequences differ" in cap.out
    assert "error: the token engine at batch 3 computed 1 of 960" in cap.err


def test_profile_of_one_token_window(decoder, capsys):
    """``--profile B``: one window's operator time by family; the families add up to the
    total, the float64 matmuls of the synapses are seen, the top list is largest first."""
    from snn_compile.benchmarks import bench_emulator
    from snn_compile.benchmarks.profiling import family

    pr = bench_emulator.profile_token(decoder, 2)
    assert pr["batch"] == 2 and pr["time"] == "cpu" and pr["total_ms"] > 0
    fams = pr["families"]
    assert abs(sum(f["ms"] for f in fams.values()) - pr["total_ms"]) < 1e-6 * pr["total_ms"]
    assert abs(sum(f["share"] for f in fams.values()) - 1) < 1e-9
    assert fams["matmul"]["ms"] > 0 and fams["elementwise"]["ms"] > 0
    ms = [t["ms"] for t in pr["top"]]
    assert ms == sorted(ms, reverse=True) and all(t["calls"] > 0 for t in pr["top"])
    assert family("aten::mm") == "matmul"
    assert family("triton_poi_fused_index_copy_0") == "elementwise"
    assert family("void at::native::direct_copy_kernel_cuda") == "copy and fill"
    assert family("fmha_cutlassB_f32_aligned_64x64_k32_sm80") == "attention"
    assert family("void at::native::reduce_kernel<128, 4>") == "reduction"
    assert bench_emulator.main(["--random", "--tokens", "0", "--profile", "2"]) == 0
    out = capsys.readouterr().out
    assert "one token window, torch engine, batch 2" in out and "matmul" in out
    assert bench_emulator.main(["--random", "--profile", "-1"]) == 2
    assert "--profile must be at least 0, got -1" in capsys.readouterr().err
    assert bench_emulator.main(["--random", "--check", "-2"]) == 2
    assert "--check must be at least 0, got -2" in capsys.readouterr().err
    assert family("void cutlass::Kernel2<cutlass_80_tensorop_i16832gemm>") == "matmul"
    # the token engine's profile is of its compiled torch step: refused on the CPU, at once
    assert bench_emulator.main(["--random", "--engine", "token", "--profile", "2"]) == 2
    err = capsys.readouterr()
    assert "give --device cuda" in err.err and "tokens/s" not in err.out


def test_speed_benchmark_against_lava(decoder):
    pytest.importorskip("lava.magma.core.run_configs",
                        reason="Lava is an optional runtime dependency of the hw_sim stage")
    from snn_compile.benchmarks import bench_emulator

    res = bench_emulator.run(decoder, tokens=3, batch=[1, 2], batch_tokens=1, lava_tokens=2,
                             chunks=[2])
    assert [r["backend"] for r in res["runs"]] == ["emulator"] * 3 + ["lava-sim"]
    # a chunked run has its own ratio: it does not replace the streaming one
    assert set(res["emulator_over_lava"]) == {"token_batch_1", "token_batch_1_chunk_2",
                                              "numpy_batch_2"}
    assert all(v > 0 for v in res["emulator_over_lava"].values())


@pytest.mark.parametrize("graded,delay,exp,big", [(False, 0, 3, False), (False, 0, -2, False),
                                                  (True, 0, 1, True), (True, 2, -1, True),
                                                  (True, 0, 0, False)])
def test_numpy_synapse_kernels_equal_fixed_point(graded, delay, exp, big):
    """Every mode of ``emulator_numpy._Syn`` (gather, identity, float and int64 matmul,
    DelayDense products) against ``fixed_point.SynapseKernel`` + the port's int32 wrap."""
    from snn_compile.loihi import fixed_point as fx
    from snn_compile.hw_sim.emulator_numpy import _Syn, wrap32

    rng = np.random.default_rng(100 + exp + 10 * delay)
    lim = 2 ** 31 if big else 2 ** 12
    x = (torch.as_tensor(rng.integers(-lim, lim, size=(3, 7))) if graded
         else torch.as_tensor(rng.random((3, 7)) < 0.5).long())
    mats = {"dense": (rng.integers(-128, 128, size=(5, 7)) * 2),
            "gather": np.eye(5, 7, dtype=np.int64) * rng.integers(-255, 255, size=(5, 1)),
            "identity": np.eye(7, dtype=np.int64)}
    for what, w in mats.items():
        syn = Synapse("s", "a", "b", w, exp, graded=graded, delay=delay)
        for force_int in (False, True):
            k = fx.SynapseKernel(syn, "prod" if graded else "lif", "cpu", None if big else lim)
            if force_int and k.mode == "dense":
                k.float, k.wt = False, k.wt.to(torch.int64)     # sums beyond 2^53
            want = fx.wrap32(k(x))
            got = wrap32(_Syn(k, 0, 1)(x.T.numpy().astype(np.float64)))
            assert np.array_equal(got.T, want.numpy()), (what, force_int, k.mode)


def test_emulator_and_benchmark_import_without_lava_nir_snntorch(tmp_path):
    """The GPU machine has torch and numpy only: the emulator and its benchmark must import
    and run there (Lava, NIR and snnTorch are imported lazily, by other stages)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('lava', 'nir', 'nirtorch', 'snntorch'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from snn_compile.benchmarks import bench_emulator\n"
        "rc = bench_emulator.main(['--random', '--tokens', '2', '--batch', '1', '2',\n"
        "                          '--batch-tokens', '1', '--repeat', '1', '--engine', 'numpy',\n"
        "                          'torch', '--json'])\n"
        "assert rc == 0\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert '"engine": "torch"' in r.stdout and '"engine": "numpy"' in r.stdout


def test_chunked_speed_benchmark_checks_its_outputs(decoder, capsys, monkeypatch):
    """``--chunk C``: the CPU token-time engine at batch 1, C tokens per call, cut at the
    context (16 here, 40 tokens: resets at 16 and 32), every readout sum checked against
    the int reference; ``--chunk 0`` is refused with exit code 2."""
    from snn_compile.benchmarks import bench_emulator

    res = bench_emulator.run(decoder, tokens=40, batch=1, engines=["token"], check=1,
                             chunks=[1, 7])
    rows = [r for r in res["runs"] if "chunk" in r]
    assert [r["chunk"] for r in rows] == [1, 7]
    for r in rows:
        assert r["tokens"] == 40 and r["tokens_per_s"] > 0
        assert r["check"] == {"sequences": 1, "tokens": 40, "readout_sums": 40 * 24,
                              "differ": 0}, r["chunk"]
    monkeypatch.setattr(bench_emulator, "load_graph", lambda *a: decoder)
    assert bench_emulator.main(["--random", "--tokens", "8", "--chunk", "0"]) == 2
    assert "--chunk must be at least 1, got 0" in capsys.readouterr().err
