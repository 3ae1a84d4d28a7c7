"""Training kernels (``models/kernels.py``) against the reference code they replace.

The fused LIF gives the reference loop's spikes bit for bit and its gradients (input
current and beta, both surrogates) to 1e-10 in float64; the chunked attention gives the
P x P form's A to 1e-9 in float64 (bit for bit without a decay); a whole SpikeDecoder
step with the kernels on and off gives the same spikes and gradients; the sync-free
fake quantization equals the branching one.
"""

from __future__ import annotations

import pytest
import torch

from snn_compile.models import kernels
from snn_compile.models.checkpoint import build_model
from snn_compile.models.config import ModelConfig
from snn_compile.models.spikedecoder import LIF, causal_spike_attention, retention
from snn_compile.models.surrogate import fake_quant, spike


def reference_lif(current, beta, kind):
    """The LIF loop of spikedecoder.LIF.forward_reference, with beta given."""
    v = torch.zeros_like(current[:, :, 0])
    out = []
    for t in range(current.shape[2]):
        v = beta * v + current[:, :, t]
        s = spike(v - 1.0, kind)
        out.append(s)
        v = v * (1.0 - s.detach())
    return torch.stack(out, dim=2)


def _currents(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    cur = torch.randn(*shape, generator=g, dtype=dtype) * 1.2 + 0.4
    flat = cur.view(-1)
    flat[:7] = torch.tensor([1.0, 1.0, -1.0, 0.0, 2.0, 0.5, 1.0], dtype=dtype)  # v = 1 exactly:
    flat[7] = 1.0 + torch.finfo(dtype).eps                                      # no spike (>)
    return cur


@pytest.mark.parametrize("kind", ["atan", "fast_sigmoid"])
@pytest.mark.parametrize("T", [1, 2, 5])
def test_fused_lif_spikes_equal_the_reference_loop_in_float32(kind, T):
    cur = _currents((3, 11, T, 17), torch.float32)
    for b in (0.0, 0.37, 0.5, 0.999):
        beta = torch.tensor(b)
        ref = reference_lif(cur, beta, kind)
        assert torch.equal(kernels.lif(cur, beta, kind), ref)
    assert ref.sum() > 0 and (1 - ref).sum() > 0


@pytest.mark.parametrize("kind", ["atan", "fast_sigmoid"])
@pytest.mark.parametrize("T", [1, 3, 6])
def test_fused_lif_gradients_match_the_unfused_autograd_in_float64(kind, T):
    cur = _currents((2, 5, T, 9), torch.float64, seed=T)
    grad_out = torch.randn(2, 5, T, 9, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(7))
    got = {}
    for name, fn in (("ref", reference_lif), ("fused", kernels.lif)):
        c = cur.clone().requires_grad_()
        logit = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
        beta = torch.sigmoid(logit)                    # beta through a graph, as in LIF.beta
        s = fn(c, beta, kind)
        (s * grad_out).sum().backward()
        got[name] = (s.detach(), c.grad, logit.grad)
    assert torch.equal(got["ref"][0], got["fused"][0])
    assert torch.allclose(got["ref"][1], got["fused"][1], rtol=0, atol=1e-10)
    assert abs(float(got["ref"][2] - got["fused"][2])) < 1e-10
    if T > 1:
        assert float(got["ref"][2].abs()) > 1e-3        # beta's gradient is not trivially 0


def test_fused_lif_without_beta_gradient_and_the_module_switch():
    lif = LIF(0.6, "atan", deployable=True).double()
    cur = _currents((2, 4, 4, 8), torch.float64).requires_grad_()
    ref = lif.forward_reference(cur)
    with kernels.use_kernels(True):
        fused = lif(cur)
    with kernels.use_kernels(False):
        off = lif(cur)
    assert torch.equal(fused, ref) and torch.equal(off, ref)
    s = kernels.lif(cur, torch.tensor(0.6, dtype=torch.float64), "atan")  # constant beta
    s.sum().backward()
    assert cur.grad is not None and torch.isfinite(cur.grad).all()


def _qkv(B, N, T, d, dtype, p=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(B, N, T, d, generator=g) < p).to(dtype) for _ in range(3)]


@pytest.mark.parametrize("N,T,d,H,chunk", [(13, 3, 16, 4, 4), (16, 4, 32, 4, 8),
                                           (7, 2, 8, 2, 16), (20, 4, 16, 2, 1),
                                           (24, 4, 16, 4, 5)])
def test_chunked_attention_equals_the_p_by_p_form_in_float64(N, T, d, H, chunk):
    cfg = ModelConfig(d_model=d, n_layers=2, n_heads=H, context=32, timesteps=T,
                      residual="stream", attention_memory="decay")
    ret, W = retention(cfg), cfg.memory_window
    q, k, v = _qkv(2, N, T, d, torch.float64, seed=N)
    ref = causal_spike_attention(q, k, v, H, ret, W)
    got = kernels.chunked_spike_attention(q, k, v, H, ret, W, chunk)
    assert ref.abs().max() > 1.0
    assert torch.allclose(got, ref, rtol=0, atol=1e-9 * float(ref.abs().max()))
    # the exact sum (no decay): integer counts, equal bit for bit in any order
    assert torch.equal(kernels.chunked_spike_attention(q, k, v, H, None, 0, chunk),
                       causal_spike_attention(q, k, v, H))


def test_chunked_attention_gradients_match_in_float64():
    cfg = ModelConfig(d_model=16, n_layers=1, n_heads=4, context=16, timesteps=3,
                      residual="stream", attention_memory="decay")
    ret, W = retention(cfg), cfg.memory_window
    grads = []
    for fn in (lambda q, k, v: causal_spike_attention(q, k, v, 4, ret, W),
               lambda q, k, v: kernels.chunked_spike_attention(q, k, v, 4, ret, W, 3)):
        qkv = [x.requires_grad_() for x in _qkv(2, 10, 3, 16, torch.float64, seed=3)]
        g_out = torch.randn(2, 10, 3, 16, dtype=torch.float64,
                            generator=torch.Generator().manual_seed(1))
        (fn(*qkv) * g_out).sum().backward()
        grads.append([x.grad for x in qkv])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=0, atol=1e-9 * float(a.abs().max()))


TINY = dict(vocab_size=13, d_model=16, n_layers=2, n_heads=4, context=12, timesteps=3)


@pytest.mark.parametrize("extra", [
    dict(residual="stream", attention_memory="decay", token_shift=1),
    dict(residual="stream", attention_memory="sum", token_shift=2, shift_mode="full"),
    dict(residual="spike", surrogate="fast_sigmoid"),
])
def test_spikedecoder_step_with_kernels_on_and_off_is_the_same_in_float64(extra):
    cfg = ModelConfig(**TINY, **extra)
    torch.manual_seed(0)
    model = build_model(cfg).double().train()
    tokens = torch.randint(0, cfg.vocab_size, (3, cfg.context),
                           generator=torch.Generator().manual_seed(5))
    runs = {}
    for on in (False, True):
        m = build_model(cfg).double().train()
        m.load_state_dict(model.state_dict())
        with kernels.use_kernels(on):
            logits, rec = m(tokens, record=True)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab_size),
                                                     tokens.roll(-1, 1).reshape(-1))
            rate = sum(s.mean() for k, s in rec.items() if k.endswith(".attn"))
            (loss + 0.1 * rate).backward()
        runs[on] = (rec, {n: p.grad for n, p in m.named_parameters()}, logits.detach())
    (rec0, g0, l0), (rec1, g1, l1) = runs[False], runs[True]
    assert rec0.keys() == rec1.keys()
    n_spikes = 0
    for key in rec0:
        if key.endswith(".A") or key.endswith(".h") or key == "h0":
            assert torch.allclose(rec0[key], rec1[key], rtol=0, atol=1e-9), key
        else:
            assert torch.equal(rec0[key], rec1[key]), key
            n_spikes += int(rec0[key].sum())
    assert n_spikes > 100
    assert torch.allclose(l0, l1, rtol=0, atol=1e-9)
    for name in g0:
        assert g0[name] is not None and g1[name] is not None, name
        scale = max(1.0, float(g0[name].abs().max()))
        assert torch.allclose(g0[name], g1[name], rtol=0, atol=1e-6 * scale), name
    assert any(float(g.abs().max()) > 1e-4 for g in g0.values())


def test_eval_mode_keeps_the_reference_attention_bit_for_bit():
    cfg = ModelConfig(**TINY, residual="stream", attention_memory="decay", token_shift=1)
    torch.manual_seed(1)
    model = build_model(cfg).eval()
    tokens = torch.randint(0, cfg.vocab_size, (2, cfg.context))
    with torch.no_grad():
        with kernels.use_kernels(False):
            ref = model(tokens)
        with kernels.use_kernels(True):
            got = model(tokens)
    assert torch.equal(ref, got)


def branching_fake_quant(w):
    """fake_quant before it became sync-free (Python branches on tensor values)."""
    amax = w.detach().abs().max()
    if amax == 0:
        return w
    e = torch.ceil(torch.log2(amax / 127.0))
    s = torch.pow(2.0, e)
    if amax / s > 127:
        s = s * 2
    q = torch.clamp(torch.round(w / s), -127, 127) * s
    return w + (q - w).detach()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sync_free_fake_quant_equals_the_branching_one(dtype):
    """Values bit for bit (w + (q - w) is exactly q), gradient passed through unchanged."""
    g = torch.Generator().manual_seed(0)
    cases = [torch.randn(40, 30, generator=g, dtype=dtype) * s for s in (1e-3, 0.7, 50.0)]
    cases += [torch.randn(300, 70, generator=g, dtype=dtype) * 3e-5,
              torch.zeros(5, 5, dtype=dtype), torch.full((3,), 127.0, dtype=dtype),
              torch.tensor([127.4, -3.0], dtype=dtype), torch.tensor([254.0, 1.0], dtype=dtype),
              torch.tensor([-0.0, 0.0], dtype=dtype)]
    for w in cases:
        ref = branching_fake_quant(w)
        for on in (True, False):           # one straight-through node / the w + (q - w) form
            x = w.clone().requires_grad_()
            with kernels.use_kernels(on):
                got = fake_quant(x)
            assert torch.equal(got, ref)
            (got * torch.arange(got.numel(), dtype=dtype).reshape(got.shape)).sum().backward()
            assert torch.equal(x.grad, torch.arange(x.numel(), dtype=dtype).reshape(x.shape))


def test_compiled_lif_loops_and_fake_quant_give_the_same_values():
    """``set_compile(True)`` where torch.compile works here (it may contract to FMAs, so
    spikes are compared in float64, where a contraction cannot reach the threshold);
    the compiled fake quantization equals the branching one."""
    if not hasattr(torch, "compile"):
        pytest.skip("no torch.compile in this PyTorch")
    cur = _currents((2, 6, 4, 8), torch.float64).requires_grad_()
    beta = torch.tensor(0.55, dtype=torch.float64, requires_grad=True)
    ref = reference_lif(cur, beta, "atan")
    (ref * 1.0).sum().backward()
    g_ref, b_ref = cur.grad.clone(), beta.grad.clone()
    cur.grad, beta.grad = None, None
    g = torch.Generator().manual_seed(4)
    mats = [torch.randn(12, 7, generator=g) * 0.3, torch.randn(5, generator=g) * 40.0,
            torch.zeros(3, 3)]
    try:
        kernels.set_compile(True)
        got = kernels.lif(cur, beta, "atan")
        got.sum().backward()
        quant = [fake_quant(w) for w in mats]
    finally:
        kernels.set_compile(False)
    for w, q in zip(mats, quant):
        assert torch.equal(q, branching_fake_quant(w))
    assert torch.equal(got, ref)
    assert torch.allclose(cur.grad, g_ref, rtol=0, atol=1e-10)
    assert abs(float(beta.grad - b_ref)) < 1e-10


@pytest.mark.parametrize("mode", ["diag", "full"])
def test_raw_current_for_the_norm_statistics_is_the_reference_sum(mode):
    """With the kernels on, diag shifts fold into one matmul ``(x + sum_j x[n-j] mu_j) W^T``."""
    cfg = ModelConfig(**TINY, residual="stream", token_shift=2, shift_mode=mode)
    torch.manual_seed(2)
    blk = build_model(cfg).double().blocks[0]
    with torch.no_grad():
        for p in blk.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    x = (torch.rand(2, cfg.context, 3, 16, dtype=torch.float64) < 0.4).double()
    for tgt in ("qkv", "ff"):
        from snn_compile.models.spikedecoder import shift_current
        base = blk.W_qkv if tgt == "qkv" else blk.W_1
        ref = x @ base.t() + shift_current(x, blk.shift_matrices(tgt))
        with kernels.use_kernels(True):
            got = blk.raw_current(x, tgt)
        assert not got.requires_grad
        assert torch.allclose(got, ref, rtol=0, atol=1e-12)


def test_tf32_spike_matmul_function_gives_the_product_and_its_gradients():
    """The TF32 product's autograd (run here on the CPU, where no TF32 exists, so the
    values must be those of the plain product): forward and both gradients, 4-d input."""
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(2, 5, 3, 8, generator=g) < 0.5).double().requires_grad_()
    w = fake_quant(torch.randn(6, 8, generator=g, dtype=torch.float64)).detach().requires_grad_()
    go = torch.randn(2, 5, 3, 6, generator=g, dtype=torch.float64)
    out = kernels._SpikeMatmul.apply(x, w, False, True)
    (out * go).sum().backward()
    gx, gw = x.grad.clone(), w.grad.clone()
    x.grad = w.grad = None
    ref = x @ w.t()
    (ref * go).sum().backward()
    assert torch.equal(out, ref)
    assert torch.allclose(gx, x.grad, atol=1e-12) and torch.allclose(gw, w.grad, atol=1e-12)
    assert kernels.spike_matmul(x, w).equal(ref)            # CPU: the plain product


def test_cuda_graph_step_needs_one_cuda_device():
    from snn_compile.errors import UserError
    from snn_compile.models.distributed import Dist
    from snn_compile.models.train import GraphedStep, make_optimizer

    m = build_model(ModelConfig(**TINY)).train()
    with pytest.raises(UserError, match="CUDA graphs need one CUDA device"):
        GraphedStep(m, make_optimizer(m, 1e-3, 0.0), Dist(device="cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("extra", [
    dict(residual="stream", attention_memory="decay", token_shift=2),
    dict(residual="spike"),
])
def test_cuda_graph_steps_train_like_eager_steps(extra):
    """Six steps of ``GraphedStep`` (two eager warm-up steps, the capture, replays) and of
    ``train_step`` from the same weights and batches: the same losses, gradient norms and
    weights (the replay runs the eager step's kernels; the bound leaves room for a cuBLAS
    algorithm chosen differently under capture), and the spike records of the last step
    are those of the eager one."""
    import numpy as np

    from snn_compile.models.distributed import Dist
    from snn_compile.models.spikedecoder import is_spike_record
    from snn_compile.models.train import GraphedStep, make_optimizer, train_step

    cfg = ModelConfig(**TINY, **extra)
    torch.manual_seed(0)
    init = build_model(cfg).state_dict()
    rng = np.random.default_rng(3)
    batches = [(rng.integers(0, cfg.vocab_size, (4, cfg.context)),
                rng.integers(0, cfg.vocab_size, (4, cfg.context))) for _ in range(6)]
    dist = Dist(device="cuda")
    runs = []
    for graphs in (False, True):
        m = build_model(cfg).cuda().train()
        m.load_state_dict(init)
        opt = make_optimizer(m, 3e-3, 0.01)
        kw = dict(record=True, attention_floor=0.05)
        step = GraphedStep(m, opt, dist, warmup=2, **kw) if graphs else \
            (lambda x, y, m=m, opt=opt: train_step(m, opt, x, y, dist, **kw))
        out = [step(x, y) for x, y in batches]
        rec = {k: v.clone() for k, v in out[-1][2].items()}
        runs.append(([o[:2] for o in out], rec, {n: p.detach().clone()
                                                 for n, p in m.named_parameters()}))
    (f0, r0, p0), (f1, r1, p1) = runs
    assert step.graph is not None and step.calls == 6
    assert np.allclose(f0, f1, rtol=1e-5, atol=0), (f0, f1)
    spikes = [k for k in r0 if is_spike_record(k)]
    assert len(spikes) >= 8 and sum(int(r0[k].sum()) for k in spikes) > 100
    for k in spikes:
        assert torch.equal(r0[k], r1[k]), k
    for n in p0:
        assert torch.allclose(p0[n], p1[n], rtol=0, atol=1e-5), n
    assert any(not torch.equal(p0[n], init[n].cuda()) for n in p0)      # the steps trained


# ------------------------------------------------------------------ Triton LIF
TRITON_CHECK = r"""
import torch
from snn_compile.models import kernels, lif_triton
assert lif_triton.INTERPRETED
g = torch.Generator().manual_seed(4)
n = 0
for kind in ("atan", "fast_sigmoid"):
    for shape in [(2, 5, 4, 37), (3, 7, 1, 8), (1, 3, 6, 1100)]:
        cur = torch.randn(*shape, generator=g) * 1.2 + 0.4
        cur.view(-1)[:3] = torch.tensor([1.0, 1.0, 1.0 + 2 ** -23])    # v = 1: no spike
        for b in (0.0, 0.37, 0.999):
            beta = torch.tensor(b)
            s1, v1 = lif_triton.forward(cur, beta)
            s0, v0 = kernels._forward_loop(cur, beta)
            assert torch.equal(s1, s0) and torch.equal(v1, v0), (kind, shape, b)
            grad = torch.randn(*shape, generator=g)
            gi1, gb1 = lif_triton.backward(grad, v1, beta, kind)
            gi0, gb0 = kernels._backward_loop(grad, v0, beta, kind, True)
            assert torch.allclose(gi1, gi0, rtol=1e-6, atol=1e-7), (kind, shape, b)
            assert abs(float(gb1 - gb0)) <= 1e-5 * max(1.0, abs(float(gb0))), (gb1, gb0)
            n += int(s0.sum())
assert n > 1000, n
print("ok", n)
"""


def test_triton_lif_kernels_equal_the_torch_loops_in_the_interpreter():
    """The Triton kernels (``lif_triton``) on CPU tensors through Triton's interpreter:
    the torch loops' spikes and membranes bit for bit, their gradients to float32
    rounding, both surrogates, T = 1 to 6, partial last blocks."""
    import os
    import subprocess
    import sys

    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-c", TRITON_CHECK], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stderr[-3000:]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", ["atan", "fast_sigmoid"])
def test_triton_lif_on_cuda_gives_the_reference_spikes_and_gradients(kind):
    """Compiled for the GPU (FMA contraction off): the reference loop's spikes bit for
    bit, and its gradients (input current and beta) to float32 rounding."""
    assert kernels.set_triton(True)
    cur = _currents((4, 9, 4, 130), torch.float32).cuda()
    grad_out = torch.randn(cur.shape, generator=torch.Generator().manual_seed(2)).cuda()
    got = {}
    for name, fn in (("ref", reference_lif), ("triton", kernels.lif)):
        c = cur.clone().requires_grad_()
        logit = torch.tensor(0.3, device="cuda", requires_grad=True)
        s = fn(c, torch.sigmoid(logit), kind)
        (s * grad_out).sum().backward()
        got[name] = (s.detach(), c.grad, logit.grad)
    assert torch.equal(got["ref"][0], got["triton"][0])
    assert torch.allclose(got["ref"][1], got["triton"][1], rtol=1e-5, atol=1e-6)
    assert abs(float(got["ref"][2] - got["triton"][2])) <= 1e-4 * abs(float(got["ref"][2]))


# ------------------------------------------------------- int8 spike products
def test_grid_mantissas_recover_the_fake_quant_grid():
    g = torch.Generator().manual_seed(6)
    for scale in (1e-6, 0.01, 1.0, 300.0):
        for shape in ((7, 5), (1, 1), (40, 3)):
            w = torch.randn(*shape, generator=g, dtype=torch.float64) * scale
            q = fake_quant(w)
            m, s = kernels.grid_mantissas(q)
            assert m.dtype == torch.int8 and int(m.abs().max()) <= 127
            assert torch.equal(m.double() * s, q)
            assert int(m.abs().max()) >= 64             # s is the grid's step, not smaller
    m, s = kernels.grid_mantissas(torch.zeros(3, 4))
    assert int(m.abs().max()) == 0 and float(s) > 0


def test_int8_spike_product_equals_the_float_product_bit_for_bit():
    """The integer form (here the CPU's int32 matmul; ``torch._int_mm`` on CUDA) against
    the float32 and float64 products, on spikes and 8-bit grid weights of a 4 d-wide
    input, and its autograd node's gradients against the plain product's."""
    g = torch.Generator().manual_seed(8)
    x = (torch.rand(2, 6, 4, 512, generator=g) < 0.7).float()
    w = fake_quant(torch.randn(105, 512, generator=g) * 0.05)
    got = kernels.int8_spike_product(x, w)
    assert got.shape == (2, 6, 4, 105)
    assert torch.equal(got, x @ w.t())
    assert torch.equal(got.double(), x.double() @ w.double().t())
    xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
    out = kernels._SpikeMatmul.apply(xg, wg, True, False)
    go = torch.randn(out.shape, generator=g)
    (out * go).sum().backward()
    assert torch.equal(out, x @ w.t())
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    ((xr @ wr.t()) * go).sum().backward()
    assert torch.allclose(xg.grad, xr.grad, atol=1e-5) and torch.allclose(wg.grad, wr.grad,
                                                                           atol=1e-4)
    assert kernels.int8_shapes_ok(48, 512) and not kernels.int8_shapes_ok(12, 512)
    assert not kernels.int8_shapes_ok(48, 20)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_int8_products_on_cuda_give_the_fp32_forward_spike_for_spike():
    """The TINY stream model's forward with int8 spike products against full FP32 ones
    on CUDA: every spike record equal, the logits equal bit for bit."""
    cfg = ModelConfig(**TINY, residual="stream", attention_memory="decay", token_shift=1)
    torch.manual_seed(0)
    m = build_model(cfg).cuda().eval()
    tokens = torch.randint(0, cfg.vocab_size, (64, cfg.context), device="cuda")
    outs = []
    try:
        for on in (False, True):
            kernels.set_int8(on)
            with torch.no_grad():
                outs.append(m(tokens, record=True))
    finally:
        kernels.set_int8(False)
    (l0, r0), (l1, r1) = outs
    assert torch.equal(l0, l1)
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k


def test_bf16_gradients_of_the_spike_product_are_the_product_gradients_rounded():
    """``grads="bf16"``: the forward is untouched (exact), the two gradients are those of
    the plain product to bfloat16 rounding (about 3 significant digits)."""
    g = torch.Generator().manual_seed(9)
    x = (torch.rand(64, 128, generator=g) < 0.3).float()
    w = fake_quant(torch.randn(96, 128, generator=g) * 0.1)
    go = torch.randn(64, 96, generator=g)
    xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
    out = kernels._SpikeMatmul.apply(xg, wg, True, False, "bf16")
    (out * go).sum().backward()
    assert torch.equal(out.detach(), x @ w.t())
    assert xg.grad.dtype == torch.float32 and wg.grad.dtype == torch.float32
    for got, ref in ((xg.grad, go @ w), (wg.grad, go.t() @ x)):
        err = float((got - ref).abs().max() / ref.abs().max())
        assert 0 < err < 2e-2, err            # rounded, and only rounded
