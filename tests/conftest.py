"""Fixtures shared by the whole suite: headless plotting, the installed console script,
Lava's start method fixed before any test can fix another."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")   # plots in tests never need a display

# Lava sets the 'fork' start method when first imported, which fails once something has
# fixed it (torch.compile's pool does): tests that import Lava directly run in any order
from snn_compile.compiler.lower_lava import prepare_lava_import  # noqa: E402

prepare_lava_import()


def _console_script() -> Path:
    exe = Path(sys.executable).parent / "snn-compile"
    if not exe.exists():
        raise RuntimeError(f"{exe} not found: install the project into this environment "
                           "(`make venv`, i.e. pip install -e '.[dev,hf]')")
    return exe


@pytest.fixture(scope="session")
def snn_compile_exe() -> Path:
    """The real `snn-compile` console script of the environment running the tests."""
    return _console_script()


@pytest.fixture
def run_cli(snn_compile_exe, tmp_path):
    """Run `snn-compile ARGS...` in a subprocess (cwd: a temporary folder); returns the result."""

    def run(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("cwd", tmp_path)
        return subprocess.run([str(snn_compile_exe), *map(str, args)], capture_output=True,
                              text=True, timeout=timeout, **kw)

    return run
