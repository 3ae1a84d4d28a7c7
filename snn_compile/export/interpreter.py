"""NIR reference interpreter: executes a NIR graph step by step, in float64 torch.

Time is discrete, ``dt`` seconds per step (graph metadata ``dt``, else the
``dt`` argument, else 1e-4 as snnTorch's exporter assumes). Within a step the
nodes run in topological order, so a chain Linear → LIF → Linear → LIF sees
this step's values end to end (as snnTorch and the time-parallel torch model
do); ``Delay`` nodes read earlier steps, and an edge that closes a cycle
without a Delay (``nir_io.recurrent_edges``) carries the previous step's value
(NIR's one-step recurrence: ``LIF -> Linear(W_rec) -> LIF`` adds ``W_rec s[t-1]``).
Convolutions and sum pooling are their unrolled matrices on the flattened
vector (``nir_io.linear_form``). Continuous-time neurons use forward Euler; with
``beta = 1 - dt/tau`` and ``gain = r dt / tau``:

    LIF      v <- beta v + (1 - beta) v_leak + gain I;  z = v > v_th;  v <- v_reset where z
    LI       v <- beta v + (1 - beta) v_leak + gain I;  output v
    IF       v <- v + dt r I;  z = v > v_th;  v <- v_reset where z
    I        v <- v + dt r I;  output v
    CubaLIF  i <- alpha i + (dt/tau_syn) w_in S;  then LIF on i (tau_mem)
    Threshold z = x > threshold;   Delay y[t] = x[t - round(delay/dt)]
    CausalSpikeAttention  (snn_compile.export.extensions)

The coefficients are recovered from (tau, r, dt) once and rounded to 2^-40:
the division loses one ulp, which would otherwise decide spikes whose membrane
lands exactly on the threshold (common with quantized weights); 2^-40 is exact
for every coefficient that was a float32 or a 12-bit Loihi decay.

Graphs with the project's token framing (``run_tokens``) hold one-hot
``tokens``/``positions`` inputs for the T steps of a token, reset every neuron
state at each token start, keep the attention memory, and average the output
over the T steps — the semantics of docs/semantics.md.
"""

from __future__ import annotations

import json
from typing import Dict, List, Optional

import numpy as np
import torch

from snn_compile.errors import UserError
from snn_compile.export.extensions import FRAMING_KEY
from snn_compile.export.nir_io import (CONVOLUTIONS, FlatGraph, flatten, linear_form, node_type,
                                       order, out_size, recurrent_edges, validate)

DEFAULT_DT = 1e-4
NEURONS = ("LIF", "IF", "LI", "I", "CubaLIF")
_GRID = 2.0 ** 40


def _coef(x: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(x, np.float64) * _GRID) / _GRID


class NIRInterpreter:
    """Step-by-step execution of a (flattened, validated) NIR graph on batches."""

    def __init__(self, graph, dt: Optional[float] = None, device="cpu",
                 dtype=torch.float64):
        self.flat: FlatGraph = graph if isinstance(graph, FlatGraph) else validate(flatten(graph))
        meta = self.flat.metadata
        self.dt = float(meta["dt"]) if "dt" in meta else float(dt or DEFAULT_DT)
        self.device, self.dtype = torch.device(device), dtype
        self.order: List[str] = order(self.flat)
        self.srcs = {n: self.flat.sources(n) for n in self.flat.nodes}
        self.back = recurrent_edges(self.flat)
        self.back_srcs = sorted({a for a, _ in self.back})
        self.prev: Dict[str, torch.Tensor] = {}
        self.p: Dict[str, dict] = {n: self._params(n, v) for n, v in self.flat.nodes.items()}
        self.state: Dict[str, object] = {}
        self.batch = 0

    # ------------------------------------------------------------- parameters
    def _t(self, x) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x, np.float64), dtype=self.dtype, device=self.device)

    def _v(self, x) -> torch.Tensor:
        """A per-neuron parameter as a flat vector (NIR nodes may carry (C, H, W) shapes;
        the interpreter works on flattened, C-order vectors)."""
        return self._t(np.asarray(x, np.float64).reshape(-1))

    def _params(self, name: str, node) -> dict:
        t, dt = node_type(node), self.dt
        if t in ("Linear", "Affine"):
            p = {"W": self._t(node.weight).t().contiguous()}
            if t == "Affine":
                p["b"] = self._t(node.bias)
            return p
        if t == "Scale":
            return {"s": self._v(node.scale)}
        if t in CONVOLUTIONS:
            M, b = linear_form(self.flat, name)
            return {"W": self._t(M).t().contiguous(), "b": None if b is None else self._t(b)}
        if t == "Threshold":
            return {"th": self._v(node.threshold)}
        if t in ("LIF", "LI"):
            tau = np.asarray(node.tau, np.float64)
            beta = _coef(1.0 - dt / tau)
            p = {"beta": self._v(beta), "gain": self._v(_coef(np.asarray(node.r) * dt / tau)),
                 "leak": self._v((1.0 - beta) * np.asarray(node.v_leak, np.float64))}
            if t == "LIF":
                p.update(vth=self._v(node.v_threshold), vreset=self._v(node.v_reset))
            return p
        if t in ("IF", "I"):
            p = {"gain": self._v(_coef(np.asarray(node.r, np.float64) * dt))}
            if t == "IF":
                p.update(vth=self._v(node.v_threshold), vreset=self._v(node.v_reset))
            return p
        if t == "CubaLIF":
            ts, tm = np.asarray(node.tau_syn, np.float64), np.asarray(node.tau_mem, np.float64)
            beta = _coef(1.0 - dt / tm)
            return {"alpha": self._v(_coef(1.0 - dt / ts)),
                    "win": self._v(_coef(np.asarray(node.w_in, np.float64) * dt / ts)),
                    "beta": self._v(beta), "gain": self._v(_coef(np.asarray(node.r) * dt / tm)),
                    "leak": self._v((1.0 - beta) * np.asarray(node.v_leak, np.float64)),
                    "vth": self._v(node.v_threshold), "vreset": self._v(node.v_reset)}
        if t == "Delay":
            k = np.rint(np.asarray(node.delay, np.float64).reshape(-1) / dt).astype(np.int64)
            if k.size and k.min() < 1:
                raise UserError(f"Delay node {name}: delays shorter than one step dt={dt} "
                                "cannot be executed in discrete time")
            return {"k": torch.as_tensor(k, device=self.device), "kmax": int(k.max(initial=1))}
        if t == "CausalSpikeAttention":
            lam = self._t(node.retention())[None, :, None, None]
            return {"d": node.d_model, "H": node.n_heads, "dh": node.head_dim,
                    "lam": lam if node.decay else None, "window": node.window}
        return {}

    # ------------------------------------------------------------------ state
    def reset(self, batch: int) -> None:
        """Zero every state for ``batch`` sequences."""
        self.batch, self.state, self.prev = batch, {}, {}

    def reset_neurons(self, steps: int = 0) -> None:
        """Token boundary: neuron states to zero; attention memories and delays stay.

        ``steps``: the steps T of the token just run; a decaying memory then also decays
        through the token window's ``W - T`` drain steps (``lambda^(W - T)``)."""
        for n in list(self.state):
            t = node_type(self.flat.nodes[n])
            if t in NEURONS:
                del self.state[n]
            elif t == "CausalSpikeAttention" and self.p[n]["lam"] is not None and steps:
                self.state[n] = self.state[n] * self.p[n]["lam"] ** (self.p[n]["window"] - steps)

    def _zeros(self, size: int) -> torch.Tensor:
        return torch.zeros(self.batch, size, dtype=self.dtype, device=self.device)

    # ------------------------------------------------------------------- step
    def step(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """One time step; ``inputs[name]`` is (B, size). Returns every node's output."""
        out: Dict[str, torch.Tensor] = {}
        nodes = self.flat.nodes
        for n in self.order:                         # delays first: they read the past
            if node_type(nodes[n]) == "Delay":
                out[n] = self._delay_out(n)
        for n in self.order:
            t, p = node_type(nodes[n]), self.p[n]
            if t == "Input":
                if n not in inputs:
                    raise UserError(f"no values given for input node {n!r} "
                                    f"(inputs: {', '.join(self.flat.inputs)})")
                out[n] = torch.as_tensor(inputs[n], dtype=self.dtype,
                                         device=self.device).reshape(self.batch, -1)
                continue
            x = None
            for s in self.srcs[n]:
                v = self._previous(s) if (s, n) in self.back else out[s]
                x = v if x is None else x + v
            if t == "Delay":
                self._delay_push(n, x)
            elif t in ("Output", "Flatten"):
                out[n] = x
            elif t == "Linear":
                out[n] = x @ p["W"]
            elif t == "Affine":
                out[n] = x @ p["W"] + p["b"]
            elif t == "Scale":
                out[n] = x * p["s"]
            elif t in CONVOLUTIONS:
                out[n] = x @ p["W"] if p["b"] is None else x @ p["W"] + p["b"]
            elif t == "Threshold":
                out[n] = (x > p["th"]).to(self.dtype)
            elif t in NEURONS:
                out[n] = self._neuron(n, t, p, x)
            elif t == "CausalSpikeAttention":
                out[n] = self._attention(n, p, x)
            else:       # validate() rejected it already
                raise UserError(f"node {n}: type {t} cannot be executed")
        self.prev = {s: out[s] for s in self.back_srcs}
        return out

    def _previous(self, name: str) -> torch.Tensor:
        """A recurrent edge's value: its source's output of the previous step (zeros at
        the first step)."""
        if name in self.prev:
            return self.prev[name]
        size = out_size(self.flat.nodes[name])
        if size is None:
            raise UserError(f"node {name} starts a recurrent edge but its size is unknown; "
                            "give the node an output type")
        return self._zeros(int(size))

    def _neuron(self, n: str, t: str, p: dict, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-1]
        if t == "CubaLIF":
            i = self.state.get(n + "/i", self._zeros(size))
            i = p["alpha"] * i + p["win"] * x
            self.state[n + "/i"] = i
            x = i
        v = self.state.get(n, self._zeros(size))
        if t in ("IF", "I"):
            v = v + p["gain"] * x
        else:
            v = p["beta"] * v + p["leak"] + p["gain"] * x
        if t in ("LI", "I"):
            self.state[n] = v
            return v
        z = v > p["vth"]
        self.state[n] = torch.where(z, p["vreset"].expand_as(v), v)
        return z.to(self.dtype)

    def _attention(self, n: str, p: dict, x: torch.Tensor) -> torch.Tensor:
        d, H, dh = p["d"], p["H"], p["dh"]
        B = x.shape[0]
        q, k, v = (x[:, i * d:(i + 1) * d].reshape(B, H, dh) for i in range(3))
        S = self.state.get(n)
        if S is None:
            S = torch.zeros(B, H, dh, dh, dtype=self.dtype, device=self.device)
        if p["lam"] is not None:
            S = S * p["lam"]                                    # retention per Loihi step
        S = S + k[..., :, None] * v[..., None, :]              # S_h += k_h^T v_h
        self.state[n] = S
        return (q[..., None, :] @ S)[..., 0, :].reshape(B, d)   # A_h = q_h S_h

    def _delay_out(self, n: str) -> torch.Tensor:
        p = self.p[n]
        hist = self.state.get(n)
        size = p["k"].numel()
        if hist is None:
            return self._zeros(size)
        # hist: (kmax, B, size), hist[0] the most recent input
        idx = (p["k"] - 1).clamp(max=hist.shape[0] - 1)
        vals = hist[idx, :, torch.arange(size, device=self.device)].t()
        old = (p["k"] > hist.shape[0])
        return torch.where(old, torch.zeros_like(vals), vals)

    def _delay_push(self, n: str, x: torch.Tensor) -> None:
        hist = self.state.get(n)
        hist = x[None] if hist is None else torch.cat([x[None], hist])[: self.p[n]["kmax"]]
        self.state[n] = hist

    # -------------------------------------------------------------------- runs
    def run(self, inputs: Dict[str, torch.Tensor], record: Optional[List[str]] = None):
        """Run S steps from a fresh state; ``inputs[name]`` is (S, B, size).

        Returns ``{node: (S, B, size)}`` for the Output nodes and ``record`` nodes.
        """
        first = next(iter(inputs.values()))
        S, B = int(first.shape[0]), int(first.shape[1])
        self.reset(B)
        keep = list(self.flat.outputs) + list(record or [])
        rec: Dict[str, List[torch.Tensor]] = {k: [] for k in keep}
        for s in range(S):
            o = self.step({k: v[s] for k, v in inputs.items()})
            for k in keep:
                rec[k].append(o[k])
        return {k: torch.stack(v) for k, v in rec.items()}


# ------------------------------------------------------------------ framing
def framing(flat_or_graph) -> Optional[dict]:
    meta = getattr(flat_or_graph, "metadata", None) or {}
    f = meta.get(FRAMING_KEY)
    return json.loads(f) if isinstance(f, str) else f


@torch.no_grad()
def run_tokens(interp: NIRInterpreter, tokens, record_spikes: bool = True) -> dict:
    """Token-time run of a framed graph: ``{"logits": (B, N, V), "spikes": {...}}``.

    ``spikes`` holds every spiking node's output (B, N, T, size) and the
    attention nodes' counts, keyed by node name.
    """
    fr = framing(interp.flat)
    if fr is None:
        raise UserError("this NIR graph has no token framing (it was not exported by "
                        "snn_compile); run it step by step with NIRInterpreter.run")
    tok = torch.as_tensor(tokens, dtype=torch.int64)
    tok = tok[None] if tok.dim() == 1 else tok
    B, N = tok.shape
    T, C = int(fr["steps_per_token"]), int(fr["context"])
    if N > C:
        raise UserError(f"{N} tokens exceed the graph's context {C}")
    nodes = interp.flat.nodes
    size = {n: int(np.prod(nodes[n].input_type["input"])) for n in interp.flat.inputs}
    if tok.numel() and (int(tok.max()) >= size["tokens"] or int(tok.min()) < 0):
        raise UserError(f"token ids must lie in 0..{size['tokens'] - 1}")
    out_name = fr["readout"]
    watch = [n for n, v in nodes.items()
             if node_type(v) in ("LIF", "IF", "CubaLIF", "CausalSpikeAttention")]
    interp.reset(B)
    logits = []
    spikes: Dict[str, List[torch.Tensor]] = {n: [] for n in watch} if record_spikes else {}
    eye_t = torch.eye(size["tokens"], dtype=interp.dtype, device=interp.device)
    eye_p = torch.eye(size["positions"], dtype=interp.dtype, device=interp.device)
    for i in range(N):
        interp.reset_neurons(T)
        frame = {"tokens": eye_t[tok[:, i].to(interp.device)],
                 "positions": eye_p[torch.full((B,), i, device=interp.device)]}
        steps = []
        per = {n: [] for n in spikes}
        for _ in range(T):
            o = interp.step(frame)
            steps.append(o[out_name])
            for n in per:
                per[n].append(o[n])
        logits.append(torch.stack(steps, dim=1))                # (B, T, V)
        for n in per:
            spikes[n].append(torch.stack(per[n], dim=1))         # (B, T, size)
    lg = torch.stack(logits, dim=1).mean(dim=2)                  # (B, N, V)
    return {"logits": lg, "spikes": {n: torch.stack(v, dim=1) for n, v in spikes.items()}}


class NIRBackend:
    """Token backend (``generate --backend nir``) on the interpreter: one token per feed.

    The interpreter is time-stepped, so a token costs T steps; the state (attention
    memory) persists across feeds until ``reset``.
    """

    def __init__(self, graph):
        self.interp = NIRInterpreter(graph)
        fr = framing(self.interp.flat)
        if fr is None:
            raise UserError("generate --backend nir needs a graph exported by snn_compile "
                            "(token framing metadata); this one has none")
        self.T, self.C, self.readout = int(fr["steps_per_token"]), int(fr["context"]), fr["readout"]
        nodes = self.interp.flat.nodes
        self.V = int(np.prod(nodes["tokens"].input_type["input"]))
        self.context, self.vocab_size = self.C, self.V
        self.reset()

    def reset(self) -> None:
        self.interp.reset(1)
        self.pos = 0

    def feed(self, token: int) -> np.ndarray:
        if self.pos >= self.C:
            raise UserError(f"context of {self.C} tokens is full; reset first")
        it = self.interp
        it.reset_neurons(self.T)
        frame = {"tokens": torch.nn.functional.one_hot(torch.tensor([token]), self.V),
                 "positions": torch.nn.functional.one_hot(torch.tensor([self.pos]), self.C)}
        acc = None
        for _ in range(self.T):
            o = it.step(frame)[self.readout]
            acc = o if acc is None else acc + o
        self.pos += 1
        return (acc / self.T)[0].cpu().numpy()

    def close(self) -> None:
        pass
