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
    import sys

    from snn_compile import api
    from snn_compile.cli._common import print_json
    from snn_compile.errors import UserError

    m = api.load(args.checkpoint)
    if m.kind != "checkpoint":
        raise UserError(f"{args.checkpoint} is a {'NIR graph' if m.kind == 'nir' else 'compiled graph'}"
                        "; export takes a checkpoint (default:spikedecoder, a .pt file)")
    g = api.export(m, args.output, check=not args.no_check)
    result = {"output": args.output, "nodes": len(g.graph.nodes), "edges": len(g.graph.edges),
              **g.report}
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
