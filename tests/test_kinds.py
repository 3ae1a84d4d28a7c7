"""A stateless population kind is its update and rule (``fixed_point.ELEMENTWISE``) and
its QGraph dataclass: the executors run it without naming it.

The test registers a kind none of them knows, ``diff`` (``out = w * (|w| > vth)``,
``w = wrap32(a1 - a2)``: two ports, non-zero when either is), swaps it into random
graphs, and checks the token-time reference, the numpy engine, the torch engine (eager
and fused) and the token-time engine against each other, step for step.
"""

from dataclasses import dataclass
from typing import ClassVar, Tuple

import numpy as np
import pytest
import torch

from snn_compile.compiler import qgraph as qg
from snn_compile.compiler.qgraph import Population, QGraph, QGraphError, Synapse
from snn_compile.hw_sim import emulator
from snn_compile.hw_sim.emulator import Emulator
from snn_compile.hw_sim.int_reference import run_token_time
from snn_compile.hw_sim.random_graphs import random_dag_qgraph
from snn_compile.hw_sim.token_engine import TokenEngine
from snn_compile.loihi import fixed_point as fx


@dataclass
class Diff(Population):
    """w = wrap32(a1 - a2); out = w * (|w| > vth)"""

    vth: int = 0

    kind: ClassVar[str] = "diff"
    ports: ClassVar[Tuple[str, ...]] = ("a_in1", "a_in2")
    graded: ClassVar[bool] = True


def _diff(ports, wrap, vth):
    w = ports[0] - ports[1]
    if wrap:
        w = fx.wrap32(w)
    return fx.graded_step(w, vth)


def _diff_bound(bounds):
    b1, b2 = bounds
    return b1 + b2 if b1 is not None and b2 is not None and b1 + b2 < fx.I32 else None


@pytest.fixture
def diff_kind(monkeypatch):
    monkeypatch.setitem(qg.POPULATION_TYPES, "diff", Diff)
    monkeypatch.setitem(qg.PORTS, "diff", Diff.ports)
    monkeypatch.setitem(fx.ELEMENTWISE, "diff", fx.Elementwise(("vth",), _diff, _diff_bound,
                                                               False))


def _with_diffs(seed: int) -> QGraph:
    """A random graph whose graded populations (the readout aside) became ``diff``s, their
    incoming synapses dealt to the two ports in turn."""
    q = random_dag_qgraph(seed, n_pops=8, accum=False)
    pops, syns = dict(q.populations), []
    turn = {}
    for name, p in q.populations.items():
        if p.kind == "graded" and name != q.readout:
            pops[name] = Diff(name, p.size, depth=p.depth, layer=p.layer, vth=p.vth)
    for s in q.synapses:
        if isinstance(pops[s.dst], Diff):
            k = turn[s.dst] = turn.get(s.dst, -1) + 1
            s = Synapse(s.name, s.src, s.dst, s.weights, s.weight_exp,
                        ("a_in1", "a_in2")[k % 2], s.graded, s.delay, s.token_lag, s.step_lag)
        syns.append(s)
    return QGraph(pops, syns, q.steps_per_token, q.inputs, q.readout, q.logit_scale,
                  context=q.context, metadata=q.metadata).validate()


def _executors_agree(q: QGraph, tokens: torch.Tensor, ref, fused: bool) -> None:
    """The numpy and torch engines (eager; fused too where ``fused``: torch.compile,
    inductor's C++ here, is slow) equal the reference ``ref`` in token time and each
    other at every global step; the token-time engine equals it token by token."""
    runs = {}
    for engine, fu in (("numpy", None), ("torch", False), ("torch", True))[:3 if fused else 2]:
        emu = Emulator(q, batch=tokens.shape[0], engine=engine, fused=fu,
                       event_driven=None if engine == "numpy" else False)
        runs[engine, fu] = run = emu.run_sequence(tokens)
        assert torch.equal(run.logits_int, ref.logits_int), (engine, fu)
        for name, o in ref.outputs.items():
            assert torch.equal(run.outputs[name], o), (engine, fu, name)
    for name, g in runs["numpy", None].global_outputs.items():
        for key, run in runs.items():
            assert torch.equal(run.global_outputs[name], g), (key, name)
    tok = TokenEngine(q, tokens.shape[0])
    for n in range(tokens.shape[1]):
        tok.step_token(tokens[:, n].numpy())
        for j, name in enumerate(tok.names):
            assert np.array_equal(tok.outputs[j].transpose(1, 0, 2),
                                  ref.outputs[name][:, n].numpy()), ("token", name, n)


def test_a_new_stateless_kind_runs_in_every_executor(diff_kind):
    graphs = [q for q in map(_with_diffs, range(40))
              if any(p.kind == "diff" for p in q.populations.values())][:4]
    assert len(graphs) == 4
    both = 0
    for i, q in enumerate(graphs):
        diffs = [n for n, p in q.populations.items() if p.kind == "diff"]
        both += sum(len({s.port for s in q.incoming(n)}) == 2 for n in diffs)
        tokens = torch.randint(0, 8, (2, 5), generator=torch.Generator().manual_seed(1))
        ref = run_token_time(q, tokens)
        assert any(ref.outputs[n].any() for n in diffs)        # the new kind is not idle
        _executors_agree(q, tokens, ref, fused=i == 0)
    assert both >= 2                    # diffs fed on both ports, not just one
    assert emulator._COMPILED.get("elem:diff") is not None      # its fused kernel ran


def test_an_unknown_stateful_kind_is_refused_with_its_name(monkeypatch):
    @dataclass
    class Held(Population):
        kind: ClassVar[str] = "held"
        ports: ClassVar[Tuple[str, ...]] = ("a_in",)
        graded: ClassVar[bool] = True

    monkeypatch.setitem(qg.POPULATION_TYPES, "held", Held)
    monkeypatch.setitem(qg.PORTS, "held", Held.ports)
    q = random_dag_qgraph(0, n_pops=4, accum=False)
    name = next(n for n, p in q.populations.items() if p.kind == "graded")
    p = q.populations[name]
    q.populations[name] = Held(name, p.size, depth=p.depth)
    with pytest.raises(QGraphError, match="'held' is stateful"):
        run_token_time(q, torch.zeros(1, 2, dtype=torch.int64))


def test_elementwise_rules_match_the_population_types():
    """Every stateless kind has a dataclass whose fields its update takes."""
    for kind, rule in fx.ELEMENTWISE.items():
        cls = qg.POPULATION_TYPES[kind]
        names = {f.name for f in qg.fields(cls)}
        assert set(rule.params) <= names, kind
        zero = np.zeros((3, 2), np.int64)
        assert not np.any(rule.update([zero] * len(cls.ports), True,
                                      *([1] * len(rule.params))))


# ------------------------------------------------------------------ stateful kinds
@dataclass
class Hold(Population):
    """s = (s >> 1) + a (kept across tokens: halved through the drain); out = s where a != 0"""

    kind: ClassVar[str] = "hold"
    ports: ClassVar[Tuple[str, ...]] = ("a_in",)
    graded: ClassVar[bool] = True


@dataclass
class Count(Population):
    """c = c + (a != 0) (cleared at every token); out = c * shift where a != 0"""

    shift: int = 3

    kind: ClassVar[str] = "count"
    ports: ClassVar[Tuple[str, ...]] = ("a_in",)
    graded: ClassVar[bool] = True


def _hold(ports, state, wrap):
    a = ports[0]
    s = (state[0] >> 1) + a
    if wrap:
        s = fx.wrap32(s)
    return s * (a != 0), [s]


def _count(ports, state, wrap, shift):
    fed = ports[0] != 0
    c = state[0] + fed
    return (c << shift) * fed, [c]


@pytest.fixture
def stateful_kinds(monkeypatch):
    for cls in (Hold, Count):
        monkeypatch.setitem(qg.POPULATION_TYPES, cls.kind, cls)
        monkeypatch.setitem(qg.PORTS, cls.kind, cls.ports)
    monkeypatch.setitem(fx.STATEFUL, "hold", fx.Stateful(
        (), ("s",), _hold, lambda b: 2 * b[0] if b[0] is not None and 2 * b[0] < fx.I32
        else None, reset_each_token=False, quiet=True))
    monkeypatch.setitem(fx.STATEFUL, "count", fx.Stateful(
        ("shift",), ("c",), _count, lambda b: 2 ** 20, reset_each_token=True, quiet=True))


def _with_stateful(seed: int) -> QGraph:
    """A random graph whose graded populations (the readout aside) became ``hold`` and
    ``count`` populations in turn."""
    q = random_dag_qgraph(seed, n_pops=8, accum=seed % 2 == 0)
    pops, i = dict(q.populations), 0
    for name, p in q.populations.items():
        if p.kind == "graded" and name != q.readout:
            cls = (Hold, Count)[i % 2]
            pops[name] = cls(name, p.size, depth=p.depth, layer=p.layer)
            i += 1
    return QGraph(pops, list(q.synapses), q.steps_per_token, q.inputs, q.readout,
                  q.logit_scale, context=q.context, metadata=q.metadata).validate()


def test_a_new_stateful_kind_runs_in_every_executor(stateful_kinds):
    """Two stateful kinds no executor names, one keeping its state across tokens (through
    the drain steps), one clearing it at every token: the token-time reference, the numpy
    and torch engines (global time, every step) and the token-time engine agree."""
    graphs = [q for q in map(_with_stateful, range(40))
              if {"hold", "count"} <= {p.kind for p in q.populations.values()}][:4]
    assert len(graphs) == 4
    carried = 0
    for i, q in enumerate(graphs):
        new = [n for n, p in q.populations.items() if p.kind in ("hold", "count")]
        tokens = torch.randint(0, 8, (2, 6), generator=torch.Generator().manual_seed(2))
        ref = run_token_time(q, tokens)
        assert any(ref.outputs[n].any() for n in new)          # the new kinds are not idle
        # the state carried across tokens matters: a fresh start at each token differs
        for n in new:
            if q.pop(n).kind == "hold":
                o = ref.outputs[n]
                one = run_token_time(q, tokens[:, 1:2]).outputs[n][:, 0]
                carried += not torch.equal(o[:, 1], one) if o[:, 1].any() else 0
        _executors_agree(q, tokens, ref, fused=i == 0)
        # streaming: two runs of 3 tokens carry the states through run_frames' state
        from snn_compile.hw_sim.int_reference import input_frames, plan_graph, run_frames
        plan = plan_graph(q)
        fr = input_frames(q, tokens)
        a = run_frames(plan, {k: v[:, :3] for k, v in fr.items()})
        b = run_frames(plan, {k: v[:, 3:] for k, v in fr.items()}, a.state)
        for name in q.populations:
            assert torch.equal(torch.cat([a.outputs[name], b.outputs[name]], 1),
                               ref.outputs[name]), ("stream", name)
    assert carried >= 1


def test_stateful_kind_without_quiet_must_be_gated(stateful_kinds, monkeypatch):
    """A stateful kind that holds its output is checked like an accum: read by a LIF or a
    graded population, the pipelined run could leak between tokens."""
    from snn_compile.compiler.qgraph import check_streamable

    monkeypatch.setitem(fx.STATEFUL, "hold", fx.Stateful(
        (), ("s",), _hold, lambda b: None, reset_each_token=False, quiet=False))
    q = next(q for q in map(_with_stateful, range(40))
             if any(p.kind == "hold" and any(s.src == n for s in q.synapses)
                    for n, p in q.populations.items()))
    with pytest.raises(QGraphError, match="active between tokens"):
        check_streamable(q)
