"""Shared fixtures of the benchmark tests."""

import numpy as np


def hand_spikes(n_tok=1):
    """A hand-made spike train of the 1-block decoder (d=2, d_ff=4, T=2)."""
    T, d = 2, 2
    s = {"emb": np.zeros((n_tok, T, d)), "block0.qkv": np.zeros((n_tok, T, 3 * d)),
         "block0.attn": np.zeros((n_tok, T, d)), "block0.mid": np.zeros((n_tok, T, d)),
         "block0.ff": np.zeros((n_tok, T, 4)), "block0.out": np.zeros((n_tok, T, d))}
    s["emb"][0, 0, 0] = 1                       # 1 spike
    s["block0.qkv"][0, 0, [0, 1]] = 1           # q: 2 spikes at t=0
    s["block0.qkv"][0, 1, 0] = 1                # q: 1 spike at t=1
    s["block0.qkv"][0, 0, 4] = 1                # v: 1 spike at t=0
    s["block0.qkv"][0, 1, [4, 5]] = 1           # v: 2 spikes at t=1
    s["block0.attn"][0, 1, 1] = 1               # 1 spike
    s["block0.mid"][0, :, 0] = 1                # 2 spikes
    s["block0.ff"][0, 0, :3] = 1                # 3 spikes
    s["block0.out"][0, 1, :] = 1                # 2 spikes
    return s
