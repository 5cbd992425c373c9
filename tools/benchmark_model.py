#!/usr/bin/env python
"""
Speed of a detector end to end: images per second in inference and per training step, VFNet
against Detectron2's own FCOS R-50 in the same run.

    python tools/benchmark_model.py [--config-file CFG] [--weights CKPT] [--device cpu|cuda]
        [--threads N] [--modes inference,train] [--size 800x1216] [--batch 1]
        [--train-size 512x640] [--train-batch 2] [--repeats 3] [--warmup 1]
        [--amp bf16|fp16] [--channels-last] [--compile [MODE]] [--no-fcos] [--breakdown] [--profile N]
        [--count-calls] [--json OUT.json] [CFG overrides key=value ...]

- Models: VFNet from ``--config-file`` (default the zoo's R-50 1x) with ``--weights`` (default:
  the config's random initialisation), and, unless ``--no-fcos``, Detectron2's FCOS R-50 (its
  model zoo's ``COCO-Detection/fcos_R_50_FPN_1x.py``, random weights; its GroupNorm head is
  built with a norm callable, which Detectron2 0.6's ``RetinaNetHead`` needs on current torch).
- Inputs: one random image per batch entry of ``--size`` HxW pixels (800x1216: the test resize
  of a 4:3 COCO image is 800x1067, 1333x800 the largest), already at the test size, so no
  resize is timed; training: ``--train-batch`` images of ``--train-size`` with 8 random boxes each.
- Scores: with random weights every score is the classifier's prior (~0.01) and post-processing
  would see no candidate; ``--spread-scores SEED`` (default 0; -1 to keep the weights) sets both
  classifiers to logits of std ~1 around -2, so that post-processing has thousands of (point,
  class) pairs above VFNet's 0.05, as a trained model does.
- Timing: medians over ``--repeats`` calls after ``--warmup`` calls, in this process, CUDA
  synchronised around each call; the two models' calls alternate, so that a drift of the
  machine's speed weighs on both alike. Besides the ratio of the medians, the ratio of each
  alternating pair of calls (VFNet's i-th over FCOS's i-th): their spread (printed as min /
  median / max) says how far one run's ratio can be trusted. Inference under ``torch.no_grad`` in
  eval mode; a training step is forward + backward of the summed losses + an SGD step, in train
  mode.
- ``--compile [MODE]``: both models' backbone and head compiled by ``torch.compile`` (VFNet's
  ``compile_mode``, :mod:`vfnet.compiling`; the same call for FCOS). The first call of each mode,
  which compiles, is timed apart (``*_first_call_s``; printed for every run: without
  ``--compile`` it is the cost of the caches a first call fills). The detections of the first
  compiled inference call are checked against the eager model's on the same input
  (``compiled_vs_eager``: the fraction matched by class at IoU >= 0.98, the largest score
  difference among them; :func:`match_detections`).
- ``--breakdown``: per-module inference times (forward hooks: the backbone's bottom-up and FPN,
  each direct child of the head, the head's own code between them, post-processing = the rest).
  ``--profile N``: the N most expensive ops of one inference and one training step
  (``torch.profiler``, self time).
- ``--count-calls``: what one inference call and the forward + losses of one training step ask
  of the host (:class:`vfnet.host_calls.HostCallCounter`): ops dispatched (on a GPU each a kernel
  launch from Python) and calls that wait for the device, those of torchvision's batched NMS
  apart (on the CPU it loops over the classes above 4000 boxes, on a GPU above 20000). On a GPU
  at one image per call, these bound the speed rather than the arithmetic.

Prints a table, then one line of JSON with every number.
"""
import argparse
import json
import os
import statistics
import sys
import time
from collections import Counter, defaultdict
from typing import Callable, Dict, List, Optional

try:
    import vfnet  # noqa: F401
except ImportError:  # running from a source checkout without `make install`
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "projects", "VFNet"))

import torch
from torch import nn

from vfnet.compiling import COMPILE_MODES, compile_backbone_and_head  # noqa: E402
from vfnet.head_parts import spread_classifier_scores  # noqa: E402

DEFAULT_CONFIG = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "configs", "COCO-Detection", "vfnet_R_50_FPN_1x.py"
)
FCOS_ZOO_CONFIG = "COCO-Detection/fcos_R_50_FPN_1x.py"


def parse_size(text: str):
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH, e.g. 800x1216, got {text!r}")
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return h, w


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--config-file", default=DEFAULT_CONFIG, help="VFNet config (.py or .yaml)")
    p.add_argument("--weights", default="", help="checkpoint for the VFNet model (default: random weights)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--modes", default="inference,train", help="comma-separated: inference, train")
    p.add_argument("--size", type=parse_size, default=(800, 1216), help="inference image HxW")
    p.add_argument("--batch", type=int, default=1, help="images per inference call")
    p.add_argument("--train-size", type=parse_size, default=(512, 640), help="training image HxW")
    p.add_argument("--train-batch", type=int, default=2, help="images per training step")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--amp", choices=["bf16", "fp16"], default=None, help="autocast dtype (default: float32)")
    p.add_argument("--channels-last", action="store_true", help="models and inputs in channels-last memory format")
    p.add_argument("--compile", nargs="?", const="default", default=None, choices=COMPILE_MODES, metavar="MODE",
                   help="torch.compile both models' backbone and head (vfnet.compiling; a bare --compile: 'default'; "
                   f"modes: {', '.join(COMPILE_MODES)}); the first call of each mode, which compiles, is timed apart")
    p.add_argument("--no-fcos", action="store_true", help="VFNet only")
    p.add_argument("--spread-scores", type=int, default=0, metavar="SEED", help="-1: keep the classifier weights")
    p.add_argument("--breakdown", action="store_true", help="per-module inference times")
    p.add_argument("--profile", type=int, default=0, metavar="N", help="print the N most expensive ops")
    p.add_argument("--count-calls", action="store_true", help="count the ops dispatched and the waits for the device")
    p.add_argument("--json", default=None, help="also write the JSON line to this file")
    p.add_argument("opts", nargs="*", default=[], help="VFNet config overrides key=value")
    args = p.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(args.modes) - {"inference", "train"}
    if unknown:
        p.error(f"--modes: unknown {sorted(unknown)}; choose from inference, train")
    if args.repeats < 1 or args.batch < 1 or args.train_batch < 1:
        p.error("--repeats, --batch and --train-batch must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA device")
    if args.compile and (args.breakdown or args.count_calls):
        p.error("--compile: --breakdown and --count-calls measure eager modules and ops; run them without it")
    return args


# ------------------------------------------------------------------------------------- models


def build_vfnet(config_file: str, weights: str, opts: List[str], device: str) -> nn.Module:
    """The VFNet (or any model) of a LazyConfig ``.py`` / yacs ``.yaml`` with ``weights`` loaded."""
    from detectron2.config import CfgNode, instantiate
    from detectron2.modeling import build_model

    from vfnet.checkpoint import VFNetCheckpointer
    from vfnet.engine.config import load_config

    cfg = load_config(config_file, opts)
    if isinstance(cfg, CfgNode):
        cfg.MODEL.DEVICE = device
        model = build_model(cfg)
    else:
        model = instantiate(cfg.model).to(device)
    if weights:
        VFNetCheckpointer(model, require_head=True).load(weights)
    return model


def _group_norm_32(channels: int) -> nn.Module:
    # Detectron2 0.6's RetinaNetHead calls get_norm(norm, 1) to name the norm: GroupNorm(32, 1) is
    # refused by current torch, so the name is asked of a one-group norm.
    return nn.GroupNorm(32 if channels % 32 == 0 else 1, channels)


def build_detectron2_fcos(device: str) -> nn.Module:
    """Detectron2's FCOS R-50 from its model zoo config, random weights."""
    from detectron2 import model_zoo
    from detectron2.config import instantiate

    cfg = model_zoo.get_config(FCOS_ZOO_CONFIG)
    cfg.model.head.norm = _group_norm_32
    model = instantiate(cfg.model).to(device)
    model.losses = _float32_losses(model.losses, torch.device(device).type)
    return model


def _float32_losses(losses, device_type: str):
    """``losses`` run outside autocast on float32 copies of its floating-point tensor arguments.

    Detectron2's FCOS loss goes through fvcore's ``giou_loss``, whose in-place masked assignment
    fails on bfloat16/float16 predictions under autocast ("Index put requires the source and
    destination dtypes match"); VFNet casts its predictions to float32 for its losses too."""

    def cast(value):
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value.float()
        if isinstance(value, (list, tuple)):
            return type(value)(cast(v) for v in value)
        return value

    def run(*args, **kwargs):
        with torch.autocast(device_type=device_type, enabled=False):
            return losses(*[cast(a) for a in args], **{k: cast(v) for k, v in kwargs.items()})

    return run


# ------------------------------------------------------------------------------------- inputs


def inference_inputs(size, batch: int, seed: int = 0) -> List[Dict]:
    g = torch.Generator().manual_seed(seed)
    h, w = size
    return [
        {"image": torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8).float(), "height": h, "width": w}
        for _ in range(batch)
    ]


def training_inputs(size, batch: int, num_classes: int, boxes_per_image: int = 8, seed: int = 1) -> List[Dict]:
    from detectron2.structures import Boxes, Instances

    g = torch.Generator().manual_seed(seed)
    h, w = size
    inputs = []
    for d in inference_inputs(size, batch, seed):
        xy = torch.rand(boxes_per_image, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
        wh = (torch.rand(boxes_per_image, 2, generator=g) * 0.5 + 0.05) * torch.tensor([w, h])
        boxes = torch.cat([xy, torch.minimum(xy + wh, torch.tensor([w - 1.0, h - 1.0]))], dim=1)
        inst = Instances((h, w))
        inst.gt_boxes = Boxes(boxes)
        inst.gt_classes = torch.randint(0, num_classes, (boxes_per_image,), generator=g)
        inputs.append({**d, "instances": inst})
    return inputs


def num_classes_of(model: nn.Module) -> int:
    n = getattr(model, "num_classes", None)
    if not isinstance(n, int):
        raise ValueError(f"{type(model).__name__} has no integer num_classes")
    return n


# ------------------------------------------------------------------------------------- timing


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_call(fn: Callable[[], object], device: str) -> float:
    """Seconds of one call of ``fn``, CUDA synchronised before and after."""
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def autocast_context(device: str, amp: Optional[str]):
    if amp is None:
        return torch.autocast(device_type=device, enabled=False)
    return torch.autocast(device_type=device, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def inference_fn(model, inputs, device, amp):
    def run():
        with torch.no_grad(), autocast_context(device, amp):
            return model(inputs)

    return run


def training_step_fn(model, inputs, device, amp):
    from detectron2.utils.events import EventStorage

    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-6, momentum=0.9)

    def run():
        with EventStorage(0), autocast_context(device, amp):
            losses = model(inputs)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return run


def training_forward_fn(model, inputs, device, amp):
    """The forward and losses of a training step (no backward)."""
    from detectron2.utils.events import EventStorage

    def run():
        with EventStorage(0), autocast_context(device, amp):
            return model(inputs)

    return run


NMS_FILES = ("torchvision/ops/boxes.py",)


def count_host_calls(fn) -> Dict:
    """The ops dispatched and the waits for the device of one call of ``fn``, those of
    torchvision's batched NMS apart (see ``--count-calls``)."""
    from vfnet.host_calls import HostCallCounter

    with HostCallCounter(aside=NMS_FILES) as calls:
        fn()
    return {
        "ops": calls.num_ops,
        "waits": len(calls.waits),
        "waits_by_kind": dict(Counter(calls.waits)),
        "nms_ops": sum(calls.ops_aside.values()),
        "nms_waits": len(calls.waits_aside),
    }


class ModuleTimer:
    """Wall time of the forward calls of chosen modules (summed over calls), with CUDA sync."""

    def __init__(self, modules: Dict[str, nn.Module], device: str):
        self.totals = defaultdict(float)
        self._handles = []
        self._starts = {}
        for name, module in modules.items():
            self._handles.append(module.register_forward_pre_hook(self._pre(name)))
            self._handles.append(module.register_forward_hook(self._post(name)))
        self.device = device

    def _pre(self, name):
        def hook(module, inputs):
            _sync(self.device)
            self._starts[name] = time.perf_counter()

        return hook

    def _post(self, name):
        def hook(module, inputs, output):
            _sync(self.device)
            self.totals[name] += time.perf_counter() - self._starts.pop(name)

        return hook

    def remove(self):
        for h in self._handles:
            h.remove()


def inference_breakdown(model, inputs, device, amp) -> Dict[str, float]:
    """Seconds of one (warm) inference call spent in: the backbone's bottom-up, the rest of the
    backbone (FPN), each direct child of the head, the head's own code, everything else (pre- and
    post-processing), and the whole call."""
    parts: Dict[str, nn.Module] = {"backbone": model.backbone, "head": model.head}
    if hasattr(model.backbone, "bottom_up"):
        parts["backbone.bottom_up"] = model.backbone.bottom_up
    children = {f"head.{n}": m for n, m in model.head.named_children()}
    parts.update(children)
    timer = ModuleTimer(parts, device)
    try:
        total = time_call(inference_fn(model, inputs, device, amp), device)
    finally:
        timer.remove()
    t = timer.totals
    rows = {}
    if "backbone.bottom_up" in t:
        rows["backbone: bottom-up"] = t["backbone.bottom_up"]
        rows["backbone: FPN"] = t["backbone"] - t["backbone.bottom_up"]
    else:
        rows["backbone"] = t["backbone"]
    for name in children:
        rows[name] = t[name]
    rows["head: own code"] = t["head"] - sum(t[n] for n in children)
    rows["pre/post-processing"] = total - t["backbone"] - t["head"]
    rows["total"] = total
    return rows


def pair_ratios(times: List[float], baseline_times: List[float]) -> List[float]:
    """times[i] / baseline_times[i]: the ratio of each alternating pair of calls."""
    if len(times) != len(baseline_times):
        raise ValueError(f"pair_ratios: {len(times)} times against {len(baseline_times)} baseline times")
    return [t / b for t, b in zip(times, baseline_times)]


def describe_ratios(ratios: Dict[str, float], pairs: Dict[str, List[float]]) -> str:
    """'inference_s 1.013x (pairs 0.990-1.004-1.052x), ...': each ratio of medians with the
    min-median-max of its pairs' ratios."""
    parts = []
    for key, ratio in ratios.items():
        text = f"{key} {ratio:.3f}x"
        if pairs.get(key):
            p = pairs[key]
            text += f" (pairs {min(p):.3f}-{statistics.median(p):.3f}-{max(p):.3f}x)"
        parts.append(text)
    return ", ".join(parts)


def profile_ops(fn, device: str, top: int) -> str:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    fn()
    with profile(activities=activities) as prof:
        fn()
        _sync(device)
    key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=top)


# ------------------------------------------------------------------------------------- main


def prepare(model: nn.Module, args) -> nn.Module:
    """The model as timed, but for ``--compile`` (applied after the eager reference detections)."""
    if args.spread_scores >= 0:
        spread_classifier_scores(model, args.spread_scores)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def match_detections(detections, reference, min_iou: float = 0.98) -> Dict[str, float]:
    """How far the ``Instances`` ``detections`` agree with ``reference`` (e.g. a compiled model's
    with the eager model's, which differ by rounding): ``matched``, the fraction of detections with
    a reference detection of the same class at IoU >= ``min_iou``; ``score_diff``, the largest
    score difference over the matched (0 if none). 1.0 for two empty sets."""
    if len(detections) == 0:
        return {"matched": 1.0 if len(reference) == 0 else 0.0, "score_diff": 0.0}
    if len(reference) == 0:
        return {"matched": 0.0, "score_diff": 0.0}
    from detectron2.structures import pairwise_iou

    iou = pairwise_iou(detections.pred_boxes, reference.pred_boxes)
    iou = iou * (detections.pred_classes[:, None] == reference.pred_classes[None, :])
    best, index = iou.max(dim=1)
    ok = best >= min_iou
    diffs = (detections.scores[ok] - reference.scores[index[ok]]).abs()
    return {"matched": ok.float().mean().item(), "score_diff": diffs.max().item() if len(diffs) else 0.0}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = {"vfnet": build_vfnet(args.config_file, args.weights, args.opts, args.device)}
    if not args.no_fcos:
        models["d2_fcos"] = build_detectron2_fcos(args.device)
    models = {k: prepare(m, args) for k, m in models.items()}
    eager_detections = {}
    if args.compile:
        if "inference" in args.modes:
            # What the compiled models' first inference call is checked against.
            eager_inputs = inference_inputs(args.size, args.batch)
            for name, model in models.items():
                model.eval()
                eager_detections[name] = [o["instances"] for o in inference_fn(model, eager_inputs, args.device, args.amp)()]
        for model in models.values():
            compile_backbone_and_head(model, args.compile)

    # The models' calls alternate (A, B, A, B, ...), so that a drift of the machine's speed
    # (other jobs, frequency, the allocator's state) weighs on both alike.
    results = {name: {} for name in models}
    for mode in args.modes:
        runners, batch_of = {}, {}
        inputs = inference_inputs(args.size, args.batch) if mode == "inference" else None
        for name, model in models.items():
            if mode == "inference":
                model.eval()
                runners[name] = inference_fn(model, inputs, args.device, args.amp)
            else:
                model.train()
                batch_of[name] = training_inputs(args.train_size, args.train_batch, num_classes_of(model))
                runners[name] = training_step_fn(model, batch_of[name], args.device, args.amp)
            # The first call (where torch.compile compiles, and caches fill) is timed apart.
            start = time.perf_counter()
            out = runners[name]()
            _sync(args.device)
            results[name][f"{mode}_first_call_s"] = time.perf_counter() - start
            if mode == "inference":
                results[name]["detections_per_image"] = statistics.mean(len(o["instances"]) for o in out)
                if name in eager_detections:
                    agreement = [match_detections(o["instances"], e) for o, e in zip(out, eager_detections[name])]
                    results[name]["compiled_vs_eager"] = {
                        "matched": min(a["matched"] for a in agreement),
                        "score_diff": max(a["score_diff"] for a in agreement),
                    }
        if args.count_calls:
            for name, model in models.items():
                if mode == "inference":
                    counted = runners[name]
                else:
                    # after the first call above: what it builds (cached anchors) is not counted
                    counted = training_forward_fn(model, batch_of[name], args.device, args.amp)
                results[name][f"{mode}_host_calls"] = count_host_calls(counted)
        times = {name: [] for name in models}
        for _ in range(args.warmup):
            for run in runners.values():
                run()
        for _ in range(args.repeats):
            for name, run in runners.items():
                times[name].append(time_call(run, args.device))
        if mode == "inference" and args.breakdown:
            samples = {name: defaultdict(list) for name in models}
            for _ in range(args.repeats):
                for name, model in models.items():
                    parts = inference_breakdown(model, inputs, args.device, args.amp)
                    for part, sec in parts.items():
                        samples[name][part].append(sec)
            for name in models:
                results[name]["breakdown_s"] = {k: statistics.median(v) for k, v in samples[name].items()}
        for name, res in results.items():
            key = "inference_s" if mode == "inference" else "train_step_s"
            res[key] = statistics.median(times[name])
            res[key + "_all"] = times[name]
            if mode == "inference":
                res["images_per_s"] = args.batch / res["inference_s"]
            if args.profile:
                print(f"== {name}: {mode}, top {args.profile} ops by self time")
                print(profile_ops(runners[name], args.device, args.profile))

    print(f"device {args.device}, threads {torch.get_num_threads()}, amp {args.amp or 'off'}, "
          f"channels-last {args.channels_last}, compile {args.compile or 'off'}; medians of {args.repeats}")
    print(f"{'model':10} {'inference s':>12} {'images/s':>9} {'dets/img':>9} {'train step s':>13}")
    for name, res in results.items():
        print(f"{name:10} {res.get('inference_s', float('nan')):12.3f} {res.get('images_per_s', float('nan')):9.2f} "
              f"{res.get('detections_per_image', float('nan')):9.1f} {res.get('train_step_s', float('nan')):13.3f}")
    firsts = ", ".join(
        f"{name} " + " / ".join(f"{res[f'{mode}_first_call_s']:.2f}" for mode in args.modes) for name, res in results.items()
    )
    print(f"first call s ({' / '.join(args.modes)}): {firsts}")
    if eager_detections:
        print("compiled vs eager detections (same class, IoU >= 0.98): " + ", ".join(
            f"{name} {res['compiled_vs_eager']['matched']:.1%} matched, scores within "
            f"{res['compiled_vs_eager']['score_diff']:.1e}" for name, res in results.items()))
    ratios, pairs = {}, {}
    if "d2_fcos" in results:
        for key in ("inference_s", "train_step_s"):
            if key in results["vfnet"]:
                ratios[key] = results["vfnet"][key] / results["d2_fcos"][key]
                pairs[key] = pair_ratios(results["vfnet"][key + "_all"], results["d2_fcos"][key + "_all"])
        print("VFNet / FCOS: " + describe_ratios(ratios, pairs))
    counted = [(name, mode, res[f"{mode}_host_calls"]) for name, res in results.items()
               for mode in ("inference", "train") if f"{mode}_host_calls" in res]
    if counted:
        print("host calls per call (inference; train: forward + losses), torchvision's batched NMS apart")
        print(f"{'model':10} {'mode':10} {'ops':>6} {'waits':>6} {'NMS ops':>8} {'NMS waits':>10}  waits by kind")
        for name, mode, c in counted:
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(c["waits_by_kind"].items()))
            print(f"{name:10} {mode:10} {c['ops']:6d} {c['waits']:6d} {c['nms_ops']:8d} {c['nms_waits']:10d}  {kinds}")
    for name, res in results.items():
        if "breakdown_s" in res:
            total = res["breakdown_s"]["total"]
            print(f"== {name}: inference breakdown (median ms per call, share)")
            for part, sec in res["breakdown_s"].items():
                print(f"  {part:28} {sec * 1e3:9.1f} {sec / total:7.1%}")
    summary = {
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else None,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "config_file": os.path.relpath(args.config_file),
        "size": list(args.size),
        "batch": args.batch,
        "train_size": list(args.train_size),
        "train_batch": args.train_batch,
        "amp": args.amp,
        "channels_last": args.channels_last,
        "compile": args.compile,
        "cuda_deform_conv": os.environ.get("VFNET_CUDA_DEFORM_CONV") or "columns",
        "load_avg": list(os.getloadavg()),
        "results": results,
        "vfnet_over_fcos": ratios,
        "vfnet_over_fcos_pairs": pairs,
    }
    line = json.dumps(summary)
    print(line)
    if args.json:
        with open(args.json, "w") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
