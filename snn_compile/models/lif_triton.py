"""The fused LIF of ``kernels._LIF`` as two Triton kernels (CUDA): each program owns
``BLOCK`` neurons of the (B, N, T, C) current and runs their T steps in registers.

Forward, per neuron (the torch loop's arithmetic; FMA contraction is switched off, so
``beta * v + I`` is a multiply then an add and v and the spikes equal the torch loop's
bit for bit):

    v[t] = beta v'[t-1] + I[t];   s[t] = v[t] > 1;   v'[t] = v[t] (v[t] <= 1)

It reads I once and writes v and s once; the torch loop takes about six passes over
a (B, N, C) slice per step. Backward, the reverse loop of ``kernels._backward_loop``:

    dv[t] = g[t] / q(v[t] - 1) + beta (v[t] <= 1) dv[t+1]
    q(x)  = 1 + (pi x)^2 (atan, alpha = 2)   or   (25 |x| + 1)^2 (fast sigmoid)
    gbeta = sum_{t >= 1} dv[t] v'[t-1]        (LANES partial sums per program, summed by torch)

Reads g and v once, writes dv once. The gradients round differently from the torch
loop's (another summation order for gbeta; compiled Triton divides in float32 to
within 2 ulp, not correctly rounded), not the spikes.

``TRITON_INTERPRET=1`` before the first import runs both kernels on CPU tensors through
Triton's interpreter (how the tests check them on a machine without a GPU).
"""

# no ``from __future__ import annotations``: Triton reads the ``tl.constexpr`` annotations
import os

import torch
import triton
import triton.language as tl

BLOCK = 1024          # neurons per program
LANES = 32            # gbeta partial sums per program (backward)
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _forward_kernel(CUR, S, V, beta_ptr, M, C, T: tl.constexpr, BLOCK: tl.constexpr):
    m = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = m < M
    base = (m // C) * C * T + m % C
    beta = tl.load(beta_ptr)
    v = tl.zeros([BLOCK], dtype=CUR.dtype.element_ty)
    for t in range(T):
        cur = tl.load(CUR + base + C * t, mask=live, other=0.0)
        v = beta * v + cur
        fired = v > 1.0
        tl.store(V + base + C * t, v, mask=live)
        tl.store(S + base + C * t, fired.to(CUR.dtype.element_ty), mask=live)
        v = v * (v <= 1.0).to(CUR.dtype.element_ty)        # the torch loop's reset, inf included


@triton.jit
def _backward_kernel(G, V, GI, GB, beta_ptr, M, C, T: tl.constexpr, ATAN: tl.constexpr,
                     ROWS: tl.constexpr, LANES: tl.constexpr):
    # a (ROWS, LANES) tile of consecutive neurons: gbeta's partial sums are reduced over
    # the rows only (LANES per program), a reduction Triton's interpreter also runs
    pid = tl.program_id(0)
    m = (tl.expand_dims(tl.arange(0, ROWS), 1) * LANES + tl.expand_dims(tl.arange(0, LANES), 0)
         + pid.to(tl.int64) * ROWS * LANES)
    live = m < M
    base = (m // C) * C * T + m % C
    beta = tl.load(beta_ptr)
    dv = tl.zeros([ROWS, LANES], dtype=G.dtype.element_ty)
    gb = tl.zeros([ROWS, LANES], dtype=G.dtype.element_ty)
    for r in range(T):
        t = T - 1 - r
        v = tl.load(V + base + C * t, mask=live, other=0.0)
        g = tl.load(G + base + C * t, mask=live, other=0.0)
        x = v - 1.0
        if ATAN:
            q = x * 3.141592653589793          # math.pi, as in kernels._surrogate_times
            q = q * q + 1.0
        else:
            q = tl.abs(x) * 25.0 + 1.0
            q = q * q
        gb += dv * tl.where(v <= 1.0, v, 0.0)        # dv[t+1] v'[t] (dv[T] = 0)
        dv = g / q + tl.where(v <= 1.0, beta, 0.0) * dv
        tl.store(GI + base + C * t, dv, mask=live)
    tl.store(GB + pid * LANES + tl.arange(0, LANES), tl.sum(gb, axis=0))


def _launch_options(T: int) -> dict:
    # the interpreter takes no compiler options
    if INTERPRETED:
        return {"T": T}
    return {"T": T, "enable_fp_fusion": False, "num_warps": 4}


def supports(current: torch.Tensor) -> bool:
    """Whether the kernels take ``current``: a float32 (B, N, T, C) tensor (the kernels'
    loads and stores are float32; other dtypes take the torch loops)."""
    return current.dim() == 4 and current.dtype == torch.float32


def _shape(current: torch.Tensor):
    if not supports(current):
        raise ValueError("the Triton LIF takes float32 (B, N, T, C) currents, got "
                         f"{current.dtype} {tuple(current.shape)}")
    B, N, T, C = current.shape
    return B * N * C, T, C


def forward(current: torch.Tensor, beta: torch.Tensor):
    """Spikes and pre-reset membranes of the LIF on ``current`` (B, N, T, C), scalar
    ``beta`` (a 0-dim tensor of the current's dtype)."""
    current = current.contiguous()
    M, T, C = _shape(current)
    spikes, v_pre = torch.empty_like(current), torch.empty_like(current)
    grid = (triton.cdiv(M, BLOCK),)
    _forward_kernel[grid](current, spikes, v_pre, beta.reshape(1), M, C, BLOCK=BLOCK,
                          **_launch_options(T))
    return spikes, v_pre


def backward(grad: torch.Tensor, v_pre: torch.Tensor, beta: torch.Tensor, kind: str):
    """``(gI, gbeta)`` of ``forward`` for the incoming spike gradient ``grad``."""
    grad = grad.contiguous()
    M, T, C = _shape(v_pre)
    grad_i = torch.empty_like(v_pre)
    n = triton.cdiv(M, BLOCK)
    partial = torch.empty(n * LANES, dtype=v_pre.dtype, device=v_pre.device)
    _backward_kernel[(n,)](grad, v_pre, grad_i, partial, beta.reshape(1), M, C,
                           ATAN=kind == "atan", ROWS=BLOCK // LANES, LANES=LANES,
                           **_launch_options(T))
    return grad_i, partial.sum()

