"""Run a lowered QGraph on Lava token by token, with the host in the loop.

One token = one window of ``W = T + depth(readout)`` Lava steps: the host
sends ``W`` frames to every ``Injector`` (``T`` real frames, ``W - T`` zero
frames that let the pipeline drain), runs ``RunSteps(W)``, and receives ``W``
frames from every ``Extractor``. Population ``x`` produced ``(n, t)`` at local
step ``t + depth(x)`` of the window, so its token-time output is
``frames[depth(x) : depth(x) + T]``; the readout's sum over those ``T`` steps
is the integer logit vector. With probes, all ``W`` frames of every population
(drain steps included: the attention memory sends at every step) are counted as
the window returns (``probes.count_windows``; ``LavaSession.activity``).

The Lava runtime runs one OS process per Lava process: ``LavaSession`` is a
context manager and also stops the runtime when it is garbage-collected or the
interpreter exits, so an exception or Ctrl-C never leaves processes behind.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import Dict, Mapping, Optional

import numpy as np

from snn_compile.compiler.lower_lava import lower
from snn_compile.compiler.pipeline import load_qgraph
from snn_compile.compiler.qgraph import QGraph
from snn_compile.errors import UserError
from snn_compile.hw_sim.int_reference import input_frames, run_token_time
from snn_compile.hw_sim.loihi2 import run_config
from snn_compile.hw_sim.probes import Activity, count_windows


@dataclass
class TokenResult:
    """What one token window returns: integer logits and, when probing, every
    population's token-time output ``(T, size)`` (spikes 0/1 or graded values)."""

    sums: np.ndarray                                  # (V,) int64: sum_t readout[t]
    outputs: Optional[Dict[str, np.ndarray]] = None   # population -> (T, size) int64


def _stop_runtime(anchor) -> None:
    """Stop the Lava runtime behind ``anchor`` if it is still up (idempotent)."""
    rt = getattr(anchor, "runtime", None)
    if rt is None:
        return
    try:
        if getattr(rt, "_is_started", False) or getattr(rt, "_is_running", False):
            anchor.stop()
    except Exception:  # noqa: BLE001 - best effort on the way out
        pass


class LavaSession:
    """A lowered QGraph with its Lava runtime, fed one token window at a time."""

    def __init__(self, qgraph: QGraph, probe: bool = True, hardware: bool = False,
                 sparse: bool = True, merge: bool = True, line_min_work=None):

        cfg = run_config(hardware)          # raises UserError first when no Loihi 2
        self.qgraph = qgraph
        self.probe = probe
        self.hardware = hardware
        self.net = lower(qgraph, probe=probe, sparse=sparse, merge=merge,
                         line_min_work=line_min_work)
        self._inputs = self.net.io_groups(self.net.injectors)     # one entry per Injector
        self._probes = self.net.io_groups(self.net.extractors)    # one entry per Extractor
        self.T = qgraph.steps_per_token
        self.W = self.net.window
        self.steps = 0                      # Lava steps run so far
        self.recorded: list = []            # token-time outputs of every token fed (probe=True)
        self.window_activity: list = []     # probes.Activity of every window fed (probe=True)
        self.keep_window: Optional[int] = None   # index of a window whose frames to keep
        self.kept_frames: Optional[Dict[str, np.ndarray]] = None   # its (W, size) frames
        self.position = 0                   # next token position of the current sequence
        self.timing = {"build_s": 0.0, "run_s": 0.0, "io_s": 0.0, "reset_s": 0.0}
        t0 = time.perf_counter()
        anchor = self.net.anchor
        anchor.create_runtime(run_cfg=cfg)
        self._finalizer = weakref.finalize(self, _stop_runtime, anchor)
        self.timing["build_s"] = time.perf_counter() - t0

    # ------------------------------------------------------------------ context
    def __enter__(self) -> "LavaSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the Lava runtime (and its OS processes). Safe to call twice."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    # -------------------------------------------------------------------- run
    def feed_frames(self, frames: Mapping[str, np.ndarray]) -> TokenResult:
        """Run one token window; ``frames[input]`` is that input's ``(T, size)`` frames."""
        from lava.magma.core.run_conditions import RunSteps

        if self.closed:
            raise UserError("this Lava session is closed; create a new one")
        q, T, W = self.qgraph, self.T, self.W
        t0 = time.perf_counter()
        for inj, members in self._inputs:
            full = np.zeros((W, inj.out_port.shape[0]))   # T frames, then W - T zeros
            for name, sl in members:
                f = np.asarray(frames[name])
                size = q.pop(name).size
                if f.shape != (T, size):
                    raise ValueError(f"input {name}: frames of shape {f.shape}, "
                                     f"expected {(T, size)}")
                full[:T, sl] = f
            for t in range(W):
                inj.send(full[t])
        t1 = time.perf_counter()
        outputs, window = {}, {}
        try:
            self.net.anchor.run(condition=RunSteps(num_steps=W))
            t2 = time.perf_counter()
            for ex, members in self._probes:
                got = np.rint(np.stack([ex.receive() for _ in range(W)])).astype(np.int64)
                for name, sl in members:
                    d = q.pop(name).depth
                    window[name] = got[:, sl]
                    outputs[name] = window[name][d:d + T]
        except BaseException:
            self.close()            # a half-run window leaves the pipeline inconsistent
            raise
        self.timing["io_s"] += (t1 - t0) + (time.perf_counter() - t2)
        self.timing["run_s"] += t2 - t1
        self.steps += W
        self.position += 1
        sums = outputs[q.readout].sum(axis=0)
        if not self.probe:
            return TokenResult(sums, None)
        for name in self.net.injectors:
            outputs[name] = np.asarray(frames[name]).astype(np.int64)
            window[name] = np.concatenate([outputs[name],
                                           np.zeros((W - T, outputs[name].shape[1]), np.int64)])
        self.recorded.append(outputs)
        # every step of the window as the extractors saw it, counted now (not kept)
        self.window_activity.append(count_windows(q, lambda n: window[n][None], 1))
        if self.keep_window == len(self.window_activity) - 1:
            self.kept_frames = window
        return TokenResult(sums, outputs)

    def outputs(self) -> Dict[str, np.ndarray]:
        """Token-time outputs ``(N, T, size)`` of every token fed so far (probe=True)."""
        if not self.probe:
            raise UserError("this Lava session was built without probes (probe=False)")
        if not self.recorded:
            return {}
        return {k: np.stack([r[k] for r in self.recorded]) for k in self.recorded[0]}

    def activity(self, last: Optional[int] = None):
        """Counts of every step of every window fed so far (the last ``last`` ones), from
        the frames Lava's extractors returned at each step, drain steps included
        (``snn_compile.hw_sim.probes.Activity``)."""
        if not self.probe:
            raise UserError("this Lava session was built without probes (probe=False)")
        if not self.window_activity:
            raise UserError("no token has been fed to this Lava session yet")
        parts = self.window_activity[-last:] if last else self.window_activity
        return Activity.concat(parts)

    def feed(self, token: int, position: Optional[int] = None) -> TokenResult:
        """Feed ``token`` at ``position`` (default: the next one) as one window."""

        pos = self.position if position is None else int(position)
        frames = input_frames(self.qgraph, [int(token)], [pos])
        res = self.feed_frames({k: np.asarray(v)[0] for k, v in frames.items()})
        self.position = pos + 1
        return res

    def reset(self) -> None:
        """Clear every state a sequence leaves behind (synaptic buffers, LIF u/v,
        the attention memory); the next token is at position 0.

        Setting the Vars in the paused runtime is much cheaper than rebuilding
        it (docs/lava.md); token windows stay aligned with the LIF resets
        because every window is exactly ``W`` steps.
        """
        t0 = time.perf_counter()
        self.position = 0
        if self.steps == 0:         # nothing ran yet: every state is still at its initial zero
            return
        for proc, var in self.net.state:
            v = getattr(proc, var)
            v.set(np.zeros(v.shape))
        self.position = 0
        self.timing["reset_s"] += time.perf_counter() - t0


class LavaBackend:
    """Token backend (``feed(token) -> logits``) running on Lava.

    ``hardware=False``: Loihi2SimCfg(select_tag='fixed_pt'), the bit-accurate
    simulator; ``hardware=True``: Loihi2HwCfg (needs lava-loihi and a chip).
    Logits are ``logit_scale * sum_t readout``.
    """

    def __init__(self, qgraph: QGraph, hardware: bool = False, probe: bool = False,
                 merge: bool = True):
        self.name = "loihi2" if hardware else "lava-sim"
        self.qgraph = qgraph
        self.vocab_size = qgraph.pop(qgraph.readout).size
        self.context = qgraph.context
        self.session = LavaSession(qgraph, probe=probe, hardware=hardware, merge=merge)
        self.last: Optional[TokenResult] = None

    def reset(self) -> None:
        self.session.reset()

    def feed(self, token: int) -> np.ndarray:
        pos = self.session.position
        if self.context and pos >= self.context:
            raise UserError(f"position {pos} is beyond the model's context {self.context}; "
                            "reset() and re-feed the last context//2 tokens")
        self.last = self.session.feed(token, pos)
        return self.qgraph.logit_scale * self.last.sums.astype(np.float64)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "LavaBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def measure_speed(qgraph: QGraph, n_tokens: int = 4, probe: bool = False, seed: int = 0,
                  merge: bool = True, check: bool = False) -> dict:
    """Wall-clock speed of the Lava simulation of ``qgraph`` on random tokens.

    Returns build time (lowering + compiling + starting the runtime), Lava
    steps per second and tokens per second over ``n_tokens`` windows (the
    first window, which warms the runtime up, is timed separately), the process
    count and ``LavaSession.timing`` (run_s, io_s, and reset_s of one ``reset()``
    after the run). ``check``: also compare the readout sums of every token with the
    integer reference on the same tokens (``sums_equal_int``).
    """
    rng = np.random.default_rng(seed)
    V = qgraph.pop(qgraph.readout).size
    n = min(n_tokens + 1, qgraph.context or n_tokens + 1)
    toks = rng.integers(0, V, size=n)
    t0 = time.perf_counter()
    with LavaSession(qgraph, probe=probe, merge=merge) as s:
        build = time.perf_counter() - t0
        t1 = time.perf_counter()
        sums = [s.feed(int(toks[0])).sums]
        first = time.perf_counter() - t1
        t2 = time.perf_counter()
        for k in toks[1:]:
            sums.append(s.feed(int(k)).sums)
        dt = time.perf_counter() - t2
        s.reset()
        n_proc = len(s.net.processes)
        timing = dict(s.timing)
    steps = (n - 1) * s.W
    out = {"processes": n_proc, "window": s.W, "build_s": build, "first_token_s": first,
           "tokens": n - 1, "seconds": dt, "tokens_per_s": (n - 1) / dt if dt else float("inf"),
           "steps_per_s": steps / dt if dt else float("inf"), "probe": probe, "merge": merge,
           "timing": timing}
    if check:
        ref = run_token_time(qgraph, np.asarray(toks)).logits_int.cpu().numpy()
        out["sums_equal_int"] = bool(np.array_equal(np.stack(sums), ref))
    return out


def main(argv=None) -> int:
    """``python -m snn_compile.hw_sim.lava_runner``: processes and tokens/s of the
    unmerged and the merged lowering in one run (docs/lava.md)."""
    import argparse
    import json
    import os

    ap = argparse.ArgumentParser(prog="python -m snn_compile.hw_sim.lava_runner",
                                 description=main.__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default:spikedecoder",
                    help="a checkpoint, default:spikedecoder, a .nir or a .qgraph")
    ap.add_argument("--tokens", type=int, default=4, help="timed tokens (after one warm-up)")
    ap.add_argument("--merge", choices=("both", "on", "off"), default="both")
    ap.add_argument("--probe", action="store_true", help="an Extractor on every population")
    ap.add_argument("--no-check", action="store_true",
                    help="skip comparing the readout sums with the integer reference")
    args = ap.parse_args(argv)
    q = load_qgraph(args.model)[0]
    modes = {"both": (False, True), "on": (True,), "off": (False,)}[args.merge]
    load = os.getloadavg()[0]
    for m in modes:
        r = measure_speed(q, args.tokens, probe=args.probe, merge=m, check=not args.no_check)
        r["load_1min_before"] = round(load, 2)
        load = os.getloadavg()[0]
        print(json.dumps(r), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
