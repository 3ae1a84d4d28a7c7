"""A deployable SpikeDecoder → a NIR graph (standard nodes + one extension).

Node map (``docs/nir-extensions.md``), with ``dt`` = ``DT`` seconds per step:

    tokens (Input V) ─ emb.tok (Linear E_tok) ┐
    positions (Input C) ─ emb.pos (Linear E_pos) ┴► emb (LIF)
    per block i, x the previous population:
      x ─ w_qkv (Linear) ─► qkv (LIF 3d) ─► attention (CausalSpikeAttention)
        ─► attn_scale (Scale c) ─► attn (LIF)
      attn ─ w_o (Linear) ┐, x ─ skip1 (Scale g1) ┘ ─► mid (LIF)       spike residual
      mid ─ w_1 (Linear) ─► ff (LIF 4d)
      ff ─ w_2 (Linear) ┐, mid ─ skip2 (Scale g2) ┘ ─► out (LIF)        spike residual
    out ─ head (Linear W_head) ─► logits (Output V)
    token shift (j = 1..K, where the model has one):
      x ─ x_lag{j} (Delay j T dt) ─ w_qkv_lag{j} (Linear) ─► qkv
      mid ─ mid_lag{j} (Delay j T dt) ─ w_1_lag{j} (Linear) ─► ff

A ``Delay`` of ``j T`` steps hands a population the spikes of the token ``j`` back at
the same step ``t`` (the framing runs exactly ``T`` steps per token; delays are not
reset at token starts, neurons are).

Several edges into one node add (NIR semantics). A discrete reset-to-zero LIF
``v = beta v + I, s = v > 1, v <- 0`` is NIR's LIF under forward Euler with
``tau = dt / (1 - beta)``, ``r = tau / dt`` (so ``r dt / tau = 1``),
``v_leak = 0``, ``v_threshold = 1``, ``v_reset = 0`` — the convention snnTorch's
``export_to_nir`` uses for ``Leaky``. Membrane norms are already folded into the
weights (``FoldedDecoder``).
"""

from __future__ import annotations

import json
from typing import Optional

import numpy as np

from snn_compile.errors import UserError
from snn_compile.export.extensions import (FORMAT_KEY, FORMAT_VERSION, FRAMING_KEY,
                                           CausalSpikeAttention)
from snn_compile.models.fold import fold

DT = 1e-4   # seconds per step; snnTorch's export_to_nir uses the same value


def nir_node_of(key: str) -> str:
    """NIR node name of a ``FoldedDecoder.forward`` record key (``block0.A`` → attention)."""
    return key[:-2] + ".attention" if key.endswith(".A") else key


def lif_node(beta: float, size: int, dt: float = DT):
    """NIR LIF equal to ``v = beta v + I; s = v > 1; v <- 0`` under forward Euler."""
    import nir
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta {beta} outside [0, 1): not a leaky neuron")
    tau = np.full(size, dt / (1.0 - beta))
    return nir.LIF(tau=tau, r=tau / dt, v_leak=np.zeros(size), v_threshold=np.ones(size),
                   v_reset=np.zeros(size))


def _token_shift_nodes(nodes, edges, p: str, T: int, dt: float, d: int, targets) -> None:
    """Token shift of one block: ``src ─ {tag}_lag{j} (Delay j T dt) ─ {w}_lag{j} (Linear)
    ─► dst`` for every lag j of every (src, dst, w, tag, matrices) target."""
    import nir
    for src, dst, w_name, tag, mats in targets:
        for j, w in enumerate(mats, start=1):
            lag, lin = f"{p}{tag}_lag{j}", f"{p}{w_name}_lag{j}"
            nodes[lag] = nir.Delay(delay=np.full(d, j * T * dt))
            nodes[lin] = nir.Linear(weight=np.asarray(w, np.float64))
            edges += [(src, lag), (lag, lin), (lin, dst)]


def _metadata(folded, dt: float, tokenizer, config) -> dict:
    """Graph metadata of a decoder (docs/nir-extensions.md): format, token framing, sizes,
    the tokenizer and training config when given; the stream kind and window if any."""
    framing = {"steps_per_token": folded.T, "context": folded.context,
               "inputs": ["tokens", "positions"],
               "input_coding": "one-hot, held for the steps of a token",
               "reset": "every neuron state to 0 at each token start",
               "readout": "logits", "readout_reduction": "mean over the steps of a token"}
    meta = {FORMAT_KEY: FORMAT_VERSION, "snn_compile.model": "spikedecoder"}
    if getattr(folded, "residual", "spike") == "stream":
        meta["snn_compile.residual"] = "stream"
        if folded.memory_decay:
            framing["window"] = folded.window
    meta.update({"dt": float(dt), FRAMING_KEY: json.dumps(framing),
                 "n_layers": len(folded.blocks), "d_model": folded.d_model,
                 "n_heads": folded.n_heads, "token_shift": folded.token_shift})
    if tokenizer is not None:
        meta["snn_compile.tokenizer"] = json.dumps(tokenizer.to_dict())
    if config is not None:
        meta["snn_compile.config"] = json.dumps(config)
    return meta


def folded_to_nir(folded, tokenizer=None, config: Optional[dict] = None, dt: float = DT):
    """``FoldedDecoder`` → ``nir.NIRGraph``; ``tokenizer``/``config`` travel as metadata.
    A ``FoldedStreamDecoder`` goes to ``stream_to_nir``."""
    import nir

    if getattr(folded, "residual", "spike") == "stream":
        return stream_to_nir(folded, tokenizer, config, dt)

    d, V, C = folded.d_model, folded.vocab_size, folded.context
    nodes = {"tokens": nir.Input(input_type=np.array([V])),
             "positions": nir.Input(input_type=np.array([C])),
             "emb.tok": nir.Linear(weight=np.asarray(folded.E_tok, np.float64)),
             "emb.pos": nir.Linear(weight=np.asarray(folded.E_pos, np.float64)),
             "emb": lif_node(folded.beta_emb, d, dt)}
    edges = [("tokens", "emb.tok"), ("positions", "emb.pos"), ("emb.tok", "emb"),
             ("emb.pos", "emb")]
    x = "emb"
    for i, b in enumerate(folded.blocks):
        p = f"block{i}."
        nodes.update({
            p + "w_qkv": nir.Linear(weight=b.W_qkv), p + "qkv": lif_node(b.beta["qkv"], 3 * d, dt),
            p + "attention": CausalSpikeAttention(d, folded.n_heads).to_nir(),
            p + "attn_scale": nir.Scale(scale=np.asarray(b.c, np.float64)),
            p + "attn": lif_node(b.beta["attn"], d, dt),
            p + "w_o": nir.Linear(weight=b.W_o), p + "skip1": nir.Scale(scale=b.g1),
            p + "mid": lif_node(b.beta["mid"], d, dt),
            p + "w_1": nir.Linear(weight=b.W_1), p + "ff": lif_node(b.beta["ff"], 4 * d, dt),
            p + "w_2": nir.Linear(weight=b.W_2), p + "skip2": nir.Scale(scale=b.g2),
            p + "out": lif_node(b.beta["out"], d, dt)})
        edges += [(x, p + "w_qkv"), (p + "w_qkv", p + "qkv"), (p + "qkv", p + "attention"),
                  (p + "attention", p + "attn_scale"), (p + "attn_scale", p + "attn"),
                  (p + "attn", p + "w_o"), (p + "w_o", p + "mid"), (x, p + "skip1"),
                  (p + "skip1", p + "mid"), (p + "mid", p + "w_1"), (p + "w_1", p + "ff"),
                  (p + "ff", p + "w_2"), (p + "w_2", p + "out"), (p + "mid", p + "skip2"),
                  (p + "skip2", p + "out")]
        _token_shift_nodes(nodes, edges, p, folded.T, dt, d,
                           ((x, p + "qkv", "w_qkv", "x", b.S_qkv),
                            (p + "mid", p + "ff", "w_1", "mid", b.S_ff)))
        x = p + "out"
    nodes["head"] = nir.Linear(weight=np.asarray(folded.W_head, np.float64))
    nodes["logits"] = nir.Output(output_type=np.array([V]))
    edges += [(x, "head"), ("head", "logits")]
    return nir.NIRGraph(nodes=nodes, edges=edges,
                        metadata=_metadata(folded, dt, tokenizer, config))


def stream_to_nir(folded, tokenizer=None, config: Optional[dict] = None, dt: float = DT):
    """``FoldedStreamDecoder`` → ``nir.NIRGraph`` (standard nodes + the attention extension).

    The residual stream is a chain of ``Scale(1)`` nodes (NIR adds the edges into a node):

        tokens ─ emb.tok (Linear) ┐, positions ─ emb.pos (Linear) ┘ ─► h0 (Scale 1)
        per block i, h = h0 or block{i-1}.h:
          h ─ in_scale (Scale s_in) ─► in (LIF) ─ w_qkv ─► qkv (LIF) ─► attention
            (CausalSpikeAttention v2 when the memory decays) ─ attn_scale ─► attn (LIF)
          h ─ mid_scale (Scale s_mid) ┐, attn ─ w_om (Linear s_mid W_o) ┘ ─► mid (LIF)
          mid ─ w_1 ─► ff (LIF 4d)
          h ┐, attn ─ w_o (Linear) ┤, ff ─ w_2 (Linear) ┘ ─► h (Scale 1)   the stream
        h_L ─ final_scale (Scale s_final) ─► final (LIF) ─ head ─► logits
    Token shift as in ``folded_to_nir``: ``in``/``mid`` ─ Delay (j T dt) ─ Linear ─► qkv/ff.
    """
    import nir

    d, V, C = folded.d_model, folded.vocab_size, folded.context
    ones = np.ones(d)
    nodes = {"tokens": nir.Input(input_type=np.array([V])),
             "positions": nir.Input(input_type=np.array([C])),
             "emb.tok": nir.Linear(weight=np.asarray(folded.E_tok, np.float64)),
             "emb.pos": nir.Linear(weight=np.asarray(folded.E_pos, np.float64)),
             "h0": nir.Scale(scale=ones.copy())}
    edges = [("tokens", "emb.tok"), ("positions", "emb.pos"), ("emb.tok", "h0"),
             ("emb.pos", "h0")]
    h = "h0"
    for i, b in enumerate(folded.blocks):
        p = f"block{i}."
        att = CausalSpikeAttention(d, folded.n_heads, decay=tuple(folded.memory_decay),
                                   window=folded.window)
        nodes.update({
            p + "in_scale": nir.Scale(scale=np.asarray(b.s_in, np.float64)),
            p + "in": lif_node(b.beta["in"], d, dt),
            p + "w_qkv": nir.Linear(weight=b.W_qkv), p + "qkv": lif_node(b.beta["qkv"], 3 * d, dt),
            p + "attention": att.to_nir(),
            p + "attn_scale": nir.Scale(scale=np.asarray(b.c, np.float64)),
            p + "attn": lif_node(b.beta["attn"], d, dt),
            p + "mid_scale": nir.Scale(scale=np.asarray(b.s_mid, np.float64)),
            p + "w_om": nir.Linear(weight=b.W_om), p + "mid": lif_node(b.beta["mid"], d, dt),
            p + "w_1": nir.Linear(weight=b.W_1), p + "ff": lif_node(b.beta["ff"], 4 * d, dt),
            p + "w_o": nir.Linear(weight=b.W_o), p + "w_2": nir.Linear(weight=b.W_2),
            p + "h": nir.Scale(scale=ones.copy())})
        edges += [(h, p + "in_scale"), (p + "in_scale", p + "in"), (p + "in", p + "w_qkv"),
                  (p + "w_qkv", p + "qkv"), (p + "qkv", p + "attention"),
                  (p + "attention", p + "attn_scale"), (p + "attn_scale", p + "attn"),
                  (h, p + "mid_scale"), (p + "mid_scale", p + "mid"), (p + "attn", p + "w_om"),
                  (p + "w_om", p + "mid"), (p + "mid", p + "w_1"), (p + "w_1", p + "ff"),
                  (h, p + "h"), (p + "attn", p + "w_o"), (p + "w_o", p + "h"),
                  (p + "ff", p + "w_2"), (p + "w_2", p + "h")]
        _token_shift_nodes(nodes, edges, p, folded.T, dt, d,
                           ((p + "in", p + "qkv", "w_qkv", "in", b.S_qkv),
                            (p + "mid", p + "ff", "w_1", "mid", b.S_ff)))
        h = p + "h"
    nodes.update({"final_scale": nir.Scale(scale=np.asarray(folded.s_final, np.float64)),
                  "final": lif_node(folded.beta_final, d, dt),
                  "head": nir.Linear(weight=np.asarray(folded.W_head, np.float64)),
                  "logits": nir.Output(output_type=np.array([V]))})
    edges += [(h, "final_scale"), ("final_scale", "final"), ("final", "head"),
              ("head", "logits")]
    return nir.NIRGraph(nodes=nodes, edges=edges,
                        metadata=_metadata(folded, dt, tokenizer, config))


def export_model(model, tokenizer=None):
    """A trained model → NIR graph; anything that is not a deployable SpikeDecoder is
    refused with the blocks that cannot be exported named."""

    blocks = getattr(model, "non_spiking_blocks", None)
    names = [str(b) for b in blocks()] if callable(blocks) else []
    if names:
        raise UserError(f"{type(model).__name__} cannot be exported to NIR: its blocks "
                        f"{', '.join(names)} are not spiking (softmax attention, GELU, "
                        "LayerNorm and float residuals have no neuromorphic lowering); export "
                        "a deployable SpikeDecoder (`snn-compile train --model spikedecoder`)")
    folded = fold(model)
    cfg = getattr(model, "cfg", None)
    return folded_to_nir(folded, tokenizer, cfg.to_dict() if cfg is not None else None)


def export_snntorch(net, example):
    """An snnTorch network as a ``nir.NIRGraph``, through snnTorch's own ``export_to_nir``
    (which uses nirtorch) on ``example``, one input batch ``(1, inputs)``."""
    import torch
    if example is None:
        raise UserError("exporting a torch network needs example=, one input batch of shape "
                        "(1, inputs), e.g. example=torch.zeros(1, 64)")
    try:
        from snntorch.export_nir import export_to_nir
        graph = export_to_nir(net, torch.as_tensor(example, dtype=torch.float32),
                              ignore_dims=[0])
    except UserError:
        raise
    except Exception as e:          # snnTorch/nirtorch raise anything for unknown layers
        raise UserError(f"snnTorch's export_to_nir could not export this network "
                        f"({type(e).__name__}: {str(e)[:200]}); give Leaky layers per-neuron "
                        "beta and threshold tensors (snnTorch exports a scalar beta as a "
                        "shape-() LIF) and use layers NIR knows (Linear, Conv2d, Leaky, "
                        "Synaptic, RLeaky)") from None
    return graph
