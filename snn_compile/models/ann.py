"""The ANN twin: a standard pre-LN GPT of the same widths and depth.

Softmax attention, GELU MLP, LayerNorm, learned position embedding, untied head
(as in nanoGPT's model.py, without dropout). It is the baseline for accuracy and
energy: same d_model, n_layers, n_heads, context as the SpikeDecoder it is
compared with, one evaluation per token (no timesteps).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from snn_compile.models.config import BLOCK_KINDS, ModelConfig


def ann_block_names(n_layers: int, ann_blocks, spiking_embedding: bool) -> list:
    """Names of the non-spiking blocks: ``embedding``, ``block{i}.{kind}``, and the
    LayerNorms outside the blocks (``embedding.norm``, ``head.norm``) when norm is ANN."""
    names = ["embedding"] if "embedding" in ann_blocks else []
    if "norm" in ann_blocks and spiking_embedding:
        names.append("embedding.norm")
    for i in range(n_layers):
        names += [f"block{i}.{k}" for k in ("attention", "feedforward", "norm", "residual")
                  if k in ann_blocks]
    if "norm" in ann_blocks and "residual" in ann_blocks:
        names.append("head.norm")          # real-valued stream: LayerNorm before the head
    return names


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.n_heads = cfg.n_heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        B, N, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (t.view(B, N, self.n_heads, -1).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(B, N, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class ANNDecoder(nn.Module):
    """Token ids (B, N) → logits (B, N, V)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.tok = nn.Embedding(cfg.vocab_size, d)
        self.pos = nn.Embedding(cfg.context, d)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, cfg.vocab_size, bias=False)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
        for blk in self.blocks:
            nn.init.normal_(blk.fc2.weight, std=0.02 / math.sqrt(2 * cfg.n_layers))

    def non_spiking_blocks(self) -> list:
        """Every block: the names a partial model with all five kinds exchanged reports."""
        return ann_block_names(self.cfg.n_layers, BLOCK_KINDS, spiking_embedding=False)

    def forward(self, tokens: torch.Tensor, record: bool = False):
        N = tokens.shape[1]
        if N > self.cfg.context:
            raise ValueError(f"sequence of {N} tokens exceeds the context {self.cfg.context}")
        x = self.tok(tokens) + self.pos(torch.arange(N, device=tokens.device))
        for blk in self.blocks:
            x = blk(x)
        logits = self.head(self.ln_f(x))
        return (logits, {}) if record else logits
