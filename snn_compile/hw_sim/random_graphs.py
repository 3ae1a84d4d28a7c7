"""Random quantized graphs for tests and benchmarks, built directly in integers.

``random_decoder_qgraph`` has exactly the structure the quantizer produces
from a trained SpikeDecoder (docs/emulator.md, "Attention lowering"): the same
population names, kinds, sizes, synapse names and index layouts, with random
Lava-legal weights and thresholds calibrated so that every LIF population
spikes at a moderate rate. ``random_dag_qgraph`` draws small arbitrary graphs
of every population kind (fan-in from several synapses, delays from skips)
that keep the pipeline silent outside each token's window, for property tests.
"""

from __future__ import annotations

import copy
from typing import Dict, List

import numpy as np
import torch

from snn_compile.compiler.qgraph import (VTH_MAX, Accum, Graded, Input, Lif, Population, Prod,
                                         QGraph, Synapse, assign_depths)
from snn_compile.compiler.quantize import attention_indices, replication
from snn_compile.hw_sim.int_reference import compute_population, input_frames, plan_graph
from snn_compile.loihi.fixed_point import LifParams


# ------------------------------------------------------------- weight draws
def mixed_weights(rng: np.random.Generator, shape, scale: float, mean: float = 0.0) -> np.ndarray:
    """Mixed-sign Lava-legal weights: even values in [-256, 254]."""
    w = np.rint(rng.normal(mean, scale, size=shape) / 2) * 2
    return np.clip(w, -256, 254).astype(np.int64)


# --------------------------------------------------------------- the decoder
def random_decoder_qgraph(seed: int = 0, vocab: int = 96, d: int = 64, heads: int = 4,
                          layers: int = 2, T: int = 4, context: int = 128,
                          rate: float = 0.2, calib_tokens: int = 32,
                          token_shift: int = 0, memory_decay=None,
                          decay_exp: int = 12) -> QGraph:
    """A deployable SpikeDecoder QGraph with random integer parameters.

    ``token_shift`` adds, per block, synapses from x (into qkv) and from mid (into ff)
    with token lags 1..token_shift, as the quantizer lowers a token shift.
    ``memory_decay``: one decay mantissa (0..255) per head, for every block's ``mem``
    (multi-scale retention: head h keeps ``1 - memory_decay[h] / 2^decay_exp`` of
    its memory per global step); None: memories without decay.

    LIF thresholds are set population by population (in depth order) so that
    the spike rate on random tokens is about ``rate``.
    """
    if d % heads:
        raise ValueError(f"d={d} is not a multiple of heads={heads}")
    rng = np.random.default_rng(seed)
    dh = d // heads
    P: Dict[str, Population] = {}
    S: List[Synapse] = []

    def lif(name, size, layer, role):
        P[name] = Lif(name, size, dv=int(rng.integers(0, 1024)), layer=layer,
                      role=role)

    def syn(name, src, dst, w, exp=0, port="a_in", token_lag=0):
        graded = P[src].graded
        S.append(Synapse(name, src, dst, np.asarray(w, dtype=np.int64), exp, port, graded,
                         token_lag=token_lag))

    P["tokens"] = Input("tokens", vocab, layer="emb", role="token")
    P["positions"] = Input("positions", context, layer="emb", role="position")
    lif("emb", d, "emb", "embedding")
    syn("emb.tok", "tokens", "emb", mixed_weights(rng, (d, vocab), 60, 10))
    syn("emb.pos", "positions", "emb", mixed_weights(rng, (d, context), 30))
    q_of, k_of, v_of, out_of = attention_indices(d, heads)
    x = "emb"
    for i in range(layers):
        b = f"block{i}"
        lif(f"{b}.qkv", 3 * d, b, "qkv")
        syn(f"{b}.w_qkv", x, f"{b}.qkv", mixed_weights(rng, (3 * d, d), 40, 6))
        for j in range(1, token_shift + 1):
            syn(f"{b}.w_qkv_lag{j}", x, f"{b}.qkv", mixed_weights(rng, (3 * d, d), 40, 6),
                token_lag=j)
        P[f"{b}.kv"] = Prod(f"{b}.kv", heads * dh * dh, layer=b, role="kv_product")
        syn(f"{b}.kv_k", f"{b}.qkv", f"{b}.kv", replication(k_of, 3 * d), port="a_in1")
        syn(f"{b}.kv_v", f"{b}.qkv", f"{b}.kv", replication(v_of, 3 * d), port="a_in2")
        P[f"{b}.mem"] = Accum(f"{b}.mem", heads * dh * dh, layer=b, role="memory",
                              decay=head_decay(memory_decay, heads, dh),
                              decay_exp=decay_exp)
        syn(f"{b}.mem_in", f"{b}.kv", f"{b}.mem", np.eye(heads * dh * dh, dtype=np.int64))
        P[f"{b}.read"] = Prod(f"{b}.read", heads * dh * dh, layer=b, role="read")
        syn(f"{b}.read_mem", f"{b}.mem", f"{b}.read", np.eye(heads * dh * dh, dtype=np.int64),
            port="a_in1")
        syn(f"{b}.read_q", f"{b}.qkv", f"{b}.read", replication(q_of, 3 * d), port="a_in2")
        lif(f"{b}.attn", d, b, "attention")
        c = rng.integers(1, 64, size=d)
        w_attn = np.zeros((d, heads * dh * dh), dtype=np.int64)
        w_attn[out_of, np.arange(heads * dh * dh)] = c[out_of]
        syn(f"{b}.attn_in", f"{b}.read", f"{b}.attn", w_attn, exp=int(rng.integers(-3, 0)))
        lif(f"{b}.mid", d, b, "mid")
        syn(f"{b}.w_o", f"{b}.attn", f"{b}.mid", mixed_weights(rng, (d, d), 40, 4))
        syn(f"{b}.skip1", x, f"{b}.mid", np.diag(rng.integers(20, 120, size=d)))
        lif(f"{b}.ff", 4 * d, b, "ff")
        syn(f"{b}.w_1", f"{b}.mid", f"{b}.ff", mixed_weights(rng, (4 * d, d), 40, 6))
        for j in range(1, token_shift + 1):
            syn(f"{b}.w_1_lag{j}", f"{b}.mid", f"{b}.ff", mixed_weights(rng, (4 * d, d), 40, 6),
                token_lag=j)
        lif(f"{b}.out", d, b, "out")
        syn(f"{b}.w_2", f"{b}.ff", f"{b}.out", mixed_weights(rng, (d, 4 * d), 30, 2),
            exp=int(rng.integers(-1, 1)))
        syn(f"{b}.skip2", f"{b}.mid", f"{b}.out", np.diag(rng.integers(20, 120, size=d)))
        x = f"{b}.out"
    P["head"] = Graded("head", vocab, vth=0, layer="head", role="readout")
    syn("head.w", x, "head", mixed_weights(rng, (vocab, d), 60))
    assign_depths(P, S, ["tokens", "positions"], T, "head")
    q = QGraph(P, S, T, ["tokens", "positions"], "head", logit_scale=1.0 / (T * 64),
               context=context,
               metadata={"generator": "random_decoder_qgraph", "seed": seed, "vocab": vocab,
                         "d": d, "heads": heads, "layers": layers,
                         "token_shift": token_shift,
                         "memory_decay": None if memory_decay is None else
                         [int(x) for x in memory_decay]})
    tokens = torch.as_tensor(rng.integers(0, vocab, size=(4, min(calib_tokens, context))))
    calibrate_thresholds(q, tokens, rate)
    return q.validate()


def head_decay(per_head, heads: int, dh: int) -> List[int]:
    """Per-neuron decay mantissas of a memory laid out ``(h, a, b)`` from one per head
    (``[]`` for None)."""
    if per_head is None:
        return []
    if len(per_head) != heads:
        raise ValueError(f"{len(per_head)} memory decays for {heads} heads")
    return [int(per_head[h]) for h in range(heads) for _ in range(dh * dh)]


def calibrate_thresholds(q: QGraph, tokens: torch.Tensor, rate: float) -> None:
    """Set each LIF ``vth`` (in depth order) so that its spike rate on ``tokens`` is ~``rate``.

    The rate falls as vth rises, so a bisection over 0..VTH_MAX per population
    finds it; populations run in token time with the thresholds chosen so far.
    """

    for p in q.populations.values():
        if p.kind == "lif":
            p.vth = VTH_MAX           # silent upstream while we go (not used before set)
    frames = input_frames(q, tokens)
    B, N = tokens.shape
    outs = {k: v for k, v in frames.items()}
    for name in q.order():
        pop = q.pop(name)
        if pop.kind == "input":
            continue
        plan = plan_graph(q)
        if pop.kind == "lif":
            lo, hi = 0, VTH_MAX
            while lo < hi:
                mid = (lo + hi) // 2
                trial = copy.copy(pop)
                trial.vth = mid
                o, _ = compute_population(plan, name, outs, (B, N),
                                          lif=LifParams.of(trial, plan.ports[name]["a_in"].bound))
                if float((o != 0).double().mean()) > rate:
                    lo = mid + 1
                else:
                    hi = mid
            pop.vth = lo
            plan = plan_graph(q)
        outs[name], _ = compute_population(plan, name, outs, (B, N))


# ------------------------------------------------------------ arbitrary DAGs
SILENT_KINDS = ("input", "lif", "graded", "prod")


def random_dag_qgraph(seed: int = 0, n_pops: int = 6, T: int = 3, vocab: int = 8,
                      context: int = 8, max_size: int = 6, accum: bool = True,
                      decay: bool = True) -> QGraph:
    """A small random graph of every kind, streamable (silent outside its windows).

    ``decay``: about two accums in three decay, with per-neuron mantissas (some zero)
    and a ``decay_exp`` of 4, 8 or 12 (drawn from a generator of their own, so the
    graph's structure and weights do not depend on it).

    Rules that keep the global-time run equal to the token-time run (see
    ``snn_compile.compiler.qgraph.check_streamable``): every population except
    ``accum`` is silent when its inputs are; ``accum`` (never silent) feeds
    only ``a_in1`` of a ``prod`` whose ``a_in2`` is silent; an accum's input is
    silent. Delays come from paths of different lengths.
    """
    rng = np.random.default_rng(seed)
    P: Dict[str, Population] = {
        "tokens": Input("tokens", vocab, layer="in"),
        "positions": Input("positions", context, layer="in")}
    S: List[Synapse] = []
    silent = ["tokens", "positions"]
    loud: List[str] = []

    def w_for(src, size_dst):
        src_p = P[src]
        if rng.random() < 0.5 and src_p.size == size_dst:
            w = np.eye(size_dst, dtype=np.int64) * int(rng.integers(1, 4))
            return w
        if rng.random() < 0.5:
            w = rng.integers(0, 40, size=(size_dst, src_p.size))
        else:
            w = mixed_weights(rng, (size_dst, src_p.size), 30, 4)
        w[rng.random(w.shape) < 0.3] = 0
        return w.astype(np.int64)

    def connect(src, dst, port="a_in"):
        graded = P[src].graded
        S.append(Synapse(f"s{len(S)}_{src}_{dst}", src, dst, w_for(src, P[dst].size),
                         int(rng.integers(-2, 2)), port, graded))

    kinds = ["lif", "lif", "prod", "graded"] + (["accum"] if accum else [])
    for i in range(n_pops):
        kind = str(rng.choice(kinds))
        name = f"p{i}"
        size = int(rng.integers(1, max_size + 1))
        if kind == "lif":
            P[name] = Lif(name, size, dv=int(rng.integers(0, 4096)),
                          vth=int(rng.integers(0, 40)), layer=f"l{i % 2}")
        elif kind == "prod":
            P[name] = Prod(name, size, exp=int(rng.integers(0, 3)),
                           vth=int(rng.integers(0, 3)), layer=f"l{i % 2}")
        else:
            P[name] = (Graded(name, size, vth=int(rng.integers(0, 3)), layer=f"l{i % 2}")
                       if kind == "graded" else Accum(name, size, layer=f"l{i % 2}"))
        if kind == "prod":
            pool1 = silent + loud
            for src in rng.choice(pool1, size=min(len(pool1), int(rng.integers(1, 3))), replace=False):
                connect(str(src), name, "a_in1")
            for src in rng.choice(silent, size=min(len(silent), int(rng.integers(1, 3))), replace=False):
                connect(str(src), name, "a_in2")
            silent.append(name)
        else:
            k = 1 if kind == "accum" else int(rng.integers(1, 4))
            for src in rng.choice(silent, size=min(len(silent), k), replace=False):
                connect(str(src), name)
            (loud if kind == "accum" else silent).append(name)
    consumed = {s.src for s in S}
    ends = [n for n in silent if n not in consumed and P[n].kind != "input"] or [silent[-1]]
    P["readout"] = Graded("readout", vocab, vth=0, layer="head")
    for src in ends:
        connect(src, "readout")
    if decay:
        drng = np.random.default_rng([seed, 1])
        for p in P.values():
            if p.kind == "accum" and drng.random() < 2 / 3:
                p.decay_exp = int(drng.choice([4, 8, 12]))
                top = min(255, 2 ** p.decay_exp)
                d = drng.integers(0, top + 1, size=p.size)
                d[drng.random(p.size) < 0.25] = 0
                d[drng.random(p.size) < 0.15] = top
                p.decay = [int(x) for x in d]
    assign_depths(P, S, ["tokens", "positions"])
    return QGraph(P, S, T, ["tokens", "positions"], "readout", logit_scale=0.5,
                  context=context, metadata={"generator": "random_dag_qgraph", "seed": seed}
                  ).validate()
