"""Resource report (neurons, synapses, memory, neurocores, chips) and range report."""

from __future__ import annotations

import numpy as np
import pytest

from snn_compile.compiler import resources as R
from snn_compile.compiler.qgraph import QGraph, Synapse, assign_depths, population


def _chain(sizes, weights, T=2, context=4, delay_skip=False):
    """tokens -> l0 -> l1 -> ... (lif) -> head (graded); weights[i] feeds population i."""
    P, S = population, Synapse
    pops = {"tokens": P("tokens", "input", sizes[0]), "positions": P("positions", "input", context)}
    syn, prev = [], "tokens"
    for i, (n, w) in enumerate(zip(sizes[1:], weights)):
        name = f"l{i}" if i < len(sizes) - 2 else "head"
        pops[name] = P(name, "lif" if name != "head" else "graded", n, vth=5)
        syn.append(S(f"w{i}", prev, name, w))
        prev = name
    syn.append(S("pos", "positions", "l0", np.ones((sizes[1], context), np.int64)))
    if delay_skip:
        syn.append(S("skip", "tokens", "head", np.ones((sizes[-1], sizes[0]), np.int64)))
    assign_depths(pops, syn, ["tokens", "positions"])
    return QGraph(pops, syn, T, ["tokens", "positions"], "head", context=context).validate()


def test_counts_fan_and_memory_model():
    w0 = np.array([[1, 0, 2], [0, 0, 3]])          # l0 <- tokens (2 x 3), nnz 3
    w1 = np.array([[4, 0], [5, 6], [0, 0], [7, 0]])  # head <- l0 (4 x 2), nnz 4
    q = _chain([3, 2, 4], [w0, w1], delay_skip=True)
    r = R.resource_report(q)
    pops = r["populations"]
    assert pops["l0"]["neurons"] == 2 and pops["head"]["neurons"] == 4
    assert pops["l0"]["synapses_in"] == 3 + 2 * 4          # tokens + positions (all ones)
    assert pops["head"]["synapses_in"] == 4 + 4 * 3        # l0 + delayed skip
    assert pops["l0"]["fan_in_max"] == 2 + 4 and pops["head"]["fan_in_max"] == 2 + 3
    assert pops["l0"]["fan_out_max"] == 3                  # l0[0] -> head rows 0, 1, 3
    assert pops["tokens"]["fan_out_max"] == 2 + 4          # token 2 -> l0[0], l0[1] + skip
    # memory model: min(dense, sparse) per block, +6 bits per synapse when delayed
    dense_w1 = 4 * 2 * 8
    sparse_w1 = 4 * (8 + 2)                               # ceil(log2 4) = 2 index bits
    skip = min(4 * 3 * (8 + 6), 12 * (8 + 2 + 6))
    assert pops["head"]["synaptic_bits"] == min(dense_w1, sparse_w1) + skip
    assert q.synapses[-1].delay == 1
    t = r["totals"]
    assert t["neurons"] == 6 and t["input_neurons"] == 3 + 4
    assert t["neurocores"] == 1 and t["chips"] == 1
    assert r["partition"][0]["neurons"] == 6


def test_tokens_fan_out():
    w0 = np.array([[1, 0, 2], [0, 0, 3]])
    w1 = np.ones((4, 2), np.int64)
    q = _chain([3, 2, 4], [w0, w1])
    pops = R.resource_report(q)["populations"]
    assert pops["tokens"]["fan_out_max"] == 2              # token 2 reaches both l0 neurons
    assert pops["tokens"]["on_host"] and pops["tokens"]["cores"] == []


def test_partition_splits_by_neurons_and_memory_and_counts_chips():
    # 20000 neurons with one input each: > 8192 neurons per core -> 3 cores by neuron count
    q = _chain([1, 20000, 1], [np.ones((20000, 1), np.int64), np.ones((1, 20000), np.int64)])
    r = R.resource_report(q)
    assert len(r["populations"]["l0"]["cores"]) == 3
    for c in r["partition"]:
        assert c["neurons"] <= R.NEURONS_PER_CORE
        assert c["bits"] <= R.SYNAPTIC_BITS_PER_CORE
    assert sum(s["neurons"][1] - s["neurons"][0] for c in r["partition"]
               for s in c["slices"] if s["population"] == "l0") == 20000
    # memory: 300 x 600 dense = 1.44 Mbit > 1 Mbit per core -> 2 cores for 300 neurons
    q = _chain([600, 300, 2], [np.ones((300, 600), np.int64), np.ones((2, 300), np.int64)])
    r = R.resource_report(q)
    assert len(r["populations"]["l0"]["cores"]) == 2
    assert all(c["bits"] <= R.SYNAPTIC_BITS_PER_CORE for c in r["partition"])
    # more than 128 cores -> 2 chips
    n = 129 * R.NEURONS_PER_CORE
    head = np.zeros((1, n), np.int64)
    head[0, :10] = 1
    q = _chain([1, n, 1], [np.ones((n, 1), np.int64), head])
    r = R.resource_report(q)
    assert r["totals"]["neurocores"] == 130 and r["totals"]["chips"] == 2


def test_random_decoder_report():
    from snn_compile.hw_sim.random_graphs import random_decoder_qgraph
    q = random_decoder_qgraph(seed=0, vocab=16, d=16, heads=2, layers=1, T=2, context=8,
                              calib_tokens=8)
    r = R.resource_report(q)
    assert r["totals"]["neurons"] == sum(p.size for p in q.populations.values()
                                         if p.kind != "input")
    loop = q.pop("block0.mem").size                        # the accum self-loop is counted
    assert r["totals"]["synapses"] == sum(int(np.count_nonzero(s.weights))
                                          for s in q.synapses) + loop
    assert r["totals"]["neurocores"] >= 1 and "Loihi 2" in r["limits"]["source"]


def test_range_report_bounds_hold_and_flag_overflow():
    import torch  # noqa: F401  (the integer reference runs on torch)
    from snn_compile.hw_sim.int_reference import run_token_time
    from snn_compile.hw_sim.random_graphs import random_decoder_qgraph
    q = random_decoder_qgraph(seed=1, vocab=16, d=16, heads=2, layers=1, T=2, context=8,
                              calib_tokens=8)
    run = run_token_time(q, np.arange(8) % 16)
    outs = {k: v.numpy() for k, v in run.outputs.items()}
    rep = R.range_report(q, outs)
    for name, r in rep.items():
        assert r["a_in_measured"] <= r["a_in_bound"], name
        if r["kind"] == "lif":
            assert r["u_measured"] <= r["u_bound"], name
            assert r["fits"] and r["fits_measured"], name
        else:
            assert r["out_measured"] <= r["out_bound"], name
    # 200 active inputs x weight 254 = 50800 > the 16-bit LIF input range
    q = _chain([200, 3, 2], [np.full((3, 200), 254, np.int64), np.ones((2, 3), np.int64)])
    rep = R.range_report(q)
    assert rep["l0"]["a_in_bound"] == 200 * 254 + 4 and not rep["l0"]["fits"]
    assert rep["head"]["fits"]


def test_fan_in_beyond_one_core_is_a_user_error():
    from snn_compile.errors import UserError
    n = 140_000                                           # 140 k x 8 bits > 128 KB
    q = _chain([1, n, 1], [np.ones((n, 1), np.int64), np.ones((1, n), np.int64)])
    with pytest.raises(UserError, match="fan-in"):
        R.resource_report(q)


def test_headroom_measured_names_the_saturating_population():
    # 200 active inputs x weight 254 (+ the position's 1) = 50801 > 2^15 at l0's dendrite
    q = _chain([200, 3, 2], [np.full((3, 200), 254, np.int64), np.ones((2, 3), np.int64)])
    T = q.steps_per_token
    outs = {"tokens": np.ones((1, T, 200), np.int64),
            "positions": np.eye(4, dtype=np.int64)[None, None, 0].repeat(T, 1),
            "l0": np.zeros((1, T, 3), np.int64), "head": np.zeros((1, T, 2), np.int64)}
    m = R.measured_ranges(q, outs)
    assert m["l0"]["a_in_measured"] == 200 * 254 + 1 and not m["l0"]["fits_measured"]
    h = R.headroom(q, m, R.range_report(q))
    assert h["l0"]["dendrite"] == pytest.approx((200 * 254 + 1) / 2 ** 15)
    assert not h["l0"]["fits"] and h["head"]["fits"]
    assert h["l0"]["dendrite_bound"] >= h["l0"]["dendrite"]
    err = R.saturation_errors(h)
    assert len(err) == 1 and "population l0" in err[0] and "16-bit dendritic" in err[0]
    # the largest of two runs, fits only if both fit
    quiet = {k: v * 0 for k, v in outs.items()}
    merged = R.merge_measured([R.measured_ranges(q, quiet), m])
    assert merged["l0"]["a_in_measured"] == 200 * 254 + 1 and not merged["l0"]["fits_measured"]


def test_measured_input_of_a_token_shift_synapse_reads_the_previous_token():
    P, S = population, Synapse
    pops = {"tokens": P("tokens", "input", 2), "l0": P("l0", "lif", 1, vth=5)}
    syn = [S("w", "tokens", "l0", np.zeros((1, 2), np.int64)),
           S("lag", "tokens", "l0", np.array([[7, 0]]), token_lag=1)]
    assign_depths(pops, syn, ["tokens"], steps_per_token=2, readout="l0")
    q = QGraph(pops, syn, 2, ["tokens"], "l0").validate()
    x = np.zeros((3, 2, 2), np.int64)
    x[0, :, 0] = 1                                   # token 0 only
    y = R._synaptic_input(q.synapses[1], x)
    assert y[:, :, 0].tolist() == [[0, 0], [7, 7], [0, 0]]
    m = R.measured_ranges(q, {"tokens": x, "l0": np.zeros((3, 2, 1), np.int64)})
    assert m["l0"]["a_in_measured"] == 7


def test_compile_refuses_a_graph_that_saturates_on_the_calibration_text(monkeypatch, capsys):
    """One clear error naming the population and the fix; --allow-saturation writes it."""
    from snn_compile.cli import main as cli_main
    from snn_compile.hw_sim import verify

    def saturating(q, tok, n=verify.CALIBRATION_TOKENS):
        return {"populations": {}, "tokens": n, "text": "calibration text",
                "errors": ["population block1.attn: its 16-bit dendritic input reaches "
                           "1.24 x 2^15"]}
    monkeypatch.setattr(verify, "calibration_headroom", saturating)
    assert cli_main.main(["compile", "default:spikedecoder"]) == 2
    err = capsys.readouterr().err
    assert "block1.attn" in err and "--allow-saturation" in err and "retrain" in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert cli_main.main(["compile", "default:spikedecoder", "--allow-saturation",
                          "--json"]) == 0
