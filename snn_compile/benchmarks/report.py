"""report.md + results.json + PNG plots, written into one folder atomically.

Everything is written into a fresh temporary folder next to ``out``; only when
every file is complete does that folder replace ``out`` (rename), so a failure
half-way leaves neither a half-written report nor a mix of old and new files.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from typing import Callable, Dict, List, Optional

import numpy as np

from snn_compile.errors import UserError, check_folder_writable, dir_mode

OUR_FILES = ("report.md", "results.json")


def to_jsonable(obj):
    """numpy → Python; NaN/inf → None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    return obj


def check_output_dir(out: str, what: str = "--out") -> str:
    """Refuse, before any work starts, a report folder that cannot be written.

    ``out`` may not exist yet (its parent must be a writable folder), or must be a
    folder this module wrote before (it holds results.json) or an empty one; a file, or a
    folder with other content, is refused rather than replaced. Returns the absolute path.
    """
    out = os.path.abspath(os.fspath(out))
    check_folder_writable(os.path.dirname(out), out, what)
    if os.path.exists(out):
        if not os.path.isdir(out):
            raise UserError(f"{what} {out} is a file; give a folder path")
        content = os.listdir(out)
        if content and "results.json" not in content:
            raise UserError(f"{what} {out} holds files that are not a benchmark report; "
                            "give an empty or new folder")
    return out


@contextlib.contextmanager
def atomic_dir(out: str):
    """Yield a temporary folder; on success it replaces ``out``, on failure it is removed.

    See ``check_output_dir`` for what ``out`` may be. The folder gets the mode the
    umask gives. Two processes writing one ``out`` each write their own temporary
    folder; the last complete one to be renamed into place wins, and neither ever
    removes the other's temporary folder.
    """
    out = check_output_dir(out)
    parent = os.path.dirname(out)
    tmp = tempfile.mkdtemp(dir=parent, prefix="." + os.path.basename(out) + ".")
    try:
        os.chmod(tmp, dir_mode())
        yield tmp
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_dir(tmp: str, out: str) -> None:
    """Rename the complete folder ``tmp`` to ``out``, moving a previous ``out`` aside first.

    A folder cannot be renamed over a non-empty one, so an existing report is first
    renamed to a fresh name of ours and removed from there; if another process moved
    it meanwhile, the rename is simply tried again.
    """
    parent, base = os.path.dirname(out), os.path.basename(out)
    for _ in range(1000):
        try:
            os.replace(tmp, out)           # ``out`` absent or an empty folder
            return
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        old = tempfile.mkdtemp(dir=parent, prefix="." + base + ".old.")
        try:
            os.replace(out, old)           # the previous report, now under our own name
        except FileNotFoundError:          # another writer moved it away first
            os.rmdir(old)
            continue
        except OSError as e:
            os.rmdir(old)
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):    # raced: retry
                continue
            raise
        shutil.rmtree(old, ignore_errors=True)
    raise UserError(f"could not replace {out}: other processes keep writing it; run one "
                    "benchmark per --out folder")


# ----------------------------------------------------------------- markdown
def _fmt(x, nd=1) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        if abs(x) >= 1e4 or (0 < abs(x) < 1e-2):
            return f"{x:.3g}"
        return f"{x:.{nd}f}"
    return str(x)


def _table(header: List[str], rows: List[List]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_fmt(c) if not isinstance(c, str) else c for c in r) + " |"
            for r in rows]
    return "\n".join(out)


def markdown(r: dict, plots: Dict[str, str]) -> str:
    """The report text: headline, per-layer, Loihi, variants, constants, assumptions."""
    e = r["energy_per_token_pj"]
    snn, ann = e.get("spikedecoder", {}), e.get("ann", {})
    lo, hi = r["paper_reduction_pct"]
    s = ["# Energy per token: SpikeDecoder vs ANN twin", ""]
    s.append(f"Backend **{r['backend']}**, {r['tokens']} tokens ({r['mode']}), "
             f"spikes measured == integer reference: **{r['spikes_match_reference']}**.")
    s.append("")
    s.append("## Headline (theoretical, 45 nm, fp32)")
    s.append("")
    vl = r.get("val_loss", {})
    s.append(_table(
        ["model", "energy / token (nJ)", "val loss (nats/token)", "reduction vs ANN",
         "paper's claim"],
        [["SpikeDecoder", _fmt(snn.get("theoretical_45nm", 0) / 1e3, 2),
          _fmt(vl.get("spikedecoder"), 4), f"{_fmt(r['reduction_pct'])} %", f"{lo:g}–{hi:g} %"],
         ["ANN twin", _fmt(ann.get("theoretical_45nm", 0) / 1e3, 2), _fmt(vl.get("ann"), 4),
          "—", "—"]]))
    if r.get("ci95"):
        s += ["", "95 % confidence intervals of the mean over tokens (normal approximation): "
              + ", ".join(f"{k}: [{_fmt(a / 1e3, 3)}, {_fmt(b / 1e3, 3)}] nJ"
                          for k, (a, b) in r["ci95"].items())]
    s += ["", "## All energy views (pJ per token)", ""]
    rows = []
    for model, views in e.items():
        for view, val in views.items():
            rows.append([model, view, _fmt(val)])
    s.append(_table(["model", "view", "pJ / token"], rows))
    if r.get("ratio_measured_over_theoretical") is not None:
        s += ["", f"Ratio Loihi estimate (measured counts) / 45 nm theoretical SNN energy: "
              f"**{_fmt(r['ratio_measured_over_theoretical'], 2)}**."]
    s += ["", "## Per layer (pJ per token)", ""]
    views = list(r["per_layer_pj"])
    layers: List[str] = []
    for v in views:
        for layer in r["per_layer_pj"][v]:
            if layer not in layers:
                layers.append(layer)
    s.append(_table(["layer"] + views,
                    [[layer] + [_fmt(r["per_layer_pj"][v].get(layer)) for v in views]
                     for layer in layers]))
    if r.get("measured"):
        m = r["measured"]
        s += ["", "## Measured on the simulator (per token)", ""]
        s.append(_table(["population", "spikes / outputs", "synops", "messages",
                         "neuron updates", "Loihi pJ"],
                        [[p["population"], _fmt(p["outputs"]), _fmt(p["synops"]),
                          _fmt(p["messages"]), _fmt(p["neuron_updates"]), _fmt(p["loihi_pj"])]
                         for p in m["per_population"]]))
    if r.get("variants"):
        s += ["", "## Partially spiking variants (theoretical, 45 nm)", ""]
        s.append(_table(["variant", "spiking blocks", "energy / token (nJ)", "reduction vs ANN",
                         "val loss"],
                        [[v["name"], v.get("spiking", ""), _fmt(v["energy_pj"] / 1e3, 2),
                          f"{_fmt(v.get('reduction_pct'))} %", _fmt(v.get("val_loss"), 4)]
                         for v in r["variants"]]))
    if r.get("encodings"):
        s += ["", "## Spike encodings of the ANN twin", ""]
        keys = list(r["encodings"][0])
        s.append(_table(keys, [[row.get(k) for k in keys] for row in r["encodings"]]))
    if r.get("gpu"):
        g = r["gpu"]
        s += ["", "## GPU reference (NVML energy counter)", "", f"From `{g.get('file')}`: "
              + ", ".join(f"{k}: {_fmt(v.get('joules_per_token'), 4)} J/token, "
                          f"{_fmt(v.get('tokens_per_s'))} tokens/s"
                          for k, v in g.get("models", {}).items())]
    s += ["", "## Plots", ""]
    s += [f"![{k}]({v})" for k, v in plots.items()]
    s += ["", "## Constants", ""]
    s.append(_table(["name", "value", "unit", "source", "covers"],
                    [[c["name"], _fmt(c["value"]), c["unit"], c["source"], c["covers"]]
                     for c in r["constants"]]))
    s += ["", "## Assumptions", ""]
    s += [f"- {a}" for a in r["assumptions"]]
    s.append("")
    return "\n".join(s)


def write_bundle(out: str, results: dict, markdown_text: str,
                 plot_fns: Optional[Dict[str, Callable[[str], None]]] = None,
                 markdown_name: str = "report.md") -> str:
    """results.json, a Markdown file and the plots (name → writer(path)), atomically."""
    with atomic_dir(out) as tmp:
        for name, fn in (plot_fns or {}).items():
            fn(os.path.join(tmp, name))
        with open(os.path.join(tmp, "results.json"), "w") as f:
            json.dump(to_jsonable(results), f, indent=1, allow_nan=False)
        with open(os.path.join(tmp, markdown_name), "w") as f:
            f.write(markdown_text)
    return os.path.abspath(out)


def write_report(results: dict, out: str,
                 plot_fns: Optional[Dict[str, Callable[[str], None]]] = None) -> str:
    """Write the benchmark's report.md, results.json and plots atomically."""
    plot_fns = plot_fns or {}
    plots = {name.rsplit(".", 1)[0]: name for name in plot_fns}
    results = dict(results, plots=sorted(plots.values()))
    return write_bundle(out, results, markdown(results, plots), plot_fns)
