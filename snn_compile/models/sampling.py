"""Token-by-token generation shared by every backend (torch, NIR, integer, Lava).

A backend has ``reset()``, ``feed(token) -> logits for the next token``,
``vocab_size``, ``context`` and ``close()``. Context policy (docs/semantics.md):
when the next position would reach the context, every backend is reset and the
last ``context // 2`` tokens are fed again from position 0.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import numpy as np
import torch


def sample_next(logits: np.ndarray, temperature: float, top_k: Optional[int],
                rng: np.random.Generator) -> int:
    """Greedy (ties → lowest id) when temperature is 0, else softmax sampling."""
    logits = np.asarray(logits, dtype=np.float64)
    if temperature <= 0:
        return int(np.argmax(logits))
    z = logits / temperature
    if top_k is not None and 0 < top_k < z.size:
        kth = np.sort(z)[-top_k]
        z = np.where(z >= kth, z, -np.inf)
    p = np.exp(z - z.max())
    p /= p.sum()
    return int(rng.choice(z.size, p=p))


def generate(backend, prompt_ids: Sequence[int], n_new: int, *, temperature: float = 0.0,
             top_k: Optional[int] = None, seed: int = 0,
             on_token: Optional[Callable[[int], None]] = None) -> List[int]:
    """Feed the prompt, then sample ``n_new`` tokens; returns only the new ids."""
    if not prompt_ids:
        raise ValueError("generation needs a prompt of at least one token")
    rng = np.random.default_rng(seed)
    ctx = backend.context
    window: List[int] = []
    backend.reset()
    logits = None

    def feed(tok):
        nonlocal logits, window
        if len(window) == ctx:
            window = window[-(ctx // 2):]
            backend.reset()
            for t in window:
                backend.feed(t)
        window.append(tok)
        logits = backend.feed(tok)

    for t in prompt_ids:
        feed(int(t))
    out: List[int] = []
    for _ in range(n_new):
        tok = sample_next(logits, temperature, top_k, rng)
        out.append(tok)
        if on_token is not None:
            on_token(tok)
        feed(tok)
    return out


class TorchBackend:
    """The float torch model as a token backend (recomputes its context window)."""

    name = "torch"

    def __init__(self, model, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.device = device
        self.vocab_size = model.cfg.vocab_size
        self.context = model.cfg.context
        self.tokens: List[int] = []

    def reset(self) -> None:
        self.tokens = []

    @torch.no_grad()
    def feed(self, token: int) -> np.ndarray:
        self.tokens.append(int(token))
        x = torch.tensor([self.tokens], device=self.device)
        return self.model(x)[0, -1].double().cpu().numpy()

    def close(self) -> None:
        pass
