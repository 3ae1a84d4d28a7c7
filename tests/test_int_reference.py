"""Fixed-point ops against Lava's own bit-accurate model code, and the token-time reference.

Lava's ProcessModel classes are instantiated directly (no runtime) and driven
through stand-in ports that deliver int32 arrays, as Lava's channels do; the
torch ops in ``snn_compile.loihi.fixed_point`` must agree value for value,
including the overflow corners (int32 wraps, Lava's one-sided 24-bit wrap of u,
the clip of v, abs(-2^31) in ProdNeuron/GradedVec).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from snn_compile.hw_sim.int_reference import (IntReferenceBackend, input_frames,
                                              logits_only, run_token_time)
from snn_compile.compiler.qgraph import lava_legal_weights, Lif, QGraph, Synapse
from snn_compile.compiler.quantize import attention_indices
from snn_compile.hw_sim.random_graphs import random_dag_qgraph, random_decoder_qgraph
from snn_compile.errors import UserError
from snn_compile.loihi import fixed_point as fx

from _lava_ports import FakeInPort, FakeOutPort

lava_models = pytest.importorskip("lava.proc.lif.models",
                                  reason="Lava is an optional runtime dependency of hw_sim")


def _t(x):
    return torch.as_tensor(np.asarray(x, dtype=np.int64))


@pytest.mark.parametrize("seed", range(6))
def test_lif_step_equals_lava_model(seed):
    from lava.proc.lif.models import PyLifResetModelBitAcc

    rng = np.random.default_rng(seed)
    n = 300
    du, dv = int(rng.integers(0, 4096)), int(rng.integers(0, 4096))
    vth, bm, be = int(rng.integers(0, 2 ** 17)), int(rng.integers(-4096, 4096)), int(rng.integers(0, 8))
    m = PyLifResetModelBitAcc({"reset_interval": 1000, "reset_offset": 0})
    m.u = np.zeros(n, np.int32)
    m.v = np.zeros(n, np.int32)
    m.du, m.dv, m.vth = du, dv, vth
    m.bias_mant = np.full(n, bm, np.int16)
    m.bias_exp = np.full(n, be, np.int16)
    m.a_in, m.s_out = FakeInPort(), FakeOutPort()
    m.time_step = 1
    pop = Lif("x", n, du=du, dv=dv, vth=vth, bias_mant=bm, bias_exp=be)
    p = fx.LifParams.of(pop)                       # all wraps on
    u = torch.zeros(n, dtype=torch.int64)
    v = torch.zeros_like(u)
    for step in range(25):
        scale = [2 ** 8, 2 ** 16, 2 ** 24, 2 ** 31 - 1][step % 4]
        a = rng.integers(-scale, scale, size=n).astype(np.int32)
        m.a_in.data = a
        m.time_step += 1
        m.run_spk()
        s, u, v = fx.lif_step(_t(a), u, v, p)
        assert np.array_equal(s.numpy(), m.s_out.sent.astype(bool)), step
        assert np.array_equal(u.numpy(), m.u) and np.array_equal(v.numpy(), m.v), step


@pytest.mark.parametrize("graded,delay,exp,src", [
    (False, 0, 0, 14), (False, 0, -3, 14), (True, 0, 2, 14), (True, 0, -5, 14),
    (False, 3, 1, 14), (True, 2, -2, 14),
    # at most 5 non-zeros of 256 per row: fixed_point.sparse_rows' form, graded sums wrap
    (False, 0, 0, 256), (True, 0, -5, 256), (True, 0, 2, 256)])
def test_synapse_kernel_equals_lava_dense(graded, delay, exp, src):
    from lava.proc.dense.models import PyDelayDenseModelBitAcc, PyDenseModelBitAcc

    rng = np.random.default_rng(7)
    w = lava_legal_weights(rng.integers(-256, 256, size=(9, src)))
    w[:, 0] = 0
    if src > 14:                     # rows of 1 to 5 non-zeros, column 1 in every row
        keep = np.zeros(w.shape, bool)
        for row in keep:
            row[rng.choice(np.arange(1, src), size=rng.integers(1, 5), replace=False)] = True
        w = np.where(keep & (w != 0), w, 0)
        w[:, 1] = np.where(w[:, 1] == 0, 254, w[:, 1])
    if delay:
        m = PyDelayDenseModelBitAcc({"weight_exp": exp})
        m.delays = np.full(w.shape, delay)
        m.a_buff = np.zeros((9, delay + 1), np.int32)
    else:
        m = PyDenseModelBitAcc({"weight_exp": exp})
        m.a_buff = np.zeros(9, np.int32)
    m.weights = w.astype(np.int32)
    m.num_message_bits = np.array([24 if graded else 0])
    m.s_in, m.a_out = FakeInPort(), FakeOutPort()
    syn = Synapse("s", "a", "b", w, exp, graded=graded, delay=delay)
    k = fx.SynapseKernel(syn, "graded" if graded else "lif")
    assert (k.sparse is not None) == (src > 14)
    hist = []
    for step in range(12):
        x = (rng.integers(-2 ** 22, 2 ** 22, size=src) if graded
             else rng.integers(0, 2, size=src)).astype(np.int32)
        m.s_in.data = x
        m.run_spk()
        lava_out = m.a_out.sent.astype(np.int64)
        # Lava sends what it received 1 + delay steps ago, cast into an int32 channel
        want = hist[step - 1 - delay] if step - 1 - delay >= 0 else np.zeros(9, np.int64)
        assert np.array_equal(lava_out.astype(np.int32).astype(np.int64), want), step
        hist.append(k(_t(x)[None])[0].numpy())
        ref = fx.dense_reference(_t(x), _t(w), exp, graded, delayed=bool(delay)).numpy()
        assert np.array_equal(hist[-1], ref)


def test_prod_and_graded_equal_lava_models():
    from lava.proc.graded.models import PyGradedVecModelFixed
    from lava.proc.prodneuron.models import PyProdNeuronModelFixed

    rng = np.random.default_rng(3)
    n = 500
    for exp, vth in [(0, 0), (3, 5), (7, 1000)]:
        pm = PyProdNeuronModelFixed({})
        pm.exp, pm.vth = np.array([exp], np.int32), np.array([vth], np.int32)
        pm.a_in1, pm.a_in2, pm.s_out = FakeInPort(), FakeInPort(), FakeOutPort()
        gm = PyGradedVecModelFixed({})
        gm.vth, gm.v = np.array([vth], np.int32), np.zeros(n, np.int32)
        gm.a_in, gm.s_out = FakeInPort(), FakeOutPort()
        for scale in (2 ** 4, 2 ** 12, 2 ** 20, 2 ** 31 - 1):
            a1 = rng.integers(-scale, scale, size=n).astype(np.int32)
            a2 = rng.integers(-scale, scale, size=n).astype(np.int32)
            a1[0], a2[0] = -2 ** 31, 1                      # abs(-2^31) stays negative in int32
            pm.a_in1.data, pm.a_in2.data = a1, a2
            pm.run_spk()
            got = fx.prod_step(_t(a1), _t(a2), exp, vth).numpy()
            assert np.array_equal(got, pm.s_out.sent.astype(np.int64)), (exp, vth, scale)
            gm.a_in.data = a1
            gm.run_spk()
            assert np.array_equal(fx.graded_step(_t(a1), vth).numpy(),
                                  gm.s_out.sent.astype(np.int64))


def test_lava_legal_check_matches_weightutils():
    from lava.utils.weightutils import clip_weights, determine_sign_mode, truncate_weights

    rng = np.random.default_rng(0)
    for i in range(200):
        lo, hi = [(-300, 300), (0, 300), (-300, 1), (-10, 10)][i % 4]
        w = rng.integers(lo, hi, size=(5, 6))
        mode = determine_sign_mode(w)
        lava = truncate_weights(clip_weights(w, mode, 8), mode, 8)
        legal = np.array_equal(lava, w)
        assert fx.is_lava_legal(torch.as_tensor(w)) == legal
        assert np.array_equal(lava_legal_weights(w), lava)
        assert fx.is_lava_legal(torch.as_tensor(lava_legal_weights(w)))


# -------------------------------------------------------------- token time
@pytest.fixture(scope="module")
def decoder():
    return random_decoder_qgraph(seed=2, vocab=20, d=16, heads=2, layers=2, T=3, context=12)


def test_decoder_structure(decoder):
    q = decoder
    d, H = 16, 2
    dh = d // H
    assert q.inputs == ["tokens", "positions"] and q.readout == "head"
    sizes = {"emb": d, "block0.qkv": 3 * d, "block0.kv": H * dh * dh, "block0.mem": H * dh * dh,
             "block0.read": H * dh * dh, "block0.attn": d, "block0.mid": d, "block0.ff": 4 * d,
             "block0.out": d, "head": 20, "tokens": 20, "positions": 12}
    for name, size in sizes.items():
        assert q.pop(name).size == size, name
    kinds = {"block1.kv": "prod", "block1.mem": "accum", "block1.read": "prod", "head": "graded"}
    assert all(q.pop(n).kind == k for n, k in kinds.items())
    syn = {s.name: s for s in q.synapses}
    q_of, k_of, v_of, out_of = attention_indices(d, H)
    assert syn["block0.kv_k"].port == "a_in1" and syn["block0.read_q"].port == "a_in2"
    assert (syn["block0.kv_k"].weights.argmax(1) == k_of).all()
    assert (syn["block0.kv_v"].weights.argmax(1) == v_of).all()
    assert (syn["block0.read_q"].weights.argmax(1) == q_of).all()
    assert (syn["block0.attn_in"].weights.argmax(0) == out_of).all()
    assert syn["block0.read_q"].delay == 2 and syn["block0.mem_in"].graded
    for s in q.synapses:
        assert fx.is_lava_legal(torch.as_tensor(s.weights)), s.name


def test_lif_rates_are_moderate(decoder):
    tokens = torch.randint(0, 20, (4, 12), generator=torch.Generator().manual_seed(1))
    run = run_token_time(decoder, tokens)
    for name, p in decoder.populations.items():
        if p.kind == "lif":
            r = float(run.outputs[name].double().mean())
            assert 0.01 < r < 0.6, (name, r)


def test_attention_memory_is_causal_sum(decoder):
    """mem[p] = sum_{p' <= p} k[p'] (x) v[p'] and read = q-gated memory, from qkv spikes."""
    tokens = torch.randint(0, 20, (2, 6), generator=torch.Generator().manual_seed(5))
    o = run_token_time(decoder, tokens).outputs
    q_of, k_of, v_of, _ = attention_indices(16, 2)
    qkv = o["block0.qkv"].reshape(2, 18, -1)
    kv = qkv[..., k_of] * qkv[..., v_of]
    mem = torch.cumsum(kv, dim=1)
    assert torch.equal(o["block0.mem"].reshape(2, 18, -1), mem)
    assert torch.equal(o["block0.read"].reshape(2, 18, -1), mem * qkv[..., q_of])


def test_streaming_backend_equals_batched(decoder):
    seq = torch.randint(0, 20, (12,), generator=torch.Generator().manual_seed(9))
    ref = run_token_time(decoder, seq)
    be = IntReferenceBackend(decoder, probes=True)
    for n in range(12):
        assert np.array_equal(be.feed(int(seq[n])), ref.logits[n].numpy()), n
    with pytest.raises(UserError, match="context"):
        be.feed(0)
    out = be.probe_outputs()
    for name in decoder.populations:
        assert np.array_equal(out[name], ref.outputs[name].numpy()), name
    be.reset()
    assert np.array_equal(be.feed(int(seq[0])), ref.logits[0].numpy())


def test_logits_only_equals_full_run(decoder):
    tokens = torch.randint(0, 20, (5, 7), generator=torch.Generator().manual_seed(4))
    full = run_token_time(decoder, tokens)
    assert torch.equal(logits_only(decoder, tokens, batch_size=2), full.logits)
    assert torch.equal(full.logits, full.logits_int.double() * decoder.logit_scale)
    assert full.logits_int.shape == (5, 7, 20)


def test_input_frames_and_errors(decoder):
    f = input_frames(decoder, [3, 1], [4, 0])
    assert f["tokens"].shape == (2, 3, 20) and f["positions"].shape == (2, 3, 12)
    assert f["tokens"][0, :, 3].tolist() == [1, 1, 1] and int(f["tokens"].sum()) == 6
    assert f["positions"][0, :, 4].tolist() == [1, 1, 1]
    with pytest.raises(UserError, match="outside"):
        input_frames(decoder, [20])
    with pytest.raises(UserError, match="context"):
        run_token_time(decoder, torch.zeros(13, dtype=torch.long))


def test_save_load_roundtrip(decoder, tmp_path):
    path = str(tmp_path / "g.qgraph")
    decoder.save(path)
    q2 = QGraph.load(path)
    tokens = torch.randint(0, 20, (2, 5), generator=torch.Generator().manual_seed(8))
    assert torch.equal(run_token_time(q2, tokens).logits_int,
                       run_token_time(decoder, tokens).logits_int)


def test_random_dag_streaming_backend_equals_batched():
    for seed in range(10):
        q = random_dag_qgraph(seed, n_pops=7)
        seq = torch.randint(0, 8, (6,), generator=torch.Generator().manual_seed(seed))
        ref = run_token_time(q, seq)
        be = IntReferenceBackend(q)
        for n in range(6):
            assert np.array_equal(be.feed(int(seq[n])), ref.logits[n].numpy())


def test_one_compiled_call_site_serves_kernels_of_every_form():
    """``torch.compile`` guards one call site's code on the attributes of the kernel it
    first saw and evaluates those guards on the next kernel: kernels of other forms (a
    gather, a sparse read-out, a dense matmul) must carry the same attributes, or the
    guard raises instead of recompiling (the token step then ran eagerly)."""
    rng = np.random.default_rng(3)
    dense = rng.integers(-20, 21, size=(6, 8))
    gather = np.zeros((6, 8), np.int64)
    gather[np.arange(6), rng.integers(0, 8, 6)] = 1
    sparse = np.zeros((4, 64), np.int64)
    sparse[np.arange(4), rng.integers(0, 32, 4)] = 3
    sparse[np.arange(4), rng.integers(32, 64, 4)] = -2
    mats = [(dense, False), (gather, False), (sparse, True)]
    kernels = [fx.SynapseKernel(Synapse("s", "a", "b", w, 0, graded=g), "lif")
               for w, g in mats]
    assert [k.mode for k in kernels] == ["dense", "gather", "dense"] and kernels[2].sparse is not None
    call = torch.compile(lambda k, x: k(x), dynamic=False)
    for k, (w, _) in zip(kernels, mats):
        x = torch.as_tensor(rng.integers(0, 2, size=(5, w.shape[1])))
        assert torch.equal(call(k, x), k(x))
