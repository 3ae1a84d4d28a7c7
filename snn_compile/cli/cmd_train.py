"""Train a decoder of the zoo on a text corpus and write a checkpoint.

Models: spikedecoder (fully spiking GPT-style decoder, deployable on Loihi 2 by
default: reset to zero, no bias, norms folded into weights, 8-bit
quantization-aware training), partial (the SpikeDecoder with the block kinds named
by --ann-blocks exchanged for their ANN versions; not deployable) and ann (the
non-spiking twin of the same size). --embedding picks the spike code of a spiking
embedding: rate (the one Loihi 2 deployment supports), temporal or population.
The checkpoint holds the weights, the model config and the tokenizer, so every
later stage decodes with the model's own vocabulary. Same seed, same result on
CPU. Progress (loss, tokens/s, spike rate) goes to stderr.

Several processes (DistributedDataParallel; NCCL on GPUs, gloo on the CPU):
`torchrun --standalone --nproc_per_node N -m snn_compile.cli.main train ...`, or
`snn-compile train --nproc N ...`, which starts that. --batch-size is then per
process: the global batch is --batch-size x N. Rank 0 alone evaluates, logs and
writes the checkpoint (the same format as a single process's).

Guards: a NaN/Inf loss or gradient stops training and leaves the last good
checkpoint as it was; a run whose validation loss is still at or above the
unigram loss of the training split after a quarter of its steps stops without
writing one (--no-learning-guard turns that off).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from snn_compile.cli._args import checkpoint_output, float_in, int_in, seed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=("spikedecoder", "partial", "ann"),
                        default="spikedecoder", help="which decoder to train")
    parser.add_argument("--ann-blocks", metavar="KINDS", default="",
                        help="partial: comma-separated block kinds to make ANN, from "
                             "embedding,attention,feedforward,norm,residual")
    parser.add_argument("--embedding", choices=("rate", "temporal", "population"),
                        default="rate", help="spike code of the embedding (only rate is "
                                             "deployable)")
    parser.add_argument("--residual", choices=("spike", "stream"), default="spike",
                        help="how SpikeDecoder blocks are joined: spike (re-spiked outputs, "
                             "trains up to 2 blocks) or stream (a real-valued residual "
                             "stream read through LIFs; trains at depth)")
    parser.add_argument("--attention-memory", choices=("sum", "decay"), default="sum",
                        help="spiking attention's causal memory: sum (grows with the "
                             "position) or decay (per-head retention, half-lives from 0.5 "
                             "token to context/2; needs --residual stream)")
    parser.add_argument("--attention", choices=("ssa", "sdsa"), default="ssa",
                        help="spiking attention: ssa (per-head (q.k) v, deployable; default) or "
                             "sdsa (Spike-driven Transformer's q * SN(sum k*v), a training "
                             "experiment)")
    parser.add_argument("--token-shift",
                        type=int_in(0, 2, why="a lag of j tokens is a delay of j token "
                                              "windows, and Loihi 2 delays end at 62 steps"),
                        default=0, metavar="K",
                        help="SpikeDecoder blocks also see the spikes of the previous K tokens "
                             "(0, 1 or 2; default: 0)")
    parser.add_argument("--shift-mode", choices=("diag", "full"), default="diag",
                        help="token-shift weights: per-channel gains (diag) or whole matrices")
    parser.add_argument("--shift-into", choices=("qkv", "ff", "both"), default="both",
                        help="which populations receive the shifted spikes (default: both)")
    parser.add_argument("--population", type=int_in(2), default=4, metavar="P",
                        help="neurons per value for --embedding population")
    parser.add_argument("--data", metavar="PATH",
                        help="UTF-8 text file to train on (default: the embedded corpus)")
    parser.add_argument("--tokenizer", choices=("char", "word"), default="char",
                        help="character- or word-level vocabulary")
    parser.add_argument("--steps", type=int_in(1), default=2000, metavar="N",
                        help="number of optimisation steps")
    parser.add_argument("--batch-size", type=int_in(1), default=32)
    parser.add_argument("--lr", type=float_in(0, lo_open=True), default=3e-3)
    parser.add_argument("--d-model", type=int_in(1), default=64)
    parser.add_argument("--layers", type=int_in(1), default=2)
    parser.add_argument("--heads", type=int_in(1), default=4)
    parser.add_argument("--context", type=int_in(1), default=128)
    parser.add_argument("--timesteps", type=int_in(1), default=4, help="steps per token (SNN)")
    parser.add_argument("--surrogate", choices=("atan", "fast_sigmoid"), default="atan")
    parser.add_argument("--no-deployable", action="store_true",
                        help="train the SNN without quantization-aware training")
    parser.add_argument("--eval-interval", type=int_in(1), default=250)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="replay each training step as one CUDA graph (--device cuda, one "
                             "process): the same losses, without the launch overhead of the "
                             "SpikeDecoder's many small kernels")
    parser.add_argument("--tf32", action="store_true",
                        help="TF32 tensor cores for the SpikeDecoder's spike x weight products "
                             "(--device cuda; exact in the forward, gradients rounded to TF32)")
    parser.add_argument("--int8", action="store_true",
                        help="int8 tensor cores for the forward of those products (--device "
                             "cuda; exact: the integer product of the spikes and the 8-bit "
                             "weight mantissas)")
    parser.add_argument("--bf16-grads", action="store_true",
                        help="bfloat16 tensor cores for the gradients of those products "
                             "(--device cuda; mixed precision of the backward only)")
    parser.add_argument("--seed", type=seed(), default=0, help="random seed")
    parser.add_argument("--resume", action="store_true",
                        help="continue training from the checkpoint at -o")
    parser.add_argument("--nproc", type=int, metavar="N",
                        help="train with N processes (DDP): start torchrun on this machine, "
                             "one GPU each with --device cuda; --batch-size is per process")
    parser.add_argument("--attention-floor", type=float_in(0, 1), default=0.0, metavar="RATE",
                        help="spike-rate floor for every block's attention population: "
                             "adds W * sum_b relu(1 - rate_b / RATE) to the loss (0: off)")
    parser.add_argument("--attention-floor-weight", type=float_in(0, lo_open=True),
                        default=0.1, metavar="W", help="weight W of --attention-floor")
    parser.add_argument("--no-learning-guard", action="store_true",
                        help="do not stop a run whose validation loss is still at or above the "
                             "unigram loss after a quarter of its steps")
    parser.add_argument("--json", action="store_true", help="print the final figures as JSON")
    parser.add_argument("-o", "--output", metavar="CKPT", required=True,
                        type=checkpoint_output(),
                        help="checkpoint file to write (atomically)")


def run(args: argparse.Namespace) -> int:
    from snn_compile.errors import UserError
    from snn_compile.models import distributed

    if args.cuda_graphs and (args.device != "cuda" or args.nproc is not None
                             or int(os.environ.get("WORLD_SIZE", "1")) > 1):
        raise UserError("--cuda-graphs needs --device cuda and one process; drop --cuda-graphs "
                        "or --nproc")
    from snn_compile.models import kernels

    kernels.check_product_flags(args.tf32, args.int8, args.bf16_grads, args.device, args.model,
                                args.residual, not args.no_deployable)
    if args.nproc is not None:
        return distributed.launch(args.nproc, distributed.strip_option(sys.argv[1:], "--nproc"),
                                  args.device)
    try:
        return _run(args)
    except UserError:
        if distributed.env_rank() != 0:    # every rank stops; rank 0 alone says why
            return 2
        raise


def _run(args: argparse.Namespace) -> int:
    import torch

    from snn_compile.cli._common import print_json
    from snn_compile.errors import UserError
    from snn_compile.models import distributed
    from snn_compile.models.config import ModelConfig
    from snn_compile.models.train import TrainArgs, train

    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible; use --device cpu")
    if args.attention_floor > 0 and args.model != "spikedecoder":
        raise UserError(f"--attention-floor acts on spiking attention: it needs --model "
                        f"spikedecoder (got --model {args.model})")
    if args.ann_blocks and args.model != "partial":
        raise UserError(f"--ann-blocks needs --model partial (got --model {args.model})")
    cfg = ModelConfig(kind=args.model, d_model=args.d_model, n_layers=args.layers,
                      n_heads=args.heads, context=args.context, timesteps=args.timesteps,
                      surrogate=args.surrogate, deployable=not args.no_deployable,
                      embedding=args.embedding, ann_blocks=args.ann_blocks,
                      population=args.population, attention_memory=args.attention_memory,
                      residual=args.residual,
                      token_shift=args.token_shift, shift_mode=args.shift_mode,
                      shift_into=args.shift_into, attention=args.attention)
    targs = TrainArgs(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                      eval_interval=args.eval_interval, seed=args.seed, device=args.device,
                      learning_guard=not args.no_learning_guard,
                      attention_floor=args.attention_floor,
                      attention_floor_weight=args.attention_floor_weight,
                      cuda_graphs=args.cuda_graphs,
                      # absent flags leave the SNN_KERNELS_* settings as they are
                      tf32=args.tf32 or None, int8=args.int8 or None,
                      bf16_grads=args.bf16_grads or None)
    info = train(cfg, targs, args.output, args.data, args.tokenizer, args.resume,
                 command="snn-compile " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    if args.json and distributed.env_rank() == 0:
        print_json({k: v for k, v in info.items() if k != "history"})
    return 0
