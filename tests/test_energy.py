"""Energy constants and operation counts on small hand-computed cases."""

import numpy as np
import pytest

from snn_compile.benchmarks import energy, theory

from _bench_helpers import hand_spikes as _spikes


def test_constants_have_sources_and_values():
    table = energy.constants_table()
    names = {c["name"] for c in table}
    assert {"E_MAC", "E_AC", "E_SYNOP", "E_NEURON_ACTIVE", "E_NEURON_IDLE", "E_SPIKE_TILE",
            "E_TILE_HOP"} <= names
    by = {c["name"]: c for c in table}
    for c in table:
        assert c["value"] > 0 and c["unit"] in ("pJ", "ns", "mW")
        assert c["covers"] and c["basis"] in ("published row", "derived from rows", "estimate",
                                              "simulator parameter", "derived from a measurement")
        # every published row names its table and row
        if c["basis"] == "published row":
            assert ("Horowitz" in c["source"] and "Fig. 1.1.9" in c["source"]) or \
                ("Davies" in c["source"] and "Table 2" in c["source"] and "row '" in c["source"])
    # 45 nm fp32: MAC = mult 3.7 + add 0.9 (Horowitz 2014)
    assert energy.E_MAC_PJ == pytest.approx(3.7 + 0.9)
    assert energy.E_AC_PJ == 0.9
    assert energy.E_TILE_HOP_PJ == pytest.approx(3.5)
    # equal precision: int8 multiply 0.2 + 32-bit add 0.1; SNN accumulate = 32-bit add
    assert energy.E_MAC_INT8_PJ == pytest.approx(0.3) and energy.E_AC_INT_PJ == 0.1
    assert energy.E_MULT_24X8_PJ == pytest.approx(3 * 0.2)
    assert by["E_MULT_24x8"]["basis"] == "estimate"
    assert by["E_SYNOP_HIGH"]["value"] > by["E_SYNOP"]["value"]
    assert by["P_STATIC_CHIP"]["value"] == pytest.approx(3340 / 32)
    assert any("No per-operation energy of Loihi 2" in c for c in energy.CAVEATS)


def test_loihi_prices_bracket_the_central_estimate():
    c = energy.LoihiCounts(synops=100, messages=20, active_updates=30, idle_updates=500)
    lo = energy.loihi_energy_pj(c, prices=energy.loihi_low_prices())["total"]
    mid = energy.loihi_energy_pj(c, mean_hops=1.0)["total"]
    hi = energy.loihi_energy_pj(c, prices=energy.loihi_high_prices(2.0))["total"]
    assert lo < mid < hi
    assert hi == pytest.approx(100 * 35.5 + 530 * 81 + 20 * (1.7 + 2 * 4.0))
    assert lo == pytest.approx(100 * 23.6 + 30 * 81 + 500 * 52 + 20 * 1.7)
    # random placement on a k x k tile mesh: 2 (k^2 - 1) / (3 k) hops
    assert energy.random_placement_hops(4) == 0.0              # one tile
    assert energy.random_placement_hops(20) == pytest.approx(2 * 8 / 9)   # 5 tiles -> 3 x 3
    e = energy.executed_energy_pj(energy.ExecutedCounts(10, 5, 2))
    assert e["total"] == pytest.approx(10 * 0.1 + 5 * 0.7 + 2 * 3.1)


def test_equal_precision_view_of_op_rows():
    rows = theory.snn_op_rows(SHAPE, _spikes())
    acs = sum(r.mean for r in rows if r.kind == "ac")
    macs = sum(r.mean for r in rows if r.kind == "mac")
    e = theory.per_token_energy(rows, view="equal_precision_45nm", side="snn")
    assert e[0] == pytest.approx(acs * 0.1 + macs * 0.7)
    ann = theory.ann_op_rows(SHAPE, [0])
    a = theory.per_token_energy(ann, view="equal_precision_45nm", side="ann")
    amacs = sum(r.mean for r in ann if r.kind == "mac")
    aacs = sum(r.mean for r in ann if r.kind == "ac")
    assert a[0] == pytest.approx(amacs * 0.3 + aacs * 0.1)
    assert theory.attention_form(rows) == "quadratic"
    t = {(x["layer"], x["op"]): x for x in theory.table(rows)}
    assert t[("block0", "qk")]["form"] == "quadratic" and t[("block0", "qkv")]["form"] == ""


def test_formulas():
    assert energy.e_ann_pj(1000) == pytest.approx(4600.0)
    assert energy.e_snn_pj(1000, 10) == pytest.approx(900.0 + 46.0)
    assert energy.reduction_pct(10.0, 100.0) == pytest.approx(90.0)
    c = energy.LoihiCounts(synops=10, messages=2, active_updates=3, idle_updates=5)
    e = energy.loihi_energy_pj(c, mean_hops=1.0)
    assert e["synops"] == pytest.approx(236.0)
    assert e["neuron_updates"] == pytest.approx(3 * 81 + 5 * 52)
    assert e["routing"] == pytest.approx(2 * (1.7 + 3.5))
    assert e["total"] == pytest.approx(236.0 + 503.0 + 10.4)


SHAPE = theory.ModelShape(vocab=5, d_model=2, n_layers=1, n_heads=1, d_ff=4, steps_per_token=2)


def test_snn_sops_hand_computed():
    rows = theory.snn_op_rows(SHAPE, _spikes())
    got = {(r.layer, r.op): r.mean for r in rows}
    d, T, V, dff = 2, 2, 5, 4
    assert got[("emb", "input")] == 2 * d * T                 # 8
    assert got[("block0", "qkv")] == 1 * 3 * d               # 1 emb spike x fan-out 6
    assert got[("block0", "qk")] == 2 * 1 + 1 * 2            # nnz(q[p]) x (p+1): p=0,1
    assert got[("block0", "sv")] == 1 + (1 + 2)              # cumulative nnz(v)
    assert got[("block0", "proj")] == 1 * d
    assert got[("block0", "skip1")] == 1
    assert got[("block0", "ff1")] == 2 * dff
    assert got[("block0", "ff2")] == 3 * d
    assert got[("block0", "skip2")] == 2
    assert got[("head", "head")] == 2 * V
    s = theory.counts_summary(rows)
    acs = 8 + 6 + 4 + 4 + 2 + 1 + 8 + 6 + 2 + 10
    assert s["acs"] == acs
    assert s["macs"] == d * T + V                             # attention scale + head scale
    e = theory.per_token_energy(rows)
    assert e[0] == pytest.approx(acs * 0.9 + (d * T + V) * 4.6)


def test_snn_attention_counts_depend_on_position():
    r0 = {(r.layer, r.op): r.mean for r in theory.snn_op_rows(SHAPE, _spikes(), 0)}
    r3 = {(r.layer, r.op): r.mean for r in theory.snn_op_rows(SHAPE, _spikes(), 3)}
    # at token position 3 the steps are p = 6, 7: q meets 7 and 8 keys
    assert r3[("block0", "qk")] == 2 * 7 + 1 * 8
    assert r0[("block0", "qkv")] == r3[("block0", "qkv")]


def test_ann_macs_hand_computed():
    shape = theory.ModelShape(vocab=10, d_model=4, n_layers=2, n_heads=2, d_ff=16)
    rows = theory.ann_op_rows(shape, positions=[0, 5])
    macs = {(r.layer, r.op): r.per_token for r in rows if r.kind == "mac"}
    d, dff, V = 4, 16, 10
    per_block = np.array([3 * d * d + 2 * 1 * d + d * d + 2 * d * dff,
                          3 * d * d + 2 * 6 * d + d * d + 2 * d * dff])
    total = sum(v for v in macs.values())
    np.testing.assert_array_equal(total, 2 * per_block + d * V)
    np.testing.assert_array_equal(macs[("block1", "scores")], [4, 24])


def test_reduction_against_ann():
    shape = theory.ModelShape(vocab=5, d_model=2, n_layers=1, n_heads=1, d_ff=4,
                              steps_per_token=2)
    e_snn = theory.per_token_energy(theory.snn_op_rows(shape, _spikes()))[0]
    e_ann = theory.per_token_energy(theory.ann_op_rows(shape, [0]))[0]
    assert energy.reduction_pct(e_snn, e_ann) == pytest.approx(100 * (1 - e_snn / e_ann))


def test_spike_shape_is_checked():
    s = _spikes()
    s["block0.ff"] = np.zeros((1, 2, 3))
    with pytest.raises(ValueError, match="block0.ff"):
        theory.snn_op_rows(SHAPE, s)
    del s["block0.ff"]
    with pytest.raises(KeyError):
        theory.snn_op_rows(SHAPE, s)
