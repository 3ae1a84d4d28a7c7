"""The benchmark: energy per token from measured spikes vs theoretical energy.

``run_benchmark`` feeds the same token sequences (teacher-forced: the text's
tokens, not the model's predictions, so that every backend and both models see
identical inputs) through

* the float torch model (``FoldedDecoder.forward``) → firing rates → SNN SOPs;
* the ANN twin's shape → MACs at the same positions;
* the chosen backend running the quantized graph → measured operation counts;
* the integer reference on the same tokens → the spikes the backend must
  reproduce exactly (``SpikeMismatchError`` otherwise);

and returns one results dict (see ``docs/energy.md``); ``out_dir`` adds
report.md, results.json and plots, written atomically.
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from snn_compile.benchmarks import energy, measure, plots, report, sensitivity, theory, variants
from snn_compile.benchmarks.theory import model_shape
from snn_compile.compiler import resources
from snn_compile.compiler.from_nir import decoder_tokenizer, folded_from_nir, require_decoder
from snn_compile.compiler.pipeline import calibration_tokens
from snn_compile.compiler.quantize import quantize_decoder
from snn_compile.data import check_oov, load_corpus, train_val_split, validation_ids
from snn_compile.errors import UserError
from snn_compile.export.nir_io import read_nir
from snn_compile.hw_sim import probes
from snn_compile.hw_sim.emulator import EmulatorBackend
from snn_compile.hw_sim.int_reference import run_token_time
from snn_compile.hw_sim.lava_runner import LavaBackend
from snn_compile.models.checkpoint import load_checkpoint, load_raw
from snn_compile.models.evaluation import evaluate_with_progress
from snn_compile.models.fold import fold

BACKENDS = ("lava-sim", "emulator", "int")
DEFAULT_TOKENS = 256
PAPER = "Beger, Walter & Knoll, 'SpikeDecoder: Realizing the GPT Architecture with " \
        "Spiking Neural Networks', arXiv:2606.12287"


# ------------------------------------------------------------------- inputs
def token_windows(ids: np.ndarray, tokens: int, context: int) -> List[np.ndarray]:
    """``tokens`` tokens of ``ids`` cut into consecutive windows of at most ``context``.

    Each window is fed from a reset (position 0), so no backend needs the
    context roll-over inside the benchmark.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if tokens < 1:
        raise UserError(f"--tokens must be at least 1, got {tokens}")
    if len(ids) < tokens:
        raise UserError(f"the benchmark text has {len(ids)} tokens, fewer than --tokens "
                        f"{tokens}; give a longer text or fewer tokens")
    ctx = context if context > 0 else tokens
    return [ids[s: min(s + ctx, tokens)] for s in range(0, tokens, ctx)]


def prompt_windows(prompts: Sequence[List[int]], tokens: int, context: int) -> List[np.ndarray]:
    """One window per prompt (truncated to the context) until ``tokens`` are reached."""
    out, n = [], 0
    for p in prompts:
        if n >= tokens:
            break
        w = np.asarray(p[: min(len(p), context or len(p), tokens - n)], dtype=np.int64)
        if len(w):
            out.append(w)
            n += len(w)
    if n < tokens:
        raise UserError(f"the prompts hold {n} tokens, fewer than --tokens {tokens}; add "
                        "prompts or lower --tokens")
    return out


def ci95(x: np.ndarray) -> List[float]:
    """95 % normal interval of the mean of x (tokens treated as independent samples)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size < 2:
        return [float(x.mean()), float(x.mean())]
    h = 1.96 * x.std(ddof=1) / np.sqrt(x.size)
    return [float(x.mean() - h), float(x.mean() + h)]


# ---------------------------------------------------------------- backends
def _reference_outputs(qgraph, seq: np.ndarray) -> Dict[str, np.ndarray]:
    """Token-time outputs of every population from the integer reference."""

    import torch

    return _outputs_of(run_token_time(qgraph, torch.as_tensor(np.asarray(seq), dtype=torch.long)))


def _outputs_of(run) -> Dict[str, np.ndarray]:
    """The per-population (N, T, size) arrays of a reference/backend result."""
    outs = getattr(run, "outputs", run)
    if isinstance(outs, tuple):
        outs = next(o for o in outs if isinstance(o, dict))
    return {k: np.asarray(v) for k, v in outs.items()}


class _MeasuredRun:
    """Runs sequences on a backend with probes; returns token-time outputs per population,
    the counts of every step of every window (``probes.Activity``) and, when asked, the
    frames (W, size) of one token's window through every population."""

    def __init__(self, backend: str, qgraph):
        self.backend, self.qgraph = backend, qgraph
        if backend == "int":
            self._session = None
        elif backend == "emulator":

            self._session = EmulatorBackend(qgraph, probes=True)
        elif backend == "lava-sim":

            self._session = LavaBackend(qgraph, probe=True)
        else:
            raise UserError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")

    def run(self, seq: np.ndarray, ref: Dict[str, np.ndarray],
            on_token: Optional[Callable[[int], None]] = None, keep: Optional[int] = None):
        """(outputs, activity, frames of token ``keep`` or None). ``ref``: the integer
        reference's outputs (the ``int`` backend's measurement)."""

        q, W = self.qgraph, self.qgraph.window
        if self._session is None:
            act = probes.activity_from_token_time(q, ref)
            frames = None if keep is None else {
                n: probes.frames_from_token_time(q, n, ref[n][:keep + 1])[keep]
                for n in q.populations}
            return ref, act, frames
        self._session.reset()
        if self.backend == "lava-sim":
            sess = self._session.session
            sess.keep_window = None if keep is None else len(sess.window_activity) + keep
        for i, t in enumerate(seq):
            self._session.feed(int(t))
            if on_token is not None:
                on_token(i + 1)
        if self.backend == "lava-sim":       # the session records every token it was fed
            outs = _outputs_of(sess.outputs())
            frames = sess.kept_frames if keep is not None else None
            return ({k: v[-len(seq):] for k, v in outs.items()},
                    sess.activity(last=len(seq)), frames)
        emu = self._session.emu
        frames = None
        if keep is not None:
            if emu.engine == "numpy":
                frames = {n: emu._np.recorded_one(n, (keep + 1) * W)[keep * W:, :, 0]
                          for n in q.populations}
            else:
                rec = emu.recorded()
                frames = {n: rec[n][0, keep * W:(keep + 1) * W].cpu().numpy()
                          for n in q.populations}
        return _outputs_of(self._session.probe_outputs()), self._session.activity(), frames

    def close(self) -> None:
        if self._session is not None:
            self._session.close()


# ------------------------------------------------------------------ models
def _torch_spikes(folded, seq: np.ndarray, with_logits: bool = False):
    """Spike trains (N, T, size) per population of the float torch model on one sequence
    (and its logits (N, V) with ``with_logits``)."""
    import torch

    with torch.no_grad():
        out = folded.forward(torch.as_tensor(seq, dtype=torch.long)[None, :])
    spikes = out["spikes"]
    res = {}
    for k, v in spikes.items():
        a = v.detach().cpu().numpy()
        res[k] = a[0] if a.ndim == 4 else a          # drop the batch axis
    if with_logits:
        return res, out["logits"][0].detach().cpu().numpy().astype(np.float64)
    return res


def _ann_logits(model, seq: np.ndarray) -> np.ndarray:
    """Logits (N, V) of a torch decoder (the ANN twin) on one window from a reset."""
    import torch

    was = model.training
    model.eval()
    with torch.no_grad():
        out = model(torch.as_tensor(np.asarray(seq), dtype=torch.long)[None, :], record=True)
    model.train(was)
    logits = out[0] if isinstance(out, tuple) else out
    return logits[0].detach().cpu().numpy().astype(np.float64)


def _cross_entropy(logits: np.ndarray, targets: np.ndarray) -> tuple:
    """(sum of -log softmax(logits)[target], count) over the targets >= 0."""
    m = targets >= 0
    if not m.any():
        return 0.0, 0
    z = logits[m] - logits[m].max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1))
    return float((lse - z[np.arange(int(m.sum())), targets[m]]).sum()), int(m.sum())


VAL_TOKENS = 32768


def _val_loss(model, tok, data: Optional[str], oov: str = "unk",
              progress: Optional[Callable[[int, int], None]] = None) -> Optional[float]:
    """Validation loss on the first VAL_TOKENS tokens of the validation split."""

    val, _ = validation_ids(data, tok, model.cfg.context, oov, VAL_TOKENS)
    return float(evaluate_with_progress(model, val, VAL_TOKENS, progress)["val_loss"])


# ---------------------------------------------------------------- the run
def run_benchmark(snn: str = "default:spikedecoder", ann: Optional[str] = "default:ann", *,
                  backend: str = "lava-sim", tokens: int = DEFAULT_TOKENS,
                  prompts: Optional[str] = None, data: Optional[str] = None,
                  out_dir: Optional[str] = None, qgraph=None, model=None, ann_model=None,
                  mean_hops: float = energy.DEFAULT_MEAN_HOPS,
                  variants: Sequence[str] = (), gpu_results: Optional[str] = None,
                  val_loss: Optional[Dict[str, float]] = None,
                  progress: Optional[Callable[[str, int, int], None]] = None,
                  oov: str = "unk") -> dict:
    """Benchmark a spiking decoder against its ANN twin on one backend; see module doc.

    ``model``/``ann_model``/``qgraph`` may be given directly (tests, sweeps);
    otherwise they are loaded from the checkpoint specs and the graph is
    quantized from the folded model. ``val_loss`` overrides the evaluation
    (model name → loss). ``progress(stage, done, total)`` is called as work goes.
    ``oov`` is the out-of-vocabulary policy for the text (``data.text``).
    """
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    prog = progress or (lambda *a: None)
    t0 = time.perf_counter()

    gpu = _gpu(gpu_results) if gpu_results else None     # inputs read at the end: check now
    for v in variants:
        load_raw(v)

    if model is not None:
        snn_model, tok = model
    elif snn.endswith(".nir"):          # the exported graph itself, rebuilt from NIR nodes
        graph = read_nir(snn)
        require_decoder(graph, snn, "bench")
        snn_model, tok = folded_from_nir(graph), decoder_tokenizer(graph)
    else:
        snn_model, tok, _ = load_checkpoint(snn)
    folded = fold(snn_model)
    if qgraph is None:

        qgraph, _ = quantize_decoder(folded, calibration_tokens(tok, folded.context), tok)
    shape = model_shape(snn_model)
    if shape.steps_per_token != qgraph.steps_per_token:
        raise UserError(f"the model has T={shape.steps_per_token} steps per token but the "
                        f"quantized graph {qgraph.steps_per_token}; compile the same model")
    if ann_model is not None:
        ann_net, ann_tok = ann_model
    elif ann:
        ann_net, ann_tok, _ = load_checkpoint(ann)
    else:
        ann_net, ann_tok = None, None
    ann_shape = model_shape(ann_net) if ann_net is not None else shape

    # ---- the text
    if prompts:
        if not os.path.isfile(prompts):
            raise UserError(f"prompts file {prompts} "
                            f"{'is a folder' if os.path.isdir(prompts) else 'does not exist'}; "
                            "give a text file with one prompt per line")

        lines = [ln for ln in load_corpus(prompts).split("\n") if ln.strip()]
        joined = "\n".join(lines)
        check_oov(tok, joined, tok.encode(joined, strict=False), 0, len(joined), oov,
                  what=f"prompts file {prompts}", use="fed")
        seqs = prompt_windows([tok.encode(ln, strict=False) for ln in lines], tokens,
                              shape.context)
        targets = [np.concatenate([w[1:], [-1]]) for w in seqs]   # within each prompt
        source = f"prompts file {prompts}"
    else:

        text = load_corpus(data)
        ids = np.asarray(tok.encode(text, strict=False), dtype=np.int64)
        _, val = train_val_split(ids)
        seqs = token_windows(val, tokens, shape.context)
        nxt = np.concatenate([val[1:tokens + 1], [-1] * max(0, tokens + 1 - len(val))])
        targets, o = [], 0
        for w in seqs:                      # the next character of the text, as eval does
            targets.append(np.asarray(nxt[o:o + len(w)], np.int64))
            o += len(w)
        start = len(ids) - len(val)
        check_oov(tok, text, ids, start, start + tokens, oov,
                  what=f"corpus file {data}" if data else "the embedded corpus", use="fed")
        source = f"validation split of {data or 'the embedded corpus'}"

    # ---- run every window through torch, the reference and the backend

    if backend == "lava-sim":
        prog("starting lava-sim", 0, 1)
    runner = _MeasuredRun(backend, qgraph)
    if backend == "lava-sim":
        prog("starting lava-sim", 1, 1)
    snn_rows, ann_rows, counts, acts, mism, ranges = [], [], [], [], [], []
    spk_sum: Dict[str, float] = {}
    spk_n: Dict[str, float] = {}
    loss = {"spikedecoder": [0.0, 0], "spikedecoder_deployed": [0.0, 0], "ann": [0.0, 0]}
    raster_frames, raster_token = None, min(len(seqs[0]) - 1, 4)
    same_vocab = ann_net is not None and ann_shape.vocab == shape.vocab
    n_done = 0
    try:
        for si, seq in enumerate(seqs):
            spk, logits_f = _torch_spikes(folded, seq, with_logits=True)
            for k, a in spk.items():
                spk_sum[k] = spk_sum.get(k, 0.0) + float((a != 0).sum())
                spk_n[k] = spk_n.get(k, 0.0) + a.size
            snn_rows.append(theory.snn_op_rows(shape, spk))
            ann_rows.append(theory.ann_op_rows(ann_shape, np.arange(len(seq))))
            ref = _reference_outputs(qgraph, seq)
            meas, act, frames = runner.run(
                seq, ref, lambda i, base=n_done: prog("tokens", base + i, tokens),
                keep=raster_token if si == 0 else None)
            ok, bad = measure.compare_outputs(meas, ref, qgraph.order())
            mism += [f"sequence {si}: {b}" for b in bad]
            if backend != "int":      # the backend's every-step counts vs the reference's
                mism += [f"sequence {si}: {b}" for b in probes.compare_activity(
                    act, probes.activity_from_token_time(qgraph, ref))]
            acts.append(act)
            counts.append(measure.count_operations(qgraph, act))
            ranges.append(resources.measured_ranges(qgraph, ref))
            if si == 0:
                raster_frames = frames
            # loss on the very text whose energy is measured
            tg = targets[si]
            for key, lg in (("spikedecoder", logits_f),
                            ("spikedecoder_deployed", qgraph.logit_scale
                             * np.asarray(meas[qgraph.readout]).sum(axis=1).astype(np.float64)),
                            ("ann", _ann_logits(ann_net, seq) if same_vocab else None)):
                if lg is not None:
                    a, b = _cross_entropy(lg, tg)
                    loss[key][0] += a
                    loss[key][1] += b
            n_done += len(seq)
            prog("tokens", n_done, tokens)
    finally:
        runner.close()
    if mism:
        raise measure.SpikeMismatchError(
            f"spikes or step counts measured on {backend} differ from the integer reference:"
            "\n  " + "\n  ".join(mism[:20]))

    snn_all = theory.concat_rows(snn_rows)
    ann_all = theory.concat_rows(ann_rows)
    cnt_all = measure.concat_counts(counts)
    act_all = probes.Activity.concat(acts)
    res_rep = resources.resource_report(qgraph)
    chip = measure.chip_time(qgraph, act_all, res_rep["partition"])
    n_cores, n_chips = res_rep["totals"]["neurocores"], res_rep["totals"]["chips"]
    high_hops = max(mean_hops, energy.random_placement_hops(n_cores))
    lo_p, hi_p = energy.loihi_low_prices(), energy.loihi_high_prices(high_hops)

    e_snn = theory.per_token_energy(snn_all)
    e_ann = theory.per_token_energy(ann_all)
    e_ann_x = theory.per_token_energy(ann_all, include_extras=True)
    e_snn_eq = theory.per_token_energy(snn_all, view="equal_precision_45nm", side="snn")
    e_ann_eq = theory.per_token_energy(ann_all, view="equal_precision_45nm", side="ann")
    e_exec = measure.executed_per_token(cnt_all)
    gl, gh = chip["generation_per_token_s"]["low"], chip["generation_per_token_s"]["high"]
    cores = (chip["cores_low"], n_cores, n_chips)
    st_gen = sensitivity.static_energy_pj(float(gl.mean()), float(gh.mean()), *cores)
    st_pre = sensitivity.static_energy_pj(*chip["prefill_s"], *cores)
    per_tok_static = sensitivity.static_energy_pj(gl, gh, *cores)
    e_loihi = measure.loihi_per_token(cnt_all, mean_hops) + per_tok_static["central"]
    e_low = measure.loihi_per_token(cnt_all, prices=lo_p) + per_tok_static["low"]
    e_high = measure.loihi_per_token(cnt_all, prices=hi_p) + per_tok_static["high"]
    e_pre_low = measure.loihi_per_token(cnt_all, prices=lo_p, steps="token") + st_pre["low"]
    e_pre_high = measure.loihi_per_token(cnt_all, prices=hi_p, steps="token") + st_pre["high"]
    msum = measure.summary(cnt_all, mean_hops, high_hops)
    measured_rng = resources.merge_measured(ranges)
    head = resources.headroom(qgraph, measured_rng, resources.range_report(qgraph))

    # ---- accuracy: energy without accuracy is meaningless
    vl = dict(val_loss or {})
    if "spikedecoder" not in vl:
        vl["spikedecoder"] = _val_loss(snn_model, tok, data, oov,
                                       lambda d, t: prog("validation loss, SpikeDecoder", d, t))
    if ann_net is not None and "ann" not in vl:
        vl["ann"] = _val_loss(ann_net, ann_tok, data, oov,
                              lambda d, t: prog("validation loss, ANN twin", d, t))
    text_loss = {k: (v[0] / v[1] if v[1] else None) for k, v in loss.items()}
    text_loss["tokens_predicted"] = loss["spikedecoder"][1]

    lif = [n for n in qgraph.order() if qgraph.pop(n).kind == "lif"]
    views = {"spikedecoder": {"theoretical_45nm": e_snn, "equal_precision_45nm": e_snn_eq,
                              "executed_45nm": e_exec, "loihi_low": e_low,
                              "loihi_estimate": e_loihi, "loihi_high": e_high,
                              "loihi_prefill_low": e_pre_low,
                              "loihi_prefill_high": e_pre_high},
             "ann": {"theoretical_45nm": e_ann, "theoretical_45nm_with_extras": e_ann_x,
                     "equal_precision_45nm": e_ann_eq}}
    results = {
        "backend": backend, "tokens": int(sum(len(s) for s in seqs)),
        "sequences": len(seqs), "mode": "teacher-forced", "text": source,
        "models": {"spikedecoder": {"spec": snn if model is None else "<in memory>",
                                    "shape": theory.shape_dict(shape)},
                   "ann": {"spec": ann if ann_model is None else "<in memory>",
                           "shape": theory.shape_dict(ann_shape)}},
        "energy_per_token_pj": {m: {k: float(v.mean()) for k, v in vs.items()}
                                for m, vs in views.items()},
        "views": VIEWS,
        "reduction_pct": energy.reduction_pct(float(e_snn.mean()), float(e_ann.mean())),
        "reduction_pct_equal_precision": energy.reduction_pct(float(e_snn_eq.mean()),
                                                              float(e_ann_eq.mean())),
        "paper_reduction_pct": list(energy.PAPER_REDUCTION_PCT), "paper": PAPER,
        "attention_form_45nm": theory.attention_form(snn_all),
        "ratio_measured_over_theoretical": float(e_loihi.mean() / e_snn.mean()),
        "chip_time_per_token_s": {"generation": chip["generation_s"],
                                  "prefill": chip["prefill_s"]},
        "chip": {k: v for k, v in chip.items() if k != "generation_per_token_s"},
        "static_energy_per_token_pj": {"generation": st_gen, "prefill": st_pre},
        "tile_hops": {"low": 0.0, "central": mean_hops, "high": high_hops},
        "dendrite_headroom": {n: h["dendrite"] for n, h in head.items() if "dendrite" in h},
        "state_headroom": {n: h["state"] for n, h in head.items()},
        "headroom": head, "headroom_fits": all(h["fits"] for h in head.values()),
        "saturation": resources.saturation_errors(head),
        "spikes_match_reference": not mism,
        "counts_match_reference_every_step": not mism,
        "reference_is_measurement": backend == "int",
        "val_loss": vl, "val_loss_tokens": VAL_TOKENS,
        "text_loss": text_loss,
        "ops_per_token": {"snn_theoretical": theory.counts_summary(snn_all),
                          "ann_theoretical": theory.counts_summary(ann_all),
                          "measured": msum["totals_per_token"],
                          "measured_drain": msum["drain_per_token"]},
        "per_layer_pj": _per_layer(snn_all, ann_all, msum, st_gen),
        "per_op": {"snn_theoretical": theory.table(snn_all, "snn"),
                   "ann_theoretical": theory.table(ann_all, "ann")},
        "measured": msum,
        "steps": measure.step_profile(act_all),
        "sensitivity": sensitivity.table(cnt_all, snn_all, ann_all, st_gen,
                                         st_pre["central"], mean_hops, high_hops),
        "ci95": {f"{m}:{k}": ci95(v) for m, vs in views.items() for k, v in vs.items()},
        "per_token_pj": {f"{m}:{k}": v.tolist() for m, vs in views.items()
                         for k, v in vs.items()},
        "spike_rates": {"torch": {k: spk_sum[k] / spk_n[k] for k in spk_sum},
                        "measured": _measured_rates(cnt_all, qgraph, lif)},
        "constants": energy.constants_table(),
        "caveats": energy.CAVEATS,
        "mean_hops": mean_hops,
        "assumptions": ASSUMPTIONS,
    }
    if raster_frames is not None:
        results["_raster"] = {"token": raster_token, "sequence": 0, "frames": raster_frames,
                              "order": qgraph.order(), "window": qgraph.window,
                              "steps_per_token": qgraph.steps_per_token,
                              "depth": {n: p.depth for n, p in qgraph.populations.items()},
                              "kind": {n: p.kind for n, p in qgraph.populations.items()}}
    if variants:
        results["variants"] = variant_rows(variants, data)
    if gpu is not None:
        results["gpu"] = gpu
    results["seconds"] = time.perf_counter() - t0
    if out_dir:
        write(results, out_dir)
    return results


VIEWS = {
    "theoretical_45nm": "the literature's view: ACs x 0.9 pJ + MACs x 4.6 pJ (fp32, 45 nm, "
                        "Horowitz 2014), spikes of the float model, attention as the paper "
                        "counts it",
    "theoretical_45nm_with_extras": "ANN: the same plus softmax/LayerNorm/GELU/residual "
                                    "elements at 4.6 pJ",
    "equal_precision_45nm": "the same counts at the deployed widths: ANN int8 MAC 0.3 pJ "
                            "(8-bit mult + 32-bit add), SNN accumulate 0.1 pJ (32-bit add), "
                            "graded x weight 0.7 pJ (24 x 8-bit mult, estimated, + add)",
    "executed_45nm": "what the lowered graph executes at every window step (linear-form "
                     "attention, drain steps included): binary synops x 0.1 pJ + graded "
                     "synops x 0.7 pJ + non-zero ProdNeuron products x 3.1 pJ",
    "loihi_low": "generation (T + depth steps per token): executed counts x Loihi 1 Table 2 "
                 "low figures (min synop, inactive idle updates, no tile hop) + static power "
                 "of the Loihi 1 cores of the chip-time low bound over that time",
    "loihi_estimate": "central: min synop, active/inactive updates, --mean-hops hops at "
                      "3.5 pJ, static of the Loihi 2 partition's cores over the mean of the "
                      "time bounds",
    "loihi_high": "SANA-FE's synop, every update at the active figure, random-placement "
                  "hops at 4.0 pJ, static of whole chips over the chip-time high bound",
    "loihi_prefill_low": "as loihi_low for a pipelined prompt: T steps per token (the "
                         "drain steps filled by the next tokens)",
    "loihi_prefill_high": "as loihi_high for a pipelined prompt",
}


def _per_layer(snn_all, ann_all, msum: dict, static: dict) -> Dict[str, Dict[str, float]]:
    """Per layer and view (pJ per token); the Loihi views' static energy is its own row."""
    by = lambda key: _sum_by_layer(msum, key)  # noqa: E731
    low, cen, high = by("loihi_low_pj"), by("loihi_pj"), by("loihi_high_pj")
    low["static"], cen["static"], high["static"] = static["low"], static["central"], \
        static["high"]
    return {"snn:theoretical_45nm": theory.by_layer(snn_all),
            "ann:theoretical_45nm": theory.by_layer(ann_all),
            "snn:equal_precision_45nm": theory.by_layer(snn_all, view="equal_precision_45nm"),
            "ann:equal_precision_45nm": theory.by_layer(ann_all, view="equal_precision_45nm",
                                                        side="ann"),
            "snn:executed_45nm": by("executed_45nm_pj"),
            "snn:loihi_low": low, "snn:loihi_estimate": cen, "snn:loihi_high": high}


def _sum_by_layer(msum: dict, key: str) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for p in msum["per_population"]:
        out[p["layer"]] = out.get(p["layer"], 0.0) + p[key]
    return out


ASSUMPTIONS = [
    "Teacher-forced: the benchmark text's tokens are fed (windows of at most the model's "
    "context, each from a reset), so every backend and both models see the same inputs; the "
    "text loss is the cross-entropy of the next character of that same text.",
    "theoretical_45nm and equal_precision_45nm count the operations of the literature's "
    "method with the float torch model's spikes; executed_45nm and the Loihi views count "
    "what the integer graph executed on the backend at every step of every token window.",
    "Attention is counted in the form given by attention_form_45nm in the 45 nm views "
    "(quadratic Q K^T V for a summing memory, the linear recurrence for a decaying one) and "
    "always in its linear, streamed form in the executed and Loihi views.",
    "ANN softmax/LayerNorm/GELU/residual ops are reported as extras, not in the headline.",
    "Loihi views: Davies et al. 2018 Table 2 (Loihi 1, pre-silicon, 0.75 V); no "
    "per-operation energy of Loihi 2 is published (caveats).",
    "Graded messages and their synaptic ops are costed as binary ones in the Loihi views; "
    "graded-kind neurons as LIF updates.",
    "Every neuron is updated at every step of the window (generation: T + pipeline depth "
    "steps per token; prefill: T); a neuron-step with output is 'active', else 'idle'.",
    "Not counted: host-side input injection and logit summation, learning, off-chip I/O, "
    "barrier energy (only its time is published).",
    "Confidence intervals: 95 % normal intervals over tokens, which are not independent.",
]


def _measured_rates(counts, qgraph, names) -> Dict[str, float]:
    T = qgraph.steps_per_token
    by = {c.name: c for c in counts}
    return {n: float(by[n].outputs.sum() / (len(by[n].outputs) * T * qgraph.pop(n).size))
            for n in names}


def _gpu(path: str) -> dict:
    if not os.path.isfile(path):
        raise UserError(f"GPU results file {path} does not exist; make it with "
                        "`python -m snn_compile.benchmarks.gpu_energy --out FILE`")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError, OSError) as e:
        raise UserError(f"GPU results file {path} is not readable JSON ({type(e).__name__}: "
                        f"{str(e)[:100]}); write it again with `python -m "
                        "snn_compile.benchmarks.gpu_energy --out FILE`") from None
    if not isinstance(data, dict):
        raise UserError(f"GPU results file {path} does not hold a JSON object; write it again "
                        "with `python -m snn_compile.benchmarks.gpu_energy --out FILE`")
    return dict(data, file=path)


def variant_rows(specs: Sequence[str], data: Optional[str]) -> List[dict]:
    """Theoretical energy and validation loss of partially spiking variants (block exchange).

    Each checkpoint is evaluated by ``variants.evaluate_variant`` on the first VAL_TOKENS
    validation tokens (its spikes give its operation counts, ``theory.variant_op_rows``);
    the reduction is against the ANN twin's count at the same token positions.
    """

    return [dict(r, name=os.path.basename(r["checkpoint"]), model=r["name"])
            for r in variants.evaluate_checkpoints(specs, data, VAL_TOKENS)]


def write(results: dict, out_dir: str) -> str:
    """report.md + results.json + per_layer.csv + plots into ``out_dir`` (atomically).
    ``results["_raster"]`` (one token's frames) feeds the raster plot and is not saved."""

    raster = results.get("_raster")
    results = {k: v for k, v in results.items() if k != "_raster"}
    fns = {"energy_by_layer.png": lambda p: plots.energy_by_layer(results, p),
           "energy_by_op.png": lambda p: plots.energy_by_op(results, p),
           "energy_views.png": lambda p: plots.energy_views(results, p),
           "spike_rates.png": lambda p: plots.spike_rates(results, p)}
    if raster is not None:
        fns["raster.png"] = lambda p: plots.window_raster(
            raster, p, f"Token {raster['token']} through every population, every step of its "
                       f"window ({results['backend']})")
    # the loss of the same text as the energy; with variants (evaluated on the first
    # VAL_TOKENS validation tokens) every point takes that validation loss instead
    vl = results.get("val_loss" if results.get("variants") else "text_loss") or {}
    pts = [{"name": "SpikeDecoder",
            "energy_pj": results["energy_per_token_pj"]["spikedecoder"]["theoretical_45nm"],
            "val_loss": vl.get("spikedecoder")},
           {"name": "ANN twin", "energy_pj": results["energy_per_token_pj"]["ann"]["theoretical_45nm"],
            "val_loss": vl.get("ann")}]
    pts += [{"name": v["name"], "energy_pj": v["energy_pj"], "val_loss": v["val_loss"]}
            for v in results.get("variants", [])]
    pts = [p for p in pts if p["val_loss"] is not None]
    if pts:
        fns["energy_vs_loss.png"] = lambda p: plots.energy_vs_loss(
            pts, p, loss_label=("validation loss, first %d tokens" % VAL_TOKENS
                                if results.get("variants") else
                                "loss on the benchmark text (nats/token)"))
    return report.write_report(results, out_dir, fns)
