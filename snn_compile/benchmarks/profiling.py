"""Where a piece of torch work spends its time: ``torch.profiler`` summed by family of
operation, shared by ``bench_emulator --profile`` (one token window) and ``train_speed
--profile`` (one training step).

On CUDA each kernel's device time counts; on the CPU each ``aten::`` operator's own CPU
time; annotated ranges (the optimiser's ``Optimizer.step#...``), which span kernels
already counted, are left out. ``FAMILIES`` names each kernel or operator by substrings of its name, tried in
order (a fused kernel's generated name lists the operations it fused, so inductor's
kernels are "elementwise" whatever they fuse)."""

from __future__ import annotations

import re
from typing import Callable, Dict

# record_function ranges: "Optimizer.step#AdamW.step", "ProfilerStep#3" (kernel names
# hold "#" only inside, as in "{lambda()#1}")
_ANNOTATION = re.compile(r"^[\w.]+#")

FAMILIES = (("attention", ("fmha", "flash", "scaled_dot_product", "efficient_attention")),
            ("matmul", ("gemm", "aten::mm", "aten::addmm", "aten::matmul", "aten::bmm",
                        "_int_mm", "cutlass", "imma", "igemm")),
            ("normalisation", ("layer_norm", "GammaBeta", "native_layer_norm")),
            ("optimizer", ("multi_tensor_apply", "_foreach", "fused_adam")),
            ("elementwise", ("triton_", "cpp_fused", "Torch-Compiled")),
            ("copy and fill", ("copy", "fill", "zero_", "Fill", "Memset", "Memcpy")),
            ("index (gather, scatter)", ("index", "gather", "scatter")),
            ("reduction", ("reduce_kernel", "aten::sum", "aten::mean", "aten::amax",
                           "aten::max", "aten::norm", "cumsum", "scan")),
            ("elementwise", ("elementwise_kernel", "aten::mul", "aten::add", "aten::sub",
                             "aten::neg", "aten::abs", "aten::div", "shift", "aten::where",
                             "aten::clamp", "aten::clip", "aten::gt", "aten::lt", "aten::ge",
                             "aten::le", "aten::eq", "aten::ne", "aten::bitwise",
                             "aten::masked_fill")))


def is_annotation(name: str) -> bool:
    return bool(_ANNOTATION.match(name))


def family(name: str) -> str:
    for fam, keys in FAMILIES:
        if any(k in name for k in keys):
            return fam
    return "other"


def profile_call(fn: Callable[[], None], cuda: bool, top: int = 10) -> dict:
    """``fn()`` once under ``torch.profiler`` (``fn`` synchronises the device itself):
    ``{"time": "device" | "cpu", "total_ms", "families": {family: {"ms", "share"}},
    "top": [{"name", "ms", "calls", "family"}]}``, ``top`` largest first."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        fn()
    rows: Dict[str, list] = {}
    for e in prof.key_averages():
        if getattr(e, "is_user_annotation", False) or is_annotation(e.key):
            continue            # a range ("Optimizer.step#AdamW.step") over kernels counted
        if cuda:
            if e.device_type != DeviceType.CUDA or e.self_device_time_total <= 0:
                continue
            t = e.self_device_time_total
        else:
            if not e.key.startswith("aten::") or e.self_cpu_time_total <= 0:
                continue
            t = e.self_cpu_time_total
        r = rows.setdefault(e.key, [0.0, 0])
        r[0] += t / 1e3
        r[1] += e.count
    total = sum(r[0] for r in rows.values())
    fams: Dict[str, float] = {}
    for k, (ms, _) in rows.items():
        fams[family(k)] = fams.get(family(k), 0.0) + ms
    ranked = sorted(rows.items(), key=lambda kv: -kv[1][0])[:top]
    return {"time": "device" if cuda else "cpu", "total_ms": total,
            "families": {f: {"ms": ms, "share": ms / total if total else 0.0}
                         for f, ms in sorted(fams.items(), key=lambda kv: -kv[1])},
            "top": [{"name": k, "ms": ms, "calls": n, "family": family(k)}
                    for k, (ms, n) in ranked]}


def print_profile(title: str, pr: dict) -> None:
    print(f"{title}: {pr['total_ms']:.1f} ms of {pr['time']} time")
    for f, v in pr["families"].items():
        print(f"  {f:<26} {v['ms']:8.2f} ms  {100 * v['share']:5.1f} %")
    for t in pr["top"]:
        print(f"    {t['ms']:8.2f} ms  {t['calls']:4d} calls  {t['name'][:70]}")
