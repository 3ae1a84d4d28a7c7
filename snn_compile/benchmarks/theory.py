"""Operation counts per token and per layer: the ANN twin's MACs and the SNN's SOPs.

The literature's method (Spikformer, Zhou et al., ICLR 2023, and SpikeDecoder,
Beger, Walter & Knoll, arXiv:2606.12287): an ANN layer costs its
multiply-accumulates (MACs); a spiking layer costs one accumulate (AC) per
spike per synapse it reaches, ``SOPs = sum spikes x fan-out``, with the spikes
those of the float torch model on the same text. Counts here follow the
deployable decoder of docs/semantics.md term by term; every row says which
operation it is and whether it is costed as an AC or a MAC:

ANN twin, token at position n (0-based, attends to n+1 keys), per block:
    qkv      3 d^2 MAC          scores  (n+1) d MAC        softmax  3 H (n+1) extra
    av       (n+1) d MAC        proj    d^2 MAC            ff       2 d d_ff MAC
    ln       2 x 4 d extra      gelu    d_ff extra         residual 2 d extra
  embedding: lookup + position add, d AC; head: d V MAC + final LayerNorm 4 d extra.
  "extra" = element-wise non-linear or normalisation op, one per element per
  primitive (softmax: exp, sum, divide). Reported apart; the literature's E_ANN
  counts MACs only.

SNN, token n occupies steps p = nT + t (T per token), spikes s[pop][n, t]:
    emb.in     2 d T AC             one-hot token + one-hot position, each a spike with fan-out d
    qkv        nnz(x) 3d AC         x = block input (emb or previous block's out)
    qk         sum_t nnz(q[p]) (p+1) AC   binary q meets the keys of all p+1 positions
    sv         sum_t sum_{p'<=p} nnz(v[p']) AC   each v spike accumulates its integer score
    (SDSA variant instead: kv nnz(k), accumulate nnz(k*v), mask nnz(q) ACs; attention_core)
    scale      d T MAC              c * A: per-channel scale of the integer attention (not spike-driven)
    proj       nnz(attn) d AC       skip1   nnz(x) AC   (g1 * x, one synapse per spike)
    ff1        nnz(mid) d_ff AC     ff2     nnz(ff) d AC       skip2   nnz(mid) AC
    head       nnz(y_L) V AC        head.scale  V MAC (1/T average)
  token shift (K lags): qkv_shift sum_j nnz(x[n-j]) 3d AC, ff1_shift sum_j nnz(mid[n-j]) d_ff AC
  (tokens before the measured sequence's start are not seen)
  Neuron (membrane) updates are not counted in this view, as in the literature;
  the Loihi view counts them.

Residual-stream SNN (``residual = "stream"``): the stream h is real-valued, so reading
it is a multiply per channel and step:
    emb.input  2 d T AC            one-hot token + position into the stream h0
    read_in    d T MAC             s_in * h into LIF_in     (read_mid, final.read alike)
    qkv        nnz(in) 3d AC       attention core as above (sum memory), or for the
                                   decaying memory its executed linear form:
      kv       sum_t sum_h nnz(k_h) nnz(v_h) AC    (k AND v into the memory)
      decay    H dh^2 T MAC                         (lambda * S, every step of the token)
      read     sum_t nnz(q) dh AC                   (a q spike reads one memory row)
    proj       nnz(attn) d AC into the stream, mid_in nnz(attn) d AC into LIF_mid
    ff1        nnz(mid) d_ff AC    ff2 nnz(ff) d AC into the stream
    stream     d T AC              h carried into the next stream population
    head       nnz(final) V AC     head.scale V MAC
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

from snn_compile.benchmarks import energy


@dataclass(frozen=True)
class ModelShape:
    """The sizes that fix the operation counts of a decoder."""

    vocab: int
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    steps_per_token: int = 1      # T (SNN only)
    context: int = 0
    shift_qkv: int = 0            # token-shift lags into qkv / ff (SNN only)
    shift_ff: int = 0
    attention: str = "ssa"        # "ssa" or "sdsa" (SNN only)
    residual: str = "spike"       # "spike" or "stream" (SNN only)
    memory: str = "sum"           # "sum" or "decay" (stream SNN only)


@dataclass
class OpRow:
    """One operation of one layer: total count over the tokens measured."""

    layer: str          # "emb", "block0", ..., "head"
    op: str             # "qkv", "scores", ...
    kind: str           # "mac" | "ac" | "extra"
    per_token: np.ndarray   # count for each token measured

    @property
    def mean(self) -> float:
        return float(self.per_token.mean()) if self.per_token.size else 0.0

    @property
    def energy_pj(self) -> np.ndarray:
        """Per token, literature's fp32 45 nm view."""
        return self.energy_in()

    def energy_in(self, view: str = "theoretical_45nm", side: str = "snn") -> np.ndarray:
        """Per token (pJ) in ``view`` (``energy.OP_ENERGY_PJ``) for the ``snn`` or ``ann``."""
        return self.per_token * energy.OP_ENERGY_PJ[view][side][self.kind]

    @property
    def form(self) -> str:
        """Which form of attention this row counts: the quadratic Q K^T V of the
        literature (qk, sv: every query meets every earlier key) or the linear, streamed
        recurrence the lowered graph runs (kv, decay, read); '' for other rows."""
        return {"qk": "quadratic", "sv": "quadratic", "kv": "linear", "decay": "linear",
                "read": "linear", "accumulate": "linear", "mask": "linear"}.get(self.op, "")


def _rows(layer: str, n: int, items: Iterable) -> List[OpRow]:
    out = []
    for op, kind, val in items:
        arr = np.broadcast_to(np.asarray(val, dtype=np.float64), (n,)).copy()
        out.append(OpRow(layer, op, kind, arr))
    return out


# ------------------------------------------------------------------- ANN twin
def ann_op_rows(shape: ModelShape, positions: Sequence[int]) -> List[OpRow]:
    """MACs (and element-wise extras) of the ANN twin for tokens at ``positions``."""
    pos = np.asarray(positions, dtype=np.float64)
    n, d, dff, H, V = len(pos), shape.d_model, shape.d_ff, shape.n_heads, shape.vocab
    keys = pos + 1
    rows = _rows("emb", n, [("pos_add", "ac", d)])
    for i in range(shape.n_layers):
        rows += _rows(f"block{i}", n, [
            ("qkv", "mac", 3 * d * d), ("scores", "mac", keys * d), ("av", "mac", keys * d),
            ("proj", "mac", d * d), ("ff1", "mac", d * dff), ("ff2", "mac", dff * d),
            ("softmax", "extra", 3 * H * keys), ("layernorm", "extra", 2 * 4 * d),
            ("gelu", "extra", dff), ("residual", "extra", 2 * d)])
    rows += _rows("head", n, [("head", "mac", d * V), ("layernorm", "extra", 4 * d)])
    return rows


# ------------------------------------------------------------------------ SNN
def population_names(n_layers: int, residual: str = "spike") -> List[str]:
    """Spiking population names of the deployable decoder (spike trains / QGraph)."""
    if residual == "stream":
        return [f"block{i}.{r}" for i in range(n_layers)
                for r in ("in", "qkv", "attn", "mid", "ff")] + ["final"]
    names = ["emb"]
    for i in range(n_layers):
        names += [f"block{i}.{r}" for r in ("qkv", "attn", "mid", "ff", "out")]
    return names


def _nnz(a: np.ndarray) -> np.ndarray:
    """Spikes per token: a (N, T, size) -> (N,)."""
    return (a != 0).reshape(a.shape[0], -1).sum(axis=1).astype(np.float64)


def attention_core(shape: ModelShape, qkv: np.ndarray, p: np.ndarray) -> list:
    """(op, kind, per-token count) of the spiking attention between the qkv spikes and
    the attention LIF's input; ``p``: flattened step index (N, T) from the sequence start.

    ssa:  qk = sum_t nnz(q[p]) (p + 1)   (binary q meets the keys of all p + 1 steps);
          sv = sum_t sum_{p' <= p} nnz(v[p'])   (each v spike accumulates its score).
    sdsa: kv = nnz(k) (each k spike gates its v channel); accumulate = nnz(k * v);
          mask = nnz(q) (each q spike reads the thresholded memory of its channel).
    Steps before the sequence start (a continued memory) are not seen here."""
    d = shape.d_model
    q, k, v = qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:]
    N, T = qkv.shape[0], qkv.shape[1]
    if shape.attention == "sdsa":
        return [("kv", "ac", _nnz(k)), ("accumulate", "ac", _nnz(k * v)),
                ("mask", "ac", _nnz(q))]
    nq = (q != 0).sum(axis=2).astype(np.float64)            # (N, T)
    nv = (v != 0).sum(axis=2).astype(np.float64)
    qk = (nq * (p + 1)).sum(axis=1)
    sv = np.cumsum(nv.reshape(-1)).reshape(N, T).sum(axis=1)
    return [("qk", "ac", qk), ("sv", "ac", sv)]


def _lagged_nnz(a: np.ndarray, lags: int) -> np.ndarray:
    """sum_{j=1..lags} spikes of token n - j, per token n: (N, T, size) -> (N,)."""
    per = _nnz(a)
    return sum(np.concatenate([np.zeros(min(j, len(per))), per[:max(len(per) - j, 0)]])
               for j in range(1, lags + 1))


def check_spikes(spikes: Mapping[str, np.ndarray], shape: ModelShape) -> Dict[str, np.ndarray]:
    """Spike trains as (N, T, size) float arrays, one per population; raise on a mismatch."""
    T, d = shape.steps_per_token, shape.d_model
    width = {"emb": d, "in": d, "qkv": 3 * d, "attn": d, "mid": d, "ff": shape.d_ff,
             "out": d, "final": d}
    sizes = {n: width[n.split(".")[-1]] for n in population_names(shape.n_layers,
                                                                     shape.residual)}
    out = {}
    n_tok = None
    for name, size in sizes.items():
        if name not in spikes:
            raise KeyError(f"spike trains lack population {name!r} (have {sorted(spikes)})")
        a = np.asarray(spikes[name].detach().cpu() if hasattr(spikes[name], "detach")
                       else spikes[name], dtype=np.float64)
        if a.ndim != 3 or a.shape[1:] != (T, size):
            raise ValueError(f"spike train {name}: shape {a.shape}, expected (N, {T}, {size})")
        if n_tok is None:
            n_tok = a.shape[0]
        elif a.shape[0] != n_tok:
            raise ValueError(f"spike train {name}: {a.shape[0]} tokens, others have {n_tok}")
        out[name] = a
    return out


def snn_op_rows(shape: ModelShape, spikes: Mapping[str, np.ndarray],
                start_position: int = 0) -> List[OpRow]:
    """ACs and MACs of the spiking decoder for one sequence, from its spike trains.

    ``spikes[pop]`` has shape (N, T, size) for the N tokens of one sequence that
    starts at token position ``start_position`` (0 after a reset). The qkv
    population is ``[q | k | v]`` along its last axis, each of width d.
    """
    s = check_spikes(spikes, shape)
    if shape.residual == "stream":
        return _stream_op_rows(shape, s, start_position)
    T, d, dff, V = shape.steps_per_token, shape.d_model, shape.d_ff, shape.vocab
    N = s["emb"].shape[0]
    rows = _rows("emb", N, [("input", "ac", 2 * d * T)])
    x = s["emb"]
    # flattened step index p of every (n, t), counted from the sequence start
    p = (start_position + np.arange(N))[:, None] * T + np.arange(T)[None, :]
    for i in range(shape.n_layers):
        b = f"block{i}"
        rows += _rows(b, N, [("qkv", "ac", _nnz(x) * 3 * d)]
                      + attention_core(shape, s[f"{b}.qkv"], p) + [
            ("scale", "mac", d * T), ("proj", "ac", _nnz(s[f"{b}.attn"]) * d),
            ("skip1", "ac", _nnz(x)), ("ff1", "ac", _nnz(s[f"{b}.mid"]) * dff),
            ("ff2", "ac", _nnz(s[f"{b}.ff"]) * d), ("skip2", "ac", _nnz(s[f"{b}.mid"]))])
        if shape.shift_qkv:
            rows += _rows(b, N, [("qkv_shift", "ac", _lagged_nnz(x, shape.shift_qkv) * 3 * d)])
        if shape.shift_ff:
            rows += _rows(b, N, [("ff1_shift", "ac",
                                  _lagged_nnz(s[f"{b}.mid"], shape.shift_ff) * dff)])
        x = s[f"{b}.out"]
    rows += _rows("head", N, [("head", "ac", _nnz(x) * V), ("scale", "mac", V)])
    return rows


def _stream_op_rows(shape: ModelShape, s: Dict[str, np.ndarray],
                    start_position: int) -> List[OpRow]:
    """Op counts of the residual-stream decoder (module docstring)."""
    T, d, dff, V, H = (shape.steps_per_token, shape.d_model, shape.d_ff, shape.vocab,
                       shape.n_heads)
    dh = d // H
    N = s["final"].shape[0]
    rows = _rows("emb", N, [("input", "ac", 2 * d * T)])
    p = (start_position + np.arange(N))[:, None] * T + np.arange(T)[None, :]
    for i in range(shape.n_layers):
        b = f"block{i}"
        x, qkv = s[f"{b}.in"], s[f"{b}.qkv"]
        if shape.memory == "decay":
            q, k, v = qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:]
            kh = (k.reshape(N, T, H, dh) != 0).sum(-1)
            vh = (v.reshape(N, T, H, dh) != 0).sum(-1)
            core = [("kv", "ac", (kh * vh).sum(axis=(1, 2)).astype(np.float64)),
                    ("decay", "mac", np.full(N, float(H * dh * dh * T))),
                    ("read", "ac", _nnz(q) * dh)]
        else:
            core = attention_core(shape, qkv, p)
        rows += _rows(b, N, [("read_in", "mac", d * T), ("qkv", "ac", _nnz(x) * 3 * d)]
                      + core + [
            ("scale", "mac", d * T), ("proj", "ac", _nnz(s[f"{b}.attn"]) * d),
            ("mid_in", "ac", _nnz(s[f"{b}.attn"]) * d), ("read_mid", "mac", d * T),
            ("ff1", "ac", _nnz(s[f"{b}.mid"]) * dff), ("ff2", "ac", _nnz(s[f"{b}.ff"]) * d),
            ("stream", "ac", d * T)])
        if shape.shift_qkv:
            rows += _rows(b, N, [("qkv_shift", "ac", _lagged_nnz(x, shape.shift_qkv) * 3 * d)])
        if shape.shift_ff:
            rows += _rows(b, N, [("ff1_shift", "ac",
                                  _lagged_nnz(s[f"{b}.mid"], shape.shift_ff) * dff)])
    rows += _rows("head", N, [("final.read", "mac", d * T),
                              ("head", "ac", _nnz(s["final"]) * V), ("scale", "mac", V)])
    return rows


def spike_rates(spikes: Mapping[str, np.ndarray]) -> Dict[str, float]:
    """Mean firing probability per neuron and step, per population."""
    return {k: float((np.asarray(v) != 0).mean()) for k, v in spikes.items()}


# ------------------------------------------------------------------ summaries
def concat_rows(parts: Sequence[List[OpRow]]) -> List[OpRow]:
    """Join the rows of several sequences (same layers/ops in the same order)."""
    if not parts:
        return []
    out = []
    for cols in zip(*parts):
        r0 = cols[0]
        assert all((c.layer, c.op, c.kind) == (r0.layer, r0.op, r0.kind) for c in cols)
        out.append(OpRow(r0.layer, r0.op, r0.kind, np.concatenate([c.per_token for c in cols])))
    return out


def per_token_energy(rows: Sequence[OpRow], include_extras: bool = False,
                     view: str = "theoretical_45nm", side: str = "snn") -> np.ndarray:
    """E per token (pJ): ACs x E_AC + MACs x E_MAC (+ extras x E_MAC), with the energies
    of ``view`` for the ``snn`` or the ``ann`` (``energy.OP_ENERGY_PJ``)."""
    tot = None
    for r in rows:
        if r.kind == "extra" and not include_extras:
            continue
        e = r.energy_in(view, side)
        tot = e if tot is None else tot + e
    return tot if tot is not None else np.zeros(0)


def counts_summary(rows: Sequence[OpRow]) -> Dict[str, float]:
    """Mean per token of ACs, MACs and extras."""
    out = {"acs": 0.0, "macs": 0.0, "extras": 0.0}
    key = {"ac": "acs", "mac": "macs", "extra": "extras"}
    for r in rows:
        out[key[r.kind]] += r.mean
    return out


def table(rows: Sequence[OpRow], side: str = "snn") -> List[dict]:
    """Per layer and operation: mean count, attention form and energy per token in both
    45 nm views (fp32 and equal precision)."""
    mean = lambda a: float(a.mean()) if a.size else 0.0  # noqa: E731
    return [{"layer": r.layer, "op": r.op, "kind": r.kind, "form": r.form,
             "count_per_token": r.mean,
             "energy_pj_per_token": mean(r.energy_pj),
             "energy_pj_per_token_equal_precision": mean(r.energy_in("equal_precision_45nm",
                                                                     side))}
            for r in rows]


def attention_form(rows: Sequence[OpRow]) -> str:
    """The attention form the rows count: "quadratic", "linear", or "" (no attention)."""
    forms = {r.form for r in rows if r.form}
    return "+".join(sorted(forms))


def by_layer(rows: Sequence[OpRow], include_extras: bool = False,
             view: str = "theoretical_45nm", side: str = "snn") -> Dict[str, float]:
    """Mean energy per token (pJ) per layer in ``view``."""
    out: Dict[str, float] = {}
    for r in rows:
        if r.kind == "extra" and not include_extras:
            continue
        out[r.layer] = out.get(r.layer, 0.0) + float(r.energy_in(view, side).mean())
    return out


def shape_dict(shape: ModelShape) -> dict:
    return asdict(shape)


# ------------------------------------------------- partially spiking decoders
BLOCK_KINDS = ("embedding", "attention", "feedforward", "norm", "residual")


def variant_op_rows(shape: ModelShape, ann_blocks: Sequence[str],
                    spikes: Mapping[str, np.ndarray], start_position: int = 0,
                    embedding: str = "rate", population: int = 4,
                    n_tokens: Optional[int] = None) -> List[OpRow]:
    """ACs, MACs and extras of a decoder whose block kinds in ``ann_blocks`` are ANN
    (models/partial.py), for one sequence from ``start_position``.

    ``spikes`` holds the (N, T, size) trains of the spiking populations (keys as the
    SpikeDecoder's; ANN parts have none). The same rules cost every part:

    * a weight applied to spikes: one AC per spike per synapse (nnz x fan-out);
    * a weight applied to a real value (token time, once per token): rows x cols MACs;
      a gain vector on a real value: one MAC per element;
    * a real current held over the T steps of a token into a LIF: C x T ACs;
    * spikes read by an ANN part as a rate: one AC per spike (1/T folds into the weights);
    * spiking norm: a per-channel scale folded into the weights (free), except on the
      integer attention counts (d T MACs, as ``snn_op_rows``); LayerNorm: 4 C extras per
      application, softmax 3 H keys, GELU d_ff, real residual add d (as ``ann_op_rows``);
    * embedding: rate / temporal 2 d T ACs (one-hot token and position as spikes);
      population 2 (d/P) ACs, d extras (tuning curves), d T ACs held current; ANN d ACs.

    With no ANN block the totals equal ``snn_op_rows``; with all five, ``ann_op_rows``
    (tests/test_partial.py).
    """
    ann = set(ann_blocks)
    unknown = ann - set(BLOCK_KINDS)
    if unknown:
        raise ValueError(f"unknown block kinds {sorted(unknown)}")
    T, d, dff, V, H = (shape.steps_per_token, shape.d_model, shape.d_ff, shape.vocab,
                       shape.n_heads)
    s = {k: np.asarray(v.detach().cpu() if hasattr(v, "detach") else v, dtype=np.float64)
         for k, v in spikes.items() if not k.endswith(".A")}
    N = n_tokens if n_tokens is not None else (next(iter(s.values())).shape[0] if s else None)
    if N is None:
        raise ValueError("n_tokens is needed when no population spikes")
    pos = start_position + np.arange(N, dtype=np.float64)
    p = pos[:, None] * T + np.arange(T)[None, :]
    ann_norm = "norm" in ann
    ln = "extra"

    def norm_rows(tag: str, c: int, step_time: bool):
        """LayerNorm of a current (per step, or per token when real) or a folded scale."""
        return [(f"{tag}.layernorm", ln, 4 * c * (T if step_time else 1))] if ann_norm else []

    def sum_rows(tag: str, terms, c: int):
        """Rows of a membrane current sum_i W_i x_i into a LIF of width c.

        terms: (name, fan_out or None (identity) or "gain", x) with x an (N, T, C) spike
        array or the string "real". Returns (rows, step_time)."""
        rows, real, step_time = [], False, False
        for name, fan, x in terms:
            if isinstance(x, str):                       # real, token time
                real = True
                if fan == "gain":
                    rows.append((name, "mac", c))
                elif fan is not None:
                    rows.append((name, "mac", fan))      # fan = rows x cols here
            else:
                step_time = True
                rows.append((name, "ac", _nnz(x) * (1 if fan == "gain" else fan)))
        if real:
            rows.append((f"{tag}.hold", "ac", c * T))
        return rows, step_time

    rows: List[OpRow] = []
    # ---- embedding
    if "embedding" in ann:
        rows += _rows("emb", N, [("pos_add", "ac", d)])
        x = "real"
    else:
        if embedding == "population":
            w = d // population
            rows += _rows("emb", N, [("input", "ac", 2 * w), ("tuning", "extra", d),
                                     ("hold", "ac", d * T)]
                          + ([("layernorm", ln, 4 * w)] if ann_norm else []))
        elif ann_norm:       # LayerNorm of the real embedding, then held over the T steps
            rows += _rows("emb", N, [("lookup", "ac", 2 * d), ("layernorm", ln, 4 * d),
                                     ("hold", "ac", d * T)])
        else:
            rows += _rows("emb", N, [("input", "ac", 2 * d * T)])
        x = s["emb"]
    for i in range(shape.n_layers):
        b = f"block{i}"
        r: list = []
        # ---- attention
        if "attention" in ann:
            if not isinstance(x, str):
                r.append(("attn.rate", "ac", _nnz(x)))
            if ann_norm:
                r.append(("ln1", ln, 4 * d))
            keys = pos + 1
            r += [("qkv", "mac", 3 * d * d), ("scores", "mac", keys * d),
                  ("av", "mac", keys * d), ("softmax", "extra", 3 * H * keys)]
            out_terms = [("proj", d * d, "real")]          # proj computed in token time
            out_real_macs = d * d
        else:
            rr, st = sum_rows("qkv", [("qkv", 3 * d * d if isinstance(x, str) else 3 * d, x)],
                              3 * d)
            r += rr + norm_rows("qkv", 3 * d, st)
            r += attention_core(shape, s[f"{b}.qkv"], p)
            r += [("attn.layernorm", ln, 4 * d * T)] if ann_norm else [("scale", "mac", d * T)]
            out_terms = [("proj", d, s[f"{b}.attn"])]
            out_real_macs = 0
        # ---- residual 1
        m, rr = _residual(ann, "1", out_terms, out_real_macs, x, s, f"{b}.mid", d, T,
                          sum_rows, norm_rows)
        r += rr
        # ---- feed-forward
        if "feedforward" in ann:
            if not isinstance(m, str):
                r.append(("ff.rate", "ac", _nnz(m)))
            if ann_norm:
                r.append(("ln2", ln, 4 * d))
            r += [("ff1", "mac", d * dff), ("gelu", "extra", dff)]
            out_terms, out_real_macs = [("ff2", dff * d, "real")], dff * d
        else:
            rr, st = sum_rows("ff1", [("ff1", dff * d if isinstance(m, str) else dff, m)], dff)
            r += rr + norm_rows("ff1", dff, st)
            out_terms, out_real_macs = [("ff2", d, s[f"{b}.ff"])], 0
        # ---- residual 2
        y, rr = _residual(ann, "2", out_terms, out_real_macs, m, s, f"{b}.out", d, T,
                          sum_rows, norm_rows)
        r += rr
        if (shape.shift_qkv or shape.shift_ff) and ann:
            raise ValueError("a token shift exists only in the fully spiking decoder")
        if shape.shift_qkv:         # token shift, as snn_op_rows
            r.append(("qkv_shift", "ac", _lagged_nnz(x, shape.shift_qkv) * 3 * d))
        if shape.shift_ff:
            r.append(("ff1_shift", "ac", _lagged_nnz(m, shape.shift_ff) * dff))
        rows += _rows(b, N, r)
        x = y
    # ---- readout
    if isinstance(x, str):
        rows += _rows("head", N, [("head", "mac", d * V)]
                      + ([("layernorm", ln, 4 * d)] if ann_norm else []))
    else:
        rows += _rows("head", N, [("head", "ac", _nnz(x) * V), ("scale", "mac", V)])
    return rows


def _residual(ann, k, out_terms, out_real_macs, x, s, key, d, T, sum_rows, norm_rows):
    """Rows of residual ``k`` and its output (spike array, or "real")."""
    if "residual" in ann:
        r = []
        for name, fan, inp in out_terms:
            r.append((name, "mac", out_real_macs) if isinstance(inp, str)
                     else (name, "ac", _nnz(inp) * fan))
        if not isinstance(x, str):
            r.append((f"skip{k}.rate", "ac", _nnz(x)))
        r.append((f"residual{k}", "extra", d))
        return "real", r
    terms = [(name, out_real_macs if isinstance(inp, str) else fan, inp)
             for name, fan, inp in out_terms]
    terms.append((f"skip{k}", "gain", x))
    rr, st = sum_rows(f"res{k}", terms, d)
    return s[key], rr + norm_rows(f"res{k}", d, st)


def model_shape(folded_or_model, qgraph=None) -> ModelShape:
    """The sizes of a decoder, read from its config."""
    cfg = getattr(folded_or_model, "config", None) or getattr(folded_or_model, "cfg")
    g = lambda *names, default=None: next(  # noqa: E731
        (getattr(cfg, n) for n in names if getattr(cfg, n, None) is not None), default)
    d = int(g("d_model", "n_embd"))
    shift, into = int(g("token_shift", default=0)), g("shift_into", default="both")
    return ModelShape(
        vocab=int(g("vocab_size", "vocab")), d_model=d, n_layers=int(g("n_layers", "n_layer")),
        n_heads=int(g("n_heads", "n_head")), d_ff=int(g("d_ff", default=4 * d)),
        steps_per_token=int(g("steps", "timesteps", "T", default=1)),
        context=int(g("context", "block_size", default=0)),
        shift_qkv=shift if into in ("qkv", "both") else 0,
        shift_ff=shift if into in ("ff", "both") else 0,
        attention=g("attention", default="ssa"), residual=g("residual", default="spike"),
        memory=g("attention_memory", default="sum"))
