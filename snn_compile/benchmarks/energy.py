"""Energy constants and the formulas that turn operation counts into picojoules.

Two views, always from the same run (DESIGN.md, "Energy accounting"):

* **theoretical, 45 nm** — the spiking-transformer literature's method
  (Spikformer, Zhou et al., ICLR 2023; SpikeDecoder, Beger, Walter & Knoll,
  arXiv:2606.12287): ``E_ANN = MACs x E_MAC``,
  ``E_SNN = ACs x E_AC + MACs x E_MAC`` (MACs of the parts that are not
  spike-driven). 32-bit float arithmetic in a 45 nm process (Horowitz 2014).
* **Loihi estimate** — operation counts measured on the simulator times a
  per-operation energy table of the Loihi chip (Davies et al., IEEE Micro 2018,
  Table 2):

      E_loihi = synops x E_SYNOP
              + active_updates x E_NEURON_ACTIVE + idle_updates x E_NEURON_IDLE
              + messages x (E_SPIKE_TILE + mean_hops x E_TILE_HOP)

  A *message* is one spike (or graded payload) sent from a population to one
  destination population; a *synop* is one message arriving at one non-zero
  synapse. Graded (integer) messages and their synaptic ops are costed as binary
  ones: Loihi 2 supports graded spikes (Orchard et al., 2021), but no
  per-operation energy of Loihi 2 (graded or binary) has been published, so the
  Loihi 1 figures stand in, a lower bound for 24-bit payloads.

Every constant lives in ``CONSTANTS`` with its unit, source and scope, so that
reports and ``results.json`` carry the citations with the numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Mapping

# ---------------------------------------------------------------- 45 nm, fp32
# Horowitz, "Computing's energy problem (and what we can do about it)",
# ISSCC 2014, energy table for 45 nm at 0.9 V: 32-bit float add 0.9 pJ,
# 32-bit float multiply 3.7 pJ; a multiply-accumulate = 3.7 + 0.9 = 4.6 pJ.
E_MAC_PJ = 4.6
E_AC_PJ = 0.9

# ------------------------------------------------------------ Loihi (14 nm)
# Davies et al., "Loihi: A Neuromorphic Manycore Processor with On-Chip
# Learning", IEEE Micro 38(1):82-99, 2018, Table 2 ("Loihi pre-silicon
# performance and energy measurements": SDF/SPICE simulation, stated to be
# consistent with early post-silicon characterisation).
E_SYNOP_PJ = 23.6           # "Energy per synaptic spike op (min)"
E_SYN_UPDATE_PJ = 120.0     # "Energy per synaptic update (pairwise STDP)" - learning only, unused
E_NEURON_ACTIVE_PJ = 81.0   # "Energy per neuron update (active / inactive): 81 pJ / 52 pJ"
E_NEURON_IDLE_PJ = 52.0     #   (same row, inactive)
E_SPIKE_TILE_PJ = 1.7       # "Within-tile spike energy"
E_TILE_HOP_EW_PJ = 3.0      # "Energy per tile hop (E-W / N-S): 3.0 pJ / 4.0 pJ"
E_TILE_HOP_NS_PJ = 4.0
E_TILE_HOP_PJ = 0.5 * (E_TILE_HOP_EW_PJ + E_TILE_HOP_NS_PJ)   # 3.5 pJ: mean of the two axes
DEFAULT_MEAN_HOPS = 1.0     # assumption: each message crosses one tile boundary (no placement yet)

# The SpikeDecoder paper's headline: "reduces the theoretical energy
# consumption by 87% to 93% compared to the ANN baseline" (Beger, Walter &
# Knoll, arXiv:2606.12287, abstract).
PAPER_REDUCTION_PCT = (87.0, 93.0)

HOROWITZ = ("M. Horowitz, 'Computing's energy problem (and what we can do about it)', "
            "ISSCC 2014, 45 nm / 0.9 V energy table")
DAVIES = ("M. Davies et al., 'Loihi: A Neuromorphic Manycore Processor with On-Chip Learning', "
          "IEEE Micro 38(1):82-99, 2018, Table 2")


@dataclass(frozen=True)
class Constant:
    name: str
    value: float
    unit: str
    source: str
    covers: str


CONSTANTS: List[Constant] = [
    Constant("E_MAC", E_MAC_PJ, "pJ", HOROWITZ + " (fp32 mult 3.7 pJ + add 0.9 pJ)",
             "one 32-bit float multiply-accumulate (ANN layers; SNN parts that are not spike-driven)"),
    Constant("E_AC", E_AC_PJ, "pJ", HOROWITZ + " (fp32 add)",
             "one 32-bit float accumulate: a synaptic op driven by a binary spike"),
    Constant("E_SYNOP", E_SYNOP_PJ, "pJ", DAVIES + ", 'Energy per synaptic spike op (min)'",
             "one message arriving at one non-zero synapse (binary; graded costed the same)"),
    Constant("E_NEURON_ACTIVE", E_NEURON_ACTIVE_PJ, "pJ",
             DAVIES + ", 'Energy per neuron update (active / inactive)'",
             "one neuron-timestep that emits a spike or non-zero graded output"),
    Constant("E_NEURON_IDLE", E_NEURON_IDLE_PJ, "pJ",
             DAVIES + ", 'Energy per neuron update (active / inactive)'",
             "one neuron-timestep without output"),
    Constant("E_SPIKE_TILE", E_SPIKE_TILE_PJ, "pJ", DAVIES + ", 'Within-tile spike energy'",
             "routing one message inside a tile"),
    Constant("E_TILE_HOP", E_TILE_HOP_PJ, "pJ",
             DAVIES + ", 'Energy per tile hop (E-W / N-S)' 3.0 / 4.0 pJ, mean of the two",
             "one message crossing one tile boundary (times DEFAULT_MEAN_HOPS)"),
    Constant("E_SYN_UPDATE", E_SYN_UPDATE_PJ, "pJ",
             DAVIES + ", 'Energy per synaptic update (pairwise STDP)'",
             "on-chip learning; listed for completeness, not used (inference only)"),
]


def constants_table() -> List[dict]:
    """The constants as plain dicts (for results.json and the report)."""
    return [asdict(c) for c in CONSTANTS]


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


def loihi_energy_pj(c: LoihiCounts, mean_hops: float = DEFAULT_MEAN_HOPS) -> Dict[str, float]:
    """Loihi estimate split by operation; ``total`` is their sum."""
    out = {
        "synops": c.synops * E_SYNOP_PJ,
        "neuron_updates": c.active_updates * E_NEURON_ACTIVE_PJ + c.idle_updates * E_NEURON_IDLE_PJ,
        "routing": c.messages * (E_SPIKE_TILE_PJ + mean_hops * E_TILE_HOP_PJ),
    }
    out["total"] = sum(out.values())
    return out


def theoretical_energy_pj(counts: Mapping[str, float]) -> Dict[str, float]:
    """45 nm view of a count dict with keys ``acs`` and ``macs``."""
    acs, macs = float(counts.get("acs", 0.0)), float(counts.get("macs", 0.0))
    return {"acs": acs * E_AC_PJ, "macs": macs * E_MAC_PJ, "total": e_snn_pj(acs, macs)}
