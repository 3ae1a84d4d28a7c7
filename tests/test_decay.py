"""The decaying accumulator (``accum`` with ``decay``), value for value on every backend.

Per global step ``g``: ``out[g] = out[g-1] + ((-decay * out[g-1]) >> decay_exp) + a[g]``
(docs/semantics.md). Checked here: ``fixed_point.accum_step`` against Lava's own
GradedVec and Dense model code; the QGraph fields (validation, files of every
version); the token-time reference against an independent global-time loop in
Python integers (drain steps between tokens) and against itself streamed; the
reference, both emulator engines and Lava ``fixed_pt`` on hand-built graphs (a
multi-head decaying attention memory, a graded residual stream) and on a random
decoder with decaying memories; the activity counts of the drain steps; the
range report's bounds.
"""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch

from snn_compile.hw_sim.int_reference import (IntReferenceBackend, input_frames, plan_graph,
                                              run_frames, run_token_time)
from snn_compile.compiler.qgraph import (FILE_VERSION, Accum, accum_decay_product_bound,
                                         accum_state_bound, assign_depths,
                                         Graded, Input, Lif, Prod, QGraph, QGraphError, Synapse)
from snn_compile.compiler.quantize import attention_indices, replication
from snn_compile.hw_sim.random_graphs import random_dag_qgraph, random_decoder_qgraph
from snn_compile.loihi import fixed_point as fx
from snn_compile.hw_sim.emulator import Emulator, EmulatorBackend
from snn_compile.hw_sim.probes import activity_from_token_time

from _lava_ports import FakeInPort, FakeOutPort


# ------------------------------------------------------------------ graphs
def decaying_attention_graph(T: int = 2, heads: int = 3, dh: int = 2,
                             decays=(0, 64, 255), decay_exp: int = 12) -> QGraph:
    """input -> LIF (emb) -> LIF (qkv) -> prod (kv) -> decaying accum (mem) -> prod (read,
    gated by q) -> LIF (attn) -> graded readout; one decay mantissa per head.

    ``kv = (100 k * (+-90) v) >> 2``: the memory holds thousands (of both signs), so
    the decay is far from its rounding floor; ``attn`` reads it through a negative
    weight_exp."""
    rng = np.random.default_rng(11)
    V, C, d = 5, 6, heads * dh
    n = heads * dh * dh
    q_of, k_of, v_of, out_of = attention_indices(d, heads)
    P = {"tokens": Input("tokens", V), "positions": Input("positions", C),
         "emb": Lif("emb", d, dv=500, vth=40),
         "qkv": Lif("qkv", 3 * d, dv=200, vth=30),
         "kv": Prod("kv", n, exp=2),
         "mem": Accum("mem", n, role="memory",
                      decay=[int(decays[h]) for h in range(heads) for _ in range(dh * dh)],
                      decay_exp=decay_exp),
         "read": Prod("read", n),
         "attn": Lif("attn", d, dv=1000, vth=25),
         "head": Graded("head", V)}
    sign = np.where(rng.random(n) < 0.3, -90, 90)
    w_attn = np.zeros((d, n), np.int64)
    w_attn[out_of, np.arange(n)] = rng.integers(1, 40, size=d)[out_of]
    mixed = lambda *s: (np.rint(rng.normal(10, 40, size=s) / 2) * 2).clip(-256, 254).astype(np.int64)  # noqa: E731
    S = [Synapse("tok", "tokens", "emb", mixed(d, V)),
         Synapse("pos", "positions", "emb", mixed(d, C)),
         Synapse("w_qkv", "emb", "qkv", mixed(3 * d, d)),
         Synapse("kv_k", "qkv", "kv", replication(k_of, 3 * d) * 100, port="a_in1"),
         Synapse("kv_v", "qkv", "kv", replication(v_of, 3 * d) * sign[:, None], port="a_in2"),
         Synapse("mem_in", "kv", "mem", np.eye(n, dtype=np.int64), graded=True),
         Synapse("read_mem", "mem", "read", np.eye(n, dtype=np.int64), port="a_in1", graded=True),
         Synapse("read_q", "qkv", "read", replication(q_of, 3 * d), port="a_in2"),
         Synapse("attn_in", "read", "attn", w_attn, weight_exp=-8, graded=True),
         Synapse("w_head", "attn", "head", mixed(V, d))]
    assign_depths(P, S, ["tokens", "positions"])
    return QGraph(P, S, T, ["tokens", "positions"], "head", logit_scale=0.25, context=C).validate()


def residual_stream_graph(T: int = 2) -> QGraph:
    """A ``graded`` population as a residual stream: ``r`` sums a binary Dense from LIF
    ``x2`` (weight_exp 2) and a graded identity (weight 1, exp 0, delay 1) from the earlier
    graded ``g0``; LIF ``y`` reads ``r`` through a graded Dense with weight_exp -4."""
    rng = np.random.default_rng(5)
    V, C, d = 5, 6, 6
    P = {"tokens": Input("tokens", V), "positions": Input("positions", C),
         "x0": Lif("x0", d, dv=300, vth=30),
         "g0": Graded("g0", d, vth=0),
         "x1": Lif("x1", d, dv=0, vth=10),
         "x2": Lif("x2", d, dv=700, vth=15),
         "r": Graded("r", d, vth=0),
         "y": Lif("y", d, dv=100, vth=20),
         "head": Graded("head", V)}
    mixed = lambda *s: (np.rint(rng.normal(8, 40, size=s) / 2) * 2).clip(-256, 254).astype(np.int64)  # noqa: E731
    S = [Synapse("tok", "tokens", "x0", mixed(d, V)),
         Synapse("pos", "positions", "x0", mixed(d, C)),
         Synapse("x0_g0", "x0", "g0", mixed(d, d), weight_exp=3),
         Synapse("x0_x1", "x0", "x1", mixed(d, d)),
         Synapse("x1_x2", "x1", "x2", mixed(d, d)),
         Synapse("x2_r", "x2", "r", mixed(d, d), weight_exp=2),
         Synapse("g0_r", "g0", "r", np.eye(d, dtype=np.int64), graded=True),        # delay 1
         Synapse("r_y", "r", "y", mixed(d, d), weight_exp=-4, graded=True),
         Synapse("y_head", "y", "head", mixed(V, d)),
         Synapse("r_head", "r", "head", mixed(V, d), weight_exp=-3, graded=True)]   # delay 1
    assign_depths(P, S, ["tokens", "positions"])
    return QGraph(P, S, T, ["tokens", "positions"], "head", logit_scale=0.25, context=C).validate()


def decaying_decoder(seed: int = 0) -> QGraph:
    return random_decoder_qgraph(seed=seed, vocab=8, d=8, heads=2, layers=1, T=3, context=8,
                                 calib_tokens=8, memory_decay=[40, 255])


# ------------------------------------------------- the arithmetic vs Lava's models
def test_accum_step_equals_lava_graded_vec_and_two_dense_loops():
    """GradedVec(vth=0) + Dense(eye) + Dense(-diag(decay), weight_exp=-e), all 24-bit graded,
    driven step by step through stand-in ports as Lava's channels deliver int32 (a Dense sends
    its previous step's a_buff first): ``accum_step`` on torch and on numpy agrees at every
    step, through int32 wraps of the product and the sum and the dropped -2^31."""
    pytest.importorskip("lava.proc.graded.models")
    from lava.proc.dense.models import PyDenseModelBitAcc
    from lava.proc.graded.models import PyGradedVecModelFixed

    rng = np.random.default_rng(0)
    n = 400
    for e in (12, 8, 4):
        decay = rng.integers(0, min(255, 2 ** e) + 1, size=n)
        decay[:40] = 0
        gm = PyGradedVecModelFixed({})
        gm.vth, gm.v = np.array([0], np.int32), np.zeros(n, np.int32)
        gm.a_in, gm.s_out = FakeInPort(), FakeOutPort()
        loops = []
        for w, exp in ((np.eye(n), 0), (-np.diag(decay), -e)):
            m = PyDenseModelBitAcc({"weight_exp": exp})
            m.a_buff = np.zeros(n, np.int32)
            m.weights = w.astype(np.int32)
            m.num_message_bits = np.array([24])
            m.s_in, m.a_out = FakeInPort(), FakeOutPort()
            loops.append(m)
        x_t = torch.zeros(n, dtype=torch.int64)
        x_n = np.zeros(n, np.int64)
        dec_t = torch.as_tensor(decay)
        seen_wrap = False
        for step in range(60):
            scale = [0, 2 ** 6, 2 ** 16, 2 ** 24, 2 ** 30][step % 5]
            a = rng.integers(-scale, scale + 1, size=n).astype(np.int32) if scale else None
            if a is not None:
                a[0] = -2 ** 30                   # neuron 0 (no decay) walks into -2^31
            from_loops = [m.a_buff.copy() for m in loops]
            gm.a_in.data = (np.zeros(n, np.int32) if a is None else a) + from_loops[0] + from_loops[1]
            gm.run_spk()
            out = gm.s_out.sent.astype(np.int32)
            for m, sent in zip(loops, from_loops):
                m.s_in.data = out
                m.run_spk()
                assert np.array_equal(m.a_out.sent, sent)
            x_t = fx.accum_step(x_t, None if a is None else torch.as_tensor(a.astype(np.int64)),
                                dec_t, e)
            x_n = fx.accum_step(x_n, None if a is None else a.astype(np.int64), decay, e)
            assert np.array_equal(x_t.numpy(), out.astype(np.int64)), (e, step)
            assert np.array_equal(x_n, out.astype(np.int64)), (e, step)
            seen_wrap |= bool((np.abs(decay.astype(np.int64) * x_n) >= 2 ** 31).any())
        assert seen_wrap


def test_accum_step_without_decay_is_the_old_sum():
    x = torch.tensor([5, -7, 2 ** 31 - 1])
    a = torch.tensor([3, 2, 2])
    assert torch.equal(fx.accum_step(x, a), fx.wrap32(x + a))
    assert fx.accum_step(x, torch.tensor([0, 0, 1])).tolist() == [5, -7, 0]   # -2^31: dropped
    assert torch.equal(fx.accum_step(x, a, torch.zeros(3, dtype=torch.int64), 12), fx.wrap32(x + a))
    # one drain step: positive values lose ceil(d x / 2^e), negative ones floor(d |x| / 2^e)
    y = fx.accum_step(torch.tensor([4096, -4096, 1, -1, 100]), None, 255, 12, wrap=False)
    assert y.tolist() == [4096 - 255, -4096 + 255, 0, -1, 100 - 7]


@pytest.mark.parametrize("seed", range(4))
def test_state_bound_holds(seed):
    """``accum_state_bound`` on runs of +b, -b and silence, and on a long run of +b that
    drives the slowest neuron close to its bound."""
    rng = np.random.default_rng(seed)
    e = int(rng.choice([4, 8, 12]))
    d = rng.integers(1, min(255, 2 ** e) + 1, size=50)
    pop = Accum("m", 50, decay=[int(x) for x in d], decay_exp=e)
    b = int(rng.integers(1, 3000))
    B = accum_state_bound(pop, b, None)
    x = np.zeros(50, np.int64)
    peak = 0
    for _ in range(40):
        a = np.full(50, int(rng.choice([b, -b, 0])), np.int64)
        for _ in range(int(rng.integers(5, 300))):
            x = fx.accum_step(x, a, d, e, wrap=False)
            peak = max(peak, int(np.abs(x).max()))
    assert peak <= B
    slow = Accum("m", 1, decay=[int(d.min())], decay_exp=e)
    x = np.zeros(1, np.int64)
    for _ in range(40 * 2 ** e // int(d.min()) + 10):
        x = fx.accum_step(x, np.array([-b]), d.min(), e, wrap=False)
    assert accum_state_bound(slow, b, None) == B and B // 2 < -int(x[0]) <= B
    assert accum_state_bound(pop, b, 10) == min(B, 10 * b)
    still = Accum("m", 2, decay=[0, 9])
    assert accum_state_bound(still, b, None) is None and accum_state_bound(still, b, 7) == 7 * b


@pytest.mark.parametrize("seed", range(4))
def test_decay_product_bound_holds_neuron_by_neuron(seed):
    """``accum_decay_product_bound``: the decay loop's product ``|d_i out_i|`` stays below
    it on long runs of -b (each neuron near its own bound), and it is far below
    ``max d * accum_state_bound`` (the population-wide product) when mantissas spread."""
    rng = np.random.default_rng(seed)
    e = int(rng.choice([8, 12]))
    d = rng.integers(1, min(255, 2 ** e) + 1, size=40)
    d[:2] = [1, min(255, 2 ** e)]                       # the slowest and the fastest
    d[2] = 0                                            # one neuron that only integrates
    pop = Accum("m", 40, decay=[int(x) for x in d], decay_exp=e)
    b = int(rng.integers(1, 3000))
    P = accum_decay_product_bound(pop, b, None)
    x = np.zeros(40, np.int64)
    peak = 0
    for _ in range(2 * 2 ** e + 10):
        x = fx.accum_step(x, np.full(40, -b, np.int64), d, e, wrap=False)
        peak = max(peak, int(np.abs(d * x).max()))
    assert (b + 1) * 2 ** e // 2 < peak <= P <= (b + 1) * 2 ** e + int(d.max())
    assert P * 100 < int(d.max()) * accum_state_bound(Accum("m", 1, decay=[1], decay_exp=e), b,
                                                      None)
    assert accum_decay_product_bound(pop, None, None) is None
    assert accum_decay_product_bound(Accum("m", 3), b, None) == 0
    assert accum_decay_product_bound(pop, b, 5) <= int(d.max()) * 5 * b


# ----------------------------------------------------------------- the QGraph
def test_validation_of_decay_fields():
    g = decaying_attention_graph()
    mem = g.pop("mem")
    assert mem.decaying and mem.decay_exp == 12 and len(mem.decay) == mem.size
    assert not Accum("m", 3).decaying
    assert not Accum("m", 3, decay=[0, 0, 0]).decaying
    bad = {"len": dict(decay=[1, 2]), "range": dict(decay=[0, 256, 1]),
           "negative": dict(decay=[0, -1, 1]), "float": dict(decay=[0.5, 1, 1]),
           "exp": dict(decay=[1, 1, 1], decay_exp=17), "negative lambda": dict(decay=[9, 1, 1],
                                                                                decay_exp=3)}
    msgs = {"len": "2 decay values for 3 neurons", "range": "outside 0..255",
            "negative": "outside 0..255", "float": "integers", "exp": "decay_exp 17",
            "negative lambda": "negative"}
    for what, kw in bad.items():
        q = decaying_attention_graph()
        q.populations["m"] = Accum("m", 3, **kw)
        q.synapses.append(Synapse("to_m", "kv", "m", np.ones((3, q.pop("kv").size), np.int64),
                                  graded=True))
        q.pop("m").depth = q.pop("kv").depth + 1
        with pytest.raises(QGraphError, match=msgs[what]):
            q.validate()
    assert not hasattr(decaying_attention_graph().pop("emb"), "decay")   # a Lif has none


def test_a_file_with_decay_on_another_kind_is_refused(tmp_path):
    """Files before version 5 hold every kind's fields: a decay on a LIF is refused there."""
    path, bad = str(tmp_path / "g.qgraph"), str(tmp_path / "bad.qgraph")
    q = decaying_attention_graph()
    q.save(path)

    def lif_decay(values):
        def edit(h):
            h["version"] = 4
            for p in h["populations"]:
                if p["name"] == "emb":
                    p["decay"] = values
        return edit

    _rewrite_header(path, bad, lif_decay([3] * q.pop("emb").size))
    with pytest.raises(QGraphError, match="accum populations only"):
        QGraph.load(bad)
    _rewrite_header(path, bad, lif_decay([0] * q.pop("emb").size))   # all zero: harmless
    assert not hasattr(QGraph.load(bad).pop("emb"), "decay")


def _rewrite_header(src: str, dst: str, edit) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.namelist():
            data = zin.read(item)
            if item == "graph.json":
                h = json.loads(data)
                edit(h)
                data = json.dumps(h).encode()
            zout.writestr(item, data)


def test_files_keep_the_decay_and_old_versions_load(tmp_path):
    q = decaying_attention_graph()
    q.pop("mem").decay = list(np.asarray(q.pop("mem").decay, np.int64))   # numpy ints save too
    path = str(tmp_path / "g.qgraph")
    q.save(path)
    with zipfile.ZipFile(path) as zf:
        h = json.loads(zf.read("graph.json"))
    assert h["version"] == FILE_VERSION == 5      # 5: each kind's own fields
    assert {"decay", "du"} & set(h["populations"][0]) != {"decay", "du"}
    q2 = QGraph.load(path)
    assert q2.pop("mem").decay == [int(x) for x in q.pop("mem").decay]
    assert q2.pop("mem").decay_exp == 12 and not hasattr(q2.pop("emb"), "decay")
    tokens = torch.tensor([[1, 4, 0, 2]])
    assert torch.equal(run_token_time(q2, tokens).outputs["mem"],
                       run_token_time(q, tokens).outputs["mem"])

    # version 2 (no decay fields) and version 1 (no token_lag either): non-decaying accums
    plain = decaying_attention_graph(decays=(0, 0, 0))
    plain.pop("mem").decay = []
    plain.save(path)

    def v2(h):
        h["version"] = 2
        for p in h["populations"]:
            p.pop("decay", None), p.pop("decay_exp", None)

    def v1(h):
        v2(h)
        h["version"] = 1
        for s in h["synapses"]:
            del s["token_lag"]

    for i, edit in enumerate((v2, v1)):
        old = str(tmp_path / f"old{i}.qgraph")
        _rewrite_header(path, old, edit)
        q_old = QGraph.load(old)
        assert not q_old.pop("mem").decaying and q_old.pop("mem").decay_exp == 12
        assert torch.equal(run_token_time(q_old, tokens).logits_int,
                           run_token_time(plain, tokens).logits_int)

    def future(h):
        h["version"] = FILE_VERSION + 1

    newer = str(tmp_path / "newer.qgraph")
    _rewrite_header(path, newer, future)
    with pytest.raises(QGraphError, match="newer"):
        QGraph.load(newer)


# ------------------------------------------------------------- token time
def _global_oracle(q: QGraph, kv: np.ndarray, N: int) -> np.ndarray:
    """The memory in token time from its input ``kv`` (N, T, size), by running global time in
    Python integers: input at g = n*W + t + depth for t < T, none at the W - T other steps."""
    T, W = q.steps_per_token, q.window
    mem = q.pop("mem")
    x = [0] * mem.size
    out = np.zeros((N, T, mem.size), np.int64)
    for g in range(N * W):
        n, t = divmod(g - mem.depth, W)
        for i in range(mem.size):
            a = int(kv[n, t, i]) if (0 <= n < N and t < T) else 0
            x[i] = x[i] + ((-mem.decay[i] * x[i]) >> mem.decay_exp) + a
            if 0 <= n < N and t < T:
                out[n, t, i] = x[i]
    return out


def test_token_time_memory_drains_between_tokens():
    q = decaying_attention_graph()
    assert q.window > q.steps_per_token + 4
    tokens = torch.tensor([4, 1, 1, 3, 0, 2])
    o = run_token_time(q, tokens).outputs
    want = _global_oracle(q, o["kv"].numpy(), len(tokens))
    assert np.array_equal(o["mem"].numpy(), want)
    mem = o["mem"].numpy()
    heads = mem.reshape(len(tokens), q.steps_per_token, 3, 4)
    assert (mem > 1000).any() and (mem < -1000).any()
    # head 0 never forgets: its memory is the causal sum; heads 1, 2 decay, 2 the fastest
    assert np.array_equal(heads[..., 0, :].reshape(-1, 4),
                          np.cumsum(o["kv"].numpy().reshape(-1, 12), 0)[:, :4])
    # heads are independent: each equals the same head of a memory decaying at its rate, and
    # the faster the decay, the less it holds
    held = []
    for dec in (0, 64, 255):
        u = run_token_time(decaying_attention_graph(decays=(dec,) * 3), tokens).outputs["mem"]
        assert torch.equal(u.reshape(-1, 3, 4)[:, (0, 64, 255).index(dec)],
                           o["mem"].reshape(-1, 3, 4)[:, (0, 64, 255).index(dec)])
        held.append(int(u.abs().sum()))
    assert held[0] > held[1] > held[2] > 0
    # the memory reaches the output: without decay the attention spikes differ
    flat = decaying_attention_graph(decays=(0, 0, 0))
    assert not torch.equal(run_token_time(flat, tokens).outputs["attn"], o["attn"])
    assert o["attn"].any() and o["read"].any()


def test_streaming_equals_one_shot():
    for q in (decaying_attention_graph(), decaying_decoder(1)):
        V = q.pop("tokens").size
        seq = torch.randint(0, V, (6,), generator=torch.Generator().manual_seed(3))
        ref = run_token_time(q, seq)
        be = IntReferenceBackend(q, probes=True)
        for n in range(6):
            assert np.array_equal(be.feed(int(seq[n])), ref.logits[n].numpy()), n
        out = be.probe_outputs()
        for name in q.populations:
            assert np.array_equal(out[name], ref.outputs[name].numpy()), name
        # chunks of 2 + 4 tokens through run_frames' state
        plan = plan_graph(q)
        fr = input_frames(q, seq[None])
        a = run_frames(plan, {k: v[:, :2] for k, v in fr.items()})
        b = run_frames(plan, {k: v[:, 2:] for k, v in fr.items()}, a.state)
        for name in q.populations:
            both = torch.cat([a.outputs[name], b.outputs[name]], dim=1)
            assert torch.equal(both, ref.outputs[name][None]), name
        be.reset()
        assert np.array_equal(be.feed(int(seq[0])), ref.logits[0].numpy())


@pytest.mark.parametrize("make", [decaying_attention_graph, residual_stream_graph,
                                  decaying_decoder])
@pytest.mark.parametrize("engine,event_driven", [("numpy", None), ("torch", True),
                                                 ("torch", False)])
def test_emulators_equal_reference(make, engine, event_driven):
    q = make()
    V = q.pop("tokens").size
    tokens = torch.randint(0, V, (3, min(7, q.context)), generator=torch.Generator().manual_seed(1))
    ref = run_token_time(q, tokens)
    run = Emulator(q, batch=3, engine=engine, event_driven=event_driven).run_sequence(tokens)
    for name in q.populations:
        assert torch.equal(run.outputs[name], ref.outputs[name]), name
    assert torch.equal(run.logits_int, ref.logits_int)
    be = EmulatorBackend(q, engine=engine)
    for n in range(tokens.shape[1]):
        assert np.array_equal(be.feed(int(tokens[0, n])), ref.logits[0, n].numpy())


def test_numpy_engine_equals_torch_engine_through_the_drain():
    """Every global step (the drain steps in between tokens included), inputs that stop
    and restart inside windows, states recorded or not."""
    rng = np.random.default_rng(2)
    for q in (decaying_attention_graph(), decaying_decoder(2)):
        frames = {k: torch.as_tensor(rng.random((2, 5, q.steps_per_token, q.pop(k).size)) < 0.4)
                  .long() for k in q.inputs}
        runs = [Emulator(q, batch=2, engine=e, strict=False).run_sequence(None, frames=frames,
                                                                          states=s)
                for e in ("numpy", "torch") for s in (False, True)]
        for r in runs[1:]:
            for name in q.populations:
                assert torch.equal(r.global_outputs[name], runs[0].global_outputs[name]), name
        mem = runs[0].global_outputs["mem" if "mem" in q.populations else "block0.mem"]
        assert (mem != 0).any()


def test_random_dags_include_decaying_memories():
    """The random-DAG property tests (test_emulator, test_lava) draw decaying accums."""
    decaying = [s for s in range(40)
                if any(p.decaying for p in random_dag_qgraph(s, n_pops=8).populations.values())]
    assert len(decaying) > 10
    q = random_dag_qgraph(decaying[0], n_pops=8)
    q_plain = random_dag_qgraph(decaying[0], n_pops=8, decay=False)
    assert [p.name for p in q.populations.values()] == [p.name for p in q_plain.populations.values()]
    assert all(np.array_equal(a.weights, b.weights) for a, b in zip(q.synapses, q_plain.synapses))


# ---------------------------------------------------------------- activity
def test_activity_counts_the_drain_messages():
    """A memory with a non-zero state sends a message at every global step: the counts of
    ``activity_from_token_time`` equal the emulator's global-time record over each token's
    window ``g = n*W .. n*W + W - 1``, step by step, for a decaying and for a holding
    memory."""
    tokens = torch.tensor([[2, 0, 4, 4, 1]])
    N = tokens.shape[1]
    for q in (decaying_attention_graph(), decaying_attention_graph(decays=(0, 0, 0))):
        W = q.window
        ref = run_token_time(q, tokens)
        act = activity_from_token_time(q, ref.outputs)
        emu = Emulator(q, batch=1)
        emu.start_recording()
        for n in range(N):
            emu.step_token(tokens[:, n])
        glob = emu.recorded()["mem"][0].numpy()[: N * W].reshape(N, W, -1)
        assert np.array_equal(act.step_events["mem"], (glob != 0).sum(axis=2))
        per_token = (glob != 0).sum(axis=(1, 2))
        assert np.array_equal(act.events["mem"], per_token)
        token_only = (ref.outputs["mem"][0] != 0).sum((1, 2)).numpy()
        assert (per_token[1:] > token_only[1:]).all()          # drain messages counted
        assert np.array_equal(act.part("mem", "events", "token"), token_only)
        assert np.array_equal(act.synops["mem.self"], per_token)
        assert np.array_equal(act.synops["read_mem"], per_token)          # identity: fan-out 1
        if q.pop("mem").decaying:
            has = np.asarray(q.pop("mem").decay) > 0
            assert np.array_equal(act.synops["mem.decay"], (glob != 0).sum(axis=1) @ has)
            assert act.synapse_src["mem.decay"] == "mem"
        else:
            assert "mem.decay" not in act.synops


def test_range_and_resource_reports():
    from snn_compile.compiler import resources as R
    q = decaying_attention_graph()
    tokens = np.array([4, 1, 1, 3, 0, 2])
    outs = {k: v.numpy() for k, v in run_token_time(q, tokens).outputs.items()}
    r = R.range_report(q, outs)["mem"]
    assert r["out_measured"] <= r["out_bound"] and r["fits"] and r["fits_measured"]
    assert r["decay_product_measured"] <= r["decay_product_bound"] < 2 ** 31
    assert r["out_bound"] == accum_state_bound(q.pop("mem"), r["a_in_bound"], r["steps_assumed"])
    big = decaying_attention_graph(decays=(255, 255, 255), decay_exp=8)
    assert R.range_report(big)["mem"]["out_bound"] < r["out_bound"]
    rep = R.resource_report(q)["populations"]["mem"]
    assert rep["synapses_in"] == 12 + 12 + 8           # mem_in, the loop, 8 decaying neurons


# ------------------------------------------------------------------ Lava
def _lava_tokens(q, tokens, reset_first=None):
    from snn_compile.hw_sim.lava_runner import LavaSession
    with LavaSession(q) as s:
        before = None
        if reset_first is not None:
            for i, k in enumerate(reset_first):
                s.feed(int(k), i)
            before = {n: np.abs(loop.a_buff.get()).sum() for n, loop in s.net.decay_loops.items()}
            s.reset()
        res = [s.feed(int(k), i) for i, k in enumerate(tokens)]
        # the session records every token it was fed, the ones before reset() too
        act = s.activity(last=len(tokens))       # every step of Lava's extractor frames
        kinds = {type(p).__name__ for p in s.net.decay_loops.values()}
    outs = {k: np.stack([r.outputs[k] for r in res]) for k in res[0].outputs}
    return outs, np.stack([r.sums for r in res]), act, before, kinds


@pytest.mark.parametrize("make,tokens,first", [
    (decaying_attention_graph, [4, 1, 1, 3, 0], [2, 2, 0]),
    (residual_stream_graph, [1, 3, 0, 4], None),
    (decaying_decoder, [3, 1, 4, 1], None),
])
def test_lava_equals_reference_and_emulators(make, tokens, first):
    """Lava fixed_pt == integer reference == numpy and torch emulators, every population,
    every step, every token; for the attention graph after a reset() whose decay loop
    held something, so reset() must clear it."""
    pytest.importorskip("lava.proc.io.injector")
    q = make()
    ref = run_token_time(q, np.asarray(tokens))
    want = {k: v.numpy() for k, v in ref.outputs.items()}
    got, sums, act, before, kinds = _lava_tokens(q, tokens, first)
    assert set(got) == set(q.populations)
    for name in q.populations:
        bad = np.argwhere(got[name] != want[name])
        assert bad.size == 0, (name, tuple(bad[0]), got[name][tuple(bad[0])],
                               want[name][tuple(bad[0])])
    assert np.array_equal(sums, ref.logits_int.numpy())
    for engine in ("numpy", "torch"):
        run = Emulator(q, engine=engine).run_sequence(torch.tensor([tokens]))
        for name in q.populations:
            assert np.array_equal(run.outputs[name][0].numpy(), got[name]), (engine, name)
    from snn_compile.hw_sim.probes import compare_activity
    assert compare_activity(act, activity_from_token_time(q, want)) == []
    if any(p.decaying for p in q.populations.values()):
        assert kinds == {"Dense"}
    if first is not None:
        assert before and all(v > 0 for v in before.values())
    for name, p in q.populations.items():
        if p.kind != "input":
            assert want[name].any(), name
