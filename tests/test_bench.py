"""Benchmark harness: operation counts of a QGraph run, the exact reference check, reports."""

import json
import math
import os

import numpy as np
import pytest

from snn_compile.benchmarks import measure, report
from snn_compile.compiler.qgraph import Population, QGraph, Synapse
from snn_compile.errors import UserError


def tiny_graph() -> QGraph:
    """inp(3) -> a(2, lif) -> r(2, graded readout); a also feeds m (accum, 2)."""
    pops = {
        "inp": Population("inp", "input", 3, depth=0),
        "a": Population("a", "lif", 2, depth=1, vth=10, layer="block0", role="x"),
        "r": Population("r", "graded", 2, depth=2, layer="head"),
        "m": Population("m", "accum", 2, depth=2, layer="block0", role="memory"),
    }
    syns = [
        Synapse("inp_a", "inp", "a", np.array([[1, 0, 2], [0, 0, 3]])),
        Synapse("a_r", "a", "r", np.array([[1, 1], [0, 1]])),
        Synapse("a_m", "a", "m", np.array([[1, 0], [0, 0]])),
    ]
    return QGraph(pops, syns, steps_per_token=2, inputs=["inp"], readout="r").validate()


def tiny_outputs():
    o = {"inp": np.zeros((2, 2, 3), int), "a": np.zeros((2, 2, 2), int),
         "r": np.zeros((2, 2, 2), int), "m": np.zeros((2, 2, 2), int)}
    o["inp"][0, 0, [0, 2]] = 1          # token 0: 2 input spikes
    o["inp"][1, :, 1] = 1               # token 1: input 1 twice (fan-out 0!)
    o["a"][0, 0, 0] = 1                 # token 0: a0 once
    o["a"][0, 1, :] = 1                 # token 0: a0, a1
    o["r"][0, 1, :] = [5, -3]
    o["m"][0, 1, 0] = 2
    o["m"][1, :, 0] = 2                 # the memory persists into token 1
    return o


def test_count_operations_hand_computed():
    g = tiny_graph()
    counts = {c.name: c for c in measure.count_operations(g, tiny_outputs())}
    inp, a, r, m = counts["inp"], counts["a"], counts["r"], counts["m"]
    # inp: fan-out of neurons 0,1,2 into a = 1, 0, 2
    np.testing.assert_array_equal(inp.outputs, [2, 2])
    np.testing.assert_array_equal(inp.synops, [1 + 2, 0])
    np.testing.assert_array_equal(inp.messages, [2, 0])        # neuron 1 has no synapse
    np.testing.assert_array_equal(inp.active + inp.idle, [0, 0])  # host, not a neuron
    # a: fan-out into r = (1, 2), into m = (1, 0); token 0: a0 twice, a1 once
    np.testing.assert_array_equal(a.outputs, [3, 0])
    np.testing.assert_array_equal(a.synops, [2 * 1 + 1 * 2 + 2 * 1, 0])
    np.testing.assert_array_equal(a.messages, [3 + 2, 0])
    W = g.window                                               # T + depth = 2 + 2
    np.testing.assert_array_equal(a.active, [3, 0])
    np.testing.assert_array_equal(a.idle, [2 * W - 3, 2 * W])
    # accum: self-loop, one message and one synop per non-zero output
    np.testing.assert_array_equal(m.synops, [1, 2])
    np.testing.assert_array_equal(r.synops, [0, 0])
    s = measure.summary(list(counts.values()), mean_hops=1.0)
    assert s["totals_per_token"]["synops"] == pytest.approx((3 + 6 + 1 + 0 + 2) / 2)


def test_compare_outputs_detects_a_tampered_spike():
    g = tiny_graph()
    ref = tiny_outputs()
    ok, bad = measure.compare_outputs(tiny_outputs(), ref, g.order())
    assert ok and not bad
    tampered = tiny_outputs()
    tampered["a"][1, 0, 1] = 1
    ok, bad = measure.compare_outputs(tampered, ref, g.order())
    assert not ok and "a: 1 values differ, first at token 1 step 0 neuron 1" in bad[0]
    missing = tiny_outputs()
    del missing["m"]
    assert not measure.compare_outputs(missing, ref, g.order())[0]


def _results():
    from snn_compile.benchmarks.energy import constants_table
    return {"backend": "int", "tokens": 4, "mode": "teacher-forced",
            "spikes_match_reference": True, "paper_reduction_pct": [87.0, 93.0],
            "energy_per_token_pj": {"spikedecoder": {"theoretical_45nm": 10.0},
                                    "ann": {"theoretical_45nm": 100.0}},
            "reduction_pct": 90.0, "val_loss": {"spikedecoder": 1.5, "ann": 1.4},
            "per_layer_pj": {"snn:45nm": {"emb": 1.0}, "ann:45nm": {"emb": 2.0}},
            "constants": constants_table(), "assumptions": ["a"]}


def test_report_is_written_atomically(tmp_path):
    out = tmp_path / "bench"
    report.write_report(_results(), str(out))
    assert json.loads((out / "results.json").read_text())["reduction_pct"] == 90.0
    assert "| SpikeDecoder |" in (out / "report.md").read_text()
    before = sorted(os.listdir(tmp_path))

    def boom(path):
        with open(path, "w") as f:
            f.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        report.write_report(dict(_results(), reduction_pct=50.0), str(out),
                            plot_fns={"a.png": boom})
    # the old report is intact, no temporary folder or partial file is left
    assert sorted(os.listdir(tmp_path)) == before
    assert json.loads((out / "results.json").read_text())["reduction_pct"] == 90.0
    assert not (out / "a.png").exists()
    # a fresh folder that fails leaves nothing at all
    with pytest.raises(RuntimeError):
        report.write_report(_results(), str(tmp_path / "new"), plot_fns={"a.png": boom})
    assert not (tmp_path / "new").exists() and sorted(os.listdir(tmp_path)) == before


def test_report_refuses_a_foreign_folder(tmp_path):
    from snn_compile.errors import UserError
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match="not a benchmark report"):
        report.write_report(_results(), str(tmp_path / "x"))
    assert (tmp_path / "x" / "thesis.tex").read_text() == "precious"


def test_plots_render(tmp_path):
    from snn_compile.benchmarks import plots, theory

    shape = theory.ModelShape(vocab=5, d_model=2, n_layers=1, n_heads=1, d_ff=4,
                              steps_per_token=2)
    from _bench_helpers import hand_spikes as _spikes
    snn = theory.snn_op_rows(shape, _spikes())
    ann = theory.ann_op_rows(shape, [0])
    r = {"per_layer_pj": {"snn:45nm": theory.by_layer(snn), "ann:45nm": theory.by_layer(ann)},
         "per_op": {"snn_theoretical": theory.table(snn), "ann_theoretical": theory.table(ann)},
         "spike_rates": {"torch": theory.spike_rates(_spikes()),
                         "measured": theory.spike_rates(_spikes())}}
    plots.energy_by_layer(r, str(tmp_path / "a.png"))
    plots.energy_by_op(r, str(tmp_path / "b.png"))
    plots.spike_rates(r, str(tmp_path / "c.png"))
    sp = _spikes()
    plots.raster({k: v[0] for k, v in sp.items()}, list(sp), str(tmp_path / "d.png"))
    plots.energy_vs_loss([{"name": "x", "energy_pj": 10.0, "val_loss": 1.0},
                          {"name": "y", "energy_pj": 100.0, "val_loss": 0.9}],
                         str(tmp_path / "e.png"))
    for f in "abcde":
        assert (tmp_path / f"{f}.png").read_bytes()[:4] == b"\x89PNG"


def test_train_speed_times_both_models_in_one_run():
    from snn_compile.benchmarks.train_speed import run

    r = run("cpu", steps=1, warmup=1, rounds=2, batch_size=2, context=16)
    assert set(r["tokens_per_s"]) == {"spikedecoder", "ann"}
    assert all(len(v) == 2 and min(v) > 0 for v in r["all_rounds_tokens_per_s"].values())
    assert r["snn_cost_over_ann"] == r["tokens_per_s"]["ann"] / r["tokens_per_s"]["spikedecoder"]


def test_attention_sum_of_the_shipped_model_grows_with_the_position():
    from snn_compile.benchmarks.attention_growth import run

    r = run("default:spikedecoder", windows=16)
    assert r["positions"][0] == 0 and r["positions"][-1] == 127
    for block in r["blocks"].values():
        assert len(block["A_mean"]) == len(r["positions"])
        assert np.mean(block["A_mean"][-3:]) > 10 * block["A_mean"][0]


def test_ngram_baseline_uses_its_context():
    from snn_compile.benchmarks.ngram import ngram_losses
    train = [0, 1, 2] * 200               # each token fixes the next one
    val = [0, 1, 2] * 20
    rows = ngram_losses(train, val, vocab=3, max_context=2)
    assert [r["context"] for r in rows] == [0, 1, 2]
    assert abs(rows[0]["val_loss"] - math.log(3)) < 0.01      # unigram: uniform here
    assert rows[1]["val_loss"] < 0.05 and rows[2]["val_loss"] <= rows[1]["val_loss"]
    with pytest.raises(UserError, match="max-context"):
        ngram_losses(train, val, 3, -1)
