"""A fast bit-exact emulator of a ``QGraph`` in global time, as Lava runs it.

Lava executes every process at every global step ``g`` (``time_step = g + 1``):

* a ``Dense`` delivers at ``g + 1`` what its source sent at ``g`` (it sends
  last step's accumulation first); a ``DelayDense`` with delay k at
  ``g + 1 + k`` (``PyDelayDenseModelBitAcc``'s rolling buffer). Here all input ports share one ring buffer of
  ``max(1 + delay) + 1`` slots: a synapse adds its output of step ``g`` into
  slot ``g + 1 + delay``, the populations read and clear slot ``g``;
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

from snn_compile.hw_sim.int_reference import (GraphPlan, _as_long, input_frames,
                                              plan_graph)
from snn_compile.compiler.qgraph import DECAY_MAX, QGraph, QGraphError
from snn_compile.errors import UserError
from snn_compile.loihi import fixed_point as fx
from snn_compile.hw_sim.emulator_numpy import NumpyEngine

ENGINES = ("numpy", "torch")


def default_engine(device) -> str:
    """The emulator engine a device gets unless one is named: numpy (event-driven) on the
    CPU, torch (stacked, CUDA graphs) elsewhere."""
    return "numpy" if torch.device(device).type == "cpu" else "torch"


def check_streamable(qgraph: QGraph) -> None:
    """Raise ``QGraphError`` unless global time provably equals token time.

    Outside its token's T steps every population must output zero (so nothing
    leaks into the next window): LIFs need ``du = 4095`` (no synaptic current
    left over) and zero bias; a population is silent when its inputs are,
    except ``accum`` (it holds the memory) and ``prod``, which is silent when
    either port is; an ``accum`` must integrate a silent input. A ``single_window`` graph
    (one sample per reset, foreign graphs) has no next token to leak into: nothing to
    check (its biases before the window: ``quantize_foreign._pre_window_biases``).
    """
    if qgraph.single_window:
        return
    errs = []
    silent: Dict[str, bool] = {}
    for name in qgraph.order():
        p = qgraph.pop(name)
        if p.kind == "input":
            silent[name] = True
            continue
        by_port: Dict[str, bool] = {}
        for s in qgraph.incoming(name):
            by_port[s.port] = by_port.get(s.port, True) and silent[s.src]
        if p.kind == "lif":
            if p.du != DECAY_MAX:
                errs.append(f"{name}: du={p.du} leaves synaptic current after the token; need "
                            f"{DECAY_MAX}")
            if p.has_bias:
                errs.append(f"{name}: bias {p.bias_mant} makes it fire between tokens; need 0")
            silent[name] = all(by_port.values())
        elif p.kind == "prod":
            silent[name] = any(by_port.values())
        elif p.kind == "graded":
            silent[name] = all(by_port.values())
        else:
            silent[name] = False
            if not all(by_port.values()):
                errs.append(f"{name}: accum integrates an input that is not silent between tokens")
        if p.kind in ("lif", "graded") and not silent[name]:
            errs.append(f"{name}: fed by a population that is active between tokens "
                        "(an accum must be gated by a prod)")
    if errs:
        raise QGraphError("the pipelined (global-time) run would differ from token time:\n  "
                          + "\n  ".join(errs))


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


KINDS = ("input", "lif", "prod", "graded", "accum")


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

    Torch engine layout: the populations of one kind are stacked into one (neurons, B) state
    so that a step costs a few tensor ops per kind, not per population:
    ``X`` (all outputs, float64: exact for int32 values) feeds the synapses;
    ``ring[slot]`` (all input ports, int64) collects what they deliver.
    Synapses with one weight per row (identity, replication, per-channel
    scales) are merged per (latency, source) into one gather + scatter-add; the others
    are one exact float64 matmul each (``fixed_point.SynapseKernel``).
    Outputs of a synapse are wrapped to int32 only where the port is read
    (two's-complement sums commute with the wrap).

    ``event_driven`` (default: on CPU) skips, at each step, the synapses whose
    source population sent nothing, as Loihi does: their contribution is
    exactly zero. On a GPU the check would cost a device sync per step;
    there ``cuda_graphs`` (default on CUDA) replays each token window as one
    captured graph instead (not while recording).
    """

    def __init__(self, qgraph: QGraph, batch: int = 1, device="cpu",
                 plan: Optional[GraphPlan] = None, strict: bool = True,
                 event_driven: Optional[bool] = None, cuda_graphs: Optional[bool] = None,
                 engine: Optional[str] = None):
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
            self.reset()
            return
        pops = {k: [qgraph.pop(n) for n in self.plan.order if qgraph.pop(n).kind == k]
                for k in KINDS}
        # ---- output rows (X) and input-port rows (ring), contiguous per kind
        self.xrows: Dict[str, slice] = {}
        self.kind_rows: Dict[str, slice] = {}
        r = 0
        for k in KINDS:
            r0 = r
            for p in pops[k]:
                self.xrows[p.name] = slice(r, r + p.size)
                r += p.size
            self.kind_rows[k] = slice(r0, r)
        self.n_out = r
        self.pop_id = {n: i for i, n in enumerate(self.xrows)}
        self.prow: Dict[tuple, slice] = {}
        self.port_rows: Dict[str, slice] = {}
        r = 0
        for k, port in (("lif", "a_in"), ("prod", "a_in1"), ("prod", "a_in2"),
                        ("graded", "a_in"), ("accum", "a_in")):
            r0 = r
            for p in pops[k]:
                self.prow[(p.name, port)] = slice(r, r + p.size)
                r += p.size
            self.port_rows[f"{k}.{port}"] = slice(r0, r)
        self.n_in = r
        self.port_wrap = any(pp.bound is None for ports in self.plan.ports.values()
                             for pp in ports.values() if pp.synapses)
        # ---- neuron constants per kind
        lif = pops["lif"]
        sz = lambda p, v: np.full(p.size, v, np.int64)  # noqa: E731
        lp = [self.plan.lif[p.name] for p in lif]
        self.lif = fx.LifParams(
            _const([sz(p, c.fu) for p, c in zip(lif, lp)], dev),
            _const([sz(p, c.fv) for p, c in zip(lif, lp)], dev),
            _const([sz(p, c.vth6) for p, c in zip(lif, lp)], dev),
            _const([fx.per_neuron(c.bias, p.size) for p, c in zip(lif, lp)], dev),
            any(c.act_wrap for c in lp), any(c.u_wrap for c in lp), any(c.v_wrap for c in lp))
        # LIFReset: rows whose (g - depth) % W == 0, per residue of g
        self.resets: Dict[int, torch.Tensor] = {}
        for res in range(self.W):
            m = np.concatenate([sz(p, (res - p.depth) % self.W == 0) for p in lif]) \
                if lif else np.zeros(0, bool)
            if m.any():
                self.resets[res] = torch.as_tensor(m.astype(bool), device=dev)[:, None]
        prod = pops["prod"]
        self.prod_exp = _const([sz(p, p.exp) for p in prod], dev)
        self.prod_vth = _const([sz(p, p.vth) for p in prod], dev)
        self.prod_wrap = any(self.plan.prod_wrap[p.name] for p in prod)
        self.graded_vth = _const([sz(p, p.vth) for p in pops["graded"]], dev)
        acc = pops["accum"]
        self.acc_wrap = any(self.plan.accum_wrap[p.name] for p in acc)
        # decaying memories: per-row mantissa (0 where a neuron keeps its value) and exponent
        self.acc_decay = self.acc_exp = None
        if any(p.decaying for p in acc):
            self.acc_decay = _const([np.asarray(p.decay, np.int64) if p.decaying
                                     else sz(p, 0) for p in acc], dev)
            self.acc_exp = _const([sz(p, p.decay_exp) for p in acc], dev)
        # ---- synapses
        gathers: Dict[tuple, list] = {}
        # (W float64 (dst, src), src rows, port rows, ahead, inner wrap, exp, source id)
        self.dense = []
        self.generic = []        # (kernel, src rows, port rows, ahead, source id)
        for name in self.plan.order:
            for port, pp in self.plan.ports[name].items():
                rows = self.prow[(name, port)]
                for k, src in zip(pp.synapses, pp.srcs):
                    ahead = 1 + k.delay
                    if k.mode == "gather":
                        gathers.setdefault((ahead, src), []).append((k, self.xrows[src], rows))
                    elif k.mode == "dense" and k.float:
                        w, e = k.wt.T.contiguous(), k.exp
                        if 0 < e and float(w.abs().sum(1).max()) * 2 ** (e + 31) < fx.F64_EXACT:
                            w, e = w * 2 ** e, 0      # exact: the left shift folded in
                        self.dense.append((w, self.xrows[src], rows, ahead, k.inner_wrap, e,
                                           self.pop_id[src]))
                    else:
                        self.generic.append((k, self.xrows[src], rows, ahead, self.pop_id[src]))
        # (src idx, port idx, val or None, lshift, rshift, inner, ahead, source population id)
        self.gathers = []
        for (ahead, src_name), lst in sorted(gathers.items()):
            src = torch.cat([k.idx + xr.start for k, xr, _ in lst])
            dst = torch.cat([torch.arange(r.start, r.stop, device=dev) for _, _, r in lst])
            val = torch.cat([k.val for k, _, _ in lst])
            exps = torch.cat([torch.full((r.stop - r.start,), k.exp, device=dev)
                              for k, _, r in lst])
            inner = any(k.inner_wrap for k, _, _ in lst)
            self.gathers.append((src, dst, None if bool((val == 1).all()) else val[:, None],
                                 exps.clamp(min=0)[:, None] if bool((exps > 0).any()) else None,
                                 (-exps).clamp(min=0)[:, None] if bool((exps < 0).any()) else None,
                                 inner, ahead, self.pop_id[src_name]))
        self.L = max([g[6] for g in self.gathers] + [d[3] for d in self.dense]
                     + [g[3] for g in self.generic] + [0]) + 1
        self.event_driven = (dev.type == "cpu") if event_driven is None else bool(event_driven)
        if self.event_driven and dev.type != "cpu":
            raise ValueError("event_driven needs the CPU (it reads X from host memory)")
        self.pop_starts = np.array([xr.start for xr in self.xrows.values()])
        self.cuda_graphs = (dev.type == "cuda") if cuda_graphs is None else bool(cuda_graphs)
        if self.cuda_graphs and (dev.type != "cuda" or self.event_driven):
            raise ValueError("cuda_graphs needs a CUDA device and event_driven=False")
        self.reset()

    # ------------------------------------------------------------- state
    def reset(self) -> None:
        """Zero every state (synaptic buffers, LIF u/v, memories); next token is n = 0."""
        B, dev, z = self.B, self.dev, torch.zeros
        self.g = 0
        self.n = 0
        if self.engine == "numpy":
            self._np.reset()
            return
        if not hasattr(self, "X"):       # allocated once: captured CUDA graphs keep addresses
            nl = self.kind_rows["lif"].stop - self.kind_rows["lif"].start
            ka = self.kind_rows["accum"]
            self.X = z(self.n_out, B, dtype=torch.float64, device=dev)
            self.ring = z(self.L, self.n_in, B, dtype=torch.int64, device=dev)
            self.u = z(nl, B, dtype=torch.int64, device=dev)
            self.v = z(nl, B, dtype=torch.int64, device=dev)
            self.acc = z(ka.stop - ka.start, B, dtype=torch.int64, device=dev)
        for t in self._state():
            t.zero_()
        if self.record is not None:
            self.record = []

    def _state(self):
        return (self.X, self.ring, self.u, self.v, self.acc)

    def start_recording(self, states: bool = False) -> None:
        """Keep every population's output of every following step (for probes/tests);
        ``states`` also keeps each LIF's u and v after the step (as ``name.u``, ``name.v``)."""
        self.record = []
        self.record_states = states
        if self.engine == "numpy":
            self._np.record, self._np.record_states = [], states

    def stop_recording(self) -> None:
        """Drop the recording and stop recording."""
        self.record = None
        if self.engine == "numpy":
            self._np.record = None

    # -------------------------------------------------------------- step
    def step(self, inject: Optional[Dict[str, torch.Tensor]] = None) -> None:
        """One global step ``g``: every population integrates slot g of its ports,
        then every synapse pushes its output into slot g + 1 + delay."""
        if self.engine == "numpy":
            self._np.step(None if not inject else
                          {k: _np_frame(f) for k, f in inject.items()})
            self.g = self._np.g
            return
        g, X, ring, L = self.g, self.X, self.ring, self.L
        A = ring[g % L]
        if self.port_wrap:
            A = fx.wrap32(A)
        kr = self.kind_rows
        xi = kr["input"]
        if xi.stop > xi.start:
            X[xi] = 0
        if inject:
            for name, f in inject.items():
                X[self.xrows[name]] = f.T
        if kr["lif"].stop > kr["lif"].start:
            m = self.resets.get(g % self.W)
            if m is not None:                        # LIFReset at g ≡ depth (mod W)
                self.u.masked_fill_(m, 0)
                self.v.masked_fill_(m, 0)
            s, u, v = fx.lif_step(A[self.port_rows["lif.a_in"]], self.u, self.v, self.lif)
            self.u.copy_(u)
            self.v.copy_(v)
            X[kr["lif"]] = s
        if kr["prod"].stop > kr["prod"].start:
            X[kr["prod"]] = fx.prod_step(A[self.port_rows["prod.a_in1"]],
                                         A[self.port_rows["prod.a_in2"]],
                                         self.prod_exp, self.prod_vth, self.prod_wrap)
        if kr["graded"].stop > kr["graded"].start:
            X[kr["graded"]] = fx.graded_step(A[self.port_rows["graded.a_in"]], self.graded_vth)
        if kr["accum"].stop > kr["accum"].start:
            self.acc.copy_(fx.accum_step(self.acc, A[self.port_rows["accum.a_in"]],
                                         self.acc_decay, self.acc_exp, self.acc_wrap))
            X[kr["accum"]] = self.acc
        ring[g % L].zero_()
        if self.event_driven:          # which populations sent anything at this step
            active = np.logical_or.reduceat(X.numpy().any(axis=1), self.pop_starts).tolist()
        else:
            active = None
        for src, dst, val, lsh, rsh, inner, ahead, pid in self.gathers:
            if active is not None and not active[pid]:
                continue
            y = X.index_select(0, src).to(torch.int64)
            if val is not None:
                y = y * val
            if inner:
                y = fx.wrap32(y)
            if lsh is not None:
                y = y << lsh
            if rsh is not None:
                y = y >> rsh
            ring[(g + ahead) % L].index_add_(0, dst, y)
        for w, xr, pr, ahead, inner, e, pid in self.dense:
            if active is not None and not active[pid]:
                continue
            y = (w @ X[xr]).to(torch.int64)
            if inner:
                y = fx.wrap32(y)
            ring[(g + ahead) % L][pr] += fx.shift(y, e)
        for k, xr, pr, ahead, pid in self.generic:
            if active is not None and not active[pid]:
                continue
            ring[(g + ahead) % L][pr] += k(X[xr].T).T
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
        """One token window as a CUDA graph: ~80 kernels per step launched at once.

        Ring slots depend on ``g mod L``, so there is one graph per residue of
        the window's first step; each is captured on first use (after a warm-up
        run whose effect on the state is undone).
        """
        if not hasattr(self, "_frame_buf"):
            self._frame_buf = {k: torch.zeros(self.B, self.T, self.q.pop(k).size,
                                              dtype=torch.float64, device=self.dev)
                               for k in self.q.inputs}
            self._sums_buf = torch.zeros(self.vocab_size, self.B, dtype=torch.float64,
                                         device=self.dev)
            self._graphs: Dict[int, object] = {}
        for k in self._frame_buf:
            self._frame_buf[k].copy_(frames[k].to(self.dev, torch.float64))
        key = self.g % self.L
        if key not in self._graphs:
            g0, saved = self.g, [t.clone() for t in self._state()]
            side = torch.cuda.Stream(self.dev)
            side.wait_stream(torch.cuda.current_stream(self.dev))
            with torch.cuda.stream(side):          # warm-up outside the capture
                self._sums_buf.zero_()
                self._window(self._frame_buf, self._sums_buf)
            torch.cuda.current_stream(self.dev).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            self.g = g0
            with torch.cuda.graph(graph):
                self._sums_buf.zero_()
                self._window(self._frame_buf, self._sums_buf)
            for t, v in zip(self._state(), saved):
                t.copy_(v)
            self.g = g0
            self._graphs[key] = graph
        self._graphs[key].replay()
        self.g += self.W
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
                    res[name + ".u"] = U[:, sl].permute(2, 0, 1).contiguous()
                    res[name + ".v"] = V[:, sl].permute(2, 0, 1).contiguous()
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
    """

    name = "emulator"

    def __init__(self, qgraph: QGraph, device="cpu", probes: bool = False, probe: bool = False,
                 engine: Optional[str] = None):
        self.qgraph = qgraph
        self.emu = Emulator(qgraph, 1, device, engine=engine)
        self.vocab_size = self.emu.vocab_size
        self.context = qgraph.context
        self.probes = probes or probe
        self.reset()

    def reset(self) -> None:
        self.emu.reset()
        if self.probes:
            self.emu.start_recording()

    def feed(self, token: int) -> np.ndarray:
        if self.context and self.emu.n >= self.context:
            raise UserError(f"position {self.emu.n} is beyond the model's context "
                            f"{self.context}; reset() and re-feed the last context//2 tokens")
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
        from snn_compile.hw_sim.probes import count_windows, window_frames_from_global

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
        self.emu.stop_recording()
