"""PNG plots of a benchmark's results (matplotlib, Agg backend).

Each function takes the plain ``results`` dict of ``harness.run_benchmark``
(plus, for the raster, one token's spike trains) and writes one file.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def energy_by_layer(results: dict, path: str) -> None:
    """Stacked bars: energy per token by layer, one bar per model and energy view."""
    plt = _plt()
    views = [(k, v) for k, v in results["per_layer_pj"].items() if v]
    layers: list = []
    for _, v in views:
        for layer in v:
            if layer not in layers:
                layers.append(layer)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(views) + 3), 4.5))
    x = np.arange(len(views))
    bottom = np.zeros(len(views))
    cmap = plt.get_cmap("tab20")
    for j, layer in enumerate(layers):
        vals = np.array([v.get(layer, 0.0) for _, v in views]) / 1e3
        ax.bar(x, vals, bottom=bottom, color=cmap(j % 20), label=layer)
        bottom += vals
    ax.set_xticks(x, [k.replace(":", "\n") for k, _ in views], fontsize=8)
    ax.set_ylabel("energy per token (nJ)")
    ax.set_yscale("symlog", linthresh=max(1e-3, float(bottom.min() or 1) / 10))
    ax.set_title("Energy per token by layer")
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def energy_by_op(results: dict, path: str) -> None:
    """Horizontal bars: SNN (45 nm) and ANN (45 nm) energy per token per operation."""
    plt = _plt()
    groups = [("SNN 45 nm", results["per_op"]["snn_theoretical"]),
              ("ANN 45 nm", results["per_op"]["ann_theoretical"])]
    fig, axes = plt.subplots(1, 2, figsize=(11, max(4, 0.18 * max(len(g[1]) for g in groups))))
    for ax, (title, rows) in zip(axes, groups):
        rows = [r for r in rows if r["kind"] != "extra"]
        labels = [f'{r["layer"]}.{r["op"]} ({r["kind"]})' for r in rows]
        vals = [r["energy_pj_per_token"] / 1e3 for r in rows]
        ax.barh(np.arange(len(rows)), vals, color="tab:blue" if "SNN" in title else "tab:gray")
        ax.set_yticks(np.arange(len(rows)), labels, fontsize=6)
        ax.invert_yaxis()
        ax.set_xlabel("nJ per token")
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def spike_rates(results: dict, path: str) -> None:
    """Grouped bars: firing probability per population (torch float vs measured integer)."""
    plt = _plt()
    rates = results["spike_rates"]
    names = list(rates.get("measured") or rates.get("torch") or {})
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names) + 2), 4))
    x = np.arange(len(names))
    series = [(k, v) for k, v in rates.items() if v]
    w = 0.8 / max(1, len(series))
    for j, (label, r) in enumerate(series):
        ax.bar(x + (j - (len(series) - 1) / 2) * w, [r.get(n, np.nan) for n in names], w,
               label=label)
    ax.set_xticks(x, names, rotation=70, fontsize=7)
    ax.set_ylabel("spikes per neuron per step")
    ax.set_title("Spike rate per population")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def raster(token_spikes: Mapping[str, np.ndarray], order: Sequence[str], path: str,
           title: str = "") -> None:
    """Spike raster of one token: populations stacked vertically, steps (0..T-1) across."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 8))
    offset = 0
    ticks, labels = [], []
    for name in order:
        a = np.asarray(token_spikes[name])          # (T, size)
        t, i = np.nonzero(a)
        ax.scatter(t + 0.0 * i, i + offset, s=1.5, marker="|", color="black")
        ticks.append(offset + a.shape[1] / 2)
        labels.append(name)
        offset += a.shape[1]
        ax.axhline(offset, color="0.85", lw=0.5)
    ax.set_yticks(ticks, labels, fontsize=6)
    ax.set_xlabel("step within the token")
    ax.set_ylim(0, offset)
    ax.set_title(title or "Spike raster of one token")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def energy_vs_loss(points: Sequence[dict], path: str) -> None:
    """Scatter: theoretical energy per token vs validation loss, one point per model/variant."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for p in points:
        ax.scatter(p["energy_pj"] / 1e3, p["val_loss"], s=30)
        ax.annotate(p["name"], (p["energy_pj"] / 1e3, p["val_loss"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("theoretical energy per token, 45 nm (nJ)")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title("Energy vs validation loss")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def encodings_energy_vs_loss(points: Sequence[dict], path: str) -> None:
    """Scatter of energy per token vs validation loss, one marker per model/encoding, legend
    instead of annotations (the encodings' points sit close together)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    cmap = plt.get_cmap("tab10")
    for j, p in enumerate(points):
        ax.scatter(p["energy_pj"] / 1e3, p["val_loss"], s=40, color=cmap(j % 10),
                   marker=p.get("marker", "o"), label=p["name"])
    ax.set_xscale("log")
    ax.set_xlabel("theoretical energy per token, 45 nm (nJ)")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title("Spike encodings: energy vs validation loss")
    ax.grid(True, which="both", color="0.9", lw=0.5)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
