"""SpikeDecoder: a fully spiking GPT-style decoder, in one readable file.

Equations (docs/semantics.md), token ``n`` occupies ``T`` steps ``t``; every
neuron is a reset-to-zero LIF without synaptic current or bias, threshold 1:

    v[t] = beta * v'[t-1] + I[t];  s[t] = v[t] > 1;  v'[t] = v[t] (1 - s[t]);  v'[-1] = 0

    s0 = LIF_emb(E_tok e_tok + E_pos e_pos)                    spike embedding (rate code;
                                                               temporal / population:
                                                               models/embeddings.py)
    block:  q,k,v = LIF_qkv(W_qkv x)
            A[p]  = sum_{p'<=p} (q[p].k[p'])_head v[p']          spiking self-attention, no softmax,
                                                               causal over p = n*T + t
            r = LIF_attn(c * A)
            m = LIF_mid(W_o r + g1 * x)                        spike residual: skip enters the membrane
            y = LIF_out(W_2 LIF_ff(W_1 m) + g2 * m)
            SDSA variant (attention = "sdsa"): A = sum_{p'<=p} k * v per channel,
            r = q * LIF_attn(c * A)
            token shift (K > 0): + sum_j S_qkv,j x[n-j] into LIF_qkv, + sum_j S_ff,j m[n-j]
            into LIF_ff (the spikes of token n-j at the same step t)
    logits = (1/T) sum_t W_head y

Normalisation acts on membrane input currents: a per-channel scale
``gamma / rms`` (batch RMS in training, running RMS in eval, no shift) that
multiplies the rows of every weight feeding the population, so it folds away.
In deployable mode every folded matrix is fake-quantized to ``m 2^e`` (|m| <=
127) with a straight-through estimator, and ``beta`` to ``(4096 - dv)/4096``:
the float model then lives on the Loihi 2 integer grid.

Neuron semantics equal ``snntorch.Leaky(reset_mechanism="zero", threshold=1)``
with the same surrogate (tests/test_models.py checks it spike for spike).
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional

import torch
import torch.nn as nn

from snn_compile.models.config import ModelConfig


# ------------------------------------------------------------------ surrogates
class _Spike(torch.autograd.Function):
    """Heaviside forward (strict >), surrogate derivative backward."""

    @staticmethod
    def forward(ctx, x, kind: str):
        ctx.save_for_backward(x)
        ctx.kind = kind
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        if ctx.kind == "atan":            # snntorch.surrogate.atan(alpha=2)
            alpha = 2.0
            g = alpha / 2 / (1 + (math.pi / 2 * alpha * x) ** 2)
        else:                             # snntorch.surrogate.fast_sigmoid(slope=25)
            g = 1.0 / (25.0 * x.abs() + 1.0) ** 2
        return grad * g, None


def spike(x: torch.Tensor, kind: str = "atan") -> torch.Tensor:
    return _Spike.apply(x, kind)


# ---------------------------------------------------------------- quantization
def fake_quant(w: torch.Tensor, enabled: bool = True) -> torch.Tensor:
    """Snap to ``m * 2^e``, |m| <= 127, e the smallest integer that fits (STE)."""
    if not enabled:
        return w
    amax = w.detach().abs().max()
    if amax == 0:
        return w
    e = torch.ceil(torch.log2(amax / 127.0))
    s = torch.pow(2.0, e)
    if amax / s > 127:
        s = s * 2
    q = torch.clamp(torch.round(w / s), -127, 127) * s
    return w + (q - w).detach()


def quant_beta(beta: torch.Tensor, enabled: bool = True) -> torch.Tensor:
    """Round beta to Loihi's 12-bit decay: beta_q = (4096 - dv) / 4096."""
    if not enabled:
        return beta
    dv = torch.round(4096 * (1 - beta.detach())).clamp(0, 4095)
    return beta + ((4096 - dv) / 4096 - beta).detach()


# --------------------------------------------------------------------- neurons
class LIF(nn.Module):
    """Reset-to-zero leaky integrate-and-fire population, state reset per token.

    Input currents ``I`` of shape (B, N, T, C); returns spikes of the same shape.
    """

    def __init__(self, beta_init: float, surrogate: str, deployable: bool):
        super().__init__()
        b = min(max(beta_init, 1e-3), 1 - 1e-3)
        self.beta_logit = nn.Parameter(torch.tensor(math.log(b / (1 - b))))
        self.surrogate = surrogate
        self.deployable = deployable

    def beta(self) -> torch.Tensor:
        return quant_beta(torch.sigmoid(self.beta_logit), self.deployable)

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        beta = self.beta()
        v = torch.zeros_like(current[:, :, 0])
        out = []
        for t in range(current.shape[2]):
            v = beta * v + current[:, :, t]
            s = spike(v - 1.0, self.surrogate)
            out.append(s)
            v = v * (1.0 - s.detach())
        return torch.stack(out, dim=2)


class MembraneNorm(nn.Module):
    """Per-channel scale ``gamma / rms(I)`` of a population's input current.

    No mean shift and no bias, so at inference it is a diagonal matrix that
    folds into the rows of every incoming weight.
    """

    def __init__(self, channels: int, momentum: float = 0.05, eps: float = 1e-2):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.register_buffer("running_ms", torch.ones(channels))
        self.momentum, self.eps = momentum, eps

    def scale(self, raw_current: Optional[torch.Tensor]) -> torch.Tensor:
        if self.training and raw_current is not None:
            ms = raw_current.detach().pow(2).mean(dim=tuple(range(raw_current.dim() - 1)))
            with torch.no_grad():
                self.running_ms.mul_(1 - self.momentum).add_(self.momentum * ms)
        else:
            ms = self.running_ms
        return self.gamma / torch.sqrt(ms + self.eps)


def causal_spike_attention(q, k, v, n_heads: int, memory: str = "sum",
                           decay_shift: int = 6) -> torch.Tensor:
    """A[p] = sum_{p'<=p} w(p, p') (q[p].k[p'])_head v[p'], p = n*T + t (inclusive).

    q, k, v: (B, N, T, d) spikes. ``memory="sum"`` (w = 1, deployable) returns
    integer-valued counts (B, N, T, d); the training experiments ``mean``
    (w = 1/(p+1)) and ``decay`` (w = lambda^(p-p'), lambda = 1 - 2^-decay_shift)
    keep A's scale from growing with the position.
    """
    B, N, T, d = q.shape
    dh = d // n_heads
    P = N * T

    def heads(x):
        return x.reshape(B, P, n_heads, dh).transpose(1, 2)   # (B, H, P, dh)

    qh, kh, vh = heads(q), heads(k), heads(v)
    scores = qh @ kh.transpose(-1, -2)                         # (B, H, P, P)
    mask = torch.ones(P, P, dtype=torch.bool, device=q.device).tril()
    scores = scores.masked_fill(~mask, 0.0)
    if memory == "mean":
        scores = scores / torch.arange(1, P + 1, device=q.device, dtype=q.dtype)[:, None]
    elif memory == "decay":
        lag = (torch.arange(P, device=q.device)[:, None]
               - torch.arange(P, device=q.device)[None, :]).clamp(min=0).to(q.dtype)
        scores = scores * torch.pow(1.0 - 2.0 ** -decay_shift, lag)
    a = scores @ vh                                            # (B, H, P, dh)
    return a.transpose(1, 2).reshape(B, N, T, d)


def causal_sdsa_memory(k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """SDSA's memory, causal: M[p] = sum_{p'<=p} k[p'] * v[p'] per channel (B, N, T, d).

    Spike-driven self-attention (Yao et al., "Spike-driven Transformer", NeurIPS 2023)
    reads ``q * SN(M)``: AND and add only, no per-head products; here SN is the
    block's attention LIF after the membrane norm."""
    B, N, T, d = k.shape
    return torch.cumsum((k * v).reshape(B, N * T, d), dim=1).reshape(B, N, T, d)


def shift_current(x: torch.Tensor, mats) -> torch.Tensor:
    """Token shift: ``sum_j x[token n-j] @ mats[j-1]^T`` (zeros for n < j); x: (B, N, T, C).

    The spikes of token n-j enter at the same step t; with no matrices, 0."""
    out = 0
    for j, w in enumerate(mats, start=1):
        out = out + torch.nn.functional.pad(x, (0, 0, 0, 0, j, 0))[:, :x.shape[1]] @ w.t()
    return out


# ---------------------------------------------------------------------- blocks
class SpikeBlock(nn.Module):
    """One decoder block: SSA → spike residual → spiking MLP → spike residual."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, dq = cfg.d_model, cfg.deployable
        self.cfg = cfg

        def lif():
            return LIF(cfg.beta_init, cfg.surrogate, dq)

        self.W_qkv = nn.Parameter(torch.randn(3 * d, d) / math.sqrt(d))
        self.norm_qkv, self.lif_qkv = MembraneNorm(3 * d), lif()
        self.norm_attn, self.lif_attn = MembraneNorm(d), lif()
        self.W_o = nn.Parameter(torch.randn(d, d) / math.sqrt(d))
        self.g1 = nn.Parameter(torch.ones(d))
        self.norm_mid, self.lif_mid = MembraneNorm(d), lif()
        self.W_1 = nn.Parameter(torch.randn(4 * d, d) / math.sqrt(d))
        self.norm_ff, self.lif_ff = MembraneNorm(4 * d), lif()
        self.W_2 = nn.Parameter(torch.randn(d, 4 * d) / math.sqrt(4 * d))
        self.g2 = nn.Parameter(torch.ones(d))
        self.norm_out, self.lif_out = MembraneNorm(d), lif()
        # token shift: the weights of the previous tokens' spikes into qkv and/or ff
        K = cfg.token_shift
        self.shift_targets = (("qkv", "ff") if cfg.shift_into == "both" else (cfg.shift_into,)
                              ) if K else ()
        for tgt in self.shift_targets:
            base = self.W_qkv if tgt == "qkv" else self.W_1
            if cfg.shift_mode == "diag":
                p = nn.Parameter(torch.full((K, base.shape[1]), 0.5))
            else:
                p = nn.Parameter(torch.randn(K, *base.shape) * 0.5 / math.sqrt(base.shape[1]))
            setattr(self, f"S_{tgt}", p)

    def shift_matrices(self, tgt: str) -> List[torch.Tensor]:
        """Unfolded weights of the spikes of tokens n-1, ..., n-K into ``tgt``."""
        if tgt not in self.shift_targets:
            return []
        p = getattr(self, f"S_{tgt}")
        if self.cfg.shift_mode == "full":
            return list(p)
        base = self.W_qkv if tgt == "qkv" else self.W_1
        return [base * p[j][None, :] for j in range(p.shape[0])]


    # folded (norm scale in the rows) and fake-quantized weights
    def _fold(self, norm: MembraneNorm, raw: Optional[torch.Tensor], *mats: torch.Tensor):
        sc = norm.scale(raw)
        outs = []
        for m in mats:
            outs.append(fake_quant(m * sc if m.dim() == 1 else m * sc[:, None],
                                   self.cfg.deployable))
        return outs

    def folded(self) -> Dict[str, torch.Tensor]:
        """Eval-mode folded weights (running statistics)."""
        w_qkv, *s_qkv = self._fold(self.norm_qkv, None, self.W_qkv, *self.shift_matrices("qkv"))
        (c,) = self._fold(self.norm_attn, None, torch.ones_like(self.g1))
        w_o, g1 = self._fold(self.norm_mid, None, self.W_o, self.g1)
        w_1, *s_ff = self._fold(self.norm_ff, None, self.W_1, *self.shift_matrices("ff"))
        w_2, g2 = self._fold(self.norm_out, None, self.W_2, self.g2)
        return dict(W_qkv=w_qkv, c=c, W_o=w_o, g1=g1, W_1=w_1, W_2=w_2, g2=g2,
                    S_qkv=s_qkv, S_ff=s_ff)

    def forward(self, x: torch.Tensor, rec: Optional[dict] = None, prefix: str = ""):
        d = self.cfg.d_model
        s_qkv = self.shift_matrices("qkv")
        raw = (x @ self.W_qkv.t() + shift_current(x, s_qkv)) if self.training else None
        w, *ws = self._fold(self.norm_qkv, raw, self.W_qkv, *s_qkv)
        qkv = self.lif_qkv(x @ w.t() + shift_current(x, ws))
        q, k, v = qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:]
        if self.cfg.attention == "sdsa":
            a = causal_sdsa_memory(k, v)
        else:
            a = causal_spike_attention(q, k, v, self.cfg.n_heads, self.cfg.attention_memory,
                                       self.cfg.attention_decay_shift)
        (c,) = self._fold(self.norm_attn, a if self.training else None, torch.ones_like(self.g1))
        r = self.lif_attn(a * c)
        if self.cfg.attention == "sdsa":
            r = q * r                         # the query spikes gate the thresholded memory
        raw = (r @ self.W_o.t() + self.g1 * x) if self.training else None
        w_o, g1 = self._fold(self.norm_mid, raw, self.W_o, self.g1)
        m = self.lif_mid(r @ w_o.t() + g1 * x)
        s_ff = self.shift_matrices("ff")
        raw = (m @ self.W_1.t() + shift_current(m, s_ff)) if self.training else None
        w_1, *ws = self._fold(self.norm_ff, raw, self.W_1, *s_ff)
        f = self.lif_ff(m @ w_1.t() + shift_current(m, ws))
        raw = (f @ self.W_2.t() + self.g2 * m) if self.training else None
        w_2, g2 = self._fold(self.norm_out, raw, self.W_2, self.g2)
        y = self.lif_out(f @ w_2.t() + g2 * m)
        if rec is not None:
            rec.update({f"{prefix}.qkv": qkv, f"{prefix}.A": a, f"{prefix}.attn": r,
                        f"{prefix}.mid": m, f"{prefix}.ff": f, f"{prefix}.out": y})
        return y


class SpikeDecoder(nn.Module):
    """Token ids (B, N) → logits (B, N, V); ``forward(..., record=True)`` also
    returns every population's spike train keyed like the quantized graph."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        from snn_compile.models.embeddings import embedding_width
        d = cfg.d_model
        w = embedding_width(cfg)          # d, or d / P values for population coding
        self.E_tok = nn.Parameter(torch.randn(cfg.vocab_size, w))
        self.E_pos = nn.Parameter(torch.randn(cfg.context, w) * 0.5)
        self.norm_emb = MembraneNorm(w)
        self.lif_emb = LIF(cfg.beta_init, cfg.surrogate, cfg.deployable)
        self.blocks = nn.ModuleList(SpikeBlock(cfg) for _ in range(cfg.n_layers))
        self.W_head = nn.Parameter(torch.randn(cfg.vocab_size, d) / math.sqrt(d))

    def embedding_weights(self, raw: Optional[torch.Tensor] = None):
        sc = self.norm_emb.scale(raw)
        dq = self.cfg.deployable
        return fake_quant(self.E_tok * sc, dq), fake_quant(self.E_pos * sc, dq)

    def forward(self, tokens: torch.Tensor, record: bool = False):
        B, N = tokens.shape
        if N > self.cfg.context:
            raise ValueError(f"sequence of {N} tokens exceeds the context {self.cfg.context}")
        T = self.cfg.timesteps
        pos = torch.arange(N, device=tokens.device)
        raw = (self.E_tok[tokens] + self.E_pos[pos]) if self.training else None
        e_tok, e_pos = self.embedding_weights(raw)
        current = (e_tok[tokens] + e_pos[pos])                    # (B, N, d)
        if self.cfg.embedding == "rate":
            x = self.lif_emb(current.unsqueeze(2).expand(B, N, T, -1))
        else:                                                     # models/embeddings.py
            from snn_compile.models.embeddings import encode
            x = encode(self.cfg, current, self.lif_emb)
        rec = {"emb": x} if record else None
        for i, blk in enumerate(self.blocks):
            x = blk(x, rec, f"block{i}")
        w_head = fake_quant(self.W_head, self.cfg.deployable)
        logits = (x @ w_head.t()).mean(dim=2)
        return (logits, rec) if record else logits

    def non_spiking_blocks(self) -> List[str]:
        """Every block is spiking (the embedding code may still be one the compiler
        does not lower: ``fold`` refuses those)."""
        return []

    def lif_modules(self) -> List[LIF]:
        return [m for m in self.modules() if isinstance(m, LIF)]
