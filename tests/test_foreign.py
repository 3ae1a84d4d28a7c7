"""Foreign NIR graphs of every lowered node type: the float interpreter's semantics, the
Loihi 2 lowering (float vs integer agreement), integer reference == emulator == Lava spike
for spike, and one clear refusal naming the node for what is not lowered."""

from __future__ import annotations

import nir
import numpy as np
import pytest
import torch

import snn_compile as sc
from snn_compile.hw_sim.verify import compare_float_int
from snn_compile.errors import UserError
from snn_compile.export.interpreter import NIRInterpreter
from snn_compile.export.nir_io import recurrent_edges, flatten

DT = 1e-4
S = 24


def lif(n, tau=0.001, vth=1.0, v_leak=0.0, r=None, seed=None):
    rng = np.random.default_rng(seed)
    return nir.LIF(tau=np.full(n, tau), r=np.full(n, tau / DT) if r is None else r,
                   v_leak=np.full(n, v_leak) if np.isscalar(v_leak) else v_leak,
                   v_threshold=np.full(n, vth) if rng is None or seed is None
                   else rng.uniform(0.8, 1.2, n), v_reset=np.zeros(n))


def cuba(n, tau_syn=5e-4, tau_mem=1e-3, v_leak=0.0):
    return nir.CubaLIF(tau_syn=np.full(n, tau_syn), tau_mem=np.full(n, tau_mem),
                       r=np.full(n, tau_mem / DT), v_leak=np.full(n, v_leak),
                       v_threshold=np.ones(n), v_reset=np.zeros(n),
                       w_in=np.full(n, tau_syn / DT))


def W(o, i, seed, gain=1.0):
    return np.random.default_rng(seed).normal(0, gain / np.sqrt(i), (o, i))


def graph(nodes, edges):
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def inp(n):
    return nir.Input(input_type=np.array([n]))


def out(n):
    return nir.Output(output_type=np.array([n]))


def spikes(n, batch=6, rate=0.3, seed=0, steps=S):
    rng = np.random.default_rng(seed)
    return (rng.random((batch, steps, n)) < rate).astype(np.float64)


# the graphs: each exercises one node type or feature
def g_lif_leak_bias():
    return graph({"in": inp(6), "a": nir.Affine(weight=W(10, 6, 1, 1.5),
                                                 bias=np.linspace(-0.1, 0.25, 10)),
                  "l": lif(10, v_leak=np.linspace(-0.5, 2.0, 10), seed=3), "o": out(10)},
                 [("in", "a"), ("a", "l"), ("l", "o")])


def g_if():
    return graph({"in": inp(6), "w": nir.Linear(weight=W(8, 6, 2, 0.8)),
                  "l": nir.IF(r=np.full(8, 1e4), v_threshold=np.full(8, 1.5),
                              v_reset=np.zeros(8)), "o": out(8)},
                 [("in", "w"), ("w", "l"), ("l", "o")])


def g_cuba():
    return graph({"in": inp(6), "a": nir.Affine(weight=W(8, 6, 3, 1.0), bias=np.full(8, 0.05)),
                  "c": cuba(8, v_leak=0.3), "o": out(8)},
                 [("in", "a"), ("a", "c"), ("c", "o")])


def g_li_readout():
    return graph({"in": inp(6), "w": nir.Linear(weight=W(10, 6, 4, 2.0)), "l": lif(10),
                  "w2": nir.Affine(weight=W(3, 10, 5), bias=np.array([0.1, 0.0, -0.1])),
                  "li": nir.LI(tau=np.array([1e-3, 2e-3, 5e-4]), r=np.ones(3),
                               v_leak=np.zeros(3)), "o": out(3)},
                 [("in", "w"), ("w", "l"), ("l", "w2"), ("w2", "li"), ("li", "o")])


def g_integrator():
    return graph({"in": inp(6), "w": nir.Linear(weight=W(10, 6, 4, 2.0)), "l": lif(10),
                  "w2": nir.Linear(weight=W(3, 10, 6)), "i": nir.I(r=np.full(3, 1e3)),
                  "o": out(3)},
                 [("in", "w"), ("w", "l"), ("l", "w2"), ("w2", "i"), ("i", "o")])


def g_recurrent():
    """snnTorch RLeaky's export: LIF -> Affine(W_rec, b_rec) -> LIF, no Delay."""
    return graph({"in": inp(6), "a": nir.Affine(weight=W(10, 6, 7, 1.5), bias=np.zeros(10)),
                  "l": lif(10), "rec": nir.Affine(weight=W(10, 10, 8, 0.8),
                                                  bias=np.full(10, 0.02)),
                  "w2": nir.Linear(weight=W(4, 10, 9, 2.0)), "l2": lif(4), "o": out(4)},
                 [("in", "a"), ("a", "l"), ("l", "rec"), ("rec", "l"), ("l", "w2"),
                  ("w2", "l2"), ("l2", "o")])


def g_delay():
    return graph({"in": inp(6), "w": nir.Linear(weight=W(8, 6, 10, 2.0)), "l": lif(8),
                  "d": nir.Delay(delay=np.array([1, 2, 3, 1, 5, 2, 2, 4]) * DT),
                  "w2": nir.Linear(weight=W(4, 8, 11, 3.0)), "l2": lif(4), "o": out(4)},
                 [("in", "w"), ("w", "l"), ("l", "d"), ("d", "w2"), ("w2", "l2"),
                  ("l2", "o")])


def g_conv2d():
    """Input (1, 6, 6) -> Conv2d(2, 3x3, pad 1) -> LIF -> SumPool2d(2) -> Flatten -> Linear
    -> LIF."""
    rng = np.random.default_rng(12)
    return graph({"in": nir.Input(input_type=np.array([1, 6, 6])),
                  "c": nir.Conv2d(input_shape=(6, 6), weight=rng.normal(0, 0.6, (2, 1, 3, 3)),
                                  stride=1, padding=1, dilation=1, groups=1,
                                  bias=np.array([0.05, -0.05])),
                  "l": lif(72).__class__(tau=np.full((2, 6, 6), 1e-3), r=np.full((2, 6, 6), 10.),
                                         v_leak=np.zeros((2, 6, 6)),
                                         v_threshold=np.ones((2, 6, 6)),
                                         v_reset=np.zeros((2, 6, 6))),
                  "p": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                                     padding=np.array([0, 0])),
                  "f": nir.Flatten(input_type={"input": np.array([2, 3, 3])}),
                  "w": nir.Linear(weight=W(4, 18, 13, 3.0)), "l2": lif(4), "o": out(4)},
                 [("in", "c"), ("c", "l"), ("l", "p"), ("p", "f"), ("f", "w"), ("w", "l2"),
                  ("l2", "o")])


def g_conv1d():
    rng = np.random.default_rng(14)
    return graph({"in": nir.Input(input_type=np.array([2, 10])),
                  "c": nir.Conv1d(input_shape=10, weight=rng.normal(0, 0.7, (3, 2, 3)),
                                  stride=2, padding=0, dilation=1, groups=1, bias=np.zeros(3)),
                  "l": nir.LIF(tau=np.full((3, 4), 1e-3), r=np.full((3, 4), 10.),
                               v_leak=np.zeros((3, 4)), v_threshold=np.ones((3, 4)),
                               v_reset=np.zeros((3, 4))), "o": out(12)},
                 [("in", "c"), ("c", "l"), ("l", "o")])


GRAPHS = {"lif_leak_bias": g_lif_leak_bias, "if": g_if, "cubalif": g_cuba,
          "li_readout": g_li_readout, "integrator": g_integrator, "recurrent": g_recurrent,
          "delay": g_delay, "conv2d_sumpool": g_conv2d, "conv1d": g_conv1d}


def input_size(g):
    return int(np.prod(g.nodes["in"].input_type["input"]))


@pytest.mark.parametrize("name", list(GRAPHS))
def test_int_equals_emulator_and_float_agrees(name):
    g = GRAPHS[name]()
    m = sc.load(g)
    X = spikes(input_size(g), seed=1)
    c = sc.compile(m, calibrate=X)
    yi = sc.run(c, X, backend="int")
    ye = sc.run(c, X, backend="emulator")
    np.testing.assert_array_equal(yi, ye)
    assert np.abs(yi).sum() > 0, f"{name}: silent output, nothing tested"
    res = compare_float_int(m.graph, c.qgraph,
                            {"in": torch.as_tensor(X.transpose(1, 0, 2))})
    # the quantization changes few spike decisions (8-bit weights, 12-bit decays)
    assert res["min_agreement"] > 0.93, res
    assert all(p["float_spikes"] > 0 for p in res["populations"].values()), res
    assert res["readout_mean_abs_diff"] <= 0.15 * res["readout_float_mean_abs"] + 0.5, res


def test_bias_is_the_neurons_own():
    c = sc.compile(g_lif_leak_bias(), calibrate=spikes(6))
    q = c.qgraph
    assert "bias" not in q.populations                       # no host input
    p = q.pop("l")
    assert len(p.bias_mant) == 10 and len(set(p.bias_mant)) > 1 and p.bias_exp >= 0
    # v_leak (1 - beta) / v_th + gain b / v_th, in units of vth << 6
    nu_beta = 1 - DT / 1e-3
    vth = g_lif_leak_bias().nodes["l"].v_threshold
    want = ((1 - nu_beta) * np.linspace(-0.5, 2.0, 10) + np.linspace(-0.1, 0.25, 10)) / vth
    np.testing.assert_allclose(p.bias() / (p.vth << 6), want, atol=2.0 ** -(np.log2(p.vth) + 6)
                               * 2 ** p.bias_exp)


def test_cubalif_uses_du_and_host_bias_current():
    c = sc.compile(g_cuba(), calibrate=spikes(6))
    p = c.qgraph.pop("c")
    assert p.du == 4095 - round(4096 * (1 - DT / 5e-4))          # alpha = 0.8
    assert p.dv == round(4096 * DT / 1e-3)
    assert "bias" in c.qgraph.populations                     # b enters u, from the host
    assert p.has_bias                                         # v_leak: the neuron's own


def test_recurrent_edge_is_one_step_and_a_self_loop():
    g = g_recurrent()
    assert recurrent_edges(flatten(g)) == {("l", "rec")}
    c = sc.compile(g, calibrate=spikes(6))
    loops = [s for s in c.qgraph.synapses if s.src == s.dst]
    assert len(loops) == 1 and loops[0].step_lag == 1 and loops[0].delay == 0
    # the interpreter: l at t receives W_rec s[t-1] + b_rec (b_rec from the first step)
    x = torch.as_tensor(spikes(6, batch=2).transpose(1, 0, 2))
    rec = NIRInterpreter(g).run({"in": x}, record=["l"])["l"]
    nodes = g.nodes
    beta, vth = 1 - DT / 1e-3, 1.0
    v = torch.zeros(2, 10, dtype=torch.float64)
    s_prev = torch.zeros(2, 10, dtype=torch.float64)
    Wa, Wr = torch.as_tensor(nodes["a"].weight), torch.as_tensor(nodes["rec"].weight)
    br = torch.as_tensor(nodes["rec"].bias)
    for t in range(S):
        v = beta * v + x[t] @ Wa.T + s_prev @ Wr.T + br
        s = (v > vth).double()
        v = torch.where(s > 0, torch.zeros_like(v), v)
        assert torch.equal(s, rec[t]), t
        s_prev = s


def test_delay_node_lags_by_its_steps():
    g = g_delay()
    c = sc.compile(g, calibrate=spikes(6))
    lags = sorted({s.step_lag for s in c.qgraph.synapses if s.dst == "l2"})
    assert lags == [1, 2, 3, 4, 5]


def test_conv_matches_torch_and_reports_the_unrolled_cost():
    import torch.nn.functional as F
    g = g_conv2d()
    X = spikes(36, batch=3, seed=4)
    x = torch.as_tensor(X.transpose(1, 0, 2))
    rec = NIRInterpreter(g).run({"in": x}, record=["c", "p"])
    wt = torch.as_tensor(g.nodes["c"].weight)
    for t in range(S):
        ref = F.conv2d(x[t].reshape(3, 1, 6, 6), wt, torch.as_tensor(g.nodes["c"].bias),
                       padding=1)
        torch.testing.assert_close(rec["c"][t], ref.reshape(3, -1))
    c = sc.compile(g, calibrate=X)
    notes = " ".join(c.report["notes"])
    assert "c (Conv2d) unrolled into a 72 x 36 matrix" in notes and "18 shared" in notes
    assert "p (SumPool2d) unrolled into a 18 x 72 matrix" in notes


def test_lava_equals_int_on_recurrence_delay_cuba_li_conv():
    """One Lava run per graph kind that the simulator's processes differ on."""
    from snn_compile.hw_sim.foreign import run_samples
    for make in (g_recurrent, g_delay, g_cuba, g_li_readout, g_conv1d, g_lif_leak_bias):
        g = make()
        X = spikes(input_size(g), batch=2, seed=5, rate=0.5)
        c = sc.compile(g, calibrate=X)
        x = {"in": torch.as_tensor(X.transpose(1, 0, 2))}
        res = run_samples(c.qgraph, x, "lava-sim", check=True)     # raises on a difference
        assert res["reference_equal"] is True
        spiking = [n for n, p in c.qgraph.populations.items() if p.kind == "lif"]
        assert all(res["outputs"][n].sum() > 0 for n in spiking), make.__name__


def test_pre_window_bias_comes_from_the_host_when_a_loop_would_carry_it():
    """A strong bias fires a deep population before its window; with a self-loop that
    spike would enter the window, so the bias is moved to the host input (exact)."""
    g = g_recurrent()
    g.nodes["w2"] = nir.Linear(weight=W(4, 10, 9, 2.0))
    g.nodes["l2"] = lif(4)
    g.nodes["rec2"] = nir.Linear(weight=np.eye(4) * 0.3)
    g.nodes["b2"] = nir.Affine(weight=np.eye(4), bias=np.full(4, 0.6))
    g.edges = [e for e in g.edges if e != ("w2", "l2")] + [("w2", "b2"), ("b2", "l2"),
                                                          ("l2", "rec2"), ("rec2", "l2")]
    X = spikes(6, batch=3, seed=6)
    c = sc.compile(g, calibrate=X)
    assert any("before its window" in n for n in c.report["notes"]), c.report["notes"]
    assert not c.qgraph.pop("l2").has_bias
    np.testing.assert_array_equal(sc.run(c, X, backend="int"), sc.run(c, X, backend="emulator"))
    from snn_compile.hw_sim.foreign import run_samples
    res = run_samples(c.qgraph, {"in": torch.as_tensor(X[:1].transpose(1, 0, 2))}, "lava-sim",
                      check=True)
    assert res["reference_equal"] is True


# --------------------------------------------------------------------- refusals
def _refused(nodes_change=None, edges=None):
    g = g_if()
    if nodes_change:
        g.nodes.update(nodes_change)
    if edges is not None:
        g.edges = edges
    return g


REFUSALS = {
    "Threshold": (lambda: graph({"in": inp(6), "w": nir.Linear(weight=W(8, 6, 2)),
                                 "t": nir.Threshold(threshold=np.ones(8)), "l": lif(8),
                                 "o": out(8)},
                                [("in", "w"), ("w", "t"), ("t", "l"), ("l", "o")]),
                  ["t (Threshold"]),
    "v_reset": (lambda: _refused({"l": nir.IF(r=np.full(8, 1e4), v_threshold=np.ones(8),
                                              v_reset=np.full(8, 0.1))}), ["l (IF)", "v_reset"]),
    "tau": (lambda: graph({"in": inp(6), "w": nir.Linear(weight=W(8, 6, 2)),
                           "l": nir.LIF(tau=np.linspace(1e-3, 2e-3, 8), r=np.ones(8),
                                        v_leak=np.zeros(8), v_threshold=np.ones(8)),
                           "o": out(8)}, [("in", "w"), ("w", "l"), ("l", "o")]),
            ["l (LIF)", "split the node"]),
    "two-population loop": (lambda: graph(
        {"in": inp(6), "w": nir.Linear(weight=W(8, 6, 2)), "a": lif(8),
         "ab": nir.Linear(weight=W(8, 8, 3)), "b": lif(8), "ba": nir.Linear(weight=W(8, 8, 4)),
         "o": out(8)},
        [("in", "w"), ("w", "a"), ("a", "ab"), ("ab", "b"), ("b", "ba"), ("ba", "a"),
         ("b", "o")]), ["several neuron nodes", "a, b"]),
    "weights-only cycle": (lambda: graph(
        {"in": inp(6), "w": nir.Linear(weight=W(8, 6, 2)), "x": nir.Linear(weight=W(8, 8, 3)),
         "y": nir.Linear(weight=W(8, 8, 4) * 0.1), "l": lif(8), "o": out(8)},
        [("in", "w"), ("w", "x"), ("x", "y"), ("y", "x"), ("x", "l"), ("l", "o")]),
        ["weight nodes only", "x -> y -> x"]),
    "recurrent LI": (lambda: graph(
        {"in": inp(6), "w": nir.Linear(weight=W(8, 6, 2)), "l": lif(8),
         "w2": nir.Linear(weight=W(3, 8, 3)), "li": nir.LI(tau=np.full(3, 1e-3), r=np.ones(3),
                                                           v_leak=np.zeros(3)),
         "back": nir.Linear(weight=np.eye(3)), "o": out(3)},
        [("in", "w"), ("w", "l"), ("l", "w2"), ("w2", "li"), ("li", "back"), ("back", "li"),
         ("li", "o")]), ["li (LI)", "recurrent"]),
    "bias behind a delay": (lambda: graph(
        {"in": inp(6), "a": nir.Affine(weight=W(8, 6, 2), bias=np.ones(8)),
         "d": nir.Delay(delay=np.full(8, 2 * DT)), "l": lif(8), "o": out(8)},
        [("in", "a"), ("a", "d"), ("d", "l"), ("l", "o")]), ["Delay node d", "bias"]),
}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_unlowerable_graphs_are_refused_by_node(name, tmp_path, run_cli):
    make, needles = REFUSALS[name]
    g = make()
    with pytest.raises(UserError) as e:
        sc.compile(g, steps=S)
    for n in needles:
        assert n in str(e.value), (n, str(e.value))
    path = tmp_path / "g.nir"
    nir.write(str(path), g)
    np.save(tmp_path / "x.npy", spikes(6, batch=2))
    r = run_cli("run", path, "--input", tmp_path / "x.npy")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    r = run_cli("inspect", path, "--json")          # listed, and says why not
    assert r.returncode == 0, r.stderr
    import json
    info = json.loads(r.stdout)
    assert info["deployable"] is False and needles[0] in info["deployable_why"]


def test_the_float_interpreter_runs_what_the_lowering_refuses():
    """NIR semantics are not limited by Loihi: a two-population loop runs on nir."""
    make, _ = REFUSALS["two-population loop"]
    y = sc.run(make(), spikes(6, batch=2), backend="nir")
    assert y.shape == (2, S, 8)
