"""Model configuration: one dataclass for every decoder of the zoo (nanoGPT style)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from snn_compile.errors import UserError
from snn_compile.loihi.limits import INHIBITORY_MANTISSA_MAX

MODEL_KINDS = ("spikedecoder", "partial", "ann")
SURROGATES = ("atan", "fast_sigmoid")
# block kinds of the block-exchange analysis (SpikeDecoder, Beger, Walter & Knoll,
# arXiv:2606.12287): each can be its spiking or its ANN version in a ``partial`` model
BLOCK_KINDS = ("embedding", "attention", "feedforward", "norm", "residual")
EMBEDDINGS = ("rate", "temporal", "population")
# how the spiking attention's causal key-value memory weighs past steps: "sum" (exact
# integer accumulation, grows with the position) or "decay" (multi-scale retention: head h
# keeps lambda_h = 1 - m_h / 4096 of its memory per Loihi time step, half-lives from half a
# token to half the context; both deployable)
ATTENTION_MEMORIES = ("sum", "decay")
# how blocks are joined: "spike" (every block output re-spiked, skips enter the membrane;
# trains up to 2 blocks) or "stream" (a real-valued residual stream that blocks read
# through LIFs and write with their output projections: Spike-driven Transformer V2's
# membrane shortcut; trains at depth)
RESIDUALS = ("spike", "stream")
DECAY_EXP = 12           # retention lambda = 1 - m / 2^DECAY_EXP, m in 1..255 (8-bit weight)
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


def retention_mantissas(n_heads: int, context: int, window: int) -> tuple:
    """Per-head decay mantissas: half-lives from 0.5 token to context / 2 tokens, geometric.

    Head h keeps ``lambda_h = 1 - m_h / 4096`` per Loihi step, so ``lambda_h^W`` per token
    of ``W`` steps; ``m_h = round(4096 (1 - 2^(-1 / (tau_h W))))`` clipped to 1..255 (the
    8-bit weight of the memory's decay loop; 1 bounds the longest half-life)."""
    lo, hi = 0.5, max(context / 2.0, 1.0)
    taus = [lo * (hi / lo) ** (h / max(n_heads - 1, 1)) for h in range(n_heads)]
    return tuple(int(min(INHIBITORY_MANTISSA_MAX, max(1, round((2 ** DECAY_EXP) * (1 - 2 ** (-1 / (t * window)))))))
                 for t in taus)


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
class DecoderConfig:
    """The deployable core of a decoder: what its Loihi 2 lowering is made of.

    Sizes (``vocab_size``, ``d_model``, ``n_layers``, ``n_heads``, ``context``) and
    ``timesteps`` (T Loihi steps per token); the lowered design choices:
    ``residual`` (``spike``: re-spiked block outputs, or ``stream``: a real-valued residual
    stream, RESIDUALS); ``attention_memory`` (``sum`` or the multi-scale ``decay``,
    ATTENTION_MEMORIES; ``memory_decay`` / ``memory_window`` hold its per-head mantissas and
    the Loihi steps per token they assume); ``token_shift``, ``shift_mode``, ``shift_into``
    (blocks also receive the spikes of the previous ``token_shift`` tokens, SHIFT_MODES;
    lowered to delayed synapses).
    """

    vocab_size: int = 105
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    context: int = 128
    timesteps: int = 4
    residual: str = "spike"
    attention_memory: str = "sum"
    token_shift: int = 0
    shift_mode: str = "diag"
    shift_into: str = "both"
    # decay memory: the per-head mantissas m_h and the Loihi steps per token W they were
    # trained for (the lowering's window); filled in by ModelConfig.__post_init__
    memory_decay: tuple = ()
    memory_window: int = 0

    def window(self) -> int:
        """Loihi time steps per token of the lowered stream model: ``T + 9 L + 3``.

        Depths of the lowered graph (docs/semantics.md): the stream ``h0`` at 1; each
        block adds 9 (in, qkv, kv, mem, read, attn, mid, ff, stream); the final LIF and
        the readout add 2. The decay memory keeps decaying through the ``W - T``
        pipeline-drain steps between tokens, so the model trains with this ``W``."""
        return self.timesteps + 9 * self.n_layers + 3

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


@dataclass
class ModelConfig(DecoderConfig):
    """A decoder of the zoo: the deployable core (``DecoderConfig``) plus the model kind,
    the training options and the training experiments that have no lowering.

    ``kind``: ``spikedecoder`` (fully spiking, ``timesteps`` steps per token); ``ann`` (the
    non-spiking twin: softmax attention, GELU, LayerNorm, same widths); ``partial`` (the
    SpikeDecoder with the block kinds in ``ann_blocks`` exchanged for their ANN versions,
    docs/models.md; ``()`` is the SpikeDecoder, all five the twin).
    Training: ``surrogate``, ``beta_init``; ``deployable`` restricts the spiking model to
    what Loihi 2 / Lava executes (reset to zero, no bias, norms folded into weights, 8-bit
    weights via quantization-aware training; docs/semantics.md).
    Experiments (``fold()`` refuses any but the first value): ``embedding`` (rate,
    temporal, population spike codes of the embedding; ``population`` neurons per encoded
    value), ``attention`` (``ssa``, or the ``sdsa`` experiment, ATTENTIONS).
    Checkpoints store every field by name, so the split loads the files written before it.
    """

    kind: str = "spikedecoder"
    surrogate: str = "atan"
    beta_init: float = 0.5
    deployable: bool = True
    # fields added after the first checkpoints: their defaults are what those checkpoints
    # were trained with, so they load unchanged
    embedding: str = "rate"
    ann_blocks: tuple = ()
    population: int = 4
    attention: str = "ssa"

    def core(self) -> DecoderConfig:
        """The deployable core alone."""
        return DecoderConfig(**{f.name: getattr(self, f.name) for f in fields(DecoderConfig)})

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
        _check_choice("residual", self.residual, RESIDUALS)
        if self.residual != "spike" and self.kind != "spikedecoder":
            raise UserError("--residual stream applies to --model spikedecoder only")
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
        if self.attention_memory == "decay":
            if self.residual != "stream":
                raise UserError("--attention-memory decay needs --residual stream")
            if not self.memory_window:
                self.memory_window = self.window()
            if not self.memory_decay:
                self.memory_decay = retention_mantissas(self.n_heads, self.context,
                                                        self.memory_window)
            self.memory_decay = tuple(int(m) for m in self.memory_decay)
            if len(self.memory_decay) != self.n_heads or not all(
                    1 <= m <= INHIBITORY_MANTISSA_MAX for m in self.memory_decay):
                raise UserError(f"memory_decay {self.memory_decay} must hold {self.n_heads} "
                                "mantissas in 1..255")
        self.memory_decay = tuple(self.memory_decay)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        d = dict(d)
        # before the residual stream: a single-rate decay experiment (attention_decay_shift,
        # memories "mean" and "decay" per token step) that no longer exists
        if "attention_decay_shift" in d:
            if d.get("attention_memory", "sum") != "sum":
                raise UserError(f"this checkpoint was trained with the retired "
                                f"'{d['attention_memory']}' attention-memory experiment "
                                "(format before the residual stream); retrain it with "
                                "`--residual stream --attention-memory decay` or use an older "
                                "snn_compile")
            del d["attention_decay_shift"]
        unknown = set(d) - known
        if unknown:
            raise UserError(f"checkpoint config has unknown fields {sorted(unknown)}; "
                            "it was written by another version of snn_compile")
        return cls(**d)
