"""The merged Lava lowering (``lower(merge=True)``, snn_compile.compiler.merge).

Merged Lava == unmerged Lava == the token-time integer reference, every population,
step and token, on the hand graphs of test_lava.py, random DAGs and random decoders,
with the default delay-line threshold and with every delayed synapse as a delay line;
the activity of every window step; reset() after lag lines and the memory were full;
fewer processes; and the planner's rules (no shared row under a negative weight_exp,
only Lava-legal merged matrices, every synapse's weights exactly once).
"""

from __future__ import annotations

import numpy as np
import pytest

from snn_compile.compiler import merge as M
from snn_compile.compiler.qgraph import QGraph, Synapse, assign_depths, population

pytest.importorskip("lava.proc.io.injector")

from test_lava import (_assert_same, _lava_run, _reference, all_kinds_graph,  # noqa: E402
                      sparse_graph, tiny_decoder)

def shift_decoder(seed: int = 0, decay=None):
    """A tiny decoder with token-shift (lag) synapses, optionally a decaying memory."""
    from snn_compile.hw_sim.random_graphs import random_decoder_qgraph
    return random_decoder_qgraph(seed=seed, vocab=8, d=8, heads=2, layers=2, T=3, context=8,
                                 calib_tokens=8, token_shift=1, memory_decay=decay)


VARIANTS = [dict(merge=False), dict(merge=True), dict(merge=True, line_min_work=0)]


def _run_all(q, tokens, variants=VARIANTS):
    from snn_compile.hw_sim.lava_runner import LavaSession
    out = []
    for kw in variants:
        with LavaSession(q, **kw) as s:
            got, sums = _lava_run(s, tokens)
            out.append((kw, got, sums, s.activity(), s.net))
    return out


@pytest.mark.parametrize("make,tokens", [
    (all_kinds_graph, [1, 3, 0, 4]),
    (sparse_graph, [2, 5, 0, 2]),
    (tiny_decoder, [3, 1, 4, 1, 5]),
    (shift_decoder, [3, 1, 4, 1, 5]),
])
def test_merged_equals_unmerged_equals_reference(make, tokens):
    from snn_compile.hw_sim.probes import compare_activity
    q = make()
    want, logits_int = _reference(q, tokens)
    runs = _run_all(q, tokens)
    base_act = runs[0][3]
    for kw, got, sums, act, net in runs:
        _assert_same(q, got, want, sums, logits_int)
        assert compare_activity(act, base_act) == [], kw
    counts = [len(net.processes) for *_, net in runs]
    assert counts[1] < counts[0], counts            # merging removes processes
    lined = runs[2][4]
    kinds = {type(p).__name__ for p in lined.processes}
    assert not kinds & {"DelayDense", "DelaySparse"}, kinds   # every delay is a line
    assert any(s.delay > 0 for s in q.synapses)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_dags_merged(seed):
    from snn_compile.hw_sim.random_graphs import random_dag_qgraph
    q = random_dag_qgraph(seed=seed, n_pops=6, T=2, vocab=6, context=6, max_size=5)
    tokens = np.random.default_rng(seed).integers(0, 6, size=4)
    want, logits_int = _reference(q, tokens)
    for kw, got, sums, _, _ in _run_all(q, tokens, VARIANTS[1:]):
        _assert_same(q, got, want, sums, logits_int)


def test_decoder_activity_and_merges():
    """A random decoder: the per-step activity of the merged run equals the reference's;
    populations really share processes, and the lag lines are in the reset state."""
    from snn_compile.hw_sim.lava_runner import LavaSession
    from snn_compile.hw_sim.probes import activity_from_token_time, compare_activity
    q = shift_decoder(0)
    tokens = [3, 1, 4, 1, 5]
    want, logits_int = _reference(q, tokens)
    with LavaSession(q, line_min_work=0) as s:
        got, sums = _lava_run(s, tokens)
        act = s.activity()
        net = s.net
    _assert_same(q, got, want, sums, logits_int)
    assert compare_activity(act, activity_from_token_time(q, want)) == []
    shared = {}
    for name, proc in net.neurons.items():
        shared.setdefault(id(proc), []).append(name)
    assert max(len(v) for v in shared.values()) > 1
    assert len(net.io_groups(net.injectors)) == 1            # tokens + positions
    # each population's slice is where its own frames are
    for name in q.populations:
        sl = net.slice_of(name)
        assert sl.stop - sl.start == q.pop(name).size
    lag = [s for s in q.synapses if s.token_lag]
    assert lag and all((net.synapses[s.name], "a_buff") in net.state for s in lag)


def test_reset_clears_lines_and_memory():
    """reset() on a merged session with lag lines equals a fresh session (the lines hold
    the previous token's spikes, the memory its keys/values)."""
    from snn_compile.hw_sim.lava_runner import LavaSession
    q = shift_decoder(1, decay=[200, 40])
    assert any(s.token_lag for s in q.synapses) and any(
        p.decaying for p in q.populations.values())
    first, second = [7, 2, 2, 6], [5, 0, 3]
    with LavaSession(q, line_min_work=0) as s:
        _lava_run(s, first)
        s.reset()
        got, sums = _lava_run(s, second)
    want, logits_int = _reference(q, second)
    _assert_same(q, got, want, sums, logits_int)
    # without the reset the second sequence differs (so the test can fail)
    with LavaSession(q, line_min_work=0) as s:
        _lava_run(s, first)
        s.position = 0
        stale, _ = _lava_run(s, second)
    assert any(not np.array_equal(stale[n], want[n]) for n in q.populations)


def test_greedy_generation_merged_equals_unmerged():
    from snn_compile.hw_sim.lava_runner import LavaBackend
    from test_lava import _greedy
    q = tiny_decoder(2)
    outs = []
    for merge in (False, True):
        with LavaBackend(q, merge=merge) as b:
            outs.append(_greedy(b, [1, 2, 3], 7))
    assert outs[0] == outs[1]


# ------------------------------------------------------------ planner rules
def _two_into_one(exp: int, w1, w2) -> QGraph:
    P, S = population, Synapse
    pops = {"tokens": P("tokens", "input", 4),
            "a": P("a", "graded", 3, vth=0), "b": P("b", "graded", 3, vth=0),
            "r": P("r", "graded", 3, vth=0)}
    syn = [S("ta", "tokens", "a", np.ones((3, 4), np.int64) * 2),
           S("tb", "tokens", "b", np.ones((3, 4), np.int64) * 4),
           S("ar", "a", "r", np.asarray(w1), weight_exp=exp, graded=True),
           S("br", "b", "r", np.asarray(w2), weight_exp=exp, graded=True)]
    assign_depths(pops, syn, ["tokens"])
    return QGraph(pops, syn, 2, ["tokens"], "r", logit_scale=1.0, context=4).validate()


def _same_bucket(pl, a, b):
    return pl.exits[a] is pl.exits[b]


def test_plan_rows_shared_only_with_nonnegative_exp():
    """a, b, r are one GradedVec group; ar and br both feed every row of r: one matrix
    only when Lava's shift of the row sum equals the sum of the shifts (exp >= 0)."""
    eye = np.eye(3, dtype=np.int64)
    assert _same_bucket(M.plan(_two_into_one(1, eye * 3, eye * 5)), "ar", "br")
    assert not _same_bucket(M.plan(_two_into_one(-1, eye * 3, eye * 5)), "ar", "br")


def test_plan_keeps_merged_matrices_lava_legal():
    """Positive odd weights next to negative ones would be a mixed-sign matrix that Lava
    halves: they are not merged."""
    eye = np.eye(3, dtype=np.int64)
    assert not _same_bucket(M.plan(_two_into_one(1, eye * 3, -eye * 4)), "ar", "br")
    assert _same_bucket(M.plan(_two_into_one(1, eye * 2, -eye * 4)), "ar", "br")


@pytest.mark.parametrize("make", [all_kinds_graph, sparse_graph, tiny_decoder,
                                  shift_decoder])
@pytest.mark.parametrize("work", [M.LINE_MIN_WORK, 0])
def test_plan_places_every_synapse_once_and_legal(make, work):
    import torch

    from snn_compile.loihi.fixed_point import is_lava_legal
    q = make()
    pl = M.plan(q, work)
    seen = set()
    for b in pl.buckets:
        rows, cols = pl.groups[b.dst].size, pl.groups[b.src].size
        m = b.coo(rows, cols).toarray()
        assert is_lava_legal(torch.from_numpy(m)), b.name
        for c in b.members:
            r0, r1 = c.rows
            k0, k1 = c.cols
            assert np.array_equal(m[r0:r1, k0:k1], c.w), b.name   # no overlap
            if c.synapse is not None:
                assert c.synapse not in seen
                seen.add(c.synapse)
                s = next(s for s in q.synapses if s.name == c.synapse)
                assert np.array_equal(c.w, np.asarray(s.weights)) and c.weight_exp == s.weight_exp
                g, a, z = pl.slot[s.dst]
                assert (b.dst, b.port, r0, r1) == (g, s.port, a, z)
                if c.delay == 0 and s.delay > 0:        # read from slot delay - 1 of the line
                    assert pl.lines[s.src] >= s.delay
                else:
                    assert c.delay == s.delay and pl.slot[s.src][0] == b.src
    assert seen == {s.name for s in q.synapses}
