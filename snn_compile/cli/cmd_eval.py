"""Evaluate a checkpoint on the validation split.

Prints validation loss (nats/token), bits per character (char tokenizer),
perplexity, parameter count and the mean spike rate of every population. With
--json, one object with val_loss, bpc, ppl, params, spike_rates and
unknown_tokens. With --encoding (ANN checkpoints), the loss of the spike-encoded
model and its spikes per activation and per token (docs/encodings.md).
Characters of the scored text outside the model's vocabulary are scored as the
unknown token with a warning (--oov unk, the default) or refused (--oov error).
Progress goes to stderr.
"""

from __future__ import annotations

import argparse

from snn_compile.cli._args import int_in
from snn_compile.cli._common import add_encoding_flags
from snn_compile.data.text import add_oov_flag


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CKPT",
                        help="checkpoint file or default:spikedecoder / default:ann")
    parser.add_argument("--data", metavar="PATH",
                        help="UTF-8 text file (default: the embedded corpus); its last 10 %% "
                             "is the validation split")
    parser.add_argument("--max-tokens", type=int_in(1), metavar="N",
                        help="evaluate on the first N validation tokens only")
    parser.add_argument("--backend", choices=("torch", "int", "emulator"), default="torch",
                        help="torch: the float model; int / emulator: the deployed Loihi 2 "
                             "fixed-point graph (integer reference / bit-exact emulator)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="device of the emulator")
    parser.add_argument("--ablate", choices=("attention",), metavar="PART",
                        help="attention: zero every block's attention memory (A = 0) and "
                             "report the loss without it (torch backend)")
    add_encoding_flags(parser, "spike-encode the activations entering each linear layer of an "
                               "ANN checkpoint")
    add_oov_flag(parser, "the validation text")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from snn_compile.cli._common import print_json, progress_bar
    from snn_compile.data import validation_ids
    from snn_compile.errors import UserError
    from snn_compile.models.checkpoint import load_checkpoint
    from snn_compile.models.config import BLOCK_KINDS
    from snn_compile.models.evaluation import evaluate_with_progress

    _check_device(args)
    if args.encoding != "none":
        return _run_encoded(args)
    model, tok, info = load_checkpoint(args.checkpoint)
    if args.ablate and (args.backend != "torch" or not hasattr(model, "set_ablation")):
        raise UserError("--ablate attention needs a SpikeDecoder checkpoint on --backend torch "
                        "(it zeroes the spiking attention memory)")
    _check_max_tokens(args, model.cfg.context)
    val_ids, n_unk = validation_ids(args.data, tok, model.cfg.context, args.oov,
                                    args.max_tokens)
    if args.backend == "torch":
        if args.ablate:
            model.set_ablation(attention=True)
        with progress_bar(f"eval {model.cfg.kind} (torch)") as update:
            ev = evaluate_with_progress(model, val_ids, args.max_tokens, update)
        ev["ablate"] = args.ablate
    else:
        ev = _evaluate_deployed(args, val_ids, model.cfg.context)
    ev["unknown_tokens"] = n_unk
    ev["backend"] = args.backend
    ev["params"] = sum(p.numel() for p in model.parameters())
    ev["model"] = model.cfg.kind
    ev["layers"], ev["d_model"] = model.cfg.n_layers, model.cfg.d_model
    ev["attention_spike_rates"] = {k[:-len(".attn")]: r for k, r in
                                   ev.get("spike_rates", {}).items() if k.endswith(".attn")}
    ev["ann_blocks"] = list(BLOCK_KINDS if model.cfg.kind == "ann"
                            else getattr(model.cfg, "ann_blocks", ()))
    ev["non_spiking_blocks"] = list(model.non_spiking_blocks()) \
        if hasattr(model, "non_spiking_blocks") else []
    ev["embedding"] = None if model.cfg.kind == "ann" else getattr(model.cfg, "embedding", "rate")
    if tok.kind != "char":
        ev["bpc"] = None
    if args.json:
        print_json(ev)
        return 0
    print(f"model {ev['model']}  {ev['layers']} x {ev['d_model']}  params {ev['params']}  "
          f"tokens {ev['tokens']}" + ("  attention ablated" if args.ablate else "")
          + (f"  ANN blocks {','.join(ev['ann_blocks'])}" if ev["ann_blocks"] else "")
          + (f"  embedding {ev['embedding']}" if ev["embedding"] else ""))
    print(f"val_loss {ev['val_loss']:.4f} nats/token  ppl {ev['ppl']:.3f}"
          + (f"  bpc {ev['bpc']:.4f}" if ev["bpc"] is not None else ""))
    if n_unk:
        print(f"  {n_unk} token{'s' if n_unk > 1 else ''} outside the vocabulary scored as "
              "the unknown token")
    for k, r in ev.get("spike_rates", {}).items():
        print(f"  spike rate {k:<14} {r:.4f}")
    if ev["attention_spike_rates"]:
        print("attention spike rate per block: " + "  ".join(
            f"{k} {r:.4f}" for k, r in ev["attention_spike_rates"].items()))
    return 0


def _run_encoded(args) -> int:
    """Validation loss and spike counts of the ANN with spike-encoded linear layers."""
    from snn_compile.cli._common import load_ann, print_json, progress_bar
    from snn_compile.data import validation_ids
    from snn_compile.errors import UserError
    from snn_compile.models.encodings import apply_encoding, make_encoding
    from snn_compile.models.evaluation import evaluate_with_progress

    if args.backend != "torch":
        raise UserError("--encoding runs on --backend torch only; drop --backend")
    model, tok = load_ann(args.checkpoint)
    _check_max_tokens(args, model.cfg.context)
    enc = make_encoding(args.encoding, args.bits, args.threshold)
    val_ids, n_unk = validation_ids(args.data, tok, model.cfg.context, args.oov,
                                    args.max_tokens)
    encoded = apply_encoding(model, enc)
    with progress_bar(f"eval ann + {args.encoding} encoding") as update:
        ev = evaluate_with_progress(model, val_ids, args.max_tokens, update)
    ev["unknown_tokens"] = n_unk
    counts = encoded.summary()
    ev.pop("spike_rates", None)
    ev.pop("mean_spike_rate", None)
    ev.update({k: v for k, v in counts.items() if k != "tokens"}, backend="torch",
              model=model.cfg.kind, encoding=args.encoding, encoding_params=enc.describe(),
              params=sum(p.numel() for p in model.parameters()))
    if tok.kind != "char":
        ev["bpc"] = None
    if args.json:
        print_json(ev)
        return 0
    print(f"model {ev['model']} + {args.encoding} encoding {enc.describe()}  "
          f"tokens {ev['tokens']}")
    print(f"val_loss {ev['val_loss']:.4f} nats/token  ppl {ev['ppl']:.3f}"
          + (f"  bpc {ev['bpc']:.4f}" if ev["bpc"] is not None else ""))
    print(f"spikes/activation {ev['spikes_per_activation']:.4f}  spikes/token "
          f"{ev['spikes_per_token']:.1f}  sparsity {ev['sparsity']:.4f}  "
          f"ACs/token {ev['acs_per_token']:.0f}")
    for name, r in ev["per_layer"].items():
        print(f"  {name:<14} {r['spikes_per_token']:9.1f} spikes/token  "
              f"{r['spikes_per_activation']:.4f} spikes/activation")
    return 0


def _check_device(args) -> None:
    from snn_compile.errors import UserError
    if args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA GPU is visible; use --device cpu")


def _check_max_tokens(args, context: int) -> None:
    """--max-tokens below one window of the model's (fixed) context scores nothing."""
    from snn_compile.errors import UserError
    if args.max_tokens is not None and args.max_tokens < context:
        raise UserError(f"--max-tokens {args.max_tokens} is shorter than one window of the "
                        f"model's context ({context} tokens, fixed by the model); give "
                        f"--max-tokens {context} or more, or leave it out")


def _evaluate_deployed(args, val_ids, context: int) -> dict:
    """Validation loss of the quantized graph, blocks of `context` tokens from a reset."""
    import math

    import torch
    import torch.nn.functional as F

    from snn_compile.compiler.pipeline import load_qgraph
    from snn_compile.data import sequential_blocks

    from snn_compile.cli._common import progress_bar

    q, _, _ = load_qgraph(args.checkpoint)
    ids = val_ids if args.max_tokens is None else val_ids[: args.max_tokens + 1]
    total, count = 0.0, 0
    with progress_bar(f"eval deployed graph ({args.backend})") as update:
        for x, y in sequential_blocks(ids, context, 64):
            if args.backend == "int":
                from snn_compile.compiler.int_reference import logits_only
                logits = logits_only(q, torch.as_tensor(x))
            else:
                from snn_compile.hw_sim.emulator import emulator_logits
                logits = emulator_logits(q, torch.as_tensor(x), device=args.device)
            total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]).double(),
                                           torch.as_tensor(y).reshape(-1), reduction="sum"))
            count += y.size
            update(count, len(ids) - 1)
    val = total / max(count, 1)
    return {"val_loss": val, "ppl": math.exp(min(val, 50)), "bpc": val / math.log(2),
            "tokens": count}
