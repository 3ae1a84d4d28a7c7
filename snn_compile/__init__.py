"""snn_compile: deploy spiking networks to Loihi 2 via NIR and Lava.

The Python API (``snn_compile.api``; the ``snn-compile`` command is a thin layer over it)::

    import snn_compile as sc
    m = sc.load("default:spikedecoder")          # checkpoint, .nir, .qgraph, nir.NIRGraph
    m = sc.train("tiny.pt", steps=200)            # or train a SpikeDecoder
    sc.export(m, "model.nir")                     # -> NIR
    c = sc.compile(m)                             # -> Loihi 2 fixed point
    sc.run(c, "The ", backend="lava-sim")         # logits (N, V); spike trains for graphs
    sc.evaluate(c, backend="int")                 # loss; accuracy of a foreign graph
    sc.bench(m, backend="emulator")               # energy per token / per sample

Importing the package loads nothing heavy: each function imports torch, NIR or Lava
when it runs.
"""
__version__ = "0.1.0"

_API = ("Model", "load", "train", "export", "compile", "run", "evaluate", "bench",
        "evaluate_hf")
__all__ = list(_API) + ["__version__"]


def __getattr__(name):
    """The API functions, imported on first use (PEP 562): ``import snn_compile`` stays
    light (no torch, no Lava, no transformers)."""
    if name == "export":
        # the stage subpackage of the same name is callable as api.export (see its doc):
        # one object whether or not the subpackage was imported before
        import importlib
        return importlib.import_module("snn_compile.export")
    if name in _API:
        from snn_compile import api
        return getattr(api, name)
    raise AttributeError(f"module 'snn_compile' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_API))
