"""The token-time engine's compiled streaming step (``hw_sim.token_program``).

Where a graph gets a program, every population's outputs at every token equal the
token-time integer reference's, spike for spike, and the engine's without the program;
a failed value check leaves the token to the engine, from the state before it; a graph
with a population the table has no row for gets no program, and says why.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snn_compile.hw_sim import token_program as tp
from snn_compile.hw_sim.random_graphs import random_dag_qgraph, random_decoder_qgraph
from snn_compile.hw_sim.token_engine import TokenEngine

from test_decay import decaying_attention_graph, decaying_decoder, residual_stream_graph
from test_token_engine import _check_chunks


def _equal_reference(q, tokens: np.ndarray, e: TokenEngine, chunk_at=None) -> int:
    """Feed ``tokens`` (B, N) one at a time into ``e``, but for a chunk of three starting at
    token ``chunk_at`` (the engine's own path), checking every output against the
    reference (``test_token_engine._check_chunks``); returns how many calls fed a
    single token."""
    N = tokens.shape[1]
    cuts = [n for n in range(1, N) if chunk_at is None or not chunk_at < n < chunk_at + 3]
    _check_chunks(q, tokens, cuts, e)
    ends = cuts + [N]
    return sum(b - a == 1 for a, b in zip([0] + ends, ends))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10 ** 6), n_pops=st.integers(2, 9), T=st.integers(1, 4),
       N=st.integers(1, 6), B=st.integers(1, 3))
def test_programs_of_random_graphs_equal_reference(seed, n_pops, T, N, B):
    q = random_dag_qgraph(seed, n_pops=n_pops, T=T)
    e = TokenEngine(q, B)
    if e.program is None:
        assert e.program_why_not
        return
    tokens = np.random.default_rng(seed).integers(0, 8, (B, N))
    singles = _equal_reference(q, tokens, e, chunk_at=2)
    # every single token went through the program or was left to the engine by a check
    assert e.program.tokens + e.program.fallbacks == singles


def test_some_random_graphs_get_a_program():
    built = sum(TokenEngine(random_dag_qgraph(s, n_pops=5, T=2), 1).program is not None
                for s in range(60))
    assert built >= 10


def _summing_decoder():
    """A decoder whose attention memories sum without decay (accums, no decay)."""
    return random_decoder_qgraph(seed=1, vocab=24, d=16, heads=2, layers=2, T=3, context=16)


@pytest.mark.parametrize("make", [decaying_attention_graph, residual_stream_graph,
                                  decaying_decoder, _summing_decoder])
def test_programs_of_decoder_graphs_equal_reference(make):
    q = make()
    e = TokenEngine(q, 2)
    assert e.program is not None, e.program_why_not
    V = q.pop("tokens").size
    _equal_reference(q, np.random.default_rng(3).integers(0, V, (2, min(9, q.context))), e,
                     chunk_at=3)
    assert e.program.tokens >= 3


@pytest.fixture(scope="module")
def shipped():
    from snn_compile import api
    return api.compile("default:spikedecoder").qgraph


def test_shipped_default_streams_through_the_program_as_without_it(shipped):
    """The shipped graph (30 802 neurons): 40 tokens with and without the program, every
    population's outputs and the readout identical."""
    with_p, without = TokenEngine(shipped, 1), TokenEngine(shipped, 1, compiled_step=False)
    assert with_p.program is not None, with_p.program_why_not
    assert without.program is None
    ids = np.random.default_rng(0).integers(0, shipped.pop("tokens").size, 40)
    for n, t in enumerate(ids):
        a, b = with_p.step_token([t]), without.step_token([t])
        assert np.array_equal(a, b), n
        for i, name in enumerate(with_p.names):
            assert np.array_equal(with_p.outputs[i], without.outputs[i]), (n, name)
    assert with_p.program.tokens >= 35            # a few may be left to the engine


def test_failed_check_leaves_the_token_to_the_engine():
    """A check made to fail on every other token: those tokens run the engine's way from
    the state before them (memories, token-shift history), the others the program's."""
    q = decaying_decoder()
    e = TokenEngine(q, 2)
    prog = e.program
    assert prog is not None, e.program_why_not
    rows = np.flatnonzero(prog.code_a[:, 0] == tp.LIF)
    assert rows.size
    keep = prog.fcode_a.copy()
    run = prog.run

    def flaky(engine):
        if engine.n % 2:
            prog.fcode_a[rows[-1], 5] = 0.0      # input limit 0: |a| >= 0 fails the check
        else:
            prog.fcode_a[:] = keep
        return run(engine)

    prog.run = flaky
    V = q.pop("tokens").size
    _equal_reference(q, np.random.default_rng(7).integers(0, V, (2, 8)), e)
    assert prog.tokens == 4 and prog.fallbacks == 4
    assert prog.last_fallback.endswith("(lif)")


def test_reset_starts_the_program_from_rest():
    q = decaying_attention_graph()
    e = TokenEngine(q, 1)
    V = q.pop("tokens").size
    seq = np.random.default_rng(1).integers(0, V, (1, 6))
    first = [e.step_token(seq[:, n]) for n in range(6)]
    e.reset()
    again = [e.step_token(seq[:, n]) for n in range(6)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))


def test_unsupported_graphs_get_no_program_and_a_reason():
    reasons = set()
    for s in range(80):
        e = TokenEngine(random_dag_qgraph(s, n_pops=6, T=2), 1)
        if e.program is None:
            reasons.add(e.program_why_not.split(" ")[0])
    assert reasons and all(r for r in reasons)
    big = TokenEngine(decaying_decoder(), 8)           # 3 x 8 rows: the BLAS forms
    assert big.program is None and "rows per token" in big.program_why_not
