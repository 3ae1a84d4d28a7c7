"""Fold a trained deployable SpikeDecoder into plain arrays (thresholds 1).

``FoldedDecoder`` holds everything the equations of docs/semantics.md need, as
float64 numpy arrays already on the 8-bit quantization grid: norm scales are in
the weight rows, betas are Loihi decays. The NIR exporter and the quantizer read
this object; ``FoldedDecoder.forward`` runs the equations literally and must
equal ``SpikeDecoder.eval()`` spike for spike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np
import torch

from snn_compile.errors import UserError
from snn_compile.models.config import ModelConfig
from snn_compile.models.spikedecoder import (SpikeDecoder, causal_spike_attention, retention,
                                             shift_current)
from snn_compile.models.surrogate import fake_quant

BLOCK_POPS = ("qkv", "attn", "mid", "ff", "out")


@dataclass
class FoldedBlock:
    W_qkv: np.ndarray   # (3d, d)  q | k | v, heads contiguous inside each
    c: np.ndarray       # (d,)     attention-count scale into LIF_attn
    W_o: np.ndarray     # (d, d)
    g1: np.ndarray      # (d,)     skip gain x -> LIF_mid
    W_1: np.ndarray     # (4d, d)
    W_2: np.ndarray     # (d, 4d)
    g2: np.ndarray      # (d,)     skip gain m -> LIF_out
    beta: Dict[str, float]   # per population: qkv, attn, mid, ff, out
    # token shift: S_qkv[j-1] (3d, d) weighs the block input x of token n-j into qkv,
    # S_ff[j-1] (4d, d) the mid spikes of token n-j into ff (same step t)
    S_qkv: List[np.ndarray] = field(default_factory=list)
    S_ff: List[np.ndarray] = field(default_factory=list)

    @property
    def token_shift(self) -> int:
        return max(len(self.S_qkv), len(self.S_ff))


@dataclass
class FoldedDecoder:
    T: int
    context: int
    vocab_size: int
    d_model: int
    n_heads: int
    E_tok: np.ndarray         # (d, V)
    E_pos: np.ndarray         # (d, context)
    beta_emb: float
    blocks: List[FoldedBlock]
    W_head: np.ndarray        # (V, d)
    metadata: dict = field(default_factory=dict)

    # -- model protocol: lets evaluate(), the benchmark and TorchBackend use a
    #    FoldedDecoder read from a .nir file where they would use the torch model
    training = False

    @property
    def cfg(self):
        return ModelConfig(kind="spikedecoder", vocab_size=self.vocab_size, d_model=self.d_model,
                           n_layers=len(self.blocks), n_heads=self.n_heads, context=self.context,
                           timesteps=self.T, deployable=True, token_shift=self.token_shift,
                           shift_into=self.shift_into)

    @property
    def token_shift(self) -> int:
        return max((b.token_shift for b in self.blocks), default=0)

    @property
    def shift_into(self) -> str:
        q = any(b.S_qkv for b in self.blocks)
        f = any(b.S_ff for b in self.blocks)
        return "ff" if f and not q else ("qkv" if q and not f else "both")

    def eval(self) -> "FoldedDecoder":
        return self

    def train(self, mode: bool = True) -> "FoldedDecoder":
        return self

    def __call__(self, tokens, record: bool = False):
        out = self.forward(tokens)
        return (out["logits"], out["spikes"]) if record else out["logits"]

    def betas(self) -> Dict[str, float]:
        out = {"emb": self.beta_emb}
        for i, b in enumerate(self.blocks):
            out.update({f"block{i}.{k}": v for k, v in b.beta.items()})
        return out

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor) -> dict:
        """Run docs/semantics.md in float64: logits (B,N,V) and every spike train."""
        tokens = torch.as_tensor(tokens)
        if tokens.dim() == 1:
            tokens = tokens[None]
        B, N = tokens.shape
        T = self.T
        t64 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
        lif = _lif_float(T)
        cur = t64(self.E_tok).t()[tokens] + t64(self.E_pos).t()[torch.arange(N)]
        x = lif(cur.unsqueeze(2).expand(B, N, T, -1), self.beta_emb)
        rec = {"emb": x}
        d = self.d_model
        for i, b in enumerate(self.blocks):
            qkv = lif(x @ t64(b.W_qkv).t() + shift_current(x, [t64(w) for w in b.S_qkv]), b.beta["qkv"])
            a = causal_spike_attention(qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:],
                                       self.n_heads)
            r = lif(a * t64(b.c), b.beta["attn"])
            m = lif(r @ t64(b.W_o).t() + t64(b.g1) * x, b.beta["mid"])
            f = lif(m @ t64(b.W_1).t() + shift_current(m, [t64(w) for w in b.S_ff]), b.beta["ff"])
            y = lif(f @ t64(b.W_2).t() + t64(b.g2) * m, b.beta["out"])
            rec.update({f"block{i}.qkv": qkv, f"block{i}.A": a, f"block{i}.attn": r,
                        f"block{i}.mid": m, f"block{i}.ff": f, f"block{i}.out": y})
            x = y
        logits = (x @ t64(self.W_head).t()).mean(dim=2)
        return {"logits": logits, "spikes": rec}


STREAM_POPS = ("in", "qkv", "attn", "mid", "ff")


@dataclass
class FoldedStreamBlock:
    """One block on the residual stream, folded (docs/semantics.md, stream decoder)."""

    s_in: np.ndarray    # (d,)     norm scale of the stream into LIF_in
    W_qkv: np.ndarray   # (3d, d)
    c: np.ndarray       # (d,)     attention scale into LIF_attn
    s_mid: np.ndarray   # (d,)     norm scale of the stream into LIF_mid
    W_om: np.ndarray    # (d, d)   s_mid W_o: the attention output into LIF_mid
    W_o: np.ndarray     # (d, d)   the attention output into the stream
    W_1: np.ndarray     # (4d, d)
    W_2: np.ndarray     # (d, 4d)  the feed-forward output into the stream
    beta: Dict[str, float]
    S_qkv: List[np.ndarray] = field(default_factory=list)
    S_ff: List[np.ndarray] = field(default_factory=list)

    @property
    def token_shift(self) -> int:
        return max(len(self.S_qkv), len(self.S_ff))


@dataclass
class FoldedStreamDecoder:
    """The residual-stream SpikeDecoder as arrays on the quantization grid.

        h0 = E_tok e_tok + E_pos e_pos;  per block: x = LIF_in(s_in h), qkv, A (sum, or
        decayed with ``memory_decay`` over ``window`` Loihi steps per token), r = LIF_attn(c A),
        m = LIF_mid(s_mid h + W_om r), f = LIF_ff(W_1 m), h <- h + W_o r + W_2 f;
        logits = mean_t W_head LIF_final(s_final h_L)
    """

    T: int
    context: int
    vocab_size: int
    d_model: int
    n_heads: int
    E_tok: np.ndarray         # (d, V)
    E_pos: np.ndarray         # (d, context)
    blocks: List[FoldedStreamBlock]
    s_final: np.ndarray       # (d,)
    beta_final: float
    W_head: np.ndarray        # (V, d)
    memory_decay: tuple = ()  # per-head mantissas m_h (lambda_h = 1 - m_h / 4096); () = sum
    window: int = 0           # Loihi steps per token the decay assumes
    metadata: dict = field(default_factory=dict)

    training = False
    residual = "stream"
    eval = FoldedDecoder.eval
    train = FoldedDecoder.train
    __call__ = FoldedDecoder.__call__
    token_shift = FoldedDecoder.token_shift
    shift_into = FoldedDecoder.shift_into

    @property
    def cfg(self):
        return ModelConfig(kind="spikedecoder", vocab_size=self.vocab_size, d_model=self.d_model,
                           n_layers=len(self.blocks), n_heads=self.n_heads, context=self.context,
                           timesteps=self.T, deployable=True, token_shift=self.token_shift,
                           shift_into=self.shift_into, residual="stream",
                           attention_memory="decay" if self.memory_decay else "sum",
                           memory_decay=tuple(self.memory_decay), memory_window=self.window)

    def betas(self) -> Dict[str, float]:
        out = {"final": self.beta_final}
        for i, b in enumerate(self.blocks):
            out.update({f"block{i}.{k}": v for k, v in b.beta.items()})
        return out

    def retain(self):
        return retention(self.cfg)

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor) -> dict:
        """Run the equations in float64: logits (B,N,V), every spike train and stream."""
        tokens = torch.as_tensor(tokens)
        if tokens.dim() == 1:
            tokens = tokens[None]
        B, N = tokens.shape
        T = self.T
        t64 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
        lif = _lif_float(T)
        h = (t64(self.E_tok).t()[tokens] + t64(self.E_pos).t()[torch.arange(N)])
        h = h.unsqueeze(2).expand(B, N, T, -1)
        rec = {"h0": h}
        d, retain = self.d_model, self.retain()
        for i, b in enumerate(self.blocks):
            p = f"block{i}"
            x = lif(h * t64(b.s_in), b.beta["in"])
            qkv = lif(x @ t64(b.W_qkv).t() + shift_current(x, [t64(w) for w in b.S_qkv]),
                      b.beta["qkv"])
            a = causal_spike_attention(qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:],
                                       self.n_heads, retain, self.window)
            r = lif(a * t64(b.c), b.beta["attn"])
            m = lif(h * t64(b.s_mid) + r @ t64(b.W_om).t(), b.beta["mid"])
            f = lif(m @ t64(b.W_1).t() + shift_current(m, [t64(w) for w in b.S_ff]),
                    b.beta["ff"])
            h = h + r @ t64(b.W_o).t() + f @ t64(b.W_2).t()
            rec.update({f"{p}.in": x, f"{p}.qkv": qkv, f"{p}.A": a, f"{p}.attn": r,
                        f"{p}.mid": m, f"{p}.ff": f, f"{p}.h": h})
        y = lif(h * t64(self.s_final), self.beta_final)
        rec["final"] = y
        logits = (y @ t64(self.W_head).t()).mean(dim=2)
        return {"logits": logits, "spikes": rec}


def _lif_float(T: int):
    """The reset-to-zero LIF of docs/semantics.md in float64, (B, N, T, C) currents."""
    def lif(current, beta):
        v = torch.zeros_like(current[:, :, 0])
        out = []
        for t in range(T):
            v = beta * v + current[:, :, t]
            s = (v > 1.0).double()
            out.append(s)
            v = v * (1 - s)
        return torch.stack(out, 2)
    return lif


def _fold_stream(model) -> FoldedStreamDecoder:
    np64 = lambda t: t.detach().double().cpu().numpy()  # noqa: E731
    cfg = model.cfg
    blocks = []
    for blk in model.blocks:
        f = blk.folded()
        beta = {k: float(getattr(blk, f"lif_{k}").beta()) for k in STREAM_POPS}
        blocks.append(FoldedStreamBlock(**{k: ([np64(m) for m in v] if isinstance(v, list)
                                                else np64(v)) for k, v in f.items()}, beta=beta))
    (s_f,) = model.blocks[0]._fold(model.norm_final, None,
                                   torch.ones(cfg.d_model, device=model.W_head.device))
    return FoldedStreamDecoder(
        T=cfg.timesteps, context=cfg.context, vocab_size=cfg.vocab_size, d_model=cfg.d_model,
        n_heads=cfg.n_heads, E_tok=np64(fake_quant(model.E_tok, True)).T.copy(),
        E_pos=np64(fake_quant(model.E_pos, True)).T.copy(), blocks=blocks, s_final=np64(s_f),
        beta_final=float(model.lif_final.beta()), W_head=np64(fake_quant(model.W_head, True)),
        memory_decay=tuple(cfg.memory_decay) if cfg.attention_memory == "decay" else (),
        window=cfg.memory_window if cfg.attention_memory == "decay" else 0)


@torch.no_grad()
def fold(model):
    """Eval-mode folding of a deployable SpikeDecoder; anything else is refused."""
    if isinstance(model, (FoldedDecoder, FoldedStreamDecoder)):
        return model
    cfg = getattr(model, "cfg", None)
    if getattr(cfg, "kind", None) == "partial":
        ann = ", ".join(cfg.ann_blocks) or "none"
        raise UserError(f"a partial model (ANN block kinds: {ann}) is not a deployable "
                        "SpikeDecoder; train one with `snn-compile train --model spikedecoder`")
    if getattr(cfg, "embedding", "rate") != "rate":
        raise UserError(f"the {cfg.embedding} spike embedding has no Loihi 2 lowering (the "
                        "compiler lowers the rate embedding only); retrain with "
                        "`--embedding rate`")
    if getattr(cfg, "attention", "ssa") != "ssa":
        raise UserError(f"the {cfg.attention} attention has no Loihi 2 lowering yet (the "
                        "compiler lowers ssa); retrain with `--attention ssa`")
    if not isinstance(model, SpikeDecoder):
        raise UserError(f"{type(model).__name__} is not a spiking decoder: only a deployable "
                        "SpikeDecoder can be exported/compiled (the ANN twin's softmax "
                        "attention, GELU and LayerNorm have no neuromorphic lowering)")
    if not model.cfg.deployable:
        raise UserError("this SpikeDecoder was trained with deployable=False (no "
                        "quantization-aware training); retrain with --deployable")
    was = model.training
    model.eval()
    if model.cfg.residual == "stream":
        try:
            return _fold_stream(model)
        finally:
            model.train(was)
    try:
        np64 = lambda t: t.detach().double().cpu().numpy()  # noqa: E731
        e_tok, e_pos = model.embedding_weights()
        blocks = []
        for blk in model.blocks:
            f = blk.folded()
            beta = {k: float(getattr(blk, f"lif_{k}").beta()) for k in BLOCK_POPS}
            blocks.append(FoldedBlock(**{k: ([np64(m) for m in v] if isinstance(v, list)
                                             else np64(v)) for k, v in f.items()}, beta=beta))
        cfg = model.cfg
        return FoldedDecoder(T=cfg.timesteps, context=cfg.context, vocab_size=cfg.vocab_size,
                             d_model=cfg.d_model, n_heads=cfg.n_heads,
                             E_tok=np64(e_tok).T.copy(), E_pos=np64(e_pos).T.copy(),
                             beta_emb=float(model.lif_emb.beta()), blocks=blocks,
                             W_head=np64(fake_quant(model.W_head, True)))
    finally:
        model.train(was)
