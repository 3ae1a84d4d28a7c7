"""The training primitives of the spiking models: the surrogate-gradient spike and the
quantization-aware-training snaps onto Loihi 2's grids (8-bit weight mantissas, 12-bit
decays), each a straight-through estimator."""

from __future__ import annotations

import math

import torch

from snn_compile.loihi.limits import DECAY_MAX, DECAY_UNITY, MANTISSA_MAX
from snn_compile.models import kernels


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
    """Snap to ``m * 2^e``, |m| <= 127, e the smallest integer that fits, with a
    straight-through gradient: forward ``grid_value(w)``, gradient 1.

    The reference form ``w + (q - w).detach()`` records about 18 operations per weight
    (44 weights per step at 4 x 128); with the kernels on, one autograd node
    (``_StraightThrough``) returns q itself, the same value: ``|q - w| <= 2^e / 2`` puts
    w within [q/2, 2q] (or q = 0), so ``q - w`` and ``w + (q - w)`` are exact (Sterbenz)."""
    if not enabled:
        return w
    if kernels.kernels_enabled():
        return _StraightThrough.apply(w)
    return w + (grid_value(w.detach()) - w).detach()


def grid_value(w: torch.Tensor) -> torch.Tensor:
    """``q = clamp(round(w / 2^e), -127, 127) 2^e``, ``e = ceil(log2(max|w| / 127))`` (+1
    where rounding of the log still leaves max|w| / 2^e > 127); all-zero w stays 0. Tensor
    operations only, no Python branch on a value, so a GPU step does not wait for the host
    (the same values as the branches that were here before)."""
    amax = w.abs().max()
    e = torch.ceil(torch.log2(amax / float(MANTISSA_MAX)))
    s = torch.pow(2.0, e)
    s = torch.where(amax / s > MANTISSA_MAX, s * 2, s)
    s = torch.where(amax == 0, torch.ones_like(s), s)      # all zero: q = round(0) = 0
    return torch.clamp(torch.round(w / s), -MANTISSA_MAX, MANTISSA_MAX) * s


class _StraightThrough(torch.autograd.Function):
    """Forward ``grid_value(w)`` (compiled after ``kernels.set_compile(True)``), backward
    the incoming gradient unchanged."""

    @staticmethod
    def forward(ctx, w):
        return kernels.compiled("grid_value", grid_value)(w.detach())

    @staticmethod
    def backward(ctx, grad):
        return grad


def quant_beta(beta: torch.Tensor, enabled: bool = True) -> torch.Tensor:
    """Round beta to Loihi's 12-bit decay: beta_q = (4096 - dv) / 4096."""
    if not enabled:
        return beta
    dv = torch.round(DECAY_UNITY * (1 - beta.detach())).clamp(0, DECAY_MAX)
    return beta + ((DECAY_UNITY - dv) / DECAY_UNITY - beta).detach()
