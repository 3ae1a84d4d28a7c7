"""Model configuration: one dataclass for every decoder of the zoo (nanoGPT style)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from snn_compile.errors import UserError

MODEL_KINDS = ("spikedecoder", "partial", "ann")
SURROGATES = ("atan", "fast_sigmoid")
# block kinds of the block-exchange analysis (SpikeDecoder, Beger, Walter & Knoll,
# arXiv:2606.12287): each can be its spiking or its ANN version in a ``partial`` model
BLOCK_KINDS = ("embedding", "attention", "feedforward", "norm", "residual")
EMBEDDINGS = ("rate", "temporal", "population")
# how the spiking attention's causal key-value memory weighs past steps: "sum" is the
# deployable one (exact integer accumulation); "mean" (divide by the p + 1 steps attended)
# and "decay" (weight lambda^(p - p'), lambda = 1 - 2^-shift) are training experiments
# without a Loihi 2 lowering yet
ATTENTION_MEMORIES = ("sum", "mean", "decay")
# token shift: a block's populations also receive the spikes of the previous
# ``token_shift`` tokens (same step t) through their own weights; in hardware each is a
# synapse delayed by whole token windows. "diag" trains one gain per input channel and
# shift (the weights are W diag(mu_j): d extra parameters), "full" a whole matrix
SHIFT_MODES = ("diag", "full")
# spiking self-attention: "ssa" (Spikformer / SpikeDecoder, A = sum (q.k) v per head, the
# deployable one) or "sdsa" (Spike-driven Transformer, Yao et al., NeurIPS 2023:
# q * SN(sum k * v), channel-wise, no head products; a training experiment, not lowered)
ATTENTIONS = ("ssa", "sdsa")
SHIFT_TARGETS = ("qkv", "ff", "both")


def _check_choice(what: str, value, choices: tuple) -> None:
    """One error for a value outside its choices, naming them."""
    if value not in choices:
        raise UserError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")


def parse_blocks(value) -> tuple:
    """``"attention,norm"`` / a list / a tuple → canonical tuple in BLOCK_KINDS order."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    items = {str(i).strip() for i in items if str(i).strip()}
    unknown = sorted(items - set(BLOCK_KINDS))
    if unknown:
        raise UserError(f"unknown block kind(s) {', '.join(unknown)} in --ann-blocks; choose "
                        f"from {', '.join(BLOCK_KINDS)}")
    return tuple(b for b in BLOCK_KINDS if b in items)


@dataclass
class ModelConfig:
    """Sizes and switches of a decoder.

    ``spikedecoder``: fully spiking decoder, ``timesteps`` steps per token.
    ``ann``: the non-spiking twin (softmax attention, GELU, LayerNorm), same widths.
    ``partial``: the SpikeDecoder with the block kinds in ``ann_blocks`` exchanged for
    their ANN versions (docs/models.md); ``()`` is the SpikeDecoder, all five the twin.
    ``embedding``: spike code of the spiking embedding (rate, temporal, population);
    only ``rate`` is lowered by the compiler. ``population``: neurons per encoded value.
    ``attention_memory``: how causal spiking attention weighs past steps (``sum``, the
    deployable one; ``mean`` and ``decay`` are training experiments, see ATTENTION_MEMORIES).
    ``token_shift``, ``shift_mode``, ``shift_into``: blocks also receive the spikes of the
    previous ``token_shift`` tokens (SHIFT_MODES; lowered to delayed synapses).
    ``attention``: ``ssa`` (deployable) or the ``sdsa`` training experiment (ATTENTIONS).
    ``deployable`` restricts the spiking model to what Loihi 2 / Lava executes
    (reset to zero, no bias, norms folded into weights, 8-bit weights via
    quantization-aware training); see docs/semantics.md.
    """

    kind: str = "spikedecoder"
    vocab_size: int = 105
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    context: int = 128
    timesteps: int = 4
    surrogate: str = "atan"
    beta_init: float = 0.5
    deployable: bool = True
    # fields added after the first checkpoints: their defaults are what those checkpoints
    # were trained with, so they load unchanged
    embedding: str = "rate"
    ann_blocks: tuple = ()
    population: int = 4
    attention_memory: str = "sum"
    attention_decay_shift: int = 6
    token_shift: int = 0
    shift_mode: str = "diag"
    shift_into: str = "both"
    attention: str = "ssa"

    def __post_init__(self) -> None:
        _check_choice("model kind", self.kind, MODEL_KINDS)
        _check_choice("surrogate", self.surrogate, SURROGATES)
        if self.d_model % self.n_heads:
            raise UserError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "context", "timesteps"):
            if getattr(self, name) <= 0:
                raise UserError(f"{name} must be positive, got {getattr(self, name)}")
        _check_choice("spike embedding", self.embedding, EMBEDDINGS)
        _check_choice("attention memory", self.attention_memory, ATTENTION_MEMORIES)
        if not 1 <= self.attention_decay_shift <= 12:
            raise UserError(f"attention_decay_shift must be in 1..12, got "
                            f"{self.attention_decay_shift}")
        if self.attention_memory != "sum" and self.kind != "spikedecoder":
            raise UserError(f"--attention-memory {self.attention_memory} applies to "
                            "--model spikedecoder only")
        if not 0 <= self.token_shift <= 2:
            raise UserError(f"token_shift must be 0, 1 or 2, got {self.token_shift} (a lag of "
                            "j tokens is a delay of j token windows, and Loihi 2 delays end "
                            "at 62 steps)")
        _check_choice("shift mode", self.shift_mode, SHIFT_MODES)
        _check_choice("shift target", self.shift_into, SHIFT_TARGETS)
        _check_choice("attention", self.attention, ATTENTIONS)
        if self.attention == "sdsa" and (self.kind != "spikedecoder"
                                         or self.attention_memory != "sum"):
            raise UserError("--attention sdsa applies to --model spikedecoder with the sum "
                            "attention memory only")
        if self.token_shift and self.kind != "spikedecoder":
            raise UserError("--token-shift applies to --model spikedecoder only")
        self.ann_blocks = parse_blocks(self.ann_blocks)
        if self.ann_blocks and self.kind != "partial":
            raise UserError(f"ann_blocks {', '.join(self.ann_blocks)} need the model kind "
                            "'partial' (--model partial)")
        spiking_embedding = self.kind == "spikedecoder" or (
            self.kind == "partial" and "embedding" not in self.ann_blocks)
        if self.embedding != "rate" and not spiking_embedding:
            raise UserError(f"--embedding {self.embedding} codes a spiking embedding, but this "
                            f"{self.kind} model's embedding is not spiking; drop --embedding")
        if self.embedding == "population" and (self.population < 2
                                                or self.d_model % self.population):
            raise UserError(f"population coding needs d_model ({self.d_model}) divisible by a "
                            f"population size >= 2 (got {self.population})")
        if self.kind == "ann" and self.deployable:
            self.deployable = False

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise UserError(f"checkpoint config has unknown fields {sorted(unknown)}; "
                            "it was written by another version of snn_compile")
        return cls(**d)
