"""Foreign NIR graphs (standard nodes only) → a Loihi 2 fixed-point ``QGraph``.

A graph made by another framework (snnTorch's ``export_to_nir``, Norse, Rockpool,
Sinabs, lava-dl, ...) is a set of *populations* — ``Input`` nodes carrying binary
spikes, spiking neurons (``LIF``, ``IF``, ``CubaLIF``: Lava LIF processes) and
integrating readouts (``LI``, ``I``: graded accumulators) — joined by chains of
weight nodes (``Linear``, ``Affine``, ``Scale``, ``Flatten``, ``Conv1d``/``Conv2d``
and ``SumPool2d`` unrolled into matrices on the flattened vector, ``Delay``). Each
chain collapses to one matrix per (source population, lag) plus a bias current, so
the current into neuron node ``j`` at step ``t`` is

    I_j[t] = sum_(p, k) (M_(p,k) s_p[t - k])_j + b_j

with lag ``k`` from Delay nodes (``round(delay / dt)`` steps) and recurrent edges
(one step: ``nir_io.recurrent_edges``). Time runs in steps of ``dt`` (graph metadata
``dt``, else 1e-4 as snnTorch and the NIR paper use); with the interpreter's forward
Euler coefficients ``beta = 1 - dt/tau``, ``gain = r dt/tau`` and per-neuron
threshold ``v_th``, membranes are normalised to threshold 1 and mapped onto Lava's
bit-accurate LIF (``u = u (4096 - du - 1)/4096 + a << 6``,
``v = v (4096 - dv)/4096 + u + bias``, spike when ``v > vth << 6``, reset to 0):

    LIF      v' = beta v' + (1-beta) v_leak/v_th + (gain/v_th) I       du = 4095 (u = a)
             -> dv = round(4096 (1 - beta)); the constant terms, (1-beta) v_leak/v_th
                + (gain/v_th) b, are the neuron's own bias (bias_mant << bias_exp)
    IF       v' = v' + (r dt/v_th) I                                    dv = 0
    CubaLIF  u' = alpha u' + (gain w_in dt/tau_syn / v_th) I, v' = beta v' + leak + u'
             -> du = 4095 - round(4096 alpha): Lava's LIF *is* current-based; a bias
                current b enters u, so it comes from a host input held at 1
    LI, I    v = lambda v + gain I (+ (1-beta) v_leak)  -> accum, per-neuron decay
             ``lambda = 1 - decay/2^decay_exp`` (decay 8 bit); constants from the host

Membrane scales ``K = 2^k`` come from the largest input current (and, for CubaLIF,
synaptic current; for LI/I, value) on calibration inputs run through the float
interpreter, else from a provable bound. Weights go through the decoder's power-of-two
scaling (``quantize.lava_synapse``); rounding is reported per synapse. The whole run of
``S`` steps is one window from rest (``QGraph.single_window``).

A bias that would make a population spike from its bias alone in the steps before its
window starts (the pipeline fills in ``depth`` steps) is exact as the neuron's bias only
if nothing of the population reaches a later step early; for populations with a
self-loop or delayed synapse it comes from the host input instead (a note says so).

What cannot be lowered is refused with one error naming every offending node and why:
other node types, ``v_reset != 0``, time constants that differ within a LIF node
(Lava's du/dv are one value per process), loops through several neuron nodes,
recurrence into LI/I nodes, biases behind a Delay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from snn_compile.compiler.from_nir import folded_from_nir, is_decoder_graph
from snn_compile.compiler.qgraph import (DECAY_MAX, Accum, Graded, Input, Lif, Population, QGraph,
                                         QGraphError, Synapse, assign_depths)
from snn_compile.compiler.quantize import (A_IN_TARGET, K_MAX_LOG2, QuantReport, SynapseStats,
                                           beta_to_dv, lava_synapse, pow2_grid, scale_for)
from snn_compile.errors import UserError
from snn_compile.export.interpreter import DEFAULT_DT, NIRInterpreter, _coef
from snn_compile.export.nir_io import (CONVOLUTIONS, FlatGraph, NIRGraphError, flatten,
                                       linear_form, node_type, out_size, recurrent_edges,
                                       validate)
from snn_compile.loihi.fixed_point import bias_fires_from_rest

SPIKING = ("LIF", "IF", "CubaLIF")          # -> lif populations (Lava LIF)
INTEGRATING = ("LI", "I")                   # -> accum populations (graded accumulators)
WEIGHTS = ("Linear", "Affine", "Scale", "Flatten", "Delay") + CONVOLUTIONS
COMPILABLE = ("Input", "Output") + WEIGHTS + SPIKING + INTEGRATING
BIAS = "bias"
BIAS_MANT_MAX, BIAS_EXP_MAX = 4095, 7       # Lava LIF: 13-bit signed mantissa, 3-bit exponent
ACC_VALUE_TARGET = 2 ** 22                  # accum values: graded 24-bit payloads, 2x headroom
ACC_DECAY_MAX, ACC_EXP_MAX = 255, 16
WHY = {"Threshold": "a threshold without a membrane (Loihi 2 neurons threshold their own v)",
       "AvgPool2d": "average pooling divides (use SumPool2d and scale the next weights)",
       "Conv3d": "no 3-D convolution lowering"}

Key = Tuple[str, int]                       # (source population, step lag)


@dataclass
class Neuron:
    """One neuron node in normalised units (threshold 1 for spiking kinds)."""

    name: str
    type: str
    kind: str                     # "lif" or "accum"
    size: int
    beta: np.ndarray              # v decay per neuron
    alpha: float                  # u decay (CubaLIF); 0 otherwise
    scale: np.ndarray             # current I -> normalised input, per neuron
    leak: np.ndarray              # constant added to v every step (normalised)


@dataclass
class ForeignPlan:
    """Float description of a foreign graph, ready to quantize."""

    flat: FlatGraph
    dt: float
    inputs: List[str]
    neurons: Dict[str, Neuron]
    contrib: Dict[str, Dict[Key, np.ndarray]]       # neuron -> (source, lag) -> matrix
    bias: Dict[str, np.ndarray]                     # neuron -> bias current (normalised)
    output: str                                     # the Output node
    readout: str                                    # a population, or "readout" (graded)
    readout_contrib: Dict[Key, np.ndarray] = field(default_factory=dict)
    readout_bias: Optional[np.ndarray] = None
    recurrent: List[Tuple[str, str]] = field(default_factory=list)
    unrolled: Dict[str, Tuple[int, int, int]] = field(default_factory=dict)  # conv: out, in, nnz

    @property
    def order(self) -> List[str]:
        """Neuron nodes in an order where every source but the node itself comes first."""
        done, out = set(self.inputs), []
        todo = list(self.neurons)
        while todo:
            for n in list(todo):
                if all(p in done or p == n for p, _ in self.contrib[n]):
                    out.append(n)
                    done.add(n)
                    todo.remove(n)
                    break
            else:                  # a loop through several nodes: refused in _plan_foreign
                out += todo
                break
        return out


def flat_size(node) -> int:
    return int(out_size(node))


def plan_foreign(graph) -> ForeignPlan:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # refused by name below
        return _plan_foreign(graph)


def _neuron(name: str, v, dt: float, errs: List[str]) -> Neuron:
    t = node_type(v)
    r = np.asarray(v.r, np.float64).reshape(-1)
    size = r.size
    zeros = np.zeros(size)
    alpha = 0.0
    if t in ("LIF", "LI"):
        tau = np.asarray(v.tau, np.float64).reshape(-1)
        beta, gain = _coef(1.0 - dt / tau), _coef(r * dt / tau)
        leak = (1.0 - beta) * np.asarray(v.v_leak, np.float64).reshape(-1)
    elif t == "CubaLIF":
        ts = np.asarray(v.tau_syn, np.float64).reshape(-1)
        tm = np.asarray(v.tau_mem, np.float64).reshape(-1)
        a = _coef(1.0 - dt / ts)
        beta = _coef(1.0 - dt / tm)
        gain = _coef(r * dt / tm) * _coef(np.asarray(v.w_in, np.float64).reshape(-1) * dt / ts)
        leak = (1.0 - beta) * np.asarray(v.v_leak, np.float64).reshape(-1)
        if np.any(a != a[0]):
            errs.append(f"{name} (CubaLIF): synaptic time constants differ between its neurons "
                        "(Lava's du is one value per process); split the node")
        alpha = float(a[0])
        if not 0.0 <= alpha <= 4095 / 4096:
            errs.append(f"{name} (CubaLIF): synaptic decay {alpha:.6g} for dt={dt} is outside "
                        "Loihi's 0 .. 4095/4096 (tau_syn too short or too long for dt)")
    else:                                            # IF, I
        beta, gain, leak = np.ones(size), _coef(r * dt), zeros
    kind = "lif" if t in SPIKING else "accum"
    if kind == "lif":
        if np.any(beta != beta[0]):
            errs.append(f"{name} ({t}): time constants differ between its neurons (Lava's dv "
                        "is one value per process); split the node")
        if np.any(np.asarray(v.v_reset) != 0):
            errs.append(f"{name} ({t}): v_reset must be 0 (Loihi 2 resets to zero)")
        vth = np.asarray(v.v_threshold, np.float64).reshape(-1)
        if np.any(vth <= 0):
            errs.append(f"{name} ({t}): thresholds must be positive")
        scale, leak = gain / vth, leak / vth
    else:
        scale = gain
    if not np.all((0.0 <= beta) & (beta <= 1.0)):
        errs.append(f"{name} ({t}): membrane decay outside [0, 1] for dt={dt} (tau shorter than "
                    "dt)")
    return Neuron(name, t, kind, size, beta, alpha, np.broadcast_to(scale, (size,)).copy(),
                  np.broadcast_to(leak, (size,)).copy())


def _add(dst: dict, key, m) -> None:
    dst[key] = dst[key] + m if key in dst else m


class _Resolver:
    """(source population, lag) -> matrix and bias of the vector each node outputs."""

    def __init__(self, plan_flat: FlatGraph, pops: set, back: set, dt: float):
        self.flat, self.pops, self.back, self.dt = plan_flat, pops, back, dt
        self.memo: dict = {}
        self.active: List[str] = []
        self.late_bias: List[str] = []
        self.unrolled: Dict[str, Tuple[int, int, int]] = {}

    def of(self, name: str):
        if name in self.memo:
            return self.memo[name]
        if name in self.pops:
            size = flat_size(self.flat.nodes[name])
            res = ({(name, 0): np.eye(size)}, None)
            self.memo[name] = res
            return res
        if name in self.active:
            cyc = self.active[self.active.index(name):] + [name]
            raise NIRGraphError("cannot lower to Loihi 2: a cycle of weight nodes only ("
                                + " -> ".join(cyc) + ") has no neuron to hold its state")
        self.active.append(name)
        mats, bias = self.input_of(name)
        node, t = self.flat.nodes[name], node_type(self.flat.nodes[name])
        if t in ("Linear", "Affine") or t in CONVOLUTIONS:
            if t in CONVOLUTIONS:
                W, b = linear_form(self.flat, name)
                self.unrolled[name] = (W.shape[0], W.shape[1], int(np.count_nonzero(W)))
            else:
                W = np.asarray(node.weight, np.float64)
                b = np.asarray(node.bias, np.float64).reshape(-1) if t == "Affine" else None
            mats = {k: W @ a for k, a in mats.items()}
            bias = None if bias is None else W @ bias
            if b is not None and np.any(b != 0):
                bias = b if bias is None else bias + b
        elif t == "Scale":
            s = np.asarray(node.scale, np.float64).reshape(-1)
            mats = {k: s[:, None] * a for k, a in mats.items()}
            bias = None if bias is None else s * bias
        elif t == "Delay":
            steps = np.rint(np.asarray(node.delay, np.float64).reshape(-1) / self.dt).astype(int)
            if steps.size and steps.min() < 1:
                raise NIRGraphError(f"Delay node {name}: delays shorter than one step dt="
                                    f"{self.dt} cannot be executed in discrete time")
            if bias is not None and np.any(bias != 0):
                self.late_bias.append(f"Delay node {name}")
            new: dict = {}
            for L in np.unique(steps):
                mask = (steps == L).astype(np.float64)[:, None]
                for (p, lag), a in mats.items():
                    _add(new, (p, lag + int(L)), mask * a)
            mats, bias = new, None
        self.active.pop()
        self.memo[name] = (mats, bias)
        return mats, bias

    def input_of(self, name: str):
        mats: dict = {}
        bias = None
        for s in self.flat.sources(name):
            m, b = self.of(s)
            lag = 1 if (s, name) in self.back else 0
            for (p, k), a in m.items():
                _add(mats, (p, k + lag), a)
            if b is not None:
                if lag and np.any(b != 0):
                    self.late_bias.append(f"the recurrent edge {s} -> {name}")
                bias = b if bias is None else bias + b
        return mats, bias


def _plan_foreign(graph) -> ForeignPlan:
    flat = graph if isinstance(graph, FlatGraph) else validate(flatten(graph))
    dt = float(flat.metadata.get("dt", DEFAULT_DT))
    problems = [f"{n} ({node_type(v)}: {WHY.get(node_type(v), 'no lowering in snn_compile')})"
                for n, v in flat.nodes.items() if node_type(v) not in COMPILABLE]
    if problems:
        raise NIRGraphError("these nodes cannot be lowered to Loihi 2: " + ", ".join(problems)
                            + f" (lowered: {', '.join(COMPILABLE)})")
    inputs = flat.inputs
    names = [n for n, v in flat.nodes.items() if node_type(v) in SPIKING + INTEGRATING]
    if not any(node_type(flat.nodes[n]) in SPIKING for n in names):
        raise NIRGraphError("the graph has no LIF, IF or CubaLIF neurons: nothing spikes on "
                            "Loihi 2")
    if len(flat.outputs) != 1:
        raise NIRGraphError(f"the graph has {len(flat.outputs)} Output nodes; one is supported")
    errs: List[str] = []
    neurons = {n: _neuron(n, flat.nodes[n], dt, errs) for n in names}
    if errs:
        raise NIRGraphError("cannot lower to Loihi 2: " + "; ".join(errs))
    back = recurrent_edges(flat)
    res = _Resolver(flat, set(inputs) | set(names), back, dt)
    contrib, bias = {}, {}
    for n, nu in neurons.items():
        mats, b = res.input_of(n)
        contrib[n] = {k: nu.scale[:, None] * a for k, a in mats.items()}
        if b is not None and np.any(b != 0):
            bias[n] = nu.scale * b
    out = flat.outputs[0]
    omats, ob = res.of(out)
    if res.late_bias:
        raise NIRGraphError("cannot lower to Loihi 2: a bias current passes "
                            + ", ".join(sorted(set(res.late_bias))) + " (delayed, it would be "
                            "missing for the first steps; Loihi 2 biases act from the start): "
                            "move the bias (Affine) after the delay")
    for n, c in contrib.items():
        if neurons[n].kind == "accum" and any(lag for _, lag in c):
            raise NIRGraphError(f"cannot lower to Loihi 2: {n} ({neurons[n].type}) receives a "
                                "delayed or recurrent input; LI/I readouts take only "
                                "same-step inputs")
    _refuse_population_loops(contrib, neurons)
    rec = sorted(back)
    if len(omats) == 1 and (ob is None or not np.any(ob != 0)):
        (p, lag), a = next(iter(omats.items()))
        if p in neurons and not lag and a.shape[0] == a.shape[1] \
                and np.array_equal(a, np.eye(a.shape[0])):
            return ForeignPlan(flat, dt, inputs, neurons, contrib, bias, out, p,
                               recurrent=rec, unrolled=res.unrolled)
    return ForeignPlan(flat, dt, inputs, neurons, contrib, bias, out, "readout", omats,
                       ob if ob is not None and np.any(ob != 0) else None, rec, res.unrolled)


def _refuse_population_loops(contrib, neurons) -> None:
    """Loops through several neuron nodes: Loihi 2 needs a step per synaptic hop, and the
    integer reference runs one population at a time; refused by name."""
    succ = {n: [p for p, _ in c if p in neurons and p != n] for n, c in contrib.items()}
    index, low, stack, on, sccs = {}, {}, [], set(), []

    def visit(v):                                   # Tarjan, small graphs
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            sccs.append(comp)

    for v in succ:
        if v not in index:
            visit(v)
    loops = [sorted(c) for c in sccs if len(c) > 1]
    if loops:
        raise NIRGraphError("cannot lower to Loihi 2: a loop through several neuron nodes ("
                            + "; ".join(", ".join(c) for c in loops) + "): on Loihi 2 every "
                            "synaptic hop takes a step, so it closes later than NIR's one-step "
                            "recurrence; snn_compile lowers recurrence within one neuron node")


def deployability(graph) -> Tuple[bool, str]:
    """(can it be compiled for Loihi 2, why) without quantizing anything."""
    try:
        if is_decoder_graph(graph):
            folded_from_nir(graph)
            return True, ("snn_compile SpikeDecoder: LIF populations + causal spiking attention "
                          "on ProdNeuron/accumulator processes")
        p = plan_foreign(graph)
        kinds = {}
        for nu in p.neurons.values():
            kinds[nu.type] = kinds.get(nu.type, 0) + 1
        return True, (", ".join(f"{v} {k}" for k, v in kinds.items()) + " populations, "
                      f"{len(p.inputs)} spike inputs, readout {p.readout}"
                      + (f", {len(p.recurrent)} recurrent edges" if p.recurrent else "")
                      + (f", {len(p.unrolled)} convolutions unrolled" if p.unrolled else ""))
    except UserError as e:
        return False, str(e)


# ------------------------------------------------------------------ calibration
def _shift(x: torch.Tensor, lag: int) -> torch.Tensor:
    """(S, B, n) values of step t - lag at step t (zeros before)."""
    if not lag:
        return x
    return torch.cat([torch.zeros_like(x[:lag]), x[:-lag]])[: x.shape[0]]


def _peaks(plan: ForeignPlan, calib: Dict[str, torch.Tensor]) -> Dict[str, dict]:
    """Largest |normalised input current| (and synaptic current, LI/I value) of every
    neuron node on calibration inputs run through the float interpreter."""
    interp = NIRInterpreter(plan.flat)
    rec = interp.run(calib, record=list(plan.neurons))
    outs = {**{k: v.double() for k, v in calib.items()}, **rec}
    peak = {}
    for n, m in plan.contrib.items():
        cur = sum(_shift(outs[p], lag) @ torch.as_tensor(a).t() for (p, lag), a in m.items())
        if n in plan.bias:
            cur = cur + torch.as_tensor(plan.bias[n])
        nu = plan.neurons[n]
        d = {"input": float(cur.abs().max())}
        if nu.alpha:
            u, um = torch.zeros_like(cur[0]), 0.0
            for t in range(cur.shape[0]):
                u = nu.alpha * u + cur[t]
                um = max(um, float(u.abs().max()))
            d["u"] = um
        if nu.kind == "accum":
            d["value"] = float(rec[n].abs().max())
        peak[n] = d
    return peak


def _bias_code(values: np.ndarray) -> Tuple[np.ndarray, int, float]:
    """Integers ``b`` (per neuron) as Lava's ``bias_mant << bias_exp``: the smallest
    exponent whose mantissas fit 13 bits; returns (mantissas, exponent, max relative
    error)."""
    b = np.rint(values).astype(np.int64)
    amax = int(np.abs(b).max(initial=0))
    e = 0
    while amax > (BIAS_MANT_MAX << e) and e < BIAS_EXP_MAX:
        e += 1
    m = np.clip(np.rint(values / 2.0 ** e), -BIAS_MANT_MAX - 1, BIAS_MANT_MAX).astype(np.int64)
    ref = float(np.abs(values).max(initial=0))
    err = float(np.abs((m << e) - values).max(initial=0) / ref) if ref else 0.0
    return m, e, err


def _accum_decay(beta: np.ndarray) -> Tuple[List[int], int]:
    """Per-neuron 8-bit decays and one exponent: ``lambda = 1 - decay / 2^exp`` nearest
    to ``beta`` with the finest exponent that fits every neuron."""
    d = 1.0 - beta
    if not np.any(d > 0):
        return [], 12
    for e in range(ACC_EXP_MAX, -1, -1):
        q = np.rint(d * 2 ** e)
        if q.max() <= ACC_DECAY_MAX:
            return [int(x) for x in q], e
    return [int(x) for x in np.minimum(np.rint(d), ACC_DECAY_MAX)], 0


# ------------------------------------------------------------------ quantization
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
    peak = _peaks(plan, calib) if calib is not None else {}
    pops: Dict[str, Population] = {}
    syns: List[Synapse] = []
    inputs = list(plan.inputs)
    unit: Dict[str, float] = {}                  # float value of one integer unit of a source
    for n in plan.inputs:
        pops[n] = Input(n, flat_size(plan.flat.nodes[n]), layer=n, role="input")
        unit[n] = 1.0
    host: Dict[str, np.ndarray] = {}             # population -> constant input from the host

    def synapse(name, src, dst, a, k, lag=0):
        sy, st = lava_synapse(name, src, dst, a * unit[src], k,
                              graded=pops[src].kind in ("accum", "graded"))
        sy.step_lag = int(lag)
        syns.append(sy)
        rep.synapses[sy.name] = st

    for n in plan.order:
        nu = plan.neurons[n]
        m = plan.contrib[n]
        cb = plan.bias.get(n)
        bound = sum((np.abs(a) * (1.0 if plan.neurons.get(p) is None
                                  or plan.neurons[p].kind == "lif" else np.inf)).sum(axis=1)
                    for (p, _), a in m.items())
        if cb is not None:
            bound = bound + np.abs(cb)
        pk = peak.get(n, {})
        b_in = pk.get("input", float(np.max(bound)) if np.all(np.isfinite(bound)) else 1.0)
        if nu.kind == "lif":
            k = scale_for(b_in)
            if nu.alpha:
                u_peak = pk.get("u", b_in / (1.0 - nu.alpha))
                if u_peak > 0:
                    k = min(k, max(0, math.floor(math.log2(2 ** 16 / u_peak))))
            vbias = nu.leak + (cb if cb is not None and not nu.alpha else 0.0)
            if np.any(vbias != 0):                 # the bias must fit 13 bit << 7
                kb = math.floor(math.log2(BIAS_MANT_MAX * 2 ** BIAS_EXP_MAX
                                          / float(np.abs(vbias).max()))) - 6
                k = max(0, min(k, kb))
            dv = beta_to_dv(float(nu.beta[0]))
            du = DECAY_MAX if not nu.alpha else int(min(DECAY_MAX, max(
                0, DECAY_MAX - round(4096 * nu.alpha))))
            mant, e, berr = _bias_code(vbias * 2.0 ** (k + 6)) if np.any(vbias != 0) \
                else (np.zeros(nu.size, np.int64), 0, 0.0)
            pops[n] = Lif(n, nu.size, du=du, dv=dv, vth=2 ** k,
                          bias_mant=(int(mant[0]) if np.all(mant == mant[0])
                                            else [int(x) for x in mant]),
                          bias_exp=e, layer=n, role=nu.type)
            unit[n] = 1.0
            r = {"kind": "lif", "type": nu.type, "scale_log2": k, "vth": 2 ** k, "dv": dv,
                 "du": du, "beta": float(nu.beta[0]), "beta_quantized": (4096 - dv) / 4096,
                 "max_input": b_in, "max_input_from": "calibration" if pk else "bound",
                 "max_a_in": b_in * 2 ** k, "a_in_headroom": A_IN_TARGET / max(b_in * 2 ** k, 1e-9)}
            if nu.alpha:
                r.update(alpha=nu.alpha, alpha_quantized=(4095 - du) / 4096)
            if np.any(vbias != 0):
                r.update(bias="neuron's own (bias_mant << bias_exp)", bias_rounding=berr)
            if nu.alpha and cb is not None:
                host[n] = cb                       # a bias current enters u: from the host
                r["bias_current"] = "host input held at 1 (enters the synaptic current u)"
            rep.populations[n] = r
        else:
            vmax = pk.get("value")
            if vmax is None:
                vmax = b_in * (steps if not np.any(nu.beta < 1) else
                               1.0 / max(1e-12, 1.0 - float(nu.beta.max())))
            k = K_MAX_LOG2 if vmax <= 0 else int(max(0, min(
                K_MAX_LOG2, math.floor(math.log2(ACC_VALUE_TARGET / vmax)))))
            dec, dexp = _accum_decay(nu.beta)
            pops[n] = Accum(n, nu.size, decay=dec, decay_exp=dexp, layer=n,
                            role=nu.type)
            unit[n] = 2.0 ** -k
            const = nu.leak + (cb if cb is not None else 0.0)
            if np.any(const != 0):
                host[n] = const
            lam_q = 1 - np.asarray(dec or [0] * nu.size) / 2.0 ** dexp
            rep.populations[n] = {"kind": "accum", "type": nu.type, "scale_log2": k,
                                  "max_value": vmax, "decay_exp": dexp,
                                  "max_decay_error": float(np.abs(lam_q - nu.beta).max()),
                                  "max_input": b_in}
        for (p, lag), a in m.items():
            synapse(f"{p}->{n}" + (f"@{lag}" if lag else ""), p, n, a, k, lag)
        if n in host:
            _bias_population(pops, inputs, unit)
            synapse(f"{BIAS}->{n}", BIAS, n, host[n][:, None], k)
    logit_scale = 1.0
    if plan.readout == "readout":
        V = next(iter(plan.readout_contrib.values())).shape[0]
        pops["readout"] = Graded("readout", V, vth=0, layer="readout",
                                 role="readout")
        parts = [(p, lag, a * unit[p]) for (p, lag), a in plan.readout_contrib.items()]
        if plan.readout_bias is not None:
            _bias_population(pops, inputs, unit)
            parts.append((BIAS, 0, plan.readout_bias[:, None]))
        allm = np.concatenate([a for _, _, a in parts], axis=1)
        _, e, err = pow2_grid(allm)
        mixed = allm.min() < 0 < allm.max()
        for p, lag, a in parts:
            mm = np.clip(np.rint(a / 2.0 ** e), -127, 127).astype(np.int64)
            name = f"{p}->readout" + (f"@{lag}" if lag else "")
            syns.append(Synapse(name, p, "readout", 2 * mm if mixed else mm,
                                graded=pops[p].kind in ("accum", "graded"), step_lag=lag))
            rep.synapses[name] = SynapseStats(name, 0, True, err)
        logit_scale = 2.0 ** e / (2 if mixed else 1)
    else:
        logit_scale = unit[plan.readout]
    try:
        assign_depths(pops, syns, inputs)
        _pre_window_biases(pops, syns, inputs, rep)
    except QGraphError as e:
        raise NIRGraphError(f"cannot lower to Loihi 2: {e}") from None
    for name, (o, i, nnz) in plan.unrolled.items():
        node = plan.flat.nodes[name]
        w = np.asarray(getattr(node, "weight", np.zeros(0)))
        rep.notes.append(f"{name} ({node_type(node)}) unrolled into a {o} x {i} matrix with "
                         f"{nnz:,} non-zero weights, each a Loihi 2 synapse"
                         + (f" (the convolution has {w.size:,} shared weights)" if w.size else ""))
    meta = {"model": "foreign", "output": plan.output, "dt": plan.dt,
            "recurrent_edges": [list(e) for e in plan.recurrent]}
    # context 1: one sample is one window of `steps` steps from rest (QGraph.single_window)
    q = QGraph(pops, syns, steps, inputs, plan.readout, logit_scale, 1, meta)
    for s in rep.synapses.values():
        if s.rounding_error > 0:
            rep.warnings.append(f"synapse {s.name}: weights rounded to 8-bit mantissas "
                                f"(max relative error {s.rounding_error:.2%})")
    return q.validate(), rep


def _bias_population(pops: Dict[str, Population], inputs: List[str], unit: dict) -> None:
    """The one-neuron input the host holds at 1 during a window (constant currents)."""
    if BIAS not in pops:
        pops[BIAS] = Input(BIAS, 1, layer=BIAS, role="bias (held at 1)")
        inputs.append(BIAS)
        unit[BIAS] = 1.0


def _pre_window_biases(pops, syns, inputs, rep: QuantReport) -> None:
    """A population at depth d integrates its bias for d steps before its window; LIFReset
    clears u, v at the window's first step, so that is harmless unless it spikes then *and*
    a self-loop or delayed synapse carries the spike into the window. Such a bias comes
    from the host input instead (exact: LIF/IF add the input current to v directly)."""
    moved = False
    for p in list(pops.values()):
        if p.kind != "lif" or not p.has_bias or not p.depth:
            continue
        lagged = [s for s in syns if s.src == p.name and s.step_lag]
        if not lagged or not bias_fires_from_rest(p, p.depth):
            continue
        if p.du != DECAY_MAX:
            raise UserError(f"{p.name}: its bias fires it before its window starts (depth "
                            f"{p.depth}) and its delayed or recurrent output would carry that "
                            "into the window; a CubaLIF cannot take the bias from the host "
                            "(it would enter the synaptic current): lower the bias")
        b = p.bias().astype(np.float64) / 64.0             # the same v increment, as a<<6
        m, e, _ = pow2_grid(b[:, None])
        mixed = m.min() < 0 < m.max()
        if BIAS not in pops:
            pops[BIAS] = Input(BIAS, 1, layer=BIAS, role="bias (held at 1)")
            inputs.append(BIAS)
        syns.append(Synapse(f"{BIAS}->{p.name}", BIAS, p.name, (2 * m if mixed else m),
                            weight_exp=int(e - (1 if mixed else 0))))
        p.bias_mant, p.bias_exp = 0, 0
        rep.notes.append(f"{p.name}: its bias alone would fire it in the {p.depth} steps "
                         "before its window and a self-loop or delay would carry that in; the "
                         "bias comes from the host input held at 1 instead")
        moved = True
    if moved:
        assign_depths(pops, syns, inputs)
