"""Run a model on a backend and write what it outputs.

A foreign NIR graph (snnTorch, Norse, Rockpool, ...) takes spike trains, --input X.npy
of shape (steps, inputs) for one sample or (samples, steps, inputs) (a .npz with one
array per Input node when there are several), and writes the Output node's values in
NIR time, (steps, outputs) or (samples, steps, outputs), with -o OUT.npy: step t of the
output belongs to step t of the input (the Loihi graph's pipeline latency removed).
On int, emulator, lava-sim and loihi2 the graph is first compiled to Loihi 2 fixed
point for the input's steps, calibrated on --calibrate C.npy (default: the input
itself); a compiled .qgraph runs as it is. --backend nir is the float NIR interpreter
(any real-valued input).

A token decoder (checkpoint, its .nir or .qgraph) takes --text or --input IDS.npy
(token ids (N,) or (B, N)) and writes the logits (N, V) or (B, N, V).

--json prints one object: backend, output shape, the steps with a non-zero output
(one sample) or the output counts per sample, and where the array was written.
"""

from __future__ import annotations

import argparse

from snn_compile.cli._args import output_file
from snn_compile.cli._common import add_json_flag


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL",
                        help="NIR graph, compiled .qgraph, checkpoint or default:spikedecoder")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--input", metavar="X.npy",
                     help="spike trains (steps, inputs) or (samples, steps, inputs) for a NIR "
                          "graph (.npz: one array per Input node); token ids for a decoder")
    src.add_argument("--text", help="text to feed a token decoder")
    parser.add_argument("--backend", choices=("torch", "nir", "int", "emulator", "lava-sim",
                                              "loihi2"), default="int",
                        help="where it runs (default: int, the integer reference of the "
                             "Loihi 2 graph)")
    parser.add_argument("--calibrate", metavar="C.npy",
                        help="NIR graphs: calibration spike trains for the compilation "
                             "(default: the input)")
    parser.add_argument("-o", "--output", metavar="OUT.npy",
                        type=output_file(".npy", why=" (a numpy array)"),
                        help="write the output array here (atomically)")
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from snn_compile import api
    from snn_compile.cli._common import print_json
    from snn_compile.errors import UserError, atomic_path

    if args.input is None and args.text is None:
        raise UserError("give what to run on: --input X.npy (spike trains for a NIR graph, "
                        "token ids for a decoder) or --text")
    m = api.load(args.model)
    if m.foreign:
        if args.text is not None:
            raise UserError(f"{args.model} is a foreign NIR graph: it takes spike trains "
                            "(--input X.npy), not text")
        res = api._run_foreign(m, args.input, args.backend, None, args.calibrate)
        y = res["output"]
    else:
        if args.calibrate is not None:
            raise UserError("--calibrate applies to foreign NIR graphs; a token decoder is "
                            "calibrated on validation text")
        x = args.text if args.text is not None else api.load_array(args.input, "input")
        y = api.run(m, x, backend=args.backend)
    if args.output:
        with atomic_path(args.output) as tmp:
            with open(tmp, "wb") as fh:       # a file object: np.save would append ".npy"
                np.save(fh, y, allow_pickle=False)
            back = np.load(tmp, allow_pickle=False)
            if not np.array_equal(back, y):
                raise UserError(f"{args.output}: the array read back differs; nothing written")
    out = {"model": args.model, "backend": args.backend, "foreign": m.foreign,
           "shape": list(y.shape), "output": args.output}
    if m.foreign:
        if y.ndim == 2:
            out["nonzero_steps"] = np.flatnonzero(np.any(y != 0, axis=1)).tolist()
            out["output_sum"] = y.sum(axis=0).tolist()
        else:
            out["output_sum_per_sample"] = y.sum(axis=1).tolist()
        out["steps"] = int(y.shape[-2])
    else:
        out["argmax_last"] = np.asarray(y)[..., -1, :].argmax(-1).tolist()
    if args.json:
        print_json(out)
        return 0
    if m.foreign and y.ndim == 2:
        steps = out["nonzero_steps"]
        shown = ", ".join(map(str, steps[:20])) + (", ..." if len(steps) > 20 else "")
        print(f"{args.backend}: output {tuple(y.shape)}, non-zero at {len(steps)} of "
              f"{y.shape[0]} steps" + (f": {shown}" if steps else ""))
    elif m.foreign:
        print(f"{args.backend}: output {tuple(y.shape)} (samples, steps, outputs); output "
              f"sums of the first samples: {np.round(y.sum(axis=1)[:4], 4).tolist()}")
    else:
        print(f"{args.backend}: logits {tuple(y.shape)}")
    if args.output:
        print(f"wrote {args.output}")
    return 0
