"""Speed of the bit-exact emulator: tokens/s and global timesteps/s.

    python -m snn_compile.benchmarks.bench_emulator [--qgraph FILE | --random]
        [--tokens N] [--batch B] [--batch-tokens M] [--device cpu|cuda] [--lava N]
        [--threads K] [--json]

Two numbers per run, on the same machine and graph:

* batch 1: the emulator as a token backend (``EmulatorBackend.feed``, what
  ``generate`` uses), timed by ``time_backend`` — the function any other
  backend (``--lava``: Lava's fixed_pt simulator) is timed with too;
* batch B: ``Emulator.step_token`` on B sequences of M tokens at once
  (evaluation and energy statistics over many sequences).

A timestep is one global step of the pipelined graph (W = T + depth per token);
at batch B one step advances all B sequences. Sequences longer than the
graph's context restart from a reset, as the benchmark harness does.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Callable, Dict, Optional

import numpy as np
import torch

from snn_compile.errors import UserError


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_backend(backend_factory: Callable[[], object], tokens, window: Optional[int] = None,
                 warmup: int = 1, device: str = "cpu") -> Dict[str, float]:
    """Feed ``tokens`` one by one into a fresh token backend; wall-clock rates.

    The backend is built and warmed up (``warmup`` tokens, then ``reset``)
    outside the timed part; resets at the context limit are inside it.
    ``window`` (global steps per token) turns tokens/s into timesteps/s.
    """
    t0 = time.perf_counter()
    be = backend_factory()
    build = time.perf_counter() - t0
    tokens = [int(t) for t in tokens]
    ctx = getattr(be, "context", 0) or len(tokens)
    try:
        be.reset()
        for t in tokens[:warmup]:
            be.feed(t)
        be.reset()
        _sync(device)
        t0 = time.perf_counter()
        n_in_ctx = 0
        for t in tokens:
            if n_in_ctx == ctx:
                be.reset()
                n_in_ctx = 0
            be.feed(t)
            n_in_ctx += 1
        _sync(device)
        dt = time.perf_counter() - t0
    finally:
        be.close()
    res = {"backend": getattr(be, "name", type(be).__name__), "batch": 1, "tokens": len(tokens),
           "seconds": dt, "build_seconds": build, "tokens_per_s": len(tokens) / dt}
    if window:
        res["timesteps_per_s"] = len(tokens) * window / dt
    return res


def time_emulator_batch(qgraph, batch: int, tokens_per_seq: int, device: str = "cpu",
                        seed: int = 0) -> Dict[str, float]:
    """``batch`` sequences of ``tokens_per_seq`` tokens through ``Emulator.step_token``."""
    from snn_compile.hw_sim.emulator import Emulator

    V = qgraph.pop(qgraph.readout).size
    ctx = qgraph.context or tokens_per_seq
    rng = np.random.default_rng(seed)
    toks = torch.as_tensor(rng.integers(0, V, size=(tokens_per_seq, batch)), device=device)
    emu = Emulator(qgraph, batch=batch, device=device)
    for n in range(min(_warmup(qgraph), tokens_per_seq)):   # allocations, CUDA graphs
        emu.step_token(toks[n])
    emu.reset()
    _sync(device)
    t0 = time.perf_counter()
    for n in range(tokens_per_seq):
        if emu.n == ctx:
            emu.reset()
        emu.step_token(toks[n])
    _sync(device)
    dt = time.perf_counter() - t0
    return {"backend": "emulator", "batch": batch, "tokens": batch * tokens_per_seq,
            "seconds": dt, "tokens_per_s": batch * tokens_per_seq / dt,
            "timesteps_per_s": tokens_per_seq * qgraph.window / dt}


def _warmup(qgraph) -> int:
    """Windows that start at every residue of the emulator's ring (one CUDA graph each)."""
    return max([s.delay for s in qgraph.synapses] + [0]) + 2


def load_graph(path: Optional[str], seed: int = 0):
    from snn_compile.compiler.qgraph import QGraph, QGraphError

    if path is None:
        from snn_compile.compiler.random_graphs import random_decoder_qgraph

        return random_decoder_qgraph(seed)
    try:
        return QGraph.load(path)
    except FileNotFoundError:
        raise UserError(f"quantized graph {path} does not exist; make one with "
                        "`snn-compile compile` or use --random") from None
    except QGraphError as e:
        raise UserError(str(e)) from None


def run(qgraph, tokens: int = 256, batch: int = 64, device: str = "cpu",
        lava_tokens: int = 0, seed: int = 0, batch_tokens: int = 32) -> dict:
    """The benchmark; see the module doc. Returns one JSON-able dict."""
    from snn_compile.hw_sim.emulator import EmulatorBackend

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda but torch sees no CUDA GPU; use --device cpu")
    V = qgraph.pop(qgraph.readout).size
    toks = np.random.default_rng(seed).integers(0, V, size=tokens)
    rows = [time_backend(lambda: EmulatorBackend(qgraph, device=device), toks, qgraph.window,
                         warmup=_warmup(qgraph), device=device)]
    if batch > 1:
        rows.append(time_emulator_batch(qgraph, batch, batch_tokens, device, seed))
    res = {"device": device, "torch_threads": torch.get_num_threads(),
           "graph": {"populations": len(qgraph.populations), "synapses": len(qgraph.synapses),
                     "neurons": sum(p.size for p in qgraph.populations.values()),
                     "steps_per_token": qgraph.steps_per_token, "window": qgraph.window,
                     "metadata": qgraph.metadata},
           "runs": rows}
    if lava_tokens:
        from snn_compile.hw_sim.lava_runner import LavaBackend

        lava = time_backend(lambda: LavaBackend(qgraph), toks[:lava_tokens], qgraph.window)
        res["runs"].append(lava)
        res["emulator_over_lava"] = {
            "batch_1": rows[0]["tokens_per_s"] / lava["tokens_per_s"],
            **({f"batch_{batch}": rows[1]["tokens_per_s"] / lava["tokens_per_s"]}
               if batch > 1 else {})}
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m snn_compile.benchmarks.bench_emulator",
                                 description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--qgraph", help="quantized graph file (from snn-compile compile)")
    g.add_argument("--random", action="store_true",
                   help="a random SpikeDecoder graph (vocab 96, d 64, 4 heads, 2 layers, T 4, "
                        "context 128; the default)")
    ap.add_argument("--tokens", type=int, default=256,
                    help="tokens fed at batch 1 (default 256)")
    ap.add_argument("--batch", type=int, default=64,
                    help="sequences in the batched run (default 64; 1 skips it)")
    ap.add_argument("--batch-tokens", type=int, default=32,
                    help="tokens per sequence in the batched run (default 32)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--lava", type=int, default=0, metavar="N",
                    help="also time Lava's fixed_pt simulator on N tokens and print the ratio")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args(argv)
    try:
        if min(a.tokens, a.batch, a.batch_tokens) < 1:
            raise UserError("--tokens, --batch and --batch-tokens must be at least 1")
        if a.threads:
            torch.set_num_threads(a.threads)
        res = run(load_graph(a.qgraph, a.seed), a.tokens, a.batch, a.device, a.lava, a.seed,
                  a.batch_tokens)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps(res, indent=1))
        return 0
    gr = res["graph"]
    print(f"graph: {gr['populations']} populations, {gr['synapses']} synapses, "
          f"{gr['neurons']} neurons, T={gr['steps_per_token']}, window W={gr['window']}; "
          f"device {res['device']}, {res['torch_threads']} torch threads")
    for r in res["runs"]:
        print(f"{r['backend']:>9} batch {r['batch']:>4}: {r['tokens_per_s']:10.1f} tokens/s  "
              f"{r.get('timesteps_per_s', float('nan')):10.1f} timesteps/s  "
              f"({r['tokens']} tokens in {r['seconds']:.2f} s)")
    for k, v in res.get("emulator_over_lava", {}).items():
        print(f"emulator / lava ({k}): {v:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
