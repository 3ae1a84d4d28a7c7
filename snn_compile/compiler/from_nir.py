"""Compiler front end: a NIR graph → what the quantizer consumes.

Two kinds of graph arrive here:

* graphs exported by snn_compile (metadata ``snn_compile.model = spikedecoder``):
  ``folded_from_nir`` rebuilds the ``FoldedDecoder`` (weights, decays, attention
  layout) from the NIR graph alone, so ``quantize_decoder`` sees exactly what the
  file says. The decoder is a pattern recognised in the graph (``_Pattern``): from the
  framing's inputs along the edges, each piece is the node of the expected type on the
  expected edge (the LIF a Linear feeds, the Scale after the attention extension node,
  the Delay ─ Linear chains of the token shift, ordered by their lags); node names play
  no part, and a node outside the pattern is refused by name;
* foreign graphs of standard nodes (snnTorch's ``export_to_nir`` and the like):
  ``foreign_to_qgraph`` (compiler/quantize_foreign.py) quantizes them directly.
"""

from __future__ import annotations

import json
from typing import Dict, List

import numpy as np

from snn_compile.data import tokenizer_from_dict
from snn_compile.errors import UserError
from snn_compile.export.extensions import CausalSpikeAttention
from snn_compile.export.interpreter import DEFAULT_DT, _coef
from snn_compile.export.nir_io import NIRGraphError, flatten, node_type, validate
from snn_compile.models.fold import (BLOCK_POPS, STREAM_POPS, FoldedBlock, FoldedDecoder,
                                     FoldedStreamBlock, FoldedStreamDecoder)


def is_decoder_graph(graph) -> bool:
    meta = getattr(graph, "metadata", None) or {}
    return meta.get("snn_compile.model") == "spikedecoder"


def require_decoder(graph, path: str, command: str = "") -> None:
    """A foreign graph given where a token decoder is needed: one error with the fix."""
    if not is_decoder_graph(graph):
        needs = f"`snn-compile {command}` needs one" if command else "this needs one"
        raise UserError(f"{path} is a foreign NIR graph, not a token decoder exported by "
                        f"snn_compile (no token framing in its metadata), and {needs}; run "
                        f"a foreign graph on spike trains with `snn-compile run {path} --input "
                        "X.npy` (eval/bench take --input X.npy too; compile with --steps S or "
                        "--calibrate X.npy)")


def lif_beta(name: str, node, dt: float) -> float:
    """The discrete decay of a NIR LIF that is a reset-to-zero, threshold-1 neuron."""
    if node_type(node) != "LIF":
        raise NIRGraphError(f"node {name} is a {node_type(node)}, expected a LIF")
    tau = np.asarray(node.tau, np.float64)
    beta = _coef(1.0 - dt / tau)
    gain = _coef(np.asarray(node.r, np.float64) * dt / tau)
    checks = {"a uniform time constant": np.all(beta == beta.flat[0]),
              "r dt / tau = 1": np.all(gain == 1.0),
              "v_threshold = 1": np.all(np.asarray(node.v_threshold) == 1.0),
              "v_reset = 0": np.all(np.asarray(node.v_reset) == 0.0),
              "v_leak = 0": np.all(np.asarray(node.v_leak) == 0.0)}
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        raise NIRGraphError(f"LIF node {name} does not have {', '.join(bad)}, as a "
                            "SpikeDecoder population must; re-export the model")
    return float(beta.flat[0])


def folded_from_nir(graph) -> FoldedDecoder:
    """Rebuild the ``FoldedDecoder`` of a graph written by ``folded_to_nir``."""
    if not is_decoder_graph(graph):
        raise NIRGraphError("this NIR graph is not a token decoder exported by snn_compile "
                            "(no token framing in its metadata); compile a foreign graph with "
                            "`snn-compile compile FILE.nir --steps S`")
    flat = validate(flatten(graph))
    try:
        return _folded(flat)
    except (KeyError, ValueError, TypeError, IndexError) as e:
        raise NIRGraphError(f"the decoder graph's metadata or nodes are incomplete or edited "
                            f"({type(e).__name__}: {str(e)[:120]}); export it again with "
                            "`snn-compile export CKPT -o FILE.nir`") from None


class _Pattern:
    """The decoder's structure read from a flat graph's edges (``folded_to_nir`` and
    ``stream_to_nir`` draw it): each piece is found as the node of a given type on a given
    edge, never by its name, and every node must be part of the pattern."""

    def __init__(self, flat, dt: float, T: int):
        self.nodes, self.dt, self.T = flat.nodes, dt, T
        self.succ: Dict[str, List[str]] = {n: [] for n in flat.nodes}
        self.pred: Dict[str, List[str]] = {n: [] for n in flat.nodes}
        for a, b in flat.edges:
            self.succ[a].append(b)
            self.pred[b].append(a)
        self.seen: set = set()

    def kind(self, n: str) -> str:
        return node_type(self.nodes[n])

    def one(self, cands, kind: str, what: str, where: str) -> str:
        """The one node of type ``kind`` among ``cands``, where the pattern wants ``what``."""
        hit = [c for c in dict.fromkeys(cands) if self.kind(c) == kind]
        if len(hit) != 1:
            raise NIRGraphError(f"expected one {kind} node ({what}) after {where}, found "
                                f"{len(hit)} ({', '.join(hit) or 'none'}); the graph is not a "
                                "decoder as `snn-compile export` writes it")
        self.seen.add(hit[0])
        return hit[0]

    def after(self, n: str, kind: str, what: str, pick=None) -> str:
        """The successor of ``n`` of type ``kind`` (``pick`` narrows several down)."""
        cands = [m for m in self.succ[n] if pick is None or pick(m)]
        return self.one(cands, kind, what, n)

    def linear_to(self, n: str, kind: str, what: str, into=None):
        """(Linear after ``n``, the node of type ``kind`` it feeds); ``into``: that node."""
        def ok(m):
            return self.kind(m) == "Linear" and any(
                self.kind(t) == kind and (into is None or t == into) for t in self.succ[m])
        lin = self.after(n, "Linear", what, ok)
        return lin, self.after(lin, kind, what)

    def w(self, n: str) -> np.ndarray:
        return np.asarray(self.nodes[n].weight, np.float64)

    def scale(self, n: str) -> np.ndarray:
        return np.asarray(self.nodes[n].scale, np.float64)

    def beta(self, n: str) -> float:
        return lif_beta(n, self.nodes[n], self.dt)

    def lagged(self, src: str, dst: str) -> List[np.ndarray]:
        """Token-shift matrices ``src ─ Delay ─ Linear ─► dst``, in the order of their lags,
        checked to be whole tokens: the j-th shortest delay must be j T steps."""
        found = []
        for d in self.succ[src]:
            if self.kind(d) != "Delay":
                continue
            lins = [m for m in self.succ[d] if self.kind(m) == "Linear"]
            if len(lins) != 1 or self.succ[lins[0]] != [dst]:
                continue
            lin = lins[0]
            self.seen.update((d, lin))
            steps = np.rint(np.asarray(self.nodes[d].delay, np.float64) / self.dt)
            found.append((float(steps.max(initial=0)), d, steps, lin))
        mats = []
        for j, (_, d, steps, lin) in enumerate(sorted(found, key=lambda f: f[0]), start=1):
            if not np.all(steps == j * self.T):
                raise NIRGraphError(f"Delay node {d} holds {sorted(set(steps.tolist()))} steps; "
                                    f"a token shift of {j} must be {j * self.T} steps ({j} "
                                    f"tokens of {self.T}); re-export the model")
            mats.append(self.w(lin))
        return mats

    def attention(self, qkv: str):
        """(attention node, its output Scale, the LIF after it) after ``qkv``."""
        att = self.after(qkv, CausalSpikeAttention.NAME, "the attention")
        sc = self.after(att, "Scale", "the attention scale")
        return att, sc, self.after(sc, "LIF", "the attention LIF")

    def feeds_attention(self, lif: str) -> bool:
        return any(self.kind(t) == CausalSpikeAttention.NAME for t in self.succ[lif])

    def check_all_seen(self) -> None:
        left = sorted(set(self.nodes) - self.seen)
        if left:
            raise NIRGraphError(f"nodes {', '.join(left[:8])} are not part of the decoder "
                                "pattern (an edited graph?); export it again with "
                                "`snn-compile export CKPT -o FILE.nir`")


def _folded(flat) -> FoldedDecoder:
    meta = flat.metadata
    dt = float(meta.get("dt", DEFAULT_DT))
    fr = json.loads(meta["snn_compile.framing"])
    T, n_layers = int(fr["steps_per_token"]), int(meta["n_layers"])
    g = _Pattern(flat, dt, T)
    tok_in, pos_in = (g.one([n], "Input", f"input {n!r} of the framing", "the metadata")
                      for n in fr["inputs"][:2])
    e_tok = g.after(tok_in, "Linear", "the token embedding")
    e_pos = g.after(pos_in, "Linear", "the position embedding")
    stream = meta.get("snn_compile.residual") == "stream"
    x = emb = g.after(e_tok, "Scale" if stream else "LIF", "the embedding's sum")
    if g.succ[e_pos] != [x]:
        raise NIRGraphError(f"the position embedding {e_pos} must feed {x} alone, as the token "
                            "embedding does; re-export the model")
    blocks, att = [], None
    for _ in range(n_layers):
        if stream:
            if not np.all(g.scale(x) == 1.0):
                raise NIRGraphError(f"stream node {x} must be Scale(1); re-export")
            att, block, x = _stream_block(g, x)
        else:
            att, block, x = _spike_block(g, x)
        blocks.append(block)
    E_tok, E_pos = g.w(e_tok), g.w(e_pos)
    V, d = E_tok.shape[1], E_tok.shape[0]
    heads = att.n_heads if att is not None else int(meta["n_heads"])
    if stream:
        if not np.all(g.scale(x) == 1.0):
            raise NIRGraphError(f"stream node {x} must be Scale(1); re-export")
        fs = g.after(x, "Scale", "the final scale")
        final = g.after(fs, "LIF", "the final LIF")
        head = g.after(final, "Linear", "the readout")
    else:
        head = g.after(x, "Linear", "the readout")
    g.after(head, "Output", "the logits")
    g.check_all_seen()
    if stream:
        return FoldedStreamDecoder(
            T=T, context=int(fr["context"]), vocab_size=V, d_model=d, n_heads=heads,
            E_tok=E_tok, E_pos=E_pos, blocks=blocks, s_final=g.scale(fs),
            beta_final=g.beta(final), W_head=g.w(head),
            memory_decay=tuple(att.decay) if att is not None else (),
            window=att.window if att is not None and att.decay else 0)
    return FoldedDecoder(T=T, context=int(fr["context"]), vocab_size=V, d_model=d,
                         n_heads=heads, E_tok=E_tok, E_pos=E_pos, beta_emb=g.beta(emb),
                         blocks=blocks, W_head=g.w(head))


def _spike_block(g: _Pattern, x: str):
    """One block of the spiking residual (``folded_to_nir``):
    x ─ w_qkv ─► qkv ─► attention ─ Scale ─► attn ─ w_o ─► mid ◄─ Scale (skip1) ─ x;
    mid ─ w_1 ─► ff ─ w_2 ─► out ◄─ Scale (skip2) ─ mid; token shift into qkv and ff."""
    w_qkv, qkv = g.linear_to(x, "LIF", "the q/k/v weights")
    if not g.feeds_attention(qkv):
        raise NIRGraphError(f"{qkv} after {x} feeds no attention node; not a decoder block")
    att, c, attn = g.attention(qkv)
    skip1 = g.after(x, "Scale", "the first skip")
    mid = g.after(skip1, "LIF", "the middle LIF")
    w_o, _ = g.linear_to(attn, "LIF", "the attention output weights", into=mid)
    skip2 = g.after(mid, "Scale", "the second skip")
    out = g.after(skip2, "LIF", "the block's output LIF")
    w_1, ff = g.linear_to(mid, "LIF", "the feed-forward input weights")
    w_2, _ = g.linear_to(ff, "LIF", "the feed-forward output weights", into=out)
    pops = dict(zip(BLOCK_POPS, (qkv, attn, mid, ff, out)))
    block = FoldedBlock(W_qkv=g.w(w_qkv), c=g.scale(c), W_o=g.w(w_o), g1=g.scale(skip1),
                        W_1=g.w(w_1), W_2=g.w(w_2), g2=g.scale(skip2),
                        beta={k: g.beta(n) for k, n in pops.items()},
                        S_qkv=g.lagged(x, qkv), S_ff=g.lagged(mid, ff))
    return g.nodes[att], block, out


def _stream_block(g: _Pattern, h: str):
    """One block of the residual stream (``stream_to_nir``):
    h ─ Scale ─► in ─ w_qkv ─► qkv ─► attention ─ Scale ─► attn;
    h ─ Scale ─► mid ◄─ w_om ─ attn; mid ─ w_1 ─► ff;
    h, attn ─ w_o, ff ─ w_2 ─► h' (Scale 1, the next stream node); token shift into qkv, ff."""
    def in_scale(m):
        return g.kind(m) == "Scale" and any(
            g.kind(t) == "LIF" and any(g.kind(w) == "Linear" and any(
                g.kind(q) == "LIF" and g.feeds_attention(q) for q in g.succ[w])
                for w in g.succ[t]) for t in g.succ[m])
    s_in = g.after(h, "Scale", "the attention branch's input scale", in_scale)
    lif_in = g.after(s_in, "LIF", "the attention branch's input LIF")
    w_qkv, qkv = g.linear_to(lif_in, "LIF", "the q/k/v weights")
    att, c, attn = g.attention(qkv)
    w_om, mid = g.linear_to(attn, "LIF", "the attention-to-middle weights")
    s_mid = g.one([m for m in g.succ[h] if mid in g.succ[m]], "Scale", "the middle scale", h)
    w_o, h_next = g.linear_to(attn, "Scale", "the attention output weights")
    w_1, ff = g.linear_to(mid, "LIF", "the feed-forward input weights")
    w_2, _ = g.linear_to(ff, "Scale", "the feed-forward output weights", into=h_next)
    if h not in g.pred[h_next]:
        raise NIRGraphError(f"stream node {h_next} is not fed by {h}; not a residual stream")
    pops = dict(zip(STREAM_POPS, (lif_in, qkv, attn, mid, ff)))
    block = FoldedStreamBlock(
        s_in=g.scale(s_in), W_qkv=g.w(w_qkv), c=g.scale(c), s_mid=g.scale(s_mid),
        W_om=g.w(w_om), W_o=g.w(w_o), W_1=g.w(w_1), W_2=g.w(w_2),
        beta={k: g.beta(n) for k, n in pops.items()},
        S_qkv=g.lagged(lif_in, qkv), S_ff=g.lagged(mid, ff))
    return g.nodes[att], block, h_next


def decoder_tokenizer(graph):
    """The tokenizer a decoder graph carries in its metadata."""
    meta = getattr(graph, "metadata", None) or {}
    tok = meta.get("snn_compile.tokenizer")
    if tok is None:
        raise UserError("this NIR graph carries no tokenizer; export it again from its "
                        "checkpoint with `snn-compile export CKPT -o FILE.nir`")
    return tokenizer_from_dict(json.loads(tok))
