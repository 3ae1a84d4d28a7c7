"""Generate text token by token from a prompt, streaming it as it is produced.

Backends: torch (float model), nir (NIR reference interpreter), int (integer
reference of the quantized graph), emulator (fast bit-exact emulator),
lava-sim (Lava's bit-accurate Loihi 2 simulator), loihi2 (real hardware, needs
lava-loihi). Temperature 0 is greedy decoding. With --json the text streams to
stderr and stdout holds one object with the text and the token ids.

ANN models (default:ann, or a local Hugging Face causal LM with --hf PATH) can
run spike-driven: --encoding binary|ternary|bitwise encodes the activations
entering every linear layer as spikes (docs/encodings.md); the JSON then adds
spikes_per_token and sparsity. Prompt characters outside the model's vocabulary
are fed as the unknown token with a warning (--oov unk, the default) or refused
(--oov error).
"""

from __future__ import annotations

import argparse

from snn_compile.cli._args import float_in, int_in, seed
from snn_compile.cli._common import add_encoding_flags, add_json_flag, load_ann
from snn_compile.data.text import add_oov_flag


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", nargs="?",
                        help="checkpoint, .nir file, or default:spikedecoder / default:ann")
    parser.add_argument("--hf", metavar="PATH",
                        help="local Hugging Face causal LM directory (instead of MODEL)")
    parser.add_argument("--hf-tokenizer", choices=("auto", "bytes"), default="auto",
                        help="--hf: the folder's own tokenizer (auto; an error if it has none) "
                             "or UTF-8 bytes as token ids")
    parser.add_argument("--prompt", default="", help="text to continue")
    parser.add_argument("-n", "--tokens", type=int_in(1), default=64, metavar="N",
                        help="number of new tokens")
    parser.add_argument("--backend", choices=("torch", "nir", "int", "emulator", "lava-sim", "loihi2"), default="torch",
                        help="where the model runs")
    parser.add_argument("--temperature", type=float_in(0), default=0.0,
                        help="sampling temperature; 0 = greedy")
    parser.add_argument("--top-k", type=int_in(1), metavar="K", help="sample among the K most likely")
    parser.add_argument("--seed", type=seed(), default=0, help="sampling seed")
    add_encoding_flags(parser, "spike-encode the activations entering each linear layer of an "
                               "ANN")
    add_oov_flag(parser, "the prompt")
    add_json_flag(parser)


def _backend(args):
    """(backend, tokenizer) for the requested backend."""
    from snn_compile.errors import UserError
    if args.hf or args.encoding != "none":
        return _encoded_backend(args)
    if args.model is None:
        raise UserError("name a model: a checkpoint, default:spikedecoder, default:ann or a .qgraph")
    if args.model.endswith((".nir", ".qgraph")):
        from snn_compile import api
        if api.load(args.model).foreign:
            raise UserError(f"{args.model} is a foreign NIR graph: it maps spike trains to "
                            "spike trains and generates no text; run it with `snn-compile run "
                            f"{args.model} --input X.npy -o OUT.npy` (X: (steps, inputs) or "
                            "(samples, steps, inputs))")
    if args.backend == "torch":
        from snn_compile.models.checkpoint import load_checkpoint
        from snn_compile.models.sampling import TorchBackend
        if args.model.endswith((".qgraph", ".nir")):
            raise UserError(f"--backend torch runs a checkpoint, and {args.model} is a "
                            f"{'compiled graph' if args.model.endswith('.qgraph') else 'NIR graph'}"
                            f"; run it with --backend "
                            f"{'int' if args.model.endswith('.qgraph') else 'nir'} (or "
                            "emulator, lava-sim)")
        model, tok, _ = load_checkpoint(args.model)
        return TorchBackend(model), tok
    if args.backend == "nir":
        from snn_compile.compiler.from_nir import decoder_tokenizer
        from snn_compile.compiler.pipeline import nir_of_checkpoint
        from snn_compile.export.interpreter import NIRBackend
        from snn_compile.export.nir_io import read_nir
        if args.model.endswith(".qgraph"):
            raise UserError("--backend nir needs a .nir file or a checkpoint, not a compiled "
                            ".qgraph")
        if args.model.endswith(".nir"):
            from snn_compile.compiler.from_nir import require_decoder
            graph = read_nir(args.model)
            require_decoder(graph, args.model, "generate")
            return NIRBackend(graph), decoder_tokenizer(graph)
        graph, tok = nir_of_checkpoint(args.model)
        return NIRBackend(graph), tok
    from snn_compile.compiler.pipeline import load_qgraph
    q, _, tok = load_qgraph(args.model)
    if args.backend == "int":
        from snn_compile.hw_sim.int_reference import IntReferenceBackend
        return IntReferenceBackend(q), tok
    if args.backend == "emulator":
        from snn_compile.hw_sim.emulator import EmulatorBackend
        return EmulatorBackend(q), tok
    import sys

    from snn_compile.hw_sim.lava_runner import LavaBackend
    print(f"starting Lava ({args.backend}): building and compiling the process graph ...",
          file=sys.stderr, flush=True)
    return LavaBackend(q, hardware=(args.backend == "loihi2")), tok


def _encoded_backend(args):
    """(backend, tokenizer) of a spike-encoded ANN: the ANN twin checkpoint or --hf PATH."""
    from snn_compile.errors import UserError
    from snn_compile.models.encodings import apply_encoding, make_encoding
    from snn_compile.models.hf import EncodedTorchBackend, HFBackend, load_hf

    if args.backend != "torch":
        raise UserError(f"--encoding/--hf run on --backend torch only (got --backend "
                        f"{args.backend}); drop --backend")
    if args.hf:
        if args.model is not None:
            raise UserError("give either MODEL or --hf PATH, not both")
        model, tok, encoded = load_hf(args.hf, args.encoding, args.bits, args.threshold,
                                      args.hf_tokenizer)
        import sys

        from snn_compile.models.hf import describe_tokenizer
        print(f"tokenizer: {describe_tokenizer(tok)}", file=sys.stderr)
        return HFBackend(model, encoded), tok
    if args.model is None:
        raise UserError("name a model: default:ann, an ANN checkpoint, or --hf PATH")
    model, tok = load_ann(args.model)
    encoded = apply_encoding(model, make_encoding(args.encoding, args.bits, args.threshold))
    return EncodedTorchBackend(model, encoded), tok


def run(args: argparse.Namespace) -> int:
    import sys
    import time

    from snn_compile.cli._common import print_json
    from snn_compile.models.sampling import generate

    from snn_compile.data import encode_text
    from snn_compile.errors import UserError

    if not args.prompt:
        raise UserError("--prompt is empty; give at least one character to continue")
    backend, tok = _backend(args)
    try:
        prompt, _ = encode_text(tok, args.prompt, args.oov, what="--prompt", use="fed")
        if not prompt:
            raise UserError(f"--prompt {args.prompt!r} holds no token of the model's "
                            f"{tok.kind} vocabulary; give at least one word or character")
    except BaseException:
        backend.close()
        raise
    stream = sys.stderr if args.json else sys.stdout
    stream.write(args.prompt)
    stream.flush()

    def on_token(t):
        stream.write(tok.decode([t]))
        stream.flush()

    t0 = time.perf_counter()
    try:
        ids = generate(backend, prompt, args.tokens, temperature=args.temperature,
                       top_k=args.top_k, seed=args.seed, on_token=on_token)
    finally:
        backend.close()
    dt = time.perf_counter() - t0
    stream.write("\n")
    if args.json:
        obj = {"text": tok.decode(ids), "tokens": ids, "prompt": args.prompt,
               "backend": args.backend, "seconds": dt,
               "tokens_per_s": (len(prompt) + len(ids)) / dt}
        if hasattr(backend, "counter"):
            obj.update(backend.counter.report(), encoding=args.encoding, hf=args.hf,
                       non_spiking=_non_spiking(args))
        print_json(obj)
    else:
        print(f"[{args.backend}: {len(prompt) + len(ids)} tokens fed in {dt:.1f} s]",
              file=sys.stderr)
        rep = backend.counter.report() if hasattr(backend, "counter") else {}
        if rep.get("spikes_per_token") is not None:
            print(f"[{args.encoding}: {rep['spikes_per_token']:.1f} spikes/token, sparsity "
                  f"{rep['sparsity']:.3f}; non-spiking: {', '.join(_non_spiking(args))}]",
                  file=sys.stderr)
    return 0


def _non_spiking(args) -> list:
    """What stays non-spiking in a spike-encoded run (reported with the counts)."""
    from snn_compile.models.encodings import NON_SPIKING
    return list(NON_SPIKING) if args.encoding != "none" else ["the whole model (--encoding none)"]
