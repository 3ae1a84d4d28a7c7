"""The torch engine's state layout: source histories instead of a ring of every port, a
static per-residue schedule, state bytes per sequence (``Emulator.state_bytes``)."""

import numpy as np
import pytest
import torch

from snn_compile.hw_sim.int_reference import run_token_time
from snn_compile.hw_sim.random_graphs import random_dag_qgraph, random_decoder_qgraph
from snn_compile.hw_sim import emulator
from snn_compile.hw_sim.emulator import Emulator


@pytest.fixture(scope="module")
def shifted():
    """A decoder with token shifts of one and two windows and decaying memories."""
    return random_decoder_qgraph(seed=3, vocab=20, d=16, heads=2, layers=2, T=3, context=12,
                                 token_shift=2, memory_decay=[40, 0])


def _old_layout_bytes(q, B):
    """The previous torch layout from the graph alone: outputs float64, one int64 ring of
    every input port with max(1 + delay) + 1 slots, LIF u and v, accum values."""
    sizes = {k: sum(p.size for p in q.populations.values() if p.kind == k)
             for k in ("input", "lif", "prod", "graded", "accum")}
    n_out = sum(sizes.values())
    n_in = sizes["lif"] + 2 * sizes["prod"] + sizes["graded"] + sizes["accum"]
    L = max(1 + s.delay for s in q.synapses) + 1
    return 8 * B * (n_out + L * n_in + 2 * sizes["lif"] + sizes["accum"])


def test_token_shift_layout_equals_numpy_and_reference_every_step(shifted):
    q = shifted
    assert max(s.delay for s in q.synapses) >= 2 * q.window    # two whole windows back
    tokens = torch.randint(0, 20, (3, 9), generator=torch.Generator().manual_seed(5))
    ref = run_token_time(q, tokens)
    runs = {}
    for engine, ev in (("numpy", None), ("torch", False), ("torch", True)):
        emu = Emulator(q, batch=3, engine=engine, event_driven=ev)
        runs[engine, ev] = run = emu.run_sequence(tokens)
        assert torch.equal(run.logits_int, ref.logits_int), (engine, ev)
        for name, o in ref.outputs.items():
            assert torch.equal(run.outputs[name], o), (engine, ev, name)
        if engine == "torch":
            # delayed synapses read compact histories of their sources, spikes as uint8
            shifted_srcs = {s.src for s in q.synapses if s.token_lag}
            assert shifted_srcs <= set(emu.hist_meta)
            for src, (h, K, slots, dt) in emu.hist_meta.items():
                hist = emu.hist[h]
                assert hist.shape == (K, len(slots), q.pop(src).size, 3)
                assert len(slots) <= q.steps_per_token     # its T active steps, not W
                if q.pop(src).kind == "lif":
                    assert hist.dtype == torch.uint8
                lag = max(s.token_lag for s in q.synapses if s.src == src)
                assert K >= lag + 1 or lag == 0
            assert not hasattr(emu, "ring")
    for key, run in runs.items():      # global time, every step
        for name, out in run.global_outputs.items():
            assert torch.equal(out, runs["numpy", None].global_outputs[name]), (key, name)


def test_states_recorded_every_step_with_token_shift(shifted):
    """Recording u, v updates every LIF at every step (the static schedule skips a LIF's
    silent steps otherwise): equal to the numpy engine's, step for step."""
    tokens = torch.randint(0, 20, (2, 5), generator=torch.Generator().manual_seed(1))
    a = Emulator(shifted, batch=2, engine="numpy").run_sequence(tokens, states=True)
    emu = Emulator(shifted, batch=2, engine="torch")
    b = emu.run_sequence(tokens, states=True)
    assert set(a.global_outputs) == set(b.global_outputs)
    for name, out in a.global_outputs.items():
        assert torch.equal(out, b.global_outputs[name]), name
    c = emu.run_sequence(tokens)                  # the same emulator, back to the skipping plan
    assert torch.equal(c.logits_int, b.logits_int)


def test_state_bytes_exact_and_smaller_than_the_ring(shifted):
    q, B = shifted, 4
    emu = Emulator(q, batch=B, engine="torch")
    sb = emu.state_bytes()
    tensors = [emu.X, emu.A, emu.u, emu.v, emu.acc, emu.S, *emu.hist]
    assert sb["total"] == sum(t.numel() * t.element_size() for t in tensors)
    assert sb["total"] == sum(v for k, v in sb.items() if k != "total")
    assert emu.state_bytes(per_sequence=True)["total"] * B == sb["total"]
    n_lif = sum(p.size for p in q.populations.values() if p.kind == "lif")
    assert sb["u"] == sb["v"] == 4 * B * n_lif          # int32: exact for 24-bit u, v
    old = _old_layout_bytes(q, B)
    assert emu.ring_layout_bytes() == old
    assert sb["total"] * 4 < old, (sb["total"], old)
    hist = sum(v for k, v in sb.items() if k.startswith("hist."))
    assert 0 < hist < sb["X"]            # the delayed sources' T steps, narrow types
    assert Emulator(q, batch=B, engine="numpy").state_bytes() is None


def test_schedule_skips_silent_populations(shifted):
    """A window updates each lazy LIF from its reset to its last input step, each prod and
    graded population at its active steps only; a decaying memory drains at every step."""
    q = shifted
    emu = Emulator(q, batch=1, engine="torch")
    W, T = q.window, q.steps_per_token
    rows = {n: 0 for n in q.populations}
    for plan in emu._plan_for(False):
        for op in plan["neurons"]:
            xs = op[1]
            for n, xr in emu.xrows.items():
                if xs.start <= xr.start < xs.stop:
                    rows[n] += 1
    for n, p in q.populations.items():
        if p.kind in ("prod", "graded"):
            assert rows[n] == T, n
        elif p.kind == "lif":
            assert T <= rows[n] < W, n
        elif p.kind == "accum":        # a decaying one catches up its drains when read
            assert (T <= rows[n] < W) if p.decaying else rows[n] == T, n
    for plan in emu._plan_for(1):          # recording outputs: every drain step in place
        for op in plan["neurons"]:
            assert op[0] != "accum" or op[4] == 0
    assert sum(op[1].stop - op[1].start for plan in emu._plan_for(1) for op in plan["neurons"]
               if op[0] == "accum") == sum(p.size * (W if p.decaying else T)
                                           for p in q.populations.values() if p.kind == "accum")
    full = emu._plan_for(2)                # recording u, v: every LIF at every step
    lif_rows = sum(op[1].stop - op[1].start for plan in full for op in plan["neurons"]
                   if op[0] == "lif")
    assert lif_rows == W * sum(p.size for p in q.populations.values() if p.kind == "lif")


def test_torch_engine_injects_inside_the_token_steps_only(shifted):
    emu = Emulator(shifted, batch=1, engine="torch")
    f = {k: torch.zeros(1, shifted.pop(k).size) for k in shifted.inputs}
    for _ in range(shifted.steps_per_token):
        emu.step(f)
    with pytest.raises(ValueError, match="first T"):
        emu.step(f)
    emu.start_recording()        # unrecorded steps deferred drains: not inside a window
    with pytest.raises(RuntimeError, match="inside a token window"):
        emu.step()


def test_default_shaped_decoder_state_is_a_fraction_of_the_ring():
    """The shipped shape (token shift, 4 heads): under a tenth of the ring's bytes."""
    q = random_decoder_qgraph(seed=0, vocab=40, d=32, heads=4, layers=2, T=4, context=16,
                              token_shift=1)
    emu = Emulator(q, batch=2, engine="torch")
    per_seq = emu.state_bytes(per_sequence=True)["total"]
    assert per_seq * 10 < _old_layout_bytes(q, 1)
    assert np.isclose(per_seq, emu.state_bytes()["total"] / 2)


@pytest.mark.parametrize("fused", [False, True])
def test_deferred_drains_equal_reference(shifted, fused):
    """Unrecorded windows defer a decaying memory's drain steps and catch them up at once
    (``fused``: one torch.compile kernel, inductor's C++ here, Triton on CUDA): logits and
    the memories at every window's end equal the reference and the recorded run."""
    q = shifted
    tokens = torch.randint(0, 20, (3, 8), generator=torch.Generator().manual_seed(2))
    ref = run_token_time(q, tokens)
    emu = Emulator(q, batch=3, engine="torch", fused=fused, event_driven=False)
    rec = Emulator(q, batch=3, engine="torch", event_driven=False)
    rec.start_recording()
    assert any(op[0] == "accum" and op[4] > 1 for plan in emu._plan_for(0)
               for op in plan["neurons"])
    sums = []
    for n in range(tokens.shape[1]):
        sums.append(emu.step_token(tokens[:, n]))
        rec.step_token(tokens[:, n])
        assert torch.equal(emu.acc, rec.acc) and torch.equal(emu.X, rec.X), n
    assert torch.equal(torch.stack(sums, 1), ref.logits_int)


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="device-specific: the CUDA path needs a CUDA GPU, this machine has none")
@pytest.mark.parametrize("batch", [1, 4])
def test_cuda_graphs_and_fused_kernels_equal_reference(shifted, batch):
    """On CUDA: one eager window, then one captured graph replayed for every window, with
    the fused (torch.compile) kernels (batch 1: odd row offsets, the eager ops) == the
    reference, across a reset."""
    q = shifted
    tokens = torch.randint(0, 20, (batch, 9), generator=torch.Generator().manual_seed(7))
    ref = run_token_time(q, tokens).logits_int
    emu = Emulator(q, batch=batch, device="cuda", engine="torch")
    assert emu.cuda_graphs and emu.fused
    for _ in range(2):
        emu.reset()
        got = torch.stack([emu.step_token(tokens[:, n].cuda()) for n in range(9)], 1)
        assert torch.equal(got.cpu(), ref)
    assert emu._graph is not None
    torch.cuda.synchronize()
    assert emu.state_bytes()["total"] * 4 < _old_layout_bytes(q, batch)


def test_fused_dense_epilogue_equals_reference(shifted):
    """``fused``: each float64 matmul's conversion to int64, int32 wrap, exponent shift
    and set/add into its port rows is one kernel, and so is a gather into scattered port
    rows; the logits and every window's end state
    equal the unfused engine's and the reference (inductor's C++ here, Triton on CUDA)."""
    q = shifted
    tokens = torch.randint(0, 20, (4, 6), generator=torch.Generator().manual_seed(11))
    ref = run_token_time(q, tokens)
    fused = Emulator(q, batch=4, engine="torch", fused=True, event_driven=False)
    plain = Emulator(q, batch=4, engine="torch", fused=False, event_driven=False)
    dense = [op for plan in fused._plan_for(0) for op in plan["ports"] if op[0] == "dense"]
    assert dense and any(op[3] or op[4] or len(op[5]) > 1 for op in dense)
    scattered = [op for plan in fused._plan_for(0) for op in plan["ports"]
                 if op[0] == "gather" and op[8] is None]      # gathers into scattered rows
    assert scattered
    sums = []
    for n in range(tokens.shape[1]):
        sums.append(fused.step_token(tokens[:, n]))
        plain.step_token(tokens[:, n])
        assert torch.equal(fused.A, plain.A) and torch.equal(fused.X, plain.X), n
    assert torch.equal(torch.stack(sums, 1), ref.logits_int)
    for kernel in ("dense", "gather_to"):           # compiled and run, not fallen back
        assert emulator._COMPILED.get(kernel) is not None, kernel


def test_fused_general_lif_equals_unfused_every_step():
    """LIFs whose static bounds leave wraps (or a leaky current, or a bias) take the whole
    ``fixed_point.lif_step``; ``fused`` runs it as one kernel (with u, v and the spikes
    written in place): outputs and u, v equal the unfused engine's at every step."""
    q = random_dag_qgraph(1, n_pops=8)
    tokens = torch.randint(0, 8, (4, 5), generator=torch.Generator().manual_seed(4))
    fused = Emulator(q, batch=4, engine="torch", fused=True, event_driven=False)
    plain = Emulator(q, batch=4, engine="torch", fused=False, event_driven=False)
    general = [op for plan in fused._plan_for(0) for op in plan["neurons"]
               if op[0] == "lif" and not op[6]]
    assert general
    for n in range(tokens.shape[1]):
        assert torch.equal(fused.step_token(tokens[:, n]), plain.step_token(tokens[:, n]))
        assert torch.equal(fused.u, plain.u) and torch.equal(fused.v, plain.v), n
        assert torch.equal(fused.X, plain.X), n
    assert torch.equal(fused.run_sequence(tokens).logits_int,
                       run_token_time(q, tokens).logits_int)
    assert emulator._COMPILED.get("lif_full") is not None
