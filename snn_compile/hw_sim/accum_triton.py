"""A decaying memory's token-time update (``int_reference.accum_token_time``) as one
Triton kernel: each program owns ``BLOCK`` (sequence, neuron) pairs and runs all ``N``
tokens of a call, ``W`` steps each, in registers::

    drain (before token n > 0, or n = 0 after a previous call):
        x <- floor(x lam)                     W - T times
    input steps t = 0 .. T-1:
        x <- floor(x lam) + a[n, t];   out[n, t] = x

``lam = (2^e - d) / 2^e`` and ``floor(x lam) = x + ((-d x) >> e)``, Loihi's decay
(``fixed_point.accum_step``). The floor is ``accum_step_float``'s rounding form,
``((x lam - h) + 1.5 2^52) - 1.5 2^52`` with ``h = 1/2 - 2^-(e+1)``: exact where the
memory cannot wrap int32 and ``e <= ACCUM_ROUND_EXP``, the conditions under which the
token engine takes its float forms. (``x lam`` is exact in float64, so whether the
compiler fuses ``x lam - h`` into one FMA does not change it.)

Why a kernel: the compiled torch loop (43 steps per token for the default) reads and
writes the memory through several fused kernels, about 2 ms per memory and token at
16 384 sequences on an H100; this one reads ``a`` and the previous value once and
writes the outputs once (``benchmarks.memory_forms`` times both). With
``FMA_RM`` the floor is one ``fma.rm.f64`` on ``z = x + 1.5 2^52`` instead
(``z <- fma_rm(z, lam, 1.5 2^52 (1 - lam))``), PTX inline assembly: CUDA only, not in
Triton's interpreter; the benchmark times it, the engine uses the rounding form.

``TRITON_INTERPRET=1`` before the first import runs it on CPU tensors (the tests).
The CUDA token engine uses it unless ``SNN_KERNELS_TRITON=0`` (``int_reference.plan_graph``,
``triton_memories``).
"""

# no ``from __future__ import annotations``: Triton reads the ``tl.constexpr`` annotations
from typing import Optional

import torch
import triton
import triton.language as tl

from snn_compile.loihi import fixed_point as fx

BLOCK = 256           # (sequence, neuron) pairs per program


@triton.jit
def _floor_lam(x, lam, half, magic, FMA_RM: tl.constexpr):
    """floor(x lam) (+ magic with FMA_RM, where x is z = value + magic)."""
    if FMA_RM:
        return tl.inline_asm_elementwise("fma.rm.f64 $0, $1, $2, $3;", "=d,d,d,d",
                                         [x, lam, magic * (1.0 - lam)], dtype=tl.float64,
                                         is_pure=True, pack=1)
    else:
        return ((x * lam - half) + magic) - magic


@triton.jit
def _token_kernel(X0, A, OUT, LAM, CONSTS, M, S, N, first_drain, drain,
                  T: tl.constexpr, FMA_RM: tl.constexpr, BLOCK: tl.constexpr):
    m = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = m < M
    j = m % S
    base = (m // S) * N * T * S + j              # a[b, 0, 0, j]
    lam = tl.load(LAM + j)                       # j < S also where m >= M
    half = tl.load(CONSTS)
    magic = tl.load(CONSTS + 1)
    x = tl.load(X0 + m, mask=live & (first_drain >= 0), other=0).to(tl.float64)
    if FMA_RM:
        x = x + magic
    for _ in range(first_drain):
        x = _floor_lam(x, lam, half, magic, FMA_RM)
    for n in range(N):
        if n > 0:
            for _ in range(drain):
                x = _floor_lam(x, lam, half, magic, FMA_RM)
        for t in range(T):
            i = base + (n * T + t) * S
            x = _floor_lam(x, lam, half, magic, FMA_RM) + tl.load(A + i, mask=live,
                                                                  other=0).to(tl.float64)
            if FMA_RM:
                tl.store(OUT + i, (x - magic).to(tl.int64), mask=live)
            else:
                tl.store(OUT + i, x.to(tl.int64), mask=live)


def token_update(prev: Optional[torch.Tensor], a: torch.Tensor, lam: torch.Tensor,
                 decay_exp: int, drain: int, fma_rm: bool = False) -> torch.Tensor:
    """Outputs (B, N, T, S) int64 of a decaying memory over ``N`` tokens from its input
    ``a`` (B, N, T, S, integers), its factor ``lam`` (S,) float64 and the value
    ``prev`` (B, S) at the last step of the call before (None: a fresh sequence, zeros
    and no first drain). The value after the call is ``out[:, -1, -1]``."""
    half = fx.accum_half(decay_exp)
    if half is None:
        raise ValueError(f"decay_exp {decay_exp} > {fx.ACCUM_ROUND_EXP}: no rounding form")
    B, N, T, S = a.shape
    a = a.contiguous()
    out = torch.empty(a.shape, dtype=torch.int64, device=a.device)
    consts = torch.tensor([half, fx.ROUND_MAGIC], dtype=torch.float64, device=a.device)
    lam = lam.to(device=a.device, dtype=torch.float64).contiguous()
    # a fresh sequence: no first drain and x0 = 0 (first_drain = -1 masks the load)
    x0 = out if prev is None else prev.to(device=a.device, dtype=torch.int64).contiguous()
    M = B * S
    if M and N:
        _token_kernel[(triton.cdiv(M, BLOCK),)](
            x0, a, out, lam, consts, M, S, N, -1 if prev is None else drain, drain,
            T=T, FMA_RM=fma_rm, BLOCK=BLOCK)
    return out
