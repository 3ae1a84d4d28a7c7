"""report.md + results.json + PNG plots, written into one folder atomically.

Everything is written into a fresh temporary folder next to ``out``; only when
every file is complete does that folder replace ``out`` (rename), so a failure
half-way leaves neither a half-written report nor a mix of old and new files.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import tempfile
from typing import Callable, Dict, List, Optional

import numpy as np

from snn_compile.errors import UserError, check_folder_writable, dir_mode

OUR_FILES = ("report.md", "results.json")


def to_jsonable(obj):
    """numpy scalars/arrays, paths, tuples and sets -> JSON types; NaN/inf -> None (strict
    JSON); anything else is a ``TypeError``."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


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


def _nj(pj) -> str:
    """pJ -> nJ, formatted (one unit in every energy table of the report)."""
    return "n/a" if pj is None else f"{pj / 1e3:,.1f}" if abs(pj) >= 1e4 else f"{pj / 1e3:.3g}"


VIEW_ORDER = ["theoretical_45nm", "theoretical_45nm_with_extras", "equal_precision_45nm",
              "executed_45nm", "loihi_low", "loihi_estimate", "loihi_high",
              "loihi_prefill_low", "loihi_prefill_high"]


def markdown(r: dict, plots: Dict[str, str]) -> str:
    """The report text: every view with the loss of the same text, chip time, headroom,
    per layer and population, step counts, sensitivity, constants, caveats."""
    e = r["energy_per_token_pj"]
    lo, hi = r["paper_reduction_pct"]
    tl = r.get("text_loss") or {}
    ci = r.get("ci95") or {}
    s = ["# Energy per token: SpikeDecoder vs ANN twin", ""]
    s.append(f"Backend **{r['backend']}**, {r['tokens']} tokens of the {r.get('text', 'text')} "
             f"({r['mode']}); spikes measured == integer reference: "
             f"**{r['spikes_match_reference']}**; step counts (messages, synops at every window "
             f"step) == the reference's: **{r.get('counts_match_reference_every_step', 'n/a')}**.")
    s += ["", "## Every view (nJ per token), with the loss of the same text", ""]
    n_pred = tl.get("tokens_predicted")
    s.append(f"Loss: cross-entropy (nats/token) of the next token on the same {r['tokens']} "
             f"tokens whose energy is measured ({n_pred} predictions); SpikeDecoder "
             "float model / deployed integer graph, and the ANN twin.")
    s.append("")
    rows = []
    views = r.get("views", {})
    for model in e:
        for view in VIEW_ORDER + [v for v in e[model] if v not in VIEW_ORDER]:
            if view not in e[model]:
                continue
            c = ci.get(f"{model}:{view}")
            if model == "spikedecoder":
                loss = (f"{_fmt(tl.get('spikedecoder'), 4)} / "
                        f"{_fmt(tl.get('spikedecoder_deployed'), 4)}")
            else:
                loss = _fmt(tl.get("ann"), 4)
            rows.append([model, f"`{view}`", _nj(e[model][view]),
                         f"{_nj(c[0])}–{_nj(c[1])}" if c else "", loss,
                         views.get(view, "")])
    s.append(_table(["model", "view", "nJ / token", "95 % CI", "loss, same text", "what it is"],
                    rows))
    s += ["", f"Reduction vs the ANN twin: **{_fmt(r['reduction_pct'])} %** in the literature's "
          f"fp32 view (paper: {lo:g}–{hi:g} %), **"
          f"{_fmt(r.get('reduction_pct_equal_precision'))} %** at equal precision (int8 ANN "
          f"against the integer SNN). 45 nm attention form: "
          f"{r.get('attention_form_45nm') or 'n/a'}; the executed and Loihi views count the "
          "linear, streamed form at every window step."]
    vl = r.get("val_loss") or {}
    if vl:
        s += ["", f"Validation loss on the first {r.get('val_loss_tokens', 'n/a')} validation "
              "tokens (a different, longer text; not the one above): "
              + ", ".join(f"{k} {_fmt(v, 4)}" for k, v in vl.items()) + "."]
    ct = r.get("chip_time_per_token_s")
    if ct:
        st = r.get("static_energy_per_token_pj", {})
        chip = r.get("chip", {})
        s += ["", "## Chip time and static energy per token (Loihi, bounds)", ""]
        s.append(_table(
            ["mode", "steps / token", "chip time low–high (µs)", "static energy low–high (nJ)"],
            [[m, str(chip.get("steps_per_token", {}).get(m, "")),
              f"{ct[m][0] * 1e6:.3g}–{ct[m][1] * 1e6:.3g}",
              f"{_nj(st.get(m, {}).get('low'))}–{_nj(st.get(m, {}).get('high'))}"]
             for m in ("generation", "prefill")]))
        s += ["", f"Generation runs a token's whole window (T + depth steps); a pipelined prompt "
              f"(prefill) takes T steps per token. Bounds from Table 2's latencies: low = "
              f"{chip.get('cores_low')} Loihi 1 cores of ≤ 1024 neurons, idle/active update "
              f"times, 113 ns barrier; high = the {chip.get('cores')}-core Loihi 2 partition, "
              "every update at 8.4 ns, synops at 3.5 ns, 465 ns barrier. Tile hops: "
              + ", ".join(f"{k} {_fmt(v, 2)}" for k, v in r.get("tile_hops", {}).items()) + "."]
    if r.get("headroom"):
        s += ["", "## Range headroom (measured on this text; < 1 fits)", ""]
        s.append("Dendrite: worst |input| of a LIF over 2^15 (Loihi 2's 16-bit dendritic "
                 "accumulator; Lava's simulator sums in int32 and would not notice); state: "
                 "worst |u|, |v| or graded payload over 2^23 (24 bits); worst case: the same "
                 "from the weights alone (every input at once).")
        s.append("")
        s.append(_table(["population", "kind", "dendrite", "state", "worst case (dendrite)",
                         "fits"],
                        [[n, h["kind"], _fmt(h.get("dendrite"), 3), _fmt(h.get("state"), 3),
                          _fmt(h.get("dendrite_bound"), 3), str(h["fits"])]
                         for n, h in r["headroom"].items()]))
        if r.get("saturation"):
            s += ["", "**Saturation:** " + "; ".join(r["saturation"])]
    s += ["", "## Per layer (nJ per token)", "", "Also in `per_layer.csv`.", ""]
    views_l = list(r["per_layer_pj"])
    layers = _layers(r)
    s.append(_table(["layer"] + views_l,
                    [[layer] + [_nj(r["per_layer_pj"][v].get(layer)) for v in views_l]
                     for layer in layers]))
    if r.get("measured"):
        m = r["measured"]
        s += ["", "## Executed on the backend, per population (per token, every window step)",
              "", "Drain: the steps of the window outside the population's T token steps "
              "(the attention memory sends at every step). Loihi columns: dynamic energy, "
              "low–high.", ""]
        s.append(_table(["population", "kind", "outputs (drain)", "binary synops",
                         "graded synops", "messages (drain)", "payload bits",
                         "updates active / idle", "Loihi nJ low–high"],
                        [[p["population"], p["kind"],
                          f"{_fmt(p['outputs'])} ({_fmt(p.get('outputs_drain'))})",
                          _fmt(p.get("synops_binary")), _fmt(p.get("synops_graded")),
                          f"{_fmt(p['messages'])} ({_fmt(p.get('messages_drain'))})",
                          _fmt(p.get("payload_bits")),
                          f"{_fmt(p.get('active_updates'))} / {_fmt(p.get('idle'))}",
                          f"{_nj(p.get('loihi_low_pj'))}–{_nj(p.get('loihi_high_pj'))}"]
                         for p in m["per_population"]]))
        t = m["totals_per_token"]
        s += ["", "Totals per token: " + ", ".join(f"{k} {_fmt(v)}" for k, v in t.items())]
    st = r.get("steps", {}).get("graph_per_step")
    if st:
        s += ["", "## Whole graph at each window step (mean per token)", ""]
        keys = list(st)
        s.append(_table(["step"] + keys, [[str(i)] + [_fmt(st[k][i]) for k in keys]
                                          for i in range(len(st[keys[0]]))]))
    if r.get("sensitivity"):
        s += ["", "## Sensitivity: which constant moves the result most", "",
              "One constant at a time from its low to its high value, the others central.", ""]
        rows = []
        for x in r["sensitivity"]:
            if "result_low_pj" in x:
                rows.append([x["view"], x["constant"], _fmt(x["low"], 3), _fmt(x["high"], 3),
                             f"{_nj(x['result_low_pj'])} → {_nj(x['result_high_pj'])} nJ",
                             f"{_fmt(x['swing_pct'])} %", x["note"]])
            else:
                rows.append([x["view"], x["constant"], _fmt(x["low"], 3), _fmt(x["high"], 3),
                             f"{_fmt(x['result_low_pct'])} → {_fmt(x['result_high_pct'])} %",
                             f"{_fmt(x['swing_pct_points'])} points", x["note"]])
        s.append(_table(["view", "constant", "low", "high", "result", "swing", "note"], rows))
    if r.get("variants"):
        s += ["", "## Partially spiking variants (theoretical, 45 nm)", ""]
        s.append(_table(["variant", "spiking blocks", "energy / token (nJ)", "reduction vs ANN",
                         "val loss"],
                        [[v["name"], v.get("spiking", ""), _nj(v["energy_pj"]),
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
    s.append(_table(["name", "value", "unit", "basis", "source", "covers"],
                    [[c["name"], _fmt(c["value"], 3), c["unit"], c.get("basis", ""),
                      c["source"], c["covers"]] for c in r["constants"]]))
    if r.get("caveats"):
        s += ["", "## Caveats", ""]
        s += [f"- {a}" for a in r["caveats"]]
    s += ["", "## Assumptions", ""]
    s += [f"- {a}" for a in r["assumptions"]]
    s.append("")
    return "\n".join(s)


def _layers(r: dict) -> List[str]:
    """The layers of ``r["per_layer_pj"]`` over all views, in first-seen order."""
    return list(dict.fromkeys(layer for v in r["per_layer_pj"].values() for layer in v))


def per_layer_csv(r: dict) -> str:
    """The per-layer table as CSV: one row per layer, one column per view, nJ per token."""
    import csv
    import io

    views = list(r["per_layer_pj"])
    layers = _layers(r)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["layer"] + [f"{v} (nJ/token)" for v in views])
    for layer in layers:
        w.writerow([layer] + ["" if r["per_layer_pj"][v].get(layer) is None
                              else f"{r['per_layer_pj'][v][layer] / 1e3:.6g}" for v in views])
    return buf.getvalue()


def write_bundle(out: str, results: dict, markdown_text: str,
                 plot_fns: Optional[Dict[str, Callable[[str], None]]] = None,
                 markdown_name: str = "report.md",
                 extra_files: Optional[Dict[str, str]] = None) -> str:
    """results.json, a Markdown file, the plots (name → writer(path)) and text files
    (name → content), atomically."""
    with atomic_dir(out) as tmp:
        for name, fn in (plot_fns or {}).items():
            fn(os.path.join(tmp, name))
        for name, text in (extra_files or {}).items():
            with open(os.path.join(tmp, name), "w") as f:
                f.write(text)
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
    extra = {"per_layer.csv": per_layer_csv(results)} if results.get("per_layer_pj") else {}
    return write_bundle(out, results, markdown(results, plots), plot_fns, extra_files=extra)
