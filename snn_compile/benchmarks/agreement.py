"""Float model vs the deployed integer graph on the validation split: spikes and greedy choices.

The README's claim "the float model and the integer graph agree spike for spike on the
tested characters" holds only where tested; on the whole split this measures

    differing spikes  = sum over LIF populations, tokens, steps, neurons of
                        [s_float != s_int]                     (out of all spike decisions)
    greedy choices    = #{positions: argmax logits_float == argmax logits_int}

with the float folded model (``FoldedDecoder.forward``, float64) and the integer reference
of the quantized graph (``run_token_time``, bit-exact with the emulator and Lava) fed the
same non-overlapping context windows of the validation split, each from a reset (as
``snn-compile eval``). Also the cross-entropy of both on those windows.

    python -m snn_compile.benchmarks.agreement [MODEL] [--max-tokens N] [--out FILE.json]

The whole split of the embedded corpus (45 899 characters) takes some minutes on a CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Callable, Dict, List, Optional

import numpy as np

from snn_compile.compiler.pipeline import load_qgraph
from snn_compile.data import validation_ids
from snn_compile.errors import UserError, atomic_path, check_output_file, exits_on_user_error
from snn_compile.hw_sim.int_reference import run_token_time
from snn_compile.models.checkpoint import load_checkpoint
from snn_compile.models.fold import fold
from snn_compile.models.train import is_spike_record


def measure(model: str = "default:spikedecoder", data: Optional[str] = None,
            max_tokens: Optional[int] = None, batch: int = 4,
            progress: Optional[Callable[[int, int], None]] = None) -> dict:
    """The counts of the module docstring, in total and per population."""
    import torch


    t0 = time.perf_counter()
    net, tok, _ = load_checkpoint(model)
    folded = fold(net.double())
    q, _, _ = load_qgraph(model)
    val, _ = validation_ids(data, tok, folded.context, max_tokens=max_tokens)
    if max_tokens is not None:
        val = val[: max_tokens + 1]
    pops: Dict[str, List[int]] = {}
    greedy = positions = 0
    ce = {"float": 0.0, "integer": 0.0}
    total = (len(val) - 1)
    done = 0
    for x, y in _windows(val, folded.context, batch):
        xt = torch.as_tensor(x)
        with torch.no_grad():
            fr = folded.forward(xt)
        ir = run_token_time(q, xt)
        for k, v in fr["spikes"].items():
            if not is_spike_record(k):
                continue
            a = v.numpy() != 0
            b = np.asarray(ir.outputs[k]) != 0
            d = pops.setdefault(k, [0, 0])
            d[0] += int((a != b).sum())
            d[1] += int(a.size)
        lf = fr["logits"].numpy()
        li = np.asarray(ir.logits, dtype=np.float64)
        greedy += int((lf.argmax(-1) == li.argmax(-1)).sum())
        positions += int(y.size)
        yt = torch.as_tensor(y).reshape(-1)
        for key, lg in (("float", lf), ("integer", li)):
            ce[key] += float(torch.nn.functional.cross_entropy(
                torch.as_tensor(lg).reshape(-1, lg.shape[-1]), yt, reduction="sum"))
        done += int(y.size)
        if progress:
            progress(done, total)
    diff = sum(v[0] for v in pops.values())
    decisions = sum(v[1] for v in pops.values())
    return {"model": model, "text": f"validation split of {data or 'the embedded corpus'}"
                                    + (f", first {max_tokens} tokens" if max_tokens else ""),
            "tokens": positions, "spike_decisions": decisions, "spikes_differ": diff,
            "spikes_differ_fraction": diff / decisions if decisions else None,
            "greedy_agree": greedy, "greedy_positions": positions,
            "loss_float": ce["float"] / max(positions, 1),
            "loss_integer": ce["integer"] / max(positions, 1),
            "per_population": {k: {"differ": v[0], "decisions": v[1]} for k, v in pops.items()},
            "seconds": time.perf_counter() - t0}


def _windows(ids: np.ndarray, context: int, batch: int):
    """Non-overlapping windows predicting ``ids[1:]`` once each (as ``sequential_blocks``,
    which needs a whole window): full windows ``batch`` at a time, then the remainder."""
    n = len(ids) - 1
    full = n // context
    for b0 in range(0, full, batch):
        starts = np.arange(b0, min(b0 + batch, full)) * context
        idx = starts[:, None] + np.arange(context)[None, :]
        yield ids[idx], ids[idx + 1]
    s = full * context
    if n > s:
        yield ids[None, s:n], ids[None, s + 1:n + 1]


@exits_on_user_error
def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m snn_compile.benchmarks.agreement",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default="default:spikedecoder", metavar="MODEL")
    ap.add_argument("--data", metavar="PATH", help="text file (default: the embedded corpus)")
    ap.add_argument("--max-tokens", type=int, metavar="N",
                    help="first N validation tokens only (default: the whole split)")
    ap.add_argument("--batch", type=int, default=4, metavar="B", help="windows per batch")
    ap.add_argument("--out", metavar="FILE.json", help="also write the result here (atomically)")
    args = ap.parse_args(argv)

    for name, v in (("--max-tokens", args.max_tokens), ("--batch", args.batch)):
        if v is not None and v < 1:
            raise UserError(f"{name} must be at least 1, got {v}")
    if args.out:
        check_output_file(args.out, "--out")
    r = measure(args.model, args.data, args.max_tokens, args.batch,
                lambda d, t: print(f"\r{d}/{t} tokens", end="", file=sys.stderr))
    print(file=sys.stderr)
    text = json.dumps(r, indent=1)
    if args.out:
        with atomic_path(args.out, what="--out") as tmp:
            with open(tmp, "w") as f:
                f.write(text)
    print(text)
    print(f"{r['spikes_differ']} of {r['spike_decisions']} spike decisions differ "
          f"({100 * (r['spikes_differ_fraction'] or 0):.2f} %); {r['greedy_agree']} of "
          f"{r['greedy_positions']} greedy choices agree; loss float {r['loss_float']:.4f}, "
          f"integer {r['loss_integer']:.4f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
