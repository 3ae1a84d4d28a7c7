"""Generate text token by token from a prompt, streaming it as it is produced.

Backends: torch (float model), nir (NIR reference interpreter), int (integer
reference of the quantized graph), emulator (fast bit-exact emulator),
lava-sim (Lava's bit-accurate Loihi 2 simulator), loihi2 (real hardware, needs
lava-loihi). Temperature 0 is greedy decoding. With --json the text streams to
stderr and stdout holds one object with the text and the token ids.
"""

from __future__ import annotations

import argparse

from snn_compile.cli._common import add_json_flag, not_built


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", nargs="?",
                        help="checkpoint, .nir file, or default:spikedecoder / default:ann")
    parser.add_argument("--hf", metavar="PATH",
                        help="local Hugging Face causal LM directory (instead of MODEL)")
    parser.add_argument("--prompt", default="", help="text to continue")
    parser.add_argument("-n", "--tokens", type=int, default=64, metavar="N",
                        help="number of new tokens")
    parser.add_argument("--backend", choices=("torch", "nir", "int", "emulator", "lava-sim", "loihi2"), default="torch",
                        help="where the model runs")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="sampling temperature; 0 = greedy")
    parser.add_argument("--top-k", type=int, metavar="K", help="sample among the K most likely")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--encoding", choices=("none", "binary", "ternary", "bitwise"),
                        default="none",
                        help="spike-encode the activations entering each linear layer of an ANN")
    parser.add_argument("--bits", type=int, default=8, metavar="K",
                        help="bit planes of the bitwise encoding")
    parser.add_argument("--threshold", type=float, metavar="X",
                        help="threshold of the binary/ternary encoding")
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    return not_built("generate")
