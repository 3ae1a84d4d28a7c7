"""Evaluate a checkpoint on the validation split.

Prints validation loss (nats/token), bits per character (char tokenizer),
perplexity, parameter count and the mean spike rate of every population. With
--json, one object with val_loss, bpc, ppl, params and spike_rates.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CKPT",
                        help="checkpoint file or default:spikedecoder / default:ann")
    parser.add_argument("--data", metavar="PATH",
                        help="UTF-8 text file (default: the embedded corpus); its last 10 %% "
                             "is the validation split")
    parser.add_argument("--max-tokens", type=int, metavar="N",
                        help="evaluate on the first N validation tokens only")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from snn_compile.cli._common import print_json
    from snn_compile.models.checkpoint import load_checkpoint
    from snn_compile.models.train import evaluate, prepare_data

    model, tok, info = load_checkpoint(args.checkpoint)
    _, _, val_ids = prepare_data(args.data, tok.kind, model.cfg.context, tok)
    ev = evaluate(model, val_ids, args.max_tokens)
    ev["params"] = sum(p.numel() for p in model.parameters())
    ev["model"] = model.cfg.kind
    if tok.kind != "char":
        ev["bpc"] = None
    if args.json:
        print_json(ev)
        return 0
    print(f"model {ev['model']}  params {ev['params']}  tokens {ev['tokens']}")
    print(f"val_loss {ev['val_loss']:.4f} nats/token  ppl {ev['ppl']:.3f}"
          + (f"  bpc {ev['bpc']:.4f}" if ev["bpc"] is not None else ""))
    for k, r in ev["spike_rates"].items():
        print(f"  spike rate {k:<14} {r:.4f}")
    return 0
