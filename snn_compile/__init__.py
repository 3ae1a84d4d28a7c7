"""snn_compile: deploy spiking language models to Loihi 2 via NIR and Lava."""
__version__ = "0.1.0"
