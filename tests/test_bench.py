"""Benchmark harness: operation counts of a QGraph run, the exact reference check, reports."""

import json
import math
import os

import numpy as np
import pytest

from snn_compile.benchmarks import measure, report
from snn_compile.compiler.qgraph import Accum, Graded, Input, Lif, QGraph, Synapse
from snn_compile.errors import UserError


def tiny_graph() -> QGraph:
    """inp(3) -> a(2, lif) -> r(2, graded readout); a also feeds m (accum, 2)."""
    pops = {
        "inp": Input("inp", 3, depth=0),
        "a": Lif("a", 2, depth=1, vth=10, layer="block0", role="x"),
        "r": Graded("r", 2, depth=2, layer="head"),
        "m": Accum("m", 2, depth=2, layer="block0", role="memory"),
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
    """Every step of every window (W = T + depth = 4): the memory m holds its value through
    the drain steps and sends it at each of them."""
    g = tiny_graph()
    assert g.window == 4
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
    np.testing.assert_array_equal(a.all["synops_binary"], a.synops)
    np.testing.assert_array_equal(a.messages, [3 + 2, 0])
    np.testing.assert_array_equal(a.active, [3, 0])
    np.testing.assert_array_equal(a.idle, [2 * 4 - 3, 2 * 4])
    np.testing.assert_array_equal(a.token["idle"], [2 * 2 - 3, 2 * 2])
    # m (depth 2): global steps 2,3 | 6,7 are token steps; 4,5 drain, holding [2, 0].
    # window 0 = steps 0..3: one message (step 3); window 1 = steps 4..7: four
    np.testing.assert_array_equal(m.outputs, [1, 4])
    np.testing.assert_array_equal(m.token["outputs"], [1, 2])
    np.testing.assert_array_equal(m.part("drain")["messages"], [0, 2])
    np.testing.assert_array_equal(m.synops, [1, 4])            # its weight-1 self-loop
    np.testing.assert_array_equal(m.all["synops_graded"], [1, 4])
    np.testing.assert_array_equal(m.all["payload_bits"], [24, 96])
    np.testing.assert_array_equal(m.all["significant_bits"], [3, 12])   # |2|: 2 bits + sign
    np.testing.assert_array_equal(m.idle, [2 * 4 - 1, 2 * 4 - 4])
    # r: 5 and -3 -> (3 + 1) + (2 + 1) significant bits; no outgoing synapse
    np.testing.assert_array_equal(r.all["significant_bits"], [7, 0])
    np.testing.assert_array_equal(r.synops, [0, 0])
    s = measure.summary(list(counts.values()), mean_hops=1.0)
    assert s["totals_per_token"]["synops"] == pytest.approx((3 + 6 + 1 + 0 + 0 + 4) / 2)
    assert s["drain_per_token"]["messages"] == pytest.approx(2 / 2)


def test_lava_probes_equal_the_counts_at_every_window_step():
    """Lava's own extractor frames, every step of every window, give the same spikes,
    messages, synops and payload bits as the counts rebuilt from the integer reference;
    the memory's drain-step messages are among them."""
    pytest.importorskip("lava.proc.io.injector")
    import torch
    from snn_compile.hw_sim.int_reference import run_token_time
    from snn_compile.hw_sim.random_graphs import random_decoder_qgraph
    from snn_compile.hw_sim.lava_runner import LavaSession
    from snn_compile.hw_sim.probes import activity_from_token_time, compare_activity

    q = random_decoder_qgraph(seed=0, vocab=8, d=8, heads=2, layers=1, T=3, context=8,
                              calib_tokens=8)
    tokens = [3, 1, 4, 1]
    ref = run_token_time(q, torch.tensor(tokens))
    want = activity_from_token_time(q, {k: v.numpy() for k, v in ref.outputs.items()})
    with LavaSession(q) as s:
        for i, k in enumerate(tokens):
            s.feed(k, i)
        got = s.activity()
    assert got.tokens == len(tokens) and got.window == q.window
    assert compare_activity(got, want) == []
    mem = next(n for n, p in q.populations.items() if p.kind == "accum")
    drain = got.part(mem, "events", "drain")
    assert drain.sum() > 0 and (got.events[mem] > got.part(mem, "events", "token")).any()
    reader = next(k for k, src in got.synapse_src.items() if src == mem and k != f"{mem}.self")
    assert got.part(reader, "synops", "drain").sum() > 0       # drain synops reach readers
    # a single changed message is caught, with its place
    got.step_sent[reader][1, 0] += 1
    bad = compare_activity(got, want)
    assert len(bad) == 1 and f"sent of {reader}" in bad[0] and "token 1 window step 0" in bad[0]


def test_bench_stops_when_backend_counts_differ(monkeypatch):
    """The harness compares the backend's every-step counts with the reference's."""
    from snn_compile.benchmarks.harness import run_benchmark
    from snn_compile.hw_sim import emulator

    orig = emulator.EmulatorBackend.activity

    def tampered(self):
        act = orig(self)
        k = next(iter(act.step_synops))
        act.step_synops[k][0, -1] += 1
        return act
    monkeypatch.setattr(emulator.EmulatorBackend, "activity", tampered)
    with pytest.raises(measure.SpikeMismatchError, match="synops of"):
        run_benchmark("default:spikedecoder", None, backend="emulator", tokens=2,
                      val_loss={"spikedecoder": 0.0})


def test_bench_views_on_the_shipped_default(tmp_path):
    """Every view, ordered ranges, chip time, headroom, CSV and the raster, on 6 tokens."""
    from snn_compile.benchmarks.harness import run_benchmark

    out = tmp_path / "b"
    r = run_benchmark("default:spikedecoder", "default:ann", backend="emulator", tokens=6,
                      val_loss={"spikedecoder": 1.0, "ann": 1.0}, out_dir=str(out))
    e = r["energy_per_token_pj"]
    assert set(e["spikedecoder"]) >= {"theoretical_45nm", "equal_precision_45nm",
                                      "executed_45nm", "loihi_low", "loihi_estimate",
                                      "loihi_high", "loihi_prefill_low", "loihi_prefill_high"}
    assert set(e["ann"]) >= {"theoretical_45nm", "equal_precision_45nm"}
    s = e["spikedecoder"]
    assert s["loihi_low"] < s["loihi_estimate"] < s["loihi_high"]
    assert s["loihi_prefill_low"] < s["loihi_low"] and s["loihi_prefill_high"] < s["loihi_high"]
    assert r["counts_match_reference_every_step"] and r["spikes_match_reference"]
    for mode in ("generation", "prefill"):
        lo, hi = r["chip_time_per_token_s"][mode]
        assert 0 < lo < hi
    assert r["chip_time_per_token_s"]["prefill"][1] < r["chip_time_per_token_s"]["generation"][1]
    lif = {n for n, h in r["headroom"].items() if h["kind"] == "lif"}
    dh = r["dendrite_headroom"]
    assert set(dh) == lif and all(0 <= v < 1 for v in dh.values()) and max(dh.values()) > 0.1
    # equal precision: int8 MACs and integer adds, well below the fp32 view
    assert s["equal_precision_45nm"] < s["theoretical_45nm"]
    assert r["reduction_pct_equal_precision"] < r["reduction_pct"]
    # drain steps are counted: the memory sends at all W steps
    assert r["ops_per_token"]["measured_drain"]["messages"] > 0
    swings = [x["swing_pct"] for x in r["sensitivity"] if "swing_pct" in x]
    assert swings == sorted(swings, reverse=True) and swings[0] > 0
    assert r["text_loss"]["tokens_predicted"] == 6 and r["text_loss"]["ann"] > 0
    files = set(os.listdir(out))
    assert {"report.md", "results.json", "per_layer.csv", "raster.png",
            "energy_views.png"} <= files
    saved = json.loads((out / "results.json").read_text())
    assert "_raster" not in saved and saved["energy_per_token_pj"] == json.loads(
        json.dumps(r["energy_per_token_pj"]))
    csv = (out / "per_layer.csv").read_text().splitlines()
    assert csv[0].startswith("layer,snn:theoretical_45nm")
    assert any(line.startswith("block0,") for line in csv)


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
    assert "| spikedecoder | `theoretical_45nm` | 0.01 |" in (out / "report.md").read_text()
    assert (out / "per_layer.csv").read_text().splitlines()[1] == "emb,0.001,0.002"
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
    r["energy_per_token_pj"] = {"spikedecoder": {"theoretical_45nm": 10.0, "loihi_low": 50.0,
                                                 "loihi_high": 500.0},
                                "ann": {"theoretical_45nm": 100.0}}
    plots.energy_views(r, str(tmp_path / "f.png"))
    g = tiny_graph()
    frames = {n: np.zeros((g.window, p.size)) for n, p in g.populations.items()}
    frames["a"][1, 0] = frames["m"][3, 0] = 1
    plots.window_raster({"frames": frames, "order": g.order(), "window": g.window,
                         "steps_per_token": 2, "depth": {n: p.depth for n, p in
                                                          g.populations.items()},
                         "kind": {n: p.kind for n, p in g.populations.items()}},
                        str(tmp_path / "g.png"))
    for f in "abcdefg":
        assert (tmp_path / f"{f}.png").read_bytes()[:4] == b"\x89PNG"


def test_energy_vs_loss_labels_are_distinct():
    from snn_compile.benchmarks.plots import distinct_labels
    assert distinct_labels(["a", "a", "b", "a"], ["lr 1e-3", "lr 2e-3", "", "lr 1e-3"]) == \
        ["a, lr 1e-3 #1", "a, lr 2e-3", "b", "a, lr 1e-3 #2"]
    assert distinct_labels(["x", "x"]) == ["x #1", "x #2"]


def test_train_speed_times_both_models_in_one_run():
    from snn_compile.benchmarks.train_speed import run

    r = run("cpu", steps=1, warmup=1, rounds=2, batch_size=2, context=16, flops=True)
    assert set(r["tokens_per_s"]) == {"spikedecoder", "ann"}
    fl = r["flops_per_step"]
    # T = 4 steps per token: the SpikeDecoder's products have 4 x the twin's rows
    assert fl["ann"] > 0 and fl["spikedecoder"] > 4 * fl["ann"]
    assert r["flops_snn_over_ann"] == fl["spikedecoder"] / fl["ann"]
    assert all(len(v) == 2 and min(v) > 0 for v in r["all_rounds_tokens_per_s"].values())
    assert r["snn_cost_over_ann"] == r["tokens_per_s"]["ann"] / r["tokens_per_s"]["spikedecoder"]
    assert "profile" not in r


def test_train_speed_profile_sums_each_models_step_by_family(capsys):
    """``--profile``: one more step of each model under the profiler; the families add up
    to each total, the SpikeDecoder's LIF arithmetic shows as elementwise work."""
    from snn_compile.benchmarks.train_speed import main, run

    r = run("cpu", steps=1, warmup=1, rounds=1, batch_size=2, context=16, profile=True)
    assert set(r["profile"]) == {"spikedecoder", "ann"}
    for pr in r["profile"].values():
        fams = pr["families"]
        assert pr["time"] == "cpu" and pr["total_ms"] > 0
        assert abs(sum(f["ms"] for f in fams.values()) - pr["total_ms"]) < 1e-6 * pr["total_ms"]
        assert fams["matmul"]["ms"] > 0
    assert r["profile"]["spikedecoder"]["families"]["elementwise"]["ms"] > 0
    assert r["profile_snn_over_ann"] == (r["profile"]["spikedecoder"]["total_ms"]
                                         / r["profile"]["ann"]["total_ms"])
    assert main(["--steps", "1", "--rounds", "1", "--warmup", "1", "--batch-size", "2",
                 "--context", "16", "--profile"]) == 0
    out = capsys.readouterr().out
    assert "one step of spikedecoder" in out and "one step of ann" in out
    from snn_compile.benchmarks.profiling import is_annotation
    assert is_annotation("Optimizer.step#AdamW.step") and is_annotation("ProfilerStep#2")
    assert not is_annotation("void at::native::elementwise_kernel<128, 2, "
                             "at::native::gpu_kernel_impl<{lambda()#1}>>")


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


def test_float_vs_integer_agreement_counts():
    from snn_compile.benchmarks.agreement import _windows, measure
    ids = np.arange(12)
    w = list(_windows(ids, 5, 2))
    assert [x.tolist() for x, _ in w] == [[[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]], [[10]]]
    assert [y.tolist() for _, y in w] == [[[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]], [[11]]]
    r = measure("default:spikedecoder", max_tokens=8)
    lif = sum(v["decisions"] for v in r["per_population"].values())
    assert r["greedy_positions"] == 8 and 0 <= r["greedy_agree"] <= 8
    assert r["spike_decisions"] == lif and lif % (8 * 4) == 0
    assert 0 <= r["spikes_differ"] < r["spike_decisions"]
