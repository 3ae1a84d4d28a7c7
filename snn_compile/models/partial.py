"""Partially spiking decoder: the block-exchange analysis of the SpikeDecoder paper.

Beger, Walter & Knoll (SpikeDecoder, arXiv:2606.12287) exchange the decoder's block
kinds one at a time between their spiking and their ANN versions. Here each kind in
``cfg.ann_blocks`` is ANN, the others are spiking; ``()`` computes exactly the
SpikeDecoder (same parameter names: its checkpoints load), all five exactly the ANN
twin (same parameter names as ``ann.ANNDecoder``).

Two kinds of tensors flow: spikes ``s[n, t]`` (B, N, T, C) in step time, and real
values ``u[n]`` (B, N, C) in token time, one evaluation per token as in the twin.
The interfaces (docs/models.md):

    spikes -> ANN part:     rate(s)[n] = (1/T) sum_t s[n, t]
    real   -> spiking part: I[n, t] = W u[n], a current held constant over the T steps

Block kinds, spiking vs ANN (x: block input, "terms" of a sublayer: its output before
the residual):

    embedding    s0 = code(N(E_tok e_tok + E_pos e_pos))   |  u0 = tok + pos
    attention    q,k,v = LIF(N(W_qkv x)); A = SSA;         |  a = softmax attention over tokens
                 r = LIF(N(A)); terms W_o r                 |  of N(rate x); terms proj(a)
    feedforward  f = LIF(N(W_1 m)); terms W_2 f            |  terms fc2 GELU(fc1 N(rate m))
    residual     m = LIF(N(terms + g x)) (skip enters the  |  m = rate(x) + rate(terms)
                 membrane)                                  |
    norm         N = gamma / rms (running statistics,      |  N = LayerNorm (per sample and
                 folds into the weight rows)                |  step, mean and variance)

Where the spiking norm meets an ANN part it keeps to affine maps with running statistics
(they fold at inference) but also centres: ``N_in`` of an ANN sublayer is BatchNorm
(``InputNorm``), and a population fed a held real current uses ``CentredNorm``.

Readout: ``(1/T) sum_t W_head y[n, t]`` on a spiking residual stream; on a real one
``head(N(y))`` as in the twin. With ``cfg.deployable`` the spiking weights are trained
with the SpikeDecoder's 8-bit fake quantization; ANN weights stay float. A partial
model with any ANN block cannot be exported (``non_spiking_blocks`` names them).
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from snn_compile.models.ann import ann_block_names
from snn_compile.models.config import ModelConfig
from snn_compile.models.embeddings import embedding_width, encode
from snn_compile.models.spikedecoder import LIF, MembraneNorm, causal_spike_attention
from snn_compile.models.surrogate import fake_quant

# a term of a membrane current: (weight matrix (out, in) / gain vector / None, input)
Term = Tuple[Optional[torch.Tensor], torch.Tensor]


def is_spikes(x: torch.Tensor) -> bool:
    return x.dim() == 4


def rate(x: torch.Tensor) -> torch.Tensor:
    """Spikes (B, N, T, C) → their rate (B, N, C); real values pass through."""
    return x.mean(dim=2) if is_spikes(x) else x


def held(x: torch.Tensor, T: int) -> torch.Tensor:
    """A real current (B, N, C) held over the T steps of its token; spikes pass through."""
    return x if is_spikes(x) else x.unsqueeze(2).expand(x.shape[0], x.shape[1], T, x.shape[2])


def _apply(w: Optional[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    if w is None:
        return x
    return x * w if w.dim() == 1 else x @ w.t()


class InputNorm(nn.Module):
    """Spiking-side norm at the input of an ANN sublayer: per-channel ``(u - mu) gamma /
    sigma + beta`` with batch statistics in training and running ones in eval (as the
    BatchNorm of spiking transformers), so at inference it is an affine map that folds
    into the sublayer's first linear layer. Centring matters here: rates are >= 0, and
    without it the sublayer's output carries a large constant that saturates the LIFs
    it feeds."""

    def __init__(self, channels: int, momentum: float = 0.05, eps: float = 1e-2):
        super().__init__()
        self.bn = nn.BatchNorm1d(channels, eps=eps, momentum=momentum)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.bn(u.reshape(-1, u.shape[-1])).reshape(u.shape)


class CentredNorm(MembraneNorm):
    """Spiking norm of a population that also receives a held real current:
    ``gamma / rms (I - mu)``, mu the per-channel mean of the current (batch in training,
    running in eval). mu is constant over the token, as the held real current is, so it
    folds into the bias of the ANN part that produces that current; without it a constant
    component of that current swamps the RMS and pins the LIFs on or off."""

    def __init__(self, channels: int, momentum: float = 0.05, eps: float = 1e-2):
        super().__init__(channels, momentum, eps)
        self.register_buffer("running_mean", torch.zeros(channels))

    def shift(self, raw: Optional[torch.Tensor]) -> torch.Tensor:
        """Batch mean in training (gradients flow through it, as in BatchNorm: with a
        detached mean the gradient keeps growing the component that the shift removes)."""
        if self.training and raw is not None:
            mu = raw.mean(dim=tuple(range(raw.dim() - 1)))
            with torch.no_grad():
                self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mu.detach())
            return mu
        return self.running_mean


class PartialBlock(nn.Module):
    """One decoder block whose attention, feed-forward, norm and residual are each
    spiking or ANN (module doc)."""

    def __init__(self, cfg: ModelConfig, real_input: bool = False):
        super().__init__()
        d, ann = cfg.d_model, set(cfg.ann_blocks)
        self.cfg = cfg
        self.ann_attn, self.ann_ff = "attention" in ann, "feedforward" in ann
        self.ann_norm, self.ann_res = "norm" in ann, "residual" in ann
        # which spiking populations receive a held real current (CentredNorm there)
        mid_real = real_input or self.ann_attn
        real = {"qkv": real_input, "mid": mid_real, "ff": self.ann_res,
                "out": self.ann_ff or self.ann_res}

        def lif():
            return LIF(cfg.beta_init, cfg.surrogate, cfg.deployable)

        def norm(c, site=""):
            if self.ann_norm:
                return nn.LayerNorm(c)
            return CentredNorm(c) if real.get(site) else MembraneNorm(c)

        def in_norm(c):
            return nn.LayerNorm(c) if self.ann_norm else InputNorm(c)

        # creation order as in SpikeBlock / ann.Block: same seed, same initial weights
        if self.ann_attn:
            self.ln1 = in_norm(d)
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        else:
            self.W_qkv = nn.Parameter(torch.randn(3 * d, d) / math.sqrt(d))
            self.norm_qkv, self.lif_qkv = norm(3 * d, "qkv"), lif()
            self.norm_attn, self.lif_attn = norm(d), lif()
            self.W_o = nn.Parameter(torch.randn(d, d) / math.sqrt(d))
        if not self.ann_res:
            self.g1 = nn.Parameter(torch.ones(d))
            self.norm_mid, self.lif_mid = norm(d, "mid"), lif()
        if self.ann_ff:
            self.ln2 = in_norm(d)
            self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        else:
            self.W_1 = nn.Parameter(torch.randn(4 * d, d) / math.sqrt(d))
            self.norm_ff, self.lif_ff = norm(4 * d, "ff"), lif()
            self.W_2 = nn.Parameter(torch.randn(d, 4 * d) / math.sqrt(4 * d))
        if not self.ann_res:
            self.g2 = nn.Parameter(torch.ones(d))
            self.norm_out, self.lif_out = norm(d, "out"), lif()

    # ----------------------------------------------------------------- sites
    def current(self, norm: nn.Module, terms: Sequence[Term]) -> torch.Tensor:
        """Normalised membrane current ``N(sum_i W_i x_i)`` of one spiking population.

        Spiking norm: the scale ``gamma / rms`` goes into the rows of every W_i (and the
        fake quantization after it), exactly as SpikeBlock folds it. ANN norm: LayerNorm
        of the summed current. The result is in step time if any input is spikes.
        """
        dq = self.cfg.deployable
        if isinstance(norm, MembraneNorm):
            raw = None
            if self.training:       # batch statistics; only CentredNorm's mean takes gradients
                with torch.set_grad_enabled(torch.is_grad_enabled()
                                            and isinstance(norm, CentredNorm)):
                    raw = _sum_aligned([_apply(w, x) for w, x in terms], self.cfg.timesteps)
            mu = None
            if isinstance(norm, CentredNorm):
                mu = norm.shift(raw)
                raw = None if raw is None else raw - mu
            sc = norm.scale(None if raw is None else raw.detach())
            out = []
            for w, x in terms:
                if w is None:
                    out.append(x * sc)
                else:
                    ws = w * sc if w.dim() == 1 else w * sc[:, None]
                    out.append(_apply(fake_quant(ws, dq), x))
            cur = _sum_aligned(out, self.cfg.timesteps)
            return cur if mu is None else cur - mu * sc
        cur = _sum_aligned([_apply(None if w is None else fake_quant(w, dq), x)
                            for w, x in terms], self.cfg.timesteps)
        return norm(cur)

    def residual(self, norm, lif, gain, terms: List[Term], x: torch.Tensor, rec, key):
        """Spiking: the skip enters the membrane, ``LIF(N(terms + g x))``. ANN: the sum."""
        T = self.cfg.timesteps
        if self.ann_res:
            out = rate(x)
            for w, inp in terms:
                out = out + rate(_apply(None if w is None else
                                        fake_quant(w, self.cfg.deployable), inp))
            return out
        s = lif(held(self.current(norm, list(terms) + [(gain, x)]), T))
        if rec is not None:
            rec[key] = s
        return s

    # --------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor, rec: Optional[dict] = None, prefix: str = ""):
        cfg = self.cfg
        d, T = cfg.d_model, cfg.timesteps
        if self.ann_attn:
            h = self.ln1(rate(x))          # LayerNorm (pre-LN) or InputNorm
            B, N, _ = h.shape
            q, k, v = self.qkv(h).split(d, dim=-1)
            q, k, v = (t.view(B, N, cfg.n_heads, -1).transpose(1, 2) for t in (q, k, v))
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            terms: List[Term] = [(None, self.proj(a.transpose(1, 2).reshape(B, N, d)))]
        else:
            qkv = self.lif_qkv(held(self.current(self.norm_qkv, [(self.W_qkv, x)]), T))
            q, k, v = qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:]
            a = causal_spike_attention(q, k, v, cfg.n_heads)
            ones = torch.ones(d, dtype=a.dtype, device=a.device)
            r = self.lif_attn(self.current(self.norm_attn, [(ones, a)]))
            terms = [(self.W_o, r)]
            if rec is not None:
                rec.update({f"{prefix}.qkv": qkv, f"{prefix}.A": a, f"{prefix}.attn": r})
        m = self.residual(getattr(self, "norm_mid", None), getattr(self, "lif_mid", None),
                          getattr(self, "g1", None), terms, x, rec, f"{prefix}.mid")
        if self.ann_ff:
            h = self.ln2(rate(m))
            terms = [(None, self.fc2(F.gelu(self.fc1(h))))]
        else:
            f = self.lif_ff(held(self.current(self.norm_ff, [(self.W_1, m)]), T))
            terms = [(self.W_2, f)]
            if rec is not None:
                rec[f"{prefix}.ff"] = f
        return self.residual(getattr(self, "norm_out", None), getattr(self, "lif_out", None),
                             getattr(self, "g2", None), terms, m, rec, f"{prefix}.out")


def _sum(items):
    out = None
    for it in items:
        out = it if out is None else out + it
    return out


def _sum_aligned(items: List[torch.Tensor], T: int) -> torch.Tensor:
    """Sum currents in token time, or in step time (real ones held) if any is in steps."""
    if any(is_spikes(i) for i in items):
        items = [held(i, T) for i in items]
    return _sum(items)


class PartialDecoder(nn.Module):
    """Token ids (B, N) → logits (B, N, V); ``record=True`` adds every spiking
    population's spike train, keyed as in the SpikeDecoder."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d, ann = cfg.d_model, set(cfg.ann_blocks)
        self.ann_emb, self.ann_norm, self.ann_res = ("embedding" in ann, "norm" in ann,
                                                     "residual" in ann)
        if self.ann_emb:
            self.tok = nn.Embedding(cfg.vocab_size, d)
            self.pos = nn.Embedding(cfg.context, d)
        else:
            w = embedding_width(cfg)
            self.E_tok = nn.Parameter(torch.randn(cfg.vocab_size, w))
            self.E_pos = nn.Parameter(torch.randn(cfg.context, w) * 0.5)
            self.norm_emb = nn.LayerNorm(w) if self.ann_norm else MembraneNorm(w)
            self.lif_emb = LIF(cfg.beta_init, cfg.surrogate, cfg.deployable)
        self.blocks = nn.ModuleList(
            PartialBlock(cfg, real_input=self.ann_emb if i == 0 else self.ann_res)
            for i in range(cfg.n_layers))
        if self.ann_res:                     # real-valued stream: the twin's readout
            self.ln_f = nn.LayerNorm(d) if self.ann_norm else MembraneNorm(d)
            self.head = nn.Linear(d, cfg.vocab_size, bias=False)
        else:
            self.W_head = nn.Parameter(torch.randn(cfg.vocab_size, d) / math.sqrt(d))
        # ANN parts start as the twin's (nanoGPT) initialisation
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
        for blk in self.blocks:
            if blk.ann_ff:
                nn.init.normal_(blk.fc2.weight, std=0.02 / math.sqrt(2 * cfg.n_layers))
        if self.ann_emb and "attention" not in ann:
            # feeding spiking populations: start at the SpikeDecoder's scale, since a current
            # of rms 0.02 would sit under MembraneNorm's eps and leave the first LIFs silent
            nn.init.normal_(self.tok.weight, std=1.0)
            nn.init.normal_(self.pos.weight, std=0.5)

    def non_spiking_blocks(self) -> List[str]:
        return ann_block_names(self.cfg.n_layers, self.cfg.ann_blocks,
                               spiking_embedding=not self.ann_emb)

    def forward(self, tokens: torch.Tensor, record: bool = False):
        B, N = tokens.shape
        cfg = self.cfg
        if N > cfg.context:
            raise ValueError(f"sequence of {N} tokens exceeds the context {cfg.context}")
        pos = torch.arange(N, device=tokens.device)
        rec = {} if record else None
        if self.ann_emb:
            x = self.tok(tokens) + self.pos(pos)
        else:
            dq = cfg.deployable
            if isinstance(self.norm_emb, MembraneNorm):
                raw = (self.E_tok[tokens] + self.E_pos[pos]) if self.training else None
                sc = self.norm_emb.scale(raw)
                e_tok, e_pos = fake_quant(self.E_tok * sc, dq), fake_quant(self.E_pos * sc, dq)
                current = e_tok[tokens] + e_pos[pos]
            else:
                current = self.norm_emb(fake_quant(self.E_tok, dq)[tokens]
                                        + fake_quant(self.E_pos, dq)[pos])
            x = encode(cfg, current, self.lif_emb)
            if rec is not None:
                rec["emb"] = x
        for i, blk in enumerate(self.blocks):
            x = blk(x, rec, f"block{i}")
        if self.ann_res:
            h = self.ln_f(x) if self.ann_norm else x * self.ln_f.scale(
                x.detach() if self.training else None)
            logits = self.head(h)
        else:
            logits = (x @ fake_quant(self.W_head, cfg.deployable).t()).mean(dim=2)
        return (logits, rec) if record else logits

    def lif_modules(self) -> List[LIF]:
        return [m for m in self.modules() if isinstance(m, LIF)]
