"""From what the user names (checkpoint, ``default:*``, a ``.nir`` file or a compiled
``.qgraph``) to a validated fixed-point ``QGraph`` with its tokenizer and quantization
report. Checkpoints are exported to NIR in memory first: the quantizer only ever
sees what a NIR file can hold."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

from snn_compile.compiler.from_nir import decoder_tokenizer, folded_from_nir, require_decoder
from snn_compile.compiler.qgraph import QGraph, QGraphError
from snn_compile.compiler.quantize import quantize_decoder
from snn_compile.data import load_corpus, tokenizer_from_dict, train_val_split
from snn_compile.errors import UserError
from snn_compile.export.nir_io import read_nir
from snn_compile.export.to_nir import export_model
from snn_compile.models.checkpoint import load_checkpoint

CALIBRATION_TOKENS = 128


def calibration_tokens(tokenizer, context: int, n: int = CALIBRATION_TOKENS) -> torch.Tensor:
    """The first ``n`` validation tokens of the embedded corpus (never training text)."""
    ids = np.asarray(tokenizer.encode(load_corpus(None), strict=False), dtype=np.int64)
    _, val = train_val_split(ids, 0.1)
    return torch.as_tensor(val[: min(n, context)])[None]


def load_qgraph(spec: str, calibrate: bool = True) -> Tuple[QGraph, Optional[dict], object]:
    """Return (qgraph, quantization report or None, tokenizer)."""
    import os

    if not spec.startswith("default:") and not os.path.exists(spec):
        raise UserError(f"{spec} does not exist; give a checkpoint, default:spikedecoder, a "
                        ".nir file or a compiled .qgraph")
    if spec.endswith(".qgraph"):
        try:
            q = QGraph.load(spec)
        except FileNotFoundError:
            raise UserError(f"compiled graph {spec} does not exist; make it with "
                            "`snn-compile compile CKPT -o FILE.qgraph`") from None
        except QGraphError as e:
            raise UserError(str(e)) from None
        tok = q.metadata.get("tokenizer")
        if tok is None and q.metadata.get("model") == "foreign":
            raise UserError(f"{spec} is a compiled foreign NIR graph (spike trains in and out, "
                            f"no tokenizer): run it with `snn-compile run {spec} --input X.npy` "
                            "(eval and bench take --input too)")
        if tok is None:
            raise UserError(f"{spec} carries no tokenizer; recompile it from its checkpoint")
        return q, None, tokenizer_from_dict(tok)
    if spec.endswith(".nir"):
        graph = read_nir(spec)
        require_decoder(graph, spec)
        tok = decoder_tokenizer(graph)
    else:
        graph, tok = nir_of_checkpoint(spec)
    # the compiler reads only NIR: checkpoints go through the exporter first
    q, rep = quantize_decoder_graph(graph, tok, calibrate)
    return q, rep, tok


def quantize_decoder_graph(graph, tokenizer, calibrate: bool = True) -> Tuple[QGraph, dict]:
    """(qgraph, quantization report) of a decoder's NIR graph: folded equations read from
    the graph, scales calibrated on ``calibration_tokens`` (or from the weights alone)."""
    folded = folded_from_nir(graph)
    calib = calibration_tokens(tokenizer, folded.context) if calibrate else None
    q, rep = quantize_decoder(folded, calib, tokenizer)
    return q, rep.to_dict()


def nir_of_checkpoint(spec: str):
    """(NIR graph, tokenizer) of a checkpoint or ``default:*`` spec, in memory."""
    model, tok, _ = load_checkpoint(spec)
    return export_model(model, tok), tok
