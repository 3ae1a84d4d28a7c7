"""Quantization pass: a float spiking decoder → a Loihi 2 fixed-point ``QGraph``.

Every LIF population ``x`` gets a power-of-two membrane scale ``K_x``: integer
input ``a = K_x * I`` (I the float input current, threshold 1 after folding), so
``vth = K_x``. A float weight matrix on the quantization grid ``w = m * 2^e``
(|m| <= 127, which quantization-aware training guarantees) becomes Lava weights
``m`` (single-sign) or ``2m`` (mixed sign: Lava's Dense drops the LSB) with

    weight_exp = log2(K_x) + e - [mixed]

so that ``shift(W_lava @ s, weight_exp) == K_x * (w @ s)`` exactly whenever
``weight_exp >= 0`` (a left shift). ``K_x`` is the largest power of two that
keeps the worst calibrated input below 2^15 with a factor-2 margin (and vth
within 17 bits), so 24-bit ``u``/``v`` cannot wrap on the calibration text; the
per-population report says how close each population came.

Membrane decay ``beta`` becomes ``dv = round(4096 (1 - beta))``; Lava decays
``v`` by ``(4096 - dv) >> 12`` with truncation towards zero, the one place where
the integer model may differ from the float one (by < 2^-16 of the threshold
per step).

The attention memory is lowered to standard populations (docs/semantics.md):
``kv`` (ProdNeuron, k_a * v_b), ``mem`` (accumulator), ``read`` (ProdNeuron,
S_ab * q_a), then a graded Dense summing over ``a`` into the ``attn`` LIF.
A token shift becomes one more synapse per lag into ``qkv``/``ff`` with
``token_lag = j`` (a ``DelayDense`` of ``j`` token windows in hardware).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np

from snn_compile.compiler.qgraph import (DECAY_MAX, DELAY_MAX, WEIGHT_EXP_RANGE, Accum, Graded,
                                         Input, Lif, Population, Prod, QGraph, Synapse,
                                         assign_depths)
from snn_compile.errors import UserError
from snn_compile.loihi.limits import INPUT_LIMIT, MANTISSA_MAX, PAYLOAD_MAX
from snn_compile.models.config import DECAY_EXP
from snn_compile.models.spikedecoder import causal_spike_attention, shift_current

A_IN_TARGET = INPUT_LIMIT  # keep |a_in| within Loihi 2's 16-bit dendritic input
K_MAX_LOG2 = 16            # vth = K must fit Lava's 17-bit vth


# ------------------------------------------------ the attention lowering's index layout
def replication(rows: np.ndarray, src_size: int) -> np.ndarray:
    """0/1 matrix with W[r, rows[r]] = 1: output r copies source neuron rows[r]."""
    w = np.zeros((len(rows), src_size), dtype=np.int64)
    w[np.arange(len(rows)), rows] = 1
    return w


def attention_indices(d: int, heads: int):
    """Index layout of the attention lowering (docs/emulator.md).

    qkv = [q | k | v], each d = heads * dh, channel (h, i) at h*dh + i.
    kv, mem, read: size heads*dh*dh, neuron (h, a, b) at (h*dh + a)*dh + b,
    with ``a`` the key/query channel and ``b`` the value channel.
    Returns (q_of, k_of, v_of, out_of) for every (h, a, b): the qkv index of
    q[h, a], k[h, a], v[h, b] and the attn channel h*dh + b it sums into.
    """
    dh = d // heads
    h, a, b = np.meshgrid(np.arange(heads), np.arange(dh), np.arange(dh), indexing="ij")
    h, a, b = h.ravel(), a.ravel(), b.ravel()
    return h * dh + a, d + h * dh + a, 2 * d + h * dh + b, h * dh + b


# --------------------------------------------------------------------- numbers
def pow2_grid(w: np.ndarray) -> Tuple[np.ndarray, int, float]:
    """Nearest ``m * 2^e`` with |m| <= 127 and the smallest such ``e``.

    Returns (mantissa int64 array, e, max relative rounding error). On the QAT
    grid the error is 0.
    """
    w = np.asarray(w, dtype=np.float64)
    amax = float(np.abs(w).max()) if w.size else 0.0
    if amax == 0.0:
        return np.zeros(w.shape, np.int64), 0, 0.0
    e = math.ceil(math.log2(amax / MANTISSA_MAX))
    if amax / 2.0 ** e > MANTISSA_MAX:      # guard log2 rounding
        e += 1
    m = np.rint(w / 2.0 ** e).astype(np.int64)
    m = np.clip(m, -MANTISSA_MAX, MANTISSA_MAX)
    err = float(np.abs(m * 2.0 ** e - w).max() / amax)
    return m, e, err


def beta_to_dv(beta: float) -> int:
    """Loihi voltage decay: v <- v * (4096 - dv) / 4096."""
    return int(min(DECAY_MAX, max(0, round(4096 * (1.0 - float(beta))))))


@dataclass
class SynapseStats:
    name: str
    weight_exp: int
    exact: bool                  # left shift only: integer == K * float exactly
    rounding_error: float        # relative, from snapping to the 8-bit grid
    clipped_fraction: float = 0.0


def lava_synapse(name: str, src: str, dst: str, w: np.ndarray, k_log2: int, *,
                 graded: bool = False, port: str = "a_in") -> Tuple[Synapse, SynapseStats]:
    """Float weights (dst x src) → a Lava-legal integer synapse scaled by 2^k_log2."""
    m, e, err = pow2_grid(w)
    mixed = bool(m.size) and m.min() < 0 < m.max()
    w_lava = 2 * m if mixed else m
    exp = k_log2 + e - (1 if mixed else 0)
    lo, hi = WEIGHT_EXP_RANGE
    clipped = 0.0
    if exp > hi:
        # weights too large for the scale: saturate the mantissa range instead
        raise UserError(f"synapse {name}: weights up to {np.abs(w).max():.3g} need weight_exp "
                        f"{exp} > {hi}; the target population's scale is too large — "
                        "retrain with deployable=True (quantization-aware) or lower the weights")
    if exp < lo:
        shift = lo - exp
        m2 = np.right_shift(w_lava, shift)
        clipped = float(np.mean(m2 == 0))
        w_lava, exp = m2, lo
    syn = Synapse(name=name, src=src, dst=dst, weights=w_lava.astype(np.int64),
                  weight_exp=int(exp), port=port, graded=graded)
    return syn, SynapseStats(name, int(exp), exp >= 0, err, clipped)


def scale_for(max_input: float) -> int:
    """log2 of the membrane scale K for a population whose |input| reaches max_input."""
    if max_input <= 0:
        return 10
    k = math.floor(math.log2(A_IN_TARGET / (2.0 * max_input)))
    return int(max(0, min(K_MAX_LOG2, k)))


# ---------------------------------------------------------------------- report
@dataclass
class QuantReport:
    """What the quantizer chose and how well it fits, per population."""

    populations: Dict[str, dict] = field(default_factory=dict)
    synapses: Dict[str, SynapseStats] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)      # expected, not a problem

    def to_dict(self) -> dict:
        return {"populations": self.populations,
                "synapses": {k: vars(v) for k, v in self.synapses.items()},
                "warnings": self.warnings, "notes": self.notes}


# ------------------------------------------------------------------- decoders
def _currents(folded, tokens) -> Dict[str, float]:
    """Largest |input current| of every LIF population on calibration tokens (float)."""
    import torch

    run = folded.forward(tokens)
    sp = run["spikes"]
    t64 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    N = sp["emb"].shape[1]
    cur = {"emb": float((t64(folded.E_tok).t()[tokens] + t64(folded.E_pos).t()[:N]).abs().max())}
    d = folded.d_model
    x = sp["emb"]

    def lagged(x, mats):
        return shift_current(x, [t64(w) for w in mats])

    for i, b in enumerate(folded.blocks):
        p = f"block{i}"
        cur[f"{p}.qkv"] = float((x @ t64(b.W_qkv).t() + lagged(x, b.S_qkv)).abs().max())
        cur[f"{p}.attn"] = float((sp[f"{p}.A"] * t64(b.c)).abs().max())
        cur[f"{p}.mid"] = float((sp[f"{p}.attn"] @ t64(b.W_o).t() + t64(b.g1) * x).abs().max())
        cur[f"{p}.ff"] = float((sp[f"{p}.mid"] @ t64(b.W_1).t()
                                + lagged(sp[f"{p}.mid"], b.S_ff)).abs().max())
        cur[f"{p}.out"] = float((sp[f"{p}.ff"] @ t64(b.W_2).t()
                                 + t64(b.g2) * sp[f"{p}.mid"]).abs().max())
        x = sp[f"{p}.out"]
    del d
    return cur


def quantize_decoder(folded, calib_tokens=None, tokenizer=None) -> Tuple[QGraph, QuantReport]:
    """FoldedDecoder (or FoldedStreamDecoder) → QGraph with the attention lowering of
    docs/emulator.md.

    ``calib_tokens`` (LongTensor (B, N)) sets each population's membrane scale from
    the largest input current it sees; without it, a provable bound (sum of
    |weights| for binary inputs, the context-wide count bound for attention) is used.
    """

    if getattr(folded, "residual", "spike") == "stream":
        return quantize_stream(folded, calib_tokens, tokenizer)
    V, d, H, T, C = (folded.vocab_size, folded.d_model, folded.n_heads, folded.T,
                     folded.context)
    dh = d // H
    rep = QuantReport()
    if calib_tokens is not None:
        peak = _currents(folded, calib_tokens)
        src = "calibration"
    else:
        peak, src = {}, "bound"
    betas = folded.betas()

    def bound(name: str, mats) -> float:
        if name in peak:
            return peak[name]
        return float(sum(np.abs(m).sum(axis=1).max() for m in mats))

    pops: Dict[str, Population] = {
        "tokens": Input("tokens", V, layer="emb", role="input"),
        "positions": Input("positions", C, layer="emb", role="input"),
    }
    syns: List[Synapse] = []
    klog: Dict[str, int] = {}

    def lif(name, size, layer, role, mats):
        b = bound(name, mats)
        k = scale_for(b)
        klog[name] = k
        pops[name] = Lif(name, size, dv=beta_to_dv(betas[name]), vth=2 ** k,
                         layer=layer, role=role)
        rep.populations[name] = {"kind": "lif", "scale_log2": k, "vth": 2 ** k,
                                 "dv": pops[name].dv, "max_input": b, "max_input_from": src,
                                 "max_a_in": b * 2 ** k,
                                 "a_in_headroom": A_IN_TARGET / max(b * 2 ** k, 1e-9)}

    def syn(name, s, dst, w, token_lag=0, **kw):
        sy, st = lava_synapse(name, s, dst, w, klog.get(dst, 0), **kw)
        sy.token_lag = token_lag
        syns.append(sy)
        rep.synapses[name] = st

    # one token and one position are active at a time
    lif("emb", d, "emb", "embedding", [np.abs(folded.E_tok).max(axis=1, keepdims=True)
                                       + np.abs(folded.E_pos).max(axis=1, keepdims=True)])
    syn("emb.tok", "tokens", "emb", folded.E_tok)
    syn("emb.pos", "positions", "emb", folded.E_pos)
    x = "emb"
    q_of, k_of, v_of, out_of = attention_indices(d, H)
    n_att = H * dh * dh
    for i, b in enumerate(folded.blocks):
        p, L = f"block{i}", f"block{i}"
        lif(f"{p}.qkv", 3 * d, L, "qkv", [b.W_qkv, *b.S_qkv])
        syn(f"{p}.w_qkv", x, f"{p}.qkv", b.W_qkv)
        for j, w in enumerate(b.S_qkv, start=1):     # token shift: x of token n - j
            syn(f"{p}.w_qkv_lag{j}", x, f"{p}.qkv", w, token_lag=j)
        pops[f"{p}.kv"] = Prod(f"{p}.kv", n_att, vth=0, layer=L, role="kv_product")
        syns.append(Synapse(f"{p}.kv_k", f"{p}.qkv", f"{p}.kv", replication(k_of, 3 * d),
                            port="a_in1"))
        syns.append(Synapse(f"{p}.kv_v", f"{p}.qkv", f"{p}.kv", replication(v_of, 3 * d),
                            port="a_in2"))
        pops[f"{p}.mem"] = Accum(f"{p}.mem", n_att, layer=L, role="memory")
        eye = np.eye(n_att, dtype=np.int64)
        syns.append(Synapse(f"{p}.mem_in", f"{p}.kv", f"{p}.mem", eye, graded=True))
        pops[f"{p}.read"] = Prod(f"{p}.read", n_att, vth=0, layer=L,
                                 role="memory_read")
        syns.append(Synapse(f"{p}.read_mem", f"{p}.mem", f"{p}.read", eye.copy(),
                            port="a_in1", graded=True))
        syns.append(Synapse(f"{p}.read_q", f"{p}.qkv", f"{p}.read", replication(q_of, 3 * d),
                            port="a_in2"))
        w_att = np.zeros((d, n_att))
        w_att[out_of, np.arange(n_att)] = b.c[out_of]
        # worst case of A without calibration: every past step of the context agrees
        lif(f"{p}.attn", d, L, "attn", [np.abs(b.c)[:, None] * dh * C * T])
        syn(f"{p}.attn_in", f"{p}.read", f"{p}.attn", w_att, graded=True)
        lif(f"{p}.mid", d, L, "mid", [b.W_o, np.diag(b.g1)])
        syn(f"{p}.w_o", f"{p}.attn", f"{p}.mid", b.W_o)
        syn(f"{p}.skip1", x, f"{p}.mid", np.diag(b.g1))
        lif(f"{p}.ff", 4 * d, L, "ff", [b.W_1, *b.S_ff])
        syn(f"{p}.w_1", f"{p}.mid", f"{p}.ff", b.W_1)
        for j, w in enumerate(b.S_ff, start=1):
            syn(f"{p}.w_1_lag{j}", f"{p}.mid", f"{p}.ff", w, token_lag=j)
        lif(f"{p}.out", d, L, "out", [b.W_2, np.diag(b.g2)])
        syn(f"{p}.w_2", f"{p}.ff", f"{p}.out", b.W_2)
        syn(f"{p}.skip2", f"{p}.mid", f"{p}.out", np.diag(b.g2))
        x = f"{p}.out"
    pops["head"] = Graded("head", V, vth=0, layer="head", role="readout")
    m, e, err = pow2_grid(folded.W_head)
    mixed = m.min() < 0 < m.max()
    syns.append(Synapse("head.w", x, "head", (2 * m if mixed else m).astype(np.int64),
                        weight_exp=0, graded=False))
    rep.synapses["head.w"] = SynapseStats("head.w", 0, True, err)
    logit_scale = 2.0 ** e / (2 if mixed else 1) / T
    assign_depths(pops, syns, ["tokens", "positions"], T, "head")
    late = [s for s in syns if s.token_lag and s.delay > DELAY_MAX]
    if late:
        worst = max(late, key=lambda s: s.delay)
        window = T + pops["head"].depth
        raise UserError(f"the token shift's synapse {worst.name} needs a delay of {worst.delay} "
                        f"steps ({worst.token_lag} token windows of {window} steps), beyond "
                        f"the {DELAY_MAX} that Loihi 2's DelayDense holds; retrain with a "
                        "smaller --token-shift, or fewer layers or steps per token (each "
                        "lengthens the window)")
    meta = {"model": "spikedecoder", "d_model": d, "n_heads": H, "n_layers": len(folded.blocks)}
    if tokenizer is not None:
        meta["tokenizer"] = tokenizer.to_dict()
    q = QGraph(pops, syns, T, ["tokens", "positions"], "head", logit_scale, C, meta)
    for s in rep.synapses.values():
        if not s.exact:
            rep.warnings.append(f"synapse {s.name}: weight_exp {s.weight_exp} < 0 truncates "
                                "(integer model may differ slightly from the float one)")
    for n, r in rep.populations.items():
        if r["max_a_in"] >= A_IN_TARGET:
            rep.warnings.append(f"population {n}: input up to {r['max_a_in']:.0f} exceeds the "
                                "16-bit activation range")
    return q.validate(), rep


# ------------------------------------------------------------ stream decoders
STREAM_PAYLOAD_MAX = PAYLOAD_MAX   # graded spikes carry 24-bit signed payloads
MEMORY_STATE_TARGET = 2 ** 22     # decayed memory entries: half the payload range
PORT_SUM_TARGET = 2 ** 30         # graded Dense sums in int32: keep a factor-2 margin


def _stream_peaks(folded, tokens) -> Dict[str, float]:
    """Largest |input current| of every LIF, |stream| and memory size on calibration text."""
    import torch

    sp = folded.forward(tokens)["spikes"]
    t64 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    d, H = folded.d_model, folded.n_heads
    peak = {"stream": float(sp["h0"].abs().max())}
    h = sp["h0"]
    for i, b in enumerate(folded.blocks):
        p = f"block{i}"
        x, qkv, r, m = sp[f"{p}.in"], sp[f"{p}.qkv"], sp[f"{p}.attn"], sp[f"{p}.mid"]
        peak[f"{p}.in"] = float((h * t64(b.s_in)).abs().max())
        peak[f"{p}.qkv"] = float((x @ t64(b.W_qkv).t() + shift_current(
            x, [t64(w) for w in b.S_qkv])).abs().max())
        peak[f"{p}.attn"] = float((sp[f"{p}.A"] * t64(b.c)).abs().max())
        peak[f"{p}.A"] = float(sp[f"{p}.A"].abs().max())
        # the largest memory entry S_ab <= the decayed count of v_b (k_a <= 1)
        v = qkv[..., 2 * d:]
        ones = torch.ones_like(v)
        mem = causal_spike_attention(ones, ones, v, H, folded.retain(), folded.window) / (d // H)
        peak[f"{p}.mem"] = float(mem.abs().max())
        peak[f"{p}.mid"] = float((h * t64(b.s_mid) + r @ t64(b.W_om).t()).abs().max())
        peak[f"{p}.ff"] = float((m @ t64(b.W_1).t() + shift_current(
            m, [t64(w) for w in b.S_ff])).abs().max())
        h = sp[f"{p}.h"]
        peak["stream"] = max(peak["stream"], float(h.abs().max()))
    peak["final"] = float((h * t64(folded.s_final)).abs().max())
    return peak


def quantize_stream(folded, calib_tokens=None, tokenizer=None) -> Tuple[QGraph, QuantReport]:
    """``FoldedStreamDecoder`` → QGraph (docs/semantics.md, stream decoder).

    The stream ``h`` becomes graded populations (``h0``, ``block{i}.h``) whose integer
    payload is ``2^k_h h``: ``k_h`` puts every contribution (E_tok, E_pos, each W_o and
    W_2) on a left shift, so the stream is exact; the next stream population adds the
    previous one through an identity Dense (weight 1). Readers (``in``, ``mid``,
    ``final``) take ``s h`` through a graded diagonal Dense. The attention memory is the
    existing kv/mem/read lowering, its kv products scaled by ``2^sigma``, and a decaying
    accum (per-head mantissas) when the model's memory decays; the token window must be
    the one the model was trained for.
    """

    V, d, H, T, C = (folded.vocab_size, folded.d_model, folded.n_heads, folded.T,
                     folded.context)
    dh = d // H
    rep = QuantReport()
    peak = _stream_peaks(folded, calib_tokens) if calib_tokens is not None else {}
    src = "calibration" if peak else "bound"
    betas = folded.betas()
    # ---- the stream's scale: every contribution exact, payload within 24 bits
    contrib = [folded.E_tok, folded.E_pos] + [w for b in folded.blocks for w in (b.W_o, b.W_2)]
    k_h = max(-pow2_grid(w)[1] for w in contrib)
    h_bound = peak.get("stream") or float(
        np.abs(folded.E_tok).max(axis=1).max() + np.abs(folded.E_pos).max(axis=1).max()
        + sum(np.abs(b.W_o).sum(axis=1).max() + np.abs(b.W_2).sum(axis=1).max()
              for b in folded.blocks))
    fit = math.floor(math.log2(STREAM_PAYLOAD_MAX / (2.0 * max(h_bound, 1e-9))))
    if fit < k_h:
        rep.warnings.append(f"stream: |h| up to {h_bound:.3g} needs scale 2^{fit} < 2^{k_h} to "
                            "fit 24-bit graded payloads; the smallest stream weights truncate")
        k_h = fit
    rep.populations["stream"] = {"kind": "graded", "scale_log2": k_h, "max_value": h_bound,
                                 "max_value_from": src, "max_payload": h_bound * 2 ** k_h,
                                 "payload_headroom": STREAM_PAYLOAD_MAX / max(h_bound * 2 ** k_h, 1e-9)}
    pops: Dict[str, Population] = {
        "tokens": Input("tokens", V, layer="emb", role="input"),
        "positions": Input("positions", C, layer="emb", role="input"),
        "h0": Graded("h0", d, vth=0, layer="emb", role="stream")}
    syns: List[Synapse] = []
    klog: Dict[str, int] = {"h0": k_h}

    def lif(name, size, layer, role, bound_mats):
        b = peak.get(name)
        if b is None:
            b = float(sum(np.abs(m).sum(axis=1).max() for m in bound_mats))
        k = scale_for(b)
        klog[name] = k
        pops[name] = Lif(name, size, dv=beta_to_dv(betas[name]), vth=2 ** k,
                         layer=layer, role=role)
        rep.populations[name] = {"kind": "lif", "scale_log2": k, "vth": 2 ** k,
                                 "dv": pops[name].dv, "max_input": b, "max_input_from": src,
                                 "max_a_in": b * 2 ** k,
                                 "a_in_headroom": A_IN_TARGET / max(b * 2 ** k, 1e-9)}

    def syn(name, s, dst, w, k_src=0, token_lag=0, **kw):
        sy, st = lava_synapse(name, s, dst, w, klog[dst] - k_src, **kw)
        sy.token_lag = token_lag
        syns.append(sy)
        rep.synapses[name] = st

    def stream_pop(name, layer):
        pops[name] = Graded(name, d, vth=0, layer=layer, role="stream")
        klog[name] = k_h

    syn("emb.tok", "tokens", "h0", folded.E_tok)
    syn("emb.pos", "positions", "h0", folded.E_pos)
    eye_d = np.eye(d, dtype=np.int64)
    h_max = h_bound
    q_of, k_of, v_of, out_of = attention_indices(d, H)
    n_att = H * dh * dh
    decay = list(np.repeat(np.asarray(folded.memory_decay, np.int64), dh * dh)) \
        if folded.memory_decay else []
    h = "h0"
    for i, b in enumerate(folded.blocks):
        p = L = f"block{i}"
        lif(f"{p}.in", d, L, "in", [np.abs(b.s_in)[:, None] * h_max])
        syn(f"{p}.read_in", h, f"{p}.in", np.diag(b.s_in), k_h, graded=True)
        lif(f"{p}.qkv", 3 * d, L, "qkv", [b.W_qkv, *b.S_qkv])
        syn(f"{p}.w_qkv", f"{p}.in", f"{p}.qkv", b.W_qkv)
        for j, w in enumerate(b.S_qkv, start=1):
            syn(f"{p}.w_qkv_lag{j}", f"{p}.in", f"{p}.qkv", w, token_lag=j)
        # memory scale 2^sigma: decayed entries within MEMORY_STATE_TARGET, the graded
        # Dense into attn within int32, the kv input 2^sigma within the 16-bit dendrite
        # (the decay rounds each step's loss up by < 1 unit of 2^-sigma, so a fine memory
        # grid matters); the read product shifts right by rho so that the attention sum
        # c * A stays within int32 in the graded Dense into attn
        if decay:
            s_max = peak.get(f"{p}.mem", 2 ** DECAY_EXP / max(1, min(decay)) * T)
            a_max = peak.get(f"{p}.A", s_max * dh)
            sigma = int(max(0, min(14, math.floor(math.log2(MEMORY_STATE_TARGET
                                                            / max(s_max, 1))))))
            port = math.floor(math.log2(PORT_SUM_TARGET / (MANTISSA_MAX * 2 * max(a_max, 1))))
            rho = int(max(0, sigma - port))
        else:
            sigma = rho = 0
        klog[f"{p}.read"] = sigma - rho
        pops[f"{p}.kv"] = Prod(f"{p}.kv", n_att, vth=0, layer=L, role="kv_product")
        syns.append(Synapse(f"{p}.kv_k", f"{p}.qkv", f"{p}.kv", replication(k_of, 3 * d),
                            weight_exp=sigma, port="a_in1"))
        syns.append(Synapse(f"{p}.kv_v", f"{p}.qkv", f"{p}.kv", replication(v_of, 3 * d),
                            port="a_in2"))
        pops[f"{p}.mem"] = Accum(f"{p}.mem", n_att, layer=L, role="memory",
                                 decay=[int(x) for x in decay])
        eye = np.eye(n_att, dtype=np.int64)
        syns.append(Synapse(f"{p}.mem_in", f"{p}.kv", f"{p}.mem", eye, graded=True))
        pops[f"{p}.read"] = Prod(f"{p}.read", n_att, vth=0, exp=rho, layer=L,
                                 role="memory_read")
        syns.append(Synapse(f"{p}.read_mem", f"{p}.mem", f"{p}.read", eye.copy(),
                            port="a_in1", graded=True))
        syns.append(Synapse(f"{p}.read_q", f"{p}.qkv", f"{p}.read", replication(q_of, 3 * d),
                            port="a_in2"))
        w_att = np.zeros((d, n_att))
        w_att[out_of, np.arange(n_att)] = b.c[out_of]
        lif(f"{p}.attn", d, L, "attn", [np.abs(b.c)[:, None] * dh * C * T])
        syn(f"{p}.attn_in", f"{p}.read", f"{p}.attn", w_att, sigma - rho, graded=True)
        rep.populations[f"{p}.mem"] = {"kind": "accum", "scale_log2": sigma, "read_shift": rho,
                                       "decay": sorted(set(int(x) for x in decay)),
                                       "max_entry": peak.get(f"{p}.mem"),
                                       "max_payload": (peak[f"{p}.mem"] * 2 ** sigma
                                                       if f"{p}.mem" in peak else None)}
        lif(f"{p}.mid", d, L, "mid", [np.abs(b.s_mid)[:, None] * h_max, b.W_om])
        syn(f"{p}.read_mid", h, f"{p}.mid", np.diag(b.s_mid), k_h, graded=True)
        syn(f"{p}.w_om", f"{p}.attn", f"{p}.mid", b.W_om)
        lif(f"{p}.ff", 4 * d, L, "ff", [b.W_1, *b.S_ff])
        syn(f"{p}.w_1", f"{p}.mid", f"{p}.ff", b.W_1)
        for j, w in enumerate(b.S_ff, start=1):
            syn(f"{p}.w_1_lag{j}", f"{p}.mid", f"{p}.ff", w, token_lag=j)
        stream_pop(f"{p}.h", L)
        syns.append(Synapse(f"{p}.stream", h, f"{p}.h", eye_d.copy(), graded=True))
        syn(f"{p}.w_o", f"{p}.attn", f"{p}.h", b.W_o)
        syn(f"{p}.w_2", f"{p}.ff", f"{p}.h", b.W_2)
        h = f"{p}.h"
    lif("final", d, "head", "final", [np.abs(folded.s_final)[:, None] * h_max])
    syn("final.read", h, "final", np.diag(folded.s_final), k_h, graded=True)
    pops["head"] = Graded("head", V, vth=0, layer="head", role="readout")
    m, e, err = pow2_grid(folded.W_head)
    mixed = m.min() < 0 < m.max()
    syns.append(Synapse("head.w", "final", "head", (2 * m if mixed else m).astype(np.int64),
                        weight_exp=0, graded=False))
    rep.synapses["head.w"] = SynapseStats("head.w", 0, True, err)
    logit_scale = 2.0 ** e / (2 if mixed else 1) / T
    assign_depths(pops, syns, ["tokens", "positions"], T, "head")
    window = T + pops["head"].depth
    if folded.memory_decay and folded.window != window:
        if folded.window < window:
            raise UserError(f"the decaying memory was trained for {folded.window} Loihi steps "
                            f"per token, but the lowered graph needs {window}; retrain with "
                            "this snn_compile (the window is set from the layer count)")
        # pad the readout: a longer window only adds silent steps
        extra = folded.window - window
        for s in syns:
            if s.dst == "head":
                s.delay += extra
        pops["head"].depth += extra
        assign_lags = [s for s in syns if s.token_lag]
        for s in assign_lags:
            s.delay += s.token_lag * extra
    late = [s for s in syns if s.token_lag and s.delay > DELAY_MAX]
    if late:
        worst = max(late, key=lambda s: s.delay)
        raise UserError(f"the token shift's synapse {worst.name} needs a delay of {worst.delay} "
                        f"steps ({worst.token_lag} token windows of {T + pops['head'].depth} "
                        f"steps), beyond the {DELAY_MAX} that Loihi 2's DelayDense holds; "
                        "retrain with a smaller --token-shift or fewer layers")
    meta = {"model": "spikedecoder", "residual": "stream", "d_model": d, "n_heads": H,
            "n_layers": len(folded.blocks)}
    if tokenizer is not None:
        meta["tokenizer"] = tokenizer.to_dict()
    q = QGraph(pops, syns, T, ["tokens", "positions"], "head", logit_scale, C, meta)
    trunc = [st.name for st in rep.synapses.values() if not st.exact]
    if trunc:       # the graded readers and the memory read: a right shift rounds down
        rep.notes = [f"{len(trunc)} graded synapses ({', '.join(trunc[:3])}"
                     f"{', ...' if len(trunc) > 3 else ''}) shift right (weight_exp < 0): the "
                     "integer model rounds their sums down, so it can differ slightly from "
                     "the float one (measure with `snn-compile eval --backend emulator`)"]
    for n, r in rep.populations.items():
        if r.get("max_a_in", 0) >= A_IN_TARGET:
            rep.warnings.append(f"population {n}: input up to {r['max_a_in']:.0f} exceeds the "
                                "16-bit activation range")
    return q.validate(), rep
