"""Speed of the bit-exact emulator: tokens/s and global timesteps/s.

    python -m snn_compile.benchmarks.bench_emulator [--model SPEC | --qgraph FILE | --random]
        [--tokens N] [--batch B [B ...]] [--batch-tokens M] [--device cpu|cuda]
        [--engine numpy|torch|token|token-stepwise ...] [--lava N] [--repeat R] [--threads K] [--profile B]
        [--json]

Numbers from one run, on the same machine and graph:

* batch 1: the emulator as a token backend (``EmulatorBackend.feed``, what
  ``generate`` uses; on the CPU its default is the token-time engine,
  ``hw_sim/token_engine.py``), timed by ``time_backend`` — the function any other
  backend (``--lava``: Lava's fixed_pt simulator) is timed with too;
  ``--repeat R`` times it R times (interleaved with the other engines) and
  reports the median; the token-time engine's row says how many of the timed tokens
  ran as its one compiled call (``token_program``; the others failed a value check and
  took the per-population forms), and ``token-stepwise`` times that engine without the
  compiled call, for the ratio;
* batch B > 1: ``Emulator.step_token`` on B sequences of M tokens at once
  (evaluation and energy statistics over many sequences); ``--tokens 0`` skips the
  batch-1 timing (one large batch alone: ``--tokens 0 --batch 16384 --device cuda``).

Each torch-engine row reports the state bytes per sequence (``Emulator.state_bytes``,
exact: the tensors that live from step to step) beside what the previous layout (a ring
of every input port ``max(1 + delay) + 1`` slots deep) would take; on CUDA also the
peak memory allocated during the batched run per sequence
(``torch.cuda.max_memory_allocated``: state, weights, the CUDA graph's pool).

``--profile B`` adds where one token window's time goes at batch B (torch engine, no CUDA
graph, so each kernel is seen): ``torch.profiler`` over one ``step_token`` after the
warm-up, the time of each family of operations (``profile_token``).

Lava, the NIR exporter and the training stack are imported only when asked for
(``--lava``, ``--model``), so ``--qgraph``/``--random`` run where only torch and
numpy are installed.

A timestep is one global step of the pipelined graph (W = T + depth per token);
at batch B one step advances all B sequences. Sequences longer than the
graph's context restart from a reset, as the benchmark harness does.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from snn_compile.compiler.qgraph import QGraph, QGraphError
from snn_compile.errors import UserError, exits_on_user_error
from snn_compile.hw_sim.emulator import (Emulator, EmulatorBackend, default_backend_engine,
                                         default_engine)
from snn_compile.hw_sim.token_engine import token_engine
from snn_compile.benchmarks.profiling import print_profile, profile_call
from snn_compile.hw_sim.random_graphs import random_decoder_qgraph


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
    prog = getattr(getattr(be, "_tok", None), "program", None)
    tokens = [int(t) for t in tokens]
    ctx = getattr(be, "context", 0) or len(tokens)
    try:
        be.reset()
        for t in tokens[:warmup]:
            be.feed(t)
        be.reset()
        _sync(device)
        before = (prog.tokens, prog.fallbacks) if prog is not None else None
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
    if prog is not None:
        res["compiled_step"] = {"tokens": prog.tokens - before[0],
                                "fallbacks": prog.fallbacks - before[1]}
    return res


def time_emulator_batch(qgraph, batch: int, tokens_per_seq: int, device: str = "cpu",
                        seed: int = 0, engine: Optional[str] = None,
                        check: int = 0) -> Dict[str, float]:
    """``batch`` sequences of ``tokens_per_seq`` tokens through ``Emulator.step_token``.

    ``check`` > 0 keeps the readout sums of the first ``check`` sequences of the timed run
    (a copy per token, inside the timing) and compares them, after the timing, with the
    int reference on the CPU (``check_against_reference``): every figure then says
    whether the computation it timed was the right one."""

    V = qgraph.pop(qgraph.readout).size
    ctx = qgraph.context or tokens_per_seq
    rng = np.random.default_rng(seed)
    toks = torch.as_tensor(rng.integers(0, V, size=(tokens_per_seq, batch)), device=device)
    cuda = str(device).startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    if engine == "token":
        emu = token_engine(qgraph, batch, device)
        toks = toks if cuda else toks.numpy()
    else:
        emu = Emulator(qgraph, batch=batch, device=device, engine=engine)
    for n in range(min(_warmup(qgraph), tokens_per_seq)):   # allocations, CUDA graphs
        emu.step_token(toks[n])
    emu.reset()
    check = min(check, batch)
    kept, starts = [], []                       # readout sums of sequences [:check]; resets
    _sync(device)
    t0 = time.perf_counter()
    for n in range(tokens_per_seq):
        if emu.n == ctx:
            emu.reset()
        if emu.n == 0:
            starts.append(n)
        out = emu.step_token(toks[n])
        if check:
            kept.append(out[:check].clone() if torch.is_tensor(out) else out[:check].copy())
    _sync(device)
    dt = time.perf_counter() - t0
    res = {"backend": "emulator", "engine": engine or default_engine(device), "batch": batch,
           "tokens": batch * tokens_per_seq, "seconds": dt,
           "tokens_per_s": batch * tokens_per_seq / dt,
           "timesteps_per_s": tokens_per_seq * qgraph.window / dt}
    if engine != "token":
        res.update(memory_of(emu))
    if cuda:       # everything the run allocated (state, weights, CUDA graph pool, buffers)
        res["peak_bytes_per_seq"] = (torch.cuda.max_memory_allocated() - base) / batch
    if check:
        del emu
        ids = np.asarray(torch.as_tensor(toks).cpu())[:, :check].T          # (check, N)
        res["check"] = check_against_reference(qgraph, ids, kept, starts)
    return res


def time_token_chunks(qgraph, tokens, chunk: int, repeat: int = 1, check: bool = True
                      ) -> Dict[str, float]:
    """One sequence of ``tokens`` through the CPU token-time engine ``chunk`` tokens per
    call (``TokenEngine.step_tokens``: a given text, as in scoring or a prompt's prefill;
    generation feeds one token per call), reset at the context; the median of ``repeat``
    timed passes after a warm-up chunk. ``check`` compares every readout sum of the last
    pass with the int reference (``check_against_reference``)."""
    from snn_compile.hw_sim.token_engine import TokenEngine

    ids = np.asarray(tokens, np.int64)
    ctx = qgraph.context or len(ids)
    e = TokenEngine(qgraph, 1)
    e.step_tokens(ids[None, :min(chunk, len(ids), ctx)])
    rates, kept, starts = [], [], []
    for _ in range(max(1, repeat)):
        e.reset()
        kept, starts = [], [0]
        t0 = time.perf_counter()
        n = 0
        while n < len(ids):
            if e.n == ctx:
                e.reset()
                starts.append(n)
            m = min(chunk, ctx - e.n, len(ids) - n)
            kept.extend(e.step_tokens(ids[None, n:n + m]))
            n += m
        rates.append(len(ids) / (time.perf_counter() - t0))
    res = {"backend": "emulator", "engine": "token", "batch": 1, "chunk": chunk,
           "tokens": len(ids), "tokens_per_s": float(np.median(rates)), "repeats": rates,
           "seconds": len(ids) / float(np.median(rates)),
           "timesteps_per_s": float(np.median(rates)) * qgraph.window}
    if check:
        res["check"] = check_against_reference(qgraph, ids[None], kept, starts)
    return res


def check_against_reference(qgraph, ids: np.ndarray, kept: Sequence, starts: Sequence[int]
                            ) -> Dict[str, int]:
    """Readout sums ``kept[n]`` (S, V) of token ``n`` of sequences ``ids`` (S, N), the
    emulator reset at the tokens ``starts``, against ``int_reference.run_token_time`` on
    the CPU: how many of the compared sums differ."""
    from snn_compile.hw_sim.int_reference import run_token_time

    got = np.stack([np.asarray(torch.as_tensor(k).cpu()) for k in kept], axis=1)   # (S, N, V)
    want = np.concatenate([run_token_time(qgraph, torch.as_tensor(ids[:, a:b]),
                                          record=False).logits_int.numpy()
                           for a, b in zip(starts, list(starts[1:]) + [ids.shape[1]])], axis=1)
    return {"sequences": int(ids.shape[0]), "tokens": int(ids.size),
            "readout_sums": int(want.size), "differ": int((got != want).sum())}


TOKEN_PROFILE_NEEDS_CUDA = ("--profile with --engine token profiles the compiled torch token "
                            "step: give --device cuda (the CPU token engine is numpy; time it "
                            "with --chunk, profile it with cProfile)")


def profile_token(qgraph, batch: int, device: str = "cpu", seed: int = 0,
                  top: int = 10, engine: str = "torch") -> dict:
    """Where one token window of an engine spends its time at ``batch`` sequences.

    ``torch.profiler`` over one ``step_token`` after the warm-up: of the global-time torch
    engine without CUDA graphs (so that each kernel is seen; the fused kernels stay on
    where the device's default has them), or of the token-time engine (``engine="token"``
    on CUDA: its compiled token step; on the CPU the numpy engine has no torch operators
    to see, so it is refused). On CUDA the time is each kernel's device time, on the CPU each operator's own
    CPU time; ``families`` sums it by family of operation (``profiling.FAMILIES``: the float64
    matmuls, the elementwise kernels: fused ones and eager arithmetic, copies and fills,
    index ops, other: views, the event-driven ``any`` checks), ``top``
    lists the largest entries. One window, so its figures move with the machine's load."""
    cuda = str(device).startswith("cuda")
    V = qgraph.pop(qgraph.readout).size
    toks = torch.as_tensor(np.random.default_rng(seed).integers(0, V, size=(3, batch)))
    if engine == "token":
        if not cuda:
            raise UserError(TOKEN_PROFILE_NEEDS_CUDA)
        emu = token_engine(qgraph, batch, device)
    else:
        emu = Emulator(qgraph, batch=batch, device=device, engine="torch", cuda_graphs=False)
    for n in range(2):
        emu.step_token(toks[n])
    _sync(device)

    def window():
        emu.step_token(toks[2])
        _sync(device)

    return {"batch": batch, "device": device, "engine": engine,
            **profile_call(window, cuda, top)}


def memory_of(emu) -> Dict[str, float]:
    """The torch engine's state bytes per sequence (``Emulator.state_bytes``) and what the
    previous layout (a ring of every port, ``max(1 + delay) + 1`` deep) would take."""
    sb = emu.state_bytes(per_sequence=True)
    if sb is None:                       # the numpy engine allocates as it goes
        return {}
    return {"state_bytes_per_seq": sb["total"],
            "ring_layout_bytes_per_seq": emu.ring_layout_bytes() / emu.B}


def _warmup(qgraph) -> int:
    """Warm-up windows: one eager (allocations, torch.compile of the fused kernels on
    CUDA) and the one its CUDA graph is captured in (one graph serves every window)."""
    return 2


def load_graph(path: Optional[str], seed: int = 0, model: Optional[str] = None):
    """The graph to time: a compiled ``path``, a model ``SPEC`` compiled now (checkpoint,
    ``default:spikedecoder``, ``.nir``), or the random default decoder."""

    if model is not None:
        from snn_compile.compiler.pipeline import load_qgraph   # lazy: the NIR and training stack

        return load_qgraph(model)[0]
    if path is None:

        return random_decoder_qgraph(seed)
    try:
        return QGraph.load(path)
    except FileNotFoundError:
        raise UserError(f"quantized graph {path} does not exist; make one with "
                        "`snn-compile compile` or use --random") from None
    except QGraphError as e:
        raise UserError(str(e)) from None


def _median_run(runs: List[dict]) -> dict:
    """The run of median tokens/s, with every repeat's rate kept."""
    order = sorted(runs, key=lambda r: r["tokens_per_s"])
    res = dict(order[(len(order) - 1) // 2])
    res["repeats"] = [r["tokens_per_s"] for r in runs]
    return res


def run(qgraph, tokens: int = 256, batch: Union[int, Sequence[int]] = 64, device: str = "cpu",
        lava_tokens: int = 0, seed: int = 0, batch_tokens: int = 32,
        engines: Sequence[Optional[str]] = (None,), repeat: int = 1, check: int = 0,
        chunks: Sequence[int] = ()) -> dict:
    """The benchmark; see the module doc. Returns one JSON-able dict."""
    if "token-stepwise" in engines and torch.device(device).type != "cpu":
        raise UserError("token-stepwise is the CPU token-time engine; use --device cpu")

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda but torch sees no CUDA GPU; use --device cpu")
    if "numpy" in engines and torch.device(device).type != "cpu":
        raise UserError("the numpy engine runs on the CPU; use --engine torch or token with "
                        "--device cuda")
    batches = [batch] if isinstance(batch, int) else list(batch)
    V = qgraph.pop(qgraph.readout).size
    toks = np.random.default_rng(seed).integers(0, V, size=tokens)
    per_engine: Dict[Optional[str], List[dict]] = {e: [] for e in engines}
    for _ in range(max(1, repeat) if tokens else 0):   # interleaved: same load per engine
        for e in engines:
            def make(e=e):
                if e == "token-stepwise":
                    return EmulatorBackend(qgraph, device=device, engine="token",
                                           compiled_step=False)
                return EmulatorBackend(qgraph, device=device, engine=e)
            r = time_backend(make, toks, qgraph.window, warmup=_warmup(qgraph), device=device)
            r["engine"] = e or default_backend_engine(device)
            per_engine[e].append(r)
    rows = [_median_run(v) for v in per_engine.values() if v]
    for r in rows:
        if not r["engine"].startswith("token"):
            r.update(memory_of(Emulator(qgraph, 1, device, engine=r["engine"])))
    if chunks and torch.device(device).type != "cpu":
        raise UserError("--chunk times the CPU token-time engine; use --device cpu")
    for c in chunks:
        rows.append(time_token_chunks(qgraph, toks, c, repeat, check > 0))
    for b in batches:
        if b > 1:
            rows += [time_emulator_batch(qgraph, b, batch_tokens, device, seed, e, check)
                     for e in engines if e != "token-stepwise"]
    res = {"device": device, "torch_threads": torch.get_num_threads(),
           "graph": {"populations": len(qgraph.populations), "synapses": len(qgraph.synapses),
                     "neurons": sum(p.size for p in qgraph.populations.values()),
                     "steps_per_token": qgraph.steps_per_token, "window": qgraph.window,
                     "metadata": {k: v for k, v in qgraph.metadata.items()
                                  if k != "tokenizer"}},
           "runs": list(rows)}
    if lava_tokens:
        from snn_compile.hw_sim.lava_runner import LavaBackend   # lazy: Lava

        lava = time_backend(lambda: LavaBackend(qgraph), toks[:lava_tokens], qgraph.window)
        res["runs"].append(lava)
        res["emulator_over_lava"] = {
            f"{r['engine']}_batch_{r['batch']}" + (f"_chunk_{r['chunk']}" if "chunk" in r else ""):
            r["tokens_per_s"] / lava["tokens_per_s"] for r in rows}
    return res


@exits_on_user_error
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m snn_compile.benchmarks.bench_emulator",
                                 description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--qgraph", help="quantized graph file (from snn-compile compile)")
    g.add_argument("--model", metavar="SPEC",
                   help="compile this model first: a checkpoint, default:spikedecoder or a .nir "
                        "(needs the training and NIR stack)")
    g.add_argument("--random", action="store_true",
                   help="a random SpikeDecoder graph (vocab 96, d 64, 4 heads, 2 layers, T 4, "
                        "context 128; the default)")
    ap.add_argument("--tokens", type=int, default=256,
                    help="tokens fed at batch 1 (default 256; 0 skips the batch-1 timing, e.g. "
                         "to time one large batch alone: --tokens 0 --batch 16384)")
    ap.add_argument("--batch", type=int, nargs="+", action="extend",
                    help="sequences in the batched runs; several values and repeated flags add "
                         "runs (default 64; 1 adds none: batch 1 is always timed)")
    ap.add_argument("--batch-tokens", type=int, default=32,
                    help="tokens per sequence in the batched run (default 32)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--engine", nargs="+", action="extend",
                    choices=("numpy", "torch", "token", "token-stepwise"),
                    help="emulator engines to time: numpy, torch (global time) or token (the "
                         "token-time engine: numpy on the CPU, compiled torch on CUDA; "
                         "token-stepwise: the CPU one without its one-call streaming step, "
                         "batch 1 only); "
                         "default: the device's own (token at batch 1 "
                         "and numpy in batches on the CPU, torch on CUDA); several are timed "
                         "in the same run")
    ap.add_argument("--repeat", type=int, default=3,
                    help="batch-1 timings per engine; the median is reported (default 3)")
    ap.add_argument("--lava", type=int, default=0, metavar="N",
                    help="also time Lava's fixed_pt simulator on N tokens and print the ratio")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--profile", type=int, default=0, metavar="B",
                    help="also profile one token window at batch B and print where its time "
                         "goes: of the torch engine, or of the token-time engine when --engine "
                         "names token and not torch (CUDA only)")
    ap.add_argument("--check", type=int, default=8, metavar="S",
                    help="compare the readout sums of the first S sequences of every batched "
                         "run with the int reference on the CPU after the timing (default 8; "
                         "0: no check); a difference makes the exit code 1")
    ap.add_argument("--chunk", type=int, nargs="+", action="extend", default=None, metavar="C",
                    help="also time the CPU token-time engine at batch 1 on the --tokens "
                         "text, C tokens per call (scoring a given text, a prompt's prefill; "
                         "generation is C = 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args(argv)
    batches = a.batch or [64]
    for flag, value, least in (("--batch", min(batches), 1), ("--batch-tokens", a.batch_tokens, 1),
                               ("--repeat", a.repeat, 1), ("--tokens", a.tokens, 0),
                               ("--profile", a.profile, 0), ("--check", a.check, 0),
                               ("--chunk", min(a.chunk or [1]), 1)):
        if value < least:
            raise UserError(f"{flag} must be at least {least}, got {value}")
    prof_engine = "token" if a.engine and "token" in a.engine and "torch" not in a.engine \
        else "torch"
    if a.profile and prof_engine == "token" and not a.device.startswith("cuda"):
        raise UserError(TOKEN_PROFILE_NEEDS_CUDA)
    if a.threads:
        torch.set_num_threads(a.threads)
    q = load_graph(a.qgraph, a.seed, a.model)
    res = run(q, a.tokens, batches, a.device, a.lava, a.seed, a.batch_tokens,
              a.engine or [None], a.repeat, a.check, a.chunk or [])
    if a.profile:
        res["profile"] = profile_token(q, a.profile, a.device, a.seed, engine=prof_engine)
    wrong = [r for r in res["runs"] if r.get("check", {}).get("differ")]
    if a.json:
        print(json.dumps(res, indent=1))
        return _report_wrong(wrong)
    gr = res["graph"]
    print(f"graph: {gr['populations']} populations, {gr['synapses']} synapses, "
          f"{gr['neurons']} neurons, T={gr['steps_per_token']}, window W={gr['window']}; "
          f"device {res['device']}, {res['torch_threads']} torch threads")
    for r in res["runs"]:
        name = r["backend"] + (f" ({r['engine']})" if "engine" in r else "") + \
            (f" {r['chunk']}/call" if "chunk" in r else "")
        rep_ = (f", median of {len(r['repeats'])}: "
                + " ".join(f"{x:.0f}" for x in r["repeats"])) if len(r.get("repeats", [])) > 1 \
            else ""
        mem = ""
        if "state_bytes_per_seq" in r:
            mem = (f"; state {r['state_bytes_per_seq'] / 1024:.1f} KiB/seq (ring layout "
                   f"{r['ring_layout_bytes_per_seq'] / 1024:.1f})")
        if "peak_bytes_per_seq" in r:
            mem += f", CUDA peak {r['peak_bytes_per_seq'] / 1024:.1f} KiB/seq"
        if "compiled_step" in r:
            c = r["compiled_step"]
            mem += (f"; {c['tokens']} tokens in one compiled call each, {c['fallbacks']} "
                    "left to the per-population forms")
        if "check" in r:
            c = r["check"]
            mem += (f"; {c['differ']} of {c['readout_sums']} readout sums of {c['sequences']} "
                    f"sequences differ from the int reference")
        print(f"{name:>18} batch {r['batch']:>5}: {r['tokens_per_s']:10.1f} tokens/s  "
              f"{r.get('timesteps_per_s', float('nan')):10.1f} timesteps/s  "
              f"({r['tokens']} tokens in {r['seconds']:.2f} s{rep_}{mem})")
    if not res["runs"]:
        print("nothing timed: --tokens 0 and no --batch above 1")
    for k, v in res.get("emulator_over_lava", {}).items():
        print(f"emulator / lava ({k}): {v:.1f}x")
    if "profile" in res:
        pr = res["profile"]
        print_profile(f"one token window, {pr['engine']} engine, batch {pr['batch']}", pr)
    return _report_wrong(wrong)


def _report_wrong(wrong: List[dict]) -> int:
    for r in wrong:
        c = r["check"]
        print(f"error: the {r['engine']} engine at batch {r['batch']} computed {c['differ']} of "
              f"{c['readout_sums']} checked readout sums differently from the int reference; "
              "its speed is that of a wrong computation (report it with the graph)",
              file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
