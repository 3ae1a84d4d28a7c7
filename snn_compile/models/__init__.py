"""Decoder zoo: SpikeDecoder (deployable, fully spiking) and its ANN twin."""

from snn_compile.models.config import ModelConfig  # noqa: F401
from snn_compile.models.checkpoint import load_checkpoint, load_any, save_checkpoint  # noqa: F401
