"""A digits classifier from snnTorch, as a new user would bring one (issue 16).

    python -m snn_compile.benchmarks.digits [--out out/digits] [--steps 16] [--epochs 8]

Trains a Linear(64, 32)-Leaky-Linear(32, 10)-Leaky network (reset to zero, per-neuron
beta 0.9) in snnTorch with BPTT on the output spike counts, on scikit-learn's bundled 8x8
digits (no download; 10 noisy prototypes if scikit-learn is missing), each image
rate-coded into ``steps`` steps of Bernoulli spikes. Writes into ``--out``:
``digits.nir`` (snnTorch's ``export_to_nir``), ``X.npy`` (test spikes, (samples, steps,
64)), ``Y.npy`` (test labels), and prints snnTorch's own test accuracy. Then, from the
command line alone::

    snn-compile eval OUT/digits.nir --input OUT/X.npy --labels OUT/Y.npy   # Loihi 2 integer accuracy
    snn-compile bench OUT/digits.nir --input OUT/X.npy                     # energy per sample
    snn-compile run OUT/digits.nir --input OUT/X.npy --backend lava-sim -o lava.npy
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch

from snn_compile.export.nir_io import write_nir
from snn_compile.export.to_nir import export_snntorch


def digits(n: int = None, seed: int = 0):
    """(images (n, 64) in [0, 1], labels): scikit-learn's bundled 8x8 digits, or, without
    scikit-learn, 10 noisy prototype patterns."""
    try:
        from sklearn.datasets import load_digits
        d = load_digits()
        x, y = d.data / 16.0, d.target
        source = "sklearn digits"
    except ImportError:                                # pragma: no cover
        rng = np.random.default_rng(seed)
        n0 = n or 1797
        proto = rng.random((10, 64)) < 0.3
        y = rng.integers(0, 10, n0)
        x = np.clip(proto[y] * 0.9 + rng.random((n0, 64)) * 0.2, 0, 1)
        source = "synthetic prototypes"
    n = n or len(y)
    return x[:n].astype(np.float64), y[:n].astype(np.int64), source


def rate_code(x: np.ndarray, steps: int, seed: int) -> np.ndarray:
    """Bernoulli rate code: a spike with probability = intensity, (n, steps, 64)."""
    rng = np.random.default_rng(seed)
    return (rng.random((x.shape[0], steps, x.shape[1])) < x[:, None, :]).astype(np.float32)


def snntorch_digits_net(hidden: int = 32):
    import snntorch as snn
    return torch.nn.Sequential(
        torch.nn.Linear(64, hidden),
        snn.Leaky(beta=torch.full((hidden,), 0.9), threshold=torch.ones(hidden),
                  init_hidden=True, reset_mechanism="zero"),
        torch.nn.Linear(hidden, 10),
        snn.Leaky(beta=torch.full((10,), 0.9), threshold=torch.ones(10), init_hidden=True,
                  output=True, reset_mechanism="zero"))


def train_snntorch(net, x: np.ndarray, y: np.ndarray, epochs: int = 6, lr: float = 5e-3,
                   seed: int = 0) -> None:
    """BPTT on the output spike counts (cross-entropy of the counts), ``epochs`` passes."""
    from snntorch import utils
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    xs, ys = torch.as_tensor(x), torch.as_tensor(y)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(xs), generator=gen).split(64):
            utils.reset(net)
            count = 0
            for t in range(xs.shape[1]):
                spk, _ = net(xs[idx, t])
                count = count + spk
            loss = torch.nn.functional.cross_entropy(count, ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


@torch.no_grad()
def snntorch_accuracy(net, X: np.ndarray, Y: np.ndarray) -> float:
    from snntorch import utils
    utils.reset(net)
    xs = torch.as_tensor(X)
    count = sum(net(xs[:, t])[0] for t in range(xs.shape[1]))
    return float((count.argmax(1).numpy() == Y).mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join("out", "digits"))
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    torch.manual_seed(a.seed)
    x, y, source = digits()
    n_train = int(0.8 * len(y))
    net = snntorch_digits_net(a.hidden)
    train_snntorch(net, rate_code(x[:n_train], a.steps, a.seed + 1), y[:n_train], a.epochs,
                   seed=a.seed)
    X, Y = rate_code(x[n_train:], a.steps, a.seed + 2), y[n_train:]
    os.makedirs(a.out, exist_ok=True)
    write_nir(export_snntorch(net, torch.zeros(1, 64)), os.path.join(a.out, "digits.nir"))
    np.save(os.path.join(a.out, "X.npy"), X)
    np.save(os.path.join(a.out, "Y.npy"), Y)
    res = {"data": source, "train": n_train, "test": int(len(Y)), "steps": a.steps,
           "snntorch_test_accuracy": snntorch_accuracy(net, X, Y), "out": a.out}
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
