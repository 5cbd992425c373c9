#!/usr/bin/env python
"""
Benchmark VFNet's fused ops against the path a user would otherwise take.

    python tools/benchmark_ops.py [--device cpu|cuda] [--threads N] [--repeats N] [--quick]
                                  [--ops star_conv,dcn,vfl] [--tf32 [default|all|matmul|none]] [--profile N]
                                  [--dtype float32|bfloat16|float16]

- ``star_conv``: :func:`vfnet.ops.star_deform_conv` vs star offsets built with PyTorch ops
  (:func:`vfnet.ops.star_offsets`) + ``torchvision.ops.deform_conv2d``, on P3 of a
  1333x800 image, (1, 256, 100, 168), and a batch of 2; 256 output channels, no bias (the head's
  star convs). A plain 3x3 ``conv2d`` of the same shape is timed as a yardstick.
- ``dcn``: :func:`vfnet.ops.modulated_deform_conv` (DCNv2) vs ``torchvision.ops.deform_conv2d``
  with the same offsets and mask (:func:`vfnet.ops.modulated_deform_conv_reference`), on the 3x3
  convs of a ResNet-50-DCN backbone for a 1333x800 image: res3's first block (stride 2, from
  (1, 128, 200, 336)), then res3, res4 and res5 at stride 1; as many output channels as input
  channels, no bias, offsets of a few pixels, mask in (0, 1). ``conv2d`` of the same shape and
  stride is the yardstick.
- ``vfl``: :func:`vfnet.ops.fused_varifocal_loss` vs the eager :func:`vfnet.losses.varifocal_loss`, and
  a third column, ``compiled``: ``torch.compile(eager loss, dynamic=True)``, on 2 x 20000 x 80
  and 8 x 21000 x 80 logits (COCO: P3-P7 of a 1333x800 image give ~21000 points) with IoU
  targets at ~0.1% of the (point, class) pairs, reduction "sum". The compiled loss's first call
  (compilation included) is timed too, in a fresh process, with an empty inductor cache
  ("cold") and again with the cache it left ("warm").

``--dtype`` runs the two deformable convs (and their ``conv2d`` yardstick) in bfloat16 or float16:
features, weights, offsets and mask in that dtype, the star conv's boxes in float32 (as the head
passes them); the baselines, whose torchvision kernels have no bfloat16 (CUDA) or low-precision
(CPU) version, compute in float32 from the same values. The VFL stays float32.

Each is timed forward (under ``torch.no_grad``) and forward + backward (gradients of every
differentiable input), medians over ``--repeats`` runs in this process after a warm-up. Peak
memory is the peak above what was allocated before the pass (inputs, weights): on CUDA
``torch.cuda.max_memory_allocated``; on the CPU the peak resident set size of a fresh child
process per measurement (``VmHWM`` after resetting it through ``/proc/self/clear_refs``, with
glibc told to ``mmap`` every allocation of 1 MiB or more so that freed buffers leave the RSS).

``--profile N`` also lists, per case and pass, the N ops (on CUDA: ops and kernels) of the fused
path with the most self time (``torch.profiler``; milliseconds and calls per pass).

Prints a table, then one line of JSON with every number (and the load average of the machine
before and after, since other work on it skews CPU timings).
"""
import argparse
import gc
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

try:
    import vfnet  # noqa: F401
except ImportError:  # running from a source checkout without `make install`
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "projects", "VFNet"))

import torch
import torch.nn.functional as F

from vfnet.losses import varifocal_loss as eager_varifocal_loss
from vfnet.ops import (
    fused_varifocal_loss,
    modulated_deform_conv,
    modulated_deform_conv_reference,
    star_deform_conv,
    star_deform_conv_reference,
    use_fused_kernels,
)

STAR_SHAPES = {"P3 1x256x100x168": (1, 256, 100, 168), "P3 2x256x100x168": (2, 256, 100, 168)}
# name: ((N, C, H, W) of the input, stride)
DCN_SHAPES = {
    "res3 s2 1x128x200x336": ((1, 128, 200, 336), 2),
    "res3 1x128x100x168": ((1, 128, 100, 168), 1),
    "res4 1x256x50x84": ((1, 256, 50, 84), 1),
    "res5 1x512x25x42": ((1, 512, 25, 42), 1),
}
VFL_SHAPES = {"VFL 2x20000x80": (2, 20000, 80), "VFL 8x21000x80": (8, 21000, 80)}
PASSES = ("fwd", "fwd+bwd")


# ------------------------------------------------------------------------------------- inputs


#: --dtype: the deformable convs' dtypes.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def star_inputs(shape, device, requires_grad, dtype=torch.float32):
    """x (N, C, H, W), ltrb (N, 4, H, W; float32 whatever ``dtype``) and weight (C, C, 3, 3)."""
    n, c, h, w = shape
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, h, w, generator=g).to(dtype)
    # Box sides of 0-16 cells (8-128 px at stride 8): many star points fall outside the map near
    # its borders.
    ltrb = torch.rand(n, 4, h, w, generator=g).mul_(16.0)
    weight = torch.randn(c, c, 3, 3, generator=g).mul_(0.01).to(dtype)
    return [t.to(device).requires_grad_(requires_grad) for t in (x, ltrb, weight)]


def dcn_inputs(shape, stride, device, requires_grad, dtype=torch.float32):
    """x, offset (N, 18, Ho, Wo), mask (N, 9, Ho, Wo) and weight (C, C, 3, 3), all of ``dtype``."""
    n, c, h, w = shape
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, h, w, generator=g)
    # Offsets of a few pixels (some samples fall outside near the borders), mask in (0, 1).
    offset = torch.randn(n, 18, ho, wo, generator=g).mul_(2.0)
    mask = torch.rand(n, 9, ho, wo, generator=g)
    weight = torch.randn(c, c, 3, 3, generator=g).mul_(0.01)
    return [t.to(device, dtype).requires_grad_(requires_grad) for t in (x, offset, mask, weight)]


def in_float32(conv):
    """``conv`` computed in float32 from its inputs' values, its output in their dtype (the
    baselines' path for bfloat16/float16)."""

    def run(x, *args, **kwargs):
        args = [a.float() if torch.is_tensor(a) else a for a in args]
        return conv(x.float(), *args, **kwargs).to(x.dtype)

    return run


def vfl_inputs(shape, device, requires_grad):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(*shape, generator=g).mul_(2.0).sub_(4.0)
    targets = torch.zeros(*shape)
    pos = torch.rand(*shape, generator=g) < 1e-3
    targets[pos] = torch.rand(int(pos.sum()), generator=g)
    return [logits.to(device).requires_grad_(requires_grad), targets.to(device)]


_COMPILED_VFL = None


def compiled_varifocal_loss(*args, **kwargs):
    """``torch.compile`` of the eager loss, one compilation for every shape (dynamic shapes)."""
    global _COMPILED_VFL
    if _COMPILED_VFL is None:
        _COMPILED_VFL = torch.compile(eager_varifocal_loss, dynamic=True)
    return _COMPILED_VFL(*args, **kwargs)


VFL_IMPLS = {"ours": fused_varifocal_loss, "baseline": eager_varifocal_loss, "compiled": compiled_varifocal_loss}


def make_fn(op, impl, shape, device, backward, stride=1, dtype=torch.float32):
    """A closure running one pass, and the tensors it needs (kept alive by the caller). ``dtype``:
    the deformable convs' (the VFL is float32)."""
    if op == "dcn":
        x, offset, mask, weight = dcn_inputs(shape, stride, device, backward, dtype)
        if impl == "conv2d":
            fn_out = lambda: F.conv2d(x, weight, stride=stride, padding=1)  # noqa: E731
            grads = (x, weight)
        else:
            conv = modulated_deform_conv if impl == "ours" else modulated_deform_conv_reference
            if impl == "baseline" and dtype != torch.float32:
                conv = in_float32(conv)
            fn_out = lambda: conv(x, offset, mask, weight, stride=stride, padding=1)  # noqa: E731
            grads = (x, offset, mask, weight)
        grad_out = (
            torch.randn(shape[0], weight.shape[0], *offset.shape[2:], device=device).to(dtype) if backward else None
        )
        inputs = (x, offset, mask, weight, grad_out)
    elif op == "star_conv":
        x, ltrb, weight = star_inputs(shape, device, backward, dtype)
        if impl == "conv2d":
            fn_out = lambda: F.conv2d(x, weight, padding=1)  # noqa: E731
            grads = (x, weight)
        else:
            conv = star_deform_conv if impl == "ours" else star_deform_conv_reference
            if impl == "baseline" and dtype != torch.float32:
                conv = in_float32(conv)
            fn_out = lambda: conv(x, ltrb, weight)  # noqa: E731
            grads = (x, ltrb, weight)
        grad_out = torch.randn(shape[0], weight.shape[0], shape[2], shape[3], device=device).to(dtype) if backward else None
        inputs = (x, ltrb, weight, grad_out)
    else:
        logits, targets = vfl_inputs(shape, device, backward)
        loss = VFL_IMPLS[impl]
        fn_out = lambda: loss(logits, targets, reduction="sum")  # noqa: E731
        grads = (logits,)
        grad_out = None
        inputs = (logits, targets)

    if not backward:

        def fn():
            with torch.no_grad():
                return fn_out()

    else:

        def fn():
            out = fn_out()
            return torch.autograd.grad(out, grads, grad_out)

    return fn, inputs


# ------------------------------------------------------------------------------------- timing


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def time_pass(fn, device, repeats, warmup):
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        res = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
        del res
    return statistics.median(times), times


def profile_pass(fn, device, top, runs=5):
    """The ``top`` ops (and, on CUDA, kernels) with the most self time over ``runs`` calls of
    ``fn``: a list of {"name", "self_ms" (per call), "calls" (per call)}, most expensive first.
    Self time is device time on CUDA, CPU time on the CPU."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    fn()
    sync(device)
    with profile(activities=activities) as prof:
        for _ in range(runs):
            fn()
        sync(device)
    key = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)[:top]
    return [{"name": e.key, "self_ms": getattr(e, key) / 1e3 / runs, "calls": e.count / runs} for e in events]


# ------------------------------------------------------------------------------------- memory


def _proc_status_kib(key):
    with open("/proc/self/status") as f:
        m = re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.MULTILINE)
    return int(m.group(1)) if m else None


def _reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_child(spec):
    """Runs in a fresh process: one pass, prints the peak RSS above the RSS before it."""
    torch.set_num_threads(spec["threads"])
    op, impl, shape, backward = spec["op"], spec["impl"], tuple(spec["shape"]), spec["backward"]
    stride = spec.get("stride", 1)
    dtype = DTYPES[spec.get("dtype", "float32")]
    # Warm up on a small input (loads kernels, starts the thread pool, sizes BLAS buffers); the
    # VFL on the measured shape itself, so that compilation is not part of the measured pass.
    small = shape if op == "vfl" else (1, 16, 8, 8)
    warm_fn, _ = make_fn(op, impl, small, "cpu", backward, stride, dtype)
    warm_fn()
    del warm_fn
    fn, inputs = make_fn(op, impl, shape, "cpu", backward, stride, dtype)
    gc.collect()
    rss_before = _proc_status_kib("VmRSS")
    exact = _reset_peak_rss()
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = fn()
    peak = _proc_status_kib("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    del result
    if not exact and peak <= maxrss_before:
        peak = maxrss_before  # the pass did not raise the old high-water mark: an upper bound
    print(json.dumps({"peak_extra_bytes": max(0, peak - rss_before) * 1024, "exact": exact}))


def first_call_child(spec):
    """Runs in a fresh process: the first call of the compiled VFL (compilation included)."""
    torch.set_num_threads(spec["threads"])
    fn, inputs = make_fn("vfl", "compiled", tuple(spec["shape"]), spec["device"], spec["backward"])
    sync(spec["device"])
    t0 = time.perf_counter()
    fn()
    sync(spec["device"])
    print(json.dumps({"first_call_s": time.perf_counter() - t0}))


def compiled_first_call_seconds(shape, device, backward, threads, cache_dir):
    """Seconds of the compiled VFL's first call in a fresh process with inductor cache ``cache_dir``."""
    spec = {"shape": list(shape), "device": device, "backward": backward, "threads": threads}
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache_dir, PYTHONWARNINGS="ignore")
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--first-call-child", json.dumps(spec)],
        check=True, capture_output=True, text=True, env=env,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])["first_call_s"]


def cpu_peak_memory(op, impl, shape, backward, threads, stride=1, dtype="float32"):
    spec = {
        "op": op, "impl": impl, "shape": list(shape), "backward": backward, "threads": threads, "stride": stride,
        "dtype": dtype,
    }
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="1048576", PYTHONWARNINGS="ignore")
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--memory-child", json.dumps(spec)],
        check=True, capture_output=True, text=True, env=env,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_extra_bytes"]


def cuda_peak_memory(fn, device):
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    result = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    del result
    return peak


# ------------------------------------------------------------------------------------- main


def run(args):
    device = args.device
    threads = torch.get_num_threads()
    results = []
    cases = {
        "star_conv": [("star_conv", name, shape, 1) for name, shape in STAR_SHAPES.items()],
        "dcn": [("dcn", name, shape, stride) for name, (shape, stride) in DCN_SHAPES.items()],
        "vfl": [("vfl", name, shape, 1) for name, shape in VFL_SHAPES.items()],
    }
    if args.quick:
        cases = {op: c[:1] for op, c in cases.items()}
    cases = [case for op in args.ops for case in cases[op]]
    for op, name, shape, stride in cases:
        impls = ("ours", "baseline", "compiled") if op == "vfl" else ("ours", "baseline", "conv2d")
        if args.repeats:
            repeats = args.repeats
        elif device == "cpu":
            repeats = {"star_conv": 5, "dcn": 3, "vfl": 20}[op]
        else:
            repeats = 50
        for pass_name in PASSES:
            backward = pass_name == "fwd+bwd"
            row = {"op": op, "case": name, "shape": list(shape), "pass": pass_name, "repeats": repeats}
            dtype = torch.float32 if op == "vfl" else DTYPES[args.dtype]
            row["dtype"] = str(dtype).replace("torch.", "")
            if op == "dcn":
                row["stride"] = stride
            for impl in impls:
                fn, inputs = make_fn(op, impl, shape, device, backward, stride, dtype)
                median, times = time_pass(fn, device, repeats, args.warmup)
                row[f"{impl}_ms"] = median * 1e3
                row[f"{impl}_ms_all"] = [round(t * 1e3, 2) for t in times]
                if impl == "ours" and args.profile:
                    row["ours_profile"] = profile_pass(fn, device, args.profile)
                if impl != "conv2d" and not args.no_memory:
                    if device == "cuda":
                        row[f"{impl}_peak_bytes"] = cuda_peak_memory(fn, device)
                    else:
                        del fn, inputs
                        gc.collect()
                        row[f"{impl}_peak_bytes"] = cpu_peak_memory(
                            op, impl, shape, backward, threads, stride, row["dtype"]
                        )
                print(f"  {name:22s} {pass_name:8s} {impl:9s} {median * 1e3:10.2f} ms", file=sys.stderr, flush=True)
            row["speedup"] = row["baseline_ms"] / row["ours_ms"]
            if "compiled_ms" in row:
                row["ours_over_compiled"] = row["ours_ms"] / row["compiled_ms"]
                if "compiled_peak_bytes" in row:
                    row["ours_over_compiled_peak"] = row["ours_peak_bytes"] / max(1, row["compiled_peak_bytes"])
                if not args.no_first_call:
                    with tempfile.TemporaryDirectory() as cold:
                        row["compiled_first_call_cold_s"] = compiled_first_call_seconds(
                            shape, device, backward, threads, cold
                        )
                        row["compiled_first_call_warm_s"] = compiled_first_call_seconds(
                            shape, device, backward, threads, cold
                        )
            if "conv2d_ms" in row:
                row["ours_over_conv2d"] = row["ours_ms"] / row["conv2d_ms"]
            if "ours_peak_bytes" in row:
                row["peak_ratio"] = row["ours_peak_bytes"] / max(1, row["baseline_peak_bytes"])
            results.append(row)
    return results


def targets(results, device):
    """The issue's targets, evaluated on the forward + backward rows."""
    checks = []
    for r in results:
        if r["pass"] != "fwd+bwd":
            continue
        if device == "cpu" and r["op"] == "star_conv":
            checks.append((f"{r['case']}: fwd+bwd >= 2x faster", r["speedup"] >= 2.0))
            if "peak_ratio" in r:
                checks.append((f"{r['case']}: peak extra memory <= 1/2", r["peak_ratio"] <= 0.5))
        elif device == "cpu" and r["op"] == "vfl":
            checks.append((f"{r['case']}: fwd+bwd >= 3x faster", r["speedup"] >= 3.0))
            if "peak_ratio" in r:
                checks.append((f"{r['case']}: peak extra memory <= 1/4", r["peak_ratio"] <= 0.25))
        elif device == "cuda" and r["op"] == "star_conv":
            checks.append((f"{r['case']}: fwd+bwd <= 1.5x conv2d", r["ours_over_conv2d"] <= 1.5))
        elif device == "cuda" and r["op"] == "vfl":
            checks.append((f"{r['case']}: fwd+bwd >= 5x faster", r["speedup"] >= 5.0))
    return checks


def print_table(results, device):
    mib = lambda b: f"{b / 2**20:9.1f}" if b is not None else "        -"  # noqa: E731
    header = (
        f"{'op':9s} {'case':22s} {'pass':8s} {'ours ms':>9s} {'base ms':>9s} {'speedup':>8s} "
        f"{'conv2d ms':>9s} {'ours/conv':>9s} {'ours MiB':>9s} {'base MiB':>9s} {'mem ratio':>9s}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        conv = f"{r['conv2d_ms']:9.2f}" if "conv2d_ms" in r else "        -"
        over = f"{r['ours_over_conv2d']:9.2f}" if "ours_over_conv2d" in r else "        -"
        ratio = f"{r['peak_ratio']:9.3f}" if "peak_ratio" in r else "        -"
        print(
            f"{r['op']:9s} {r['case']:22s} {r['pass']:8s} {r['ours_ms']:9.2f} {r['baseline_ms']:9.2f} "
            f"{r['speedup']:7.2f}x {conv} {over} {mib(r.get('ours_peak_bytes'))} "
            f"{mib(r.get('baseline_peak_bytes'))} {ratio}"
        )
    print(
        "(baseline: star_conv = star offsets by PyTorch ops + torchvision deform_conv2d; dcn = torchvision "
        "deform_conv2d with mask; vfl = eager vfnet.losses.varifocal_loss. MiB = peak memory above the inputs "
        "during the pass)"
    )
    compiled = [r for r in results if "compiled_ms" in r]
    if compiled:
        header = (
            f"{'op':9s} {'case':18s} {'pass':8s} {'ours ms':>9s} {'comp ms':>9s} {'ours/comp':>9s} "
            f"{'ours MiB':>9s} {'comp MiB':>9s} {'1st cold s':>10s} {'1st warm s':>10s}"
        )
        print()
        print(header)
        print("-" * len(header))
        for r in compiled:
            first = lambda k: f"{r[k]:10.2f}" if k in r else "         -"  # noqa: E731
            print(
                f"{r['op']:9s} {r['case']:18s} {r['pass']:8s} {r['ours_ms']:9.2f} {r['compiled_ms']:9.2f} "
                f"{r['ours_over_compiled']:9.2f} {mib(r.get('ours_peak_bytes'))} {mib(r.get('compiled_peak_bytes'))} "
                f"{first('compiled_first_call_cold_s')} {first('compiled_first_call_warm_s')}"
            )
        print(
            "(comp: torch.compile of the eager loss, dynamic shapes; 1st: its first call in a fresh "
            "process, compilation included, with an empty / a filled inductor cache)"
        )
    profiled = [r for r in results if "ours_profile" in r]
    if profiled:
        print()
        print(f"{'op':9s} {'case':22s} {'pass':8s} {'self ms':>9s} {'calls':>6s}  fused path: op or kernel")
        for r in profiled:
            for e in r["ours_profile"]:
                print(
                    f"{r['op']:9s} {r['case']:22s} {r['pass']:8s} {e['self_ms']:9.3f} {e['calls']:6.1f}  "
                    f"{e['name'][:90]}"
                )
    for name, ok in targets(results, device):
        print(f"target {'met   ' if ok else 'MISSED'}  {name}")


#: --tf32: torch's defaults, TF32 for matmuls too, matmuls only, or no TF32.
TF32_MODES = ("default", "all", "matmul", "none")


def set_tf32(mode):
    """torch.backends' TF32 flags for a --tf32 mode: "default" leaves torch's (cuDNN on, matmul
    off), "all" turns matmuls' on too, "matmul" turns cuDNN's off and matmuls' on (the CUDA
    column path's float32 products then run as cuBLAS TF32 GEMMs instead of cuDNN TF32 convs; the
    plain conv in float32), "none" turns both off."""
    if mode not in TF32_MODES:
        raise ValueError(f"tf32 mode must be one of {TF32_MODES}, got {mode!r}")
    if mode in ("all", "matmul"):
        torch.backends.cuda.matmul.allow_tf32 = True
    if mode in ("matmul", "none"):
        torch.backends.cudnn.allow_tf32 = False
    if mode == "none":
        torch.backends.cuda.matmul.allow_tf32 = False


def parse_args(argv=None):
    """The command line's options (argparse exits with a message on a bad one)."""
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per measurement")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    parser.add_argument("--quick", action="store_true", help="the first case of each op")
    parser.add_argument(
        "--ops",
        default="star_conv,dcn,vfl",
        type=lambda v: [op.strip() for op in v.split(",") if op.strip()],
        help="comma-separated ops to benchmark: star_conv, dcn, vfl (default: all)",
    )
    parser.add_argument(
        "--tf32",
        nargs="?",
        const="all",
        default="default",
        choices=TF32_MODES,
        help="CUDA float32: 'default' torch's settings (cuDNN's convs, the yardstick's and the deformable "
        "convs' products, in TF32; matmuls in float32), 'all' (the option alone) matmuls in TF32 too, "
        "'matmul' matmuls only (the deformable convs' products as cuBLAS TF32 GEMMs), 'none' no TF32",
    )
    parser.add_argument(
        "--no-first-call", action="store_true", help="skip timing the compiled loss's first call (compilation)"
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="list the N ops (CUDA: and kernels) of the fused path with the most self time, per case and pass",
    )
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=sorted(DTYPES),
        help="the deformable convs' (and their conv2d yardstick's) dtype; the baselines compute in float32, "
        "the VFL stays float32",
    )
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--first-call-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = [op for op in args.ops if op not in ("star_conv", "dcn", "vfl")]
    if unknown:
        parser.error(f"--ops: unknown op(s) {', '.join(unknown)} (choose from star_conv, dcn, vfl)")
    if args.profile < 0:
        parser.error(f"--profile: expected a number of ops >= 0, got {args.profile}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no GPU is available")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.memory_child is not None:
        memory_child(json.loads(args.memory_child))
        return 0
    if args.first_call_child is not None:
        first_call_child(json.loads(args.first_call_child))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    set_tf32(args.tf32)
    if not use_fused_kernels(torch.device(args.device, 0) if args.device == "cuda" else torch.device("cpu")):
        print(f"warning: vfnet._C has no kernels for {args.device}: 'ours' is the pure-PyTorch fallback",
              file=sys.stderr)
    load_before = os.getloadavg()
    results = run(args)
    load_after = os.getloadavg()
    if args.dtype != "float32":
        print(f"star_conv and dcn (ours, conv2d) in {args.dtype}; their baselines in float32")
    print_table(results, args.device)
    info = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "cuda_arch_list": getattr(sys.modules.get("vfnet._C"), "cuda_arch_list", None),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_tf32": torch.backends.cudnn.allow_tf32,
        "dtype": args.dtype,
        # the CUDA deformable convs' path (csrc/cuda/sampled_conv.cuh): "columns" (default) or "sampled"
        "cuda_deform_conv": os.environ.get("VFNET_CUDA_DEFORM_CONV") or "columns",
        "load_avg_before": load_before,
        "load_avg_after": load_after,
        "targets": {name: ok for name, ok in targets(results, args.device)},
        "results": results,
    }
    print(f"load average (1, 5, 15 min): before {load_before}, after {load_after}")
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
