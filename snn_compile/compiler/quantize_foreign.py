"""Foreign NIR graphs (standard nodes only) → a Loihi 2 fixed-point ``QGraph``.

A graph made by another framework — snnTorch's ``export_to_nir`` of Linear/Leaky
layers, say — is a set of *populations* (``Input`` nodes carrying binary spikes,
``LIF``/``IF`` neurons) joined by chains of weight nodes (``Linear``, ``Affine``,
``Scale``, ``Flatten``). Each chain collapses to one matrix per (source
population, neuron node) pair plus a bias; a neuron's float input current,
normalised to threshold 1, is

    I'_j = gain_j / v_th,j * (sum_p (M_p s_p)_j + b_j),    gain = r dt / tau (LIF), r dt (IF)

and Lava's LIF decays by ``dv = round(4096 dt / tau)``. Weights then go through
the same power-of-two scaling as the decoder's (``quantize.lava_synapse``), but
here they are generally *not* on the 8-bit grid, so rounding is reported per
synapse. A bias becomes a synapse from a one-neuron ``bias`` input that the host
holds at 1 (Lava's ``bias_mant`` is one value per process). The whole run of S
steps is one "token" window: neurons start from rest, nothing is carried over.

What cannot be lowered (other neuron models, ``v_reset``/``v_leak`` ≠ 0,
per-neuron time constants inside one node, Delay, convolutions, ...) is refused
with one error listing every offending node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from snn_compile.compiler.qgraph import Population, QGraph, Synapse, assign_depths
from snn_compile.compiler.quantize import (A_IN_TARGET, QuantReport, SynapseStats,
                                           beta_to_dv, lava_synapse, pow2_grid, scale_for)
from snn_compile.errors import UserError
from snn_compile.export.interpreter import DEFAULT_DT, NIRInterpreter, _coef
from snn_compile.export.nir_io import FlatGraph, NIRGraphError, flatten, node_type, validate

COMPILABLE = ("Input", "Output", "Linear", "Affine", "Scale", "Flatten", "LIF", "IF")
BIAS = "bias"


@dataclass
class ForeignPlan:
    """Float description of a foreign graph, ready to quantize."""

    flat: FlatGraph
    dt: float
    inputs: List[str]
    neurons: Dict[str, dict]              # name -> beta, gain/vth per neuron, size
    contrib: Dict[str, Dict[str, np.ndarray]]   # neuron -> source population -> matrix
    bias: Dict[str, np.ndarray]           # neuron -> bias current (normalised)
    output: str                            # Output node name
    readout: str                           # population read out (a neuron or "readout")
    readout_contrib: Dict[str, np.ndarray] = field(default_factory=dict)


def _resolve(flat: FlatGraph, name: str, pops: set, memo: dict) -> Tuple[dict, Optional[np.ndarray]]:
    """(source population -> matrix, bias) of the vector a node outputs, in terms of
    population outputs; weight nodes compose, several sources add."""
    if name in memo:
        return memo[name]
    node = flat.nodes[name]
    t = node_type(node)
    if name in pops:
        size = flat_size(node)
        res = ({name: np.eye(size)}, None)
        memo[name] = res
        return res
    mats, bias = _input_of(flat, name, pops, memo)
    if t in ("Linear", "Affine"):
        W = np.asarray(node.weight, np.float64)
        mats = {p: W @ a for p, a in mats.items()}
        bias = None if bias is None else W @ bias
        if t == "Affine":
            b = np.asarray(node.bias, np.float64)
            bias = b if bias is None else bias + b
    elif t == "Scale":
        s = np.asarray(node.scale, np.float64)
        mats = {p: s[:, None] * a for p, a in mats.items()}
        bias = None if bias is None else s * bias
    memo[name] = (mats, bias)
    return mats, bias


def _input_of(flat: FlatGraph, name: str, pops: set, memo: dict):
    """What arrives at ``name``: the sum over its incoming edges of ``_resolve``."""
    mats: Dict[str, np.ndarray] = {}
    bias: Optional[np.ndarray] = None
    for s in flat.sources(name):
        m, b = _resolve(flat, s, pops, memo)
        for p, a in m.items():
            mats[p] = mats[p] + a if p in mats else a
        if b is not None:
            bias = b if bias is None else bias + b
    return mats, bias


def flat_size(node) -> int:
    from snn_compile.export.nir_io import out_size
    return int(out_size(node))


def plan_foreign(graph) -> ForeignPlan:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # refused by name below
        return _plan_foreign(graph)


def _plan_foreign(graph) -> ForeignPlan:
    flat = graph if isinstance(graph, FlatGraph) else validate(flatten(graph))
    dt = float(flat.metadata.get("dt", DEFAULT_DT))
    problems = [f"{n} ({node_type(v)})" for n, v in flat.nodes.items()
                if node_type(v) not in COMPILABLE]
    if problems:
        raise NIRGraphError("these nodes have no Loihi 2 lowering in snn_compile: "
                            + ", ".join(problems) + f" (compilable: {', '.join(COMPILABLE)})")
    inputs = flat.inputs
    neurons = [n for n, v in flat.nodes.items() if node_type(v) in ("LIF", "IF")]
    if not neurons:
        raise NIRGraphError("the graph has no LIF or IF neurons: nothing to run on Loihi 2")
    if len(flat.outputs) != 1:
        raise NIRGraphError(f"the graph has {len(flat.outputs)} Output nodes; one is supported")
    pops = set(inputs) | set(neurons)
    errs: List[str] = []
    info: Dict[str, dict] = {}
    for n in neurons:
        v = flat.nodes[n]
        r = np.asarray(v.r, np.float64)
        if node_type(v) == "LIF":
            tau = np.asarray(v.tau, np.float64)
            beta, gain = _coef(1.0 - dt / tau), _coef(r * dt / tau)
            if np.any(np.asarray(v.v_leak) != 0):
                errs.append(f"{n}: v_leak must be 0 (Lava's LIF leaks towards 0)")
        else:
            beta, gain = np.ones_like(r), _coef(r * dt)
        if np.any(beta != beta.flat[0]):
            errs.append(f"{n}: time constants differ between neurons of one node (Lava's dv "
                        "is one value per process); split the node")
        if not (0.0 <= float(beta.flat[0]) <= 1.0):
            errs.append(f"{n}: decay {float(beta.flat[0]):.4g} outside [0, 1] for dt={dt}")
        if np.any(np.asarray(v.v_reset) != 0):
            errs.append(f"{n}: v_reset must be 0 (Loihi 2 resets to zero)")
        vth = np.asarray(v.v_threshold, np.float64)
        if np.any(vth <= 0):
            errs.append(f"{n}: thresholds must be positive")
        info[n] = {"beta": float(beta.flat[0]), "scale": np.broadcast_to(gain / vth, r.shape),
                   "size": int(r.size)}
    if errs:
        raise NIRGraphError("cannot lower to Loihi 2: " + "; ".join(errs))
    memo: dict = {}
    contrib, bias = {}, {}
    for n in neurons:
        mats, b = _input_of(flat, n, pops, memo)
        sc = info[n]["scale"]
        contrib[n] = {p: sc[:, None] * a for p, a in mats.items()}
        if b is not None and np.any(b != 0):
            bias[n] = sc * b
    out = flat.outputs[0]
    mats, b = _resolve(flat, out, pops, memo)
    if b is not None and np.any(b != 0):
        raise NIRGraphError(f"output {out} adds a bias after the last neurons; a graded "
                            "readout with bias is not supported")
    if len(mats) == 1 and next(iter(mats)) in neurons:
        (p, a), = mats.items()
        if a.shape[0] == a.shape[1] and np.array_equal(a, np.eye(a.shape[0])):
            return ForeignPlan(flat, dt, inputs, info, contrib, bias, out, p)
    return ForeignPlan(flat, dt, inputs, info, contrib, bias, out, "readout", mats)


def deployability(graph) -> Tuple[bool, str]:
    """(can it be compiled for Loihi 2, why) without quantizing anything."""
    from snn_compile.compiler.from_nir import folded_from_nir, is_decoder_graph
    try:
        if is_decoder_graph(graph):
            folded_from_nir(graph)
            return True, ("snn_compile SpikeDecoder: LIF populations + causal spiking attention "
                          "on ProdNeuron/accumulator processes")
        p = plan_foreign(graph)
        return True, (f"{len(p.neurons)} LIF/IF populations, {len(p.inputs)} spike inputs, "
                      f"readout {p.readout}")
    except UserError as e:
        return False, str(e)


def _peak_currents(plan: ForeignPlan, calib: Dict[str, torch.Tensor]) -> Dict[str, float]:
    """Largest |normalised input current| of every neuron node on calibration inputs."""
    interp = NIRInterpreter(plan.flat)
    rec = interp.run(calib, record=list(plan.neurons))
    outs = {**{k: v.double() for k, v in calib.items()}, **rec}
    peak = {}
    for n, m in plan.contrib.items():
        cur = sum(outs[p] @ torch.as_tensor(a).t() for p, a in m.items())
        if n in plan.bias:
            cur = cur + torch.as_tensor(plan.bias[n])
        peak[n] = float(cur.abs().max())
    return peak


def foreign_to_qgraph(graph, steps: int,
                      calib: Optional[Dict[str, torch.Tensor]] = None) -> Tuple[QGraph, QuantReport]:
    """Quantize a foreign graph for runs of ``steps`` steps (one window, from rest).

    ``calib[input]`` (S, B, size) spike trains set the membrane scales from the
    currents they cause; without them a provable bound is used.
    """
    if steps <= 0:
        raise UserError(f"--steps must be positive, got {steps}")
    plan = plan_foreign(graph)
    rep = QuantReport()
    peak = _peak_currents(plan, calib) if calib is not None else {}
    pops: Dict[str, Population] = {}
    syns: List[Synapse] = []
    inputs = list(plan.inputs)
    for n in plan.inputs:
        pops[n] = Population(n, "input", flat_size(plan.flat.nodes[n]), layer=n, role="input")
    if plan.bias:
        pops[BIAS] = Population(BIAS, "input", 1, layer=BIAS, role="bias (held at 1)")
        inputs.append(BIAS)
    for n, info in plan.neurons.items():
        bound = sum(np.abs(a).sum(axis=1) for a in plan.contrib[n].values())
        if n in plan.bias:
            bound = bound + np.abs(plan.bias[n])
        b = peak.get(n, float(np.max(bound)))
        k = scale_for(b)
        pops[n] = Population(n, "lif", info["size"], dv=beta_to_dv(info["beta"]), vth=2 ** k,
                             layer=n, role="lif")
        dv = pops[n].dv
        rep.populations[n] = {"kind": "lif", "scale_log2": k, "vth": 2 ** k, "dv": dv,
                              "beta": info["beta"], "beta_quantized": (4096 - dv) / 4096,
                              "max_input": b, "max_input_from": "calibration" if peak else "bound",
                              "max_a_in": b * 2 ** k,
                              "a_in_headroom": A_IN_TARGET / max(b * 2 ** k, 1e-9)}
        for p, a in plan.contrib[n].items():
            sy, st = lava_synapse(f"{p}->{n}", p, n, a, k)
            syns.append(sy)
            rep.synapses[sy.name] = st
        if n in plan.bias:
            sy, st = lava_synapse(f"{BIAS}->{n}", BIAS, n, plan.bias[n][:, None], k)
            syns.append(sy)
            rep.synapses[sy.name] = st
    logit_scale = 1.0
    if plan.readout == "readout":
        V = next(iter(plan.readout_contrib.values())).shape[0]
        pops["readout"] = Population("readout", "graded", V, vth=0, layer="readout",
                                     role="readout")
        allm = np.concatenate([a for a in plan.readout_contrib.values()], axis=1)
        _, e, err = pow2_grid(allm)
        mixed = allm.min() < 0 < allm.max()
        for p, a in plan.readout_contrib.items():
            m = np.clip(np.rint(a / 2.0 ** e), -127, 127).astype(np.int64)
            syns.append(Synapse(f"{p}->readout", p, "readout", 2 * m if mixed else m))
            rep.synapses[f"{p}->readout"] = SynapseStats(f"{p}->readout", 0, True, err)
        logit_scale = 2.0 ** e / (2 if mixed else 1)
    assign_depths(pops, syns, inputs)
    meta = {"model": "foreign", "output": plan.output, "dt": plan.dt}
    # context 1: one sample is one window of `steps` steps from rest (QGraph.single_window)
    q = QGraph(pops, syns, steps, inputs, plan.readout, logit_scale, 1, meta)
    for s in rep.synapses.values():
        if s.rounding_error > 0:
            rep.warnings.append(f"synapse {s.name}: weights rounded to 8-bit mantissas "
                                f"(max relative error {s.rounding_error:.2%})")
    return q.validate(), rep


def int_frames(qgraph: QGraph, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Frames ``{input: (B, 1, S, size)}`` of the integer backends from (S, B, size) spikes."""
    frames = {}
    S = qgraph.steps_per_token
    for name in qgraph.inputs:
        if name == BIAS:
            B = next(iter(inputs.values())).shape[1]
            frames[name] = torch.ones(B, 1, S, 1, dtype=torch.int64)
            continue
        x = torch.as_tensor(inputs[name])
        if x.shape[0] != S:
            raise UserError(f"input {name}: {x.shape[0]} steps given, the graph was compiled "
                            f"for {S} (--steps)")
        if not torch.all((x == 0) | (x == 1)):
            raise UserError(f"input {name} is not binary: Loihi 2 inputs are spikes (0/1)")
        frames[name] = x.to(torch.int64).permute(1, 0, 2)[:, None]
    return frames


def compare_float_int(graph, qgraph: QGraph, inputs: Dict[str, torch.Tensor],
                      lava_samples: int = 0) -> dict:
    """Float NIR interpreter vs integer reference (vs Lava ``fixed_pt``) on spike inputs.

    Per neuron node: fraction of (step, neuron) spike decisions that agree, spike
    counts; and, for ``lava_samples`` sequences, whether Lava equals the integer
    reference spike for spike (it must).
    """
    from snn_compile.compiler.int_reference import plan_graph, run_frames
    plan = plan_foreign(graph)
    rec = NIRInterpreter(plan.flat).run(inputs, record=list(plan.neurons))
    frames = int_frames(qgraph, inputs)
    run = run_frames(plan_graph(qgraph), frames)
    per = {}
    for n in plan.neurons:
        f = rec[n].permute(1, 0, 2)                       # (B, S, size)
        i = run.outputs[n][:, 0].double()
        per[n] = {"agreement": float((f == i).double().mean()),
                  "float_spikes": int(f.sum()), "int_spikes": int(i.sum())}
    fo = rec[plan.output].permute(1, 0, 2).sum(1)
    io = run.outputs[qgraph.readout][:, 0].double().sum(1) * qgraph.logit_scale
    res = {"populations": per, "readout_mean_abs_diff": float((fo - io).abs().mean()),
           "readout_float_mean_abs": float(fo.abs().mean()),
           "min_agreement": min(p["agreement"] for p in per.values())}
    if lava_samples:
        from snn_compile.hw_sim.lava_runner import LavaSession
        equal = True
        for b in range(lava_samples):
            with LavaSession(qgraph, probe=True) as sess:
                got = sess.feed_frames({k: v[b, 0].numpy() for k, v in frames.items()})
            for name, arr in got.outputs.items():
                equal &= bool(np.array_equal(arr, run.outputs[name][b, 0].numpy()))
        res["lava_samples"] = lava_samples
        res["lava_equals_int"] = equal
    return res
