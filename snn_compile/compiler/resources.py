"""What a QGraph needs on Loihi 2: neurons, synapses, memory, neurocores, chips;
and whether every value stays inside Loihi 2's fixed-point ranges.

Published limits (the numbers the partition packs against):

* 128 neurocores per Loihi 2 chip, up to 1 M neurons and 120 M synapses per
  chip -- Intel Labs, "Taking Neuromorphic Computing to the Next Level with
  Loihi 2", Technology Brief (2021); Orchard et al., "Efficient Neuromorphic
  Signal Processing with Loihi 2", IEEE SiPS 2021.
* up to 8192 neurons per neurocore (1 M neurons / 128 cores; the same brief).
* 128 KB of flexibly partitioned synaptic SRAM per neurocore (the same brief).
* Loihi 1 for comparison: 128 cores, 1024 neurons per core, 128 K neurons and
  130 M synapses per chip -- Davies et al., "Loihi: A Neuromorphic Manycore
  Processor with On-Chip Learning", IEEE Micro 38(1), 2018.

Synaptic memory model (ours, stated so that it can be checked): a synapse
block of ``rows x cols`` weights placed on one core costs the cheaper of a
dense encoding, ``rows * cols * 8`` bits, and a sparse one,
``nnz * (8 + ceil(log2(rows)))`` bits (8-bit weight mantissa + the index of its
destination neuron); a ``DelayDense`` adds 6 delay bits per stored synapse
(Loihi 2's 0..63 delays). Shared exponents, sign modes and routing tables are
not counted. Inputs are injected by the host and use no neurocore.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from snn_compile.compiler.qgraph import (QGraph, QGraphError, Synapse, accum_decay_product_bound,
                                         accum_state_bound)
from snn_compile.errors import UserError
from snn_compile.loihi.fixed_point import ELEMENTWISE, I32, STATEFUL, LifParams, lif_step, shift
from snn_compile.loihi.limits import (CORES_PER_CHIP, DELAY_BITS, INPUT_BITS,  # noqa: F401
                                      NEURONS_PER_CHIP, NEURONS_PER_CORE, PROD_BITS, STATE_MAX,
                                      SYNAPSES_PER_CHIP, SYNAPTIC_BITS_PER_CORE, WEIGHT_BITS)

LOIHI1_NEURONS_PER_CORE = 1024    # Davies et al., IEEE Micro 2018


# --------------------------------------------------------------------- resources
def _syn_bits(w: np.ndarray, delayed: bool) -> int:
    """Bits to store the weight block ``w`` (rows = destination neurons on a core)."""
    rows, cols = w.shape
    nnz = int(np.count_nonzero(w))
    dense = rows * cols * (WEIGHT_BITS + (DELAY_BITS if delayed else 0))
    sparse = nnz * (WEIGHT_BITS + max(1, math.ceil(math.log2(max(rows, 2))))
                    + (DELAY_BITS if delayed else 0))
    return min(dense, sparse)


def _incoming(q: QGraph, name: str) -> List[Synapse]:
    """Incoming synapses, the ``accum`` self-loop (identity, graded) and a decaying
    accum's decay loop (``-diag(decay)``, graded) included."""
    syns = list(q.incoming(name))
    p = q.pop(name)
    if p.kind == "accum":
        syns.append(Synapse(name + ".loop", name, name, np.eye(p.size, dtype=np.int64),
                            graded=True))
    if p.decaying:
        syns.append(Synapse(name + ".decay", name, name,
                            -np.diag(np.asarray(p.decay, dtype=np.int64)),
                            weight_exp=-p.decay_exp, graded=True))
    return syns


@dataclass
class _Piece:
    population: str
    lo: int
    hi: int
    bits: int


def _split(q: QGraph, name: str) -> List[_Piece]:
    """Cut a population into the fewest equal row slices that each fit one core."""
    p = q.pop(name)
    syns = _incoming(q, name)
    total = sum(_syn_bits(s.weights, s.delay > 0) for s in syns)
    first = max(1, math.ceil(p.size / NEURONS_PER_CORE), math.ceil(total / SYNAPTIC_BITS_PER_CORE))
    for k in range(first, p.size + 1):
        bounds = np.linspace(0, p.size, k + 1).round().astype(int)
        pieces = []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            bits = sum(_syn_bits(s.weights[lo:hi], s.delay > 0) for s in syns)
            pieces.append(_Piece(name, int(lo), int(hi), int(bits)))
        if all(pc.hi - pc.lo <= NEURONS_PER_CORE and pc.bits <= SYNAPTIC_BITS_PER_CORE
               for pc in pieces):
            return pieces
    raise UserError(f"population {name}: one neuron's fan-in does not fit a neurocore's "
                    f"{SYNAPTIC_BITS_PER_CORE // 8192} KB of synaptic memory; make the "
                    "layer feeding it narrower or its weights sparser")


def resource_report(qgraph: QGraph) -> dict:
    """Neurons, synapses, fan-in/out, synaptic memory and a greedy core partition.

    Partition: every population is cut into the fewest row slices that fit one
    core (neurons <= 8192, synaptic bits <= 128 KB); the slices are then packed
    first-fit-decreasing by memory into cores, several small populations
    sharing a core. Chips = ceil(cores / 128).
    """
    q = qgraph
    pops: Dict[str, dict] = {}
    for name in q.order():
        p = q.pop(name)
        ins, outs = _incoming(q, name), q.outgoing(name)
        nnz_in = sum(int(np.count_nonzero(s.weights)) for s in ins)
        fan_in = np.zeros(p.size, dtype=np.int64)
        for s in ins:
            fan_in += np.count_nonzero(s.weights, axis=1)
        fan_out = np.zeros(p.size, dtype=np.int64)
        for s in outs:
            fan_out += np.count_nonzero(s.weights, axis=0)
        pops[name] = {
            "kind": p.kind, "layer": p.layer, "role": p.role, "neurons": p.size,
            "depth": p.depth, "synapses_in": nnz_in,
            "fan_in_max": int(fan_in.max(initial=0)),
            "fan_in_mean": float(fan_in.mean()) if p.size else 0.0,
            "fan_out_max": int(fan_out.max(initial=0)),
            "fan_out_mean": float(fan_out.mean()) if p.size else 0.0,
            "synaptic_bits": sum(_syn_bits(s.weights, s.delay > 0) for s in ins),
            "on_host": p.kind == "input",
        }

    pieces = [pc for name in q.order() if q.pop(name).kind != "input" for pc in _split(q, name)]
    pieces.sort(key=lambda pc: (-pc.bits, -(pc.hi - pc.lo)))
    cores: List[dict] = []
    for pc in pieces:
        n = pc.hi - pc.lo
        for c in cores:
            if c["neurons"] + n <= NEURONS_PER_CORE and c["bits"] + pc.bits <= SYNAPTIC_BITS_PER_CORE:
                break
        else:
            c = {"neurons": 0, "bits": 0, "slices": []}
            cores.append(c)
        c["neurons"] += n
        c["bits"] += pc.bits
        c["slices"].append({"population": pc.population, "neurons": [pc.lo, pc.hi],
                            "synaptic_bits": pc.bits})
    for i, c in enumerate(cores):
        c["core"] = i
        c["chip"] = i // CORES_PER_CHIP
    for name in pops:
        pops[name]["cores"] = sorted({c["core"] for c in cores for s in c["slices"]
                                      if s["population"] == name})

    n_cores = len(cores)
    return {
        "populations": pops,
        "totals": {
            "neurons": sum(v["neurons"] for v in pops.values() if not v["on_host"]),
            "input_neurons": sum(v["neurons"] for v in pops.values() if v["on_host"]),
            "synapses": sum(v["synapses_in"] for v in pops.values()),
            "synaptic_bits": sum(v["synaptic_bits"] for v in pops.values()),
            "neurocores": n_cores,
            "chips": max(1, math.ceil(n_cores / CORES_PER_CHIP)) if n_cores else 0,
        },
        "partition": cores,
        "limits": {
            "cores_per_chip": CORES_PER_CHIP, "neurons_per_core": NEURONS_PER_CORE,
            "synaptic_bits_per_core": SYNAPTIC_BITS_PER_CORE,
            "source": "Intel Labs, Loihi 2 Technology Brief (2021); Orchard et al., IEEE SiPS "
                      "2021; Loihi 1: Davies et al., IEEE Micro 2018",
            "memory_model": "min(rows*cols*8, nnz*(8+ceil(log2 rows))) bits per block, "
                            "+6 bits per synapse when delayed",
        },
    }


# ------------------------------------------------------------------ range report
def _outputs_of(activity: Any) -> Mapping[str, np.ndarray]:
    """Token-time outputs ``name -> (N, T, size)`` from a dict or an object holding one."""
    if isinstance(activity, Mapping):
        out = activity
    else:
        out = getattr(activity, "outputs", None)
        if not isinstance(out, Mapping):
            raise TypeError("range_report needs token-time outputs {population: (N, T, size)} "
                            "or an object with such an `outputs` dict")
    res = {}
    for k, v in out.items():
        a = np.asarray(v, dtype=np.int64)
        res[k] = a[None] if a.ndim == 2 else a
    return res


def range_report(qgraph: QGraph, activity_or_outputs: Any = None) -> Dict[str, dict]:
    """Per population: worst-case bounds against Loihi 2's ranges, and measured maxima.

    Bounds are propagated in depth order from the weights: a binary source
    contributes ``sum_j |W_ij|`` per step, a graded one ``sum_j |W_ij| * bound(src_j)``
    (then the ``weight_exp`` shift). ``a_in`` is checked against 16 bits (Dense
    output / LIF input), LIF ``u`` (wraps) and ``v`` (saturates) against 24 bits,
    graded payloads against 24 bits, ProdNeuron products against Lava's int32.
    The ``accum`` bound assumes ``context * T`` input steps (one per position); a
    decaying one is also bounded by ``ceil((a + 1) 2^decay_exp / min(decay))``
    (``qgraph.accum_state_bound``), and its decay loop's int32 product
    ``decay * |out|`` is checked against 2^31 (``decay_product_bound``; Lava's Dense
    would wrap it).
    With token-time outputs (``name -> (N, T, size)``, e.g. from
    ``run_token_time``) the same quantities are also measured exactly.
    """
    q = qgraph
    T = q.steps_per_token
    steps = max(q.context, 1) * T
    out_bound: Dict[str, int] = {}
    rep: Dict[str, dict] = {}
    for name in q.order():
        p = q.pop(name)
        if p.kind == "input":
            out_bound[name] = 1
            continue
        a_bound: Dict[str, int] = {}
        for s in q.incoming(name):
            row = np.abs(s.weights.astype(np.int64)) @ np.full(s.weights.shape[1], out_bound.get(s.src, 1),
                                                                dtype=np.int64)
            a_bound[s.port] = a_bound.get(s.port, 0) + int(shift(row, s.weight_exp).max(initial=0))
        a = max(a_bound.values(), default=0)
        limit = STATE_MAX - 1
        # LIF input comes through the 16-bit dendritic accumulator; graded kinds take 24 bits
        r = {"kind": p.kind, "a_in_bound": a,
             "a_in_limit": 2 ** (INPUT_BITS - 1) - 1 if p.kind == "lif" else limit}
        if p.kind == "lif":
            keep = (4096 - min(p.du + 1, 4096)) / 4096          # u decay factor per step
            u = a * 64 / (1 - keep) if keep < 1 else math.inf
            r.update(u_bound=u, v_bound=u + int(np.abs(p.bias()).max(initial=0)) + (p.vth << 6),
                     state_limit=limit)
            r["fits"] = a <= r["a_in_limit"] and u <= limit
            out_bound[name] = 1
        elif p.kind == "prod":
            prod = a_bound.get("a_in1", 0) * a_bound.get("a_in2", 0)
            r.update(product_bound=prod, out_bound=prod >> p.exp, state_limit=limit)
            r["fits"] = prod < 2 ** (PROD_BITS - 1) and (prod >> p.exp) <= limit
            out_bound[name] = prod >> p.exp
        elif p.kind in ELEMENTWISE or p.kind in STATEFUL:   # graded, or another rule's kind
            rule = ELEMENTWISE.get(p.kind) or STATEFUL[p.kind]
            ob = rule.bound([a_bound.get(port, 0) for port in p.ports])
            r.update(out_bound=ob, state_limit=limit)
            r["fits"] = ob is not None and ob <= limit
            out_bound[name] = I32 if ob is None else ob
        elif p.kind == "accum":
            ob = accum_state_bound(p, a, steps)
            r.update(out_bound=ob, steps_assumed=steps, state_limit=limit)
            r["fits"] = ob <= limit
            if p.decaying:
                r.update(decay_product_bound=accum_decay_product_bound(p, a, steps),
                         decay_product_limit=2 ** (PROD_BITS - 1) - 1)
                r["fits"] = r["fits"] and r["decay_product_bound"] <= r["decay_product_limit"]
            out_bound[name] = ob
        else:
            raise QGraphError(f"population {name}: kind {p.kind!r} has no range rule here "
                              "(other kinds are read from fixed_point.ELEMENTWISE and STATEFUL)")
        rep[name] = r

    if activity_or_outputs is not None:
        meas = measured_ranges(q, _outputs_of(activity_or_outputs))
        for name, r in rep.items():
            if name in meas:
                r.update(meas[name])
    return rep


def _synaptic_input(s: Synapse, x: np.ndarray) -> np.ndarray:
    """``shift(W @ x, weight_exp)`` of a synapse at every (n, t) of token-time source
    outputs ``x`` (N, T, src), exactly (float64 matmul while |sums| < 2^53, else int64);
    a token-shift synapse reads its source's token ``n - token_lag`` (zero before)."""
    w = s.weights.astype(np.int64)
    x = np.asarray(x, np.int64)
    if s.token_lag:
        lag = np.zeros_like(x)
        if s.token_lag < x.shape[0]:
            lag[s.token_lag:] = x[: x.shape[0] - s.token_lag]
        x = lag
    big = float(np.abs(w).sum(axis=1).max(initial=0)) * float(np.abs(x).max(initial=0))
    flat = x.reshape(-1, x.shape[-1])
    if big < 2.0 ** 53:
        wt = np.ascontiguousarray(w.T, dtype=np.float64)
        y = np.rint(flat.astype(np.float64) @ wt).astype(np.int64)
    else:
        y = flat @ w.T
    y = y.reshape(*x.shape[:-1], w.shape[0])
    return shift(y, s.weight_exp)


def measured_ranges(qgraph: QGraph, outs: Mapping[str, np.ndarray]) -> Dict[str, dict]:
    """Exact maxima of one run from its token-time outputs ``name -> (N, T, size)``:
    ``a_in_measured`` (largest |input| of any port, the 16-bit dendrite for a LIF), LIF
    ``u``/``v`` (24-bit state, recomputed step by step), graded payloads
    ``out_measured``, ProdNeuron products and a decaying memory's loop product; and
    ``fits_measured``. Drain steps add nothing: outside its token steps a streamable
    population's input is zero, except a memory's readers, which see a memory that
    only holds or shrinks."""
    q = qgraph
    T = q.steps_per_token
    limit = STATE_MAX - 1
    rep: Dict[str, dict] = {}
    for name in q.order():
        p = q.pop(name)
        if p.kind == "input":
            continue
        srcs = list(q.incoming(name))
        if not all(s.src in outs for s in srcs):
            continue
        N = outs[srcs[0].src].shape[0] if srcs else 0
        r: dict = {}
        a_in: Dict[str, np.ndarray] = {}
        for s in srcs:
            y = _synaptic_input(s, outs[s.src])
            a_in[s.port] = a_in[s.port] + y if s.port in a_in else y
        r["a_in_measured"] = int(max((np.abs(v).max(initial=0) for v in a_in.values()),
                                     default=0))
        a_limit = 2 ** (INPUT_BITS - 1) - 1 if p.kind == "lif" else limit
        if p.kind == "lif" and name in outs and N:
            a = a_in.get("a_in", np.zeros((N, T, p.size), np.int64))
            c = LifParams.of(p)                  # every wrap kept: the run's own arithmetic
            if not isinstance(c.bias, int):
                c.bias = c.bias.numpy()
            peaks: Dict[str, int] = {}
            u = v = None
            for n in range(N):
                if p.reset_each_token:
                    u = v = None
                for t in range(T):
                    _, u, v = lif_step(a[n, t], u, v, c, peaks)
            umax, vmax = peaks.get("u", 0), peaks.get("v", 0)
            r.update(u_measured=umax, v_measured=vmax)
            r["fits_measured"] = (r["a_in_measured"] <= a_limit and umax <= limit
                                  and vmax <= limit)
        elif name in outs:
            m = int(np.abs(outs[name]).max(initial=0))
            r["out_measured"] = m
            ok = m <= limit and r["a_in_measured"] <= a_limit
            if p.kind == "prod" and "a_in1" in a_in and "a_in2" in a_in:
                pm = int(np.abs(a_in["a_in1"] * a_in["a_in2"]).max(initial=0))
                r["product_measured"] = pm
                ok = ok and pm < 2 ** (PROD_BITS - 1)
            if p.decaying:
                # the largest |out| is at a token step: the drain steps only shrink it
                dm = int((np.abs(outs[name]) * np.asarray(p.decay, np.int64)).max(initial=0))
                r["decay_product_measured"] = dm
                ok = ok and dm < 2 ** (PROD_BITS - 1)
            r["fits_measured"] = ok
        rep[name] = r
    return rep


def merge_measured(parts: List[Dict[str, dict]]) -> Dict[str, dict]:
    """The largest of several runs' ``measured_ranges`` (fits only if every run fits)."""
    out: Dict[str, dict] = {}
    for part in parts:
        for name, r in part.items():
            o = out.setdefault(name, {})
            for k, v in r.items():
                if k == "fits_measured":
                    o[k] = o.get(k, True) and v
                else:
                    o[k] = max(o.get(k, 0), v)
    return out


DENDRITE_LIMIT = 2 ** (INPUT_BITS - 1)      # 2^15: Loihi 2's 16-bit dendritic accumulator
STATE_LIMIT = STATE_MAX                     # 2^23: 24-bit neuron state / graded payload


def headroom(qgraph: QGraph, measured: Mapping[str, dict],
             bounds: Optional[Mapping[str, dict]] = None) -> Dict[str, dict]:
    """Per on-chip population, the worst measured value over its limit (< 1 fits):

        dendrite = max |a_in| / 2^15    (LIF: the 16-bit dendritic input; Lava's
                                         simulator sums in int32 and stays silent)
        state    = max(|u|, |v|) / 2^23 (LIF)  or  max |payload| / 2^23 (graded kinds)
        product  = max |a1 a2| / 2^31   (ProdNeuron, int32)

    and, with ``bounds`` (``range_report``), the same ratios of the worst case the weights
    allow (``dendrite_bound``, ``state_bound``; None when unbounded)."""
    out: Dict[str, dict] = {}
    for name in qgraph.order():
        p = qgraph.pop(name)
        if p.kind == "input" or name not in measured:
            continue
        m = measured[name]
        h: dict = {"kind": p.kind}
        if p.kind == "lif":
            h["dendrite"] = m.get("a_in_measured", 0) / DENDRITE_LIMIT
            h["state"] = max(m.get("u_measured", 0), m.get("v_measured", 0)) / STATE_LIMIT
        else:
            h["state"] = m.get("out_measured", 0) / STATE_LIMIT
            if p.kind == "prod" and "product_measured" in m:
                h["product"] = m["product_measured"] / 2 ** (PROD_BITS - 1)
            if "decay_product_measured" in m:
                h["decay_product"] = m["decay_product_measured"] / 2 ** (PROD_BITS - 1)
        if bounds and name in bounds:
            b = bounds[name]
            if p.kind == "lif":
                h["dendrite_bound"] = b["a_in_bound"] / DENDRITE_LIMIT
                ub = b.get("u_bound")
                h["state_bound"] = None if ub is None or ub == math.inf else ub / STATE_LIMIT
            else:
                ob = b.get("out_bound")
                h["state_bound"] = None if ob is None else ob / STATE_LIMIT
        h["fits"] = all(v < 1 for k, v in h.items()
                        if k in ("dendrite", "state", "product", "decay_product"))
        out[name] = h
    return out


def saturation_errors(head: Mapping[str, dict]) -> List[str]:
    """One sentence per population whose measured values reach a limit, naming the fix."""
    msgs = []
    for name, h in head.items():
        if h["fits"]:
            continue
        what = []
        if h.get("dendrite", 0) >= 1:
            what.append(f"its 16-bit dendritic input reaches {h['dendrite']:.2f} x 2^15")
        if h.get("state", 0) >= 1:
            what.append(f"its 24-bit state reaches {h['state']:.2f} x 2^23")
        for k in ("product", "decay_product"):
            if h.get(k, 0) >= 1:
                what.append(f"its int32 {k.replace('_', ' ')} reaches {h[k]:.2f} x 2^31")
        msgs.append(f"population {name}: " + " and ".join(what))
    return msgs
