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

import functools
import math
from typing import Dict, List, Optional

import torch
import torch.nn as nn

from snn_compile.models import kernels
from snn_compile.models.config import DECAY_EXP, ModelConfig
from snn_compile.models.embeddings import embedding_width, encode
from snn_compile.models.surrogate import fake_quant, quant_beta, spike


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
        if kernels.kernels_enabled():
            return kernels.lif(current, self.beta(), self.surrogate)
        return self.forward_reference(current)

    def forward_reference(self, current: torch.Tensor) -> torch.Tensor:
        """The recurrence as a Python loop under autograd (``kernels.lif`` is the same
        function in one autograd node)."""
        beta = self.beta()
        v = torch.zeros_like(current[:, :, 0])
        out = []
        for t in range(current.shape[2]):
            v = beta * v + current[:, :, t]
            s = spike(v - 1.0, self.surrogate)
            out.append(s)
            v = v * (1.0 - s.detach())
        return torch.stack(out, dim=2)


class MeanSquare:
    """A population's per-channel mean square of the input current, computed without
    the current itself (``SpikeBlock.raw_statistic``); ``MembraneNorm.scale`` takes it
    in place of the current."""

    def __init__(self, values: torch.Tensor):
        self.values = values


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

    @staticmethod
    def batch_mean_square(raw) -> torch.Tensor:
        """Mean of ``I^2`` over every axis but the channels (a ``MeanSquare``: its values)."""
        if isinstance(raw, MeanSquare):
            return raw.values
        return raw.detach().pow(2).mean(dim=tuple(range(raw.dim() - 1)))

    def scale(self, raw_current) -> torch.Tensor:
        """``raw_current``: the current (a tensor), its ``MeanSquare``, or None (eval)."""
        if self.training and raw_current is not None:
            ms = self.batch_mean_square(raw_current)
            with torch.no_grad():
                self.running_ms.mul_(1 - self.momentum).add_(self.momentum * ms)
        else:
            ms = self.running_ms
        return self.gamma / torch.sqrt(ms + self.eps)


def retention(cfg: ModelConfig) -> Optional[torch.Tensor]:
    """Per-head retention per Loihi step, ``lambda_h = 1 - m_h / 4096`` (None: exact sum)."""
    if cfg.attention_memory != "decay":
        return None
    return 1.0 - torch.tensor(cfg.memory_decay, dtype=torch.float64) / 2 ** DECAY_EXP


def causal_spike_attention(q, k, v, n_heads: int, retain: Optional[torch.Tensor] = None,
                           window: int = 0) -> torch.Tensor:
    """A[p] = sum_{p'<=p} w_h(p, p') (q[p].k[p'])_head v[p'], p = n*T + t (inclusive).

    q, k, v: (B, N, T, d) spikes. Without ``retain`` (w = 1, the exact sum) A holds
    integer counts. With per-head ``retain`` (H,) the memory decays at every Loihi time
    step, also through the ``window - T`` pipeline-drain steps between tokens:
    ``w_h = lambda_h^(g(p) - g(p'))``, ``g(n, t) = n * window + t``. Streamed, that is
    ``S[g] = lambda S[g-1] + k[g] (x) v[g]``, ``A = q S``: a memory whose size stays
    bounded with the position (multi-scale retention).
    """
    B, N, T, d = q.shape
    dh = d // n_heads
    P = N * T

    def heads(x):
        return x.reshape(B, P, n_heads, dh).transpose(1, 2)   # (B, H, P, dh)

    qh, kh, vh = heads(q), heads(k), heads(v)
    scores = qh @ kh.transpose(-1, -2)                         # (B, H, P, P)
    mask = torch.ones(P, P, dtype=torch.bool, device=q.device).tril()
    if retain is None:
        scores = scores.masked_fill(~mask, 0.0)
    else:
        p = torch.arange(P, device=q.device)
        g = (p // T) * window + p % T                           # Loihi step of (n, t)
        lag = (g[:, None] - g[None, :]).clamp(min=0).to(torch.float64)
        w = torch.exp(lag[None] * torch.log(retain.to(q.device))[:, None, None])
        scores = scores * (w.to(q.dtype) * mask)
    a = scores @ vh                                            # (B, H, P, dh)
    return a.transpose(1, 2).reshape(B, N, T, d)


def training_spike_attention(q, k, v, n_heads: int, retain: Optional[torch.Tensor] = None,
                             window: int = 0) -> torch.Tensor:
    """The attention a block trains with: ``kernels.chunked_spike_attention`` (the same A
    to rounding, cheaper) unless the kernels are off; evaluation keeps the reference."""
    if kernels.kernels_enabled():
        return kernels.chunked_spike_attention(q, k, v, n_heads, retain, window)
    return causal_spike_attention(q, k, v, n_heads, retain, window)


def causal_sdsa_memory(k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """SDSA's memory, causal: M[p] = sum_{p'<=p} k[p'] * v[p'] per channel (B, N, T, d).

    Spike-driven self-attention (Yao et al., "Spike-driven Transformer", NeurIPS 2023)
    reads ``q * SN(M)``: AND and add only, no per-head products; here SN is the
    block's attention LIF after the membrane norm."""
    B, N, T, d = k.shape
    return torch.cumsum((k * v).reshape(B, N * T, d), dim=1).reshape(B, N, T, d)


def shift_current(x: torch.Tensor, mats, matmul=None) -> torch.Tensor:
    """Token shift: ``sum_j x[token n-j] @ mats[j-1]^T`` (zeros for n < j); x: (B, N, T, C).

    The spikes of token n-j enter at the same step t; with no matrices, 0. ``matmul(x, w)``
    computes ``x @ w^T`` (default: that product)."""
    out = 0
    for j, w in enumerate(mats):          # lag j + 1 (no enumerate start=: torch.compile)
        xj = torch.nn.functional.pad(x, (0, 0, 0, 0, j + 1, 0))[:, :x.shape[1]]
        out = out + (xj @ w.t() if matmul is None else matmul(xj, w))
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
        self._init_token_shift(cfg)
        self.ablate_attention = False

    def _init_token_shift(self, cfg: ModelConfig) -> None:
        """The weights of the previous K tokens' spikes into qkv and/or ff (``S_qkv``,
        ``S_ff``): one gain per input channel and lag (diag) or whole matrices (full)."""
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


    def _current_operands(self, x: torch.Tensor, tgt: str):
        """``(X, W)`` with ``X W^T`` the raw current of ``tgt`` (qkv or ff), the unfolded
        weights: diag shifts (``S_j = W diag(mu_j)``) fold into ``X = x + sum_j x[n-j]
        mu_j``; full shifts stack ``X = [x, x[n-1], ...]`` and ``W = [W, S_1, ...]``."""
        base = self.W_qkv if tgt == "qkv" else self.W_1
        if tgt not in self.shift_targets:
            return x, base
        if self.cfg.shift_mode == "diag":
            mu, xs = getattr(self, f"S_{tgt}"), x.clone()
            for j in range(1, mu.shape[0] + 1):
                xs[:, j:] += x[:, :x.shape[1] - j] * mu[j - 1]
            return xs, base
        mats = self.shift_matrices(tgt)
        lags = [torch.nn.functional.pad(x, (0, 0, 0, 0, j, 0))[:, :x.shape[1]]
                for j in range(len(mats) + 1)]
        return torch.cat(lags, dim=-1), torch.cat([base, *mats], dim=1)

    def raw_current(self, x: torch.Tensor, tgt: str) -> torch.Tensor:
        """``x W^T + sum_j x[n-j] S_j^T`` with the unfolded weights of ``tgt`` (qkv or ff):
        only the membrane norm's statistics read it, so no gradient. With the kernels on
        it is one matmul of ``_current_operands`` (the same current, summed in another
        order)."""
        with torch.no_grad():
            if kernels.kernels_enabled():
                X, W = self._current_operands(x, tgt)
                return X @ W.t()
            base = self.W_qkv if tgt == "qkv" else self.W_1
            return x @ base.t() + shift_current(x, self.shift_matrices(tgt))

    def raw_statistic(self, x: torch.Tensor, tgt: str):
        """What the membrane norm of ``tgt`` needs in training: the raw current, or with
        the kernels on its ``MeanSquare`` from the Gram matrix of the input, without the
        current. With the raw current ``X W^T`` (``_current_operands``),

            mean_r (X_r . W_c)^2 = W_c G W_c^T,   G = X^T X / R

        R K^2 operations instead of R K C_out (K = X's width): at 4 x 128 the qkv and ff
        statistics cost a third and a quarter of their currents' matmuls. The same mean
        square summed in another order (float rounding)."""
        if not kernels.kernels_enabled():
            return self.raw_current(x, tgt)
        with torch.no_grad():
            X, W = self._current_operands(x, tgt)
            if X.shape[-1] >= W.shape[0]:          # no saving: the current itself
                return X @ W.t()
            X = X.reshape(-1, X.shape[-1])
            gram = X.t() @ X
            return MeanSquare(((W @ gram) * W).sum(dim=1) / X.shape[0])

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
        raw = self.raw_statistic(x, "qkv") if self.training else None
        w, *ws = self._fold(self.norm_qkv, raw, self.W_qkv, *s_qkv)
        qkv = self.lif_qkv(x @ w.t() + shift_current(x, ws))
        q, k, v = qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:]
        if self.cfg.attention == "sdsa":
            a = causal_sdsa_memory(k, v)
        else:
            attend = training_spike_attention if self.training else causal_spike_attention
            a = attend(q, k, v, self.cfg.n_heads)
        if self.ablate_attention:
            a = torch.zeros_like(a)
        (c,) = self._fold(self.norm_attn, a if self.training else None, torch.ones_like(self.g1))
        r = self.lif_attn(a * c)
        if self.cfg.attention == "sdsa":
            r = q * r                         # the query spikes gate the thresholded memory
        raw = (r @ self.W_o.t() + self.g1 * x) if self.training else None
        w_o, g1 = self._fold(self.norm_mid, raw, self.W_o, self.g1)
        m = self.lif_mid(r @ w_o.t() + g1 * x)
        s_ff = self.shift_matrices("ff")
        raw = self.raw_statistic(m, "ff") if self.training else None
        w_1, *ws = self._fold(self.norm_ff, raw, self.W_1, *s_ff)
        f = self.lif_ff(m @ w_1.t() + shift_current(m, ws))
        raw = (f @ self.W_2.t() + self.g2 * m) if self.training else None
        w_2, g2 = self._fold(self.norm_out, raw, self.W_2, self.g2)
        y = self.lif_out(f @ w_2.t() + g2 * m)
        if rec is not None:
            rec.update({f"{prefix}.qkv": qkv, f"{prefix}.A": a, f"{prefix}.attn": r,
                        f"{prefix}.mid": m, f"{prefix}.ff": f, f"{prefix}.out": y})
        return y


class StreamBlock(nn.Module):
    """One block on a real-valued residual stream ``h`` (B, N, T, d):

        x = LIF_in(s_in * h)                       read the stream through spikes
        q,k,v = LIF_qkv(W_qkv x [+ shift]);  r = LIF_attn(c * A(q, k, v))
        m = LIF_mid(s_mid * h + (s_mid W_o) r)     the stream after attention, read
        f = LIF_ff(W_1 m [+ shift])
        h' = h + W_o r + W_2 f                     the block writes its projections

    ``s_*`` are the membrane norms' scales; each folded matrix is quantized on its own
    8-bit grid, so ``h`` stays on the sum of those grids (exact integers on Loihi 2).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, dq = cfg.d_model, cfg.deployable
        self.cfg = cfg

        def lif():
            return LIF(cfg.beta_init, cfg.surrogate, dq)

        depth_scale = 1.0 / math.sqrt(2 * cfg.n_layers)
        self.norm_in, self.lif_in = MembraneNorm(d), lif()
        self.W_qkv = nn.Parameter(torch.randn(3 * d, d) / math.sqrt(d))
        self.norm_qkv, self.lif_qkv = MembraneNorm(3 * d), lif()
        self.norm_attn, self.lif_attn = MembraneNorm(d), lif()
        self.W_o = nn.Parameter(torch.randn(d, d) / math.sqrt(d) * depth_scale)
        self.norm_mid, self.lif_mid = MembraneNorm(d), lif()
        self.W_1 = nn.Parameter(torch.randn(4 * d, d) / math.sqrt(d))
        self.norm_ff, self.lif_ff = MembraneNorm(4 * d), lif()
        self.W_2 = nn.Parameter(torch.randn(d, 4 * d) / math.sqrt(4 * d) * depth_scale)
        self._init_token_shift(cfg)
        if cfg.attention_memory == "decay":
            self.register_buffer("retain", retention(cfg), persistent=False)
        else:
            self.retain = None
        self.ablate_attention = False

    _init_token_shift = SpikeBlock._init_token_shift
    shift_matrices = SpikeBlock.shift_matrices
    _current_operands = SpikeBlock._current_operands
    raw_current = SpikeBlock.raw_current
    raw_statistic = SpikeBlock.raw_statistic
    _fold = SpikeBlock._fold

    def folded(self) -> Dict[str, torch.Tensor]:
        """Eval-mode folded weights (running statistics), keyed like FoldedStreamBlock."""
        (s_in,) = self._fold(self.norm_in, None, torch.ones(self.cfg.d_model,
                                                            device=self.W_o.device))
        w_qkv, *s_qkv = self._fold(self.norm_qkv, None, self.W_qkv, *self.shift_matrices("qkv"))
        (c,) = self._fold(self.norm_attn, None, torch.ones_like(s_in))
        s_mid, w_om = self._fold(self.norm_mid, None, torch.ones_like(s_in), self.W_o)
        w_1, *s_ff = self._fold(self.norm_ff, None, self.W_1, *self.shift_matrices("ff"))
        dq = self.cfg.deployable
        return dict(s_in=s_in, W_qkv=w_qkv, c=c, s_mid=s_mid, W_om=w_om, W_1=w_1,
                    W_o=fake_quant(self.W_o, dq), W_2=fake_quant(self.W_2, dq),
                    S_qkv=s_qkv, S_ff=s_ff)

    def forward(self, h: torch.Tensor, rec: Optional[dict] = None, prefix: str = ""):
        d, train = self.cfg.d_model, self.training
        # x @ w^T, spikes x, w fake-quantized where deployable
        mm = functools.partial(kernels.spike_matmul, on_grid=self.cfg.deployable)
        ones = torch.ones(d, device=h.device, dtype=h.dtype)
        (s_in,) = self._fold(self.norm_in, h if train else None, ones)
        x = self.lif_in(h * s_in)
        s_qkv = self.shift_matrices("qkv")
        raw = self.raw_statistic(x, "qkv") if train else None
        w, *ws = self._fold(self.norm_qkv, raw, self.W_qkv, *s_qkv)
        qkv = self.lif_qkv(mm(x, w) + shift_current(x, ws, mm))
        q, k, v = qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:]
        attend = training_spike_attention if train else causal_spike_attention
        a = attend(q, k, v, self.cfg.n_heads, self.retain, self.cfg.memory_window)
        if self.ablate_attention:
            a = torch.zeros_like(a)
        (c,) = self._fold(self.norm_attn, a if train else None, ones)
        r = self.lif_attn(a * c)
        w_o = fake_quant(self.W_o, self.cfg.deployable)
        raw = (h + r @ self.W_o.t()) if train else None
        s_mid, w_om = self._fold(self.norm_mid, raw, ones, self.W_o)
        m = self.lif_mid(h * s_mid + mm(r, w_om))
        s_ff = self.shift_matrices("ff")
        raw = self.raw_statistic(m, "ff") if train else None
        w_1, *ws = self._fold(self.norm_ff, raw, self.W_1, *s_ff)
        f = self.lif_ff(mm(m, w_1) + shift_current(m, ws, mm))
        h = h + mm(r, w_o) + mm(f, fake_quant(self.W_2, self.cfg.deployable))
        if rec is not None:
            rec.update({f"{prefix}.in": x, f"{prefix}.qkv": qkv, f"{prefix}.A": a,
                        f"{prefix}.attn": r, f"{prefix}.mid": m, f"{prefix}.ff": f,
                        f"{prefix}.h": h})
        return h


# record keys that hold graded values, not spikes (no spike rate)
def is_spike_record(key: str) -> bool:
    return not (key.endswith(".A") or key.endswith(".h") or key == "h0")


class SpikeDecoder(nn.Module):
    """Token ids (B, N) → logits (B, N, V); ``forward(..., record=True)`` also
    returns every population's spike train keyed like the quantized graph."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        w = embedding_width(cfg)          # d, or d / P values for population coding
        self.E_tok = nn.Parameter(torch.randn(cfg.vocab_size, w))
        self.E_pos = nn.Parameter(torch.randn(cfg.context, w) * 0.5)
        stream = cfg.residual == "stream"
        if not stream:
            self.norm_emb = MembraneNorm(w)
        if stream:                # the stream h0 is the embedding itself; LIF_final reads h_L
            self.norm_final = MembraneNorm(d)
            self.lif_final = LIF(cfg.beta_init, cfg.surrogate, cfg.deployable)
        else:
            self.lif_emb = LIF(cfg.beta_init, cfg.surrogate, cfg.deployable)
        self.blocks = nn.ModuleList((StreamBlock if stream else SpikeBlock)(cfg)
                                    for _ in range(cfg.n_layers))
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
        if self.cfg.residual == "stream":
            return self._forward_stream(tokens, record)
        raw = (self.E_tok[tokens] + self.E_pos[pos]) if self.training else None
        e_tok, e_pos = self.embedding_weights(raw)
        current = (e_tok[tokens] + e_pos[pos])                    # (B, N, d)
        if self.cfg.embedding == "rate":
            x = self.lif_emb(current.unsqueeze(2).expand(B, N, T, -1))
        else:                                                     # models/embeddings.py
            x = encode(self.cfg, current, self.lif_emb)
        rec = {"emb": x} if record else None
        for i, blk in enumerate(self.blocks):
            x = blk(x, rec, f"block{i}")
        w_head = fake_quant(self.W_head, self.cfg.deployable)
        logits = (x @ w_head.t()).mean(dim=2)
        return (logits, rec) if record else logits

    def _forward_stream(self, tokens: torch.Tensor, record: bool):
        """h0 = E_tok e_tok + E_pos e_pos (real, the same at every step); blocks read and
        write h; logits = (1/T) sum_t W_head LIF_final(s_f * h_L)."""
        B, N = tokens.shape
        T, dq = self.cfg.timesteps, self.cfg.deployable
        pos = torch.arange(N, device=tokens.device)
        e_tok, e_pos = fake_quant(self.E_tok, dq), fake_quant(self.E_pos, dq)
        h = (e_tok[tokens] + e_pos[pos]).unsqueeze(2).expand(B, N, T, -1)
        rec = {"h0": h} if record else None
        for i, blk in enumerate(self.blocks):
            h = blk(h, rec, f"block{i}")
        ones = torch.ones(self.cfg.d_model, device=h.device, dtype=h.dtype)
        (s_f,) = self.blocks[0]._fold(self.norm_final, h if self.training else None, ones)
        y = self.lif_final(h * s_f)
        if rec is not None:
            rec["final"] = y
        logits = kernels.spike_matmul(y, fake_quant(self.W_head, dq), on_grid=dq).mean(dim=2)
        return (logits, rec) if record else logits

    def set_ablation(self, attention: bool) -> None:
        """``attention=True`` zeroes every block's attention memory (A = 0) in forward."""
        for blk in self.blocks:
            blk.ablate_attention = attention

    def non_spiking_blocks(self) -> List[str]:
        """Every block is spiking (the embedding code may still be one the compiler
        does not lower: ``fold`` refuses those)."""
        return []

    def lif_modules(self) -> List[LIF]:
        return [m for m in self.modules() if isinstance(m, LIF)]
