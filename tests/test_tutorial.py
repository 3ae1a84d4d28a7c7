"""docs/tutorial.md runs as written: every ```python block in one namespace, every
```bash line with the installed `snn-compile`, in order, in an empty folder."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

TUTORIAL = Path(__file__).resolve().parent.parent / "docs" / "tutorial.md"
BLOCK = re.compile(r"^```(python|bash)\n(.*?)^```", re.S | re.M)


def blocks():
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(TUTORIAL.read_text())]


def test_tutorial_has_the_promised_parts():
    text = TUTORIAL.read_text()
    for part in ("train", "export", "compile", "lava-sim", "bench", "snnTorch", "NIR file"):
        assert part in text, part
    kinds = [k for k, _ in blocks()]
    assert kinds.count("python") >= 6 and kinds.count("bash") >= 3


def test_tutorial_code_runs(tmp_path, monkeypatch, snn_compile_exe, capsys):
    monkeypatch.chdir(tmp_path)
    env = dict(os.environ, PATH=f"{snn_compile_exe.parent}{os.pathsep}{os.environ['PATH']}")
    ns: dict = {"__name__": "__tutorial__"}
    for i, (kind, code) in enumerate(blocks()):
        if kind == "python":
            exec(compile(code, f"{TUTORIAL.name} block {i}", "exec"), ns)
            continue
        for line in code.strip().splitlines():
            r = subprocess.run(shlex.split(line), capture_output=True, text=True, env=env,
                               timeout=600)
            assert r.returncode == 0, f"{line}\n{r.stdout}\n{r.stderr}"
            assert "Traceback" not in r.stderr
    out = capsys.readouterr().out
    # the NIR paper's spikes on every backend the tutorial shows
    for backend in ("nir", "int", "emulator"):
        assert f"{backend} [460 510 710 760]" in out, out
    assert ns["acc"]["samples"] == 8 and ns["energy"]["energy_per_sample_pj"]["loihi_estimate"] > 0
    assert (tmp_path / "lava.npy").exists() and (tmp_path / "tiny.qgraph").exists()
    import numpy as np
    np.testing.assert_array_equal(np.load(tmp_path / "lava.npy"), ns["out_int"])
