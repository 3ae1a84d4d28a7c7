"""Lower a ``QGraph`` to a Lava process graph.

``lower(q, merge=True)`` (the default) shares processes between populations and
synapses and replaces expensive delayed synapses by delay lines
(``snn_compile.compiler.merge``, docs/lava.md "Merged lowering"); ``merge=False``
is one process per population and per synapse. The mapping (docs/lava.md has the table and the timing diagram):

==========  ==================================================================
input       ``Injector(size)``: the host sends one binary frame per step
lif         ``LIFReset(du, dv, vth, bias, reset_interval=W,
            reset_offset=(depth+1) % W)``; plain ``LIF`` when the population
            keeps its state across tokens
prod        ``ProdNeuron(vth, exp)``: ``(a1 * a2) >> exp`` gated by ``vth``
graded      ``GradedVec(vth)``
accum       ``GradedVec(vth=0)`` + a graded identity ``Dense`` self-loop:
            ``out[g] = a[g] + out[g-1]``; a decaying accum adds a second graded
            self-loop ``Dense(-diag(decay), weight_exp=-decay_exp)`` into the same
            ``a_in``: ``out[g] = a[g] + out[g-1] + ((-decay * out[g-1]) >> decay_exp)``
synapse     ``Dense`` / ``DelayDense(delays=delay)``, or ``Sparse`` /
            ``DelaySparse`` for sparse graded matrices (identities of the memory)
probe       one ``Extractor`` on the ``s_out`` of every non-input population
            (always on the readout)
==========  ==================================================================

Timing (global step ``g``, Lava's ``time_step = g + 1``): a ``Dense`` sends at
``g + 1`` what it received at ``g``; ``DelayDense(delays=k)`` at ``g + 1 + k``;
``Injector`` and ``Extractor`` add no latency. So population ``x`` produces
``(n, t)`` at ``g = n*W + t + depth(x)`` and an ``Extractor`` on it sees that
value in the same step. ``LIFReset`` clears ``u, v`` before integrating when
``time_step % W == reset_offset``, i.e. at ``g = n*W + depth`` for
``reset_offset = (depth + 1) % W``. ``tests/test_lava.py`` checks all of this
against the token-time integer reference.

Lava is imported inside the functions so that the rest of the package works
without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

from snn_compile.compiler import merge as M
from snn_compile.compiler.qgraph import GRADED_MESSAGE_BITS, QGraph, QGraphError
from snn_compile.errors import UserError
from snn_compile.loihi.fixed_point import is_lava_legal

# A *graded* synapse becomes Lava's ``Sparse`` when at most this fraction of its
# weights is non-zero and it has at least SPARSE_MIN_SIZE entries: the fixed-point
# Sparse model then computes ``W.dot(x)`` in O(nnz) (1024x1024 identity: 0.01 ms vs
# 0.7 ms dense). Binary synapses stay ``Dense``: Lava's Sparse model selects the
# active columns of a CSR matrix, ~10x slower than Dense's column gather (measured,
# docs/lava.md).
SPARSE_MAX_DENSITY = 0.1
SPARSE_MIN_SIZE = 1024


@dataclass
class LavaNetwork:
    """The Lava processes of one QGraph and where to read/write them.

    ``neurons[name]`` is the process that produces population ``name``'s output
    (the ``Injector`` for inputs); ``extractors`` holds the probes (the readout
    always has one); ``state`` lists the ``(process, var name)`` pairs that a new
    sequence must clear (see ``lower``).
    """

    qgraph: QGraph
    window: int                                        # W = T + depth(readout)
    injectors: Dict[str, Any]                          # input population -> Injector
    neurons: Dict[str, Any]                            # population -> neuron process
    synapses: Dict[str, Any]                           # synapse name -> Dense/Sparse/...
    loops: Dict[str, Any]                              # accum population -> self-loop Dense
    extractors: Dict[str, Any]                         # probed population -> Extractor
    state: List[tuple] = field(default_factory=list)   # (process, var name) to zero on reset
    decay_loops: Dict[str, Any] = field(default_factory=dict)  # decaying accum -> its decay Dense
    # population -> its slice of the process in ``neurons``/``injectors``/``extractors``
    # (the whole process unless merged)
    slices: Dict[str, slice] = field(default_factory=dict)
    extra: List[Any] = field(default_factory=list)     # merged: delay-line hubs and shifts
    merged: bool = False

    @property
    def processes(self) -> List[Any]:
        """Every Lava process of the network (one OS process each in the simulator)."""
        seen = {}
        for group in (self.neurons, self.synapses, self.loops, self.decay_loops,
                      self.extractors, dict(enumerate(self.extra))):
            for p in group.values():
                seen[id(p)] = p
        return list(seen.values())

    def slice_of(self, name: str) -> slice:
        return self.slices.get(name, slice(0, self.qgraph.pop(name).size))

    def io_groups(self, table: Dict[str, Any]) -> List[tuple]:
        """``[(process, [(population, slice), ...]), ...]`` of ``injectors`` or
        ``extractors``, one entry per distinct process."""
        out: Dict[int, tuple] = {}
        for name, proc in table.items():
            out.setdefault(id(proc), (proc, []))[1].append((name, self.slice_of(name)))
        return list(out.values())

    @property
    def anchor(self) -> Any:
        """The process the runtime is created/run/stopped through (any one works)."""
        return self.extractors[self.qgraph.readout]


_LAVA_MP = "lava.magma.runtime.message_infrastructure.multiprocessing"


def prepare_lava_import() -> None:
    """Let Lava be imported in a process that has already fixed its multiprocessing
    start method.

    Lava 0.10's message infrastructure calls ``multiprocessing.set_start_method('fork')``
    when it is first imported (``lava/magma/runtime/message_infrastructure/
    multiprocessing.py``), which raises ``RuntimeError: context has already been set``
    once anything in the process has fixed the start method, even to 'fork' (the worker
    pool of ``torch.compile`` on the CPU does). That module is imported here, with the
    call a no-op where it asks for the method already in use; another method is refused
    with a ``UserError``, as Lava's runtime needs 'fork'."""
    import multiprocessing as mp
    import sys

    if _LAVA_MP in sys.modules:
        return
    method = mp.get_start_method(allow_none=True)
    if method not in (None, "fork"):
        raise UserError(f"Lava's runtime needs the 'fork' multiprocessing start method, but "
                        f"this Python process already uses {method!r}; run the Lava step in "
                        "a fresh process (e.g. its own snn-compile command)")
    set_method = mp.set_start_method

    def same_method(m, force=False):
        if m != mp.get_start_method(allow_none=True):
            set_method(m, force=force)

    mp.set_start_method = same_method
    try:
        import importlib
        importlib.import_module(_LAVA_MP)
    except ImportError:                  # no Lava here: the caller's import says so
        pass
    finally:
        mp.set_start_method = set_method


def io_model_map() -> dict:
    """Injector/Extractor have no ``fixed_pt`` models: name their Loihi-protocol ones."""
    prepare_lava_import()
    from lava.proc.io.extractor import Extractor, PyLoihiExtractorModel
    from lava.proc.io.injector import Injector, PyLoihiInjectorModel
    return {Injector: PyLoihiInjectorModel, Extractor: PyLoihiExtractorModel}


def _check_lowerable(q: QGraph) -> None:
    q.validate()
    deepest = max(p.depth for p in q.populations.values())
    if deepest > q.depth:
        names = [p.name for p in q.populations.values() if p.depth > q.depth]
        raise QGraphError(f"populations {names} are deeper ({deepest}) than the readout "
                          f"({q.depth}): their outputs would leave the token window W={q.window}")


def _diagonal_loop(diag: np.ndarray, weight_exp: int, name: str, use_sparse: bool):
    """A graded self-loop ``diag(diag)``: ``Sparse`` (O(n) per step) for large
    populations, ``Dense`` otherwise; the same fixed-point arithmetic either way."""
    if use_sparse:
        from scipy.sparse import diags
        from lava.proc.sparse.process import Sparse
        return Sparse(weights=diags(diag).tocsr(), weight_exp=weight_exp,
                      num_message_bits=GRADED_MESSAGE_BITS, name=name)
    from lava.proc.dense.process import Dense
    return Dense(weights=np.diag(diag), weight_exp=weight_exp,
                 num_message_bits=GRADED_MESSAGE_BITS, name=name)


def _synapse_process(s, *, sparse_ok: bool):
    """Dense/DelayDense (or Sparse/DelaySparse for sparse matrices) for one synapse."""
    from lava.proc.dense.process import DelayDense, Dense
    bits = GRADED_MESSAGE_BITS if s.graded else 0
    w = np.asarray(s.weights, dtype=np.int64)
    nnz = int(np.count_nonzero(w))
    if sparse_ok and s.graded and w.size >= SPARSE_MIN_SIZE and nnz <= SPARSE_MAX_DENSITY * w.size and nnz > 0:
        from scipy.sparse import csr_matrix
        from lava.proc.sparse.process import DelaySparse, Sparse
        ws = csr_matrix(w)
        if s.delay == 0:
            return Sparse(weights=ws, weight_exp=s.weight_exp, num_message_bits=bits,
                          name=s.name)
        d = ws.copy()
        d.data[:] = s.delay
        return DelaySparse(weights=ws, delays=d, weight_exp=s.weight_exp,
                           num_message_bits=bits, name=s.name)
    if s.delay == 0:
        return Dense(weights=w, weight_exp=s.weight_exp, num_message_bits=bits, name=s.name)
    # DelayDense: delay 0 already means "next step" (Lava's own synaptic step), so the
    # QGraph's extra delay k maps to delays=k.
    return DelayDense(weights=w, delays=int(s.delay), weight_exp=s.weight_exp,
                      num_message_bits=bits, name=s.name)


def lower(qgraph: QGraph, probe: bool = True, sparse: bool = True, merge: bool = True,
          line_min_work: Optional[float] = None) -> LavaNetwork:
    """Build the Lava processes of ``qgraph`` and connect them (nothing runs yet).

    ``probe`` adds an ``Extractor`` to every non-input population so that the
    run's own spike/message trains can be read back; without it only the
    readout is extracted. ``sparse`` allows ``Sparse`` for sparse matrices.
    ``merge`` (default) shares processes between populations and synapses and turns
    expensive delayed synapses into delay lines (``snn_compile.compiler.merge``;
    ``line_min_work`` overrides its threshold, 0 = every delayed synapse);
    ``merge=False`` is one process per population and per synapse (below).

    ``state`` is what is non-zero at the end of a token window and outlives it:
    the memory (the ``a_buff`` of its loop, and of its decay loop), the synapses fed
    by it, token-shift synapses
    (delays of whole windows), and LIFs without per-token reset. Everything else is zero by then in a streamable graph
    (sources silent for ``depth(readout) - depth(src)`` steps, longer than any
    delay ring) or is cleared by ``LIFReset`` before the next token.
    ``Var.set`` costs per element, so clearing only these keeps ``reset()`` cheap.
    """
    prepare_lava_import()
    try:
        from lava.proc.dense.process import Dense  # noqa: F401  (availability check)
        from lava.proc.graded.process import GradedVec
        from lava.proc.io.extractor import Extractor
        from lava.proc.io.injector import Injector
        from lava.proc.lif.process import LIF, LIFReset
        from lava.proc.prodneuron.process import ProdNeuron
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise UserError(f"the Lava backend needs lava-nc 0.10 ({e}); install it with "
                        "`pip install lava-nc==0.10.0` on Python 3.10") from None

    q = qgraph
    _check_lowerable(q)
    if merge:
        return _lower_merged(q, probe, sparse, line_min_work)
    W = q.window
    buf = max(W, 1) + 1   # every channel holds one whole window of frames
    injectors, neurons, synapses, loops, extractors, state = {}, {}, {}, {}, {}, []
    decay_loops = {}

    for name in q.order():
        p = q.pop(name)
        shape = (p.size,)
        if p.kind == "input":
            proc = Injector(shape=shape, buffer_size=buf, name=name)
            injectors[name] = proc
        elif p.kind == "lif":
            bias = np.asarray(p.bias_mant, dtype=np.int64)       # one value or one per neuron
            common = dict(shape=shape, du=p.du, dv=p.dv, vth=p.vth,
                          bias_mant=bias if bias.ndim else int(bias), bias_exp=p.bias_exp,
                          name=name)
            if p.reset_each_token:
                proc = LIFReset(reset_interval=W, reset_offset=(p.depth + 1) % W, **common)
            else:
                proc = LIF(**common)
                state += [(proc, "u"), (proc, "v")]
        elif p.kind == "prod":
            proc = ProdNeuron(shape=shape, vth=p.vth, exp=p.exp)   # takes no name
        elif p.kind == "graded":
            proc = GradedVec(shape=shape, vth=p.vth)
        elif p.kind == "accum":
            proc = GradedVec(shape=shape, vth=0)
            loop = _diagonal_loop(np.ones(p.size, dtype=np.int64), 0, name + ".loop",
                                  sparse and p.size >= SPARSE_MIN_SIZE)
            proc.s_out.connect(loop.s_in)
            loop.a_out.connect(proc.a_in)
            loops[name] = loop
            state.append((loop, "a_buff"))
            if p.decaying:
                # weights.dot(s_in) in int32, then right_shift by decay_exp (floor): the
                # inhibitory matrix -diag(decay) (-255..0) is Lava-legal as it stands
                dloop = _diagonal_loop(-np.asarray(p.decay, dtype=np.int64),
                                       -int(p.decay_exp), name + ".decay",
                                       sparse and p.size >= SPARSE_MIN_SIZE)
                proc.s_out.connect(dloop.s_in)
                dloop.a_out.connect(proc.a_in)
                decay_loops[name] = dloop
                state.append((dloop, "a_buff"))
        else:  # validate() already refused unknown kinds
            raise QGraphError(f"population {name}: cannot lower kind {p.kind!r}")
        neurons[name] = proc

    for s in q.synapses:
        proc = _synapse_process(s, sparse_ok=sparse)
        src = neurons[s.src]
        (src.out_port if s.src in injectors else src.s_out).connect(proc.s_in)
        proc.a_out.connect(getattr(neurons[s.dst], s.port))
        synapses[s.name] = proc
        if q.pop(s.src).kind == "accum" or s.token_lag:
            # the memory's readers, and token-shift synapses (their delay ring holds
            # the last windows' spikes)
            state.append((proc, "a_buff"))

    for name, p in q.populations.items():
        if p.kind == "input" or not (probe or name == q.readout):
            continue
        ex = Extractor(shape=(p.size,), buffer_size=buf, name=name + ".probe")
        neurons[name].s_out.connect(ex.in_port)
        extractors[name] = ex

    if q.single_window:
        # one sample per window: a sample leaves spikes in flight (recurrent loops, delays,
        # biased neurons firing in the drain steps); the next one starts from rest
        state = [(proc, "a_buff") for proc in synapses.values()] + [
            (neurons[n], v) for n, p in q.populations.items() if p.kind == "lif"
            for v in ("u", "v")] + [(proc, "a_buff") for proc in
                                    list(loops.values()) + list(decay_loops.values())]
    return LavaNetwork(q, W, injectors, neurons, synapses, loops, extractors, state,
                       decay_loops)


def _lower_merged(q: QGraph, probe: bool, sparse: bool,
                  line_min_work: Optional[float]) -> LavaNetwork:
    """``lower(merge=True)``: the processes of ``merge.plan(q)``.

    ``state`` (what ``reset()`` zeroes) follows the unmerged rule per connection and is
    then taken per merged process: the ``a_buff`` of every process that holds an accum
    loop, a reader of an accum, a token-shift synapse or a part of a delay line that
    carries one, and ``u, v`` of LIFs without per-token reset.
    """
    from lava.proc.dense.process import DelayDense, Dense
    from lava.proc.graded.process import GradedVec
    from lava.proc.io.extractor import Extractor
    from lava.proc.io.injector import Injector
    from lava.proc.lif.process import LIF, LIFReset
    from lava.proc.prodneuron.process import ProdNeuron
    from lava.proc.sparse.process import DelaySparse, Sparse

    W = q.window
    buf = max(W, 1) + 1
    pl = M.plan(q, M.LINE_MIN_WORK if line_min_work is None else line_min_work)
    procs: Dict[str, Any] = {}
    state: List[tuple] = []
    for g in pl.groups.values():
        shape = (g.size,)
        if g.kind == "input":
            proc = Injector(shape=shape, buffer_size=buf, name=g.name)
        elif g.kind in ("lif", "lifreset"):
            bias = np.concatenate(g.bias_mant)
            bias = int(bias[0]) if (bias == bias[0]).all() else bias
            kw = dict(shape=shape, du=g.params["du"], dv=g.params["dv"],
                      vth=g.params["vth"], bias_mant=bias, bias_exp=g.params["bias_exp"],
                      name=g.name)
            if g.kind == "lifreset":
                proc = LIFReset(reset_interval=W, reset_offset=g.params["reset_offset"], **kw)
            else:
                proc = LIF(**kw)
                state += [(proc, "u"), (proc, "v")]
        elif g.kind == "prod":
            proc = ProdNeuron(shape=shape, vth=g.params["vth"], exp=g.params["exp"])
        else:
            proc = GradedVec(shape=shape, vth=g.params["vth"])
        procs[g.name] = proc

    def out_port(gname):
        p = procs[gname]
        return p.out_port if pl.groups[gname].kind == "input" else p.s_out

    conn: Dict[int, Any] = {}
    for b in pl.buckets:
        rows, cols = pl.groups[b.dst].size, pl.groups[b.src].size
        m = b.coo(rows, cols).tocsr()
        m.sum_duplicates()
        zeros = m.nnz < rows * cols
        vals = np.append(m.data, 0) if zeros else m.data
        if not is_lava_legal(vals.astype(np.int64)):
            raise QGraphError(f"merged matrix {b.name} would be changed by Lava's weight "
                              "rules (please report this)")
        bits = GRADED_MESSAGE_BITS if b.graded else 0
        kw = dict(weight_exp=b.weight_exp, num_message_bits=bits, name=b.name)
        if sparse and M.use_sparse(b, rows, cols, m.nnz):
            if b.delay == 0:
                proc = Sparse(weights=m, **kw)
            else:
                d = m.copy()
                d.data[:] = b.delay
                proc = DelaySparse(weights=m, delays=d, **kw)
        else:
            w = m.toarray().astype(np.int64)
            proc = (Dense(weights=w, **kw) if b.delay == 0
                    else DelayDense(weights=w, delays=int(b.delay), **kw))
        out_port(b.src).connect(proc.s_in)
        proc.a_out.connect(getattr(procs[b.dst], b.port))
        conn[id(b)] = proc
        if b.state:
            state.append((proc, "a_buff"))

    injectors, neurons, slices, extractors = {}, {}, {}, {}
    for name in q.order():
        gname, a, z = pl.slot[name]
        neurons[name] = procs[gname]
        slices[name] = slice(a, z)
        if q.pop(name).kind == "input":
            injectors[name] = procs[gname]
    synapses = {s: conn[id(b)] for s, b in pl.exits.items()}
    loops = {n: conn[id(b)] for n, b in pl.loops.items()}
    decay_loops = {n: conn[id(b)] for n, b in pl.decay_loops.items()}
    ex_of: Dict[str, Any] = {}
    for name, p in q.populations.items():
        if p.kind == "input" or not (probe or name == q.readout):
            continue
        gname = pl.slot[name][0]
        if gname not in ex_of:
            ex_of[gname] = Extractor(shape=(pl.groups[gname].size,), buffer_size=buf,
                                     name=gname + ".probe")
            out_port(gname).connect(ex_of[gname].in_port)
        extractors[name] = ex_of[gname]
    used = {id(p) for d in (neurons, synapses, loops, decay_loops) for p in d.values()}
    extra = [p for p in list(procs.values()) + list(conn.values()) if id(p) not in used]

    if q.single_window:
        state = [(p, "a_buff") for p in conn.values()] + [
            (procs[g.name], v) for g in pl.groups.values() if g.kind in ("lif", "lifreset")
            for v in ("u", "v")]
    return LavaNetwork(q, W, injectors, neurons, synapses, loops, extractors, state,
                       decay_loops, slices, extra, merged=True)
