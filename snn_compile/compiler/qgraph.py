"""The quantized graph: what the compiler hands to every integer backend.

A ``QGraph`` is a set of neuron *populations* (one Lava process each) joined by
*synapses* (one Lava ``Dense``/``DelayDense`` each), with every parameter
already in Loihi 2 fixed point. The integer reference, the emulator, the Lava
lowering, the resource report and the energy counters all read this one object;
``docs/semantics.md`` gives the equations.

Timing: every synapse adds one step of latency plus its ``delay``; the compiler
assigns depths so that ``depth[dst] + token_lag * W + step_lag == depth[src] + 1 +
delay`` holds for every synapse (``validate`` checks it; ``W`` is the token window),
which makes the pipelined (global-time) run equal the token-time run. A synapse with
``token_lag = j`` (the token shift) carries its source's output of token ``n - j``
into token ``n``: in hardware, a delay of ``j`` whole windows. One with ``step_lag =
k`` carries the output of step ``t - k`` into step ``t`` (a NIR Delay, or recurrence:
a LIF's self-loop with ``k = 1`` is NIR's one-step recurrent edge).
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar, Dict, List, Optional, Tuple, Union

import numpy as np

from snn_compile.loihi.limits import (DECAY_MAX, DELAY_MAX, GRADED_MESSAGE_BITS,  # noqa: F401
                                      INHIBITORY_MANTISSA_MAX, STATE_MAX, VTH_MAX, WEIGHT_EXP_RANGE)
from snn_compile.loihi.fixed_point import ELEMENTWISE, STATEFUL, lava_legal_weights
from snn_compile.models.config import DECAY_EXP
from snn_compile.errors import atomic_path

# accum decay mantissas: the -diag(decay) loop is an all-inhibitory 8-bit Dense
# (INHIBITORY_MANTISSA_MAX); the retention is 1 - decay / 2^DECAY_EXP
FILE_VERSION = 5          # 5: each population holds its kind's fields only; 4: Synapse.step_lag,
                          # per-neuron bias_mant; 3: Population.decay / decay_exp;
                          # 2: Synapse.token_lag


class QGraphError(ValueError):
    """A quantized graph that breaks a fixed-point or timing rule."""


@dataclass
class Population:
    """A group of identical neurons, executed as one Lava process: the fields every kind
    has. One subclass per kind holds its parameters and states its equation (the integer
    update itself is ``snn_compile.loihi.fixed_point``'s, the Lava process
    ``compiler.lower_lava``'s).

    Global step ``g`` of a population at depth d is token time ``(n, t)`` for
    ``g = n*W + t + d``; between ``(n, T-1)`` and ``(n+1, 0)`` lie ``W - T``
    input-free steps (docs/semantics.md).
    """

    name: str
    size: int
    depth: int = 0
    layer: str = ""              # for reports: "emb", "block0", ..., "head"
    role: str = ""               # for reports: "qkv", "kv_product", "memory", ...

    kind: ClassVar[str] = ""
    ports: ClassVar[Tuple[str, ...]] = ()
    graded: ClassVar[bool] = False        # sends integer payloads (24-bit), not 1-bit spikes

    @property
    def decaying(self) -> bool:
        """A memory whose value decays (only an ``Accum`` can)."""
        return False

    def errors(self) -> List[str]:
        """What breaks a fixed-point range (empty list: nothing)."""
        return [f"population {self.name}: size must be > 0"] if self.size <= 0 else []


@dataclass
class Input(Population):
    """Binary frame injected by the host at each step (``Injector``)."""

    kind: ClassVar[str] = "input"


@dataclass
class Lif(Population):
    """u = wrap24(decay(u, du+1) + (a << 6)); v = clip24(decay(v, dv) + u + bias);
    s = v > (vth << 6); v[s] = 0.        (PyLifResetModelBitAcc)

    ``reset_each_token``: u, v cleared at every token start (``LIFReset``)."""

    du: int = DECAY_MAX
    dv: int = 0
    vth: int = 0
    bias_mant: Union[int, List[int]] = 0   # one value, or one per neuron (13-bit)
    bias_exp: int = 0
    reset_each_token: bool = True

    kind: ClassVar[str] = "lif"
    ports: ClassVar[Tuple[str, ...]] = ("a_in",)

    def bias(self) -> np.ndarray:
        """Per-neuron bias added to ``v`` at every step, ``bias_mant << bias_exp`` (int64)."""
        m = np.broadcast_to(np.asarray(self.bias_mant, np.int64), (self.size,))
        return m << self.bias_exp if self.bias_exp >= 0 else m >> -self.bias_exp

    @property
    def has_bias(self) -> bool:
        return bool(np.any(np.asarray(self.bias_mant) != 0))

    def errors(self) -> List[str]:
        errs = super().errors()
        if not (0 <= self.du <= DECAY_MAX and 0 <= self.dv <= DECAY_MAX):
            errs.append(f"population {self.name}: du/dv must be in 0..{DECAY_MAX}")
        if not (0 <= self.vth <= VTH_MAX):
            errs.append(f"population {self.name}: vth {self.vth} outside 0..{VTH_MAX}")
        bm = np.asarray(self.bias_mant)
        if bm.ndim > 1 or (bm.ndim == 1 and bm.size != self.size):
            errs.append(f"population {self.name}: {bm.size} bias values for {self.size} "
                        "neurons (give one, or one per neuron)")
        elif not (bm.dtype.kind in "iu" and np.all((-4096 <= bm) & (bm <= 4095))
                  and 0 <= self.bias_exp <= 7):
            errs.append(f"population {self.name}: bias outside 13-bit mantissa / 3-bit exp")
        return errs


@dataclass
class Prod(Population):
    """w = (a1 * a2) >> exp; out = w * (|w| > vth)                  (ProdNeuron)"""

    vth: int = 0
    exp: int = 0

    kind: ClassVar[str] = "prod"
    ports: ClassVar[Tuple[str, ...]] = ("a_in1", "a_in2")
    graded: ClassVar[bool] = True

    def errors(self) -> List[str]:
        errs = super().errors()
        if self.exp < 0:
            errs.append(f"population {self.name}: ProdNeuron exp {self.exp} must be >= 0 "
                        "(it is a right shift)")
        return errs


@dataclass
class Graded(Population):
    """out = a * (|a| > vth)                                          (GradedVec)"""

    vth: int = 0

    kind: ClassVar[str] = "graded"
    ports: ClassVar[Tuple[str, ...]] = ("a_in",)
    graded: ClassVar[bool] = True


@dataclass
class Accum(Population):
    """out[g] = out[g-1] + ((-decay * out[g-1]) >> decay_exp) + a[g]

    ``GradedVec(vth=0)`` with a graded ``Dense`` self-loop of weight 1 and, when any
    decay > 0, a second graded self-loop ``Dense(-diag(decay), weight_exp=-decay_exp)``;
    ``>>`` is arithmetic (floor): per step the memory keeps
    ``lambda = 1 - decay / 2^decay_exp`` of its value, the loss rounded up in magnitude
    for positive values. ``decay`` empty or all zero: ``out[g] = out[g-1] + a[g]``.
    Between tokens the ``W - T`` input-free steps only decay the memory."""

    decay: List[int] = field(default_factory=list)  # per-neuron mantissa 0..255
    decay_exp: int = DECAY_EXP                 # lambda = 1 - decay / 2^exp

    kind: ClassVar[str] = "accum"
    ports: ClassVar[Tuple[str, ...]] = ("a_in",)
    graded: ClassVar[bool] = True

    @property
    def decaying(self) -> bool:
        return any(self.decay)

    def errors(self) -> List[str]:
        return super().errors() + _decay_errors(self)


POPULATION_TYPES: Dict[str, type] = {c.kind: c for c in (Input, Lif, Prod, Graded, Accum)}
POP_KINDS = tuple(POPULATION_TYPES)
PORTS = {k: c.ports for k, c in POPULATION_TYPES.items()}


def graded_kinds() -> Tuple[str, ...]:
    """The kinds whose outputs are integer payloads (24-bit graded messages); the others
    send 1-bit spikes (``input``: whatever frames the host injects)."""
    return tuple(k for k, c in POPULATION_TYPES.items() if c.graded)


def spiking_kinds() -> Tuple[str, ...]:
    """The neuron kinds that send 1-bit spikes (``lif``)."""
    return tuple(k for k, c in POPULATION_TYPES.items() if not c.graded and k != "input")


def population(name: str, kind: str, size: int, **params) -> Population:
    """The population of ``kind`` (a name of ``POP_KINDS``) with ``params`` (its fields)."""
    cls = POPULATION_TYPES.get(kind)
    if cls is None:
        raise QGraphError(f"population {name!r}: unknown kind {kind!r} (kinds: "
                          f"{', '.join(POP_KINDS)})")
    bad = sorted(set(params) - {f.name for f in fields(cls)})
    if bad:
        raise QGraphError(f"population {name!r}: a {kind} population has no "
                          f"{', '.join(bad)}")
    return cls(name, size, **params)


def population_from_dict(d: dict) -> Population:
    """A population from its saved fields (``kind`` names the class). Files before
    version 5 hold every kind's fields: those of other kinds are dropped (no executor read
    them), except a non-zero ``decay``, which only an accum can hold."""
    d = dict(d)
    kind, name, size = d.pop("kind", None), d.pop("name", None), d.pop("size", None)
    own = {f.name for f in fields(POPULATION_TYPES[kind])} if kind in POPULATION_TYPES else set()
    known = {f.name for c in POPULATION_TYPES.values() for f in fields(c)}
    for k, v in d.items():
        if k not in known:
            raise QGraphError(f"population {name!r}: unknown field {k!r}")
        if k == "decay" and k not in own and any(v):
            raise QGraphError(f"population {name}: decay is defined for accum "
                              f"populations only, not {kind}")
    if "decay" in own:
        d["decay"] = [int(x) for x in d.get("decay", [])]
    return population(name, kind, size, **{k: v for k, v in d.items() if k in own})


@dataclass
class Synapse:
    """Dense connection ``src -> dst.port``: ``a = shift(W @ x, weight_exp)``.

    ``weights`` has shape (dst.size, src.size) and holds the values Lava's Dense
    uses after its own clip/truncate (so that pass is a no-op). ``graded`` means
    the source sends integer payloads (num_message_bits = 24) rather than 1-bit
    spikes. ``delay`` adds steps beyond the synapse's own one. ``token_lag``: the
    destination at ``(n, t)`` receives the source's output of ``(n - token_lag, t)``
    (zero before the first token). ``step_lag``: it receives the output of ``(n, t -
    step_lag)`` (zero for ``t < step_lag``; single-window graphs only).
    """

    name: str
    src: str
    dst: str
    weights: np.ndarray
    weight_exp: int = 0
    port: str = "a_in"
    graded: bool = False
    delay: int = 0
    token_lag: int = 0
    step_lag: int = 0


@dataclass
class QGraph:
    """Populations + synapses + the token-time framing of one deployable model."""

    populations: Dict[str, Population]
    synapses: List[Synapse]
    steps_per_token: int                 # T
    inputs: List[str]                    # input population names, in frame order
    readout: str                         # graded population whose per-step output is summed
    logit_scale: float = 1.0             # float logits = logit_scale * sum_t readout
    context: int = 0                     # N_ctx; 0 = unbounded
    metadata: dict = field(default_factory=dict)

    # ----------------------------------------------------------------- queries
    def pop(self, name: str) -> Population:
        try:
            return self.populations[name]
        except KeyError:
            raise QGraphError(f"no population named {name!r}") from None

    def incoming(self, name: str) -> List[Synapse]:
        return [s for s in self.synapses if s.dst == name]

    def outgoing(self, name: str) -> List[Synapse]:
        return [s for s in self.synapses if s.src == name]

    @property
    def depth(self) -> int:
        """Depth of the readout: the pipeline latency in steps."""
        return self.pop(self.readout).depth

    @property
    def single_window(self) -> bool:
        """Run one window at a time from rest (a foreign graph: one sample is one window of
        ``steps_per_token`` steps; or a context of one token): every backend clears the
        whole state between windows, so nothing a window leaves behind reaches the next
        and the streaming conditions (``check_streamable``) do not apply."""
        return self.context == 1 or self.metadata.get("model") == "foreign"

    @property
    def window(self) -> int:
        """Global steps per token: T plus the pipeline latency."""
        return self.steps_per_token + self.depth

    def order(self) -> List[str]:
        """Populations sorted by depth (a valid evaluation order in token time)."""
        return sorted(self.populations, key=lambda n: (self.populations[n].depth, n))

    # -------------------------------------------------------------- validation
    def validate(self) -> "QGraph":
        """Check every fixed-point range and the timing rule; raise QGraphError."""
        errs: List[str] = []
        for p in self.populations.values():
            if not isinstance(p, Population) or type(p) not in POPULATION_TYPES.values():
                errs.append(f"population {getattr(p, 'name', p)!r}: not one of the kinds "
                            f"{', '.join(POP_KINDS)}")
                continue
            errs += p.errors()
        for name in self.inputs:
            if name not in self.populations or self.populations[name].kind != "input":
                errs.append(f"input {name!r} is not an input population")
        if self.readout not in self.populations:
            errs.append(f"readout {self.readout!r} is not a population")
        seen = set()
        for s in self.synapses:
            if s.name in seen:
                errs.append(f"synapse name {s.name!r} used twice")
            seen.add(s.name)
            if s.src not in self.populations or s.dst not in self.populations:
                errs.append(f"synapse {s.name}: dangling edge {s.src} -> {s.dst}")
                continue
            src, dst = self.populations[s.src], self.populations[s.dst]
            if s.port not in PORTS[dst.kind]:
                errs.append(f"synapse {s.name}: {dst.kind} population {dst.name} has no port {s.port!r}")
            if s.weights.shape != (dst.size, src.size):
                errs.append(f"synapse {s.name}: weights {s.weights.shape} != ({dst.size}, {src.size})")
            if not np.issubdtype(s.weights.dtype, np.integer):
                errs.append(f"synapse {s.name}: weights must be integers")
            elif not np.array_equal(lava_legal_weights(s.weights), s.weights):
                errs.append(f"synapse {s.name}: weights are not Lava-legal 8-bit values "
                            "(mixed sign needs even values in [-256, 254])")
            if not (WEIGHT_EXP_RANGE[0] <= s.weight_exp <= WEIGHT_EXP_RANGE[1]):
                errs.append(f"synapse {s.name}: weight_exp {s.weight_exp} outside {WEIGHT_EXP_RANGE}")
            if not (0 <= s.delay <= DELAY_MAX):
                errs.append(f"synapse {s.name}: delay {s.delay} outside 0..{DELAY_MAX}")
            if s.graded != src.graded:
                errs.append(f"synapse {s.name}: graded={s.graded} but source kind is {src.kind}")
            if s.token_lag < 0 or s.step_lag < 0:
                errs.append(f"synapse {s.name}: a negative token or step lag reads the future")
            elif s.step_lag and not self.single_window:
                errs.append(f"synapse {s.name}: step lags (delays, recurrence) are lowered for "
                            "single-window graphs only")
            elif s.src == s.dst and not s.step_lag:
                errs.append(f"synapse {s.name}: a self-loop needs a step lag of at least 1")
            elif (self.readout in self.populations
                  and dst.depth + s.token_lag * self.window + s.step_lag
                  != src.depth + 1 + s.delay):
                errs.append(f"synapse {s.name}: depth {src.depth} -> {dst.depth} with delay "
                            f"{s.delay}, token lag {s.token_lag} and step lag {s.step_lag} breaks "
                            "depth[dst] + token_lag * W + step_lag = depth[src] + 1 + delay "
                            f"(W = {self.window})")
        if errs:
            raise QGraphError("invalid quantized graph:\n  " + "\n  ".join(errs))
        return self

    # ---------------------------------------------------------------------- io
    def save(self, path: str) -> None:
        """Write atomically as a zip of ``graph.json`` + one ``.npy`` per synapse.

        Version 5 writes each population's own fields and its ``kind``; older files
        (every kind's fields) load as long as the fields of other kinds are at their
        defaults; version 1/2 files (without ``decay``) load as non-decaying accums."""
        header = {
            "format": "snn_compile.qgraph", "version": FILE_VERSION,
            "populations": [_population_dict(p) for p in self.populations.values()],
            "synapses": [{k: v for k, v in asdict(s).items() if k != "weights"}
                         for s in self.synapses],
            "steps_per_token": self.steps_per_token, "inputs": self.inputs,
            "readout": self.readout, "logit_scale": self.logit_scale,
            "context": self.context, "metadata": self.metadata,
        }
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
                zf.writestr("graph.json", json.dumps(header, indent=1))
                for i, s in enumerate(self.synapses):
                    buf = io.BytesIO()
                    np.save(buf, s.weights, allow_pickle=False)
                    zf.writestr(f"w{i}.npy", buf.getvalue())
            QGraph.load(tmp)          # read back in the temporary file, before the rename

    @classmethod
    def load(cls, path: str) -> "QGraph":
        try:
            with zipfile.ZipFile(path) as zf:
                h = json.loads(zf.read("graph.json"))
                if not isinstance(h, dict) or h.get("format") != "snn_compile.qgraph":
                    raise QGraphError(f"{path}: not a quantized graph file; make one with "
                                      "`snn-compile compile MODEL -o FILE.qgraph`")
                if int(h.get("version", 1)) > FILE_VERSION:
                    raise QGraphError(f"{path}: quantized graph version {h.get('version')} is "
                                      f"newer than this snn_compile reads ({FILE_VERSION}); "
                                      "update snn_compile or recompile the model")
                syns = []
                for i, sd in enumerate(h["synapses"]):
                    w = np.load(io.BytesIO(zf.read(f"w{i}.npy")), allow_pickle=False)
                    syns.append(Synapse(weights=w, **sd))
            pops = {p["name"]: population_from_dict(p) for p in h["populations"]}
            q = cls(pops, syns, h["steps_per_token"], h["inputs"], h["readout"],
                    h["logit_scale"], h["context"], h.get("metadata", {}))
        except (QGraphError, FileNotFoundError):
            raise
        except IsADirectoryError:
            raise QGraphError(f"{path} is a folder, not a compiled graph file") from None
        except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError,
                ValueError, TypeError, EOFError, OSError, zlib_error()) as e:
            raise QGraphError(f"{path}: corrupt or truncated quantized graph file "
                              f"({type(e).__name__}: {str(e)[:120]}); compile it again with "
                              "`snn-compile compile MODEL -o FILE.qgraph`") from None
        return q.validate()


def _population_dict(p: Population) -> dict:
    d = {"kind": p.kind, **asdict(p)}
    if "decay" in d:
        d["decay"] = [int(x) for x in p.decay]
    if "bias_mant" in d:
        d["bias_mant"] = np.asarray(p.bias_mant, np.int64).tolist()
    return d


def check_streamable(qgraph: "QGraph") -> None:
    """Raise ``QGraphError`` unless global time provably equals token time.

    Outside its token's T steps every population must output zero (so nothing
    leaks into the next window): LIFs need ``du = 4095`` (no synaptic current
    left over) and zero bias; a population is silent when its inputs are,
    except ``accum`` (it holds the memory) and a stateful kind that is not ``quiet``
    (``fixed_point.STATEFUL``), which must integrate a silent input and be read through a
    gated product, and a stateless kind that needs every port (``fixed_point.ELEMENTWISE``:
    ``prod``), which is silent when either port is. A ``single_window`` graph
    (one sample per reset, foreign graphs) has no next token to leak into: nothing to
    check (its biases before the window: ``quantize_foreign._pre_window_biases``).
    """
    if qgraph.single_window:
        return
    errs = []
    silent: Dict[str, bool] = {}
    for name in qgraph.order():
        p = qgraph.pop(name)
        if p.kind == "input":
            silent[name] = True
            continue
        rule = ELEMENTWISE.get(p.kind)
        quiet = p.kind in STATEFUL and STATEFUL[p.kind].quiet    # zero ports, zero output
        by_port: Dict[str, bool] = {}
        for s in qgraph.incoming(name):
            by_port[s.port] = by_port.get(s.port, True) and silent[s.src]
        if p.kind == "lif":
            if p.du != DECAY_MAX:
                errs.append(f"{name}: du={p.du} leaves synaptic current after the token; need "
                            f"{DECAY_MAX}")
            if p.has_bias:
                errs.append(f"{name}: bias {p.bias_mant} makes it fire between tokens; need 0")
            silent[name] = all(by_port.values())
        elif rule is not None:       # a stateless kind: silent when its (or one) port is
            silent[name] = any(by_port.values()) if rule.needs_all_ports else \
                all(by_port.values())
        elif quiet:
            silent[name] = all(by_port.values())
        else:                        # accum, or a stateful kind that holds its output
            silent[name] = False
            if not all(by_port.values()):
                errs.append(f"{name}: {p.kind} integrates an input that is not silent between "
                            "tokens")
        if (p.kind == "lif" or (rule is not None and not rule.needs_all_ports) or quiet) \
                and not silent[name]:
            errs.append(f"{name}: fed by a population that is active between tokens "
                        "(an accum must be gated by a prod)")
    if errs:
        raise QGraphError("the pipelined (global-time) run would differ from token time:\n  "
                          + "\n  ".join(errs))


def zlib_error():
    import zlib
    return zlib.error


def _decay_errors(p: "Accum") -> List[str]:
    """What is wrong with a memory's ``decay`` / ``decay_exp`` (empty list: nothing)."""
    d = list(p.decay)
    if not d:
        return []
    errs = []
    if len(d) != p.size:
        errs.append(f"population {p.name}: {len(d)} decay values for {p.size} neurons "
                    "(give one per neuron, or none)")
    if not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in d):
        errs.append(f"population {p.name}: decay values must be integers")
    elif not all(0 <= x <= INHIBITORY_MANTISSA_MAX for x in d):
        errs.append(f"population {p.name}: decay values outside 0..{INHIBITORY_MANTISSA_MAX}")
    # the loop's weight_exp is -decay_exp; decay <= 2^decay_exp keeps 0 <= lambda <= 1
    if not (isinstance(p.decay_exp, (int, np.integer)) and 0 <= p.decay_exp <= -WEIGHT_EXP_RANGE[0]):
        errs.append(f"population {p.name}: decay_exp {p.decay_exp} outside "
                    f"0..{-WEIGHT_EXP_RANGE[0]}")
    elif not errs and max(d) > 2 ** p.decay_exp:
        errs.append(f"population {p.name}: decay {max(d)} > 2^decay_exp = {2 ** p.decay_exp} "
                    "would make the retention 1 - decay / 2^decay_exp negative")
    return errs


def accum_state_bound(pop: Population, in_bound: Optional[int],
                      steps: Optional[int]) -> Optional[int]:
    """A bound of ``|out|`` of an accum whose input obeys ``|a| <= in_bound`` at each of at
    most ``steps`` input steps (None: unknown), assuming no int32 wrap (the caller checks
    the result against 2^31; below it, no wrap happens, by induction).

    A neuron without decay integrates: ``|out| <= in_bound * steps``. With decay
    ``d > 0`` (``0 <= lambda = 1 - d / 2^e <= 1``) the decay never grows ``|out|``
    (``out + ((-d out) >> e)`` lies between 0 and ``out``) and loses at least
    ``|out| d / 2^e - 1`` per step (floor rounds toward -inf), so
    ``|out| <= B = ceil((in_bound + 1) 2^e / d)`` holds at every step by induction:
    ``|out'| <= B lambda + 1 + in_bound <= B``. The population's bound is the largest
    over its neurons (each also at most ``in_bound * steps``)."""
    if in_bound is None:
        return None
    total = None if steps is None else in_bound * steps
    d = [int(x) for x in pop.decay] if pop.decaying else []
    if not d or min(d) == 0:               # some neuron integrates without loss
        return total
    worst = -(-(in_bound + 1) * 2 ** pop.decay_exp // min(d))
    return worst if total is None else min(worst, total)


def accum_decay_product_bound(pop: Population, in_bound: Optional[int],
                              steps: Optional[int]) -> Optional[int]:
    """A bound of the decay loop's int32 product ``|decay_i * out_i|`` of a memory, under
    the assumptions of ``accum_state_bound``, neuron by neuron: neuron i keeps
    ``|out_i| <= B_i = ceil((in_bound + 1) 2^e / d_i)`` (and ``<= in_bound * steps``), so
    ``d_i |out_i| <= d_i min(B_i, in_bound * steps)``, about ``(in_bound + 1) 2^e`` for
    every decaying neuron; the largest mantissa times the population's largest ``|out|``
    would overstate it by up to ``max d / min d``. 0 without decay, None if unknown."""
    if not pop.decaying:
        return 0
    if in_bound is None:
        return None
    total = None if steps is None else in_bound * steps
    worst = 0
    for d in {int(x) for x in pop.decay if int(x) > 0}:
        b = -(-(in_bound + 1) * 2 ** pop.decay_exp // d)
        worst = max(worst, d * (b if total is None else min(b, total)))
    return worst


def assign_depths(pops: Dict[str, Population], synapses: List[Synapse],
                  inputs: List[str], steps_per_token: Optional[int] = None,
                  readout: Optional[str] = None) -> None:
    """Give every population its longest-path depth and set each synapse's delay.

    Depth of inputs is 0; ``depth[dst] = max over incoming (depth[src] + 1)``
    (token-shift synapses come from an earlier window and self-loops from an earlier
    step: they do not count; a step-lagged synapse between two populations counts like
    any other, so its delay is at least its lag); then ``delay = depth[dst] - depth[src]
    - 1`` pads the shorter paths, plus ``token_lag * W`` (``W = steps_per_token +
    depth[readout]``) for a token-shift synapse and ``step_lag`` for a delayed or
    recurrent one. The graph without token-shift synapses and self-loops must be acyclic.
    """
    depth: Dict[str, Optional[int]] = {n: None for n in pops}
    for n in inputs:
        depth[n] = 0
    incoming: Dict[str, List[Synapse]] = {n: [] for n in pops}
    for s in synapses:
        if not s.token_lag and s.src != s.dst:
            incoming[s.dst].append(s)
    remaining = [n for n in pops if depth[n] is None]
    while remaining:
        progressed = False
        for n in list(remaining):
            ins = incoming[n]
            if not ins:
                raise QGraphError(f"population {n} has no input and is not an input population")
            if all(depth[s.src] is not None for s in ins):
                depth[n] = max(depth[s.src] for s in ins) + 1
                remaining.remove(n)
                progressed = True
        if not progressed:
            raise QGraphError("cycle among populations " + ", ".join(remaining)
                              + " (only the attention memory may feed back, as kind 'accum')")
    for n, p in pops.items():
        p.depth = int(depth[n])
    lagged = [s.name for s in synapses if s.token_lag]
    if lagged and (steps_per_token is None or readout is None):
        raise QGraphError(f"synapses {lagged} have a token lag: their delay needs the token "
                          "window (give steps_per_token and readout)")
    W = steps_per_token + pops[readout].depth if lagged else 0
    late = []
    for s in synapses:
        s.delay = pops[s.dst].depth - pops[s.src].depth - 1 + s.token_lag * W + s.step_lag
        if s.delay < 0:
            late.append(f"{s.src} (depth {pops[s.src].depth}) -> {s.dst} (depth "
                        f"{pops[s.dst].depth}) {s.step_lag} step{'s' if s.step_lag > 1 else ''} "
                        "later")
    if late:
        raise QGraphError("a loop or delay that Loihi 2 cannot time: " + "; ".join(late)
                          + " — every synaptic hop takes a step, so a path through k "
                          "populations arrives k steps later at the earliest; give the graph "
                          "longer Delay nodes, or keep recurrence within one neuron node")
