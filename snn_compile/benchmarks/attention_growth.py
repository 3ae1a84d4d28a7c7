"""How spiking attention's causal sum and its neurons' rate grow with the position.

    python -m snn_compile.benchmarks.attention_growth [CKPT] [--windows 32] [--json]

Runs the float model on ``--windows`` validation windows of the full context
and prints, per block and for a few positions n (0-based characters), the mean
of the attention sum ``A`` (before its fixed per-channel scale) and the spike
rate of the attention neurons that read it. Without a bounded memory ``A``
grows with n (docs/results/attention_memory/README.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

import numpy as np

from snn_compile.errors import UserError, exits_on_user_error
from snn_compile.models.checkpoint import load_checkpoint
from snn_compile.models.train import prepare_data

POSITIONS = (0, 1, 3, 7, 15, 31, 63, 127)


def run(spec: str = "default:spikedecoder", windows: int = 32) -> dict:
    import torch


    model, tok, _ = load_checkpoint(spec)
    if model.cfg.kind != "spikedecoder":
        raise UserError(f"{spec} is not a SpikeDecoder (model kind {model.cfg.kind}); give "
                        "a SpikeDecoder checkpoint, whose spiking attention this measures")
    ctx = model.cfg.context
    _, _, val = prepare_data(None, tok.kind, ctx, tok)
    windows = min(windows, len(val) // ctx)
    x = torch.as_tensor(np.asarray(val[:windows * ctx]).reshape(windows, ctx))
    with torch.no_grad():
        _, rec = model(x, record=True)
    pos = [p for p in POSITIONS if p < ctx]
    out = {"model": spec, "windows": windows, "positions": pos, "blocks": {}}
    for i in range(model.cfg.n_layers):
        a = rec[f"block{i}.A"].float().mean(dim=(0, 2, 3)).numpy()
        r = rec[f"block{i}.attn"].float().mean(dim=(0, 2, 3)).numpy()
        out["blocks"][f"block{i}"] = {"A_mean": [float(a[p]) for p in pos],
                                      "attn_rate": [float(r[p]) for p in pos]}
    return out


@exits_on_user_error
def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m snn_compile.benchmarks.attention_growth",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default="default:spikedecoder")
    ap.add_argument("--windows", type=int, default=32, help="validation windows (default 32)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args(argv)
    r = run(a.model, a.windows)
    if a.json:
        print(json.dumps(r, indent=1))
        return 0
    print(f"{r['model']}, {r['windows']} validation windows; position n = "
          + " ".join(f"{p:>6}" for p in r["positions"]))
    for b, v in r["blocks"].items():
        print(f"{b} mean A         " + " ".join(f"{x:6.3f}" for x in v["A_mean"]))
        print(f"{b} attn spike rate " + " ".join(f"{x:6.3f}" for x in v["attn_rate"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
