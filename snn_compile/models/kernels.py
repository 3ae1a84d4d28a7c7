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
On CUDA float32 tensors both loops run as two Triton kernels instead (``lif_triton``:
one pass over the current forward, one over the gradient backward, FMA contraction
off, so the spikes are again the reference's; on by default where Triton imports,
``set_triton(False)`` or ``SNN_KERNELS_TRITON=0`` switches them off; tested on the CPU
through Triton's interpreter and on CUDA against the torch loops).

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
import importlib.util
import math
import os
from typing import Dict, Optional, Tuple

import torch

_STATE = {"kernels": os.environ.get("SNN_KERNELS", "1") != "0",
          "compile": os.environ.get("SNN_KERNELS_COMPILE", "0") == "1",
          "chunk_tokens": int(os.environ.get("SNN_ATTENTION_CHUNK", "8")),
          "tf32": os.environ.get("SNN_KERNELS_TF32", "0") == "1",
          "int8": os.environ.get("SNN_KERNELS_INT8", "0") == "1",
          "bf16_grads": os.environ.get("SNN_KERNELS_BF16_GRADS", "0") == "1",
          "triton": os.environ.get("SNN_KERNELS_TRITON", "1") != "0"}


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
    for name in ("lif_forward", "lif_backward", "grid_value"):
        _LOOPS.pop(name, None)
    return _STATE["compile"]


def set_chunk_tokens(tokens: int) -> None:
    """Tokens per chunk of ``chunked_spike_attention`` (default 8, ``SNN_ATTENTION_CHUNK``)."""
    if tokens < 1:
        raise ValueError(f"chunk of {tokens} tokens; give at least 1")
    _STATE["chunk_tokens"] = int(tokens)


def set_tf32(enabled: bool) -> None:
    """TF32 tensor cores for the spike x quantized-weight products (``spike_matmul``):
    their forward (unless int8) and their gradients."""
    _STATE["tf32"] = bool(enabled)


def set_int8(enabled: bool) -> None:
    """int8 tensor cores for the forward of the spike x quantized-weight products
    (``spike_matmul`` with ``on_grid``; exact, ``int8_spike_product``)."""
    _STATE["int8"] = bool(enabled)


def set_bf16_grads(enabled: bool) -> None:
    """bfloat16 tensor cores for the gradients of the spike x quantized-weight products
    (``g w`` and ``g^T x``, rounded to bfloat16; mixed precision of the backward only)."""
    _STATE["bf16_grads"] = bool(enabled)


_PRODUCTS = ("int8", "tf32", "bf16_grads")


@contextlib.contextmanager
def spike_products(tf32: Optional[bool] = None, int8: Optional[bool] = None,
                   bf16_grads: Optional[bool] = None):
    """Within the block, the spike products' settings given (``set_tf32``, ``set_int8``,
    ``set_bf16_grads``; None keeps the current one, e.g. from the environment); the old
    settings after."""
    old = {n: _STATE[n] for n in _PRODUCTS}
    given = dict(tf32=tf32, int8=int8, bf16_grads=bf16_grads)
    _STATE.update({n: bool(v) for n, v in given.items() if v is not None})
    try:
        yield
    finally:
        _STATE.update(old)


def check_product_flags(tf32: bool, int8: bool, bf16_grads: bool, device: str, kind: str,
                        residual: str, deployable: bool) -> None:
    """A ``UserError`` where the spike-product flags that are on (``--tf32``, ``--int8``,
    ``--bf16-grads``) would do nothing: off CUDA, on a model whose blocks do not call
    ``spike_matmul`` (only the residual-stream SpikeDecoder does), ``--int8`` on weights
    that are not fake-quantized."""
    from snn_compile.errors import UserError

    flags = [f for f, on in (("--tf32", tf32), ("--int8", int8), ("--bf16-grads", bf16_grads))
             if on]
    if not flags:
        return
    named = " ".join(flags)
    if device != "cuda":
        raise UserError(f"{named}: CUDA tensor cores, they need --device cuda")
    if not (kind == "spikedecoder" and residual == "stream"):
        raise UserError(f"{named} act on the spike x weight products of the residual-stream "
                        "SpikeDecoder: add --model spikedecoder --residual stream, or drop "
                        "them")
    if "--int8" in flags and not deployable:
        raise UserError("--int8 multiplies the 8-bit weight mantissas of a deployable model, "
                        "and this one is not (--no-deployable): drop --int8")


def describe_products() -> str:
    """How the spike x quantized-weight products run on CUDA: "fp32", or the settings on
    joined by "+" ("int8+tf32", "int8+bf16_grads", ...)."""
    return "+".join(n for n in _PRODUCTS if _STATE[n]) or "fp32"


def describe(model_compiled: bool = False) -> str:
    """The kernel settings in words; ``model_compiled``: the model runs under
    ``torch.compile``, whose compiler then fuses the LIF loops instead of Triton's kernels."""
    if not _STATE["kernels"]:
        return "off (reference LIF loop and P x P attention)"
    triton_on = (_STATE["triton"] and not model_compiled
                 and importlib.util.find_spec("triton") is not None)
    loops = [name for name, on in (("Triton kernels on CUDA", triton_on),
                                   ("torch.compile", _STATE["compile"] or model_compiled))
             if on]
    return (f"fused LIF{' (' + ', '.join(loops) + ')' if loops else ''}, chunked attention "
            f"({_STATE['chunk_tokens']} tokens per chunk) in training"
            f"{', int8 spike x weight products (forward) on CUDA' if _STATE['int8'] else ''}"
            f"{', TF32 spike x weight products on CUDA' if _STATE['tf32'] else ''}"
            f"{', bfloat16 gradients of those products on CUDA' if _STATE['bf16_grads'] else ''}")


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
_TRITON: Dict[str, object] = {}


def compiled(name: str, fn):
    """``fn`` itself, or (after ``set_compile(True)``) its ``torch.compile``d version."""
    if not (_STATE["compile"] and _STATE["kernels"]):
        return fn
    if name not in _LOOPS:
        _LOOPS[name] = torch.compile(fn, dynamic=None)
    return _LOOPS[name]


def _loops():
    return compiled("lif_forward", _forward_loop), compiled("lif_backward", _backward_loop)


def set_triton(enabled: bool) -> bool:
    """The fused LIF's loops as Triton kernels on CUDA float32 tensors (``lif_triton``;
    on by default where Triton imports, ``SNN_KERNELS_TRITON=0`` switches it off);
    returns whether it is on."""
    _STATE["triton"] = bool(enabled) and _triton_module() is not None
    return _STATE["triton"]


def _triton_module():
    """``lif_triton``, imported on first use (None where Triton does not import)."""
    if "module" not in _TRITON:
        try:
            from snn_compile.models import lif_triton
        except ImportError:
            lif_triton = None
        _TRITON["module"] = lif_triton
    return _TRITON["module"]


def _is_compiling() -> bool:
    check = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return bool(check and check())


def _use_triton(x: torch.Tensor) -> bool:
    # under torch.compile the loops are left to the compiler, which fuses them itself
    if not (_STATE["triton"] and x.is_cuda) or _is_compiling():
        return False
    mod = _triton_module()
    return mod is not None and mod.supports(x)


class _LIF(torch.autograd.Function):
    """Reset-to-zero LIF over the whole T loop in one autograd node (module docstring);
    the loops run as the Triton kernels of ``lif_triton`` on CUDA float32 tensors."""

    @staticmethod
    def forward(ctx, current, beta, kind: str):
        if _use_triton(current):
            spikes, v_pre = _triton_module().forward(current.detach(), beta.detach())
        else:
            fwd, _ = _loops()
            # detached: the loops write with out=, which autograd refuses on inputs that
            # need a gradient when torch.compile traces this function with grad mode on
            spikes, v_pre = fwd(current.detach(), beta.detach())
        ctx.save_for_backward(v_pre, beta)
        ctx.kind = kind
        return spikes

    @staticmethod
    def backward(ctx, grad):
        v_pre, beta = ctx.saved_tensors
        if _use_triton(v_pre):
            grad_i, gbeta = _triton_module().backward(grad.detach(), v_pre, beta.detach(),
                                                      ctx.kind)
        else:
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


# ------------------------------------------ spike x quantized weight products
@contextlib.contextmanager
def _matmul_precision(mode: str):
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(mode)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)


def grid_mantissas(q: torch.Tensor):
    """``(m, s)`` with ``q = m s`` for a matrix on ``fake_quant``'s grid: int8 mantissas
    |m| <= 127 and the power of two s, recovered from q alone. ``fake_quant`` puts the
    largest |m| in [64, 127] (e is the smallest exponent that fits), so max|q| =
    f 2^(e + 7), f in [1/2, 1) (``frexp``), and ``s = max|q| / f / 128`` is 2^e exactly
    (each division exact); an all-zero q gets s = 1 and m = 0."""
    q = q.detach()
    amax = q.abs().amax()
    frac, _ = torch.frexp(amax)
    s = torch.where(amax > 0, amax / torch.where(amax > 0, frac, 1.0) / 128, 1.0)
    return torch.round(q / s).to(torch.int8), s


def int8_shapes_ok(rows: int, k: int) -> bool:
    """The sizes ``torch._int_mm`` takes on cuBLASLt: more than 16 rows, a multiple of 8,
    and an inner size that is a multiple of 8 (the output width is padded here)."""
    return rows > 16 and rows % 8 == 0 and k % 8 == 0 and k >= 16


def int8_spike_product(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``x @ q^T`` for spikes x (..., k) and q on the 8-bit grid: ``s (x_int8 @ m^T)``
    with int32 accumulation (``torch._int_mm`` on CUDA; an int32 matmul elsewhere, for
    the tests). Equal to the FP32 product bit for bit: each partial sum is an integer
    multiple of s below 4 d 127 s < 2^24 s, exact in float32 in any order, and the int32
    sum converts exactly."""
    k, n = x.shape[-1], q.shape[0]
    m, s = grid_mantissas(q)
    xr = x.reshape(-1, k).to(torch.int8)
    if x.is_cuda:
        npad = -(-n // 8) * 8
        if npad != n:
            m = torch.nn.functional.pad(m, (0, 0, 0, npad - n))
        acc = torch._int_mm(xr, m.t())[:, :n]
    else:
        acc = xr.to(torch.int32) @ m.to(torch.int32).t()
    return (acc.to(x.dtype) * s).reshape(*x.shape[:-1], n)


class _SpikeMatmul(torch.autograd.Function):
    """``x @ w^T`` for spikes x and a weight w on the 8-bit fake-quantization grid
    ``m 2^e``, |m| <= 127: forward on int8 or TF32 tensor cores (else FP32), backward in
    FP32, TF32 or bfloat16.

    Both tensor-core forward forms are exact. int8 (``int8_spike_product``): the integer
    product. TF32 keeps 10 mantissa bits: both operands are represented exactly, each
    product is exact, and the FP32 accumulation of at most 4 d terms of magnitude
    <= 127 2^e stays below 2^24 2^e (no rounding in any order). The gradients (``g w``,
    ``g^T x``) are rounded to TF32 (``tf32``) or computed from bfloat16 ``g`` into
    bfloat16 results (``grads="bf16"``; w and x are exact in bfloat16, g is not): mixed
    precision of the backward only; the deployed weights and thresholds are untouched."""

    @staticmethod
    def forward(ctx, x, w, int8: bool, tf32: bool, grads: str = "fp32"):
        ctx.save_for_backward(x, w)
        ctx.grads = "bf16" if grads == "bf16" else ("tf32" if tf32 else "fp32")
        if int8 and int8_shapes_ok(x.numel() // x.shape[-1], x.shape[-1]):
            return int8_spike_product(x, w)
        with _matmul_precision("high" if tf32 else "highest"):
            return x @ w.t()

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        gx = gw = None
        dt = torch.bfloat16 if ctx.grads == "bf16" else g.dtype
        gl = g.to(dt)
        with _matmul_precision("high" if ctx.grads == "tf32" else "highest"):
            if ctx.needs_input_grad[0]:
                gx = (gl @ w.to(dt)).to(x.dtype)
            if ctx.needs_input_grad[1]:
                gw = (gl.reshape(-1, g.shape[-1]).t() @ x.reshape(-1, x.shape[-1]).to(dt)
                      ).to(w.dtype)
        return gx, gw, None, None, None


def spike_matmul(x: torch.Tensor, w: torch.Tensor, on_grid: bool = False) -> torch.Tensor:
    """``x @ w^T`` for spikes ``x`` and a weight ``w`` (``on_grid``: fake-quantized, so
    the int8 form applies). On CUDA float32 with the kernels on, through ``_SpikeMatmul``:
    int8 forward after ``set_int8`` (where ``on_grid``), TF32 after ``set_tf32``,
    bfloat16 gradients after ``set_bf16_grads``; else the plain product."""
    int8 = _STATE["int8"] and on_grid
    if ((int8 or _STATE["tf32"] or _STATE["bf16_grads"]) and _STATE["kernels"] and x.is_cuda
            and x.dtype == torch.float32):
        return _SpikeMatmul.apply(x, w, int8, _STATE["tf32"],
                                  "bf16" if _STATE["bf16_grads"] else "fp32")
    return x @ w.t()
