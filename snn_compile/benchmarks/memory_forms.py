"""Forms of a decaying memory's token update on a GPU: exactness and time.

``python -m snn_compile.benchmarks.memory_forms [--batch B] [--device cuda] [--json]``

One token of a decaying ``accum`` in the token-time engine is the window's ``W - T``
input-free drain steps and then its ``T`` input steps (``int_reference.accum_token_time``)::

    out <- out + ((-d * out) >> e)           (drain)
    out <- out + ((-d * out) >> e) + a_t     (t = 0 .. T-1)

This times that update, compiled with ``torch.compile``, for ``B`` sequences of one
memory of the shipped default's shape (2 048 neurons, its eight decays 1 … 130 with
e = 12, W = 43, T = 4), in the forms it can take, each checked against the int64 form
(``fixed_point.accum_step``) value for value:

* ``floor``: ``floor(out * lam)`` in float64 (``accum_step_float``);
* ``round``: the same floor by rounding (``accum_step_float(..., half=accum_half(e))``,
  the CUDA token engine's form);
* ``int64``: ``(out * (2^e - d)) >> e``;
* ``int32``: that product in int32 halves, ``(out >> 16) * 16 (2^e - d) + (((out & 0xFFFF)
  * (2^e - d)) >> e)`` (exact while ``|out| < 2^31`` and ``d >= 1``);
* ``triton`` (CUDA with Triton): the token engine's kernel, ``hw_sim.accum_triton``,
  the rounding form with the whole token in registers;
* ``triton-fma-rm``: the same kernel keeping ``z = out + 1.5 * 2^52`` and stepping it
  with one float64 fused multiply-add rounded toward minus infinity,
  ``z <- fma_rm(z, lam, 1.5 * 2^52 * (1 - lam))`` (= ``floor(out * lam) + 1.5 * 2^52``).

Prints milliseconds per token update; the figures are this GPU's, one run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from snn_compile.errors import UserError, exits_on_user_error
from snn_compile.loihi import fixed_point as fx

DECAYS = (1, 2, 4, 8, 16, 33, 65, 130)     # the shipped default's memory_decay
SIZE, T, DRAIN, EXP = 2048, 4, 39, 12


def _token(step, dtype):
    """A token's update from one step ``step(out, a_t or None)`` on ``dtype`` values: the
    drain steps, then the input steps, the outputs back in int64."""
    def update(x, a):
        x, a = x.to(dtype), a.to(dtype)
        for _ in range(DRAIN):
            x = step(x, None)
        outs = []
        for t in range(T):
            x = step(x, a[:, t])
            outs.append(x)
        return torch.stack(outs, 1).to(torch.int64)
    return update


def _forms(dec: torch.Tensor):
    """(the int64 reference, {name: update}, lam); an update maps out (B, S) int64 and
    a (B, T, S) int64 to the outputs (B, T, S) int64."""
    lam = fx.accum_lambda(dec, EXP)
    half = fx.accum_half(EXP)
    m = (1 << EXP) - dec
    m32, m16 = m.to(torch.int32), (m * 16).to(torch.int32)

    def plus(x, a):
        return x if a is None else x + a

    reference = _token(lambda x, a: fx.accum_step(x, a, dec, EXP, wrap=False), torch.int64)
    forms = {
        "floor": _token(lambda x, a: fx.accum_step_float(x, lam, a), torch.float64),
        "round": _token(lambda x, a: fx.accum_step_float(x, lam, a, half), torch.float64),
        "int64": _token(lambda x, a: plus((x * m) >> EXP, a), torch.int64),
        "int32": _token(lambda x, a: plus((x >> 16) * m16 + (((x & 0xFFFF) * m32) >> EXP), a),
                        torch.int32),
    }
    return reference, forms, lam


def _triton_forms(lam: torch.Tensor) -> dict:
    """The ``accum_triton`` kernel as update functions, rounding (the token engine's) and
    ``fma.rm``; empty without Triton."""
    try:
        from snn_compile.hw_sim import accum_triton
    except ImportError:
        return {}

    def form(fma_rm):
        return lambda x, a: accum_triton.token_update(x, a[:, None], lam, EXP, DRAIN,
                                                      fma_rm=fma_rm)[:, 0]
    return {"triton": form(False), "triton-fma-rm": form(True)}


def _time_ms(fn, args, cuda: bool, reps: int = 10) -> float:
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(3):
        fn(*args)
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn(*args)
    sync()
    return (time.perf_counter() - t0) / reps * 1e3


def run(batch: int = 16384, device: str = "cuda", seed: int = 0, compile: bool = True) -> dict:
    """The measurement; see the module doc (``compile=False``: the forms run eagerly).
    Returns one JSON-able dict."""
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise UserError("--device cuda but torch sees no CUDA GPU; use --device cpu")
    g = torch.Generator().manual_seed(seed)
    dec = torch.tensor(DECAYS, dtype=torch.int64).repeat_interleave(SIZE // len(DECAYS)).to(dev)
    x = torch.randint(-2 ** 28, 2 ** 28, (batch, SIZE), generator=g).to(dev)
    a = torch.randint(-3, 4, (batch, T, SIZE), generator=g).to(dev)
    reference, forms, lam = _forms(dec)
    want = reference(x, a)
    res = {"device": torch.cuda.get_device_name(dev) if cuda else "cpu",
           "torch": torch.__version__, "batch": batch, "neurons": SIZE, "steps": DRAIN + T,
           "forms": {}}
    todo = {k: torch.compile(f, dynamic=False) if compile else f for k, f in forms.items()}
    if cuda:
        todo.update(_triton_forms(lam))
    for name, fn in todo.items():
        try:
            equal = bool(torch.equal(fn(x, a), want))
            res["forms"][name] = {"equal": equal, "ms": _time_ms(fn, (x, a), cuda)}
        except Exception as e:              # noqa: BLE001 (a form this machine cannot run)
            res["forms"][name] = {"error": repr(e)[:300]}
        print(f"{name:>14}: {res['forms'][name]}", file=sys.stderr, flush=True)
    return res


@exits_on_user_error
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m snn_compile.benchmarks.memory_forms",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=16384, help="sequences (default 16384)")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    a = ap.parse_args(argv)
    if a.batch < 1:
        raise UserError(f"--batch {a.batch}: give at least 1 sequence")
    res = run(a.batch, a.device)
    if a.json:
        print(json.dumps(res, indent=1))
    else:
        print(f"decaying memory, {res['neurons']} neurons x {res['batch']} sequences, "
              f"{res['steps']} steps per token, on {res['device']} (torch {res['torch']}):")
        for k, v in res["forms"].items():
            print(f"  {k:>14}: " + (f"{v['ms']:.3f} ms, equal to the int64 form: {v['equal']}"
                                    if "ms" in v else v["error"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
