"""A fast bit-exact emulator of a ``QGraph`` in global time, as Lava runs it.

Lava executes every process at every global step ``g`` (``time_step = g + 1``):

* a ``Dense`` delivers at ``g + 1`` what its source sent at ``g`` (it sends
  last step's accumulation first); a ``DelayDense`` with delay k at
  ``g + 1 + k`` (``PyDelayDenseModelBitAcc``'s rolling buffer). Here a synapse is
  applied when its delivery is due: at step ``g`` it reads its source's output of
  step ``g - 1 - delay`` (the last step's outputs, or a short history of the
  source's outputs for delayed synapses) into its port;
* ``LIFReset(reset_interval=W, reset_offset=(depth + 1) % W)`` clears u, v
  before integrating when ``(g + 1) % W == (depth + 1) % W``, i.e. ``g ≡ depth``;
* ``accum`` is a ``GradedVec(vth=0)`` with a weight-1 graded ``Dense``
  self-loop (and a decaying one a second, ``-diag(decay)`` with weight_exp
  ``-decay_exp``): ``out[g] = out[g-1] + ((-decay * out[g-1]) >> decay_exp) + a[g]``
  (``fixed_point.accum_step``); it decays at every step, input-free ones included;
* the host injects the frame of ``(n, t)`` at ``g = n*W + t`` (``t < T``) and
  zero frames for ``T <= t < W``; the readout of ``(n, t)`` appears at
  ``g = n*W + t + depth(readout)``.

Every step is simulated, silent ones included (decays, the attention memory
held), with the arithmetic of ``fixed_point`` shared with the token-time
reference. Sequences are batched (API tensors are batch first); tokens of one
sequence are not (each window follows the previous one step by step).

Two engines run this schedule bit for bit alike: ``emulator_numpy.NumpyEngine``
(CPU default: event-driven per population, numpy's small per-op cost) and the
stacked torch engine below (CUDA, with CUDA graphs; any device).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np
import torch

from snn_compile.compiler.qgraph import POPULATION_TYPES, QGraph, QGraphError, check_streamable
from snn_compile.errors import UserError
from snn_compile.hw_sim.emulator_numpy import NumpyEngine
from snn_compile.hw_sim.int_reference import GraphPlan, _as_long, input_frames, plan_graph
from snn_compile.hw_sim.probes import count_windows, window_frames_from_global
from snn_compile.hw_sim.token_engine import token_engine
from snn_compile.loihi import fixed_point as fx

ENGINES = ("numpy", "torch")


def default_engine(device) -> str:
    """The emulator engine a device gets unless one is named: numpy (event-driven) on the
    CPU, torch (stacked, CUDA graphs) elsewhere."""
    return "numpy" if torch.device(device).type == "cpu" else "torch"


def default_backend_engine(device, probes: bool = False) -> str:
    """The engine ``EmulatorBackend`` gets unless one is named: the token-time engine on
    the CPU without probes (the fastest at batch 1), else ``default_engine``."""
    return "token" if torch.device(device).type == "cpu" and not probes \
        else default_engine(device)


@dataclass
class EmuRun:
    """A whole-sequence run: outputs in global time (B, G, size), re-indexed to token
    time (B, N, T, size) via ``g = n*W + t + depth``; integer/float logits (B, N, V)."""

    global_outputs: Dict[str, torch.Tensor]
    outputs: Dict[str, torch.Tensor]
    logits_int: torch.Tensor
    logits: torch.Tensor
    steps: int = 0
    window: int = 0



def _const(vals, dev):
    """One int for a kind's populations if they agree, else a per-neuron (n, 1) tensor."""
    flat = np.concatenate(vals) if vals else np.zeros(0, np.int64)
    if flat.size == 0 or (flat == flat[0]).all():
        return int(flat[0]) if flat.size else 0
    return torch.as_tensor(flat, device=dev)[:, None]


class Emulator:
    """Global-time execution of a QGraph for ``batch`` sequences on ``device``.

    ``reset()``; ``step_token(tokens (B,)) -> (B, V)`` readout sums of one token
    window; ``run_sequence(tokens (B, N)) -> EmuRun``. ``strict=False`` accepts
    graphs that are not streamable (``check_streamable``): the global-time run
    is still Lava's, but its token-time view no longer equals the reference.

    Two engines execute the same schedule, bit for bit. ``engine="numpy"``
    (default on the CPU; ``emulator_numpy.NumpyEngine``) is event-driven per
    population and pays numpy's small per-op cost: the fast one at small
    batch. ``engine="torch"`` (the only one on CUDA) executes every population
    at every step, stacked per kind, as below.

    Torch engine layout (docs/emulator.md, "State layout"): the populations of one kind
    are stacked in depth order into one (neurons, B) state: ``X`` (all outputs, float64:
    exact for int32 values) feeds the synapses; ``A`` (all input ports, int64) is
    rebuilt at each step from the synapses due then; ``u``, ``v`` (LIFs), ``acc``
    (accums), int32 (what Lava's arithmetic keeps them within). A synapse of delay
    k > 0 reads ``hist[source]``: the source's outputs at the residues (g mod W) where
    it can be non-zero, for as many windows back as its delays reach, in uint8 for
    spikes, int32 for graded values (exact), moved one window back at each window's
    start. ``state_bytes()`` gives the bytes.

    Which populations can be non-zero at which residue g mod W is static (``_activity``:
    inputs at t < T, shifted by every synapse's 1 + delay; a prod needs both ports; a lazy
    LIF, without bias or leaky current, cannot spike without input; an accum holds its
    value); each step updates only those (a lazy LIF from its LIFReset to its last input
    step), and evaluates only the synapses whose source can have sent something, so
    that one schedule per residue serves every window. One-weight synapses (identity,
    replication, per-channel scales) reading one source tensor are one gather; float64
    matmuls reading one source tensor, one matmul. Port sums are wrapped to int32 where
    they are read (two's-complement sums commute with the wrap). Without recording, a
    decaying accum's drain steps wait until it is next read or fed (or the window's last
    step) and run at once; ``fused`` (default on CUDA) runs each elementwise chain (accum
    step with its drains, prod, LIF, gather, wrap) as one ``torch.compile`` kernel.

    ``event_driven`` (default: on CPU) also skips, at each step, the synapses whose
    source tensor is all zero, as Loihi does. On a GPU the check would cost a device
    sync per step; there ``cuda_graphs`` (default on CUDA) replays each token window as
    one captured graph instead (not while recording): the schedule depends on g mod W
    only, so one graph serves every window, captured after one eager window (no copy
    of the state).
    """

    def __init__(self, qgraph: QGraph, batch: int = 1, device="cpu",
                 plan: Optional[GraphPlan] = None, strict: bool = True,
                 event_driven: Optional[bool] = None, cuda_graphs: Optional[bool] = None,
                 engine: Optional[str] = None, fused: Optional[bool] = None):
        if strict:
            check_streamable(qgraph)
        self.q = qgraph
        self.plan = plan or plan_graph(qgraph, device)
        self.dev = dev = self.plan.device
        self.B = int(batch)
        self.T, self.W = qgraph.steps_per_token, qgraph.window
        self.d_out = qgraph.pop(qgraph.readout).depth
        self.max_depth = max(p.depth for p in qgraph.populations.values())
        self.vocab_size = qgraph.pop(qgraph.readout).size
        self.engine = engine or default_engine(dev)
        if self.engine not in ENGINES:
            raise ValueError(f"engine {engine!r}: choose one of {', '.join(ENGINES)}")
        self.record: Optional[list] = None
        self.record_states = False
        if self.engine == "numpy":
            if dev.type != "cpu" or event_driven is False or cuda_graphs:
                raise ValueError("the numpy engine runs on the CPU and is always event-driven; "
                                 "use engine='torch' for event_driven=False or CUDA graphs")
            self._np = NumpyEngine(qgraph, self.plan, self.B)
            self.xrows = {n: None for n in self._np.names}
            self.event_driven, self.cuda_graphs, self.L = True, False, self._np.L
            self.fused = False
            self.reset()
            return
        self._build_torch()
        self.fused = (dev.type == "cuda") if fused is None else bool(fused)
        self.event_driven = (dev.type == "cpu") if event_driven is None else bool(event_driven)
        if self.event_driven and dev.type != "cpu":
            raise ValueError("event_driven needs the CPU (it reads X from host memory)")
        self.cuda_graphs = (dev.type == "cuda") if cuda_graphs is None else bool(cuda_graphs)
        if self.cuda_graphs and (dev.type != "cuda" or self.event_driven):
            raise ValueError("cuda_graphs needs a CUDA device and event_driven=False")
        self.reset()

    # ------------------------------------------------------ torch engine layout
    def _build_torch(self) -> None:
        """Rows, constants, activity sets, source histories and the per-residue schedules
        of the torch engine (class doc)."""
        qgraph, W = self.q, self.W
        self.kinds = tuple(POPULATION_TYPES)       # input first; lif ... accum, new kinds
        # populations of one kind stacked in depth order: the ones a step computes are
        # mostly one contiguous run of rows
        pops = {k: sorted((qgraph.pop(n) for n in self.plan.order if qgraph.pop(n).kind == k),
                          key=lambda p: p.depth) for k in self.kinds}
        self.pops_by_kind = pops
        # ---- output rows (X) and input-port rows (A), contiguous per kind
        self.xrows: Dict[str, slice] = {}
        self.kind_rows: Dict[str, slice] = {}
        r = 0
        for k in self.kinds:
            r0 = r
            for p in pops[k]:
                self.xrows[p.name] = slice(r, r + p.size)
                r += p.size
            self.kind_rows[k] = slice(r0, r)
        self.n_out = r
        self.prow: Dict[tuple, slice] = {}
        r = 0
        for k, port in ((k, port) for k in self.kinds if k != "input"
                        for port in POPULATION_TYPES[k].ports):
            for p in pops[k]:
                self.prow[(p.name, port)] = slice(r, r + p.size)
                r += p.size
        self.n_in = r
        l0 = self.kind_rows["lif"].start
        a0 = self.kind_rows["accum"].start
        self.n_lif = self.kind_rows["lif"].stop - l0
        self.n_acc = self.kind_rows["accum"].stop - a0
        # ---- per-row neuron constants (sliced per run of computed rows)
        rowc: Dict[str, np.ndarray] = {}
        for key in ("fu", "fv", "vth6", "bias", "decay", "dexp"):
            rowc[key] = np.zeros(self.n_out, np.int64)
        self.lazy: Dict[str, bool] = {}
        for p in pops["lif"]:
            c, xr = self.plan.lif[p.name], self.xrows[p.name]
            rowc["fu"][xr] = fx.per_neuron(c.fu, p.size)
            rowc["fv"][xr] = fx.per_neuron(c.fv, p.size)
            rowc["vth6"][xr] = fx.per_neuron(c.vth6, p.size)
            rowc["bias"][xr] = fx.per_neuron(c.bias, p.size)
            # without input it cannot spike: u -> 0 (du = 4095), no bias, v only decays and
            # stays <= vth << 6 (emulator_numpy's lazy LIFs); needs vth >= 0
            self.lazy[p.name] = bool((rowc["fu"][xr] == 0).all() and (rowc["bias"][xr] == 0).all()
                                     and (rowc["vth6"][xr] >= 0).all())
        for kind, rule in (*fx.ELEMENTWISE.items(), *fx.STATEFUL.items()):   # kinds' fields
            for f in rule.params:
                rowc[f"{kind}.{f}"] = col = np.zeros(self.n_out, np.int64)
                for p in pops.get(kind, ()):
                    col[self.xrows[p.name]] = np.asarray(getattr(p, f), np.int64)
        for p in pops["accum"]:
            if p.decaying:
                rowc["decay"][self.xrows[p.name]] = np.asarray(p.decay, np.int64)
                rowc["dexp"][self.xrows[p.name]] = p.decay_exp
        self._rowc = rowc
        # ---- the state arrays of fx.STATEFUL kinds: rows of one int64 tensor S
        self.srows: Dict[str, list] = {}
        r = 0
        for kind, rule in fx.STATEFUL.items():
            for p in pops.get(kind, ()):
                self.srows[p.name] = [slice(r + i * p.size, r + (i + 1) * p.size)
                                      for i in range(len(rule.state))]
                r += len(rule.state) * p.size
        self.n_state = r
        # ---- synapses: (kernel, source, dst port key, port rows, ahead = 1 + delay)
        self.syns = []
        self.port_bound_none: Dict[tuple, bool] = {}
        self.max_ahead = 1
        for name in self.plan.order:
            for port, pp in self.plan.ports[name].items():
                self.port_bound_none[(name, port)] = pp.bound is None and bool(pp.synapses)
                for k, src in zip(pp.synapses, pp.srcs):
                    self.syns.append((k, src, (name, port), self.prow[(name, port)], 1 + k.delay))
                    self.max_ahead = max(self.max_ahead, 1 + k.delay)
        self.L = self.max_ahead + 1          # the latency span (the old ring's depth)
        # ---- activity: residues g mod W at which each output may be non-zero
        self.active = self._activity()
        # ---- source histories: the outputs of the residues a delayed synapse reads
        self.hist_meta: Dict[str, tuple] = {}   # src -> (index, K windows, {residue: slot}, dtype)
        need: Dict[str, int] = {}
        for k, src, _, _, ahead in self.syns:
            if ahead >= 2 and self.active[src]:
                d = max((r + ahead) // W for r in self.active[src])
                need[src] = max(need.get(src, 0), d)
        for i, (src, d) in enumerate(sorted(need.items(), key=lambda kv: self.xrows[kv[0]].start)):
            kind = qgraph.pop(src).kind
            # exact narrow types: spikes are 0/1; graded outputs are int32-valued; injected
            # input frames are whatever the caller gave (kept in X's float64)
            dt = torch.float64 if kind == "input" else torch.int32 \
                if POPULATION_TYPES[kind].graded else torch.uint8
            res = sorted(self.active[src])
            self.hist_meta[src] = (i, d + 1, {r: j for j, r in enumerate(res)}, dt)
        self._wcache: Dict[tuple, torch.Tensor] = {}
        self._plans: Dict[int, list] = {}
        self._plan_for(0)

    def _activity(self) -> Dict[str, frozenset]:
        """Least fixpoint of the residues (g mod W) at which each population may output
        something non-zero; every step is one of its window's residues.

        input: the T injection steps; a synapse delivers its source's residues shifted by
        1 + delay; lif (lazy: no input, no spike): any port input; a stateless kind
        (``fx.ELEMENTWISE``): any port's input, or every port's where it needs all (a
        prod: ``0 * a = 0``); accum (and a ``fx.STATEFUL`` kind that is not quiet): every
        residue once any input arrives (it holds its value); a quiet stateful kind: any
        port's input;
        a LIF that can fire without input (bias, leaky current, vth < 0): every residue.
        """
        q, W = self.q, self.W
        ALL = frozenset(range(W))
        act: Dict[str, frozenset] = {}
        for n in self.plan.order:
            p = q.pop(n)
            act[n] = frozenset(range(min(self.T, W))) if p.kind == "input" else \
                ALL if p.kind == "lif" and not self.lazy[n] else frozenset()
        changed = True
        while changed:
            changed = False
            for n in self.plan.order:
                p = q.pop(n)
                if p.kind == "input" or (p.kind == "lif" and not self.lazy[n]):
                    continue
                ports = [self._port_active(n, port, act) for port in self.plan.ports[n]]
                rule = fx.ELEMENTWISE.get(p.kind)
                srule = fx.STATEFUL.get(p.kind)
                if rule is not None and rule.needs_all_ports:
                    new = frozenset.intersection(*ports) if ports else frozenset()
                elif p.kind == "accum" or (srule is not None and not srule.quiet):
                    new = ALL if any(ports) else frozenset()
                else:
                    new = frozenset().union(*ports)
                if new != act[n]:
                    act[n], changed = new | act[n], True
        return act

    def _port_active(self, name: str, port: str, act) -> frozenset:
        """Residues at which a port may receive something (its sources' shifted)."""
        pp, W = self.plan.ports[name][port], self.W
        return frozenset((r + 1 + k.delay) % W for k, s in zip(pp.synapses, pp.srcs)
                         for r in act[s])

    def _computed(self, p, mode: int) -> frozenset:
        """Residues at which population ``p`` is updated (the others provably leave it at
        zero output, or unchanged for an accum).

        A lazy LIF is updated from its ``LIFReset`` step (g ≡ depth) up to its last step of
        possible input in the window; after it no input comes, so it cannot spike, and its
        u, v are cleared before they are read again. Mode 2 (recording u, v) updates
        every LIF at every step, as Lava does. Mode 0 (nothing recorded) defers a decaying
        memory's drain steps (``_deferrable``) to the next step it is read or fed, or the
        window's last."""
        W, n = self.W, p.name
        ALL = frozenset(range(W))
        if p.kind in fx.STATEFUL:            # its state may change at every step
            return ALL
        if p.kind == "lif":
            if mode == 2 or not self.lazy[n]:
                return ALL
            inp = self._port_active(n, "a_in", self.active) if "a_in" in self.plan.ports[n] \
                else frozenset()
            if not inp:
                return frozenset()
            rho = p.depth % W
            m = max((r - rho) % W for r in inp)
            return frozenset((rho + j) % W for j in range(m + 1))
        if p.kind == "accum":
            fed = self._port_active(n, "a_in", self.active) if "a_in" in self.plan.ports[n] \
                else frozenset()
            if p.decaying and self.active[n]:
                if mode == 0 and self._deferrable(n):
                    return fed | self._read_at(n) | {W - 1}
                return ALL
            return fed
        return self.active[n]

    def _plan_for(self, mode: int) -> list:
        """The schedule of each residue r = g mod W (cached): which ports get which synapse
        contributions, which runs of rows update, which outputs go to zero, which outputs
        the histories keep. It depends on r only, so every window runs the same code."""
        if mode in self._plans:
            return self._plans[mode]
        q, W = self.q, self.W
        comp = {n: self._computed(q.pop(n), mode) for n in self.plan.order
                if q.pop(n).kind != "input"}
        plans = []
        for r in range(W):
            ops, written = [], np.zeros(self.n_in, bool)
            need = np.zeros(self.n_in, bool)
            for (name, port), rows in self.prow.items():
                if r in comp[name] and (q.pop(name).kind != "accum" or self._fed(name, r)):
                    need[rows] = True
            # live synapses: destination updated at r, source possibly non-zero at g - ahead
            groups: Dict[tuple, list] = {}
            for i, (k, src, pk, rows, ahead) in enumerate(self.syns):
                if r not in comp[pk[0]] or (r - ahead) % W not in self.active[src]:
                    continue
                groups.setdefault((self._src_key(src, r, ahead), k.mode == "gather"),
                                  []).append(i)
            for (key, is_gather), idx in groups.items():
                if is_gather:
                    ops.append(self._gather_op(key, idx, written))
                else:
                    ops += self._dense_ops(key, idx, written)
            for a, b in _runs(np.flatnonzero(need & ~written)):
                ops.append(("zero", slice(a, b)))
            wraps = []
            for (name, port), rows in self.prow.items():
                if r in comp[name] and self.port_bound_none.get((name, port), False):
                    wraps.append(rows)
            neur = self._neuron_ops(r, comp, mode)
            xzero = []
            for n, c in comp.items():
                if q.pop(n).kind != "accum" and r not in c and (r - 1) % W in c:
                    xzero.append(self.xrows[n])
            hist = [(src, meta[0], meta[2][r], self.xrows[src])
                    for src, meta in self.hist_meta.items() if r in meta[2]]
            plans.append({"ports": ops, "wrap": _merge(wraps), "neurons": neur,
                          "xzero": _merge(xzero), "hist": hist})
        self._plans[mode] = plans
        return plans

    def _src_key(self, src: str, r: int, ahead: int) -> tuple:
        """Where a synapse read at residue r finds its source's output of step g - ahead:
        (-1, X rows) for the last step's output, else (history, window slot, residue slot)."""
        if ahead == 1:
            return (-1, self.xrows[src].start, self.xrows[src].stop)
        h, K, slots, _ = self.hist_meta[src]
        d = -((r - ahead) // self.W)               # windows back
        return (h, K - 1 - d, slots[(r - ahead) % self.W])

    @staticmethod
    def _dst(rows_list, written) -> tuple:
        """Destination of contributions to ``rows_list`` (port slices in order): a slice
        when they tile one range, else an index tensor; 'set' where nothing was written
        there yet (marks them), else 'add'."""
        idx = np.concatenate([np.arange(s.start, s.stop) for s in rows_list])
        uniq = np.unique(idx).size == idx.size
        if uniq and not written[idx].any():
            mode = "set"
        else:
            mode = "add"
        written[idx] = True
        if uniq and (np.diff(idx) == 1).all():
            return slice(int(idx[0]), int(idx[-1]) + 1), mode, None
        return None, mode, idx

    def _gather_op(self, key, members, written) -> tuple:
        """One index_select + write for all one-weight synapses reading one source tensor."""
        dev = self.dev
        members = sorted(members, key=lambda i: self.syns[i][3].start)
        ks = [self.syns[i][0] for i in members]
        rows = [self.syns[i][3] for i in members]
        pre = self._pre_zero(rows, written)
        sl, mode, didx = self._dst(rows, written)
        src = np.concatenate([k.idx.cpu().numpy() for k in ks])
        val = np.concatenate([k.val.cpu().numpy() for k in ks])
        exps = np.concatenate([np.full(s.stop - s.start, k.exp) for k, s in zip(ks, rows)])
        inner = any(k.inner_wrap for k in ks)
        unit = bool((val == 1).all())
        contig = unit and not inner and not exps.any() and bool((np.diff(src) == 1).all())
        t = lambda a: torch.as_tensor(a, device=dev)  # noqa: E731
        return ("gather", key, pre,
                slice(int(src[0]), int(src[-1]) + 1) if contig else t(src),
                None if unit else t(val)[:, None],
                t(exps.clip(min=0))[:, None] if (exps > 0).any() else None,
                t((-exps).clip(min=0))[:, None] if (exps < 0).any() else None,
                inner, sl, mode, None if didx is None else t(didx))

    def _dense_ops(self, key, members, written) -> list:
        """Float64 matmuls reading one source tensor, merged into one per (inner wrap,
        exponent) class; DelayDense/int64 kernels (``generic``) one by one."""
        ops, cls = [], {}
        for i in sorted(members, key=lambda i: self.syns[i][3].start):
            k = self.syns[i][0]
            if k.mode == "dense" and k.float:
                w, e = k.wt.T, k.exp
                if 0 < e and float(w.abs().sum(1).max()) * 2 ** (e + 31) < fx.F64_EXACT:
                    e = 0                               # exact: the left shift folded in
                cls.setdefault((bool(k.inner_wrap), e), []).append(i)
            else:
                rows = self.syns[i][3]
                pre = self._pre_zero([rows], written)
                sl, mode, _ = self._dst([rows], written)
                ops.append(("generic", key, pre, k, sl, mode))
        for (inner, e), lst in cls.items():
            ck = tuple(lst)
            if ck not in self._wcache:
                ws = []
                for i in lst:
                    k = self.syns[i][0]
                    w = k.wt.T
                    if k.exp != e:
                        w = w * 2 ** k.exp
                    ws.append(w)
                self._wcache[ck] = torch.cat(ws).contiguous()
            outs, o = [], 0
            for i in lst:
                rows = self.syns[i][3]
                pre = self._pre_zero([rows], written)
                sl, mode, _ = self._dst([rows], written)
                n = rows.stop - rows.start
                outs.append((o, o + n, pre, sl, mode))
                o += n
            ops.append(("dense", key, self._wcache[ck], inner, e, outs))
        return ops

    @staticmethod
    def _pre_zero(rows_list, written) -> list:
        """Zero-fills (slices) before contributions to ``rows_list`` that must add: rows
        not written yet, where others are (or where two contributions share rows)."""
        idx = np.concatenate([np.arange(s.start, s.stop) for s in rows_list])
        pre = []
        w = written[idx]
        if np.unique(idx).size != idx.size or (w.any() and not w.all()):
            pre = [slice(a, b) for a, b in _runs(np.unique(idx[~w]))]
            written[idx] = True
        return pre

    def _neuron_ops(self, r: int, comp, mode: int) -> list:
        """Updates at residue r, one op per kind and run of contiguous computed rows."""
        W, rc = self.W, self._rowc
        ops = []
        l0, a0 = self.kind_rows["lif"].start, self.kind_rows["accum"].start
        for kind in self.kinds[1:]:
            sel = [p for p in self.pops_by_kind[kind] if r in comp[p.name]]
            # accum runs: alike in being fed now and in the drain steps they catch up
            fed = {p.name: (kind != "accum" or self._fed(p.name, r),
                            _behind(comp[p.name], r, W) if kind == "accum" and p.decaying
                            else 0) for p in sel}
            if kind in fx.STATEFUL:          # one op per population: its own state rows
                for p in sel:
                    xs = self.xrows[p.name]
                    c = lambda key: _const([rc[key][xs]], self.dev)  # noqa: E731
                    ops.append(("state", xs, kind, tuple(self.prow[(p.name, pt)]
                                                         for pt in POPULATION_TYPES[kind].ports),
                                self.srows[p.name],
                                tuple(c(f"{kind}.{f}") for f in fx.STATEFUL[kind].params),
                                self.plan.elem_wrap[p.name],
                                fx.STATEFUL[kind].reset_each_token and p.depth % W == r))
                continue
            for run in _pop_runs(sel, self.xrows, fed):
                xs = slice(self.xrows[run[0].name].start, self.xrows[run[-1].name].stop)
                c = lambda key: _const([rc[key][xs]], self.dev)  # noqa: E731
                if kind == "lif":
                    ls = slice(xs.start - l0, xs.stop - l0)
                    resets = _merge([slice(self.xrows[p.name].start - l0,
                                           self.xrows[p.name].stop - l0)
                                     for p in run if p.depth % W == r])
                    lp = [self.plan.lif[p.name] for p in run]
                    prm = fx.LifParams(c("fu"), c("fv"), c("vth6"), c("bias"),
                                       any(x.act_wrap for x in lp), any(x.u_wrap for x in lp),
                                       any(x.v_wrap for x in lp))
                    fast = (isinstance(prm.fu, int) and prm.fu == 0 and isinstance(prm.bias, int)
                            and prm.bias == 0 and not (prm.act_wrap or prm.u_wrap or prm.v_wrap))
                    ops.append(("lif", xs, self._prows(run, "a_in"), ls, resets, prm, fast,
                                mode == 2 or not fast))
                elif kind in fx.ELEMENTWISE:
                    rule = fx.ELEMENTWISE[kind]
                    ports = POPULATION_TYPES[kind].ports
                    ops.append(("elem", xs, kind, tuple(self._prows(run, pt) for pt in ports),
                                tuple(c(f"{kind}.{f}") for f in rule.params),
                                any(self.plan.elem_wrap[p.name] for p in run)))
                elif kind == "accum":
                    ar = slice(xs.start - a0, xs.stop - a0)
                    dec = any(p.decaying for p in run)
                    ops.append(("accum", xs, self._prows(run, "a_in") if fed[run[0].name][0]
                                else None, ar, fed[run[0].name][1],
                                c("decay") if dec else None, c("dexp") if dec else 0,
                                any(self.plan.accum_wrap[p.name] for p in run)))
                else:
                    raise QGraphError(f"population kind {kind!r} is stateful and has no "
                                      "rule (give it an entry in fixed_point.STATEFUL)")
        return ops

    def _deferrable(self, name: str) -> bool:
        """Whether a decaying accum's drain steps may wait: read by no delayed synapse (its
        history would need every step) and not the readout."""
        return name != self.q.readout and all(
            ahead == 1 for _, src, _, _, ahead in self.syns if src == name)

    def _read_at(self, name: str) -> set:
        """Residues whose output of ``name`` some synapse reads (mode 0, ahead 1)."""
        W, out = self.W, set()
        for _, src, (dst, _), _, ahead in self.syns:
            if src == name:
                out |= {(r - ahead) % W for r in self._computed(self.q.pop(dst), 0)}
        return out

    def _fed(self, name: str, r: int) -> bool:
        """Whether a synapse may deliver something to ``name``'s a_in port at residue r."""
        return "a_in" in self.plan.ports[name] and \
            r in self._port_active(name, "a_in", self.active)

    def _prows(self, run, port) -> slice:
        return slice(self.prow[(run[0].name, port)].start, self.prow[(run[-1].name, port)].stop)

    # ------------------------------------------------------------- state
    def reset(self) -> None:
        """Zero every state (synaptic buffers, LIF u/v, memories); next token is n = 0."""
        B, dev, z = self.B, self.dev, torch.zeros
        self.g = 0
        self.n = 0
        self._mode = None
        if self.engine == "numpy":
            self._np.reset()
            return
        if not hasattr(self, "X"):       # allocated once: captured CUDA graphs keep addresses
            self.X = z(self.n_out, B, dtype=torch.float64, device=dev)
            self.A = z(self.n_in, B, dtype=torch.int64, device=dev)
            # u wraps to 24 bits, v is clipped to 24, a memory is int32 by Lava's own
            # arithmetic: int32 storage is exact; the kernels widen to int64 on load
            self.u = z(self.n_lif, B, dtype=torch.int32, device=dev)
            self.v = z(self.n_lif, B, dtype=torch.int32, device=dev)
            self.acc = z(self.n_acc, B, dtype=torch.int32, device=dev)
            self.S = z(self.n_state, B, dtype=torch.int64, device=dev)   # fx.STATEFUL states
            self.hist = [None] * len(self.hist_meta)
            for src, (h, K, slots, dt) in self.hist_meta.items():
                self.hist[h] = z(K, len(slots), self.q.pop(src).size, B, dtype=dt, device=dev)
        for t in self._state():
            t.zero_()
        if self.record is not None:
            self.record = []

    def _state(self):
        return (self.X, self.A, self.u, self.v, self.acc, self.S, *self.hist)

    def state_bytes(self, per_sequence: bool = False):
        """Bytes of the torch engine's tensors that live from step to step, by name
        (``X`` outputs, ``A`` port sums, ``u``, ``v``, ``acc``, ``S`` the states of
        ``fx.STATEFUL`` kinds, ``hist.<source>``) and
        ``total``; ``per_sequence`` divides by the batch. (numpy engine: ``None``.)"""
        if self.engine == "numpy":
            return None
        res = {"X": self.X, "A": self.A, "u": self.u, "v": self.v, "acc": self.acc,
               "S": self.S}
        res.update({f"hist.{s}": self.hist[m[0]] for s, m in self.hist_meta.items()})
        out = {k: t.numel() * t.element_size() for k, t in res.items()}
        out["total"] = sum(out.values())
        if per_sequence:
            out = {k: v / self.B for k, v in out.items()}
        return out

    def ring_layout_bytes(self) -> int:
        """Bytes the previous layout would take (outputs float64, a ring of L = max(1 +
        delay) + 1 int64 slots of every input port, u, v, accum values): for comparison."""
        return 8 * self.B * (self.n_out + self.L * self.n_in + 2 * self.n_lif + self.n_acc)

    def start_recording(self, states: bool = False) -> None:
        """Keep every population's output of every following step (for probes/tests);
        ``states`` also keeps each LIF's u and v after the step (as ``name.u``, ``name.v``).
        Call it right after ``reset()`` for u, v equal to Lava's at every step (the torch
        engine updates a LIF between its windows' inputs only while states are recorded)."""
        self.record = []
        self.record_states = states
        if self.engine == "numpy":
            self._np.record, self._np.record_states = [], states
        elif states:
            self._plan_for(2)

    def stop_recording(self) -> None:
        """Drop the recording and stop recording."""
        self.record = None
        if self.engine == "numpy":
            self._np.record = None

    # -------------------------------------------------------------- step
    def step(self, inject: Optional[Dict[str, torch.Tensor]] = None) -> None:
        """One global step ``g``: every synapse whose delivery is due adds its source's
        output of step ``g - 1 - delay`` into its port, then the populations update.
        (torch engine: inputs are injected at the T first steps of a window only.)"""
        if self.engine == "numpy":
            self._np.step(None if not inject else
                          {k: _np_frame(f) for k, f in inject.items()})
            self.g = self._np.g
            return
        g, X, A, W = self.g, self.X, self.A, self.W
        r = g % W
        mode = 0 if self.record is None else 2 if self.record_states else 1
        if mode != self._mode and r and self._mode is not None and 0 in (mode, self._mode):
            # an unrecorded window defers drain steps: switch only where none is pending
            raise RuntimeError("recording started or stopped inside a token window; call "
                               "reset() (or switch between windows)")
        self._mode = mode
        plan = self._plan_for(mode)[r]
        if r == 0:                       # a new window: the histories move one window back
            for hist in self.hist:
                for k in range(hist.shape[0] - 1):
                    hist[k].copy_(hist[k + 1])
        # ---- ports: the synapses due now, from last step's X or a history
        ev, fused = self.event_driven, self.fused
        for op in plan["ports"]:
            kind, key = op[0], op[1]
            if kind == "zero":                                 # rows no synapse feeds now
                A[key].zero_()
                continue
            if kind != "dense":
                for s in op[2]:
                    A[s].zero_()
            src = X[key[1]:key[2]] if key[0] < 0 else self.hist[key[0]][key[1], key[2]]
            if kind == "gather":
                _, _, _, idx, val, lsh, rsh, inner, sl, mode, didx = op
                if ev and not bool(src.any()):
                    if mode == "set":
                        if sl is not None:
                            A[sl].zero_()
                        else:
                            A.index_fill_(0, didx, 0)
                    continue
                if fused and not isinstance(idx, slice):
                    if sl is not None:
                        _run("gather", True, A[sl], src, idx, val, lsh, rsh, inner,
                             mode == "add")
                    else:                   # scattered port rows: gather and scatter at once
                        _run("gather_to", True, A, src, idx, val, lsh, rsh, inner, didx,
                             mode == "add")
                    continue
                y = src[idx] if isinstance(idx, slice) else src.index_select(0, idx)
                plain = val is None and lsh is None and rsh is None and not inner
                if not (plain and mode == "set" and sl is not None):
                    y = _gathered(y, val, lsh, rsh, inner)
                _write(A, y, sl, mode, didx)
            elif kind == "dense":
                _, _, w, inner, e, outs = op
                if ev and not bool(src.any()):
                    for o0, o1, pre2, sl, mode in outs:
                        for s in pre2:
                            A[s].zero_()
                        if mode == "set":
                            A[sl].zero_()
                    continue
                if src.dtype != torch.float64:
                    src = src.to(torch.float64)
                y = w @ src
                if fused:             # the int64 conversion, wrap, shift and write: one kernel
                    for o0, o1, pre2, sl, mode in outs:
                        for s in pre2:
                            A[s].zero_()
                        _run("dense", True, A[sl], y[o0:o1], inner, e, mode == "add")
                    continue
                if inner or e or len(outs) > 1 or outs[0][4] == "add":
                    y = y.to(torch.int64)
                    if inner:
                        y = fx.wrap32(y)
                    if e:
                        y = fx.shift(y, e)
                for o0, o1, pre2, sl, mode in outs:
                    for s in pre2:
                        A[s].zero_()
                    _write(A, y[o0:o1], sl, mode, None)
            else:                                              # generic kernel
                _, _, _, k, sl, mode = op
                if ev and not bool(src.any()):
                    if mode == "set":
                        A[sl].zero_()
                    continue
                _write(A, k(src.T).T, sl, mode, None)
        for s in plan["wrap"]:                                 # int32 port sums
            if fused:
                _run("wrap", True, A[s])
                continue
            a = A[s]
            a.add_(fx.I32).bitwise_and_(2 * fx.I32 - 1).sub_(fx.I32)
        # ---- inputs: frames at the T first steps of a window, zero after
        if inject and r >= self.T:
            raise ValueError(f"the torch engine injects frames at the first T = {self.T} "
                             f"steps of a window only (step {g} is residue {r})")
        if r <= self.T:
            for name in self.q.inputs:
                f = inject.get(name) if inject else None
                if f is None:
                    X[self.xrows[name]].zero_()
                else:
                    X[self.xrows[name]].copy_(f.T)
        # ---- populations
        for s in plan["xzero"]:
            X[s].zero_()
        for op in plan["neurons"]:
            kind = op[0]
            if kind == "lif":
                _, xs, ps, ls, resets, prm, fast, store_u = op
                for s in resets:                             # LIFReset at g ≡ depth (mod W)
                    self.u[s].zero_()
                    self.v[s].zero_()
                a = A[ps]
                if fast and store_u:
                    self.u[ls].copy_(a).mul_(1 << fx.ACT_SHIFT)
                if fast:                 # u = a << 6; v = clip(decay(v) + u); no wraps
                    _run("lif", fused, self.v[ls], X[xs], a, prm.fv, prm.vth6)
                    continue
                _run("lif_full", fused, self.u[ls], self.v[ls], X[xs], a, prm.fu, prm.fv,
                     prm.vth6, prm.bias, prm.act_wrap, prm.u_wrap, prm.v_wrap)
            elif kind == "elem":                             # a stateless kind
                _, xs, k, ps, params, wrap = op
                _run(f"elem:{k}", fused, X[xs], wrap, params, *(A[p] for p in ps))
            elif kind == "state":                            # a fx.STATEFUL kind
                _, xs, k, ps, ss, params, wrap, reset = op
                if reset:                                    # the window's first step
                    for sl in ss:
                        self.S[sl].zero_()
                out, new = fx.STATEFUL[k].update([A[p] for p in ps], [self.S[sl] for sl in ss],
                                                 wrap, *params)
                X[xs].copy_(out)
                for sl, t in zip(ss, new):
                    self.S[sl].copy_(t)
            else:
                _, xs, ps, ar, behind, dec, dexp, wrap = op
                acc = self.acc[ar]
                if dec is None and not wrap and not fused:
                    acc.add_(A[ps])
                    X[xs].copy_(acc)
                else:       # ps None: a drain step; behind: the drain steps deferred before
                    _run("accum", fused, acc, X[xs], None if ps is None else A[ps], dec, dexp,
                         wrap, behind)
        # ---- histories keep what delayed synapses will read
        for src, h, j, xr in plan["hist"]:
            self.hist[h][-1, j].copy_(X[xr])
        if self.record is not None:
            self.record.append((X.clone(), self.u.clone(), self.v.clone())
                               if self.record_states else (X.clone(),))
        self.g = g + 1

    def output(self, name: str) -> torch.Tensor:
        """The current output (B, size) int64 of population ``name``."""
        if self.engine == "numpy":
            o = self._np.outputs()[self._np.index[name]]
            return (torch.zeros(self.B, self.q.pop(name).size, dtype=torch.int64) if o is None
                    else torch.from_numpy(o.T.astype(np.int64)))
        return self.X[self.xrows[name]].T.to(torch.int64)

    def step_frames(self, frames: Dict[str, torch.Tensor]) -> torch.Tensor:
        """One token window of W steps with frames {input: (B, T, size)}; returns the
        readout summed over the token's T steps, (B, V) int64."""
        W = self.W
        if self.g != self.n * W:
            raise RuntimeError("emulator is out of window alignment; call reset()")
        if self.q.context and self.n >= self.q.context:
            raise UserError(f"token {self.n + 1} exceeds the model's context {self.q.context}; "
                            "reset() and feed at most context tokens")
        if self.cuda_graphs and self.record is None:
            return self._replay_window(frames)
        if self.engine == "numpy":
            fr = {k: [_np_frame(f[:, t]) for t in range(self.T)] for k, f in frames.items()}
            return self._np_window(fr)
        fr = {k: v.to(self.dev, torch.float64) for k, v in frames.items()}
        sums = torch.zeros(self.vocab_size, self.B, dtype=torch.float64, device=self.dev)
        self._window(fr, sums)
        self.n += 1
        return sums.T.to(torch.int64)

    def _np_window(self, fr: Dict[str, list]) -> torch.Tensor:
        """W global steps of the numpy engine injecting ``fr`` {input: T arrays (size, B)};
        returns the readout summed over the token's T steps, (B, V) int64."""
        eng, T, d = self._np, self.T, self.d_out
        ro = eng.index[self.q.readout]
        sums = np.zeros((self.vocab_size, self.B), np.float64)
        for t in range(self.W):
            eng.step({k: v[t] for k, v in fr.items()} if t < T else None)
            if d <= t < d + T:
                o = eng.outputs()[ro]
                if o is not None:
                    sums += o
        self.g = eng.g
        self.n += 1
        return torch.from_numpy(sums.T.astype(np.int64))

    def _np_token_frames(self, tok: np.ndarray, pos: np.ndarray) -> Optional[Dict[str, list]]:
        """One-hot frames (size, B) of a token per sequence, the same at each of the T steps;
        ``None`` when ``input_frames`` must build them (or raise its error)."""
        B, q, fr = self.B, self.q, {}
        for name in q.inputs:
            ids = tok if name == "tokens" else pos if name == "positions" else None
            size = q.pop(name).size
            if ids is None or ids.min() < 0 or ids.max() >= size or (
                    name == "positions" and q.context and ids.max() >= q.context):
                return None
            oh = np.zeros((size, B), np.float64)
            oh[ids, np.arange(B)] = 1.0
            fr[name] = [oh] * self.T
        return fr

    def _window(self, fr: Dict[str, torch.Tensor], sums: torch.Tensor) -> None:
        """W global steps injecting ``fr`` {input: (B, T, size)}; readout summed into ``sums``."""
        ro = self.xrows[self.q.readout]
        for t in range(self.W):
            self.step({k: v[:, t] for k, v in fr.items()} if t < self.T else None)
            if 0 <= t - self.d_out < self.T:
                sums += self.X[ro]

    def _replay_window(self, frames: Dict[str, torch.Tensor]) -> torch.Tensor:
        """One token window as a CUDA graph: every kernel of its W steps launched at once.

        Every window runs the same schedule (it depends on g mod W only), so one graph
        serves all. The first window after construction runs eagerly on a side stream
        (the warm-up CUDA graph capture needs, with its real effect on the state: nothing
        to undo, no copy of the state); the next one is captured, then replayed.
        """
        if not hasattr(self, "_frame_buf"):
            self._frame_buf = {k: torch.zeros(self.B, self.T, self.q.pop(k).size,
                                              dtype=torch.float64, device=self.dev)
                               for k in self.q.inputs}
            self._sums_buf = torch.zeros(self.vocab_size, self.B, dtype=torch.float64,
                                         device=self.dev)
            self._graph = None
        for k in self._frame_buf:
            self._frame_buf[k].copy_(frames[k].to(self.dev, torch.float64))
        g0 = self.g
        if self._graph is None and not getattr(self, "_warm", False):
            side = torch.cuda.Stream(self.dev)
            side.wait_stream(torch.cuda.current_stream(self.dev))
            with torch.cuda.stream(side):          # warm-up outside any capture
                self._sums_buf.zero_()
                self._window(self._frame_buf, self._sums_buf)
            torch.cuda.current_stream(self.dev).wait_stream(side)
            self._warm = True
        else:
            if self._graph is None:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):       # records only: the state is untouched
                    self._sums_buf.zero_()
                    self._window(self._frame_buf, self._sums_buf)
                self._graph = graph
            self._graph.replay()
        self.g = g0 + self.W
        self.n += 1
        return self._sums_buf.T.to(torch.int64)

    def step_token(self, tokens, positions=None) -> torch.Tensor:
        """Feed one token per sequence (B,) at ``positions`` (default: the next one)."""
        tok = _as_long(tokens, "tokens").reshape(-1, 1)
        if tok.shape[0] != self.B:
            raise UserError(f"{tok.shape[0]} tokens for an emulator of batch {self.B}")
        pos = torch.full((self.B, 1), self.n, dtype=torch.int64) if positions is None \
            else _as_long(positions, "positions").reshape(-1, 1)
        if self.engine == "numpy" and pos.shape[0] == self.B:
            fr = self._np_token_frames(tok[:, 0].numpy(), pos[:, 0].numpy())
            if fr is not None:
                if self.g != self.n * self.W:
                    raise RuntimeError("emulator is out of window alignment; call reset()")
                if self.q.context and self.n >= self.q.context:
                    return self.step_frames({})          # raises the context error
                return self._np_window(fr)
        frames = input_frames(self.q, tok, pos, device=self.dev)
        return self.step_frames({k: v[:, 0] for k, v in frames.items()})

    def flush(self) -> None:
        """Run the extra zero steps that populations deeper than the readout need to
        finish the last token (only at the end of a sequence)."""
        for _ in range(max(0, self.max_depth - self.d_out)):
            self.step(None)

    def recorded(self) -> Dict[str, torch.Tensor]:
        """Recorded steps as {name: (B, G, size) int64} (and ``name.u``/``name.v``)."""
        if self.engine == "numpy":
            return {k: torch.from_numpy(np.ascontiguousarray(v.transpose(2, 0, 1)))
                    for k, v in self._np.recorded().items()}
        rec = self.record or []
        res = {}
        X = torch.stack([r[0] for r in rec]) if rec else \
            torch.zeros(0, self.n_out, self.B, dtype=torch.float64, device=self.dev)
        for name, xr in self.xrows.items():
            res[name] = X[:, xr].permute(2, 0, 1).to(torch.int64)
        if rec and self.record_states:
            U, V = torch.stack([r[1] for r in rec]), torch.stack([r[2] for r in rec])
            l0 = self.kind_rows["lif"].start
            for name, xr in self.xrows.items():
                if self.q.pop(name).kind == "lif":
                    sl = slice(xr.start - l0, xr.stop - l0)
                    res[name + ".u"] = U[:, sl].permute(2, 0, 1).to(torch.int64)
                    res[name + ".v"] = V[:, sl].permute(2, 0, 1).to(torch.int64)
        return res

    def token_time(self, rec: Dict[str, torch.Tensor], N: int) -> Dict[str, torch.Tensor]:
        """Re-index recorded global outputs {name: (B, G, size)} to (B, N, T, size)."""
        res = {}
        nt = torch.arange(N)[:, None] * self.W + torch.arange(self.T)[None, :]
        for name in self.xrows:
            size = self.q.pop(name).size
            idx = (nt + self.q.pop(name).depth).reshape(-1).to(rec[name].device)
            res[name] = rec[name].index_select(1, idx).reshape(self.B, N, self.T, size)
        return res

    def run_sequence(self, tokens, positions=None, frames=None, states: bool = False) -> EmuRun:
        """Reset, then run whole sequences (B, N) window by window, recording every step
        (``states``: LIF u, v too, in ``global_outputs['name.u' / 'name.v']``)."""
        self.reset()
        self.start_recording(states)
        if frames is None:
            tok = _as_long(tokens, "tokens")
            tok = tok[None] if tok.dim() == 1 else tok
            frames = input_frames(self.q, tok, positions, device=self.dev)
        N = next(iter(frames.values())).shape[1]
        sums = [self.step_frames({k: v[:, n] for k, v in frames.items()}) for n in range(N)]
        self.flush()
        glob = self.recorded()
        self.stop_recording()
        li = torch.stack(sums, dim=1) if sums else torch.zeros(self.B, 0, self.vocab_size,
                                                               dtype=torch.int64)
        return EmuRun(glob, self.token_time(glob, N), li,
                      li.to(torch.float64) * self.q.logit_scale, self.g, self.W)


def _behind(comp: frozenset, r: int, W: int) -> int:
    """Steps skipped since the last residue of ``comp`` before r (cyclically, from the
    previous window): the drain steps a decaying accum updated at r first catches up."""
    prev = [c for c in comp if c < r]
    last = max(prev) if prev else max(comp) - W
    return r - last - 1


# ---------------------------------------------------------------- fused kernels
# Elementwise chains of one step, each written into its destination (a view of X, A, acc,
# v) in place. Eager, they are the ops of ``fixed_point``; ``fused`` (default on CUDA) runs
# them through ``torch.compile``: one generated kernel per chain and shape (Triton on CUDA,
# C++ on the CPU), the same int64 / float64 operations, so the same values.

def _k_accum(acc, out, a, dec, dexp, wrap: bool, behind: int):
    """``behind`` deferred drain steps, then this step's (``a`` None: a drain too)."""
    v = acc.to(torch.int64)
    for _ in range(behind):
        v = fx.accum_step(v, None, dec, dexp, wrap)
    v = fx.accum_step(v, a, dec, dexp, wrap)
    acc.copy_(v)
    out.copy_(v)


def _k_elementwise(rule):
    """The kernel of a stateless kind: ``out = update(ports, wrap, *params)``."""
    def kernel(out, wrap: bool, params, *ports):
        out.copy_(rule.update(list(ports), wrap, *params))
    return kernel


def _k_lif(v, out, a, fv, vth6):
    """``fixed_point.lif_step`` of a LIF without leaky current, bias or wraps (``u`` is
    then ``a << 6``, not kept): v = clip(decay(v) + (a << 6)), spikes."""
    s, _, vv = fx.lif_step(a, None, v.to(torch.int64),
                           fx.LifParams(0, fv, vth6, 0, False, False, False))
    v.copy_(vv)
    out.copy_(s)


def _k_lif_full(u, v, out, a, fu, fv, vth6, bias, act_wrap: bool, u_wrap: bool,
                v_wrap: bool):
    """``fixed_point.lif_step`` with every term (leaky current, bias, the wraps its flags
    ask for): u, v and the spikes written in place."""
    s, uu, vv = fx.lif_step(a, u.to(torch.int64), v.to(torch.int64),
                            fx.LifParams(fu, fv, vth6, bias, act_wrap, u_wrap, v_wrap))
    u.copy_(uu)
    v.copy_(vv)
    out.copy_(s)


def _gathered(y, val, lsh, rsh, inner: bool):
    """Gathered source values (one weight per row) as a synapse delivers them: int64,
    times the row's weight, int32-wrapped if the product may leave int32, shifted by the
    row's weight exponent."""
    y = y.to(torch.int64)
    if val is not None:
        y = y * val
    if inner:
        y = fx.wrap32(y)
    if lsh is not None:
        y = y << lsh
    if rsh is not None:
        y = y >> rsh
    return y


def _k_gather(out, src, idx, val, lsh, rsh, inner: bool, add: bool):
    y = _gathered(src.index_select(0, idx), val, lsh, rsh, inner)
    if add:
        out.add_(y)
    else:
        out.copy_(y)


def _k_gather_to(A, src, idx, val, lsh, rsh, inner: bool, didx, add: bool):
    """``_k_gather`` into the scattered port rows ``didx`` of ``A``."""
    y = _gathered(src.index_select(0, idx), val, lsh, rsh, inner)
    if add:
        A.index_add_(0, didx, y)
    else:
        A.index_copy_(0, didx, y)


def _k_dense(out, y, inner: bool, e: int, add: bool):
    """A float64 matmul's rows (exact integers) as its synapses deliver them: int64,
    int32-wrapped where the sum may leave int32, shifted by the weight exponent."""
    z = y.to(torch.int64)
    if inner:
        z = fx.wrap32(z)
    z = fx.shift(z, e)
    if add:
        out.add_(z)
    else:
        out.copy_(z)


def _k_wrap(a):
    a.copy_(fx.wrap32(a))


_KERNELS = {"accum": _k_accum, "lif": _k_lif, "lif_full": _k_lif_full, "gather": _k_gather,
            "gather_to": _k_gather_to, "dense": _k_dense, "wrap": _k_wrap}   # and "elem:KIND" per stateless kind, on first use
_COMPILED: Dict[str, object] = {}


def _run(name: str, fused: bool, *args) -> None:
    """Kernel ``name`` on ``args``: compiled where ``fused`` and torch.compile works here
    (a failure warns once and falls back to the eager ops for good)."""
    if fused and any(torch.is_tensor(t) and t.is_cuda and t.data_ptr() % 16 for t in args):
        fused = False    # inductor clones CUDA inputs off 16-byte alignment: the in-place
        #                  writes would be lost (odd batch and odd row offsets: eager)
    if name not in _KERNELS:
        _KERNELS[name] = _k_elementwise(fx.ELEMENTWISE[name.split(":", 1)[1]])
    if fused:
        fn = _COMPILED.get(name)
        if fn is None and name not in _COMPILED:
            try:
                import torch._dynamo as dynamo
                dynamo.config.cache_size_limit = max(dynamo.config.cache_size_limit, 256)
                fn = torch.compile(_KERNELS[name], dynamic=False, fullgraph=True)
            except Exception:                 # noqa: BLE001 (no compiler: eager)
                fn = None
            _COMPILED[name] = fn
        if fn is not None:
            try:
                fn(*args)
                return
            except Exception as e:            # noqa: BLE001
                import warnings
                warnings.warn(f"emulator: torch.compile of the {name} kernel failed ({e!r}); "
                              "running it eagerly")
                _COMPILED[name] = None
    _KERNELS[name](*args)


def _write(A: torch.Tensor, y: torch.Tensor, sl: Optional[slice], mode: str, didx) -> None:
    """Set or add ``y`` into the port rows ``sl`` (or the index tensor ``didx``) of A."""
    if sl is not None:
        if mode == "set":
            A[sl].copy_(y)
        else:
            A[sl].add_(y)
    elif mode == "set":
        A.index_copy_(0, didx, y)
    else:
        A.index_add_(0, didx, y)


def _runs(idx: np.ndarray) -> list:
    """Contiguous ranges (a, b) of a sorted array of distinct row indices."""
    if idx.size == 0:
        return []
    cut = np.flatnonzero(np.diff(idx) != 1) + 1
    return [(int(p[0]), int(p[-1]) + 1) for p in np.split(idx, cut)]


def _merge(slices: list) -> list:
    """Adjacent slices merged (in order of their start)."""
    out = []
    for s in sorted(slices, key=lambda s: s.start):
        if s.stop == s.start:
            continue
        if out and out[-1].stop == s.start:
            out[-1] = slice(out[-1].start, s.stop)
        else:
            out.append(s)
    return out


def _pop_runs(pops: list, xrows: Dict[str, slice], flag: Dict[str, bool]) -> list:
    """Populations (in row order) grouped into runs of adjacent rows with equal ``flag``."""
    runs = []
    for p in sorted(pops, key=lambda p: xrows[p.name].start):
        if runs and xrows[runs[-1][-1].name].stop == xrows[p.name].start \
                and flag[runs[-1][-1].name] == flag[p.name]:
            runs[-1].append(p)
        else:
            runs.append([p])
    return runs


def _np_frame(f) -> np.ndarray:
    """An injected frame (B, size) as the numpy engine's float64 (size, B)."""
    return np.ascontiguousarray(torch.as_tensor(f).cpu().numpy().T, dtype=np.float64)


def emulator_logits(qgraph: QGraph, tokens, device="cpu", batch_size: int = 256) -> torch.Tensor:
    """Float logits (B, N, V) of many sequences run on the emulator, ``batch_size`` at a
    time, each from a reset (validation loss of the deployed integer model)."""
    tok = _as_long(tokens, "tokens")
    tok = tok[None] if tok.dim() == 1 else tok
    emu, parts = None, []
    for i in range(0, tok.shape[0], batch_size):
        chunk = tok[i:i + batch_size].to(device)
        if emu is None or emu.B != chunk.shape[0]:
            emu = Emulator(qgraph, batch=chunk.shape[0], device=device)
        emu.reset()
        sums = [emu.step_token(chunk[:, n]) for n in range(chunk.shape[1])]
        parts.append(torch.stack(sums, dim=1).cpu().to(torch.float64) * qgraph.logit_scale)
    return torch.cat(parts) if parts else torch.zeros(0, 0, qgraph.pop(qgraph.readout).size)


class EmulatorBackend:
    """Token backend (``feed(token) -> logits``) on the emulator, batch 1.

    ``probes=True`` records every step so that ``probe_outputs()`` gives the
    token-time outputs (N, T, size) of every population, as the Lava runner does.

    ``engine``: ``numpy`` or ``torch`` (``Emulator``), or ``token``: the token-time engine
    (``token_engine.token_engine``: numpy on the CPU, compiled torch elsewhere), which
    computes each population once per token; the graph must be streamable (checked), so
    its outputs are the global-time run's. It is the default on the CPU without probes
    (the fastest at batch 1); probes need a global-time engine (the drain steps'
    activity is counted too). ``compiled_step=False``: the CPU token-time engine without
    its one-call streaming step (``token_program``), for comparisons.
    """

    name = "emulator"

    def __init__(self, qgraph: QGraph, device="cpu", probes: bool = False, probe: bool = False,
                 engine: Optional[str] = None, compiled_step: bool = True):
        self.qgraph = qgraph
        self.probes = probes or probe
        dev = torch.device(device)
        self.engine = engine or default_backend_engine(dev, self.probes)
        if self.engine == "token":
            if self.probes:
                raise ValueError("the token-time engine keeps no global-time record; probes "
                                 "need engine='numpy' or 'torch'")
            check_streamable(qgraph)
            self.emu = None
            self._tok = token_engine(qgraph, 1, dev, compiled_step)
        else:
            self.emu = Emulator(qgraph, 1, device, engine=self.engine)
        self.vocab_size = qgraph.pop(qgraph.readout).size
        self.context = qgraph.context
        self.reset()

    def reset(self) -> None:
        if self.emu is None:
            self._tok.reset()
            return
        self.emu.reset()
        if self.probes:
            self.emu.start_recording()

    def feed(self, token: int) -> np.ndarray:
        n = self._tok.n if self.emu is None else self.emu.n
        if self.context and n >= self.context:
            raise UserError(f"position {n} is beyond the model's context "
                            f"{self.context}; reset() and re-feed the last context//2 tokens")
        if self.emu is None:
            sums = self._tok.step_token([int(token)])
            sums = sums.cpu().numpy() if torch.is_tensor(sums) else sums
            return sums[0].astype(np.float64) * self.qgraph.logit_scale
        sums = self.emu.step_token([int(token)])
        return (sums[0].to(torch.float64) * self.qgraph.logit_scale).cpu().numpy()

    def probe_outputs(self) -> Dict[str, np.ndarray]:
        """Token-time outputs (N, T, size) of every population for the tokens fed so far."""
        if not self.probes:
            raise UserError("this backend was made without probes; pass probes=True")
        emu = self.emu
        if emu.max_depth > emu.d_out:         # finish the last token on a copy
            emu = copy.deepcopy(emu)
            emu.flush()
        if emu.engine == "numpy":
            depth = {n: self.qgraph.pop(n).depth for n in emu.xrows}
            return {k: v[..., 0] for k, v in emu._np.token_time(emu.n, emu.T, depth).items()}
        return {k: v[0].cpu().numpy() for k, v in emu.token_time(emu.recorded(), emu.n).items()}

    def activity(self):
        """Counts (``probes.Activity``) of every step of the windows fed since ``reset``,
        from the emulator's global-time record (drain steps included)."""

        if not self.probes:
            raise UserError("this backend was made without probes; pass probes=True")
        emu, N = self.emu, self.emu.n
        if emu.engine == "numpy":           # one population at a time: the record is large
            def frames(name):
                return emu._np.recorded_one(name, N * emu.W)[..., 0].reshape(N, emu.W, -1)
        else:
            frames = window_frames_from_global(self.qgraph, emu.recorded(), N)
        return count_windows(self.qgraph, frames, N)

    def close(self) -> None:
        if self.emu is not None:
            self.emu.stop_recording()
