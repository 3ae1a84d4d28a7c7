"""Energy per token of a local Hugging Face causal LM with spike-encoded activations
(``snn-compile bench --hf PATH --encoding ...``), in the literature's 45 nm view.

From ``models.hf.evaluate_hf`` on the validation split (the same tokens that give the
loss), per token:

    ACs  = sum over spike-driven linear layers of spikes x fan-out     (measured)
    MACs = the multiply by each layer's scale c at its outputs (encoded layers), every
           weight of a linear layer that is not encoded (encoding none), and the attention
           products QK^T and AV: 2 d_model (p + 1) per layer at position p (mean over the
           scored positions)
    E    = ACs x 0.9 pJ + MACs x 4.6 pJ                               (Horowitz 2014)

Softmax, GELU, LayerNorm and residual adds are not counted (the literature's headline
figure leaves them out too); the same tokens through the model without encoding give
the dense baseline next to it.
"""

from __future__ import annotations

from typing import Optional

from snn_compile.benchmarks import energy
from snn_compile.models.encodings import linear_layers, weight_and_bias


def _sizes(config) -> tuple:
    layers = next((getattr(config, k) for k in ("n_layer", "num_hidden_layers")
                   if isinstance(getattr(config, k, None), int)), None)
    d = next((getattr(config, k) for k in ("n_embd", "hidden_size", "d_model")
              if isinstance(getattr(config, k, None), int)), None)
    return layers, d


def dense_linear_macs(model) -> int:
    """MACs per token of every linear layer run densely (weights once per token)."""
    total = 0
    for _, _, _, m in linear_layers(model):
        w, _ = weight_and_bias(m)
        total += int(w.shape[0]) * int(w.shape[1])
    return total


def hf_energy(model, ev: dict, encoded=None, dense_macs: Optional[int] = None) -> dict:
    """The energy report of one ``evaluate_hf`` result."""
    n_layer, d = _sizes(model.config)
    attn = 2.0 * d * (ev["mean_position"] + 1.0) * n_layer if n_layer and d else 0.0
    if dense_macs is None:
        dense_macs = (sum(m.d_in * m.d_out for m in encoded.layers) if encoded is not None
                      else dense_linear_macs(model))
    if encoded is not None:
        s = ev["spikes"]
        acs, macs = s["acs_per_token"], s["scale_macs_per_token"] + attn
        spikes = s["spikes_per_token"]
    else:
        acs, macs, spikes = 0.0, dense_macs + attn, None
    e = energy.e_snn_pj(acs, macs)
    base = energy.e_ann_pj(dense_macs + attn)
    return {"spikes_per_token": spikes, "acs_per_token": acs, "macs_per_token": macs,
            "attention_macs_per_token": attn,
            "energy_per_token_pj": {"theoretical_45nm": e, "acs": acs * energy.E_AC_PJ,
                                    "macs": macs * energy.E_MAC_PJ,
                                    "dense_baseline_45nm": base},
            "reduction_pct": energy.reduction_pct(e, base) if base > 0 else None,
            "not_counted": ["softmax", "GELU", "LayerNorm", "residual adds"]}
