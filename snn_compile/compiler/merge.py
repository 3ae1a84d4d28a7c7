"""Plan a Lava lowering with few processes: merged populations, merged synapses, delay lines.

Lava's CPU runtime runs one OS process per Lava process and synchronises all of them at
every step (~0.25 ms per process and step on two cores), and its delayed synapses
(``DelayDense``/``DelaySparse``) rebuild a ``(delay + 1) x rows x cols`` matrix at every
step. This module turns a ``QGraph`` into a ``MergePlan`` (pure numpy, no Lava import);
``lower_lava.lower(..., merge=True)`` builds the processes from it.

Populations
    Populations that Lava would build as the same process with the same per-process
    parameters share one process, concatenated: inputs -> one ``Injector``; ``graded`` and
    ``accum`` -> ``GradedVec(vth)`` per ``vth``; ``prod`` -> ``ProdNeuron`` per ``(vth,
    exp)``; ``lif`` -> ``LIFReset``/``LIF`` per ``(du, dv, vth, bias_exp, reset_offset)``
    (``bias_mant`` is per neuron in Lava). ``MergePlan.slot[name]`` says which process and
    which slice of it produces population ``name``.

Synapses
    Every synapse (and every accum self-loop and decay loop) becomes a *connection* from
    one slice of a group to one slice of a group. Connections with the same source group,
    destination group and port, ``weight_exp``, delay and message bits share one
    ``Dense``/``Sparse`` whose matrix holds each of them as a block, when (a) no two of
    them feed the same destination row with a negative ``weight_exp`` (Lava shifts the
    row sum: ``(a + b) >> k != (a >> k) + (b >> k)``) and never the same (row, column),
    and (b) the merged matrix is one that Lava's ``clip_weights``/``truncate_weights``
    leave unchanged (``fixed_point.is_lava_legal``; Lava picks the sign mode per matrix).
    Otherwise a new block matrix is started.

Delay lines
    A delayed synapse whose direct ``DelayDense`` would be expensive (``(delay + 1) x
    rows x cols`` of the merged groups at least ``line_min_work``, or a graded one that
    would be a ``DelaySparse``) is realised as a *delay line*: a chain of ``GradedVec(vth=0)``
    relay neurons ("slots") joined by weight-1 graded connections, each hop one step
    (``Dense`` latency; ``GradedVec`` passes ``a_in`` through unchanged when ``vth = 0``).
    The source's output reaches slot ``j`` ``j + 1`` steps later; the synapse's own
    weights read slot ``delay - 1`` with a plain (graded) ``Sparse``, which delivers
    ``delay + 1`` steps after the source sent, as ``DelayDense(delays=delay)`` does. Slot 0
    of a binary source's line is in a small hub ``line.entry`` (its entry connection is a
    binary gather, whose cost grows with the rows), all other slots in ``line.slots``;
    all shifts of all lines are one ``Sparse`` ``line.slots -> line.slots``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from snn_compile.compiler.qgraph import QGraph

# a delayed synapse becomes a delay line when its direct DelayDense would handle at least
# this many (delay + 1) x rows x cols entries per step (Lava's DelayDense model builds that
# matrix at every step: ~4 ns per entry measured, ~0.25 ms per extra process)
LINE_MIN_WORK = 100_000
# merged graded matrices: Sparse when at most this fraction is non-zero (scipy's CSR
# matvec costs ~1.2 ns per non-zero, numpy's int32 dot ~0.6 ns per entry)
MERGED_SPARSE_MAX_DENSITY = 0.5
# binary matrices stay Dense unless this large and <= 10 % non-zero: Dense gathers the
# active columns (rows x active entries: 1.2 ms per step for the 8192 x 384 query
# replication of four merged heads), Sparse's CSR gather costs ~0.3-0.4 ms
BINARY_SPARSE_MIN_SIZE = 1 << 20

ENTRY_HUB = "line.entry"
SLOT_HUB = "line.slots"


@dataclass
class Group:
    """One Lava neuron (or Injector) process of the merged network."""

    name: str
    kind: str                                  # input | lif | lifreset | prod | graded
    params: Dict[str, object]                  # per-process scalars for the constructor
    members: List[Tuple[str, int, int]] = field(default_factory=list)  # (population, start, size)
    size: int = 0
    bias_mant: List[np.ndarray] = field(default_factory=list)          # lif: per member
    hub: bool = False                          # a delay-line hub (no population)

    def add(self, name: str, size: int) -> int:
        start = self.size
        self.members.append((name, start, size))
        self.size += size
        return start


@dataclass
class Conn:
    """One block of a merged connection: ``w`` (rows x cols) from ``src[src_off:]`` to
    ``dst[dst_off:]`` of the two groups, with Lava's weight_exp / delay / message bits."""

    src: str
    src_off: int
    dst: str
    port: str
    dst_off: int
    w: np.ndarray
    weight_exp: int
    delay: int
    graded: bool
    synapse: Optional[str] = None              # the QGraph synapse it delivers (exits)
    loop: Optional[str] = None                 # accum population of a self-loop
    decay: Optional[str] = None                # accum population of a decay loop
    state: bool = False                        # holds something across token windows

    @property
    def rows(self) -> Tuple[int, int]:
        return self.dst_off, self.dst_off + self.w.shape[0]

    @property
    def cols(self) -> Tuple[int, int]:
        return self.src_off, self.src_off + self.w.shape[1]


def _overlap(a: Tuple[int, int], b: Tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def legal_stats(lo: int, hi: int, odd: bool) -> bool:
    """``fixed_point.is_lava_legal`` from a matrix's min, max (zeros included) and
    whether any entry is odd."""
    if lo >= 0:
        return hi <= 255
    if hi <= 0:
        return lo >= -255
    return lo >= -256 and hi <= 255 and not odd


@dataclass
class Bucket:
    """Connections that share one Lava process (one block matrix)."""

    src: str
    dst: str
    port: str
    weight_exp: int
    delay: int
    graded: bool
    members: List[Conn] = field(default_factory=list)
    lo: int = 0
    hi: int = 0
    odd: bool = False
    name: str = ""

    @property
    def state(self) -> bool:
        return any(c.state for c in self.members)

    @property
    def loops_only(self) -> bool:
        return all(c.loop is not None or c.decay is not None for c in self.members)

    def fits(self, c: Conn) -> bool:
        for m in self.members:
            if _overlap(m.rows, c.rows) and (self.weight_exp < 0 or _overlap(m.cols, c.cols)):
                return False
        lo, hi = min(self.lo, int(c.w.min())), max(self.hi, int(c.w.max()))
        return legal_stats(lo, hi, self.odd or bool((c.w & 1).any()))

    def add(self, c: Conn) -> None:
        self.members.append(c)
        self.lo, self.hi = min(self.lo, int(c.w.min())), max(self.hi, int(c.w.max()))
        self.odd = self.odd or bool((c.w & 1).any())

    def coo(self, rows: int, cols: int):
        """The merged matrix as scipy COO (rows = dst group size, cols = src group size)."""
        from scipy.sparse import coo_matrix
        r, c, v = [], [], []
        for m in self.members:
            i, j = np.nonzero(m.w)
            r.append(i + m.dst_off)
            c.append(j + m.src_off)
            v.append(m.w[i, j])
        r, c, v = (np.concatenate(x) if x else np.zeros(0, np.int64) for x in (r, c, v))
        return coo_matrix((v.astype(np.int64), (r, c)), shape=(rows, cols))


@dataclass
class MergePlan:
    groups: Dict[str, Group]
    slot: Dict[str, Tuple[str, int, int]]      # population -> (group, start, stop)
    buckets: List[Bucket]
    exits: Dict[str, Bucket]                   # synapse -> the bucket that delivers it
    loops: Dict[str, Bucket]                   # accum -> bucket of its self-loop
    decay_loops: Dict[str, Bucket]             # decaying accum -> bucket of its decay loop
    lines: Dict[str, int]                      # population -> length of its delay line

    def group_of(self, pop: str) -> Group:
        return self.groups[self.slot[pop][0]]


def _group_key(q: QGraph, name: str):
    p = q.pop(name)
    W = q.window
    if p.kind == "input":
        return ("input",)
    if p.kind in ("graded", "accum"):
        return ("graded", int(p.vth) if p.kind == "graded" else 0)
    if p.kind == "prod":
        return ("prod", int(p.vth), int(p.exp))
    if p.kind == "lif":
        base = (int(p.du), int(p.dv), int(p.vth), int(p.bias_exp))
        if p.reset_each_token:
            return ("lifreset",) + base + ((p.depth + 1) % W,)
        return ("lif",) + base
    raise ValueError(f"population {name}: cannot lower kind {p.kind!r}")


def _params(key) -> Dict[str, object]:
    kind = key[0]
    if kind == "graded":
        return {"vth": key[1]}
    if kind == "prod":
        return {"vth": key[1], "exp": key[2]}
    if kind in ("lif", "lifreset"):
        d = {"du": key[1], "dv": key[2], "vth": key[3], "bias_exp": key[4]}
        if kind == "lifreset":
            d["reset_offset"] = key[5]
        return d
    return {}


def plan(q: QGraph, line_min_work: float = LINE_MIN_WORK) -> MergePlan:
    """Group populations, choose delay lines, bucket every connection (see module doc)."""
    groups: Dict[str, Group] = {}
    by_key: Dict[tuple, Group] = {}
    slot: Dict[str, Tuple[str, int, int]] = {}
    for name in q.order():
        p = q.pop(name)
        key = _group_key(q, name)
        g = by_key.get(key)
        if g is None:
            g = Group(f"merged.{len(by_key)}", key[0], _params(key))
            by_key[key] = g
        start = g.add(name, p.size)
        if p.kind == "lif":
            g.bias_mant.append(np.broadcast_to(np.asarray(p.bias_mant, np.int64), (p.size,)))
        slot[name] = (g.name, start, start + p.size)
    for g in by_key.values():          # a group of one keeps the population's name
        if len(g.members) == 1:
            g.name = g.members[0][0]
            slot[g.name] = (g.name,) + slot[g.name][1:]
        groups[g.name] = g

    def gsize(pop):
        return groups[slot[pop][0]].size

    def binary(pop):
        return q.pop(pop).kind in ("input", "lif")

    # ---- which delayed synapses become lines, and how long each source's line is
    lines: Dict[str, int] = {}
    use_line = set()
    for s in q.synapses:
        if s.delay <= 0:
            continue
        w = np.asarray(s.weights)
        work = (s.delay + 1) * gsize(s.dst) * gsize(s.src)
        sparse_graded = (s.graded and w.size >= 1024 and np.count_nonzero(w) <= 0.1 * w.size)
        if work >= line_min_work or sparse_graded:
            use_line.add(s.name)
            lines[s.src] = max(lines.get(s.src, 0), int(s.delay))

    # hubs: slot 0 of binary sources' lines in ENTRY_HUB, all other slots in SLOT_HUB
    line_slot: Dict[Tuple[str, int], Tuple[str, int]] = {}   # (pop, j) -> (hub, offset)
    for pop, n in lines.items():
        for j in range(n):
            hub = ENTRY_HUB if (j == 0 and binary(pop)) else SLOT_HUB
            if hub not in groups:
                groups[hub] = Group(hub, "graded", {"vth": 0}, hub=True)
            line_slot[(pop, j)] = (hub, groups[hub].add(f"{pop}@{j}", q.pop(pop).size))

    conns: List[Conn] = []
    accum_src = {n for n, p in q.populations.items() if p.kind == "accum"}
    lag_lines = {s.src for s in q.synapses if s.name in use_line and s.token_lag}
    for pop, n in lines.items():
        size = q.pop(pop).size
        eye = np.eye(size, dtype=np.int64)
        st = pop in accum_src or pop in lag_lines
        g, a, _ = slot[pop]
        hub, off = line_slot[(pop, 0)]
        conns.append(Conn(g, a, hub, "a_in", off, eye, 0, 0, not binary(pop), state=st))
        for j in range(1, n):
            (h0, o0), (h1, o1) = line_slot[(pop, j - 1)], line_slot[(pop, j)]
            conns.append(Conn(h0, o0, h1, "a_in", o1, eye, 0, 0, True, state=st))

    for s in q.synapses:
        w = np.asarray(s.weights, dtype=np.int64)
        dg, d0, _ = slot[s.dst]
        st = s.src in accum_src or bool(s.token_lag)
        if s.name in use_line:
            hub, off = line_slot[(s.src, int(s.delay) - 1)]
            conns.append(Conn(hub, off, dg, s.port, d0, w, int(s.weight_exp), 0, True,
                              synapse=s.name, state=st))
        else:
            sg, s0, _ = slot[s.src]
            conns.append(Conn(sg, s0, dg, s.port, d0, w, int(s.weight_exp), int(s.delay),
                              bool(s.graded), synapse=s.name, state=st))
    for name, p in q.populations.items():
        if p.kind != "accum":
            continue
        g, a, _ = slot[name]
        conns.append(Conn(g, a, g, "a_in", a, np.eye(p.size, dtype=np.int64), 0, 0, True,
                          loop=name, state=True))
        if p.decaying:
            conns.append(Conn(g, a, g, "a_in", a, -np.diag(np.asarray(p.decay, np.int64)
                                                          * np.ones(p.size, np.int64)),
                              -int(p.decay_exp), 0, True, decay=name, state=True))

    buckets: List[Bucket] = []
    open_: Dict[tuple, List[Bucket]] = {}
    exits, loops, decay_loops = {}, {}, {}
    for c in conns:
        key = (c.src, c.dst, c.port, c.weight_exp, c.delay, c.graded)
        for b in open_.get(key, []):
            if b.fits(c):
                break
        else:
            b = Bucket(*key)
            b.name = f"{c.src}->{c.dst}.{c.port}#{len(buckets)}"
            open_.setdefault(key, []).append(b)
            buckets.append(b)
        b.add(c)
        if c.synapse is not None:
            exits[c.synapse] = b
        if c.loop is not None:
            loops[c.loop] = b
        if c.decay is not None:
            decay_loops[c.decay] = b
    for b in buckets:                       # name a bucket of one synapse after it
        if len(b.members) == 1 and b.members[0].synapse is not None:
            b.name = b.members[0].synapse
        elif len(b.members) == 1 and b.members[0].loop is not None:
            b.name = b.members[0].loop + ".loop"
        elif len(b.members) == 1 and b.members[0].decay is not None:
            b.name = b.members[0].decay + ".decay"
    return MergePlan(groups, slot, buckets, exits, loops, decay_loops, lines)


def use_sparse(b: Bucket, rows: int, cols: int, nnz: int) -> bool:
    """Sparse or Dense for one merged bucket (module constants)."""
    size = rows * cols
    if nnz == 0:
        return False
    if b.graded:
        if b.loops_only:                    # the unmerged rule for an accum's loops
            return rows >= 1024
        return size >= 1024 and nnz <= MERGED_SPARSE_MAX_DENSITY * size
    return size >= BINARY_SPARSE_MIN_SIZE and nnz <= 0.1 * size
