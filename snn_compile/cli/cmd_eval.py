"""Evaluate a model: a token decoder on the validation split, a NIR graph on your data.

Prints validation loss (nats/token), bits per character (char tokenizer),
perplexity, parameter count and the mean spike rate of every population. With
--json, one object with val_loss, bpc, ppl, params, spike_rates and
unknown_tokens. With --encoding (ANN checkpoints), the loss of the spike-encoded
model and its spikes per activation and per token (docs/encodings.md).
Characters of the scored text outside the model's vocabulary are scored as the
unknown token with a warning (--oov unk, the default) or refused (--oov error).
Progress goes to stderr.

A foreign NIR graph (snnTorch, Norse, ...) or its compiled .qgraph is evaluated on
--input X.npy (spike trains (samples, steps, inputs)) and --labels Y.npy (one class
per sample): each sample is classified by its output spike count, on --backend int
(default), emulator, lava-sim or nir; the graph is compiled for X's steps and
calibrated on X.
"""

from __future__ import annotations

import argparse

from snn_compile.cli._args import int_in
from snn_compile.cli._common import add_encoding_flags
from snn_compile.data.text import add_oov_flag


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="MODEL", nargs="?",
                        help="checkpoint file, default:spikedecoder / default:ann, a .nir graph "
                             "or a compiled .qgraph")
    parser.add_argument("--hf", metavar="PATH",
                        help="a local Hugging Face causal LM folder (instead of MODEL): loss, "
                             "bits per character, spikes per token with --encoding")
    parser.add_argument("--hf-tokenizer", choices=("auto", "bytes"), default="auto",
                        help="--hf: the folder's own tokenizer (auto; an error if it has none) "
                             "or UTF-8 bytes as token ids")
    parser.add_argument("--input", metavar="X.npy",
                        help="NIR graphs: spike trains (samples, steps, inputs)")
    parser.add_argument("--labels", metavar="Y.npy",
                        help="NIR graphs: one integer class per sample; accuracy by output "
                             "spike count")
    parser.add_argument("--data", metavar="PATH",
                        help="UTF-8 text file (default: the embedded corpus); its last 10 %% "
                             "is the validation split")
    parser.add_argument("--max-tokens", type=int_in(1), metavar="N",
                        help="evaluate on the first N validation tokens only")
    parser.add_argument("--backend", choices=("torch", "nir", "int", "emulator", "lava-sim",
                                              "loihi2"), default=None,
                        help="torch (default for checkpoints): the float model; int / emulator: "
                             "the deployed Loihi 2 fixed-point graph (integer reference / "
                             "bit-exact emulator); NIR graphs: nir, int (default), emulator, "
                             "lava-sim, loihi2")
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
    from snn_compile import api
    from snn_compile.cli._common import print_json, progress_bar
    from snn_compile.errors import UserError
    from snn_compile.models.config import BLOCK_KINDS

    _check_device(args)
    args.backend_given = args.backend is not None
    if args.backend is None:
        args.backend = "torch"
    if args.hf:
        return _run_hf(args)
    if args.checkpoint is None:
        raise UserError("name a model: a checkpoint, default:spikedecoder, a .nir or .qgraph "
                        "file, or --hf PATH")
    if args.encoding != "none":
        return _run_encoded(args)
    m = api.load(args.checkpoint)
    if m.foreign:
        return _run_foreign(args, m)
    if args.input is not None or args.labels is not None:
        raise UserError(f"{args.checkpoint} is a token decoder: it is evaluated on text "
                        "(--data FILE, default the embedded corpus); --input/--labels are for "
                        "foreign NIR graphs")
    if args.backend not in ("torch", "int", "emulator"):
        raise UserError(f"a token decoder is evaluated on --backend torch, int or emulator, "
                        f"not {args.backend}")
    what = m.torch_model.cfg.kind if m.torch_model is not None else m.kind
    label = "torch" if args.backend == "torch" else "deployed graph, " + args.backend
    with progress_bar(f"eval {what} ({label})") as update:
        ev = api.evaluate(m, backend=args.backend, data=args.data, max_tokens=args.max_tokens,
                          oov=args.oov, ablate=args.ablate, device=args.device,
                          progress=update)
    n_unk = ev["unknown_tokens"]
    model = m.torch_model
    if model is not None:
        ev["params"] = sum(p.numel() for p in model.parameters())
        ev["model"] = model.cfg.kind
        ev["layers"], ev["d_model"] = model.cfg.n_layers, model.cfg.d_model
        ev["ann_blocks"] = list(BLOCK_KINDS if model.cfg.kind == "ann"
                                else getattr(model.cfg, "ann_blocks", ()))
        ev["non_spiking_blocks"] = list(model.non_spiking_blocks()) \
            if hasattr(model, "non_spiking_blocks") else []
        ev["embedding"] = None if model.cfg.kind == "ann" else getattr(model.cfg, "embedding",
                                                                       "rate")
    else:
        ev.update(params=None, model=f"spikedecoder ({m.kind})", layers=None, d_model=None,
                  ann_blocks=[], non_spiking_blocks=[], embedding=None)
    ev["attention_spike_rates"] = {k[:-len(".attn")]: r for k, r in
                                   ev.get("spike_rates", {}).items() if k.endswith(".attn")}
    if args.json:
        print_json(ev)
        return 0
    print(f"model {ev['model']}"
          + (f"  {ev['layers']} x {ev['d_model']}  params {ev['params']}" if model else "")
          + f"  tokens {ev['tokens']}" + ("  attention ablated" if args.ablate else "")
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


def _run_hf(args) -> int:
    """Loss of a local Hugging Face causal LM, spike-encoded with --encoding."""
    import sys

    from snn_compile import api
    from snn_compile.cli._common import print_json, progress_bar
    from snn_compile.errors import UserError

    if args.checkpoint is not None:
        raise UserError("give either MODEL or --hf PATH, not both")
    if args.backend != "torch" or args.ablate:
        raise UserError("--hf models run on --backend torch (the float model with spike-"
                        "encoded activations); drop --backend/--ablate")
    from snn_compile.models.hf import check_hf_folder
    check_hf_folder(args.hf, args.hf_tokenizer)           # before the progress bar starts
    with progress_bar(f"eval --hf ({args.encoding})") as update:
        ev = api.evaluate_hf(args.hf, encoding=args.encoding, bits=args.bits,
                             threshold=args.threshold, tokenizer=args.hf_tokenizer,
                             data=args.data, max_tokens=args.max_tokens or 4096,
                             progress=update)
    print(f"tokenizer: {ev['tokenizer']}", file=sys.stderr)
    if args.json:
        print_json(ev)
        return 0
    print(f"{args.hf} ({args.encoding} encoding)  tokens {ev['tokens']}  chars {ev['chars']}")
    print(f"val_loss {ev['val_loss']:.4f} nats/token  ppl {ev['ppl']:.3f}  "
          f"bpc {ev['bpc']:.4f}")
    if ev.get("spikes"):
        sp = ev["spikes"]
        print(f"spikes/token {sp['spikes_per_token']:.1f}  spikes/activation "
              f"{sp['spikes_per_activation']:.4f}  ACs/token {sp['acs_per_token']:.0f}")
    return 0


def _run_foreign(args, m) -> int:
    """Accuracy of a foreign NIR graph on --input/--labels, by output spike count."""
    from snn_compile import api
    from snn_compile.cli._common import print_json
    from snn_compile.errors import UserError

    if args.input is None or args.labels is None:
        what = "a compiled graph of a foreign NIR graph" if m.kind == "qgraph" else \
            "a foreign NIR graph"
        raise UserError(f"{args.checkpoint} is {what}: evaluate it on your data "
                        f"with `snn-compile eval {args.checkpoint} --input X.npy --labels "
                        "Y.npy` (X: spike trains (samples, steps, inputs), Y: one class per "
                        "sample)")
    if args.data or args.max_tokens or args.ablate:
        raise UserError("--data/--max-tokens/--ablate apply to token decoders; a foreign NIR "
                        "graph is evaluated on --input/--labels")
    backend = "int" if args.backend == "torch" and not args.backend_given else args.backend
    ev = api.evaluate(m, inputs=args.input, labels=args.labels, backend=backend)
    ev["model"] = args.checkpoint
    if args.json:
        ev = dict(ev)
        print_json(ev)
        return 0
    print(f"{args.checkpoint} on {backend}: accuracy {ev['accuracy']:.2%} ({ev['correct']} of "
          f"{ev['samples']} samples, {ev['steps']} steps each, class = most output spikes)"
          + (f"; {ev['silent_samples']} samples without an output spike"
             if ev["silent_samples"] else ""))
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
