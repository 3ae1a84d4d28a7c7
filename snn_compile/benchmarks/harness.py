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

from snn_compile.benchmarks import energy, measure, theory
from snn_compile.errors import UserError

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
    from snn_compile.compiler.int_reference import run_token_time

    import torch

    return _outputs_of(run_token_time(qgraph, torch.as_tensor(np.asarray(seq), dtype=torch.long)))


def _outputs_of(run) -> Dict[str, np.ndarray]:
    """The per-population (N, T, size) arrays of a reference/backend result."""
    outs = getattr(run, "outputs", run)
    if isinstance(outs, tuple):
        outs = next(o for o in outs if isinstance(o, dict))
    return {k: np.asarray(v) for k, v in outs.items()}


class _MeasuredRun:
    """Runs sequences on a backend with probes; returns token-time outputs per population."""

    def __init__(self, backend: str, qgraph):
        self.backend, self.qgraph = backend, qgraph
        if backend == "int":
            self._session = None
        elif backend == "emulator":
            from snn_compile.hw_sim.emulator import EmulatorBackend

            self._session = EmulatorBackend(qgraph, probes=True)
        elif backend == "lava-sim":
            from snn_compile.hw_sim.lava_runner import LavaBackend

            self._session = LavaBackend(qgraph, probe=True)
        else:
            raise UserError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")

    def run(self, seq: np.ndarray,
            on_token: Optional[Callable[[int], None]] = None) -> Dict[str, np.ndarray]:
        """``on_token(i)`` after the i-th token of ``seq`` has run (progress)."""
        if self._session is None:
            return _reference_outputs(self.qgraph, seq)
        self._session.reset()
        for i, t in enumerate(seq):
            self._session.feed(int(t))
            if on_token is not None:
                on_token(i + 1)
        if self.backend == "lava-sim":       # the session records every token it was fed
            outs = _outputs_of(self._session.session.outputs())
            return {k: v[-len(seq):] for k, v in outs.items()}
        return _outputs_of(self._session.probe_outputs())

    def close(self) -> None:
        if self._session is not None:
            self._session.close()


# ------------------------------------------------------------------ models
def model_shape(folded_or_model, qgraph=None) -> theory.ModelShape:
    """The sizes of a decoder, read from its config."""
    cfg = getattr(folded_or_model, "config", None) or getattr(folded_or_model, "cfg")
    g = lambda *names, default=None: next(  # noqa: E731
        (getattr(cfg, n) for n in names if getattr(cfg, n, None) is not None), default)
    d = int(g("d_model", "n_embd"))
    shift, into = int(g("token_shift", default=0)), g("shift_into", default="both")
    return theory.ModelShape(
        vocab=int(g("vocab_size", "vocab")), d_model=d, n_layers=int(g("n_layers", "n_layer")),
        n_heads=int(g("n_heads", "n_head")), d_ff=int(g("d_ff", default=4 * d)),
        steps_per_token=int(g("steps", "timesteps", "T", default=1)),
        context=int(g("context", "block_size", default=0)),
        shift_qkv=shift if into in ("qkv", "both") else 0,
        shift_ff=shift if into in ("ff", "both") else 0,
        attention=g("attention", default="ssa"), residual=g("residual", default="spike"),
        memory=g("attention_memory", default="sum"))


def _torch_spikes(folded, seq: np.ndarray) -> Dict[str, np.ndarray]:
    """Spike trains (N, T, size) per population of the float torch model on one sequence."""
    import torch

    with torch.no_grad():
        out = folded.forward(torch.as_tensor(seq, dtype=torch.long)[None, :])
    spikes = out["spikes"]
    res = {}
    for k, v in spikes.items():
        a = v.detach().cpu().numpy()
        res[k] = a[0] if a.ndim == 4 else a          # drop the batch axis
    return res


VAL_TOKENS = 32768


def _val_loss(model, tok, data: Optional[str], oov: str = "unk",
              progress: Optional[Callable[[int, int], None]] = None) -> Optional[float]:
    """Validation loss on the first VAL_TOKENS tokens of the validation split."""
    from snn_compile.data import validation_ids
    from snn_compile.models.evaluation import evaluate_with_progress

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
    from snn_compile.models.checkpoint import load_checkpoint, load_raw

    gpu = _gpu(gpu_results) if gpu_results else None     # inputs read at the end: check now
    for v in variants:
        load_raw(v)
    from snn_compile.models.fold import fold

    if model is not None:
        snn_model, tok = model
    elif snn.endswith(".nir"):          # the exported graph itself, rebuilt from NIR nodes
        from snn_compile.compiler.from_nir import decoder_tokenizer, folded_from_nir
        from snn_compile.export.nir_io import read_nir
        from snn_compile.compiler.from_nir import require_decoder
        graph = read_nir(snn)
        require_decoder(graph, snn, "bench")
        snn_model, tok = folded_from_nir(graph), decoder_tokenizer(graph)
    else:
        snn_model, tok, _ = load_checkpoint(snn)
    folded = fold(snn_model)
    if qgraph is None:
        from snn_compile.compiler.pipeline import calibration_tokens
        from snn_compile.compiler.quantize import quantize_decoder

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
        from snn_compile.data import check_oov, load_corpus

        lines = [ln for ln in load_corpus(prompts).split("\n") if ln.strip()]
        joined = "\n".join(lines)
        check_oov(tok, joined, tok.encode(joined, strict=False), 0, len(joined), oov,
                  what=f"prompts file {prompts}", use="fed")
        seqs = prompt_windows([tok.encode(ln, strict=False) for ln in lines], tokens,
                              shape.context)
        source = f"prompts file {prompts}"
    else:
        from snn_compile.data import check_oov, load_corpus, train_val_split

        text = load_corpus(data)
        ids = np.asarray(tok.encode(text, strict=False), dtype=np.int64)
        _, val = train_val_split(ids)
        seqs = token_windows(val, tokens, shape.context)
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
    snn_rows, ann_rows, counts, mism = [], [], [], []
    spk_sum: Dict[str, float] = {}
    spk_n: Dict[str, float] = {}
    first = None
    n_done = 0
    try:
        for si, seq in enumerate(seqs):
            spk = _torch_spikes(folded, seq)
            for k, a in spk.items():
                spk_sum[k] = spk_sum.get(k, 0.0) + float((a != 0).sum())
                spk_n[k] = spk_n.get(k, 0.0) + a.size
            snn_rows.append(theory.snn_op_rows(shape, spk))
            ann_rows.append(theory.ann_op_rows(ann_shape, np.arange(len(seq))))
            ref = _reference_outputs(qgraph, seq)
            meas = ref if backend == "int" else runner.run(
                seq, lambda i, base=n_done: prog("tokens", base + i, tokens))
            ok, bad = measure.compare_outputs(meas, ref, qgraph.order())
            mism += [f"sequence {si}: {b}" for b in bad]
            counts.append(measure.count_operations(qgraph, meas))
            if first is None:
                first = meas
            n_done += len(seq)
            prog("tokens", n_done, tokens)
    finally:
        runner.close()
    if mism:
        raise measure.SpikeMismatchError(
            f"spikes measured on {backend} differ from the integer reference:\n  "
            + "\n  ".join(mism[:20]))

    snn_all = theory.concat_rows(snn_rows)
    ann_all = theory.concat_rows(ann_rows)
    cnt_all = measure.concat_counts(counts)
    e_snn = theory.per_token_energy(snn_all)
    e_ann = theory.per_token_energy(ann_all)
    e_ann_x = theory.per_token_energy(ann_all, include_extras=True)
    e_loihi = measure.loihi_per_token(cnt_all, mean_hops)
    msum = measure.summary(cnt_all, mean_hops)

    # ---- accuracy: energy without accuracy is meaningless
    vl = dict(val_loss or {})
    if "spikedecoder" not in vl:
        vl["spikedecoder"] = _val_loss(snn_model, tok, data, oov,
                                       lambda d, t: prog("validation loss, SpikeDecoder", d, t))
    if ann_net is not None and "ann" not in vl:
        vl["ann"] = _val_loss(ann_net, ann_tok, data, oov,
                              lambda d, t: prog("validation loss, ANN twin", d, t))

    lif = [n for n in qgraph.order() if qgraph.pop(n).kind == "lif"]
    results = {
        "backend": backend, "tokens": int(sum(len(s) for s in seqs)),
        "sequences": len(seqs), "mode": "teacher-forced", "text": source,
        "models": {"spikedecoder": {"spec": snn if model is None else "<in memory>",
                                    "shape": theory.shape_dict(shape)},
                   "ann": {"spec": ann if ann_model is None else "<in memory>",
                           "shape": theory.shape_dict(ann_shape)}},
        "energy_per_token_pj": {
            "spikedecoder": {"theoretical_45nm": float(e_snn.mean()),
                             "loihi_estimate": float(e_loihi.mean())},
            "ann": {"theoretical_45nm": float(e_ann.mean()),
                    "theoretical_45nm_with_extras": float(e_ann_x.mean())}},
        "reduction_pct": energy.reduction_pct(float(e_snn.mean()), float(e_ann.mean())),
        "paper_reduction_pct": list(energy.PAPER_REDUCTION_PCT), "paper": PAPER,
        "ratio_measured_over_theoretical": float(e_loihi.mean() / e_snn.mean()),
        "spikes_match_reference": not mism,
        "reference_is_measurement": backend == "int",
        "val_loss": vl,
        "ops_per_token": {"snn_theoretical": theory.counts_summary(snn_all),
                          "ann_theoretical": theory.counts_summary(ann_all),
                          "measured": msum["totals_per_token"]},
        "per_layer_pj": {"snn:45nm": theory.by_layer(snn_all),
                         "ann:45nm": theory.by_layer(ann_all),
                         "snn:loihi": _loihi_by_layer(msum)},
        "per_op": {"snn_theoretical": theory.table(snn_all),
                   "ann_theoretical": theory.table(ann_all)},
        "measured": msum,
        "ci95": {"spikedecoder:theoretical_45nm": ci95(e_snn),
                 "spikedecoder:loihi_estimate": ci95(e_loihi),
                 "ann:theoretical_45nm": ci95(e_ann)},
        "per_token_pj": {"spikedecoder:theoretical_45nm": e_snn.tolist(),
                         "spikedecoder:loihi_estimate": e_loihi.tolist(),
                         "ann:theoretical_45nm": e_ann.tolist()},
        "spike_rates": {"torch": {k: spk_sum[k] / spk_n[k] for k in spk_sum},
                        "measured": _measured_rates(cnt_all, qgraph, lif)},
        "constants": energy.constants_table(),
        "mean_hops": mean_hops,
        "assumptions": ASSUMPTIONS,
    }
    if variants:
        results["variants"] = variant_rows(variants, data)
    if gpu is not None:
        results["gpu"] = gpu
    results["seconds"] = time.perf_counter() - t0
    if out_dir:
        write(results, out_dir, first, qgraph)
    return results


ASSUMPTIONS = [
    "Teacher-forced: the benchmark text's tokens are fed (windows of at most the model's "
    "context, each from a reset), so every backend and both models see the same inputs.",
    "Theoretical view: 32-bit float, 45 nm (Horowitz 2014): ANN = MACs x 4.6 pJ; SNN = "
    "spikes x fan-out x 0.9 pJ with the float torch model's spikes, plus MACs of the parts "
    "that are not spike-driven (attention scale, 1/T readout average).",
    "Attention with binary q, k, v is counted as accumulates; it is counted at the positions "
    "measured (its cost grows with position).",
    "ANN softmax/LayerNorm/GELU/residual ops are reported as extras, not in the headline.",
    "Loihi view: counts measured on the backend x Davies et al. 2018 Table 2 (Loihi 1, "
    "pre-silicon); no per-operation energy of Loihi 2 is published.",
    "Graded messages and their synaptic ops are costed as binary ones (lower bound); every "
    "message is assumed to cross one tile boundary.",
    "Every neuron is updated every step of the token's window (T + pipeline depth); a "
    "neuron-step with output is 'active', else 'idle'.",
    "Not counted: static/leakage power, barrier synchronisation, host-side input injection "
    "and logit summation, learning, off-chip I/O.",
    "Confidence intervals: 95 % normal intervals over tokens, which are not independent.",
]


def _loihi_by_layer(msum: dict) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for p in msum["per_population"]:
        out[p["layer"]] = out.get(p["layer"], 0.0) + p["loihi_pj"]
    return out


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
    from snn_compile.benchmarks import variants

    return [dict(r, name=os.path.basename(r["checkpoint"]), model=r["name"])
            for r in variants.evaluate_checkpoints(specs, data, VAL_TOKENS)]


def write(results: dict, out_dir: str, outputs=None, qgraph=None) -> str:
    """report.md + results.json + plots into ``out_dir`` (atomically)."""
    from snn_compile.benchmarks import plots, report

    fns = {"energy_by_layer.png": lambda p: plots.energy_by_layer(results, p),
           "energy_by_op.png": lambda p: plots.energy_by_op(results, p),
           "spike_rates.png": lambda p: plots.spike_rates(results, p)}
    if outputs is not None and qgraph is not None:
        k = min(len(next(iter(outputs.values()))) - 1, 4)
        order = [n for n in qgraph.order() if n in outputs]
        fns["raster.png"] = lambda p: plots.raster(
            {n: np.asarray(outputs[n])[k] for n in order}, order, p,
            f"Outputs of every population for token {k} ({results['backend']})")
    pts = [{"name": "SpikeDecoder",
            "energy_pj": results["energy_per_token_pj"]["spikedecoder"]["theoretical_45nm"],
            "val_loss": results["val_loss"].get("spikedecoder")},
           {"name": "ANN twin", "energy_pj": results["energy_per_token_pj"]["ann"]["theoretical_45nm"],
            "val_loss": results["val_loss"].get("ann")}]
    pts += [{"name": v["name"], "energy_pj": v["energy_pj"], "val_loss": v["val_loss"]}
            for v in results.get("variants", [])]
    pts = [p for p in pts if p["val_loss"] is not None]
    if pts:
        fns["energy_vs_loss.png"] = lambda p: plots.energy_vs_loss(pts, p)
    return report.write_report(results, out_dir, fns)
