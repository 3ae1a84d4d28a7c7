"""The project's NIR extension: what standard NIR cannot say about a SpikeDecoder.

Two things of the deployed decoder have no NIR node (docs/nir-extensions.md):

1. **Causal spiking self-attention** — a product of two activations with a memory
   that persists across tokens. One extension node, ``CausalSpikeAttention``:

       x = [q | k | v]   (3d binary spikes, heads contiguous inside each third)
       S_h[p] = S_h[p-1] + k_h[p]^T v_h[p]          (dh x dh integer memory per head)
       A_h[p] = q_h[p] S_h[p]                        (= sum_{p'<=p} (q_h[p].k_h[p']) v_h[p'])

   with p = n*T + t running over every step of every token of the context;
   ``S`` starts at 0 when a sequence starts and is never reset inside it.
   Version 2 adds an optional per-head retention (the decay memory):

       S_h[g] = lambda_h S_h[g-1] + k_h[g]^T v_h[g],   lambda_h = 1 - m_h / 2^decay_exp

   at every Loihi step g = n*W + t of a token window of W steps, so between the last
   step of token n and the first of token n+1 the memory decays W - T + 1 times.

2. **Token framing** — graph-level metadata (``FRAMING_KEY``): T steps per token, the
   one-hot ``tokens``/``positions`` inputs held for the T steps, every neuron
   state reset to zero at each token start, logits = mean over the T steps.

Storage: ``nir.read`` of nir 1.0.8 accepts only its fixed list of node types (an
unknown type fails with a bare ``AssertionError``), so an extension node is written
as a standard ``NIRGraph`` subgraph that any NIR reader can load: its metadata
carries ``snn_compile.extension`` (name), ``snn_compile.extension_version`` and the
parameters; inside, ``input`` → ``opaque`` (an all-zero ``Linear``) → ``output``
keeps the shapes type-correct. A tool that ignores the metadata therefore reads
the file and sees an attention that outputs zeros — visibly dead, never a
plausible but wrong value. ``snn_compile.export.nir_io.read_nir`` turns such
subgraphs back into ``CausalSpikeAttention`` objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict

import numpy as np

EXTENSION_KEY = "snn_compile.extension"
EXTENSION_VERSION_KEY = "snn_compile.extension_version"
FRAMING_KEY = "snn_compile.framing"
FORMAT_KEY = "snn_compile.format"
FORMAT_VERSION = 1


def _scalar(x: Any) -> Any:
    """Metadata comes back from HDF5 as numpy scalars or bytes; make it plain Python."""
    if isinstance(x, bytes):
        return x.decode("utf8")
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray) and x.shape == ():
        return x.item()
    return x


@dataclass(eq=False)
class CausalSpikeAttention:
    """Multi-head causal spiking attention without softmax (see module docstring).

    Input: 3*d_model binary spikes [q | k | v]; output: d_model integer counts A.
    Realised on Loihi 2 by ProdNeuron (k*v), an accumulator and ProdNeuron (S*q),
    then a graded Dense summing each head's rows (docs/nir-extensions.md).
    """

    d_model: int
    n_heads: int
    version: int = 1
    metadata: Dict[str, Any] = field(default_factory=dict)
    decay: tuple = ()        # per-head mantissas m_h (version 2); () = the exact sum
    decay_exp: int = 12
    window: int = 0          # Loihi steps per token W that the retention assumes

    NAME = "CausalSpikeAttention"

    def __post_init__(self) -> None:
        self.d_model, self.n_heads = int(self.d_model), int(self.n_heads)
        if self.d_model <= 0 or self.n_heads <= 0 or self.d_model % self.n_heads:
            raise ValueError(f"{self.NAME}: d_model {self.d_model} must be a positive "
                             f"multiple of n_heads {self.n_heads}")
        self.decay = tuple(int(m) for m in np.asarray(self.decay).reshape(-1))
        if self.decay and self.version < 2:
            self.version = 2
        if self.version not in (1, 2):
            raise ValueError(f"{self.NAME} version {self.version} is newer than this "
                             "snn_compile understands (2); upgrade snn_compile")
        if self.decay and (len(self.decay) != self.n_heads or self.window <= 0
                           or not all(0 < m < 2 ** self.decay_exp for m in self.decay)):
            raise ValueError(f"{self.NAME}: decay {self.decay} needs one mantissa in "
                             f"1..2^{self.decay_exp}-1 per head ({self.n_heads}) and a window "
                             f"> 0 (got {self.window})")
        self.input_type = {"input": np.array([3 * self.d_model])}
        self.output_type = {"output": np.array([self.d_model])}

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def retention(self) -> np.ndarray:
        """lambda_h per Loihi step (ones for the exact sum)."""
        if not self.decay:
            return np.ones(self.n_heads)
        return 1.0 - np.asarray(self.decay, np.float64) / 2 ** self.decay_exp

    def to_nir(self):
        """A standard ``NIRGraph`` carrying this node (see module docstring)."""
        import nir
        d = self.d_model
        meta = {EXTENSION_KEY: self.NAME, EXTENSION_VERSION_KEY: self.version,
                "d_model": d, "n_heads": self.n_heads, "layout": "q|k|v",
                "equation": "A_h[p] = q_h[p] S_h[p], S_h[p] = S_h[p-1] + k_h[p]^T v_h[p]"}
        if self.decay:
            meta.update(decay=np.asarray(self.decay, np.int64), decay_exp=self.decay_exp,
                        window=self.window, equation=(
                            "A_h[g] = q_h[g] S_h[g], S_h[g] = (1 - decay_h / 2^decay_exp) "
                            "S_h[g-1] + k_h[g]^T v_h[g], g = n window + t"))
        return nir.NIRGraph(
            nodes={"input": nir.Input(input_type=np.array([3 * d])),
                   "opaque": nir.Linear(weight=np.zeros((d, 3 * d))),
                   "output": nir.Output(output_type=np.array([d]))},
            edges=[("input", "opaque"), ("opaque", "output")],
            metadata=meta)

    @classmethod
    def from_nir(cls, graph) -> "CausalSpikeAttention":
        m = graph.metadata
        extra = {}
        if "decay" in m:
            extra = dict(decay=tuple(int(x) for x in np.asarray(m["decay"]).reshape(-1)),
                         decay_exp=int(_scalar(m.get("decay_exp", 12))),
                         window=int(_scalar(m.get("window", 0))))
        return cls(d_model=int(_scalar(m["d_model"])), n_heads=int(_scalar(m["n_heads"])),
                   version=int(_scalar(m.get(EXTENSION_VERSION_KEY, 1))), **extra)


EXTENSIONS = {CausalSpikeAttention.NAME: CausalSpikeAttention}


def extension_name(node) -> str | None:
    """The extension a (sub)graph node encodes, or None for a plain NIR node."""
    meta = getattr(node, "metadata", None) or {}
    name = meta.get(EXTENSION_KEY)
    return None if name is None else str(_scalar(name))
