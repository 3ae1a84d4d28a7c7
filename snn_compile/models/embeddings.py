"""Spike embeddings: how a token's embedding current becomes spikes over its T steps.

The embedding current of token ``n`` is ``e[n] = norm(E_tok e_tok(n) + E_pos e_pos(n))``
(one value per channel, the same for every step of the token). Three codes:

* ``rate`` (default, the one the compiler lowers): ``e`` is a constant input current
  of the reset-to-zero LIF ``LIF_emb``; the value is carried by the spike count::

      v[t] = beta v'[t-1] + e;   s[t] = v[t] > 1;   v'[t] = v[t] (1 - s[t])

* ``temporal`` (latency / time to first spike): a non-leaky integrate-and-fire neuron
  per channel that fires at most once per token; a larger value fires earlier::

      v[t] = (t + 1) e;   s[t] = [v[t] > 1] * (1 - sum_{t' < t} s[t'])
      => the spike is at t* = min{t : (t + 1) e > 1}, none if T e <= 1

* ``population``: each of the ``d / P`` embedding values is seen by ``P`` neurons with
  Gaussian tuning curves of preferred values ``mu_j = -1 + 2 j / (P - 1)`` and width
  ``sigma = 1 / (P - 1)``; neuron ``(c, j)`` (channel ``c P + j``) is a LIF_emb neuron
  with the constant current ``G exp(-(e_c - mu_j)^2 / (2 sigma^2))``, ``G = 2``, so the
  neuron whose preferred value is nearest fires most (at every step when ``e_c = mu_j``).

Temporal and population codes are trained with the same surrogate gradients; the
Loihi 2 lowering implements only the rate code (``fold`` refuses the others).
"""

from __future__ import annotations

import torch

from snn_compile.models.config import ModelConfig
from snn_compile.models.surrogate import spike

POPULATION_GAIN = 2.0


def embedding_width(cfg: ModelConfig) -> int:
    """Columns of E_tok / E_pos: d_model, or d_model / P values for population coding."""
    return cfg.d_model // cfg.population if cfg.embedding == "population" else cfg.d_model


def tuning_centres(P: int, dtype=torch.float32, device=None) -> torch.Tensor:
    return torch.linspace(-1.0, 1.0, P, dtype=dtype, device=device)


def population_current(e: torch.Tensor, P: int) -> torch.Tensor:
    """(..., d/P) values → (..., d) currents ``G exp(-(e_c - mu_j)^2 / (2 sigma^2))``."""
    mu = tuning_centres(P, e.dtype, e.device)
    sigma = 1.0 / (P - 1)
    cur = POPULATION_GAIN * torch.exp(-(e.unsqueeze(-1) - mu) ** 2 / (2 * sigma ** 2))
    return cur.reshape(*e.shape[:-1], e.shape[-1] * P)


def temporal_spikes(e: torch.Tensor, T: int, surrogate: str) -> torch.Tensor:
    """(B, N, d) values → (B, N, T, d) single spikes at t* = min{t : (t+1) e > 1}."""

    v = torch.zeros_like(e)
    fired = torch.zeros_like(e)
    out = []
    for _ in range(T):
        v = v + e
        s = spike(v - 1.0, surrogate) * (1.0 - fired)
        out.append(s)
        fired = fired + s.detach()
    return torch.stack(out, dim=2)


def encode(cfg: ModelConfig, current: torch.Tensor, lif) -> torch.Tensor:
    """Embedding current (B, N, width) → spikes (B, N, T, d_model) with cfg.embedding."""
    B, N, _ = current.shape
    T = cfg.timesteps
    if cfg.embedding == "rate":
        return lif(current.unsqueeze(2).expand(B, N, T, -1))
    if cfg.embedding == "temporal":
        return temporal_spikes(current, T, cfg.surrogate)
    cur = population_current(current, cfg.population)
    return lif(cur.unsqueeze(2).expand(B, N, T, -1))
