"""Energy constants, each defined once with its source, and the formulas of every view.

Views, always from the same run and always named for what they are
(DESIGN.md, "Energy accounting"; docs/energy.md):

1. ``theoretical_45nm`` -- the spiking-transformer literature's method (Spikformer,
   Zhou et al., ICLR 2023; SpikeDecoder, Beger, Walter & Knoll, arXiv:2606.12287):
   ``E_ANN = MACs x E_MAC``, ``E_SNN = ACs x E_AC + MACs x E_MAC``, 32-bit float in
   45 nm (Horowitz 2014), spikes of the float torch model.
2. ``equal_precision_45nm`` -- the same operation counts at the widths deployed, 45 nm
   integer rows: an ANN int8 MAC (8-bit multiply, 32-bit accumulate) against an SNN
   accumulate into a wide integer (a 32-bit add bounds the 16-bit dendrite and the
   24-bit state from above); a product of a graded (24-bit) value by an 8-bit weight
   is a 24 x 8-bit multiply (estimated) + add.
3. ``executed_45nm`` -- the operations the lowered graph executes (counted on the
   backend at every window step, attention in its linear, streamed form): binary
   synops x 32-bit add, graded synops x (24 x 8-bit multiply + add), non-zero
   ProdNeuron products x 32-bit multiply (Lava's ProdNeuron multiplies in int32).
4. ``loihi_low`` / ``loihi_high`` -- counts of (3) plus neuron updates and routing,
   priced with Loihi 1's pre-silicon per-operation table (Davies et al. 2018,
   Table 2), low and high from the spread of the cited figures, plus static
   power over a chip-time bound (``chip_time``). No per-operation energy of
   Loihi 2 has been published.

Every constant is a ``Constant`` in ``CONSTANTS`` (value, unit, source with table
and row, what it covers, and whether it is a published row, derived from rows, or
an estimate), copied into every ``results.json``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict, List, Mapping, Optional

# ------------------------------------------------------ 45 nm (Horowitz 2014)
HOROWITZ = ("M. Horowitz, 'Computing's energy problem (and what we can do about it)', "
            "ISSCC 2014, Fig. 1.1.9 (rough energy costs, 45 nm, 0.9 V)")
H_INT8_ADD_PJ = 0.03        # row "Integer: Add, 8 bit"
H_INT32_ADD_PJ = 0.1        # row "Integer: Add, 32 bit"
H_INT8_MULT_PJ = 0.2        # row "Integer: Mult, 8 bit"
H_INT32_MULT_PJ = 3.1       # row "Integer: Mult, 32 bit"
H_FP32_ADD_PJ = 0.9         # row "FP: FAdd, 32 bit"
H_FP32_MULT_PJ = 3.7        # row "FP: FMult, 32 bit"

# view 1: the literature's fp32 figures
E_MAC_PJ = H_FP32_MULT_PJ + H_FP32_ADD_PJ      # 4.6 pJ: fp32 multiply-accumulate
E_AC_PJ = H_FP32_ADD_PJ                        # 0.9 pJ: fp32 accumulate

# views 2 and 3: integer widths as deployed
E_MAC_INT8_PJ = H_INT8_MULT_PJ + H_INT32_ADD_PJ   # 0.3 pJ: int8 x int8, 32-bit accumulator
E_MAC_INT8_ADD8_PJ = H_INT8_MULT_PJ + H_INT8_ADD_PJ   # 0.23 pJ: the same with an 8-bit add
E_AC_INT_PJ = H_INT32_ADD_PJ                   # 0.1 pJ: 8-bit weight into a 16/24-bit sum
# A 24 x 8-bit multiplier: array-multiplier energy grows with the product of the operand
# widths; Horowitz's rows follow that (3.1 / 0.2 = 15.5 for 1024 / 64 = 16 bit pairs), so
# 24 x 8 = 192 bit pairs ~ 3 x the 8-bit row. An estimate, not a row (sensitivity: 0.2-3.1).
GRADED_PAYLOAD_BITS = 24
E_MULT_24X8_PJ = H_INT8_MULT_PJ * (GRADED_PAYLOAD_BITS * 8) / (8 * 8)   # 0.6 pJ
E_GRADED_MAC_PJ = E_MULT_24X8_PJ + H_INT32_ADD_PJ                       # 0.7 pJ
E_PRODUCT_PJ = H_INT32_MULT_PJ                 # ProdNeuron: a1 * a2 in int32 (Lava)

# ------------------------------------------------------- Loihi 1 (14 nm), Table 2
DAVIES = ("M. Davies et al., 'Loihi: A Neuromorphic Manycore Processor with On-Chip "
          "Learning', IEEE Micro 38(1):82-99, 2018, Table 2 ('Loihi pre-silicon performance "
          "and energy measurements', value at 0.75 V)")
E_SYNOP_PJ = 23.6           # row "Energy per synaptic spike op (min)"
E_SYN_UPDATE_PJ = 120.0     # row "Energy per synaptic update (pairwise STDP)": learning, unused
E_NEURON_ACTIVE_PJ = 81.0   # row "Energy per neuron update (active / inactive)": 81 / 52 pJ
E_NEURON_IDLE_PJ = 52.0
E_SPIKE_TILE_PJ = 1.7       # row "Within-tile spike energy"
E_TILE_HOP_EW_PJ = 3.0      # row "Energy per tile hop (E-W / N-S)": 3.0 / 4.0 pJ
E_TILE_HOP_NS_PJ = 4.0
E_TILE_HOP_PJ = 0.5 * (E_TILE_HOP_EW_PJ + E_TILE_HOP_NS_PJ)   # 3.5 pJ: mean of the two axes
T_SYNOP_MAX_NS = 3.5        # row "Time per synaptic spike op (max)"
T_NEURON_ACTIVE_NS = 8.4    # row "Time per neuron update (active / inactive)": 8.4 / 5.3 ns
T_NEURON_IDLE_NS = 5.3
T_BARRIER_MIN_NS = 113.0    # row "Mesh-wide barrier sync time (1-32 tiles)": 113-465 ns
T_BARRIER_MAX_NS = 465.0
DEFAULT_MEAN_HOPS = 1.0     # assumption of the central estimate (no placement onto tiles)
CORES_PER_TILE = 4          # Loihi 1: 128 cores over the 32 tiles of Table 2's barrier row

# Table 2 gives the synaptic-op energy as a minimum only. The high end takes the
# dense-synapse figure of SANA-FE's Loihi model, a simulator parameter above that minimum
# (not a row of Davies et al.).
SANAFE = ("SANA-FE (J. A. Boyle et al.), Loihi architecture file arch/loihi.yaml, "
          "core_synapses energy_spike (github.com/SLAM-Lab/SANA-FE, commit 0d49da8)")
E_SYNOP_HIGH_PJ = 35.5

# Static power: measured on Loihi 1 boards (unknown voltage), not Table 2's 0.75 V point.
FRADY = ("E. P. Frady et al., 'Neuromorphic Nearest-Neighbor Search Using Intel's Pohoiki "
         "Springs', NICE 2020 (arXiv:2004.12691), Table 1: static power 3.34 W for a "
         "32-chip board")
P_STATIC_CHIP_W = 3.34 / 32                    # 104 mW per Loihi 1 chip
P_STATIC_CORE_W = P_STATIC_CHIP_W / 128        # 0.82 mW per core: all leakage put in cores

# The SpikeDecoder paper's headline: "reduces the theoretical energy consumption by 87%
# to 93% compared to the ANN baseline" (Beger, Walter & Knoll, arXiv:2606.12287, abstract).
PAPER_REDUCTION_PCT = (87.0, 93.0)


@dataclass(frozen=True)
class Constant:
    name: str
    value: float
    unit: str
    source: str
    covers: str
    basis: str = "published row"     # or "derived from rows", "estimate", "assumption"


CONSTANTS: List[Constant] = [
    Constant("E_MAC", E_MAC_PJ, "pJ", HOROWITZ + ", FMult 32 bit 3.7 + FAdd 32 bit 0.9",
             "fp32 multiply-accumulate (view theoretical_45nm)", "derived from rows"),
    Constant("E_AC", E_AC_PJ, "pJ", HOROWITZ + ", FAdd 32 bit",
             "fp32 accumulate: a synaptic op driven by a binary spike (theoretical_45nm)"),
    Constant("E_MAC_INT8", E_MAC_INT8_PJ, "pJ", HOROWITZ + ", Mult 8 bit 0.2 + Add 32 bit 0.1",
             "ANN int8 MAC with a 32-bit accumulator (equal_precision_45nm)",
             "derived from rows"),
    Constant("E_MAC_INT8_ADD8", E_MAC_INT8_ADD8_PJ, "pJ",
             HOROWITZ + ", Mult 8 bit 0.2 + Add 8 bit 0.03",
             "ANN int8 MAC with an 8-bit add (sensitivity only: real int8 inference "
             "accumulates in 32 bits)", "derived from rows"),
    Constant("E_AC_INT", E_AC_INT_PJ, "pJ", HOROWITZ + ", Add 32 bit",
             "SNN accumulate of an 8-bit weight into the 16-bit dendrite / 24-bit state "
             "(no 16/24-bit row: the 32-bit one bounds them from above)"),
    Constant("E_ADD_INT8", H_INT8_ADD_PJ, "pJ", HOROWITZ + ", Add 8 bit",
             "low end of the SNN accumulate (sensitivity)"),
    Constant("E_MULT_24x8", E_MULT_24X8_PJ, "pJ",
             HOROWITZ + ", Mult 8 bit 0.2 pJ x (24*8)/(8*8) operand-bit pairs",
             "24-bit graded payload x 8-bit weight (equal_precision_45nm, executed_45nm)",
             "estimate"),
    Constant("E_GRADED_MAC", E_GRADED_MAC_PJ, "pJ", "E_MULT_24x8 + " + HOROWITZ + ", Add 32 bit",
             "one graded synop (payload x weight, accumulated)", "estimate"),
    Constant("E_PRODUCT", E_PRODUCT_PJ, "pJ", HOROWITZ + ", Mult 32 bit",
             "one non-zero ProdNeuron product (Lava multiplies in int32; executed_45nm)"),
    Constant("E_SYNOP", E_SYNOP_PJ, "pJ", DAVIES + ", row 'Energy per synaptic spike op (min)'",
             "one message at one non-zero synapse (binary; graded costed the same: no "
             "published graded figure); low end and central estimate"),
    Constant("E_SYNOP_HIGH", E_SYNOP_HIGH_PJ, "pJ", SANAFE,
             "high end of the synaptic op (Table 2 publishes only a minimum)",
             "simulator parameter"),
    Constant("E_NEURON_ACTIVE", E_NEURON_ACTIVE_PJ, "pJ",
             DAVIES + ", row 'Energy per neuron update (active / inactive)' 81 / 52 pJ",
             "neuron-step with a spike / non-zero output; every neuron-step in loihi_high"),
    Constant("E_NEURON_IDLE", E_NEURON_IDLE_PJ, "pJ",
             DAVIES + ", row 'Energy per neuron update (active / inactive)' 81 / 52 pJ",
             "neuron-step without output (loihi_low, central)"),
    Constant("E_SPIKE_TILE", E_SPIKE_TILE_PJ, "pJ", DAVIES + ", row 'Within-tile spike energy'",
             "routing one message inside a tile"),
    Constant("E_TILE_HOP_EW", E_TILE_HOP_EW_PJ, "pJ",
             DAVIES + ", row 'Energy per tile hop (E-W / N-S)' 3.0 / 4.0 pJ",
             "one message crossing one tile east-west"),
    Constant("E_TILE_HOP_NS", E_TILE_HOP_NS_PJ, "pJ",
             DAVIES + ", row 'Energy per tile hop (E-W / N-S)' 3.0 / 4.0 pJ",
             "one message crossing one tile north-south (loihi_high)"),
    Constant("E_TILE_HOP", E_TILE_HOP_PJ, "pJ", "mean of E_TILE_HOP_EW and E_TILE_HOP_NS",
             "one tile hop in the central estimate (x --mean-hops)", "derived from rows"),
    Constant("T_SYNOP_MAX", T_SYNOP_MAX_NS, "ns", DAVIES + ", row 'Time per synaptic spike op (max)'",
             "chip-time high bound: per synop on its core"),
    Constant("T_NEURON_ACTIVE", T_NEURON_ACTIVE_NS, "ns",
             DAVIES + ", row 'Time per neuron update (active / inactive)' 8.4 / 5.3 ns",
             "chip time per active neuron update"),
    Constant("T_NEURON_IDLE", T_NEURON_IDLE_NS, "ns",
             DAVIES + ", row 'Time per neuron update (active / inactive)' 8.4 / 5.3 ns",
             "chip time per idle neuron update (low bound)"),
    Constant("T_BARRIER_MIN", T_BARRIER_MIN_NS, "ns",
             DAVIES + ", row 'Mesh-wide barrier sync time (1-32 tiles)' 113-465 ns",
             "end-of-step barrier, 1 tile (low bound)"),
    Constant("T_BARRIER_MAX", T_BARRIER_MAX_NS, "ns",
             DAVIES + ", row 'Mesh-wide barrier sync time (1-32 tiles)' 113-465 ns",
             "end-of-step barrier, 32 tiles (high bound)"),
    Constant("P_STATIC_CHIP", P_STATIC_CHIP_W * 1e3, "mW", FRADY + " / 32 chips",
             "static (leakage) power of one Loihi 1 chip (loihi_high: whole chips)",
             "derived from a measurement"),
    Constant("P_STATIC_CORE", P_STATIC_CORE_W * 1e3, "mW", "P_STATIC_CHIP / 128 cores",
             "static power per neurocore, all leakage in the cores (loihi_low: cores used)",
             "derived from a measurement"),
    Constant("E_SYN_UPDATE", E_SYN_UPDATE_PJ, "pJ",
             DAVIES + ", row 'Energy per synaptic update (pairwise STDP)'",
             "on-chip learning; listed for completeness, not used (inference only)"),
]

CAVEATS = [
    "Davies et al. 2018, Table 2 are pre-silicon figures of Loihi 1 (SDF and SPICE "
    "simulation, 'consistent with early post-silicon characterization') at 0.75 V; the graph "
    "is built for Loihi 2. No per-operation energy of Loihi 2 has been published (Orchard et "
    "al., IEEE SiPS 2021, and Shrestha et al., ICASSP 2024, report operation counts and "
    "whole-workload energy, not pJ per synaptic op).",
    "The synaptic-op energy of Table 2 is a minimum; no maximum is published. loihi_high "
    "takes a simulator's parameter (SANA-FE, 35.5 pJ), not a published bound.",
    "Graded messages (24-bit payloads) and their synaptic ops are costed as binary ones in "
    "the Loihi views; ProdNeuron/GradedVec/accumulator neurons are costed as LIF updates. "
    "Loihi 2 executes them as microcoded neurons whose cost is unpublished.",
    "Static power is a board measurement of Loihi 1 (Frady et al. 2020) at an unstated "
    "voltage, not Table 2's 0.75 V operating point.",
    "Chip time per token is a bound from per-op latencies (cores in parallel, one op after "
    "another inside a core, Loihi 1 times) and the mesh barrier; Loihi 2's per-op latencies "
    "are unpublished too.",
    "45 nm figures are Horowitz's 'rough energy costs' of the arithmetic alone (no memory "
    "access, no control), the literature's convention; the equal-precision view uses his "
    "integer rows, the 24 x 8-bit multiply is an estimate scaled from the 8-bit row.",
]


def constants_table() -> List[dict]:
    """The constants as plain dicts (for results.json and the report)."""
    return [asdict(c) for c in CONSTANTS]


def constant(name: str) -> Constant:
    return next(c for c in CONSTANTS if c.name == name)


# ------------------------------------------------------------------ formulas
def e_ann_pj(macs: float, extras: float = 0.0) -> float:
    """E_ANN = (MACs + extras) x E_MAC; extras are element-wise non-linear ops if counted."""
    return (macs + extras) * E_MAC_PJ


def e_snn_pj(acs: float, macs: float = 0.0) -> float:
    """E_SNN = ACs x E_AC + MACs x E_MAC (MACs of the parts that are not spike-driven)."""
    return acs * E_AC_PJ + macs * E_MAC_PJ


def reduction_pct(e_snn: float, e_ann: float) -> float:
    """100 (1 - E_SNN / E_ANN)."""
    if e_ann <= 0:
        raise ValueError("ANN energy must be positive")
    return 100.0 * (1.0 - e_snn / e_ann)


# Energy of one counted operation (theory.OpRow.kind) in the two 45 nm views of the
# literature's op counts; "extra" (softmax, LayerNorm, GELU elements) costs a MAC.
OP_ENERGY_PJ = {
    "theoretical_45nm": {"snn": {"ac": E_AC_PJ, "mac": E_MAC_PJ, "extra": E_MAC_PJ},
                         "ann": {"ac": E_AC_PJ, "mac": E_MAC_PJ, "extra": E_MAC_PJ}},
    # SNN "mac" rows multiply a wide integer (stream, memory, attention count) by an 8-bit
    # constant: a graded MAC; ANN MACs are int8 x int8 into 32 bits; adds are 32-bit
    "equal_precision_45nm": {"snn": {"ac": E_AC_INT_PJ, "mac": E_GRADED_MAC_PJ,
                                     "extra": E_MAC_INT8_PJ},
                             "ann": {"ac": E_AC_INT_PJ, "mac": E_MAC_INT8_PJ,
                                     "extra": E_MAC_INT8_PJ}},
}


@dataclass
class ExecutedCounts:
    """What the lowered graph executes (per token or summed), for ``executed_45nm``."""

    synops_binary: float = 0.0     # binary spike x non-zero synapse: an add
    synops_graded: float = 0.0     # graded payload x non-zero synapse: multiply + add
    products: float = 0.0          # non-zero ProdNeuron products

    def __add__(self, o: "ExecutedCounts") -> "ExecutedCounts":
        return ExecutedCounts(self.synops_binary + o.synops_binary,
                              self.synops_graded + o.synops_graded, self.products + o.products)


def executed_energy_pj(c: ExecutedCounts, e_add: float = E_AC_INT_PJ,
                       e_graded: float = E_GRADED_MAC_PJ,
                       e_product: float = E_PRODUCT_PJ) -> Dict[str, float]:
    """executed_45nm: binary synops x E_AC_INT + graded synops x E_GRADED_MAC + products x
    E_PRODUCT (neuron updates are not arithmetic of the literature's views: Loihi view)."""
    out = {"synops_binary": c.synops_binary * e_add, "synops_graded": c.synops_graded * e_graded,
           "products": c.products * e_product}
    out["total"] = sum(out.values())
    return out


@dataclass
class LoihiCounts:
    """Operation counts of one run (or one token, one population) on the simulator."""

    synops: float = 0.0            # messages x non-zero fan-out
    messages: float = 0.0          # spikes / graded payloads x destination populations
    active_updates: float = 0.0    # neuron-steps with a spike / non-zero graded output
    idle_updates: float = 0.0      # neuron-steps without output

    def __add__(self, o: "LoihiCounts") -> "LoihiCounts":
        return LoihiCounts(self.synops + o.synops, self.messages + o.messages,
                           self.active_updates + o.active_updates,
                           self.idle_updates + o.idle_updates)


@dataclass(frozen=True)
class LoihiPrices:
    """One choice of the Loihi per-operation figures (pJ) and hops per message."""

    synop: float = E_SYNOP_PJ
    active: float = E_NEURON_ACTIVE_PJ
    idle: float = E_NEURON_IDLE_PJ
    tile: float = E_SPIKE_TILE_PJ
    hop: float = E_TILE_HOP_PJ
    hops: float = DEFAULT_MEAN_HOPS


LOIHI_CENTRAL = LoihiPrices()


def loihi_low_prices() -> LoihiPrices:
    """Low end: minimum synop, inactive updates where nothing is sent, no tile hop."""
    return LoihiPrices(E_SYNOP_PJ, E_NEURON_ACTIVE_PJ, E_NEURON_IDLE_PJ, E_SPIKE_TILE_PJ,
                       E_TILE_HOP_EW_PJ, 0.0)


def loihi_high_prices(hops: float) -> LoihiPrices:
    """High end: SANA-FE's synop, every update at the active figure, N-S hops."""
    return LoihiPrices(E_SYNOP_HIGH_PJ, E_NEURON_ACTIVE_PJ, E_NEURON_ACTIVE_PJ,
                       E_SPIKE_TILE_PJ, E_TILE_HOP_NS_PJ, hops)


def loihi_energy_pj(c: LoihiCounts, mean_hops: float = DEFAULT_MEAN_HOPS,
                    prices: Optional[LoihiPrices] = None) -> Dict[str, float]:
    """Dynamic Loihi energy split by operation; ``total`` is their sum::

        E = synops E_synop + active E_active + idle E_idle + messages (E_tile + hops E_hop)

    ``prices`` (default: the central estimate with ``mean_hops`` hops)."""
    p = prices or LoihiPrices(hops=mean_hops)
    out = {
        "synops": c.synops * p.synop,
        "neuron_updates": c.active_updates * p.active + c.idle_updates * p.idle,
        "routing": c.messages * (p.tile + p.hops * p.hop),
    }
    out["total"] = sum(out.values())
    return out


def random_placement_hops(cores: int, cores_per_tile: int = CORES_PER_TILE) -> float:
    """Mean tile hops between two tiles drawn at random from the smallest square mesh that
    holds ``cores``: on a k x k grid the mean Manhattan distance is 2 (k^2 - 1) / (3 k).
    A placement-free high estimate (a placer would do better)."""
    tiles = max(1, math.ceil(cores / cores_per_tile))
    k = math.ceil(math.sqrt(tiles))
    return 2.0 * (k * k - 1) / (3.0 * k)


def theoretical_energy_pj(counts: Mapping[str, float]) -> Dict[str, float]:
    """45 nm view of a count dict with keys ``acs`` and ``macs``."""
    acs, macs = float(counts.get("acs", 0.0)), float(counts.get("macs", 0.0))
    return {"acs": acs * E_AC_PJ, "macs": macs * E_MAC_PJ, "total": e_snn_pj(acs, macs)}
