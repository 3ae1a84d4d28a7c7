"""Model configuration: one dataclass for every decoder of the zoo (nanoGPT style)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from snn_compile.errors import UserError

MODEL_KINDS = ("spikedecoder", "ann")
SURROGATES = ("atan", "fast_sigmoid")


@dataclass
class ModelConfig:
    """Sizes and switches of a decoder.

    ``spikedecoder``: fully spiking decoder, ``timesteps`` steps per token.
    ``ann``: the non-spiking twin (softmax attention, GELU, LayerNorm), same widths.
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

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise UserError(f"unknown model kind {self.kind!r}; choose one of {', '.join(MODEL_KINDS)}")
        if self.surrogate not in SURROGATES:
            raise UserError(f"unknown surrogate {self.surrogate!r}; choose one of {', '.join(SURROGATES)}")
        if self.d_model % self.n_heads:
            raise UserError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "context", "timesteps"):
            if getattr(self, name) <= 0:
                raise UserError(f"{name} must be positive, got {getattr(self, name)}")
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
