"""PNG plots of a benchmark's results (matplotlib, Agg backend).

Each function takes the plain ``results`` dict of ``harness.run_benchmark``
(plus, for the raster, one token's spike trains) and writes one file.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from snn_compile.compiler.qgraph import graded_kinds


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


VIEW_TITLES = {
    "snn:theoretical_45nm": "SpikeDecoder, 45 nm fp32 (literature)",
    "ann:theoretical_45nm": "ANN twin, 45 nm fp32 (literature)",
    "snn:equal_precision_45nm": "SpikeDecoder, 45 nm equal precision",
    "ann:equal_precision_45nm": "ANN twin, 45 nm int8",
    "snn:executed_45nm": "SpikeDecoder, executed ops, 45 nm int",
    "snn:loihi_low": "SpikeDecoder, Loihi low",
    "snn:loihi_estimate": "SpikeDecoder, Loihi central",
    "snn:loihi_high": "SpikeDecoder, Loihi high",
}


def _nice(pj: float) -> str:
    """A value in pJ with the unit that keeps it readable (pJ, nJ, uJ)."""
    a = abs(pj)
    if a >= 1e6:
        return f"{pj / 1e6:.3g} \u00b5J"
    if a >= 1e3:
        return f"{pj / 1e3:.3g} nJ"
    return f"{pj:.3g} pJ"


def _plain_log_ticks(ax) -> None:
    """Log-axis tick labels as plain numbers (200, 300) rather than 2 x 10^2."""
    from matplotlib.ticker import FuncFormatter

    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(fmt)
    ax.xaxis.set_minor_formatter(fmt)
    ax.tick_params(axis="x", which="minor", labelsize=7)


def energy_by_layer(results: dict, path: str) -> None:
    """One panel per energy view: energy per token of each layer, horizontal bars on a
    linear axis (nJ), the layer's share of the view's total written beside each bar.
    Panels have their own scales: the views differ by orders of magnitude, and a log axis
    would distort shares."""
    plt = _plt()
    views = [(k, v) for k, v in results["per_layer_pj"].items() if v]
    layers: list = []
    for _, v in views:
        for layer in v:
            if layer not in layers:
                layers.append(layer)
    cols = 2 if len(views) > 1 else 1
    nrows = int(np.ceil(len(views) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(12, 0.32 * len(layers) * nrows + 1.2 * nrows),
                             squeeze=False)
    y = np.arange(len(layers))
    for ax, (key, v) in zip(axes.flat, views):
        vals = np.array([v.get(layer, 0.0) for layer in layers]) / 1e3
        tot_pj = vals.sum() * 1e3
        unit = "\u00b5J" if vals.max(initial=0) >= 1e4 else "nJ"
        if unit != "nJ":
            vals = vals / 1e3
        tot = vals.sum()
        ax.barh(y, vals, color="tab:blue" if key.startswith("snn") else "tab:gray")
        for yi, x in zip(y, vals):
            if x > 0:
                ax.text(x, yi, f" {100 * x / tot:.0f} %" if tot else "", va="center", fontsize=8)
        ax.set_yticks(y, layers, fontsize=9)
        ax.invert_yaxis()
        ax.set_xlim(0, max(vals.max(initial=0) * 1.25, 1e-9))
        ax.set_xlabel(f"{unit} per token", fontsize=9)
        ax.set_title(f"{VIEW_TITLES.get(key, key)}: {_nice(tot_pj)}", fontsize=10)
    for ax in list(axes.flat)[len(views):]:
        ax.axis("off")
    fig.suptitle("Energy per token by layer, one panel per view (linear axes, own scales)",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _ops_by_name(rows, key: str) -> dict:
    """Sum a per-op table over layers by operation name (block0.qkv + block1.qkv -> qkv)."""
    out: dict = {}
    for r in rows:
        if r["kind"] == "extra":
            continue
        label = r["op"] + (f" ({r['form']})" if r.get("form") else "")
        out[label] = out.get(label, 0.0) + r.get(key, 0.0)
    return out


def energy_by_op(results: dict, path: str) -> None:
    """Energy per token by operation (summed over the blocks), SNN and ANN, in both 45 nm
    views (fp32 as the literature, and equal precision), horizontal bars, linear axes."""
    plt = _plt()
    groups = [("SpikeDecoder (float model's spikes)", results["per_op"]["snn_theoretical"]),
              ("ANN twin", results["per_op"]["ann_theoretical"])]
    n = max(len(_ops_by_name(g[1], "energy_pj_per_token")) for g in groups)
    fig, axes = plt.subplots(1, 2, figsize=(13, max(3.5, 0.38 * n + 1.5)))
    for ax, (title, rows) in zip(axes, groups):
        fp = _ops_by_name(rows, "energy_pj_per_token")
        eq = _ops_by_name(rows, "energy_pj_per_token_equal_precision")
        names = sorted(fp, key=lambda k: -fp[k])
        y = np.arange(len(names))
        ax.barh(y - 0.2, [fp[k] / 1e3 for k in names], 0.4, label="45 nm fp32 (literature)",
                color="tab:blue")
        ax.barh(y + 0.2, [eq.get(k, 0.0) / 1e3 for k in names], 0.4,
                label="45 nm equal precision", color="tab:orange")
        ax.set_yticks(y, names, fontsize=9)
        ax.invert_yaxis()
        ax.set_xlabel("nJ per token")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("Energy per token by operation, summed over blocks", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def energy_views(results: dict, path: str) -> None:
    """Every view's energy per token, one marker each on a log axis (points, not bars),
    with the Loihi low-high range as a line."""
    plt = _plt()
    e = results["energy_per_token_pj"]
    rows = []
    for model, views in e.items():
        for view, v in views.items():
            if view.endswith("_high") or view.endswith("_low"):
                continue
            rows.append((f"{model}: {view}", v, None))
    snn = e.get("spikedecoder", {})
    for pre in ("loihi", "loihi_prefill"):
        lo, hi = snn.get(f"{pre}_low"), snn.get(f"{pre}_high")
        if lo is not None and hi is not None:
            rows.append((f"spikedecoder: {pre} (low-high)", (lo * hi) ** 0.5, (lo, hi)))
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.5))
    for i, (name, v, rng) in enumerate(rows):
        if rng:
            ax.plot([rng[0] / 1e3, rng[1] / 1e3], [i, i], color="tab:red", lw=3)
            ax.text(rng[1] / 1e3, i, f"  {_nice(rng[0])} - {_nice(rng[1])}", va="center",
                    fontsize=8)
        else:
            ax.plot(v / 1e3, i, "o", color="tab:blue" if "spike" in name else "tab:gray")
            ax.text(v / 1e3, i, f"  {_nice(v)}", va="center", fontsize=8)
    ax.set_yticks(np.arange(len(rows)), [r[0] for r in rows], fontsize=9)
    ax.invert_yaxis()
    ax.set_xscale("log")
    vals = [x for _, v, rng in rows for x in ((v,) if rng is None else rng)]
    ax.set_xlim(min(vals) / 1e3 / 2, max(vals) / 1e3 * 8)
    ax.set_xlabel("energy per token (nJ, log scale)")
    ax.set_title("Energy per token, every view side by side")
    ax.grid(True, axis="x", which="both", color="0.9", lw=0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def spike_rates(results: dict, path: str) -> None:
    """Grouped bars: firing probability per population (torch float vs measured integer)."""
    plt = _plt()
    rates = results["spike_rates"]
    names = list(rates.get("measured") or rates.get("torch") or {})
    fig, ax = plt.subplots(figsize=(max(7, 0.3 * len(names) + 2), 4.5))
    x = np.arange(len(names))
    series = [(k, v) for k, v in rates.items() if v]
    w = 0.8 / max(1, len(series))
    for j, (label, r) in enumerate(series):
        ax.bar(x + (j - (len(series) - 1) / 2) * w, [r.get(n, np.nan) for n in names], w,
               label=label)
    ax.set_xticks(x, names, rotation=70, ha="right", fontsize=8)
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


def window_raster(raster: dict, path: str, title: str = "") -> None:
    """One token through every population at every step of its window (simulator frames).

    ``raster``: ``frames`` {population: (W, size)}, ``order``, ``depth``, ``kind``,
    ``window`` W, ``steps_per_token`` T. Each population is one band of equal height
    (neurons scaled into it, its size in the label); a mark is a spike (black) or a non-zero
    graded message (blue); the population's token steps, (s - depth) mod W < T, are shaded,
    the rest of the window is its pipeline fill/drain."""
    plt = _plt()
    order = [n for n in raster["order"] if n in raster["frames"]]
    W, T = raster["window"], raster["steps_per_token"]
    fig, ax = plt.subplots(figsize=(11, max(6, 0.28 * len(order) + 1.5)))
    for b, name in enumerate(order):
        a = np.asarray(raster["frames"][name])            # (W, size)
        size = a.shape[1]
        d = raster["depth"][name]
        tok = ((np.arange(W) - d) % W) < T
        for sidx in np.nonzero(tok)[0]:
            ax.fill_between([sidx - 0.5, sidx + 0.5], b, b + 1, color="#fff2cc", lw=0, zorder=0)
        st, i = np.nonzero(a)
        graded = raster["kind"][name] in graded_kinds()
        ax.scatter(st, b + 0.05 + 0.9 * (i + 0.5) / size, s=2, marker="|",
                   color="tab:blue" if graded else "black", lw=0.6, zorder=2)
        ax.axhline(b, color="0.8", lw=0.4)
    ax.set_yticks(np.arange(len(order)) + 0.5,
                  [f"{n} ({np.asarray(raster['frames'][n]).shape[1]})" for n in order],
                  fontsize=7)
    ax.set_ylim(len(order), 0)
    ax.set_xlim(-0.5, W - 0.5)
    ax.set_xlabel(f"step of the token's window (0..{W - 1}; shaded: the population's "
                  f"{T} token steps; black: spikes, blue: graded messages)")
    ax.set_title(title or "One token through every population")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def distinct_labels(names: Sequence[str], details: Sequence[str] = ()) -> list:
    """Labels that differ: a repeated name gets its detail (e.g. its training settings)
    appended, then a running number if it still repeats."""
    names = list(names)
    det = list(details) + [""] * (len(names) - len(details))
    out = [n if names.count(n) == 1 or not det[i] else f"{n}, {det[i]}"
           for i, n in enumerate(names)]
    counts = {n: out.count(n) for n in out}
    seen: dict = {}
    for i, n in enumerate(list(out)):
        if counts[n] > 1:
            seen[n] = seen.get(n, 0) + 1
            out[i] = f"{n} #{seen[n]}"
    return out


def energy_vs_loss(points: Sequence[dict], path: str,
                   loss_label: str = "validation loss (nats/token)") -> None:
    """Scatter: 45 nm energy per token vs loss; each point numbered on the plot, its
    (distinct) label in the legend, so that close points never overprint."""
    plt = _plt()
    labels = distinct_labels([p["name"] for p in points], [p.get("detail", "") for p in points])
    fig, ax = plt.subplots(figsize=(10, 4.8))
    cmap = plt.get_cmap("tab10")
    markers = "osD^v<>pPX*h"
    for j, (p, lab) in enumerate(zip(points, labels)):
        x, yv = p["energy_pj"] / 1e3, p["val_loss"]
        ax.scatter(x, yv, s=45, color=cmap(j % 10), marker=markers[j % len(markers)],
                   label=f"{j + 1}: {lab}")
        ax.annotate(str(j + 1), (x, yv), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    _plain_log_ticks(ax)
    ax.set_xlabel("energy per token, 45 nm fp32 view (nJ, log scale)")
    ax.set_ylabel(loss_label)
    ax.set_title("Energy vs loss")
    ax.grid(True, which="both", color="0.9", lw=0.5)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
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
