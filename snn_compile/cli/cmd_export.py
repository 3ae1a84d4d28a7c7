"""Export a deployable checkpoint to a NIR graph file.

Standard NIR nodes wherever NIR has one (Input, Linear, Scale, LIF, Output);
one documented extension node for causal spiking attention and graph metadata
for the token framing (docs/nir-extensions.md). A model with blocks that
cannot be deployed is refused with their names. The file is checked by reading
it back and running the NIR interpreter against the torch model on a short text.
"""

from __future__ import annotations

import argparse

from snn_compile.cli._args import output_file
from snn_compile.cli._common import add_json_flag


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CKPT",
                        help="checkpoint file, or default:spikedecoder")
    parser.add_argument("-o", "--output", metavar="MODEL.nir", required=True,
                        type=output_file(".nir", why=" (later stages recognise a NIR graph by "
                                                   "its suffix)"),
                        help="NIR file to write (atomically)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip the read-back check (interpreter == torch model)")
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    import torch

    from snn_compile.cli._common import print_json
    from snn_compile.errors import UserError
    from snn_compile.export.nir_io import read_nir, write_nir
    from snn_compile.export.to_nir import export_model, nir_node_of
    from snn_compile.models.checkpoint import load_checkpoint
    from snn_compile.models.fold import fold
    from snn_compile.models.spikedecoder import is_spike_record

    model, tok, _ = load_checkpoint(args.checkpoint)
    graph = export_model(model, tok)
    result = {"output": args.output, "nodes": len(graph.nodes), "edges": len(graph.edges)}

    def check(tmp: str) -> None:
        """Read the complete temporary file back and run it against the torch model."""
        result["bytes"] = os.path.getsize(tmp)
        if args.no_check:
            return
        from snn_compile.compiler.pipeline import calibration_tokens
        from snn_compile.export.interpreter import NIRInterpreter, run_tokens
        folded = fold(model)
        toks = calibration_tokens(tok, folded.context, n=min(32, folded.context))
        ref = folded.forward(toks)
        got = run_tokens(NIRInterpreter(read_nir(tmp)), toks)
        # spikes must be equal; attention memories (float sums, decayed in another order
        # in the step-by-step interpreter) agree to float64 rounding; streams are not nodes
        mism = [k for k, v in ref["spikes"].items()
                if (is_spike_record(k) and not torch.equal(v, got["spikes"][nir_node_of(k)]))
                or (k.endswith(".A") and not torch.allclose(v, got["spikes"][nir_node_of(k)],
                                                             rtol=1e-9, atol=1e-9))]
        diff = float((ref["logits"] - got["logits"]).abs().max())
        result.update(check_tokens=int(toks.shape[1]), spikes_equal=not mism,
                      logits_max_abs_diff=diff)
        if mism:
            raise UserError(f"exported graph disagrees with the torch model on {', '.join(mism)}"
                            f"; nothing written to {args.output} (please report this)")

    write_nir(graph, args.output, check)
    if args.json:
        print_json(result)
    else:
        msg = f"wrote {args.output} ({result['nodes']} nodes, {result['edges']} edges, " \
              f"{result['bytes'] / 1e3:.0f} kB)"
        if "spikes_equal" in result:
            msg += (f"; read back: NIR interpreter == torch model spike for spike on "
                    f"{result['check_tokens']} tokens, logits within "
                    f"{result['logits_max_abs_diff']:.1e}")
        print(msg, file=sys.stderr)
    return 0
