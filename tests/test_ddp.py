"""DistributedDataParallel training on the CPU: 2 gloo processes under torchrun.

One torchrun launch of tests/ddp_worker.py (module fixture) serves the step
equivalence, determinism, resume and benchmark-worker tests; one more runs the CLI
with ``--nproc 2``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from snn_compile.models.checkpoint import load_checkpoint, load_raw
from snn_compile.models.config import ModelConfig
from snn_compile.models.train import TrainArgs, evaluate, prepare_data, train

pytestmark = pytest.mark.skipif(not (torch.distributed.is_available()
                                     and torch.distributed.is_gloo_available()),
                                reason="needs torch.distributed with gloo")
sys.path.insert(0, str(Path(__file__).parent))
import ddp_worker  # noqa: E402

CORPUS = "abcab cabca bcabc " * 200


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    corpus = out / "c.txt"
    corpus.write_text(CORPUS)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node", "2", str(Path(ddp_worker.__file__)), str(out),
                        str(corpus)], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return out, corpus, r.stderr


@pytest.mark.parametrize("kind", ["spikedecoder", "ann"])
def test_one_step_of_2_ranks_x_batch_b_equals_one_step_of_batch_2b(ddp, tmp_path, kind):
    out, corpus, _ = ddp
    args = dict(ddp_worker.STEP_ARGS, batch_size=2 * ddp_worker.STEP_ARGS["batch_size"])
    train(ModelConfig(kind=kind, **ddp_worker.TINY), TrainArgs(**args), str(tmp_path / "s.pt"),
          str(corpus))
    single, two = load_raw(str(tmp_path / "s.pt")), load_raw(str(out / f"step_{kind}.pt"))
    again = load_raw(str(out / f"step_{kind}_again.pt"))
    assert set(single) == set(two)                      # the same checkpoint format
    assert two["state_dict"].keys() == single["state_dict"].keys()
    for k, v in single["state_dict"].items():           # weights and running statistics
        assert torch.allclose(two["state_dict"][k], v, rtol=1e-5, atol=1e-6), k
        assert torch.equal(two["state_dict"][k], again["state_dict"][k]), k   # same seed
    # Adam's first moments are 0.1 x the clipped gradient: the gradients agree
    for i, st in single["optimizer"]["state"].items():
        for key in ("exp_avg", "exp_avg_sq"):
            a, b = st[key], two["optimizer"]["state"][i][key]
            assert torch.allclose(b, a, rtol=1e-4, atol=1e-3 * float(a.abs().max()) + 1e-12)
    (h1,), (h2,) = single["train_info"]["history"], two["train_info"]["history"]
    assert h2["train_loss"] == pytest.approx(h1["train_loss"], rel=1e-5)
    info = two["train_info"]
    assert (info["world_size"], info["backend"], info["batch_size"], info["global_batch"]) == \
        (2, "gloo", 4, 8)


def test_ddp_run_learns_resumes_and_its_checkpoint_evaluates(ddp):
    out, corpus, stderr = ddp
    assert ("DistributedDataParallel, world size 2, backend gloo" in stderr
            and "batch 4 per rank x 2 ranks = global batch 8" in stderr), stderr[-2000:]
    first = load_raw(str(out / "run30.pt"))["train_info"]
    hist = [h["val_loss"] for h in first["history"]]
    assert len(hist) >= 2 and hist[-1] < hist[0] and hist[-1] < first["unigram_loss"]
    m, tok, info = load_checkpoint(str(out / "run.pt"))
    assert "resuming at step 30" in stderr
    assert info["best_val_loss"] <= first["best_val_loss"]
    assert [h["step"] for h in info["history"]][:len(hist)] == \
        [h["step"] for h in first["history"]]             # the resumed run's history goes on
    if info["steps"] > 30:
        assert info["val_loss"] < first["val_loss"]
    _, _, val = prepare_data(str(corpus), "char", m.cfg.context, tok)
    ev = evaluate(m, val, 512)
    assert ev["val_loss"] == pytest.approx(info["val_loss"], rel=1e-5)


def test_cli_nproc_2_trains_and_writes_one_checkpoint(run_cli, tmp_path):
    (tmp_path / "c.txt").write_text(CORPUS)
    r = run_cli("train", "--nproc", "2", "--model", "ann", "--data", "c.txt", "--steps", "20",
                "--batch-size", "4", "--d-model", "16", "--heads", "2", "--layers", "1",
                "--context", "16", "--eval-interval", "10", "--lr", "5e-2", "-o", "m.pt",
                "--json", timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads(r.stdout)                       # one JSON object: rank 0 alone prints
    assert info["world_size"] == 2 and info["global_batch"] == 8 and info["steps"] == 20
    assert r.stderr.count("world size 2, backend gloo") == 1
    m, tok, saved = load_checkpoint(str(tmp_path / "m.pt"))
    assert saved["val_loss"] == info["val_loss"] < saved["unigram_loss"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt", "m.pt"]   # no temp files
    _, _, val = prepare_data(str(tmp_path / "c.txt"), "char", m.cfg.context, tok)
    assert evaluate(m, val, 16384)["val_loss"] == pytest.approx(info["val_loss"], rel=1e-5)
    from snn_compile.errors import UserError
    from snn_compile.models import distributed
    with pytest.raises(UserError, match="--nproc must be at least 1"):
        distributed.launch(0, ["train", "-o", "x.pt"])
    assert distributed.strip_option(["train", "--nproc", "2", "-o", "m.pt", "--nproc=3"],
                                    "--nproc") == ["train", "-o", "m.pt"]


def test_scaling_benchmark_worker_table_and_command_line(ddp):
    from snn_compile.benchmarks import train_scaling
    out, _, _ = ddp
    w2 = json.loads((out / "bench_w2.json").read_text())
    assert w2["procs"] == 2 and w2["backend"] == "gloo"
    assert set(w2["models"]) == {"spikedecoder", "ann"}
    assert all(m["tokens_per_s"] > 0 for m in w2["models"].values())
    half = json.loads(json.dumps(w2))                  # a fake one-process run, half as fast
    half["procs"] = 1
    for m in half["models"].values():
        m["tokens_per_s"] /= 2
    r = train_scaling.summarize({1: half, 2: w2}, 2, 2, 1, 1)
    assert r["models"]["ann"]["runs"][2]["speedup"] == pytest.approx(2.0)
    assert r["models"]["ann"]["runs"][2]["efficiency"] == pytest.approx(1.0)
    text = train_scaling.table(r)
    assert "efficiency" in text and "100.0 %" in text
    # the launcher's command line parses back into the worker's options
    ap_args = ["--device", "cpu", "--procs", "1", "2", *ddp_worker.BENCH_ARGS]
    a = train_scaling.parser().parse_args(ap_args)
    cmd = train_scaling.worker_command(2, a, "r.json")
    assert cmd[cmd.index("--nproc_per_node") + 1] == "2"
    back = train_scaling.parser().parse_args(cmd[cmd.index("--worker"):])
    assert back.worker == "r.json"
    assert {k: v for k, v in vars(back).items() if k not in ("worker", "procs")} == \
        {k: v for k, v in vars(a).items() if k not in ("worker", "procs")}

