"""Spike encodings of real-valued activations, and linear layers driven by them.

A pretrained (non-spiking) decoder becomes spike-driven at its linear layers.
The vector ``x`` (d features) entering a linear layer is encoded as P spike
planes ``s_p`` (events in {0, 1} or {-1, 0, +1}) with plane weights ``w_p`` and
one scale ``c`` per vector, so that, exactly,

    decode(x)          = c * sum_p w_p s_p
    W decode(x) + b    = c * sum_p w_p (W s_p) + b

``W s_p`` needs no multiplication: every non-zero event adds (or subtracts) one
column of W, one accumulate (AC) per synapse, so a layer costs
``spikes x fan-out`` ACs plus ``fan-out`` multiplications by ``c`` per vector.
The plane weights are powers of two (a weight exponent per plane, as Loihi's
``weight_exp``), so a spike of any plane is still one AC.

Schemes (``m`` = mean |x_i| over the vector, ``M`` = max |x_i|, theta relative):

* ``binary``:  ``s = 1[x > theta m]``, ``c`` = mean of x over the spiking
  features (the least-squares scale for that spike pattern), P = 1.
* ``ternary``: ``s = sgn(x) 1[|x| > theta m]``, ``c`` = mean |x| over the
  spiking features, P = 1. theta = 0.7 is the rule of Ternary Weight Networks
  (Li, Zhang & Liu, arXiv:1605.04711), the default of both.
* ``bitwise`` (k bits): ``q = clamp(round(x / D), -(2^(k-1) - 1), 2^(k-1) - 1)``
  with ``D = M / (2^(k-1) - 1)`` (dynamic, symmetric) or a fixed ``D``; c = D.
  ``sign-magnitude`` (default): ``s_j = sgn(q) bit_j(|q|)``, ``w_j = 2^j``,
  j < k-1: k-1 planes (timesteps) of signed events, the sign bit is the
  event's polarity. ``twos`` (two's complement): ``s_j = bit_j(q mod 2^k)``,
  ``w_j = 2^j`` and ``w_(k-1) = -2^(k-1)``: k planes of binary events. Both
  decode to the same ``D q``; sign-magnitude spends popcount(|q|) events,
  two's complement popcount(q mod 2^k) (many for small negative q).

Scales are computed per vector, i.e. per token and per layer input, never
across tokens: the encoding stays causal, so a streamed run equals the batched
forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from snn_compile.errors import UserError

ENCODINGS = ("none", "binary", "ternary", "bitwise")
SCHEMES = ("sign-magnitude", "twos")
DEFAULT_THRESHOLD = 0.7
NON_SPIKING = ("embedding lookup + position add", "LayerNorm", "attention scores QK^T",
               "softmax", "attention AV product", "GELU", "residual adds",
               "the per-vector encoder (scale, threshold/rounding)",
               "the scale multiply c at each layer output")


@dataclass
class Encoded:
    """Spike planes ``(P, ..., d)``, plane weights ``(P,)``, scale ``(..., 1)``."""

    planes: torch.Tensor
    weights: torch.Tensor
    scale: torch.Tensor

    def decode(self) -> torch.Tensor:
        """``c * sum_p w_p s_p``; exact (integer plane sums, one multiply)."""
        w = self.weights.to(self.planes.dtype).view(-1, *([1] * (self.planes.dim() - 1)))
        return (w * self.planes).sum(0) * self.scale

    def spikes_per_vector(self) -> torch.Tensor:
        """Non-zero events per encoded vector (summed over planes and features)."""
        return self.planes.ne(0).sum(dim=(0, -1))

    def spike_count(self) -> int:
        """Total number of non-zero events."""
        return int(self.planes.ne(0).sum())


class Encoding:
    """Interface: ``encode(x) -> Encoded`` and ``reference(x)`` = the decoded value
    computed directly (no planes), so the two can be checked against each other."""

    name = "encoding"
    planes = 1

    def encode(self, x: torch.Tensor) -> Encoded:
        raise NotImplementedError

    def reference(self, x: torch.Tensor, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """The decoded value, in ``dtype`` (default x's); decisions are made in x's dtype."""
        raise NotImplementedError

    def decode(self, enc: Encoded) -> torch.Tensor:
        return enc.decode()

    def error(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction error ``x - decode(encode(x))``."""
        return x - self.encode(x).decode()

    def stats(self, x: torch.Tensor) -> dict:
        """What encoding ``x`` costs (events) and loses (reconstruction error)."""
        enc = self.encode(x)
        err = x - enc.decode()
        n = enc.spike_count()
        return {"spikes": n, "spikes_per_activation": n / max(x.numel(), 1),
                "mse": float(err.pow(2).mean()), "max_abs_error": float(err.abs().max()),
                "relative_error": float(err.norm() / x.norm().clamp(min=1e-30))}

    def describe(self) -> dict:
        return {"encoding": self.name, "planes": self.planes}


def _mean_over(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over the masked features of each vector; 0 where none is masked."""
    n = mask.sum(-1, keepdim=True)
    s = (x * mask).sum(-1, keepdim=True)
    return torch.where(n > 0, s / n.clamp(min=1), torch.zeros_like(s))


class Binary(Encoding):
    """``s = 1[x > theta mean|x|]``, decode ``c s`` with c the mean spiking value."""

    name = "binary"

    def __init__(self, threshold: float = DEFAULT_THRESHOLD):
        if threshold < 0:
            raise UserError(f"--threshold must be >= 0 (a multiple of mean |x|), got {threshold}")
        self.threshold = float(threshold)

    def _spikes(self, x):
        theta = self.threshold * x.abs().mean(-1, keepdim=True)
        s = (x > theta).to(x.dtype)
        return s, _mean_over(x, s)

    def encode(self, x):
        s, c = self._spikes(x)
        return Encoded(s[None], torch.ones(1, dtype=x.dtype, device=x.device), c)

    def reference(self, x, dtype=None):
        theta = self.threshold * x.abs().mean(-1, keepdim=True)
        keep = x > theta
        n = keep.sum(-1, keepdim=True)
        c = torch.where(keep, x, torch.zeros_like(x)).sum(-1, keepdim=True) / n.clamp(min=1)
        return torch.where(keep, c.expand_as(x), torch.zeros_like(x)).to(dtype or x.dtype)

    def describe(self):
        return {"encoding": self.name, "planes": 1, "threshold": self.threshold}


class Ternary(Encoding):
    """``s = sgn(x) 1[|x| > theta mean|x|]``, decode ``c s`` with c the mean spiking |x|."""

    name = "ternary"

    def __init__(self, threshold: float = DEFAULT_THRESHOLD):
        if threshold < 0:
            raise UserError(f"--threshold must be >= 0 (a multiple of mean |x|), got {threshold}")
        self.threshold = float(threshold)

    def encode(self, x):
        a = x.abs()
        fire = (a > self.threshold * a.mean(-1, keepdim=True)).to(x.dtype)
        c = _mean_over(a, fire)
        return Encoded((torch.sign(x) * fire)[None], torch.ones(1, dtype=x.dtype,
                                                               device=x.device), c)

    def reference(self, x, dtype=None):
        a = x.abs()
        keep = a > self.threshold * a.mean(-1, keepdim=True)
        n = keep.sum(-1, keepdim=True)
        c = torch.where(keep, a, torch.zeros_like(a)).sum(-1, keepdim=True) / n.clamp(min=1)
        return torch.where(keep, torch.sign(x) * c, torch.zeros_like(x)).to(dtype or x.dtype)

    def describe(self):
        return {"encoding": self.name, "planes": 1, "threshold": self.threshold}


class Bitwise(Encoding):
    """k-bit symmetric quantisation ``q = round(x / D)``, emitted as bit planes."""

    name = "bitwise"

    def __init__(self, bits: int = 8, scheme: str = "sign-magnitude",
                 scale: Optional[float] = None):
        if not 2 <= int(bits) <= 16:
            raise UserError(f"--bits must be between 2 and 16, got {bits}")
        if scheme not in SCHEMES:
            raise UserError(f"unknown bitwise scheme {scheme!r}; choose one of {SCHEMES}")
        if scale is not None and not scale > 0:
            raise UserError(f"the fixed bitwise scale must be positive, got {scale}")
        self.bits, self.scheme, self.fixed_scale = int(bits), scheme, scale
        self.qmax = 2 ** (self.bits - 1) - 1
        self.planes = self.bits - 1 if scheme == "sign-magnitude" else self.bits

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """D per vector: max |x| / (2^(k-1) - 1), 1 for an all-zero vector, or the fixed D."""
        if self.fixed_scale is not None:
            return torch.full_like(x[..., :1], self.fixed_scale)
        m = x.abs().amax(-1, keepdim=True)
        return torch.where(m > 0, m / self.qmax, torch.ones_like(m))

    def quantize(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Integers q (as int64) and D."""
        d = self.step(x)
        q = torch.clamp(torch.round(x / d), -self.qmax, self.qmax).to(torch.int64)
        return q, d

    def encode(self, x):
        q, d = self.quantize(x)
        j = torch.arange(self.planes, device=x.device)
        shape = (-1,) + (1,) * q.dim()
        if self.scheme == "sign-magnitude":
            bits = (q.abs()[None] >> j.view(shape)) & 1
            planes = (bits * torch.sign(q)[None]).to(x.dtype)
            weights = (2.0 ** j).to(x.dtype)
        else:
            u = torch.remainder(q, 2 ** self.bits)          # two's complement bit pattern
            planes = ((u[None] >> j.view(shape)) & 1).to(x.dtype)
            weights = (2.0 ** j).to(x.dtype)
            weights[-1] = -weights[-1]
        return Encoded(planes, weights, d)

    def reference(self, x, dtype=None):
        """Plain fake quantisation ``D clamp(round(x / D))``: no planes involved."""
        d = self.step(x)
        dtype = dtype or x.dtype
        return torch.clamp(torch.round(x / d), -self.qmax, self.qmax).to(dtype) * d.to(dtype)

    def describe(self):
        return {"encoding": self.name, "planes": self.planes, "bits": self.bits,
                "scheme": self.scheme}


def make_encoding(name: str, bits: int = 8, threshold: Optional[float] = None,
                  scheme: str = "sign-magnitude") -> Optional[Encoding]:
    """The encoding named on the command line; ``None`` for ``none``."""
    if name == "none":
        return None
    if name in ("binary", "ternary"):
        cls = Binary if name == "binary" else Ternary
        return cls(DEFAULT_THRESHOLD if threshold is None else threshold)
    if name == "bitwise":
        return Bitwise(bits, scheme)
    raise UserError(f"unknown encoding {name!r}; choose one of {', '.join(ENCODINGS)}")


# ----------------------------------------------------------- linear layers
def _is_conv1d(m: nn.Module) -> bool:
    """Hugging Face GPT-2's ``Conv1D``: ``y = x W + b`` with W of shape (in, out)."""
    return type(m).__name__ == "Conv1D" and hasattr(m, "nf") and hasattr(m, "weight")


def weight_and_bias(m: nn.Module) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """W as (out, in) and b of an ``nn.Linear`` or a GPT-2 ``Conv1D``."""
    if isinstance(m, nn.Linear):
        return m.weight, m.bias
    if _is_conv1d(m):
        return m.weight.t(), m.bias
    raise TypeError(f"{type(m).__name__} is not a linear layer")


class SpikeDrivenLinear(nn.Module):
    """A linear layer whose input is spike-encoded: ``c sum_p w_p (W s_p) + b``.

    With ``reference=True`` it computes ``W reference(x) + b`` instead (plain fake
    quantisation, no planes), the check for the plane path. Both run the matrix
    products in float64, so that summing planes and multiplying by the decoded
    value agree to float64 rounding, far below the float32 of the result.
    Counters: events and vectors seen since ``reset_counts``, and the events of
    every vector of the last call (``last_spikes``).
    """

    def __init__(self, inner: nn.Module, encoding: Encoding, name: str = "",
                 reference: bool = False):
        super().__init__()
        weight_and_bias(inner)
        self.inner, self.encoding, self.name, self.reference = inner, encoding, name, reference
        w, _ = weight_and_bias(inner)
        self.d_out, self.d_in = int(w.shape[0]), int(w.shape[1])
        self.reset_counts()

    def reset_counts(self) -> None:
        self.spikes, self.vectors = 0, 0
        self.last_spikes: Optional[torch.Tensor] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = weight_and_bias(self.inner)
        w64 = w.double()
        b64 = None if b is None else b.double()
        if self.reference:
            return F.linear(self.encoding.reference(x, torch.float64), w64, b64).to(x.dtype)
        enc = self.encoding.encode(x)
        per_plane = F.linear(enc.planes.double(), w64)                # (P, ..., out): ACs
        y = torch.tensordot(enc.weights.double(), per_plane, dims=1) * enc.scale.double()
        if b64 is not None:
            y = y + b64
        per_vec = enc.spikes_per_vector()
        self.last_spikes = per_vec.detach()
        self.spikes += int(per_vec.sum())
        self.vectors += int(per_vec.numel())
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.name}: {self.d_in} -> {self.d_out}, {self.encoding.describe()}"


class EncodedModel:
    """The spike-driven layers put into a model, and their spike/AC accounting."""

    def __init__(self, layers: List[SpikeDrivenLinear], encoding: Encoding):
        self.layers, self.encoding = layers, encoding

    def reset_counts(self) -> None:
        for m in self.layers:
            m.reset_counts()

    def summary(self) -> dict:
        """Per token: spikes, activations entering spike-driven layers, ACs, scale MACs."""
        tokens = max((m.vectors for m in self.layers), default=0)
        per_layer = {m.name: {"spikes_per_token": m.spikes / max(m.vectors, 1),
                              "d_in": m.d_in, "fan_out": m.d_out,
                              "spikes_per_activation": m.spikes / max(m.vectors * m.d_in, 1)}
                     for m in self.layers}
        spikes = sum(m.spikes for m in self.layers)
        acts = sum(m.vectors * m.d_in for m in self.layers)
        return _totals(tokens, spikes, acts, sum(m.spikes * m.d_out for m in self.layers),
                       sum(m.vectors * m.d_out for m in self.layers), self.encoding.planes,
                       per_layer)

    def last_token(self) -> Dict[str, float]:
        """Spikes and ACs of the last position of sequence 0 in the last forward pass."""
        spikes = acs = 0
        for m in self.layers:
            if m.last_spikes is not None and m.last_spikes.numel():
                n = int(m.last_spikes.reshape(-1)[-1] if m.last_spikes.dim() < 2
                        else m.last_spikes.reshape(m.last_spikes.shape[0], -1)[0, -1])
                spikes += n
                acs += n * m.d_out
        return {"spikes": spikes, "acs": acs,
                "activations": sum(m.d_in for m in self.layers),
                "scale_macs": sum(m.d_out for m in self.layers)}


def _totals(tokens, spikes, acts, acs, macs, planes, per_layer=None) -> dict:
    t = max(tokens, 1)
    return {"tokens": tokens, "spikes_per_token": spikes / t,
            "activations_per_token": acts / t,
            "spikes_per_activation": spikes / max(acts, 1),
            "sparsity": 1.0 - spikes / max(acts * planes, 1),
            "acs_per_token": acs / t, "scale_macs_per_token": macs / t,
            "planes": planes, "per_layer": per_layer or {}}


def linear_layers(model: nn.Module) -> List[Tuple[str, nn.Module, str, nn.Module]]:
    """(qualified name, parent, attribute, layer) of every nn.Linear / GPT-2 Conv1D."""
    mods = dict(model.named_modules())
    out = []
    for name, m in mods.items():                     # module order: qkv before head
        if isinstance(m, SpikeDrivenLinear):
            raise UserError("the model is already spike-encoded; load it again to change "
                            "the encoding")
        if name and (isinstance(m, nn.Linear) or _is_conv1d(m)):
            parent, _, attr = name.rpartition(".")
            out.append((name, mods[parent], attr, m))
    return out


def apply_encoding(model: nn.Module, encoding: Optional[Encoding],
                   reference: bool = False) -> Optional[EncodedModel]:
    """Replace every linear layer of ``model`` (in place) by its spike-driven form.

    ``encoding=None`` leaves the model untouched and returns None. Softmax,
    GELU, LayerNorm and the attention products are left as they are: they are
    the non-spiking parts (``NON_SPIKING``).
    """
    if encoding is None:
        return None
    layers = []
    for name, parent, attr, child in linear_layers(model):
        m = SpikeDrivenLinear(child, encoding, name, reference=reference)
        setattr(parent, attr, m)
        layers.append(m)
    if not layers:
        raise UserError("the model has no nn.Linear or Conv1D layer to spike-encode")
    return EncodedModel(layers, encoding)
