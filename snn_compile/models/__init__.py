"""Decoder zoo: SpikeDecoder (deployable, fully spiking) and its ANN twin; training,
checkpoints and the shipped models (``assets``)."""
