"""A foreign NIR graph through the whole toolchain: snnTorch → NIR → Loihi 2 → Lava.

    python -m snn_compile.benchmarks.foreign_nir [--hidden 64] [--steps 32] [--out FILE.nir]

Builds a seeded snnTorch network (Linear → Leaky → Linear → Leaky, reset to
zero), exports it with snnTorch's own ``export_to_nir``, reads the file with
``read_nir``, and reports:

* snnTorch's own simulation vs the NIR reference interpreter (spike for spike);
* the compiled fixed-point graph (8-bit weights, 12-bit decays) vs the float
  interpreter: spike agreement per layer and output-count error — the
  quantization error;
* Lava ``fixed_pt`` vs the integer reference (must be identical).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import torch
from snn_compile.compiler.quantize_foreign import foreign_to_qgraph
from snn_compile.compiler.resources import resource_report
from snn_compile.export.interpreter import NIRInterpreter
from snn_compile.export.nir_io import read_nir
from snn_compile.hw_sim.verify import compare_float_int


def snntorch_net(seed: int = 0, n_in: int = 20, hidden: int = 32, n_out: int = 10,
                 out_gain: float = 3.0):
    """Linear → Leaky(β 0.9) → Linear → Leaky(β 0.8), per-neuron β and thresholds, as
    snnTorch 1.0's exporter needs (a scalar β gives a shape-() NIR LIF)."""
    import snntorch as snn
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(n_in, hidden),
        snn.Leaky(beta=torch.full((hidden,), 0.9), threshold=torch.ones(hidden),
                  init_hidden=True, reset_mechanism="zero"),
        torch.nn.Linear(hidden, n_out),
        snn.Leaky(beta=torch.full((n_out,), 0.8), threshold=torch.ones(n_out),
                  init_hidden=True, output=True, reset_mechanism="zero"))
    with torch.no_grad():
        net[2].weight.mul_(out_gain)
    return net


@torch.no_grad()
def snntorch_sim(net, x: torch.Tensor):
    """snnTorch's own step loop: spikes of both Leaky layers, (S, B, n) each."""
    from snntorch import utils
    utils.reset(net)
    s1, s2 = [], []
    for t in range(x.shape[0]):
        a = net[1](net[0](x[t]))
        b, _ = net[3](net[2](a))
        s1.append(a)
        s2.append(b)
    return torch.stack(s1), torch.stack(s2)


def export_snntorch(net, n_in: int, path: str) -> None:
    import nir
    from snntorch.export_nir import export_to_nir
    nir.write(path, export_to_nir(net, torch.randn(1, n_in), ignore_dims=[0]))


def run(hidden: int = 32, n_in: int = 20, n_out: int = 10, steps: int = 32, batch: int = 16,
        rate: float = 0.3, seed: int = 0, lava_samples: int = 2, path: str | None = None) -> dict:

    net = snntorch_net(seed, n_in, hidden, n_out)
    tmp = None
    if path is None:
        tmp = tempfile.TemporaryDirectory()
        path = os.path.join(tmp.name, "snntorch.nir")
    export_snntorch(net, n_in, path)
    graph = read_nir(path)
    gen = torch.Generator().manual_seed(seed + 1)
    x = (torch.rand(steps, batch, n_in, generator=gen) < rate).float()
    s1, s2 = snntorch_sim(net, x)
    rec = NIRInterpreter(graph).run({"input": x}, record=["1"])
    calib = {"input": (torch.rand(steps, 32, n_in, generator=gen) < rate).double()}
    q, rep = foreign_to_qgraph(graph, steps, calib)
    cmp = compare_float_int(graph, q, {"input": x.double()}, lava_samples=lava_samples)
    out = {"network": f"snnTorch Linear({n_in},{hidden})-Leaky-Linear({hidden},{n_out})-Leaky",
           "steps": steps, "batch": batch, "input_rate": rate,
           "snntorch_vs_interpreter": {
               "hidden_spikes_equal": bool(torch.equal(rec["1"].float(), s1)),
               "output_spikes_equal": bool(torch.equal(rec["output"].float(), s2)),
               "hidden_spikes": int(s1.sum()), "output_spikes": int(s2.sum())},
           "float_vs_int": cmp,
           "max_weight_rounding": max(s.rounding_error for s in rep.synapses.values()),
           "resources": resource_report(q)["totals"]}
    if tmp is not None:
        tmp.cleanup()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lava-samples", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", metavar="FILE.nir", help="keep the exported NIR file here")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    r = run(hidden=a.hidden, steps=a.steps, batch=a.batch, seed=a.seed,
            lava_samples=a.lava_samples, path=a.out)
    if a.json:
        print(json.dumps(r))
        return 0
    sv = r["snntorch_vs_interpreter"]
    fi = r["float_vs_int"]
    print(f"{r['network']}, {r['batch']} sequences x {r['steps']} steps of p={r['input_rate']} "
          "input spikes")
    print(f"snnTorch == NIR interpreter: hidden {sv['hidden_spikes_equal']} "
          f"({sv['hidden_spikes']} spikes), output {sv['output_spikes_equal']} "
          f"({sv['output_spikes']} spikes)")
    for n, p in fi["populations"].items():
        print(f"float NIR vs Loihi 2 integer, node {n}: {p['agreement']:.2%} of spike decisions "
              f"agree ({p['float_spikes']} vs {p['int_spikes']} spikes)")
    print(f"output spike count |float - int|: {fi['readout_mean_abs_diff']:.3f} per neuron and "
          f"sequence (mean count {fi['readout_float_mean_abs']:.3f}); weight rounding up to "
          f"{r['max_weight_rounding']:.2%}")
    print(f"Lava fixed_pt == integer reference on {fi['lava_samples']} sequences: "
          f"{fi['lava_equals_int']}")
    return 0 if fi["lava_equals_int"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
