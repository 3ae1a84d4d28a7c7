"""The integer reference: a ``QGraph`` executed in token time (docs/semantics.md).

Populations run in depth order; the input of a population at ``(n, t)`` is the
sum of its synapses applied to the sources' outputs at the same ``(n, t)`` (at
``(n - token_lag, t)`` for a token-shift synapse; streaming keeps those tokens);
LIF state resets at ``t = 0`` of every token; ``accum`` is the cumulative sum
over the flattened ``p = n*T + t``, or, for a decaying memory, the step-by-step
recursion ``out = out + ((-decay * out) >> decay_exp) + a`` including the
``W - T`` input-free drain steps between two tokens (``accum_token_time``).
Synapses act on all ``(b, n, t)`` rows at once (time-parallel), only the LIF
and decaying-accum recursions loop over steps. The arithmetic
is ``snn_compile.loihi.fixed_point``, shared with the global-time emulator, so
any difference between the two can only come from timing.

This is the oracle for the emulator and the Lava runs: outputs are int64
tensors ``(B, N, T, size)`` (``(N, T, size)`` when the tokens have no batch axis).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch

from snn_compile.compiler.qgraph import (PORTS, QGraph, QGraphError, accum_decay_product_bound,
                                         accum_state_bound)
from snn_compile.errors import UserError
from snn_compile.loihi import fixed_point as fx


# ------------------------------------------------------------------ frames
def _as_long(x, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x)
    if t.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise UserError(f"{name} must be integer ids, got dtype {t.dtype}")
    return t.to(torch.int64)


def input_frames(qgraph: QGraph, tokens, positions=None, device=None) -> Dict[str, torch.Tensor]:
    """Host input of a decoder graph: ``{input name: (B, N, T, size) int64}``.

    ``tokens`` -> one-hot of the token id (size V); ``positions`` -> one-hot of
    the position (size N_ctx), default ``0..N-1``; both constant over the T
    steps of a token. 1-D ``tokens`` (N,) give frames (N, T, size).
    """
    tok = _as_long(tokens, "tokens")
    squeeze = tok.dim() == 1
    if squeeze:
        tok = tok[None]
    if tok.dim() != 2:
        raise UserError(f"tokens must have shape (N,) or (B, N), got {tuple(tok.shape)}")
    B, N = tok.shape
    if positions is None:
        pos = torch.arange(N, dtype=torch.int64).expand(B, N)
    else:
        pos = _as_long(positions, "positions")
        pos = pos[None] if pos.dim() == 1 else pos
        pos = pos.expand(B, N) if pos.shape[0] == 1 else pos
        if tuple(pos.shape) != (B, N):
            raise UserError(f"positions of shape {tuple(pos.shape)} do not match tokens {(B, N)}")
    dev = torch.device(device) if device is not None else tok.device
    T = qgraph.steps_per_token
    frames = {}
    for name in qgraph.inputs:
        size = qgraph.pop(name).size
        if name == "tokens":
            ids, what = tok, "token id"
        elif name == "positions":
            ids, what = pos, "position"
            if qgraph.context and N and int(pos.max()) >= qgraph.context:
                raise UserError(f"position {int(pos.max())} is beyond the model's context "
                                f"{qgraph.context}; feed at most {qgraph.context} tokens from a reset")
        else:
            raise QGraphError(f"input population {name!r} is neither 'tokens' nor 'positions'; "
                              "give its frames explicitly (run_frames)")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= size):
            raise UserError(f"{what} {int(ids.max()) if int(ids.max()) >= size else int(ids.min())} "
                            f"is outside 0..{size - 1} of input {name!r}")
        oh = torch.nn.functional.one_hot(ids.to(dev), size).to(torch.int64)
        f = oh[:, :, None, :].expand(B, N, T, size)
        frames[name] = f[0] if squeeze else f
    return frames


# -------------------------------------------------------------------- plan
@dataclass
class PortPlan:
    synapses: List[fx.SynapseKernel]
    srcs: List[str]
    lags: List[int]
    wrap: bool                       # several int32 channels may overflow when summed
    bound: Optional[int]
    steps: List[int] = field(default_factory=list)   # step lag of each synapse


@dataclass
class GraphPlan:
    """Static facts both backends need: order, kernels, port bounds, LIF constants."""

    qgraph: QGraph
    device: torch.device
    order: List[str]
    ports: Dict[str, Dict[str, PortPlan]]
    lif: Dict[str, fx.LifParams]
    elem_wrap: Dict[str, bool]       # fx.ELEMENTWISE / fx.STATEFUL kinds: the update wraps int32
    out_bound: Dict[str, Optional[int]]
    consumers: Dict[str, int] = field(default_factory=dict)
    history: Dict[str, int] = field(default_factory=dict)   # lagged source -> tokens kept
    accum_wrap: Dict[str, bool] = field(default_factory=dict)  # accum: int32 wraps possible
    accum_decay: Dict[str, torch.Tensor] = field(default_factory=dict)  # decaying accum: (size,)
    # float64 forms where the bounds exclude every wrap (a LIF's T steps, a decaying
    # memory's recursion: fixed_point.lif_step on floats, accum_step_float): the same
    # integers, cheaper than int64 products and shifts on a GPU. Off for the reference.
    float_forms: bool = False
    # a decaying memory's float form as one Triton kernel per call (accum_triton): the
    # CUDA token engine's, unless SNN_KERNELS_TRITON=0
    triton_memories: bool = False


def plan_graph(qgraph: QGraph, device="cpu", float_forms: bool = False,
               triton_memories: bool = False) -> GraphPlan:
    """Build the exact kernels of every synapse and propagate static value bounds;
    ``float_forms``, ``triton_memories``: see ``GraphPlan``."""
    qgraph.validate()
    dev = torch.device(device)
    for p in qgraph.populations.values():
        if p.kind == "lif" and not p.reset_each_token:
            raise QGraphError(f"population {p.name}: LIF state kept across tokens has no "
                              "token-time semantics; set reset_each_token=True")
    order = qgraph.order()
    bound: Dict[str, Optional[int]] = {}
    ports: Dict[str, Dict[str, PortPlan]] = {}
    lif: Dict[str, fx.LifParams] = {}
    elem_wrap: Dict[str, bool] = {}
    accum_wrap: Dict[str, bool] = {}
    accum_decay: Dict[str, torch.Tensor] = {}
    consumers = {n: 0 for n in order}
    for name in order:
        pop = qgraph.pop(name)
        ports[name] = {}
        for port in PORTS[pop.kind]:
            syns = [s for s in qgraph.incoming(name) if s.port == port]
            for s in syns:
                if s.src == name and pop.kind != "lif":
                    raise QGraphError(f"synapse {s.name}: only LIF populations may feed "
                                      f"themselves (population {name} is {pop.kind})")
                if s.src != name and s.src not in bound:
                    raise QGraphError(f"synapse {s.name}: population {name} reads {s.src}, "
                                      "which is computed after it (a loop through several "
                                      "populations); the integer reference runs one "
                                      "population at a time")
            # a self-loop's source is this LIF: binary, so its kernel needs no source bound
            ks = [fx.SynapseKernel(s, qgraph.pop(s.src).kind, dev, bound.get(s.src))
                  for s in syns]
            for s in syns:
                consumers[s.src] += 1
            b = fx.add_bounds(*[k.bound for k in ks]) if ks else 0
            wrap = len(ks) > 1 and b is None
            ports[name][port] = PortPlan(ks, [s.src for s in syns],
                                         [s.token_lag for s in syns], wrap, b,
                                         [s.step_lag for s in syns])
        if pop.kind == "input":
            bound[name] = 1
        elif pop.kind == "lif":
            lif[name] = fx.LifParams.of(pop, ports[name]["a_in"].bound)
            bound[name] = 1
        elif pop.kind in fx.ELEMENTWISE or pop.kind in fx.STATEFUL:
            rule = fx.ELEMENTWISE.get(pop.kind) or fx.STATEFUL[pop.kind]
            bound[name] = rule.bound([ports[name][p].bound for p in pop.ports])
            elem_wrap[name] = bound[name] is None
        elif pop.kind != "accum":
            raise QGraphError(f"population {name}: kind {pop.kind!r} is stateful and has no "
                              "rule (give it an entry in fixed_point.STATEFUL, or in "
                              "fixed_point.ELEMENTWISE if it keeps no state)")
        else:
            # accum: at most context tokens of W steps each (backends refuse more), plus
            # the emulator's final flush; a decaying memory is bounded without a context
            b = ports[name]["a_in"].bound
            steps = qgraph.context * qgraph.window + max(p.depth for p in qgraph.populations.values())
            lim = accum_state_bound(pop, b, steps if qgraph.context else None)
            prod = accum_decay_product_bound(pop, b, steps if qgraph.context else None)
            ok = lim is not None and lim < fx.I32 and prod is not None and prod < fx.I32
            bound[name] = lim if ok else None
            accum_wrap[name] = not ok
            if pop.decaying:
                accum_decay[name] = torch.as_tensor([int(x) for x in pop.decay],
                                                    dtype=torch.int64, device=dev)
    history: Dict[str, int] = {}
    for s in qgraph.synapses:
        if s.token_lag:
            history[s.src] = max(history.get(s.src, 0), s.token_lag)
    return GraphPlan(qgraph, dev, order, ports, lif, elem_wrap, bound, consumers, history,
                     accum_wrap, accum_decay, float_forms, triton_memories)


def _lagged(x: torch.Tensor, lag: int, past: Optional[torch.Tensor]) -> torch.Tensor:
    """Outputs (B, N, T, size) of tokens n - lag, from ``past`` (B, >= lag, T, size: the
    tokens before this run, latest last) where n - lag < 0 of this run; zeros without."""
    if past is None:
        past = torch.zeros_like(x[:, :1]).expand(-1, lag, -1, -1)
    return torch.cat([past[:, past.shape[1] - lag:].to(x.device), x], dim=1)[:, :x.shape[1]]


def _step_lagged(x: torch.Tensor, k: int) -> torch.Tensor:
    """Outputs (B, N, T, size) of step ``t - k`` at step ``t`` (zeros for ``t < k``)."""
    if k >= x.shape[2]:
        return torch.zeros_like(x)
    return torch.cat([torch.zeros_like(x[:, :, :k]), x[:, :, :x.shape[2] - k]], dim=2)


def port_input(plan: GraphPlan, pp: PortPlan, outs: Dict[str, torch.Tensor],
               rows_shape, past: Optional[Dict[str, torch.Tensor]] = None,
               skip: Optional[str] = None) -> torch.Tensor:
    """Sum of a port's synapses applied to their sources' outputs (rows flattened);
    ``past[src]``: the source's outputs of the tokens before this run (token shift);
    synapses from ``skip`` (a LIF's self-loop, added step by step) are left out."""
    acc = None
    for k, src, lag, st in zip(pp.synapses, pp.srcs, pp.lags, pp.steps or [0] * len(pp.srcs)):
        if src == skip:
            continue
        x = outs[src]
        if lag:
            x = _lagged(x, lag, (past or {}).get(src))
        if st:
            x = _step_lagged(x, st)
        y = k(x.reshape(-1, x.shape[-1]))
        acc = y if acc is None else acc + y
    if acc is None:
        return torch.zeros(*rows_shape, _port_size(plan, pp), dtype=torch.int64,
                           device=plan.device)
    if pp.wrap and skip is None:
        acc = fx.wrap32(acc)
    return acc.reshape(*rows_shape, -1)


def _port_size(plan: GraphPlan, pp: PortPlan) -> int:
    """Width of a port (the destination population's size), from one of its kernels."""
    for name, ports in plan.ports.items():
        if any(q is pp for q in ports.values()):
            return plan.qgraph.pop(name).size
    raise QGraphError("port without a population")


# --------------------------------------------------------------------- run
@dataclass
class IntRun:
    """Result of a token-time run.

    outputs[name]: (B, N, T, size) int64 (all populations, inputs included; empty
    when ``record=False``); logits_int = sum_t readout (B, N, V); logits =
    logit_scale * logits_int (float64); state: accum values at the last step
    ``(N-1, T-1)`` (the ``W - T`` drain steps that follow it are applied when the next
    token comes), the states ``(B, states, size)`` of ``fx.STATEFUL`` kinds, the
    token-shift history (``_hist.NAME``) and ``_tokens``.
    """

    outputs: Dict[str, torch.Tensor]
    logits_int: torch.Tensor
    logits: torch.Tensor
    state: Dict[str, torch.Tensor] = field(default_factory=dict)


def compute_population(plan: GraphPlan, name: str, outs: Dict[str, torch.Tensor], bn,
                        prev: Optional[torch.Tensor] = None, lif: Optional[fx.LifParams] = None,
                        past: Optional[Dict[str, torch.Tensor]] = None):
    """Token-time outputs (B, N, T, size) of one non-input population from its sources'.

    Returns (outputs, last accum value, or the state of a ``fx.STATEFUL`` kind, or
    None). ``prev``: that value or state before this run; ``lif`` overrides the LIF
    constants (threshold calibration); ``past``: earlier tokens' outputs of token-shift
    sources (``run_frames``).
    """
    q = plan.qgraph
    pop = q.pop(name)
    B, N = bn
    T = q.steps_per_token
    pp = plan.ports[name]
    loops = [(k, st) for k, src, st in zip(pp["a_in"].synapses, pp["a_in"].srcs,
                                            pp["a_in"].steps or [0] * len(pp["a_in"].srcs))
             if src == name] if pop.kind == "lif" else []
    a = {port: port_input(plan, pp[port], outs, (B, N, T), past,
                          skip=name if loops else None) for port in pp}
    if pop.kind == "lif":
        p = lif or plan.lif[name]
        x = a["a_in"].reshape(B * N, T, pop.size)
        fl = plan.float_forms and not (loops or p.act_wrap or p.u_wrap or p.v_wrap)
        if fl:                        # no wrap: lif_step's float64 form, the same integers
            x = x.to(torch.float64)
        u = torch.zeros(B * N, pop.size, dtype=x.dtype, device=plan.device)
        v = torch.zeros_like(u)
        s = torch.zeros(B * N, T, pop.size, dtype=torch.int64, device=plan.device)
        for t in range(T):
            xt = x[:, t]
            if loops:                 # recurrence: this population's spikes of step t - k
                for k, st in loops:
                    if t >= st:
                        xt = xt + k(s[:, t - st])
                if pp["a_in"].wrap:
                    xt = fx.wrap32(xt)
            st_, u, v = fx.lif_step(xt, u, v, p)
            s[:, t] = st_
        return s.reshape(B, N, T, pop.size), None
    if pop.kind in fx.ELEMENTWISE:
        return elementwise(pop, [a[p] for p in pop.ports], plan.elem_wrap[name]), None
    if pop.kind in fx.STATEFUL:
        return stateful_token_time(plan, name, [a[p] for p in pop.ports], prev)
    return accum_token_time(plan, name, a["a_in"], prev)


def elementwise(pop, ports, wrap: bool):
    """Output of a stateless population (``fx.ELEMENTWISE``) from its port values."""
    rule = fx.ELEMENTWISE[pop.kind]
    return rule.update(ports, wrap, *(getattr(pop, f) for f in rule.params))


def stateful_token_time(plan: GraphPlan, name: str, ports: List[torch.Tensor],
                        prev: Optional[torch.Tensor] = None):
    """Token-time outputs (B, N, T, size) of a ``fx.STATEFUL`` kind from its ports' values
    (B, N, T, size each) and its state after the last token, (B, states, size);
    ``prev``: that state before this run (None: a fresh sequence). Token by token
    (``fixed_point.stateful_token``: the state cleared at each token, or carried through
    the ``W - T`` drain steps between two tokens)."""
    q = plan.qgraph
    pop = q.pop(name)
    rule = fx.STATEFUL[pop.kind]
    params = [getattr(pop, f) for f in rule.params]
    N, T = ports[0].shape[1], q.steps_per_token
    state = None if prev is None else list(prev.to(plan.device).unbind(1))
    out = torch.empty_like(ports[0])
    for n in range(N):
        o, state = fx.stateful_token(rule, [p[:, n].transpose(0, 1) for p in ports], state,
                                     plan.elem_wrap[name], params, T, q.window - T)
        out[:, n] = o.transpose(0, 1)
    return out, (torch.stack(state, 1) if N else prev)


def accum_token_time(plan: GraphPlan, name: str, a: torch.Tensor,
                     prev: Optional[torch.Tensor] = None):
    """Token-time outputs (B, N, T, size) of an accum from its input ``a`` (B, N, T, size),
    and its value at the last step; ``prev``: its value at the last step of the token
    before this run (None: a fresh sequence).

    The memory at ``(n, t)`` is its global-time value at ``g = n*W + t + depth``.
    Without decay that is the cumulative sum over ``p = n*T + t``. A decaying one
    applies ``fixed_point.accum_step`` step by step, and between ``(n, T-1)`` and
    ``(n+1, 0)`` the ``W - T`` input-free steps of the window's drain, which only
    decay it: ``out = accum_step(out, None, decay, decay_exp)``.
    """
    q = plan.qgraph
    pop = q.pop(name)
    B, N, T = a.shape[0], a.shape[1], q.steps_per_token
    wrap = plan.accum_wrap[name]
    if prev is not None:
        prev = prev.to(plan.device)
    dec = plan.accum_decay.get(name)
    if dec is None:
        c = torch.cumsum(a.reshape(B, N * T, pop.size), dim=1)
        if prev is not None:
            c = c + prev[:, None, :]
        out = fx.wrap32(c).reshape(B, N, T, pop.size)
        if not (wrap and bool((out == -fx.I32).any())):
            return out, (out[:, -1, -1] if N else prev)
        # a value of -2^31 is dropped by GradedVec (and so by the loop): step by step
    drain = q.window - T
    float_form = (plan.float_forms and dec is not None and not wrap
                  and int(pop.decay_exp) <= fx.ACCUM_FLOAT_EXP)
    if float_form:
        lam = fx.accum_lambda(dec, int(pop.decay_exp))
        half = fx.accum_half(pop.decay_exp)
        if plan.triton_memories and half is not None:
            from snn_compile.hw_sim import accum_triton
            out = accum_triton.token_update(prev, a, lam, int(pop.decay_exp), drain)
            return out, (out[:, -1, -1] if N else prev)
    out = torch.empty_like(a)
    x = torch.zeros(B, pop.size, dtype=torch.int64, device=plan.device) if prev is None else prev
    if float_form:
        x, a = x.to(torch.float64), a.to(torch.float64)
        for n in range(N):
            if n or prev is not None:
                for _ in range(drain):
                    x = fx.accum_step_float(x, lam, half=half)
            for t in range(T):
                x = fx.accum_step_float(x, lam, a[:, n, t], half)
                out[:, n, t] = x.to(torch.int64)
        return out, (out[:, -1, -1] if N else prev)
    for n in range(N):
        if dec is not None and (n or prev is not None):
            for _ in range(drain):
                x = fx.accum_step(x, None, dec, pop.decay_exp, wrap)
        for t in range(T):
            x = fx.accum_step(x, a[:, n, t], dec, pop.decay_exp, wrap)
            out[:, n, t] = x
    return out, (out[:, -1, -1] if N else prev)


def run_frames(plan: GraphPlan, frames: Dict[str, torch.Tensor],
               state: Optional[Dict[str, torch.Tensor]] = None, record: bool = True) -> IntRun:
    """Token-time run on explicit input frames ``{input: (B, N, T, size)}``.

    ``state`` carries the accum values of a previous run of the same sequences
    and the last outputs of token-shift sources (``_hist.NAME``) (streaming); LIF
    state always starts from zero at every token.
    """
    q = plan.qgraph
    N = frames[q.inputs[0]].shape[1]
    done = int(state.get("_tokens", 0)) if state else 0
    if q.context and done + N > q.context:
        raise UserError(f"{done + N} tokens exceed the model's context {q.context}; "
                        "reset and feed at most context tokens")
    outs, new_state = population_pass(plan, frames, state, record)
    new_state["_tokens"] = torch.tensor(done + N)
    li = outs[q.readout].sum(dim=2)
    return IntRun(outs if record else {}, li, li.to(torch.float64) * q.logit_scale, new_state)


def population_pass(plan: GraphPlan, frames: Dict[str, torch.Tensor],
                    state: Optional[Dict[str, torch.Tensor]] = None, record: bool = True):
    """Every population once, in depth order, on frames ``{input: (B, N, T, size)}``:
    (outputs by name, the state after the run: accum values, ``fx.STATEFUL`` states,
    token-shift history). ``record=False`` drops an output once its last consumer has
    read it (the readout's is kept). The body of ``run_frames``, without its token count."""
    q = plan.qgraph
    T = q.steps_per_token
    some = frames[q.inputs[0]]
    B, N = some.shape[0], some.shape[1]
    outs: Dict[str, torch.Tensor] = {}
    left = dict(plan.consumers)
    new_state: Dict[str, torch.Tensor] = {}
    past = {n: state[f"_hist.{n}"] for n in plan.history
            if state and f"_hist.{n}" in state}

    def keep_history(name: str) -> None:
        if name in plan.history:
            x = outs[name]
            old = past.get(name)
            L = plan.history[name]
            if old is None:         # tokens before the first: zeros
                old = torch.zeros_like(x[:, :1]).expand(-1, L, -1, -1)
            new_state[f"_hist.{name}"] = torch.cat([old.to(x.device), x], dim=1)[:, -L:]

    for name in plan.order:
        pop = q.pop(name)
        if pop.kind == "input":
            f = frames[name]
            if tuple(f.shape) != (B, N, T, pop.size):
                raise UserError(f"frames of input {name!r}: shape {tuple(f.shape)}, expected "
                                f"{(B, N, T, pop.size)}")
            outs[name] = f.to(plan.device, torch.int64)
            keep_history(name)
            continue
        prev = state.get(name) if state else None
        outs[name], last = compute_population(plan, name, outs, (B, N), prev, past=past)
        keep_history(name)
        if last is not None:
            new_state[name] = last
        for s_ in q.incoming(name):
            left[s_.src] -= 1
            if not record and left[s_.src] == 0 and s_.src != q.readout:
                outs.pop(s_.src, None)
    return outs, new_state


def run_token_time(qgraph: QGraph, tokens, positions=None, record: bool = True,
                   device="cpu", plan: Optional[GraphPlan] = None) -> IntRun:
    """Run a decoder graph on token ids (B, N) or (N,) in token time; see ``IntRun``."""
    plan = plan or plan_graph(qgraph, device)
    tok = _as_long(tokens, "tokens")
    frames = input_frames(qgraph, tok, positions, device=plan.device)
    if tok.dim() == 1:
        frames = {k: v[None] for k, v in frames.items()}
    run = run_frames(plan, frames, record=record)
    if tok.dim() == 1:
        run = IntRun({k: v[0] for k, v in run.outputs.items()}, run.logits_int[0], run.logits[0],
                     {k: (v[0] if v.dim() else v) for k, v in run.state.items()})
    return run


def logits_only(qgraph: QGraph, tokens, positions=None, device="cpu", batch_size: int = 64,
                plan: Optional[GraphPlan] = None) -> torch.Tensor:
    """Float logits (B, N, V) of many sequences, keeping only what the next population needs."""
    plan = plan or plan_graph(qgraph, device)
    tok = _as_long(tokens, "tokens")
    if tok.dim() == 1:
        tok = tok[None]
    parts = []
    for i in range(0, tok.shape[0], batch_size):
        pos = None if positions is None else _as_long(positions, "positions")[i:i + batch_size]
        frames = input_frames(qgraph, tok[i:i + batch_size], pos, device=plan.device)
        parts.append(run_frames(plan, frames, record=False).logits.cpu())
    return torch.cat(parts) if parts else torch.zeros(0, 0, qgraph.pop(qgraph.readout).size)


# ---------------------------------------------------------------- backend
class IntReferenceBackend:
    """Token backend on the integer reference: one token per ``feed``.

    Streaming form of ``run_token_time``: the accum state carries over between
    tokens, LIF state restarts at every token, so the logits equal the batched
    run's exactly. ``probe_outputs()`` returns the token-time outputs so far.
    """

    name = "int"

    def __init__(self, qgraph: QGraph, device="cpu", probes: bool = False):
        self.qgraph = qgraph
        self.plan = plan_graph(qgraph, device)
        self.vocab_size = qgraph.pop(qgraph.readout).size
        self.context = qgraph.context
        self.probes = probes
        self.reset()

    def reset(self) -> None:
        self.position = 0
        self.state: Dict[str, torch.Tensor] = {}
        self._rec: Dict[str, List[torch.Tensor]] = {}

    def feed(self, token: int) -> np.ndarray:
        if self.context and self.position >= self.context:
            raise UserError(f"position {self.position} is beyond the model's context "
                            f"{self.context}; reset() and re-feed the last context//2 tokens")
        frames = input_frames(self.qgraph, [[int(token)]], [[self.position]], device=self.plan.device)
        run = run_frames(self.plan, frames, self.state or None, record=self.probes)
        self.state = run.state
        self.position += 1
        if self.probes:
            for k, v in run.outputs.items():
                self._rec.setdefault(k, []).append(v[0])
        return run.logits[0, 0].cpu().numpy().astype(np.float64)

    def probe_outputs(self) -> Dict[str, np.ndarray]:
        """Token-time outputs (N, T, size) of every population for the tokens fed so far."""
        if not self.probes:
            raise UserError("this backend was made without probes; pass probes=True")
        return {k: torch.cat(v).cpu().numpy() for k, v in self._rec.items()}

    def close(self) -> None:
        self._rec = {}
