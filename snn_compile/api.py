"""The Python API: the functions the ``snn-compile`` command calls.

::

    import snn_compile as sc

    m = sc.load("default:spikedecoder")     # checkpoint, .nir, .qgraph or a nir.NIRGraph
    m = sc.train("tiny.pt", steps=200)       # or train one (snn-compile train)
    g = sc.export(m, "model.nir")            # checkpoint -> NIR (read back and checked)
    c = sc.compile(g)                        # -> Loihi 2 fixed point (holds the QGraph)
    logits = sc.run(c, "The ", backend="lava-sim")
    sc.evaluate(c, backend="int")            # validation loss, bits per character
    sc.bench(m, backend="emulator")          # energy per token

Two kinds of model go through these functions:

* **token decoders** made by snn_compile (checkpoints, their exported ``.nir``, their
  ``.qgraph``): inputs are text or token ids, ``run`` returns logits ``(N, V)``;
* **foreign graphs** of standard NIR nodes (snnTorch's ``export_to_nir``, Norse,
  Rockpool, ...): inputs are spike trains ``(steps, inputs)`` or ``(samples, steps,
  inputs)`` (a dict by Input node name when there are several), one sample = one run
  of ``steps`` steps from rest; ``run`` returns the Output node's values in NIR time,
  ``(steps, outputs)`` or ``(samples, steps, outputs)``, the pipeline latency of the
  Loihi graph removed. ``evaluate`` classifies by output spike count, ``bench`` gives
  the energy per sample.

Backends: ``torch`` (the float torch model of a checkpoint), ``nir`` (the float NIR
interpreter), ``int`` (the integer reference of the Loihi 2 fixed-point graph),
``emulator`` (the same graph in global time, as Lava runs it), ``lava-sim`` (Lava's
bit-accurate simulator), ``loihi2`` (a chip, with ``lava-loihi``). ``int``,
``emulator`` and ``lava-sim`` agree spike for spike (tested).

Every mistake in what is given raises ``snn_compile.errors.UserError`` with one message
naming the problem and the fix. Heavy libraries (torch models, Lava, transformers) are
imported only by the function that needs them: ``import snn_compile`` stays light.
"""

from __future__ import annotations

import os
from typing import Dict, Optional

from snn_compile.errors import UserError

BACKENDS = ("torch", "nir", "int", "emulator", "lava-sim", "loihi2")
INTEGER_BACKENDS = ("int", "emulator", "lava-sim", "loihi2")


class Model:
    """What ``load`` returns and the other functions take (they also take what ``load``
    takes and load it first).

    ``kind``: ``"checkpoint"`` (``torch_model`` + ``tokenizer``), ``"nir"`` (``graph``, a
    ``nir.NIRGraph``) or ``"qgraph"`` (``qgraph``, the Loihi 2 fixed-point graph, and
    ``graph`` when it was compiled from one). ``foreign``: a graph of standard NIR nodes
    not written by snn_compile (no token framing). ``report``: the quantization report
    of ``compile``; ``check``: its float/int/Lava comparison when asked for;
    ``headroom``: a decoder's measured range headroom on the calibration text
    (``hw_sim.verify.calibration_headroom``).
    """

    def __init__(self, source: str, kind: str, *, torch_model=None, tokenizer=None,
                 graph=None, qgraph=None, report: Optional[dict] = None,
                 check: Optional[dict] = None, headroom: Optional[dict] = None):
        self.source, self.kind = source, kind
        self.torch_model, self.tokenizer = torch_model, tokenizer
        self.graph, self.qgraph = graph, qgraph
        self.report, self.check, self.headroom = report, check, headroom

    @property
    def foreign(self) -> bool:
        if self.qgraph is not None:
            return self.qgraph.metadata.get("model") == "foreign"
        if self.graph is not None:
            from snn_compile.compiler.from_nir import is_decoder_graph
            return not is_decoder_graph(self.graph)
        return False

    @property
    def steps(self) -> Optional[int]:
        """Steps per sample of a compiled foreign graph (None otherwise)."""
        return self.qgraph.steps_per_token if self.qgraph is not None and self.foreign else None

    def input_sizes(self) -> Dict[str, int]:
        """Input node (population) name -> number of values per step, of a foreign graph."""
        if self.qgraph is not None:
            from snn_compile.compiler.quantize_foreign import BIAS
            return {n: self.qgraph.pop(n).size for n in self.qgraph.inputs if n != BIAS}
        from snn_compile.export.nir_io import flatten, out_size
        flat = flatten(self.graph)
        return {n: int(out_size(flat.nodes[n])) for n in flat.inputs}

    def __repr__(self) -> str:
        what = "foreign NIR graph" if self.foreign else {
            "checkpoint": "checkpoint", "nir": "decoder NIR graph",
            "qgraph": "compiled decoder"}[self.kind]
        extra = f", {self.steps} steps" if self.steps else ""
        return f"<snn_compile.Model {self.kind}: {what} from {self.source}{extra}>"


# ------------------------------------------------------------------------ load
def load(source) -> Model:
    """Load a model: a checkpoint (path, ``default:spikedecoder``, ``default:ann``), a
    ``.nir`` graph (ours or any framework's), a compiled ``.qgraph``, or an in-memory
    ``nir.NIRGraph`` (e.g. ``snntorch.export_nir.export_to_nir(net, x)``).

    Files are recognised by their suffix (``.nir``, ``.qgraph``; anything else is read as
    a checkpoint)."""
    if isinstance(source, Model):
        return source
    import nir
    if isinstance(source, nir.NIRGraph):
        from snn_compile.export.nir_io import _lift_extensions, flatten, validate
        graph = _lift_extensions(source)
        validate(flatten(graph))
        return Model("<nir.NIRGraph>", "nir", graph=graph)
    if not isinstance(source, (str, os.PathLike)):
        raise UserError(f"cannot load a {type(source).__name__}: give a path (checkpoint, .nir, "
                        ".qgraph), default:spikedecoder / default:ann, or a nir.NIRGraph "
                        "(export an snnTorch network with snn_compile.export(net, path, "
                        "example=x))")
    from snn_compile.models.assets import resolve_checkpoint
    spec = resolve_checkpoint(os.fspath(source))
    if spec.endswith(".nir"):
        from snn_compile.export.nir_io import read_nir
        return Model(spec, "nir", graph=read_nir(spec))
    if spec.endswith(".qgraph"):
        from snn_compile.compiler.qgraph import QGraph, QGraphError
        from snn_compile.data import tokenizer_from_dict
        try:
            q = QGraph.load(spec)
        except QGraphError as e:
            raise UserError(str(e)) from None
        tok = q.metadata.get("tokenizer")
        return Model(spec, "qgraph", qgraph=q,
                     tokenizer=tokenizer_from_dict(tok) if tok is not None else None)
    from snn_compile.models.checkpoint import load_checkpoint
    model, tok, _ = load_checkpoint(spec if os.path.exists(spec) else os.fspath(source))
    return Model(os.fspath(source), "checkpoint", torch_model=model, tokenizer=tok)


# ----------------------------------------------------------------------- train
def train(output, *, data: Optional[str] = None, kind: str = "spikedecoder",
          tokenizer: str = "char", **options) -> Model:
    """Train a decoder on a text corpus and keep its best-validation checkpoint at
    ``output``; returns it loaded (``snn-compile train`` with the same options).

    ``data``: a UTF-8 text file (default: the embedded corpus; its last 10 % is the
    validation split). ``kind``: ``spikedecoder`` (deployable), ``partial`` or ``ann``.
    ``options`` are the fields of ``models.config.ModelConfig`` (``d_model``,
    ``n_layers``, ``n_heads``, ``context``, ``timesteps``, ...) and of
    ``models.train.TrainArgs`` (``steps``, ``batch_size``, ``lr``, ``seed``, ``device``,
    ``progress``, ``learning_guard``, ...).
    """
    import dataclasses

    from snn_compile.models.config import ModelConfig
    from snn_compile.models.train import TrainArgs, train as _train
    cfg_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    arg_fields = {f.name for f in dataclasses.fields(TrainArgs)}
    unknown = sorted(set(options) - cfg_fields - arg_fields)
    if unknown:
        raise UserError(f"unknown training options {', '.join(unknown)}; model options: "
                        f"{', '.join(sorted(cfg_fields - {'kind', 'vocab_size'}))}; training "
                        f"options: {', '.join(sorted(arg_fields))}")
    from snn_compile.errors import check_output_file
    check_output_file(output, "checkpoint")
    cfg = ModelConfig(kind=kind, **{k: v for k, v in options.items() if k in cfg_fields})
    args = TrainArgs(**{k: v for k, v in options.items() if k in arg_fields})
    _train(cfg, args, os.fspath(output), data, tokenizer)
    return load(os.fspath(output))


# ---------------------------------------------------------------------- export
def export(model, path: Optional[str] = None, *, example=None, check: bool = True) -> Model:
    """A model as a NIR graph, written to ``path`` (atomically) when given.

    ``model``: a deployable SpikeDecoder checkpoint (the file is read back and run in the
    NIR interpreter against the torch model, spike for spike, unless ``check=False``), a
    NIR model (written as it is), or an snnTorch network (``torch.nn.Module``), exported
    with snnTorch's own ``export_to_nir`` on ``example``, one input batch ``(1, inputs)``.
    Returns the graph as a ``Model``.
    """
    import torch

    if isinstance(model, torch.nn.Module) and not hasattr(model, "cfg"):
        return _export_module(model, path, example)
    m = _as_model(model)
    if m.kind == "qgraph":
        raise UserError(f"{m.source} is a compiled graph: NIR cannot hold Loihi fixed point; "
                        "export the checkpoint or NIR graph it came from")
    result: dict = {}
    check_fn = None
    if m.kind == "nir":
        graph = m.graph
    else:
        from snn_compile.export.to_nir import export_model
        graph = export_model(m.torch_model, m.tokenizer)

        def check_fn(tmp: str) -> None:      # on the complete temporary file
            _check_export(m, tmp, result, check)
    out = Model(path or m.source, "nir", graph=graph, tokenizer=m.tokenizer)
    out.report = result
    if path is not None:
        from snn_compile.errors import check_output_file
        from snn_compile.export.nir_io import write_nir
        check_output_file(path)
        if not os.fspath(path).endswith(".nir"):
            raise UserError(f"{path} should end in .nir (later stages recognise a NIR graph by "
                            "its suffix); rename it")
        write_nir(graph, os.fspath(path), check_fn)
    elif check:
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            from snn_compile.export.nir_io import write_nir
            write_nir(graph, os.path.join(d, "model.nir"), check_fn)
    return out


def _export_module(net, path, example) -> Model:
    """An snnTorch network through snnTorch's ``export_to_nir`` (which uses nirtorch)."""
    from snn_compile.export.to_nir import export_snntorch
    graph = export_snntorch(net, example)
    m = load(graph)
    if path is not None:
        return export(m, path)
    return m


def _check_export(m: Model, tmp: str, result: dict, check: bool = True) -> None:
    """Read the complete temporary file back and run it against the torch model."""
    import torch

    result["bytes"] = os.path.getsize(tmp)
    if not check:
        return

    from snn_compile.compiler.pipeline import calibration_tokens
    from snn_compile.export.interpreter import NIRInterpreter, run_tokens
    from snn_compile.export.nir_io import read_nir
    from snn_compile.export.to_nir import nir_node_of
    from snn_compile.models.fold import fold
    from snn_compile.models.spikedecoder import is_spike_record

    folded = fold(m.torch_model)
    toks = calibration_tokens(m.tokenizer, folded.context, n=min(32, folded.context))
    ref = folded.forward(toks)
    got = run_tokens(NIRInterpreter(read_nir(tmp)), toks)
    # spikes must be equal; attention memories (float sums, decayed in another order in
    # the step-by-step interpreter) agree to float64 rounding; streams are not nodes
    mism = [k for k, v in ref["spikes"].items()
            if (is_spike_record(k) and not torch.equal(v, got["spikes"][nir_node_of(k)]))
            or (k.endswith(".A") and not torch.allclose(v, got["spikes"][nir_node_of(k)],
                                                         rtol=1e-9, atol=1e-9))]
    diff = float((ref["logits"] - got["logits"]).abs().max())
    result.update(check_tokens=int(toks.shape[1]), spikes_equal=not mism,
                  logits_max_abs_diff=diff)
    if mism:
        raise UserError(f"exported graph disagrees with the torch model on {', '.join(mism)}; "
                        "nothing written (please report this)")


# --------------------------------------------------------------------- compile
def compile(model, *, steps: Optional[int] = None, calibrate=None,
            output: Optional[str] = None, allow_saturation: bool = False,
            check: bool = False, check_rate: float = 0.2, seed: int = 0) -> Model:
    """Quantize to Loihi 2 fixed point; returns a ``Model`` of kind ``qgraph``.

    Token decoders are calibrated on the first validation characters of the embedded
    corpus. A foreign graph compiles for runs of ``steps`` steps; ``calibrate`` (spike
    trains, as ``run`` takes them) sets each population's membrane scale from the
    largest input current they cause (``steps`` defaults to theirs); without it, random
    spikes of rate ``check_rate`` do. ``check`` runs the float NIR interpreter, the
    integer reference and Lava on the calibration data (or random spikes) and records
    the comparison in ``.check``. A population whose input may leave Loihi's 16-bit range
    (for a decoder: whose dendritic input or state reaches Loihi 2's 16-bit / 24-bit
    limits on the calibration text, measured by the integer reference; ``.headroom``) is
    an error unless ``allow_saturation``. ``output``: write the ``.qgraph`` there.
    """
    m = _as_model(model)
    if m.kind == "qgraph":
        if steps is not None and m.steps is not None and steps != m.steps:
            raise UserError(f"{m.source} was compiled for {m.steps} steps, not {steps}; "
                            "compile the NIR graph again with the new number of steps")
        q, rep, chk = m.qgraph, m.report, None
    elif m.foreign:
        q, rep, chk = _compile_foreign(m, steps, calibrate, check, check_rate, seed)
    else:
        if steps is not None or calibrate is not None or check:
            raise UserError("--steps/--calibrate/--check (steps=, calibrate=, check=) apply to "
                            "foreign NIR graphs; a SpikeDecoder runs T steps per token, "
                            "calibrated on validation text (check it with `snn-compile bench`)")
        q, rep = _compile_decoder(m)
        chk = None
    head = None
    if not m.foreign and m.kind != "qgraph":
        from snn_compile.hw_sim import verify
        head = verify.calibration_headroom(q, m.tokenizer or _decoder_tokenizer(m))
    over = [w for w in (rep or {}).get("warnings", []) if "16-bit" in w]
    if head is not None:
        over += [e + " on the calibration text" for e in head["errors"]]
    if over and not allow_saturation:
        raise UserError("; ".join(over) + " — Loihi 2 would saturate where Lava's simulator "
                        "(int32 sums) stays silent. Fix: retrain with smaller weights into "
                        "that population (or a lower input scale), or pass --allow-saturation "
                        "(allow_saturation=True) to write the graph anyway")
    if chk is not None and chk.get("lava_equals_int") is False:
        raise UserError("Lava fixed_pt and the integer reference disagree on this graph; "
                        "nothing written (please report this)")
    if output is not None:
        from snn_compile.errors import check_output_file
        check_output_file(output)
        if not os.fspath(output).endswith(".qgraph"):
            raise UserError(f"{output} should end in .qgraph (later stages recognise a "
                            "compiled graph by its suffix); rename it")
        q.save(os.fspath(output))
    return Model(output or m.source, "qgraph", graph=m.graph, qgraph=q, report=rep,
                 check=chk, tokenizer=m.tokenizer, torch_model=m.torch_model, headroom=head)


def _decoder_tokenizer(m: Model):
    from snn_compile.compiler.from_nir import decoder_tokenizer
    return decoder_tokenizer(m.graph)


def _compile_decoder(m: Model):
    from snn_compile.compiler.from_nir import decoder_tokenizer
    from snn_compile.compiler.pipeline import quantize_decoder_graph
    if m.kind == "checkpoint":
        from snn_compile.export.to_nir import export_model
        graph, tok = export_model(m.torch_model, m.tokenizer), m.tokenizer
    else:
        graph, tok = m.graph, decoder_tokenizer(m.graph)
    # the compiler reads only NIR: checkpoints go through the exporter first
    return quantize_decoder_graph(graph, tok)


def _compile_foreign(m: Model, steps, calibrate, check: bool, rate: float, seed: int):
    import torch

    from snn_compile.compiler.qgraph import QGraphError
    from snn_compile.compiler.quantize_foreign import foreign_to_qgraph, plan_foreign
    from snn_compile.hw_sim.verify import compare_float_int
    if not 0.0 < rate <= 1.0:
        raise UserError(f"check_rate must lie in (0, 1], got {rate}")
    plan = plan_foreign(m.graph)
    sizes = m.input_sizes()
    data = None
    if calibrate is not None:
        data, _ = spike_inputs(m, calibrate, "calibration data")
        S = next(iter(data.values())).shape[0]
        if steps is not None and steps != S:
            raise UserError(f"the calibration data has {S} steps per sample but steps={steps}; "
                            "give data of the steps the graph will run (or leave steps out)")
        steps = S
    if steps is None:
        raise UserError(f"{m.source} is a foreign NIR graph: say how many steps a run has "
                        "(--steps S, steps=S) or give calibration data (--calibrate X.npy)")
    gen = torch.Generator().manual_seed(seed)

    def spikes(batch):
        return {n: (torch.rand(steps, batch, sizes[n], generator=gen) < rate).double()
                for n in plan.inputs}

    calib = data if data is not None else spikes(32)
    try:
        q, rep = foreign_to_qgraph(m.graph, steps, calib)
    except QGraphError as e:
        raise UserError(f"{m.source} cannot be compiled for Loihi 2: {e}") from None
    rep = rep.to_dict()
    rep["calibration"] = ("user data" if data is not None else
                          f"random spikes, rate {rate}") + f" ({next(iter(calib.values())).shape[1]} samples)"
    chk = None
    if check:
        import sys
        print("check: float NIR interpreter, integer reference and Lava fixed_pt on the "
              f"{'calibration data' if data is not None else 'random input spikes'} "
              "(starting Lava takes a few seconds) ...", file=sys.stderr, flush=True)
        chk = compare_float_int(m.graph, q, data if data is not None else spikes(16),
                                lava_samples=2)
    return q, rep, chk


# ------------------------------------------------------------------------- run
def spike_inputs(m: Model, x, what: str = "input"):
    """User data for a foreign graph -> ``({input: (S, B, size) float64 tensor}, batched)``.

    ``x``: an array ``(steps, size)`` (one sample) or ``(samples, steps, size)`` (trailing
    dimensions may be the Input node's own shape, e.g. ``(C, H, W)``), a ``.npy``/``.npz``
    path, or a dict by Input node name (the only way to feed several inputs).
    """
    import numpy as np
    import torch

    sizes = m.input_sizes()
    if isinstance(x, (str, os.PathLike)):
        x = load_array(os.fspath(x), what)
    if hasattr(x, "files"):                    # an open .npz
        x = {k: x[k] for k in x.files}
    if not isinstance(x, dict):
        if len(sizes) != 1:
            raise UserError(f"the graph has {len(sizes)} Input nodes ({', '.join(sizes)}): "
                            f"give the {what} as a .npz (or dict) with one array per name")
        x = {next(iter(sizes)): x}
    elif len(x) == 1 and len(sizes) == 1 and next(iter(x)) not in sizes:
        x = {next(iter(sizes)): next(iter(x.values()))}     # one array under any name
    missing = [n for n in sizes if n not in x]
    extra = [n for n in x if n not in sizes]
    if missing or extra:
        raise UserError(f"{what}: the graph's Input nodes are {', '.join(sizes)}; "
                        + (f"missing {', '.join(missing)}" if missing else "")
                        + ("; " if missing and extra else "")
                        + (f"unknown {', '.join(extra)}" if extra else ""))
    out, batched = {}, None
    for name, size in sizes.items():
        a = x[name]
        a = a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
        if a.dtype == bool:
            a = a.astype(np.float64)
        if a.dtype.kind not in "biuf":
            raise UserError(f"{what} {name}: dtype {a.dtype} is not numeric")
        a = a.astype(np.float64)
        b = _split_batch(a, size, name, what)
        if batched is not None and b[1] != batched:
            raise UserError(f"{what}: give every input with the same layout (all with or all "
                            "without a samples axis)")
        arr, batched = b
        if not np.all(np.isfinite(arr)):
            raise UserError(f"{what} {name} holds NaN or infinite values")
        out[name] = torch.as_tensor(arr.transpose(1, 0, 2).copy())     # (S, B, size)
    shapes = {tuple(v.shape[:2]) for v in out.values()}
    if len(shapes) > 1:
        raise UserError(f"{what}: the inputs disagree in steps or samples ({sorted(shapes)})")
    return out, batched


def _split_batch(a, size: int, name: str, what: str):
    """(B, S, size) view of an array and whether it had a samples axis: ``(S, size)`` is
    one sample, ``(B, S, size)`` a batch; trailing dimensions may be the Input node's
    shape (``(S, C, H, W)``, ``(B, S, C, H, W)``)."""
    import numpy as np
    if a.ndim == 2 and a.shape[1] == size:
        return a.reshape(1, a.shape[0], size), False
    if a.ndim == 3 and a.shape[2] == size:
        return a, True
    if a.ndim > 2 and int(np.prod(a.shape[1:])) == size:
        return a.reshape(1, a.shape[0], size), False
    if a.ndim > 3 and int(np.prod(a.shape[2:])) == size:
        return a.reshape(a.shape[0], a.shape[1], size), True
    raise UserError(f"{what} {name}: shape {a.shape} does not fit the input's {size} values "
                    f"per step; give (steps, {size}) or (samples, steps, {size})")


def load_array(path: str, what: str = "input"):
    """A ``.npy``/``.npz`` file (never unpickled), or one UserError naming the problem."""
    import numpy as np
    if not os.path.exists(path):
        raise UserError(f"{what} file {path} does not exist")
    if os.path.isdir(path):
        raise UserError(f"{what} {path} is a folder; give a .npy or .npz file")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        raise UserError(f"{what} file {path} cannot be read without unpickling ({e}); save "
                        "plain numeric arrays with numpy.save") from None
    except (OSError, EOFError) as e:
        raise UserError(f"{what} file {path} is not a readable .npy/.npz file ({e})") from None


def run(model, inputs, *, backend: str = "int", steps: Optional[int] = None,
        calibrate=None, progress=None):
    """Run a model on a backend; returns numpy float64 arrays.

    Foreign graph: ``inputs`` are spike trains (see the module doc); returns the Output
    node's values ``(steps, outputs)`` or ``(samples, steps, outputs)`` in NIR time. An
    uncompiled graph is compiled first for the inputs' steps, calibrated on
    ``calibrate`` (default: the inputs themselves). Backend ``nir`` runs the float NIR
    interpreter on any real-valued input.

    Token decoder: ``inputs`` is a text or token ids ``(N,)`` / ``(B, N)``; returns the
    logits ``(N, V)`` / ``(B, N, V)`` of every position.
    """
    m = _as_model(model)
    _check_backend(backend)
    if m.foreign:
        return _run_foreign(m, inputs, backend, steps, calibrate, progress)["output"]
    return _run_decoder(m, inputs, backend)


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def _run_foreign(m: Model, inputs, backend: str, steps, calibrate, progress=None,
                 check: bool = False) -> dict:
    import numpy as np

    x, batched = spike_inputs(m, inputs)
    S = next(iter(x.values())).shape[0]
    if backend == "torch":
        raise UserError("a foreign NIR graph has no torch model of snn_compile's; its float "
                        "semantics are the NIR interpreter's: use backend nir (it runs in "
                        "torch float64)")
    if backend == "nir":
        if m.graph is None:
            raise UserError(f"{m.source} is a compiled graph; the float NIR interpreter needs "
                            "the .nir file it was compiled from")
        from snn_compile.export.interpreter import NIRInterpreter
        interp = NIRInterpreter(m.graph)
        out_name = interp.flat.outputs[0]
        y = interp.run(x)[out_name].cpu().numpy()                   # (S, B, V)
        res = {"output": y, "outputs": None, "reference_equal": None}
    else:
        if m.qgraph is None:
            m = compile(m, steps=S, calibrate=inputs if calibrate is None else calibrate)
        elif S != m.steps:
            raise UserError(f"the input has {S} steps per sample but {m.source} was compiled "
                            f"for {m.steps}; give {m.steps} steps or compile the NIR graph "
                            f"again (snn-compile compile GRAPH.nir --steps {S})")
        from snn_compile.hw_sim.foreign import run_samples
        res = run_samples(m.qgraph, x, backend, progress=progress, check=check)
        res["qgraph"] = m.qgraph
    y = res["output"].transpose(1, 0, 2)                               # (B, S, V)
    res["output"] = np.ascontiguousarray(y if batched else y[0])
    res["model"] = m
    return res


def _decoder_tokens(m: Model, inputs):
    import numpy as np
    import torch
    tok = m.tokenizer
    if isinstance(inputs, str):
        if tok is None:
            raise UserError(f"{m.source} carries no tokenizer: give token ids, not text")
        from snn_compile.data import encode_text
        ids, _ = encode_text(tok, inputs, "unk", what="the input text", use="fed")
        if not ids:
            raise UserError("the input text holds no token of the model's vocabulary")
        return torch.as_tensor(ids, dtype=torch.int64)
    a = np.asarray(inputs)
    if a.dtype.kind not in "iu" or a.ndim not in (1, 2):
        raise UserError(f"a token decoder takes text or integer token ids of shape (N,) or "
                        f"(B, N), got dtype {a.dtype} shape {a.shape}")
    return torch.as_tensor(a.astype(np.int64))


def _run_decoder(m: Model, inputs, backend: str):
    import numpy as np
    import torch

    t = _decoder_tokens(m, inputs)
    tt = t[None] if t.dim() == 1 else t
    if backend == "torch":
        if m.torch_model is None:
            raise UserError(f"backend torch runs a checkpoint, and {m.source} is a "
                            f"{'compiled graph' if m.kind == 'qgraph' else 'NIR graph'}; use "
                            "backend nir, int, emulator or lava-sim")
        with torch.no_grad():
            y = m.torch_model.eval()(tt).double()
    elif backend == "nir":
        graph = m.graph
        if graph is None and m.kind == "checkpoint":
            from snn_compile.export.to_nir import export_model
            graph = export_model(m.torch_model, m.tokenizer)
        if graph is None:
            raise UserError("backend nir needs a .nir file or a checkpoint, not a compiled "
                            ".qgraph")
        from snn_compile.export.interpreter import NIRInterpreter, run_tokens
        y = run_tokens(NIRInterpreter(graph), tt, record_spikes=False)["logits"]
    else:
        q = m.qgraph if m.qgraph is not None else compile(m).qgraph
        if backend == "int":
            from snn_compile.hw_sim.int_reference import logits_only
            y = logits_only(q, tt)
        elif backend == "emulator":
            from snn_compile.hw_sim.emulator import emulator_logits
            y = emulator_logits(q, tt)
        else:
            from snn_compile.hw_sim.lava_runner import LavaBackend
            rows = []
            with LavaBackend(q, hardware=backend == "loihi2") as lb:
                for seq in tt.tolist():
                    lb.reset()
                    rows.append(np.stack([lb.feed(k) for k in seq]))
            y = torch.as_tensor(np.stack(rows))
    y = y.cpu().numpy().astype(np.float64)
    return y[0] if t.dim() == 1 else y


# -------------------------------------------------------------------- evaluate
def evaluate(model, *, inputs=None, labels=None, backend: Optional[str] = None,
             data: Optional[str] = None, max_tokens: Optional[int] = None,
             oov: str = "unk", ablate: Optional[str] = None, device: str = "cpu",
             progress=None) -> dict:
    """Accuracy of a foreign graph, validation loss of a token decoder.

    Foreign graph: ``inputs`` (spike trains) and ``labels`` (one class per sample);
    each sample is classified by its output spike count (``argmax_v sum_t out[t, v]``);
    returns ``accuracy``, ``correct``, ``samples``, ``predictions``. Default backend
    ``int``.

    Token decoder: the validation split of ``data`` (default: the embedded corpus),
    blocks of the model's context from a reset; returns ``val_loss`` (nats/token),
    ``bpc``, ``ppl``, ``tokens`` (+ spike rates on ``torch``). Backends ``torch`` (the
    default; ``ablate="attention"`` zeroes the attention memory), ``int``, ``emulator``
    (the deployed fixed-point graph).
    """
    m = _as_model(model)
    if m.foreign:
        backend = backend or "int"
        _check_backend(backend)
        if inputs is None or labels is None:
            raise UserError("a foreign NIR graph is evaluated on your data: give inputs "
                            "(--input X.npy, spike trains (samples, steps, inputs)) and labels "
                            "(--labels Y.npy, one class per sample)")
        from snn_compile.hw_sim.foreign import accuracy, check_labels
        res = _run_foreign(m, inputs, backend, None, None, progress)
        out = res["output"]
        out = out[None] if out.ndim == 2 else out                       # (B, S, V)
        if isinstance(labels, (str, os.PathLike)):
            labels = load_array(os.fspath(labels), "labels")
        y = check_labels(labels, out.shape[0], out.shape[2])
        ev = accuracy(out.transpose(1, 0, 2), y)
        ev.update(backend=backend, steps=int(out.shape[1]), outputs=int(out.shape[2]))
        return ev
    if inputs is not None or labels is not None:
        raise UserError(f"{m.source} is a token decoder: it is evaluated on text (data=, "
                        "--data FILE), not on inputs/labels")
    backend = backend or "torch"
    return _evaluate_decoder(m, backend, data, max_tokens, oov, ablate, device, progress)


def _evaluate_decoder(m: Model, backend: str, data, max_tokens, oov, ablate, device,
                      progress) -> dict:
    import math

    import torch
    import torch.nn.functional as F

    from snn_compile.data import sequential_blocks, validation_ids

    if backend not in ("torch", "int", "emulator"):
        raise UserError(f"a token decoder is evaluated on torch, int or emulator, not {backend}")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible; use --device cpu")
    upd = progress or (lambda done, total: None)
    if m.kind == "checkpoint":
        cfg_context = m.torch_model.cfg.context
    else:
        q = m.qgraph if m.qgraph is not None else None
        cfg_context = q.context if q is not None else _graph_context(m.graph)
    if ablate and (backend != "torch" or not hasattr(m.torch_model, "set_ablation")):
        raise UserError("--ablate attention needs a SpikeDecoder checkpoint on --backend torch "
                        "(it zeroes the spiking attention memory)")
    if max_tokens is not None and max_tokens < cfg_context:
        raise UserError(f"--max-tokens {max_tokens} is shorter than one window of the "
                        f"model's context ({cfg_context} tokens, fixed by the model); give "
                        f"--max-tokens {cfg_context} or more, or leave it out")
    tok = m.tokenizer
    if tok is None and m.graph is not None:
        from snn_compile.compiler.from_nir import decoder_tokenizer
        tok = decoder_tokenizer(m.graph)
    if tok is None:
        raise UserError(f"{m.source} carries no tokenizer; recompile it from its checkpoint")
    if backend == "torch" and m.torch_model is None:
        raise UserError(f"{m.source} is a {'compiled graph' if m.kind == 'qgraph' else 'NIR graph'}"
                        ", not a checkpoint: --backend torch evaluates a checkpoint's float "
                        "model; evaluate the deployed graph with --backend int or emulator")
    val_ids, n_unk = validation_ids(data, tok, cfg_context, oov, max_tokens)
    if backend == "torch":
        from snn_compile.models.evaluation import evaluate_with_progress
        if ablate:
            m.torch_model.set_ablation(attention=True)
        ev = evaluate_with_progress(m.torch_model, val_ids, max_tokens, upd)
        ev["ablate"] = ablate
    else:
        q = m.qgraph if m.qgraph is not None else compile(m).qgraph
        ids = val_ids if max_tokens is None else val_ids[: max_tokens + 1]
        total, count = 0.0, 0
        for x, y in sequential_blocks(ids, cfg_context, 64):
            if backend == "int":
                from snn_compile.hw_sim.int_reference import logits_only
                logits = logits_only(q, torch.as_tensor(x))
            else:
                from snn_compile.hw_sim.emulator import emulator_logits
                logits = emulator_logits(q, torch.as_tensor(x), device=device)
            total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]).double(),
                                           torch.as_tensor(y).reshape(-1), reduction="sum"))
            count += y.size
            upd(count, len(ids) - 1)
        val = total / max(count, 1)
        ev = {"val_loss": val, "ppl": math.exp(min(val, 50)), "bpc": val / math.log(2),
              "tokens": count}
    ev["unknown_tokens"] = n_unk
    ev["backend"] = backend
    if tok.kind != "char":
        ev["bpc"] = None
    return ev


def _graph_context(graph) -> int:
    from snn_compile.export.interpreter import framing
    fr = framing(graph) or {}
    return int(fr.get("context", 0))


# ----------------------------------------------------------------------- bench
def bench(model, *, inputs=None, backend: Optional[str] = None, mean_hops: float = 1.0,
          progress=None, **decoder_options) -> dict:
    """Energy from the spikes of a real run.

    Foreign graph: energy per sample of ``inputs`` (spike trains), counted on ``backend``
    (default ``emulator``; ``lava-sim`` runs Lava itself) and checked spike for spike
    against the integer reference: ``energy_per_sample_pj`` holds the Loihi estimate
    (synops, neuron updates, routing; docs/energy.md) and the 45 nm view (ACs x 0.9 pJ
    + MACs x 4.6 pJ), with the counts behind them.

    Token decoder: ``benchmarks.harness.run_benchmark`` (energy per token against the
    ANN twin); ``decoder_options`` are its keyword arguments (``ann``, ``tokens``,
    ``prompts``, ``data``, ``variants``, ``gpu_results``, ``oov``). Default backend
    ``lava-sim``.
    """
    m = _as_model(model)
    if m.foreign:
        if decoder_options:
            raise UserError(f"options {', '.join(sorted(decoder_options))} apply to token "
                            "decoders; a foreign graph is benchmarked on inputs")
        if inputs is None:
            raise UserError("a foreign NIR graph is benchmarked on your data: give inputs "
                            "(--input X.npy, spike trains (samples, steps, inputs))")
        backend = backend or "emulator"
        if backend not in ("int", "emulator", "lava-sim", "loihi2"):
            raise UserError(f"energy is counted on the integer backends (int, emulator, "
                            f"lava-sim, loihi2), not {backend}")
        from snn_compile.benchmarks.foreign import bench_samples
        res = _run_foreign(m, inputs, backend, None, None, progress, check=True)
        return bench_samples(res["qgraph"], res, backend, mean_hops)
    from snn_compile.benchmarks.harness import run_benchmark
    if m.kind == "qgraph":
        raise UserError(f"{m.source} is a compiled decoder; bench its checkpoint or .nir "
                        "(the harness runs the float model too)")
    if m.source.startswith("<"):
        raise UserError("bench a token decoder from its file (checkpoint or .nir path)")
    opts = dict(decoder_options)
    opts.setdefault("ann", "default:ann")
    ann = opts.pop("ann")
    return run_benchmark(m.source, ann, backend=backend or "lava-sim", mean_hops=mean_hops,
                         progress=progress, out_dir=None, **opts)


# ----------------------------------------------------------- Hugging Face LMs
def evaluate_hf(path, *, encoding: str = "none", bits: int = 8,
                threshold: Optional[float] = None, tokenizer: str = "auto",
                data: Optional[str] = None, max_tokens: Optional[int] = 4096,
                energy: bool = False, progress=None) -> dict:
    """Loss of a local Hugging Face causal LM (``--hf PATH``), its activations entering
    every linear layer spike-encoded (``encoding`` none, binary, ternary, bitwise with
    ``bits``): ``val_loss`` (nats/token), ``ppl``, ``bpc`` (bits per character of the
    scored text), spikes and ACs per token; with ``energy`` also MACs and the energy per
    token in the 45 nm view (``benchmarks/hf.py``). ``tokenizer``: ``auto`` (the folder's
    own; an error when it has none) or ``bytes``; ``tokenizer`` in the result names the
    one used. Nothing is downloaded.
    """
    from snn_compile.models.hf import evaluate_hf as _eval, load_hf
    if max_tokens is not None and max_tokens < 1:
        raise UserError(f"max_tokens must be >= 1, got {max_tokens}")
    model, tok, encoded = load_hf(os.fspath(path), encoding, bits, threshold, tokenizer)
    ev = _eval(model, tok, encoded, data, max_tokens, progress=progress)
    ev.update(hf=os.fspath(path), encoding=encoding,
              encoding_params=encoded.encoding.describe() if encoded is not None else None)
    if energy:
        from snn_compile.benchmarks.hf import hf_energy
        ev.update(hf_energy(model, ev, encoded))
    return ev


# ---------------------------------------------------------------------- helpers
def _as_model(model) -> Model:
    return model if isinstance(model, Model) else load(model)


__all__ = ["Model", "load", "train", "export", "compile", "run", "evaluate", "bench",
           "evaluate_hf", "BACKENDS"]

