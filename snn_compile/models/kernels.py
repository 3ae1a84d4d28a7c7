"""Training kernels of the SpikeDecoder: the same functions as the reference code in
``spikedecoder.py``, computed with fewer, larger operations.

**Fused LIF** (``lif``). The reference ``LIF.forward`` runs the recurrence

    v[t] = beta v'[t-1] + I[t];   s[t] = H(v[t] - 1);   v'[t] = v[t] (1 - sg(s[t]))

as a Python loop under autograd: about ten recorded operations per step, and the
backward of every ``I[:, :, t]`` read allocates and fills a tensor of the whole
(B, N, T, C) size. ``_LIF`` runs the loop without autograd and saves only the
pre-reset membrane ``v`` (spikes and the post-reset ``v'`` are recomputed from it);
its backward is the reverse loop of the same graph, with the reset gradient detached
exactly as in the reference (``sg`` = stop-gradient):

    dv[t]      = gs[t] sigma'(v[t] - 1) + gv'[t] (1 - s[t])       sigma' = the surrogate
    gI[t]      = dv[t];   gv'[t-1] = beta dv[t];   gbeta = sum_t sum dv[t] v'[t-1]

Forward arithmetic is the reference's, operation for operation (``beta * v + I``;
``v > 1`` equals ``v - 1 > 0`` in floating point, Sterbenz), so the spikes are the
same bit for bit. ``set_compile(True)`` wraps both loops in ``torch.compile`` where it
is available; compiled code may contract ``beta * v + I`` into one fused
multiply-add, so it is off by default and its spikes are tested only where it runs.

**Chunked decaying attention** (``chunked_spike_attention``). The reference forms the
(P x P) score matrix of every head, P = N T:

    A_h[p] = sum_{p' <= p} lambda_h^(g(p) - g(p')) (q[p].k[p']) v[p'],   g(n, t) = n W + t

Split the positions into chunks of c tokens (L = c T positions, chunk j starting at
Loihi step g_j = j c W; ``gl(i) = (i // T) W + i % T`` is the step of position i within
a chunk, the same for every chunk). With the state before chunk j

    S_j = sum_{p' < j L} lambda^(g_j - g(p')) k[p'] (x) v[p']           (dh x dh per head)

    A[p] = sum_{p' in chunk j, p' <= p} lambda^(gl(i) - gl(i')) (q[p].k[p']) v[p']
           + lambda^gl(i) q[p] S_j
    S_j  = sum_{j' < j} lambda^((j - 1 - j') c W) U_j',  U_j' = sum_{i'} lambda^(c W - gl(i')) k (x) v

Every exponent is >= 0 (no factor above 1, so nothing overflows as ``lambda^-g``
would); the cost per head is P L dh + P dh^2 instead of P^2 dh, and the largest
intermediate is (L x L) per chunk instead of (P x P). Without a decay (``retain``
None: the exact sum) all factors are 1 and the integer counts are exact in any order.
With a decay the summation order differs from the reference, so A agrees to rounding
(1e-15 relative in float64), not bit for bit: the model uses this form in training
only, and evaluation, folding and export keep the reference.

``use_kernels(False)`` (a context manager) or ``SNN_KERNELS=0`` in the environment
switches both kernels off: the model then runs the reference code, which the tests
compare against.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Dict, Optional, Tuple

import torch

_STATE = {"kernels": os.environ.get("SNN_KERNELS", "1") != "0",
          "compile": os.environ.get("SNN_KERNELS_COMPILE", "0") == "1",
          "chunk_tokens": int(os.environ.get("SNN_ATTENTION_CHUNK", "8")),
          "tf32": os.environ.get("SNN_KERNELS_TF32", "0") == "1"}


def kernels_enabled() -> bool:
    return _STATE["kernels"]


@contextlib.contextmanager
def use_kernels(enabled: bool):
    """Within the block, the model uses the kernels (True) or the reference code."""
    old = _STATE["kernels"]
    _STATE["kernels"] = bool(enabled)
    try:
        yield
    finally:
        _STATE["kernels"] = old


def set_compile(enabled: bool) -> bool:
    """``torch.compile`` the LIF loops and ``fake_quant`` (where available; off by
    default, ``SNN_KERNELS_COMPILE=1``); returns whether it is on."""
    _STATE["compile"] = bool(enabled) and hasattr(torch, "compile")
    _LOOPS.clear()
    return _STATE["compile"]


def set_chunk_tokens(tokens: int) -> None:
    """Tokens per chunk of ``chunked_spike_attention`` (default 8, ``SNN_ATTENTION_CHUNK``)."""
    if tokens < 1:
        raise ValueError(f"chunk of {tokens} tokens; give at least 1")
    _STATE["chunk_tokens"] = int(tokens)


def set_tf32(enabled: bool) -> None:
    """TF32 tensor cores for the spike x quantized-weight products (``spike_matmul``)."""
    _STATE["tf32"] = bool(enabled)


def describe() -> str:
    if not _STATE["kernels"]:
        return "off (reference LIF loop and P x P attention)"
    return (f"fused LIF{' (torch.compile)' if _STATE['compile'] else ''}, chunked attention "
            f"({_STATE['chunk_tokens']} tokens per chunk) in training"
            f"{', TF32 spike x weight products on CUDA' if _STATE['tf32'] else ''}")


# ------------------------------------------------------------------------ fused LIF
def surrogate_grad(x: torch.Tensor, kind: str) -> torch.Tensor:
    """d spike / d x of ``spikedecoder._Spike``, the same expressions."""
    if kind == "atan":                    # snntorch.surrogate.atan(alpha=2)
        alpha = 2.0
        return alpha / 2 / (1 + (math.pi / 2 * alpha * x) ** 2)
    return 1.0 / (25.0 * x.abs() + 1.0) ** 2      # fast_sigmoid(slope=25)


def _surrogate_times(grad: torch.Tensor, v_pre: torch.Tensor, kind: str) -> torch.Tensor:
    """``grad * surrogate_grad(v_pre - 1, kind)`` with one new tensor (in place after the
    first operation: on the CPU every fresh large tensor costs page faults)."""
    x = v_pre - 1.0
    if kind == "atan":                    # alpha = 2: 1 / (1 + (pi x)^2)
        x.mul_(math.pi).square_().add_(1.0)
    else:                                 # 1 / (25 |x| + 1)^2
        x.abs_().mul_(25.0).add_(1.0).square_()
    return torch.div(grad, x, out=x)


def _forward_loop(current: torch.Tensor, beta: torch.Tensor):
    """Spikes and pre-reset membranes of the LIF on ``current`` (B, N, T, C): three
    operations per step into preallocated buffers, the membrane written into ``v_pre``."""
    v_pre = torch.empty_like(current)
    v = torch.zeros_like(current[:, :, 0])             # v'[t-1]
    bv = torch.empty_like(v)
    for i_t, v_t in zip(current.unbind(2), v_pre.unbind(2)):
        torch.add(torch.mul(v, beta, out=bv), i_t, out=v_t)        # beta v' + I
        torch.mul(v_t, v_t <= 1.0, out=v)                         # v' = v (1 - s)
    return (v_pre > 1.0).to(current.dtype), v_pre


def _backward_loop(grad: torch.Tensor, v_pre: torch.Tensor, beta: torch.Tensor,
                   kind: str, want_beta: bool):
    """Reverse loop of the LIF graph (module docstring): gI and gbeta. The surrogate term
    and the reset masks are computed for all steps at once; the loop carries only
    ``dv[t] = gs[t] sigma'[t] + (beta (1 - s[t])) dv[t+1]``, one operation per step."""
    keep = v_pre <= 1.0                                           # 1 - s[t]
    grad_i = _surrogate_times(grad, v_pre, kind)                  # gs sigma'(v - 1), all t
    T = v_pre.shape[2]
    if T > 1:
        bk = keep[:, :, :-1].to(v_pre.dtype).mul_(beta).unbind(2)  # beta (1 - s[t]), t < T-1
        g = grad_i.unbind(2)
        for t in range(T - 2, -1, -1):
            torch.addcmul(g[t], bk[t], g[t + 1], out=g[t])
    if not want_beta or T < 2:
        return grad_i, torch.zeros((), dtype=v_pre.dtype, device=v_pre.device)
    v_post = torch.mul(v_pre[:, :, :-1], keep[:, :, :-1])         # v'[t-1], t >= 1
    return grad_i, v_post.mul_(grad_i[:, :, 1:]).sum()


_LOOPS: Dict[str, object] = {}


def compiled(name: str, fn):
    """``fn`` itself, or (after ``set_compile(True)``) its ``torch.compile``d version."""
    if not (_STATE["compile"] and _STATE["kernels"]):
        return fn
    if name not in _LOOPS:
        _LOOPS[name] = torch.compile(fn, dynamic=None)
    return _LOOPS[name]


def _loops():
    return compiled("lif_forward", _forward_loop), compiled("lif_backward", _backward_loop)


class _LIF(torch.autograd.Function):
    """Reset-to-zero LIF over the whole T loop in one autograd node (module docstring)."""

    @staticmethod
    def forward(ctx, current, beta, kind: str):
        fwd, _ = _loops()
        # detached: the loops write with out=, which autograd refuses on inputs that need
        # a gradient when torch.compile traces this function with grad mode on
        spikes, v_pre = fwd(current.detach(), beta.detach())
        ctx.save_for_backward(v_pre, beta)
        ctx.kind = kind
        return spikes

    @staticmethod
    def backward(ctx, grad):
        v_pre, beta = ctx.saved_tensors
        _, bwd = _loops()
        grad_i, gbeta = bwd(grad.detach().contiguous(), v_pre.detach(), beta.detach(),
                            ctx.kind, ctx.needs_input_grad[1])
        return (grad_i if ctx.needs_input_grad[0] else None,
                gbeta.reshape(beta.shape).to(beta.dtype) if ctx.needs_input_grad[1] else None,
                None)


def lif(current: torch.Tensor, beta: torch.Tensor, kind: str = "atan") -> torch.Tensor:
    """Spikes (B, N, T, C) of the reset-to-zero LIF with scalar ``beta`` on ``current``."""
    if beta.dim() != 0:
        raise ValueError(f"the fused LIF takes a scalar beta, got shape {tuple(beta.shape)}")
    return _LIF.apply(current, beta.to(current.dtype), kind)


# ------------------------------------------------------------- chunked attention
# keyed by id(retain); the entry holds ``retain`` itself, so the id stays unique while cached
_DECAY_CACHE: Dict[Tuple, Tuple] = {}


def _chunk_factors(retain: Optional[torch.Tensor], H: int, T: int, window: int, c: int,
                   n_chunks: int, device, dtype):
    """Decay factors of the chunked form (module docstring), cached per shape:
    D (H, L, L) intra-chunk weights (causal mask included), a (H, L) = lambda^gl(i),
    b (H, L) = lambda^(c W - gl(i)), M (H, n_chunks, n_chunks) chunk-to-chunk weights."""
    key = (id(retain), H, T, window, c, n_chunks, str(device), dtype)
    hit = _DECAY_CACHE.get(key)
    if hit is not None and hit[0] is retain:
        return hit[1]
    L = c * T
    i = torch.arange(L, dtype=torch.float64)
    gl = (i // T) * window + i % T
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    jj = torch.arange(n_chunks, dtype=torch.float64)
    steps = jj[:, None] - 1 - jj[None, :]
    before = steps >= 0                                   # chunk j' < j
    if retain is None:
        D = causal.to(torch.float64).expand(H, L, L)
        a = b = torch.ones(H, L, dtype=torch.float64)
        M = before.to(torch.float64).expand(H, n_chunks, n_chunks)
    else:
        log_l = torch.log(retain.to(torch.float64).cpu())[:, None, None]   # (H, 1, 1)
        lag = (gl[:, None] - gl[None, :]).clamp(min=0)
        D = torch.exp(lag[None] * log_l) * causal
        a = torch.exp(gl[None] * log_l[:, 0])
        b = torch.exp((c * window - gl)[None] * log_l[:, 0])
        M = torch.exp(steps.clamp(min=0)[None] * (c * window) * log_l) * before
    out = tuple(x.to(device=device, dtype=dtype).contiguous() for x in (D, a, b, M))
    if len(_DECAY_CACHE) > 64:
        _DECAY_CACHE.clear()
    _DECAY_CACHE[key] = (retain, out)
    return out


def chunked_spike_attention(q, k, v, n_heads: int, retain: Optional[torch.Tensor] = None,
                            window: int = 0, chunk_tokens: Optional[int] = None):
    """``causal_spike_attention`` (spikedecoder.py) in the chunked linear form: the same
    A (B, N, T, d) to rounding, at P L dh + P dh^2 per head instead of P^2 dh."""
    B, N, T, d = q.shape
    H, dh = n_heads, d // n_heads
    c = max(1, min(chunk_tokens or _STATE["chunk_tokens"], N))
    n_chunks = -(-N // c)
    pad = n_chunks * c - N
    if retain is None:
        window = T              # no decay: the factors are all 1 whatever the window
    D, fa, fb, M = _chunk_factors(retain, H, T, window, c, n_chunks, q.device, q.dtype)
    L = c * T

    def heads(x):             # (B, N, T, d) -> (B, H, n_chunks, L, dh)
        if pad:
            x = torch.nn.functional.pad(x, (0, 0, 0, 0, 0, pad))
        return x.reshape(B, n_chunks, L, H, dh).permute(0, 3, 1, 2, 4)

    qh, kh, vh = heads(q), heads(k), heads(v)
    scores = (qh @ kh.transpose(-1, -2)) * D[:, None]             # (B, H, nc, L, L)
    intra = scores @ vh
    U = (kh * fb[:, None, :, None]).transpose(-1, -2) @ vh        # (B, H, nc, dh, dh)
    S = (M @ U.reshape(B, H, n_chunks, dh * dh)).reshape(B, H, n_chunks, dh, dh)
    inter = (qh * fa[:, None, :, None]) @ S                       # (B, H, nc, L, dh)
    a = (intra + inter).permute(0, 2, 3, 1, 4).reshape(B, n_chunks * c, T, d)
    return a[:, :N] if pad else a


# ------------------------------------------------- TF32 spike x quantized weight
@contextlib.contextmanager
def _matmul_precision(mode: str):
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(mode)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)


class _TF32SpikeMatmul(torch.autograd.Function):
    """``x @ w^T`` on TF32 tensor cores, forward and backward.

    Exact in the forward where ``x`` holds spikes (0 / 1) and ``w`` lies on the 8-bit
    fake-quantization grid ``m 2^e``, |m| <= 127: TF32 keeps 10 mantissa bits, so both
    operands are represented exactly, each product is exact, and the FP32 accumulation
    of at most 4 d terms of magnitude <= 127 2^e stays below 2^24 2^e (no rounding in
    any order). The gradients (``g w``, ``g^T x``) are rounded to TF32: mixed precision
    of the backward only; the deployed weights and thresholds are untouched."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        with _matmul_precision("high"):
            return x @ w.t()

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        gx = gw = None
        with _matmul_precision("high"):
            if ctx.needs_input_grad[0]:
                gx = g @ w
            if ctx.needs_input_grad[1]:
                gw = g.reshape(-1, g.shape[-1]).t() @ x.reshape(-1, x.shape[-1])
        return gx, gw


def spike_matmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x @ w^T`` for spikes ``x`` and a fake-quantized ``w``; on CUDA with ``set_tf32``
    (and the kernels on) through ``_TF32SpikeMatmul``, else the plain product."""
    if _STATE["tf32"] and _STATE["kernels"] and x.is_cuda and x.dtype == torch.float32:
        return _TF32SpikeMatmul.apply(x, w)
    return x @ w.t()
