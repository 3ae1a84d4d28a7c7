"""Nothing lost, nothing silent: the real CLI on a battery of bad inputs.

For every case: a non-zero exit, no traceback, one ``error:`` line that names the
problem, and no new or changed file left behind (the whole input folder, outputs
included, is compared before and after). The cases run through
``snn_compile.cli.main.main`` in this process (the code the ``snn-compile`` script
runs; an exception escaping it is the traceback a user would see), a sample of them
through the installed console script too. Generated cases: hypothesis draws option
values outside their ranges and mutations of a valid NIR graph. Then two writers on
one path, and a malicious pickle that must not run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import h5py
import nir
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snn_compile.cli.main import main
from snn_compile.data import make_tokenizer
from snn_compile.errors import atomic_path
from snn_compile.export.nir_io import write_nir
from snn_compile.export.to_nir import export_model
from snn_compile.models.checkpoint import FORMAT, build_model, save_checkpoint
from snn_compile.models.config import ModelConfig

TEXT = "the quick brown fox jumps over the lazy dog; pack my box with five jugs. " * 30


# --------------------------------------------------------------------------- inputs
def _tiny(tok, seed=0):
    torch.manual_seed(seed)
    return build_model(ModelConfig(kind="spikedecoder", vocab_size=tok.vocab_size, d_model=16,
                                   n_layers=1, n_heads=2, context=16, timesteps=2)).eval()


def _lif(n):
    return nir.LIF(tau=np.full(n, 0.02), r=np.ones(n), v_leak=np.zeros(n),
                   v_threshold=np.ones(n))


def foreign_graph(**change):
    """Input(3) -> Linear(2x3) -> LIF(2) -> Output(2): a valid foreign graph."""
    nodes = {"input": nir.Input(input_type=np.array([3])),
             "w": nir.Linear(weight=np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.5]])),
             "lif": _lif(2), "output": nir.Output(output_type=np.array([2]))}
    edges = [("input", "w"), ("w", "lif"), ("lif", "output")]
    nodes.update(change.pop("nodes", {}))
    for k in change.pop("drop", ()):
        del nodes[k]
    edges = change.pop("edges", edges)
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def _flip(data: bytes, at: int, n: int = 64) -> bytes:
    b = bytearray(data)
    for i in range(at, at + n):
        b[i] ^= 0xFF
    return bytes(b)


class Evil:
    """Unpickling this runs ``touch MARKER``: what a hostile checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def read_only_dir(tmp: Path):
    """A folder this process cannot write in, or None (root ignores permissions)."""
    if os.geteuid() != 0:
        d = tmp / "readonly"
        d.mkdir()
        d.chmod(0o555)
        return d
    for d in ("/sys", "/proc/sys"):
        if os.path.isdir(d) and not os.access(d, os.W_OK):
            return Path(d)
    return None


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_inputs")
    tok = make_tokenizer("char", TEXT)
    m = _tiny(tok)
    save_checkpoint(str(d / "tiny.pt"), m, tok, {"steps": 0})
    save_checkpoint(str(d / "tiny2.pt"), _tiny(tok, seed=1), tok, {"steps": 0})
    write_nir(export_model(m, tok), str(d / "tiny.nir"))
    data = (d / "tiny.pt").read_bytes()
    (d / "flip.pt").write_bytes(_flip(data, len(data) - 2000))          # inside a weight
    (d / "hflip.pt").write_bytes(_flip(data, 40, 1))                    # inside the header
    (d / "trunc.pt").write_bytes(data[: len(data) // 2])
    (d / "empty.pt").write_bytes(b"")
    (d / "junk.pt").write_bytes(b"this is not a checkpoint at all" * 8)
    bad = build_model(m.cfg)
    bad.load_state_dict(m.state_dict())
    with torch.no_grad():
        next(bad.parameters()).view(-1)[0] = float("nan")
    save_checkpoint(str(d / "nan.pt"), bad, tok, {"steps": 9})
    payload = {"format": FORMAT, "version": 1, "model_kind": "spikedecoder",
               "config": m.cfg.to_dict(), "tokenizer": tok.to_dict(),
               "state_dict": m.state_dict(), "train_info": {}}
    torch.save(payload, d / "old.pt")
    torch.save(dict(payload, train_info=Evil(d / "PWNED")), d / "evil.pt")
    import pickle
    (d / "evil.pkl").write_bytes(pickle.dumps(Evil(d / "PWNED"), protocol=2))
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(d / "foreign.safetensors"))
    # NIR files
    nir.write(str(d / "foreign.nir"), foreign_graph())
    g = foreign_graph()
    g.nodes["w"].weight[0, 1] = np.nan
    nir.write(str(d / "nan.nir"), g)
    nir.write(str(d / "rockpool.nir"), foreign_graph(nodes={
        "output": nir.Output(output_type=np.array([2, 1]))}))          # nir.read rejects it
    nir.write(str(d / "dangling.nir"), foreign_graph(edges=[("input", "w"), ("w", "lif"),
                                                            ("lif", "output"), ("w", "ghost")]))
    # NIR allows recurrent edges; a loop through two neuron nodes has no Loihi 2 timing
    nir.write(str(d / "cycle.nir"), foreign_graph(
        nodes={"back": nir.Linear(weight=np.eye(2)), "lif2": _lif(2),
               "back2": nir.Linear(weight=np.eye(2))},
        edges=[("input", "w"), ("w", "lif"), ("lif", "back"), ("back", "lif2"),
               ("lif2", "back2"), ("back2", "lif"), ("lif", "output")]))
    nir.write(str(d / "shape.nir"), foreign_graph(nodes={
        "w": nir.Linear(weight=np.ones((2, 5)))}))
    nir.write(str(d / "dupedge.nir"), foreign_graph(edges=[("input", "w"), ("w", "lif"),
                                                           ("w", "lif"), ("lif", "output")]))
    nir.write(str(d / "tau0.nir"), foreign_graph(nodes={"lif": nir.LIF(
        tau=np.zeros(2), r=np.ones(2), v_leak=np.zeros(2), v_threshold=np.ones(2))}))
    nir.write(str(d / "size0.nir"), foreign_graph(nodes={
        "input": nir.Input(input_type=np.array([0])), "w": nir.Linear(weight=np.ones((2, 0)))}))
    shutil.copy(d / "foreign.nir", d / "w1d.nir")
    with h5py.File(d / "w1d.nir", "r+") as f:
        del f["node/nodes/w/weight"]
        f["node/nodes/w"].create_dataset("weight", data=np.ones(3))
    shutil.copy(d / "foreign.nir", d / "alien.nir")
    with h5py.File(d / "alien.nir", "r+") as f:
        del f["node/nodes/w/type"]
        f["node/nodes/w"].create_dataset("type", data="QuantumLinear", dtype=h5py.string_dtype())
    shutil.copy(d / "tiny.nir", d / "tiny_nan.nir")
    with h5py.File(d / "tiny_nan.nir", "r+") as f:
        w = f["node/nodes/head/weight"]
        a = w[()]
        a[0, 0] = np.inf
        w[...] = a
    nd = (d / "foreign.nir").read_bytes()
    (d / "trunc.nir").write_bytes(nd[: len(nd) // 2])
    (d / "junk.nir").write_bytes(b"not hdf5" * 40)
    (d / "empty.nir").write_bytes(b"")
    assert main(["compile", str(d / "foreign.nir"), "--steps", "4", "-o",
                 str(d / "good.qgraph")]) == 0
    q = (d / "good.qgraph").read_bytes()
    (d / "trunc.qgraph").write_bytes(q[: len(q) // 2])
    (d / "junk.qgraph").write_bytes(b"PK\x03\x04" + b"garbage" * 20)
    # texts
    (d / "corpus.txt").write_text(TEXT)
    (d / "latin1.txt").write_bytes("caf\xe9 au lait ".encode("latin-1") * 100)
    (d / "empty.txt").write_bytes(b"")
    (d / "blank.txt").write_text("   \n\n\t\n")
    (d / "short.txt").write_text("the quick!")                         # 10 bytes
    (d / "oov.txt").write_text(TEXT + "the fox costs € now. " + TEXT[:200])
    (d / "oov_prompts.txt").write_text("the fox €\nthe dog\n")
    (d / "junk.json").write_text("{not json")
    (d / "a_file.txt").write_text("x")
    (d / "adir").mkdir()
    (d / "notreport").mkdir()
    (d / "notreport" / "mine.txt").write_text("keep me")
    return d


def snapshot(root: Path) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st_ = p.lstat()
            out[str(p.relative_to(root))] = (st_.st_mode, st_.st_size, st_.st_mtime_ns)
    return out


def run_in_process(argv, capsys):
    """(exit status, stdout, stderr) of the CLI; an exception escaping it fails the test."""
    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:          # argparse
        rc = e.code
    except BaseException as e:       # noqa: BLE001 — this is the traceback a user would see
        pytest.fail(f"traceback instead of an error for {argv}: {type(e).__name__}: {e}")
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_clear_error(rc, err, needles, argv):
    assert rc not in (0, None), f"{argv}: exit {rc}, accepted silently; stderr: {err}"
    assert "Traceback" not in err, err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, f"{argv}: want one error line, got:\n{err}"
    assert err.rstrip().splitlines()[-1] == errors[0], f"{argv}: the error is not last:\n{err}"
    low = errors[0].lower()
    for n in ([needles] if isinstance(needles, str) else needles):
        assert n.lower() in low, f"{argv}: {n!r} not in {errors[0]!r}"
    return errors[0]


# ---------------------------------------------------------------------- the battery
# (argv, what the message must name); paths are relative to the inputs folder
BATTERY = [
    # -- train: options, output paths, corpora
    (["train", "--steps", "0", "-o", "new.pt"], ["--steps", ">= 1", "'0'"]),
    (["train", "--steps", "-3", "-o", "new.pt"], ["--steps", ">= 1"]),
    (["train", "--batch-size", "0", "-o", "new.pt"], ["--batch-size", ">= 1"]),
    (["train", "--lr", "-1", "-o", "new.pt"], ["--lr", "> 0"]),
    (["train", "--lr", "nan", "-o", "new.pt"], ["--lr", "finite"]),
    (["train", "--int8", "--steps", "2", "-o", "new.pt"], ["--int8", "--device cuda"]),
    (["train", "--bf16-grads", "--steps", "2", "-o", "new.pt"], ["--bf16-grads", "--device cuda"]),
    (["train", "--int8", "--device", "cuda", "-o", "new.pt"], ["--int8", "--residual stream"]),
    (["train", "--int8", "--device", "cuda", "--residual", "stream", "--no-deployable", "-o",
      "new.pt"], ["--int8", "--no-deployable"]),
    (["train", "--lr", "fast", "-o", "new.pt"], ["--lr", "'fast'"]),
    (["train", "--context", "0", "-o", "new.pt"], ["--context", ">= 1"]),
    (["train", "--heads", "0", "-o", "new.pt"], ["--heads"]),
    (["train", "--d-model", "64", "--heads", "3", "-o", "new.pt"], ["not divisible"]),
    (["train", "--eval-interval", "0", "-o", "new.pt"], ["--eval-interval"]),
    (["train", "--seed", "-1", "-o", "new.pt"], ["--seed", "0 to"]),
    (["train", "--token-shift", "3", "-o", "new.pt"], ["--token-shift", "0, 1, 2"]),
    (["train", "--attention-memory", "decay", "-o", "new.pt"], ["needs --residual stream"]),
    (["train", "--residual", "stream", "--model", "ann", "-o", "new.pt"], ["spikedecoder only"]),
    (["train", "--population", "1", "-o", "new.pt"], ["--population", ">= 2"]),
    (["train", "--model", "ann", "--attention-floor", "0.02", "-o", "new.pt"],
     ["--attention-floor", "--model spikedecoder"]),
    (["train", "--attention-floor", "1.5", "-o", "new.pt"], ["--attention-floor"]),
    (["train", "--timesteps", "2.5", "-o", "new.pt"], ["--timesteps", "integer"]),
    (["train", "-o", "adir"], ["adir", "folder"]),
    (["train", "--steps", "1", "-o", "corpus.txt"], ["corpus.txt", "not an snn_compile checkpoint"]),
    (["train", "--steps", "1", "-o", "tiny.nir"], ["tiny.nir", "would replace it"]),
    (["train", "-o", "missing_dir/new.pt"], ["missing_dir", "does not exist"]),
    (["train", "-o", "a_file.txt/new.pt"], ["a_file.txt", "not a folder"]),
    (["train", "--data", "latin1.txt", "--steps", "1", "-o", "new.pt"], ["latin1.txt", "utf-8"]),
    (["train", "--data", "empty.txt", "--steps", "1", "-o", "new.pt"], ["empty.txt", "empty"]),
    (["train", "--data", "blank.txt", "--steps", "1", "-o", "new.pt"], ["whitespace"]),
    (["train", "--data", "adir", "--steps", "1", "-o", "new.pt"], ["adir", "directory"]),
    (["train", "--data", "short.txt", "--steps", "1", "-o", "new.pt"], ["tokens", "longer"]),
    (["train", "--resume", "--steps", "1", "-o", "new.pt"], ["--resume", "does not exist"]),
    (["train", "--resume", "--steps", "2", "-o", "old.pt"], ["old.pt", "pickle", "convert"]),
    # -- checkpoints, in every command that loads one
    (["eval", "flip.pt"], ["flip.pt", "checksum", "restore", "retrain"]),
    (["eval", "hflip.pt"], ["hflip.pt", "corrupt"]),
    (["eval", "trunc.pt"], ["trunc.pt", "truncated"]),
    (["eval", "empty.pt"], ["empty.pt", "empty"]),
    (["eval", "junk.pt"], ["junk.pt", "not an snn_compile checkpoint"]),
    (["eval", "old.pt"], ["old.pt", "convert_checkpoint"]),
    (["eval", "foreign.safetensors"], ["foreign.safetensors", "not an snn_compile"]),
    (["eval", "nan.pt"], ["nan.pt", "nan or infinite"]),
    (["eval", "tiny.nir"], ["tiny.nir", "nir graph, not a checkpoint"]),
    (["eval", "good.qgraph"], ["good.qgraph", "compiled graph"]),
    (["eval", "missing.pt"], ["missing.pt", "does not exist"]),
    (["eval", "adir"], ["adir", "folder"]),
    (["eval", "default:gpt"], ["default:gpt"]),
    (["export", "flip.pt", "-o", "new.nir"], ["flip.pt", "checksum"]),
    (["compile", "flip.pt", "-o", "new.qgraph"], ["flip.pt", "checksum"]),
    (["generate", "flip.pt", "--prompt", "the"], ["flip.pt", "checksum"]),
    (["generate", "flip.pt", "--prompt", "the", "--backend", "int"], ["flip.pt", "checksum"]),
    (["bench", "flip.pt", "--backend", "int", "--out", "rep"], ["flip.pt", "checksum"]),
    (["bench", "tiny.pt", "--ann", "trunc.pt", "--backend", "int", "--out", "rep"],
     ["trunc.pt"]),
    # -- eval: data and options
    (["eval", "tiny.pt", "--data", "short.txt"], ["short.txt", "fixed by the model"]),
    (["eval", "tiny.pt", "--data", "oov.txt", "--oov", "error"], ["'€'", "u+20ac", "line"]),
    (["eval", "tiny.pt", "--data", "latin1.txt"], ["latin1.txt", "utf-8"]),
    (["eval", "tiny.pt", "--max-tokens", "0"], ["--max-tokens"]),
    (["eval", "tiny.pt", "--max-tokens", "5"], ["--max-tokens 5", "context (16 tokens"]),
    (["eval", "tiny.pt", "--encoding", "binary"], ["spikes already"]),
    (["eval", "tiny.pt", "--threshold", "-1", "--encoding", "binary"], ["--threshold"]),
    (["eval", "tiny.pt", "--bits", "1", "--encoding", "bitwise"], ["--bits", "2 to 16"]),
    (["eval", "tiny.pt", "--oov", "ignore"], ["--oov", "invalid choice"]),
    # -- export
    (["export", "tiny.pt", "-o", "new.pt"], ["new.pt", ".nir"]),
    (["export", "tiny.pt", "-o", "adir"], ["adir", "folder"]),
    (["export", "tiny.pt", "-o", "missing_dir/new.nir"], ["missing_dir"]),
    (["export", "default:ann", "-o", "new.nir"], ["not spiking"]),
    # -- NIR files
    (["inspect", "junk.nir"], ["junk.nir", "corrupt or truncated"]),
    (["inspect", "trunc.nir"], ["trunc.nir", "corrupt or truncated"]),
    (["inspect", "empty.nir"], ["empty.nir"]),
    (["inspect", "alien.nir"], ["alien.nir", "QuantumLinear", "w (QuantumLinear)", "re-export"]),
    (["inspect", "missing.nir"], ["missing.nir", "does not exist"]),
    (["inspect", "tiny.pt"], ["tiny.pt", "not a readable nir file"]),
    (["compile", "nan.nir", "--steps", "4", "-o", "new.qgraph"], ["node w", "weight", "nan"]),
    (["compile", "rockpool.nir", "--steps", "4", "-o", "new.qgraph"], ["nir.read", "output"]),
    (["compile", "dangling.nir", "--steps", "4", "-o", "new.qgraph"], ["ghost"]),
    (["compile", "cycle.nir", "--steps", "4", "-o", "new.qgraph"],
     ["loop through several neuron nodes", "lif, lif2"]),
    (["compile", "shape.nir", "--steps", "4", "-o", "new.qgraph"], ["w", "takes"]),
    (["compile", "alien.nir", "--steps", "4"], ["QuantumLinear"]),
    (["compile", "dupedge.nir", "--steps", "4", "-o", "new.qgraph"], ["duplicate edge", "'w'"]),
    (["compile", "tau0.nir", "--steps", "4", "-o", "new.qgraph"], ["node lif", "tau", "positive"]),
    (["compile", "size0.nir", "--steps", "4", "-o", "new.qgraph"], ["node input", "size 0"]),
    (["inspect", "w1d.nir"], ["w1d.nir", "node w (Linear)", "2D"]),
    (["generate", "tiny_nan.nir", "--backend", "nir", "--prompt", "a"], ["node head", "weight"]),
    (["compile", "tiny_nan.nir", "-o", "new.qgraph"], ["node head", "infinity"]),
    (["bench", "tiny_nan.nir", "--backend", "int", "--out", "rep"], ["node head", "weight"]),
    (["generate", "nan.nir", "--backend", "int", "--prompt", "a"], ["nan.nir", "foreign"]),
    (["generate", "rockpool.nir", "--backend", "int", "--prompt", "a"], ["nir.read"]),
    # -- compile: options and outputs
    (["compile", "foreign.nir"], ["foreign.nir", "--steps"]),
    (["compile", "foreign.nir", "--steps", "0"], ["--steps", ">= 1", "'0'"]),
    (["compile", "foreign.nir", "--steps", "-4"], ["--steps", ">= 1"]),
    (["compile", "foreign.nir", "--steps", "4", "--check-rate", "0"], ["--check-rate", "(0, 1]"]),
    (["compile", "foreign.nir", "--steps", "4", "--seed", "x"], ["--seed"]),
    (["compile", "tiny.nir", "--steps", "4"], ["--steps", "foreign"]),
    (["compile", "tiny.pt", "-o", "adir"], ["adir", "folder"]),
    (["compile", "tiny.pt", "-o", "new.bin"], ["new.bin", ".qgraph"]),
    (["compile", "junk.qgraph"], ["junk.qgraph", "corrupt"]),
    (["compile", "trunc.qgraph"], ["trunc.qgraph", "corrupt"]),
    # -- generate
    (["generate", "tiny.pt", "-n", "-5", "--prompt", "the"], ["--tokens", ">= 1", "'-5'"]),
    (["generate", "tiny.pt", "-n", "0", "--prompt", "the"], ["--tokens", ">= 1"]),
    (["generate", "tiny.pt", "--prompt", ""], ["--prompt", "empty"]),
    (["generate", "tiny.pt", "--prompt", "the €", "--oov", "error"], ["--prompt", "'€'"]),
    (["generate", "tiny.pt", "--prompt", "the", "--temperature", "-1"], ["--temperature"]),
    (["generate", "tiny.pt", "--prompt", "the", "--top-k", "0"], ["--top-k"]),
    (["generate", "tiny.pt", "--prompt", "the", "--seed", "-2"], ["--seed"]),
    (["generate", "foreign.nir", "--backend", "nir", "--prompt", "a"], ["foreign nir graph"]),
    (["generate", "tiny.nir", "--prompt", "a"], ["--backend nir"]),
    (["generate", "junk.qgraph", "--backend", "int", "--prompt", "a"], ["junk.qgraph"]),
    (["generate", "--prompt", "the"], ["name a model"]),
    # -- bench
    (["bench", "foreign.nir", "--backend", "int", "--out", "rep"], ["foreign nir graph"]),
    (["bench", "tiny.pt", "--tokens", "0"], ["--tokens", ">= 1"]),
    (["bench", "tiny.pt", "--mean-hops", "-1"], ["--mean-hops"]),
    (["bench", "tiny.pt", "--out", "a_file.txt"], ["a_file.txt", "is a file"]),
    (["bench", "tiny.pt", "--out", "notreport"], ["notreport", "not a benchmark report"]),
    (["bench", "tiny.pt", "--out", "missing_dir/rep"], ["missing_dir", "does not exist"]),
    (["bench", "tiny.pt", "--backend", "int", "--gpu-results", "junk.json", "--out", "rep"],
     ["junk.json", "json"]),
    (["bench", "tiny.pt", "--backend", "int", "--variants", "junk.pt", "--out", "rep"],
     ["junk.pt"]),
    (["bench", "tiny.pt", "--backend", "int", "--prompts", "oov_prompts.txt", "--oov", "error",
      "--ann", "tiny2.pt", "--out", "rep"], ["oov_prompts.txt", "'€'"]),
    (["bench", "tiny.pt", "--backend", "int", "--tokens", "1000000", "--ann", "tiny2.pt",
      "--out", "rep"], ["--tokens 1000000"]),
    (["bench", "tiny.pt", "--backend", "emulator", "--data", "empty.txt", "--out", "rep"],
     ["empty.txt"]),
    (["bench", "tiny.pt", "--prompts", "adir", "--backend", "int", "--ann", "tiny2.pt",
      "--out", "rep"], ["adir", "is a folder"]),
    (["train", "--data", "corpus.txt", "--d-model", "400000", "--heads", "4", "--steps", "1",
      "-o", "new.pt"], ["out of memory", "--d-model"]),
    (["frobnicate"], ["invalid choice"]),
]


def test_the_battery_is_large_enough():
    assert len(BATTERY) >= 60
    assert len({tuple(a) for a, _ in BATTERY}) == len(BATTERY)


@pytest.mark.parametrize("argv,needles", BATTERY, ids=[" ".join(a)[:60] for a, _ in BATTERY])
def test_bad_input_ends_in_one_clear_error_and_leaves_no_file(inputs, capsys, monkeypatch,
                                                              argv, needles):
    monkeypatch.chdir(inputs)
    before = snapshot(inputs)
    rc, out, err = run_in_process(argv, capsys)
    assert_one_clear_error(rc, err, needles, argv)
    assert snapshot(inputs) == before, "a file was created, changed or left behind"


def test_read_only_output_folder_is_refused_before_any_work(inputs, capsys, monkeypatch,
                                                            tmp_path):
    ro = read_only_dir(tmp_path)
    if ro is None:
        pytest.skip("no read-only folder available to this user")
    monkeypatch.chdir(inputs)
    for argv, needle in [(["train", "--steps", "1", "-o", ro / "new.pt"], "not writable"),
                         (["export", "tiny.pt", "-o", ro / "new.nir"], "not writable"),
                         (["compile", "tiny.pt", "-o", ro / "new.qgraph"], "not writable"),
                         (["bench", "tiny.pt", "--out", ro / "rep"], "not writable")]:
        before = snapshot(inputs)
        rc, _, err = run_in_process(argv, capsys)
        assert_one_clear_error(rc, err, [needle, str(ro)], argv)
        assert snapshot(inputs) == before


def test_eval_on_cuda_without_a_gpu_is_refused(inputs, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["eval", inputs / "tiny.pt", "--backend", "emulator", "--device", "cuda"]
    rc, _, err = run_in_process(argv, capsys)
    assert_one_clear_error(rc, err, ["--device cuda", "--device cpu"], argv)


# a sample through the installed console script: a real process, its real exit status
REAL = ["train --lr -1", "eval flip.pt", "eval old.pt", "export tiny.pt -o new.pt",
        "compile nan.nir", "compile rockpool.nir", "generate tiny.pt -n -5",
        "bench foreign.nir"]


@pytest.mark.parametrize("start", REAL)
def test_bad_input_through_the_console_script(inputs, run_cli, start):
    argv, needles = next(c for c in BATTERY if " ".join(c[0]).startswith(start))
    before = snapshot(inputs)
    r = run_cli(*argv, cwd=inputs)
    assert r.returncode == 2, r.stderr
    assert_one_clear_error(r.returncode, r.stderr, needles, argv)
    assert snapshot(inputs) == before


def test_inspect_lists_graphs_that_cannot_be_compiled_and_says_why(inputs, capsys):
    """A readable but broken graph is listed (exit 0), marked not deployable, with the reason
    naming the node or the problem; a valid foreign graph is deployable."""
    import json
    why = {"nan.nir": "node w", "rockpool.nir": "nir.read", "dangling.nir": "ghost",
           "cycle.nir": "loop through several", "shape.nir": "w takes 5"}
    for name, needle in why.items():
        rc, out, err = run_in_process(["inspect", inputs / name, "--json"], capsys)
        assert rc == 0, err
        info = json.loads(out)
        assert info["deployable"] is False and needle in info["deployable_why"], info
        assert {n["name"] for n in info["nodes"]} >= {"input", "w", "lif", "output"}
    rc, out, _ = run_in_process(["inspect", inputs / "rockpool.nir"], capsys)
    assert rc == 0 and "deployable on Loihi 2: no" in out and "nir.read" in out
    rc, out, _ = run_in_process(["inspect", inputs / "foreign.nir", "--json"], capsys)
    assert rc == 0 and json.loads(out)["deployable"] is True


# --------------------------------------------------------------- generated: options
# (command, required arguments, option, type, lower, upper, lower bound excluded)
OPTIONS = [
    ("train", ["-o", "new.pt"], "--steps", int, 1, None, False),
    ("train", ["-o", "new.pt"], "--batch-size", int, 1, None, False),
    ("train", ["-o", "new.pt"], "--context", int, 1, None, False),
    ("train", ["-o", "new.pt"], "--token-shift", int, 0, 2, False),
    ("train", ["-o", "new.pt"], "--seed", int, 0, 2 ** 32 - 1, False),
    ("train", ["-o", "new.pt"], "--lr", float, 0.0, None, True),
    ("eval", ["tiny.pt"], "--max-tokens", int, 1, None, False),
    ("eval", ["tiny.pt"], "--bits", int, 2, 16, False),
    ("eval", ["tiny.pt"], "--threshold", float, 0.0, None, False),
    ("compile", ["foreign.nir"], "--steps", int, 1, None, False),
    ("compile", ["foreign.nir"], "--check-rate", float, 0.0, 1.0, True),
    ("generate", ["tiny.pt"], "--tokens", int, 1, None, False),
    ("generate", ["tiny.pt"], "--temperature", float, 0.0, None, False),
    ("generate", ["tiny.pt"], "--top-k", int, 1, None, False),
    ("bench", [], "--tokens", int, 1, None, False),
    ("bench", [], "--mean-hops", float, 0.0, None, False),
]


def _outside(kind, lo, hi, lo_open):
    if kind is int:
        below = st.integers(max_value=lo - 1)
        above = st.integers(min_value=hi + 1) if hi is not None else st.nothing()
        other = st.sampled_from(["1.5", "abc", "", "nan", "1e3", "0x10"])
        return st.one_of(below.map(str), above.map(str), other)
    below = st.floats(max_value=lo, allow_nan=False, allow_infinity=False,
                      exclude_max=not lo_open)
    above = (st.floats(min_value=hi, allow_nan=False, allow_infinity=False, exclude_min=True)
             if hi is not None else st.nothing())
    return st.one_of(below.map(repr), above.map(repr),
                     st.sampled_from(["nan", "inf", "-inf", "abc", "", "1,5"]))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_generated_out_of_range_option_values_are_refused_at_parse_time(inputs, capsys,
                                                                       monkeypatch, data):
    monkeypatch.chdir(inputs)
    cmd, req, opt, kind, lo, hi, lo_open = data.draw(st.sampled_from(OPTIONS))
    value = data.draw(_outside(kind, lo, hi, lo_open))
    argv = [cmd, *req, f"{opt}={value}"]
    before = snapshot(inputs)
    rc, _, err = run_in_process(argv, capsys)
    assert rc == 2
    line = assert_one_clear_error(rc, err, [opt], argv)
    assert "must be" in line and repr(value) in line          # the range and the value
    assert snapshot(inputs) == before


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_generated_in_range_option_values_parse(data):
    from snn_compile.cli.main import build_parser
    cmd, req, opt, kind, lo, hi, lo_open = data.draw(st.sampled_from(OPTIONS))
    if kind is int:
        v = data.draw(st.integers(lo, hi if hi is not None else lo + 10 ** 6))
    else:
        v = data.draw(st.floats(lo, hi if hi is not None else 1e6, exclude_min=lo_open,
                                allow_nan=False))
    args = build_parser(cmd).parse_args([cmd, *req, f"{opt}={v!r}"])
    assert getattr(args, opt.lstrip("-").replace("-", "_")) == v


# ------------------------------------------------------------ generated: NIR mutations
def _mutant(kind, field, idx, value, name):
    """A broken variant of the valid foreign graph and what its error must name."""
    g = foreign_graph()
    if kind == "non-finite":
        node = {"weight": "w", "tau": "lif", "r": "lif", "v_threshold": "lif"}[field]
        a = np.array(getattr(g.nodes[node], field), dtype=np.float64)
        a.flat[idx % a.size] = value
        setattr(g.nodes[node], field, a)
        return g, [f"node {node} (", f"parameter {field}", "non-finite"]
    if kind == "dangling":
        g.edges.append(("lif", name))
        return g, [f"lif -> {name}", "does not exist"]
    if kind == "dangling-source":
        g.edges.append((name, "lif"))
        return g, [f"{name} -> lif", "does not exist"]
    if kind == "unfed":
        g.edges.remove(("input", "w"))
        return g, ["node w has no incoming edge"]
    if kind == "shape":
        k = 4 + idx % 5
        g.nodes["w"] = nir.Linear(weight=np.ones((2, k)))
        return g, [f"input gives 3 values, w takes {k}"]
    if kind == "cycle":            # NIR allows cycles; one of weight nodes only has no state
        g.nodes["back"] = nir.Linear(weight=np.eye(2))
        g.nodes["back2"] = nir.Linear(weight=np.eye(2) * 0.5)
        g.edges += [("w", "back"), ("back", "back2"), ("back2", "back"), ("back", "lif")]
        return g, ["weight nodes only", "back"]
    if kind == "no-output":
        del g.nodes["output"]
        g.edges.remove(("lif", "output"))
        return g, ["no output node"]
    if kind == "time-constant":
        g.nodes["lif"].tau = np.array([0.02, -abs(value) if np.isfinite(value) else 0.0])
        return g, ["node lif (LIF)", "tau must be positive"]
    if kind == "duplicate-edge":
        g.edges.append(g.edges[idx % len(g.edges)])
        return g, ["duplicate edge"]
    raise AssertionError(kind)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(kind=st.sampled_from(["non-finite", "dangling", "dangling-source", "unfed", "shape",
                             "cycle", "no-output", "time-constant", "duplicate-edge"]),
       field=st.sampled_from(["weight", "tau", "r", "v_threshold"]),
       idx=st.integers(0, 100), value=st.sampled_from([np.nan, np.inf, -np.inf]),
       name=st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(
           lambda s: s not in ("input", "w", "lif", "output")))
def test_generated_graph_mutations_end_in_one_error_naming_the_problem(
        tmp_path_factory, capsys, kind, field, idx, value, name):
    import json
    d = tmp_path_factory.mktemp("mutant")
    g, needles = _mutant(kind, field, idx, value, name)
    path = d / "g.nir"
    nir.write(str(path), g)
    before = snapshot(d)
    argv = ["compile", path, "--steps", "4", "-o", d / "g.qgraph"]
    rc, _, err = run_in_process(argv, capsys)
    assert_one_clear_error(rc, err, needles, argv)
    assert snapshot(d) == before
    rc, out, err = run_in_process(["inspect", path, "--json"], capsys)
    assert rc == 0, err
    info = json.loads(out)
    assert info["deployable"] is False
    assert all(n.lower() in info["deployable_why"].lower() for n in needles), info


def _decoder_params(nir_path):
    """(flat node name, field, HDF5 dataset path) of every float parameter array of the
    exported decoder that is stored as a plain dataset."""
    from snn_compile.export.nir_io import flatten, read_nir
    flat = flatten(read_nir(str(nir_path)))
    out = []
    with h5py.File(nir_path, "r") as f:
        for n, node in flat.nodes.items():
            for field, a in vars(node).items():
                if not (isinstance(a, np.ndarray) and a.dtype.kind == "f" and a.size):
                    continue
                for h5 in (f"node/nodes/{n}/{field}",
                           "node/nodes/" + "/nodes/".join(n.split(".")) + "/" + field):
                    if h5 in f:
                        out.append((n, field, h5))
                        break
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_generated_non_finite_decoder_parameters_are_named(inputs, tmp_path_factory, capsys,
                                                           data):
    """A NaN or infinity in any parameter of an exported decoder: compile, generate and bench
    stop with an error naming that node and parameter; inspect says not deployable."""
    import json
    params = _decoder_params(inputs / "tiny.nir")
    assert len(params) > 20
    node, field, h5 = data.draw(st.sampled_from(params))
    value = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    d = tmp_path_factory.mktemp("decoder_mutant")
    path = d / "m.nir"
    shutil.copy(inputs / "tiny.nir", path)
    with h5py.File(path, "r+") as f:
        a = f[h5][()]
        a.flat[data.draw(st.integers(0, a.size - 1))] = value
        f[h5][...] = a
    needles = [f"node {node} (", f"parameter {field}"]
    before = snapshot(d)
    for argv in (["compile", path, "-o", d / "m.qgraph"],
                 ["generate", path, "--backend", "nir", "--prompt", "the"],
                 ["bench", path, "--backend", "int", "--out", d / "rep"]):
        rc, _, err = run_in_process(argv, capsys)
        assert_one_clear_error(rc, err, needles, argv)
        assert snapshot(d) == before
    rc, out, _ = run_in_process(["inspect", path, "--json"], capsys)
    info = json.loads(out)
    assert rc == 0 and info["deployable"] is False and f"node {node} (" in info["deployable_why"]


# --------------------------------------------------------------- two writers, one path
def _export_cli_args(ckpt, out):
    return ["export", str(ckpt), "-o", str(out)]


def test_two_exports_to_one_path_never_lose_the_file(inputs, capsys, monkeypatch, tmp_path):
    """Writer B finishes while writer A is between writing and renaming: both exit 0, both
    said "wrote", and the file that stays is A's, complete and correct (with the old code
    A's read-back found B's graph, called it a mismatch and deleted it: no file)."""
    from snn_compile.export import nir_io

    out = tmp_path / "same.nir"
    real_read = nir_io.read_nir
    state = {"b_rc": None}

    def read_and_race(path, *a, **kw):
        if state["b_rc"] is None and os.path.abspath(path) != str(out):
            state["b_rc"] = "running"
            state["b_rc"] = main(_export_cli_args(inputs / "tiny2.pt", out))   # writer B
            assert out.exists()
        return real_read(path, *a, **kw)

    monkeypatch.setattr(nir_io, "read_nir", read_and_race)   # export's run() imports it late
    rc = main(_export_cli_args(inputs / "tiny.pt", out))                      # writer A
    err = capsys.readouterr().err
    assert rc == 0 and state["b_rc"] == 0, err
    assert err.count("wrote ") == 2
    monkeypatch.setattr(nir_io, "read_nir", real_read)
    assert _is_graph_of(out, inputs / "tiny.pt")
    assert not _is_graph_of(out, inputs / "tiny2.pt")
    assert sorted(os.listdir(tmp_path)) == ["same.nir"]


def _is_graph_of(nir_path, ckpt):
    from snn_compile.compiler.pipeline import calibration_tokens
    from snn_compile.export.interpreter import NIRInterpreter, run_tokens
    from snn_compile.export.nir_io import read_nir
    from snn_compile.models.checkpoint import load_checkpoint
    from snn_compile.models.fold import fold
    m, tok, _ = load_checkpoint(str(ckpt))
    f = fold(m)
    toks = calibration_tokens(tok, f.context, n=8)
    got = run_tokens(NIRInterpreter(read_nir(str(nir_path))), toks)
    return torch.equal(f.forward(toks)["logits"], got["logits"])


def test_two_processes_export_different_models_to_one_path(inputs, snn_compile_exe, tmp_path):
    out = tmp_path / "same.nir"
    procs = [subprocess.Popen([str(snn_compile_exe), *_export_cli_args(inputs / c, out)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in ("tiny.pt", "tiny2.pt")]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0 and "wrote " in err and "Traceback" not in err, err
    assert out.exists(), "both writers said 'wrote', and no file is there"
    assert _is_graph_of(out, inputs / "tiny.pt") != _is_graph_of(out, inputs / "tiny2.pt")
    assert sorted(os.listdir(tmp_path)) == ["same.nir"]          # no temporary left behind


def test_sigterm_while_writing_leaves_the_old_file_and_no_temporary(inputs, capsys, monkeypatch,
                                                                     tmp_path):
    """kill (SIGTERM) in the middle of an export: exit 130, the previous file intact."""
    import signal

    from snn_compile.export import nir_io
    out = tmp_path / "m.nir"
    out.write_bytes(b"previous content")
    real_read = nir_io.read_nir

    def killed_while_checking(path, *a, **kw):
        os.kill(os.getpid(), signal.SIGTERM)
        return real_read(path, *a, **kw)

    monkeypatch.setattr(nir_io, "read_nir", killed_while_checking)
    handler = signal.getsignal(signal.SIGTERM)
    rc = main(_export_cli_args(inputs / "tiny.pt", out))
    assert rc == 130 and "interrupted" in capsys.readouterr().err
    assert out.read_bytes() == b"previous content"
    assert os.listdir(tmp_path) == ["m.nir"]
    assert signal.getsignal(signal.SIGTERM) == handler         # main() put it back


def test_atomic_path_two_threads_last_complete_writer_wins(tmp_path):
    path = tmp_path / "f.bin"
    payloads = [bytes([i]) * 200_000 for i in (1, 2)]

    def writer(b):
        for _ in range(20):
            with atomic_path(str(path)) as tmp:
                with open(tmp, "wb") as f:
                    f.write(b[:100_000])
                    f.flush()
                    f.write(b[100_000:])

    ts = [threading.Thread(target=writer, args=(b,)) for b in payloads]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert path.read_bytes() in payloads
    assert os.listdir(tmp_path) == ["f.bin"]


def test_new_outputs_follow_the_umask(inputs, capsys, tmp_path):
    old = os.umask(0o027)
    try:
        assert main(["compile", str(inputs / "foreign.nir"), "--steps", "4", "-o",
                     str(tmp_path / "g.qgraph")]) == 0
        save_checkpoint(str(tmp_path / "c.pt"), _tiny(make_tokenizer("char", TEXT)),
                        make_tokenizer("char", TEXT), {})
    finally:
        os.umask(old)
    for name in ("g.qgraph", "c.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o640, name


# ------------------------------------------------------------------- malicious pickle
def test_a_malicious_pickle_checkpoint_never_runs(inputs, capsys, monkeypatch, run_cli,
                                                  tmp_path):
    marker = inputs / "PWNED"
    monkeypatch.chdir(inputs)
    for ckpt in ("evil.pt", "evil.pkl"):
        for argv in (["eval", ckpt], ["export", ckpt, "-o", "new.nir"],
                     ["compile", ckpt, "-o", "new.qgraph"],
                     ["generate", ckpt, "--prompt", "the"],
                     ["bench", ckpt, "--backend", "int", "--out", "rep"]):
            before = snapshot(inputs)
            rc, _, err = run_in_process(argv, capsys)
            assert_one_clear_error(rc, err, [ckpt, "pickle"], argv)
            assert not marker.exists(), f"{argv} ran the pickle's code"
            assert snapshot(inputs) == before
    shutil.copy(inputs / "evil.pt", tmp_path / "run.pt")
    r = run_cli("train", "--resume", "--steps", "2", "-o", tmp_path / "run.pt", cwd=tmp_path)
    assert r.returncode == 2 and "pickle" in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "run.pt").read_bytes() == (inputs / "evil.pt").read_bytes()
    # the converter's restricted unpickler refuses it too
    r = subprocess.run([sys.executable, "-m", "snn_compile.models.convert_checkpoint",
                        str(inputs / "evil.pt"), str(tmp_path / "new.pt")],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and "not converted" in r.stderr, r.stderr
    assert not marker.exists() and not (tmp_path / "new.pt").exists()
