"""NIR file I/O and structural checks, through NIR's own ``nir.write``/``nir.read``.

``read_nir`` reads any NIR 1.0 file (ours or another framework's), turns the
project's extension subgraphs back into extension nodes, and ``flatten`` +
``validate`` give every later stage (interpreter, inspect, compiler) one flat
graph whose problems — unknown node types, dangling edges, shape mismatches,
non-finite parameters — are reported together in one clear error. Cycles are NIR:
an edge closing a cycle without a ``Delay`` carries the previous step's value
(``recurrent_edges``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from snn_compile.errors import UserError, atomic_path
from snn_compile.export.extensions import EXTENSIONS, _scalar, extension_name

# node types the interpreter executes; the compiler lowers a subset (compiler/from_nir.py)
SUPPORTED = ("Input", "Output", "Linear", "Affine", "Scale", "LIF", "IF", "LI", "I",
             "CubaLIF", "Threshold", "Delay", "Flatten", "Conv1d", "Conv2d", "SumPool2d",
             "NIRGraph") + tuple(EXTENSIONS)
# weight nodes that are a matrix on the flattened vector (convolutions unrolled)
CONVOLUTIONS = ("Conv1d", "Conv2d", "SumPool2d")
MAX_UNROLLED = 64 * 2 ** 20          # entries of an unrolled convolution matrix


class NIRGraphError(UserError):
    """A NIR graph that cannot be run: the message lists every problem found."""


def write_nir(graph, path: str, check: Optional[Callable[[str], None]] = None) -> None:
    """``nir.write`` into a temporary file, renamed into place when complete.

    ``check(tmp)`` runs on the complete temporary file before the rename (read it
    back, compare): if it raises, nothing is written and ``path`` stays as it was.
    """
    import nir
    with atomic_path(path) as tmp:
        nir.write(tmp, graph)
        if check is not None:
            check(tmp)


def _file_types(path: str) -> List[Tuple[str, str]]:
    """(node path, type) of every node stored in a NIR file, nested ones included."""
    import h5py

    found: List[Tuple[str, str]] = []

    def walk(group, where):
        if "type" in group:
            t = group["type"][()]
            found.append((where or "<graph>", t.decode() if isinstance(t, bytes) else str(t)))
        if "nodes" in group:
            for k in group["nodes"]:
                walk(group["nodes"][k], f"{where}.{k}" if where else k)

    with h5py.File(path, "r") as f:
        if "node" not in f:
            raise NIRGraphError(f"{path} is an HDF5 file but not a NIR graph (no 'node' group)")
        walk(f["node"], "")
    return found


def read_nir(path: str, strict: bool = True):
    """Read a NIR file; extension subgraphs come back as extension nodes.

    With ``strict`` (every command that runs or compiles a graph) a file that NIR's
    own ``nir.read`` rejects — its type check finds an edge whose two ends disagree —
    is an error too, reported through ``validate``'s more specific message where it
    finds the problem. ``inspect`` reads with ``strict=False`` and reports the problem
    (``nir_type_problem``) instead.
    """
    import nir

    if not os.path.exists(path):
        raise UserError(f"{path} does not exist; write one with `snn-compile export CKPT -o "
                        f"{os.path.basename(path) or 'model.nir'}`")
    if os.path.isdir(path):
        raise UserError(f"{path} is a folder; give the path of a .nir file")
    try:
        types = _file_types(path)
    except NIRGraphError:
        raise
    except Exception as e:      # h5py raises OSError for truncated / non-HDF5 files
        raise UserError(f"{path} is not a readable NIR file (corrupt or truncated HDF5: "
                        f"{e}); export it again") from None
    known = set(nir.ir.__all__) - {"NIRNode"}
    unknown = sorted({t for _, t in types if t not in known})
    if unknown:
        where = ", ".join(f"{n} ({t})" for n, t in types if t in unknown)
        raise NIRGraphError(f"{path} holds node types that NIR {nir.version} cannot read: "
                            f"{', '.join(unknown)} (nodes: {where}); re-export the graph with "
                            "standard NIR 1.0 node types (or snn_compile's extension nodes, "
                            "docs/nir-extensions.md)")
    try:
        graph = nir.read(path, type_check=False)
    except Exception as e:
        where = _failing_node(path)
        raise NIRGraphError(f"{path}: NIR could not build the graph "
                            f"({where + ': ' if where else ''}{type(e).__name__}: "
                            f"{str(e)[:200]}); the file is damaged or was written by an "
                            "incompatible NIR version — export it again") from None
    graph = _lift_extensions(graph)
    if strict:
        why = nir_type_problem(path)
        if why is not None:
            validate(flatten(graph))      # names the problem itself if it can
            raise NIRGraphError(f"{path}: NIR's own reader (nir.read) rejects the graph: {why}"
                                "; fix the nodes or edges it names (or export the graph again "
                                "with its framework's NIR exporter)")
    return graph


def _failing_node(path: str) -> Optional[str]:
    """'node NAME (TYPE)' of the first stored node that NIR cannot build, if one is."""
    import h5py
    import nir
    from nir.serialization import hdf2dict

    def walk(group, where):
        for k in group.get("nodes", {}):
            sub = group["nodes"][k]
            name = f"{where}.{k}" if where else k
            found = walk(sub, name) if "nodes" in sub else None
            if found:
                return found
            try:
                nir.dict2NIRNode(hdf2dict(sub))
            except Exception:
                t = sub["type"][()] if "type" in sub else b"no type"
                return f"node {name} ({t.decode() if isinstance(t, bytes) else t})"
        return None

    try:
        with h5py.File(path, "r") as f:
            return walk(f["node"], "")
    except Exception:
        return None


def nir_type_problem(path: str) -> Optional[str]:
    """Why ``nir.read`` (with its type check, the default) rejects the file, or None."""
    import nir
    try:
        nir.read(path)
    except Exception as e:       # nir raises ValueError, KeyError, AssertionError, ...
        msg = str(e).strip() or type(e).__name__
        return " ".join(msg.split())[:300]
    return None


def _lift_extensions(graph):
    """Replace extension-carrying subgraphs by extension nodes (recursively)."""
    import nir
    for name, node in list(graph.nodes.items()):
        ext = extension_name(node)
        if ext is not None:
            if ext not in EXTENSIONS:
                raise NIRGraphError(f"node {name} uses the extension {ext!r}, which this "
                                    f"snn_compile does not know (known: {', '.join(EXTENSIONS)})")
            try:
                graph.nodes[name] = EXTENSIONS[ext].from_nir(node)
            except (KeyError, ValueError) as e:
                raise NIRGraphError(f"node {name} ({ext}): {e}") from None
        elif isinstance(node, nir.NIRGraph):
            _lift_extensions(node)
    meta = getattr(graph, "metadata", None)
    if isinstance(meta, dict):
        graph.metadata = {k: _scalar(v) for k, v in meta.items()}
    return graph


# ---------------------------------------------------------------- flat graphs
@dataclass
class FlatGraph:
    """Nested subgraphs inlined: node names are dotted paths, edges are plain pairs."""

    nodes: Dict[str, object]
    edges: List[Tuple[str, str]]
    metadata: dict = field(default_factory=dict)

    @property
    def inputs(self) -> List[str]:
        return [n for n, v in self.nodes.items() if node_type(v) == "Input"]

    @property
    def outputs(self) -> List[str]:
        return [n for n, v in self.nodes.items() if node_type(v) == "Output"]

    def sources(self, name: str) -> List[str]:
        return [a for a, b in self.edges if b == name]

    def targets(self, name: str) -> List[str]:
        return [b for a, b in self.edges if a == name]


def node_type(node) -> str:
    ext = getattr(node, "NAME", None)
    return ext if ext in EXTENSIONS else type(node).__name__


def flatten(graph, prefix: str = "") -> FlatGraph:
    """Inline plain subgraphs (extension subgraphs become extension nodes).

    A subgraph's own Input and Output nodes disappear: an edge into subgraph ``g``
    goes to whatever its Input feeds, an edge out of it leaves from whatever feeds
    its Output (a subgraph with several Inputs/Outputs is ambiguous and refused).
    """
    import nir

    nodes: Dict[str, object] = {}
    edges: List[Tuple[str, str]] = []
    entry: Dict[str, List[str]] = {}
    exit_: Dict[str, List[str]] = {}
    problems = []
    for name, node in graph.nodes.items():
        full = prefix + name
        ext = extension_name(node)
        if ext is not None and isinstance(node, nir.NIRGraph):
            if ext not in EXTENSIONS:
                raise NIRGraphError(f"node {full} uses the extension {ext!r}, which this "
                                    f"snn_compile does not know (known: {', '.join(EXTENSIONS)})")
            nodes[full] = EXTENSIONS[ext].from_nir(node)
        elif isinstance(node, nir.NIRGraph):
            sub = flatten(node, full + ".")
            ins = [full + "." + n for n, v in node.nodes.items() if isinstance(v, nir.Input)]
            outs = [full + "." + n for n, v in node.nodes.items() if isinstance(v, nir.Output)]
            if len(ins) != 1 or len(outs) != 1:
                problems.append(f"subgraph {full} has {len(ins)} Input and {len(outs)} Output "
                                "nodes; only subgraphs with one of each can be inlined")
                continue
            entry[name] = [b for a, b in sub.edges if a == ins[0]]
            exit_[name] = [a for a, b in sub.edges if b == outs[0]]
            nodes.update({k: v for k, v in sub.nodes.items() if k not in (ins[0], outs[0])})
            edges += [(a, b) for a, b in sub.edges if a != ins[0] and b != outs[0]]
        else:
            nodes[full] = node
    if problems:
        raise NIRGraphError("; ".join(problems))
    for a, b in graph.edges:
        for src in exit_.get(a, [prefix + a]):
            for dst in entry.get(b, [prefix + b]):
                edges.append((src, dst))
    meta = dict(getattr(graph, "metadata", None) or {}) if not prefix else {}
    return FlatGraph(nodes, edges, meta)


def _type_size(node, key: str) -> Optional[int]:
    shape = (getattr(node, key + "_type", None) or {}).get(key)
    return None if shape is None or np.size(shape) == 0 else int(np.prod(shape))


def in_size(node) -> Optional[int]:
    """Width of a node's input vector (None where any width is accepted)."""
    t = node_type(node)
    if t in ("Linear", "Affine"):
        return int(np.asarray(node.weight).shape[1])
    if t in CONVOLUTIONS:
        return _type_size(node, "input")
    if t in ("Flatten",):
        return None
    if t in EXTENSIONS:
        return int(node.input_type["input"][0])
    if t == "Input":
        return int(np.prod(node.input_type["input"]))
    return out_size(node)


def out_size(node) -> Optional[int]:
    t = node_type(node)
    if t in ("Linear", "Affine"):
        return int(np.asarray(node.weight).shape[0])
    if t == "Scale":
        return int(np.asarray(node.scale).size)
    if t in ("LIF", "IF", "LI", "I", "CubaLIF"):
        return int(np.asarray(node.r).size)
    if t == "Threshold":
        return int(np.asarray(node.threshold).size)
    if t in ("Conv1d", "Conv2d"):
        return _type_size(node, "output")
    if t == "Delay":
        return int(np.asarray(node.delay).size)
    if t == "Input":
        return int(np.prod(node.input_type["input"]))
    if t == "Output":
        o = node.output_type.get("output") if node.output_type else None
        return None if o is None else int(np.prod(o))
    if t in EXTENSIONS:
        return int(node.output_type["output"][0])
    return None


def validate(flat: FlatGraph, supported=SUPPORTED) -> FlatGraph:
    """Every problem of a flat graph in one ``NIRGraphError``; returns the graph."""
    problems: List[str] = []
    bad = sorted({f"{n} ({node_type(v)})" for n, v in flat.nodes.items()
                  if node_type(v) not in supported})
    if bad:
        problems.append(f"unsupported node types: {', '.join(bad)} (supported: "
                        f"{', '.join(supported)}); replace those nodes by supported ones "
                        "in the framework that wrote the graph and export it again")
    for a, b in flat.edges:
        for end in (a, b):
            if end not in flat.nodes:
                problems.append(f"edge {a} -> {b} refers to a node {end!r} that does not exist")
    problems += non_finite_parameters(flat)
    for n, v in flat.nodes.items():
        try:
            size = out_size(v)
        except Exception:
            problems.append(f"node {n} ({node_type(v)}): malformed parameters (cannot tell its "
                            "size); export the graph again")
            continue
        if size == 0:
            problems.append(f"node {n} ({node_type(v)}) has no neurons or values (size 0); "
                            "remove it or give it a size")
        for tau_field in ("tau", "tau_mem", "tau_syn"):
            a = getattr(v, tau_field, None)
            if isinstance(a, np.ndarray) and a.dtype.kind in "fi" and a.size \
                    and np.all(np.isfinite(a)) and np.any(a <= 0):
                problems.append(f"node {n} ({node_type(v)}): time constant {tau_field} must be "
                                f"positive, got {float(a.min()):g}; fix the node")
    if not flat.inputs:
        problems.append("the graph has no Input node")
    if not flat.outputs:
        problems.append("the graph has no Output node")
    if not problems:
        for a, b in flat.edges:
            try:
                sa, sb = out_size(flat.nodes[a]), in_size(flat.nodes[b])
            except Exception:           # malformed parameters: reported above
                continue
            if sa is not None and sb is not None and sa != sb:
                problems.append(f"edge {a} -> {b}: {a} gives {sa} values, {b} takes {sb}")
        for n, v in flat.nodes.items():
            if node_type(v) == "Input" and flat.sources(n):
                problems.append(f"Input node {n} has incoming edges")
            if node_type(v) not in ("Input",) and not flat.sources(n):
                problems.append(f"node {n} has no incoming edge (dangling)")
    if problems:
        raise NIRGraphError("invalid NIR graph: " + "; ".join(problems))
    return flat


def non_finite_parameters(flat: FlatGraph) -> List[str]:
    """One problem per node parameter holding NaN or infinity."""
    problems = []
    for n, v in flat.nodes.items():
        for field_name, a in sorted(vars(v).items()):
            if not isinstance(a, np.ndarray) or a.dtype.kind not in "fc":
                continue
            bad = int(a.size - np.isfinite(a).sum())
            if bad:
                problems.append(f"node {n} ({node_type(v)}): parameter {field_name} holds "
                                f"{bad} non-finite value{'s' if bad > 1 else ''} (NaN or "
                                "infinity); export the graph again from a model with finite "
                                "weights")
    return problems


NEURON_TYPES = ("LIF", "IF", "LI", "I", "CubaLIF")


def recurrent_edges(flat: FlatGraph) -> set:
    """The edges that close a cycle not passing through a Delay node: NIR's recurrence.

    Such an edge carries the value its source had at the *previous* step (one-step
    recurrence), so every cycle is well defined: ``LIF -> Linear(W_rec) -> LIF`` reads
    ``W_rec s[t-1]`` at step ``t`` (snnTorch's RLeaky, Norse's and Rockpool's recurrent
    layers). A cycle through a Delay node needs no such edge (the Delay reads the past).

    Found by a depth-first search from the Input nodes (then any node not reached), in
    the graph's order; of each cycle it closes, the edge *leaving its last neuron node*
    is the recurrent one, so that the weight nodes of a recurrent path (and their bias)
    act at every step, the first included, as in snnTorch's ``RLeaky``
    (``mem = beta mem + x + W_rec spk_prev + b_rec`` with ``spk_prev = 0`` at the start).
    A cycle of weight nodes only keeps the search's own back edge.
    """
    succ: Dict[str, List[str]] = {n: [] for n in flat.nodes}
    for a, b in flat.edges:
        if node_type(flat.nodes[a]) != "Delay" and a in succ and b in succ:
            succ[a].append(b)
    color = {n: 0 for n in flat.nodes}
    back, chosen = set(), set()
    starts = flat.inputs + [n for n in flat.nodes if n not in flat.inputs]
    for root in starts:
        if color[root]:
            continue
        color[root] = 1
        stack = [(root, iter(succ[root]))]
        while stack:
            n, it = stack[-1]
            m = next(it, None)
            if m is None:
                color[n] = 2
                stack.pop()
            elif color[m] == 1:
                back.add((n, m))
                path = [x for x, _ in stack]
                cyc = path[path.index(m):]                  # m ... n, then n -> m
                neurons = [i for i, x in enumerate(cyc) if node_type(flat.nodes[x])
                           in NEURON_TYPES]
                if neurons:
                    j = neurons[-1]
                    chosen.add((cyc[j], cyc[j + 1] if j + 1 < len(cyc) else cyc[0]))
                else:
                    chosen.add((n, m))
            elif color[m] == 0:
                color[m] = 1
                stack.append((m, iter(succ[m])))
    return chosen if _acyclic_without(succ, chosen) else back


def _acyclic_without(succ: Dict[str, List[str]], cut: set) -> bool:
    indeg = {n: 0 for n in succ}
    for a, bs in succ.items():
        for b in bs:
            if (a, b) not in cut:
                indeg[b] += 1
    ready = [n for n, k in indeg.items() if k == 0]
    seen = 0
    while ready:
        a = ready.pop()
        seen += 1
        for b in succ[a]:
            if (a, b) not in cut:
                indeg[b] -= 1
                if indeg[b] == 0:
                    ready.append(b)
    return seen == len(succ)


def order(flat: FlatGraph) -> List[str]:
    """Topological order in which a step is computed; Delay outputs come from the
    previous steps, and recurrent edges (``recurrent_edges``) carry the previous step's
    value, so neither constrains the order."""
    back = recurrent_edges(flat)
    indeg = {n: 0 for n in flat.nodes}
    for a, b in flat.edges:
        if node_type(flat.nodes[a]) != "Delay" and (a, b) not in back and b in indeg:
            indeg[b] += 1
    ready = [n for n, k in indeg.items() if k == 0]
    out: List[str] = []
    while ready:
        n = ready.pop(0)
        out.append(n)
        if node_type(flat.nodes[n]) == "Delay":
            continue
        for b in flat.targets(n):
            if (n, b) in back or b not in indeg:
                continue
            indeg[b] -= 1
            if indeg[b] == 0:
                ready.append(b)
    return out


# ----------------------------------------------------------- convolutions
def _spatial_input(flat: FlatGraph, name: str) -> Tuple[int, ...]:
    """(C, H, W) / (C, L) of what a convolution or pooling node receives: its own input
    type, else the output type of a source that has one (shapes NIR's type inference
    leaves out, as on a SumPool2d)."""
    node = flat.nodes[name]
    shape = (getattr(node, "input_type", None) or {}).get("input")
    if shape is not None and np.size(shape) > 1:
        return tuple(int(v) for v in np.asarray(shape).reshape(-1))
    for src in flat.sources(name):
        sn = flat.nodes[src]
        o = (getattr(sn, "output_type", None) or {}).get("output")
        if o is not None and np.size(o) > 1:
            return tuple(int(v) for v in np.asarray(o).reshape(-1))
        if node_type(sn) in CONVOLUTIONS:
            return conv_shapes(flat, src)[1]
        if node_type(sn) in ("LIF", "IF", "LI", "I", "CubaLIF", "Delay", "Scale"):
            for fld in ("tau", "r", "tau_mem", "delay", "scale"):
                a = getattr(sn, fld, None)
                if isinstance(a, np.ndarray) and a.ndim > 1:
                    return tuple(int(v) for v in a.shape)
    raise NIRGraphError(f"node {name} ({node_type(node)}): the shape (channels, height, width) "
                        "of its input is unknown (no input type on it or on the node before "
                        "it); export the graph with its shapes (nir.NIRGraph.infer_types)")


def _pad2(v, n: int) -> Tuple[int, ...]:
    a = np.asarray(v).reshape(-1)
    return tuple(int(x) for x in (np.repeat(a, n) if a.size == 1 else a))


def conv_shapes(flat: FlatGraph, name: str) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """(input shape, output shape) of a convolution or pooling node."""
    import torch
    node, t = flat.nodes[name], node_type(flat.nodes[name])
    if t in ("Conv1d", "Conv2d"):
        nd = 1 if t == "Conv1d" else 2
        w = np.asarray(node.weight)
        ish = node.input_shape
        if ish is None:
            cin_shape = _spatial_input(flat, name)
        else:
            cin_shape = (int(w.shape[1]) * int(getattr(node, "groups", 1) or 1),
                         *_pad2(ish, nd))
    else:
        nd = 2
        cin_shape = _spatial_input(flat, name)
    with torch.no_grad():
        y = _conv_apply(node, t, torch.zeros(1, *cin_shape, dtype=torch.float64), nd)
    return tuple(cin_shape), tuple(int(v) for v in y.shape[1:])


def _conv_apply(node, t: str, x, nd: int):
    """The node's operation on a batch ``x`` (B, C, ...) in torch float64."""
    import torch
    import torch.nn.functional as F
    if t == "SumPool2d":
        k, st = _pad2(node.kernel_size, 2), _pad2(node.stride, 2)
        pd = _pad2(node.padding, 2)
        return F.avg_pool2d(x, k, st, pd, count_include_pad=True, divisor_override=1)
    w = torch.as_tensor(np.asarray(node.weight, np.float64))
    pad = node.padding if isinstance(node.padding, str) else _pad2(node.padding, nd)
    conv = F.conv1d if nd == 1 else F.conv2d
    return conv(x, w, None, _pad2(node.stride, nd), pad, _pad2(node.dilation, nd),
                int(node.groups))


def linear_form(flat: FlatGraph, name: str) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """A convolution or pooling node as ``y = M x + b`` on flattened (C-order) vectors:
    ``M`` (out, in) is the operation applied to the identity, so the interpreter and the
    Loihi lowering use one matrix (for Loihi, a Dense synapse with the unrolled weights:
    ``out x in`` entries, ``nnz`` of them non-zero, instead of ``C_out C_in k^2``)."""
    import torch
    node, t = flat.nodes[name], node_type(flat.nodes[name])
    ishape, oshape = conv_shapes(flat, name)
    n_in, n_out = int(np.prod(ishape)), int(np.prod(oshape))
    if n_in * n_out > MAX_UNROLLED:
        raise NIRGraphError(f"node {name} ({t}): unrolled it is a {n_out} x {n_in} matrix, "
                            f"more than {MAX_UNROLLED:,} entries; snn_compile unrolls "
                            "convolutions into dense synapses — use smaller inputs")
    with torch.no_grad():
        eye = torch.eye(n_in, dtype=torch.float64).reshape(n_in, *ishape)
        M = _conv_apply(node, t, eye, len(ishape) - 1).reshape(n_in, n_out).T.numpy()
    b = getattr(node, "bias", None)
    bias = None
    if t != "SumPool2d" and b is not None and np.any(np.asarray(b) != 0):
        per = int(np.prod(oshape[1:]))
        bias = np.repeat(np.asarray(b, np.float64).reshape(-1), per)
    return np.ascontiguousarray(M), bias
