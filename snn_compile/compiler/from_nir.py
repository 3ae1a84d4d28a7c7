"""Compiler front end: a NIR graph → what the quantizer consumes.

Two kinds of graph arrive here:

* graphs exported by snn_compile (metadata ``snn_compile.model = spikedecoder``):
  ``folded_from_nir`` rebuilds the ``FoldedDecoder`` (weights, decays, attention
  layout) from the NIR nodes alone, so ``quantize_decoder`` sees exactly what
  the file says;
* foreign graphs of standard nodes (snnTorch's ``export_to_nir`` and the like):
  ``foreign_to_qgraph`` (compiler/quantize_foreign.py) quantizes them directly.
"""

from __future__ import annotations

import json

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


def _folded(flat) -> FoldedDecoder:
    meta = flat.metadata
    dt = float(meta.get("dt", DEFAULT_DT))
    nodes = flat.nodes
    fr = json.loads(meta["snn_compile.framing"])

    def get(name, kind):
        if name not in nodes:
            raise NIRGraphError(f"decoder graph lacks node {name!r}; it was not written by "
                                "`snn-compile export` or was edited")
        if node_type(nodes[name]) != kind:
            raise NIRGraphError(f"node {name} is a {node_type(nodes[name])}, expected {kind}")
        return nodes[name]

    def w(name):
        return np.asarray(get(name, "Linear").weight, np.float64)

    def s(name):
        return np.asarray(get(name, "Scale").scale, np.float64)

    n_layers = int(meta["n_layers"])
    T = int(fr["steps_per_token"])

    def lagged(p, tag, w_name):
        """Token-shift weights of one target, checked against the Delay nodes' lags."""
        mats, j = [], 1
        while p + f"{w_name}_lag{j}" in nodes:
            steps = np.rint(np.asarray(get(p + f"{tag}_lag{j}", "Delay").delay, np.float64)
                            / dt)
            if not np.all(steps == j * T):
                raise NIRGraphError(f"Delay node {p}{tag}_lag{j} holds {sorted(set(steps))} "
                                    f"steps; a token shift of {j} must be {j * T} steps "
                                    f"({j} tokens of {T}); re-export the model")
            mats.append(w(p + f"{w_name}_lag{j}"))
            j += 1
        return mats

    if meta.get("snn_compile.residual") == "stream":
        blocks, att = [], None
        for i in range(n_layers):
            p = f"block{i}."
            att = get(p + "attention", CausalSpikeAttention.NAME)
            blocks.append(FoldedStreamBlock(
                s_in=s(p + "in_scale"), W_qkv=w(p + "w_qkv"), c=s(p + "attn_scale"),
                s_mid=s(p + "mid_scale"), W_om=w(p + "w_om"), W_o=w(p + "w_o"),
                W_1=w(p + "w_1"), W_2=w(p + "w_2"),
                beta={k: lif_beta(p + k, get(p + k, "LIF"), dt) for k in STREAM_POPS},
                S_qkv=lagged(p, "in", "w_qkv"), S_ff=lagged(p, "mid", "w_1")))
            for stream in ("h0" if i == 0 else f"block{i - 1}.h", p + "h"):
                if not np.all(s(stream) == 1.0):
                    raise NIRGraphError(f"stream node {stream} must be Scale(1); re-export")
        E_tok = w("emb.tok")
        return FoldedStreamDecoder(
            T=T, context=int(fr["context"]), vocab_size=E_tok.shape[1], d_model=E_tok.shape[0],
            n_heads=att.n_heads if att is not None else int(meta["n_heads"]), E_tok=E_tok,
            E_pos=w("emb.pos"), blocks=blocks, s_final=s("final_scale"),
            beta_final=lif_beta("final", get("final", "LIF"), dt), W_head=w("head"),
            memory_decay=tuple(att.decay) if att is not None else (),
            window=att.window if att is not None and att.decay else 0)
    blocks = []
    att = None
    for i in range(n_layers):
        p = f"block{i}."
        att = get(p + "attention", CausalSpikeAttention.NAME)
        blocks.append(FoldedBlock(
            W_qkv=w(p + "w_qkv"), c=s(p + "attn_scale"), W_o=w(p + "w_o"), g1=s(p + "skip1"),
            W_1=w(p + "w_1"), W_2=w(p + "w_2"), g2=s(p + "skip2"),
            beta={k: lif_beta(p + k, get(p + k, "LIF"), dt) for k in BLOCK_POPS},
            S_qkv=lagged(p, "x", "w_qkv"), S_ff=lagged(p, "mid", "w_1")))
    E_tok, E_pos = w("emb.tok"), w("emb.pos")
    d = E_tok.shape[0]
    return FoldedDecoder(T=T, context=int(fr["context"]),
                         vocab_size=E_tok.shape[1], d_model=d,
                         n_heads=att.n_heads if att is not None else int(meta["n_heads"]),
                         E_tok=E_tok, E_pos=E_pos,
                         beta_emb=lif_beta("emb", get("emb", "LIF"), dt), blocks=blocks,
                         W_head=w("head"))


def decoder_tokenizer(graph):
    """The tokenizer a decoder graph carries in its metadata."""
    meta = getattr(graph, "metadata", None) or {}
    tok = meta.get("snn_compile.tokenizer")
    if tok is None:
        raise UserError("this NIR graph carries no tokenizer; export it again from its "
                        "checkpoint with `snn-compile export CKPT -o FILE.nir`")
    return tokenizer_from_dict(json.loads(tok))
