"""Which constant moves the result most: one-at-a-time swings of the energy views.

Each row moves one constant (or one modelling choice) from its low to its high value
with every other at the central choice, and reports the view's value at both ends;
``swing_pct = 100 |high - low| / central``. Rows are sorted by swing within a view.

Loihi, generation (per token, central = ``loihi_estimate``):
    E_SYNOP 23.6 -> 35.5 pJ; idle updates 52 -> 81 pJ; tile hops 0 -> the random-placement
    estimate; hop energy 3.0 -> 4.0 pJ; static energy (``static_energy_pj`` low -> high); the graded kinds' neuron updates (prod, graded, accum) 0 -> LIF cost
    (hypothetical low end: Loihi 2's microcoded neurons have no published cost);
    execution mode prefill (T steps per token) -> generation (T + depth).
Equal precision (the reduction vs the ANN twin, %):
    ANN MAC 0.23 (8-bit add) -> 0.3 pJ (32-bit accumulate); SNN accumulate 0.03 (8-bit add)
    -> 0.1 pJ (32-bit add); graded MAC 0.3 (8 x 8 multiply) -> 3.2 pJ (32 x 32).
"""

from __future__ import annotations

from typing import Dict, List, Sequence

from snn_compile.benchmarks import energy, measure
from snn_compile.compiler.qgraph import graded_kinds


def _loihi_total(counts, prices, steps="all", skip_kinds=()) -> float:
    tot = 0.0
    N = len(counts[0].outputs)
    for c in counts:
        lc = c.loihi(steps=steps)
        if c.kind in skip_kinds:
            lc = energy.LoihiCounts(lc.synops, lc.messages, 0.0, 0.0)
        tot += energy.loihi_energy_pj(lc, prices=prices)["total"]
    return tot / N


def _kind_counts(rows) -> Dict[str, float]:
    out = {"ac": 0.0, "mac": 0.0}
    for r in rows:
        if r.kind in out:
            out[r.kind] += r.mean
    return out


def table(counts: List[measure.PopulationCounts], snn_rows: Sequence, ann_rows: Sequence,
          static_pj: Dict[str, float], prefill_static_pj: float, mean_hops: float,
          high_hops: float) -> List[dict]:
    """The sensitivity rows (module docstring). ``static_pj``: {"low", "central", "high"}
    static energy per token in generation; ``prefill_static_pj`` the central one in prefill."""
    P = energy.LoihiPrices
    c0 = P(hops=mean_hops)
    central = _loihi_total(counts, c0) + static_pj["central"]
    rows = []

    def loihi_row(name, lo_val, hi_val, lo_e, hi_e, note=""):
        rows.append({"view": "loihi_estimate (generation)", "constant": name,
                     "low": lo_val, "high": hi_val, "result_low_pj": lo_e,
                     "result_high_pj": hi_e, "central_pj": central,
                     "swing_pct": 100.0 * abs(hi_e - lo_e) / central if central else 0.0,
                     "note": note})

    dyn = lambda p, **kw: _loihi_total(counts, p, **kw) + static_pj["central"]  # noqa: E731
    loihi_row("E_SYNOP (pJ)", energy.E_SYNOP_PJ, energy.E_SYNOP_HIGH_PJ,
              dyn(c0), dyn(P(synop=energy.E_SYNOP_HIGH_PJ, hops=mean_hops)),
              "Table 2 minimum -> SANA-FE's dense synapse")
    loihi_row("E_NEURON_IDLE (pJ)", energy.E_NEURON_IDLE_PJ, energy.E_NEURON_ACTIVE_PJ,
              dyn(c0), dyn(P(idle=energy.E_NEURON_ACTIVE_PJ, hops=mean_hops)),
              "idle neuron-steps at the inactive -> active figure")
    loihi_row("tile hops per message", 0.0, high_hops, dyn(P(hops=0.0)),
              dyn(P(hops=high_hops)), "within a tile -> random placement on the mesh")
    loihi_row("E_TILE_HOP (pJ)", energy.E_TILE_HOP_EW_PJ, energy.E_TILE_HOP_NS_PJ,
              dyn(P(hop=energy.E_TILE_HOP_EW_PJ, hops=mean_hops)),
              dyn(P(hop=energy.E_TILE_HOP_NS_PJ, hops=mean_hops)), "E-W -> N-S")
    d0 = _loihi_total(counts, c0)
    loihi_row("static energy (nJ/token)", static_pj["low"] / 1e3, static_pj["high"] / 1e3,
              d0 + static_pj["low"], d0 + static_pj["high"],
              "Loihi 1 cores x P_core x t_low -> chips x P_chip x t_high")
    loihi_row("graded-kind neuron updates", 0.0, 1.0,
              _loihi_total(counts, c0, skip_kinds=graded_kinds())
              + static_pj["central"], dyn(c0),
              "prod/graded/accum updates free (hypothetical) -> costed as LIF updates")
    loihi_row("steps per token", "T", "T + depth",
              _loihi_total(counts, c0, steps="token") + prefill_static_pj, dyn(c0),
              "prefill (T steps, pipelined) -> generation (T + depth)")

    # ---- equal precision: reduction vs the ANN twin
    s, a = _kind_counts(snn_rows), _kind_counts(ann_rows)

    def red(e_ac=energy.E_AC_INT_PJ, e_graded=energy.E_GRADED_MAC_PJ,
            e_mac_ann=energy.E_MAC_INT8_PJ):
        e_snn = s["ac"] * e_ac + s["mac"] * e_graded
        e_ann = a["ac"] * energy.E_AC_INT_PJ + a["mac"] * e_mac_ann
        return 100.0 * (1.0 - e_snn / e_ann) if e_ann > 0 else float("nan")

    r0 = red()
    eq = []

    def eq_row(name, lo_val, hi_val, lo_r, hi_r, note):
        eq.append({"view": "equal_precision_45nm (reduction %)", "constant": name,
                   "low": lo_val, "high": hi_val, "result_low_pct": lo_r,
                   "result_high_pct": hi_r, "central_pct": r0,
                   "swing_pct_points": abs(hi_r - lo_r), "note": note})

    eq_row("E_MAC_INT8, ANN (pJ)", energy.E_MAC_INT8_ADD8_PJ, energy.E_MAC_INT8_PJ,
           red(e_mac_ann=energy.E_MAC_INT8_ADD8_PJ), r0, "8-bit add -> 32-bit accumulate")
    eq_row("E_AC_INT, SNN (pJ)", energy.H_INT8_ADD_PJ, energy.E_AC_INT_PJ,
           red(e_ac=energy.H_INT8_ADD_PJ), r0, "8-bit add -> 32-bit add")
    lo_g = energy.H_INT8_MULT_PJ + energy.H_INT32_ADD_PJ
    hi_g = energy.H_INT32_MULT_PJ + energy.H_INT32_ADD_PJ
    eq_row("E_GRADED_MAC, SNN (pJ)", lo_g, hi_g, red(e_graded=lo_g), red(e_graded=hi_g),
           "8 x 8 -> 32 x 32 multiply (estimate 24 x 8: 0.7)")
    rows.sort(key=lambda r: -r["swing_pct"])
    eq.sort(key=lambda r: -r["swing_pct_points"])
    return rows + eq


def static_energy_pj(t_low_s, t_high_s, cores_low: int, cores: int,
                     chips: int) -> Dict[str, float]:
    """Static energy per token (pJ), each bound with the configuration its time assumes:
    low = cores_low (Loihi 1 cores of the time's low bound) x P_core x t_low; high = chips x
    P_chip x t_high (whole chips powered); central = the ``cores`` of the Loihi 2 partition x
    P_core x (t_low + t_high) / 2."""
    return {"low": cores_low * energy.P_STATIC_CORE_W * t_low_s * 1e12,
            "central": cores * energy.P_STATIC_CORE_W * 0.5 * (t_low_s + t_high_s) * 1e12,
            "high": max(chips, 1) * energy.P_STATIC_CHIP_W * t_high_s * 1e12}
