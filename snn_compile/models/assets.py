"""The shipped checkpoints: ``default:<name>`` specs and the files under
``snn_compile/assets/`` (``MANIFEST.md`` there says how each was trained)."""

from __future__ import annotations

import os
from pathlib import Path

from snn_compile.errors import UserError

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"

# spec "default:<name>" → (file under snn_compile/assets/, the model kind to train it)
DEFAULT_CHECKPOINTS = {
    "spikedecoder": ("spikedecoder.pt", "spikedecoder"),
    "ann": ("ann.pt", "ann"),
}
DEFAULT_PREFIX = "default:"


def resolve_checkpoint(spec: str) -> str:
    """Turn ``default:spikedecoder`` / ``default:ann`` or a file path into an existing path."""
    spec = os.fspath(spec)
    if spec.startswith(DEFAULT_PREFIX):
        name = spec[len(DEFAULT_PREFIX):]
        if name not in DEFAULT_CHECKPOINTS:
            known = ", ".join(DEFAULT_PREFIX + k for k in DEFAULT_CHECKPOINTS)
            raise UserError(f"unknown shipped checkpoint {spec!r}; choose one of: {known}, "
                            "or give the path of a checkpoint file")
        filename, model = DEFAULT_CHECKPOINTS[name]
        path = ASSETS_DIR / filename
        if not path.is_file():
            raise UserError(f"shipped checkpoint {spec} is missing: {path} does not exist; make "
                            f"it with `snn-compile train --model {model} -o {path}` "
                            "or give the path of another checkpoint")
        return str(path)
    if not os.path.exists(spec):
        raise UserError(f"{spec} does not exist; give the path of a checkpoint or .nir file, "
                        f"or {DEFAULT_PREFIX}spikedecoder / {DEFAULT_PREFIX}ann for the shipped "
                        "models")
    if os.path.isdir(spec):
        raise UserError(f"{spec} is a directory (a folder), not a file; give the path of a "
                        "checkpoint, .nir or .qgraph file")
    return spec
