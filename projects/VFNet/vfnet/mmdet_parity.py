"""
Parity with the reference implementation: build the model an MMDetection fixture describes, load
its converted weights, run its inputs, and measure how far our outputs are from the reference's.

A fixture is the ``.pt`` file the reference generator writes (see ``shared/fixtures/README.md``).
"""
import math
from typing import Dict, List, Mapping, Optional

import torch
from detectron2.config import instantiate
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.events import EventStorage

from .assigners import ATSSAssigner, FCOSAssigner
from .builders import fpn_p3_p7, head_input_shape, pafpnx_p3_p7, point_generator, res2net_bottom_up, resnet_bottom_up
from .head import VFNetHead
from .meta_arch import VFNet
from .mmdet_checkpoint import convert_mmdet_state_dict

__all__ = ["TOLERANCES", "load_fixture", "decode_fixture_weights", "build_vfnet_from_mmdet_config", "check_fixture"]

TOLERANCES = {
    # Head and neck outputs: |ours - reference| <= head_abs + head_rel * |reference| (as
    # torch.allclose). The boxes are exp(logit) x up to 1024 px: a summation order in the convs
    # that differs from MMDetection's (oneDNN's channels-last kernels, the 1x1 conv of the samples
    # of the star convs) moves a logit by ~1e-7 and a 1000 px box by ~1e-3 px, ~1e-6 relative.
    "head_abs": 1e-4,
    "head_rel": 1e-5,
    "loss_rel": 1e-4,  # each loss, relative
    "box_abs": 1e-3,  # detection boxes, pixels
    "score_abs": 1e-5,  # detection scores
}

_LOSS_NAMES = {"loss_cls": "loss_cls", "loss_bbox": "loss_bbox_init", "loss_bbox_rf": "loss_bbox_refine"}


def load_fixture(path: str) -> dict:
    fixture = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(fixture, Mapping) or fixture.get("format_version") != 1:
        raise ValueError(f"{path}: not a reference fixture of format_version 1")
    return fixture


def decode_fixture_weights(fixture: Mapping) -> Dict[str, torch.Tensor]:
    """The fixture's MMDetection state dict as float32 (int8 codes times their power-of-two scale)."""
    scales = fixture.get("state_dict_scale", {})
    return {
        k: (v.float() * scales[k]) if k in scales else (v.float() if v.is_floating_point() else v)
        for k, v in fixture["state_dict"].items()
    }


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise ValueError(f"unsupported reference model config: {what}")


def _bottom_up_config(bb: Mapping):
    """The ResNet/ResNeXt/Res2Net (optionally with DCNv2 stages) of an MMDetection backbone config."""
    _require(bb.get("type") in ("ResNet", "ResNeXt", "Res2Net"), f"backbone {bb.get('type')!r}")
    _require(bb.get("style", "pytorch") in ("pytorch", "caffe"), f"ResNet style {bb.get('style')!r}")
    _require(tuple(bb.get("out_indices", (0, 1, 2, 3))) == (0, 1, 2, 3), "backbone out_indices")
    _require(bb.get("num_stages", 4) == 4, "backbone num_stages")
    dcn = bb.get("dcn")
    deform_on_per_stage = [False] * 4
    if dcn:
        _require(
            dcn.get("type") == "DCNv2" and dcn.get("deform_groups", 1) == 1 and not dcn.get("fallback_on_stride", False),
            f"backbone dcn {dcn} (DCNv2 with one deformable group only)",
        )
        deform_on_per_stage = list(bb.get("stage_with_dcn", (False, True, True, True)))
    base = bb.get("base_channels", 64)
    common = dict(
        depth=bb["depth"],
        norm="FrozenStatsBN",  # MMDetection's BN with norm_eval=True: statistics frozen, affine trained
        deform_on_per_stage=deform_on_per_stage,
        freeze_at=bb.get("frozen_stages", 1) + 1,
    )
    if bb["type"] == "Res2Net":
        _require((bb.get("stem_channels") or base) == base, "Res2Net stem_channels other than base_channels")
        return res2net_bottom_up(base_channels=base, scales=bb.get("scales", 4), base_width=bb.get("base_width", 26), **common)
    is_resnext = bb["type"] == "ResNeXt"
    return resnet_bottom_up(
        stem_channels=bb.get("stem_channels") or base,
        num_groups=bb.get("groups", 1) if is_resnext else 1,
        width_per_group=bb.get("base_width", 4) if is_resnext else base,
        stride_in_1x1=bb.get("style", "pytorch") == "caffe",
        **common,
    )


def _backbone_config(backbone_cfg: Mapping, neck: Mapping):
    """FPN (P6/P7 on P5's output) or PAFPN-X from an MMDetection neck config, on C3-C5."""
    _require(neck.get("type") in ("FPN", "PAFPNX"), f"neck {neck.get('type')!r}")
    _require(neck.get("start_level", 0) == 1 and neck.get("num_outs") == 5, "neck levels (need P3-P7)")
    _require(neck.get("add_extra_convs") in ("on_output", True) and neck.get("relu_before_extra_convs"), "neck extra convs")
    _require(not neck.get("extra_convs_on_inputs", False), "neck extra convs on the inputs")
    bottom_up = _bottom_up_config(backbone_cfg)
    if neck["type"] == "PAFPNX":
        norm_cfg = neck.get("norm_cfg") or {}
        _require(norm_cfg.get("type") == "GN" and norm_cfg.get("num_groups", 32) == 32, f"PAFPNX norm {norm_cfg}")
        _require(neck.get("no_norm_on_lateral", False), "PAFPNX with norm on the laterals")
        _require((neck.get("pafpn_conv_cfg") or {}).get("type") == "DCNv2", "PAFPNX pafpn convs other than DCNv2")
        _require(not neck.get("act_cfg"), "PAFPNX activations")
        return pafpnx_p3_p7(bottom_up, out_channels=neck["out_channels"], norm="GN")
    _require(not neck.get("norm_cfg"), "FPN with a norm")
    return fpn_p3_p7(bottom_up, out_channels=neck["out_channels"])


def build_vfnet_from_mmdet_config(model_cfg: Mapping, meta: Optional[Mapping] = None) -> VFNet:
    """
    Build the :class:`VFNet` equivalent to an MMDetection 2.x VFNet model config dict: any
    ResNet/ResNeXt/Res2Net backbone with or without DCNv2 stages, FPN or PAFPN-X neck,
    VFNetHead with its options, ATSS or FCOS assignment, NMS or Soft-NMS. Raises ``ValueError``
    naming any option it does not reproduce.
    """
    meta = meta or {}
    _require(model_cfg.get("type") == "VFNet", f"detector type {model_cfg.get('type')!r}")
    backbone = instantiate(_backbone_config(model_cfg["backbone"], model_cfg["neck"]))

    h = model_cfg["bbox_head"]
    _require(h.get("type") == "VFNetHead", f"head {h.get('type')!r}")
    norm_cfg = h.get("norm_cfg", {"type": "GN", "num_groups": 32})
    _require(norm_cfg.get("type") == "GN" and norm_cfg.get("num_groups", 32) == 32, f"head norm {norm_cfg}")
    strides = list(h.get("strides", (8, 16, 32, 64, 128)))
    regress_ranges = h.get("regress_ranges", ((-1, 64), (64, 128), (128, 256), (256, 512), (512, 1e8)))
    reg_denoms = [r[-1] for r in regress_ranges]
    reg_denoms[-1] = reg_denoms[-2] * 2
    head = VFNetHead(
        input_shape=head_input_shape(h["in_channels"], strides),
        num_classes=h["num_classes"],
        feat_channels=h.get("feat_channels", 256),
        stacked_convs=h.get("stacked_convs", 4),
        norm="GN",
        dcn_on_last_conv=h.get("dcn_on_last_conv", False),
        gradient_mul=h.get("gradient_mul", 0.1),
        bbox_norm_type=h.get("bbox_norm_type", "reg_denom"),
        reg_denoms=reg_denoms,
    )
    use_atss = h.get("use_atss", True)
    anchor_cfg = h.get("anchor_generator", {"octave_base_scale": 8, "center_offset": 0.0})
    assigner_cfg = model_cfg.get("train_cfg", {}).get("assigner", {"type": "ATSSAssigner", "topk": 9})
    if use_atss:
        _require(assigner_cfg.get("type") == "ATSSAssigner", f"assigner {assigner_cfg.get('type')!r}")
        assigner = ATSSAssigner(topk=assigner_cfg.get("topk", 9))
    else:
        assigner = FCOSAssigner(
            strides,
            regress_ranges=regress_ranges,
            center_sampling=h.get("center_sampling", False),
            center_sample_radius=h.get("center_sample_radius", 1.5),
        )
    loss_cls = h.get("loss_cls", {"type": "VarifocalLoss"})
    use_vfl = h.get("use_vfl", True)
    test = model_cfg.get("test_cfg", {})
    nms = test.get("nms", {"type": "nms", "iou_threshold": 0.6})
    _require(nms.get("type") in ("nms", "soft_nms"), f"nms {nms}")
    mean = meta.get("mean", (123.675, 116.28, 103.53))
    std = meta.get("std", (58.395, 57.12, 57.375))
    return VFNet(
        backbone=backbone,
        head=head,
        head_in_features=["p3", "p4", "p5", "p6", "p7"],
        anchor_generator=instantiate(
            point_generator(
                strides,
                anchor_scale=anchor_cfg.get("octave_base_scale", 8),
                offset=anchor_cfg.get("center_offset", 0.0) if use_atss else 0.5,
            )
        ),
        assigner=assigner,
        num_classes=h["num_classes"],
        use_vfl=use_vfl,
        vfl_alpha=loss_cls.get("alpha", 0.75),
        vfl_gamma=loss_cls.get("gamma", 2.0),
        vfl_iou_weighted=loss_cls.get("iou_weighted", True),
        focal_loss_alpha=loss_cls.get("alpha", 0.25),
        focal_loss_gamma=loss_cls.get("gamma", 2.0),
        loss_cls_weight=loss_cls.get("loss_weight", 1.0),
        loss_bbox_init_weight=h.get("loss_bbox", {}).get("loss_weight", 1.5),
        loss_bbox_refine_weight=h.get("loss_bbox_refine", {}).get("loss_weight", 2.0),
        test_score_thresh=test.get("score_thr", 0.05),
        test_topk_candidates=test.get("nms_pre", 1000),
        test_nms_type=nms["type"],
        test_nms_thresh=nms.get("iou_threshold", 0.6),
        soft_nms_method=nms.get("method", "linear"),
        soft_nms_sigma=nms.get("sigma", 0.5),
        soft_nms_min_score=nms.get("min_score", 1e-3),
        max_detections_per_image=test.get("max_per_img", 100),
        pixel_mean=list(mean),
        pixel_std=list(std),
        input_format="RGB" if meta.get("to_rgb", True) else "BGR",
    )


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        return math.inf
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def _max_excess(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| - head_rel * |b|: what the check compares with ``head_abs``."""
    if a.shape != b.shape:
        return math.inf
    if not a.numel():
        return 0.0
    a, b = a.double(), b.double()
    return float(((a - b).abs() - TOLERANCES["head_rel"] * b.abs()).max())


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = float(a), float(b)
    if a == b:
        return 0.0
    return abs(a - b) / max(abs(b), 1e-12)


def _gt_instances(fixture_inputs: Mapping, image_sizes) -> List[Instances]:
    instances = []
    for boxes, labels, size in zip(fixture_inputs["gt_bboxes"], fixture_inputs["gt_labels"], image_sizes):
        inst = Instances(size)
        inst.gt_boxes = Boxes(boxes.float())
        inst.gt_classes = labels.long()
        instances.append(inst)
    return instances


def _compare_detections(ours: List[Instances], reference: List[Mapping]) -> dict:
    """Match each reference detection to one of ours of the same class (nearest box)."""
    counts_equal, labels_equal = True, True
    box_diff, score_diff = 0.0, 0.0
    counts = []
    for inst, ref in zip(ours, reference):
        boxes, scores, labels = inst.pred_boxes.tensor, inst.scores, inst.pred_classes
        counts.append([len(inst), len(ref["labels"])])
        if len(inst) != len(ref["labels"]):
            counts_equal = False
            continue
        taken = torch.zeros(len(inst), dtype=torch.bool)
        for rb, rs, rl in zip(ref["boxes"].double(), ref["scores"].double(), ref["labels"]):
            candidates = ((labels == rl) & ~taken).nonzero().squeeze(1)
            if len(candidates) == 0:
                labels_equal = False
                break
            dist = (boxes[candidates].double() - rb).abs().amax(dim=1)
            best = candidates[dist.argmin()]
            taken[best] = True
            box_diff = max(box_diff, float(dist.min()))
            score_diff = max(score_diff, abs(float(scores[best]) - float(rs)))
    ok = (
        counts_equal
        and labels_equal
        and box_diff <= TOLERANCES["box_abs"]
        and score_diff <= TOLERANCES["score_abs"]
    )
    return {
        "counts": counts,
        "counts_equal": counts_equal,
        "labels_equal": labels_equal,
        "box_max_abs": box_diff,
        "score_max_abs": score_diff,
        "ok": ok,
    }


@torch.no_grad()
def _run_head(model: VFNet, img: torch.Tensor):
    features = model.backbone(img)
    features = [features[f] for f in model.head_in_features]
    return features, model.head(features)


def check_fixture(fixture: Mapping) -> dict:
    """
    Run every comparison the fixture allows and return a JSON-able report; ``report["ok"]`` is
    True when all of them are within :data:`TOLERANCES`.

    Runs with the number of CPU threads the reference used (``meta['args']['threads']``): the
    order of a convolution's float32 sums depends on how the work is split between threads, and
    with the same split the outputs agree to the last bit.
    """
    threads = fixture["meta"].get("args", {}).get("threads")
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        report = _check_fixture(fixture)
    finally:
        torch.set_num_threads(previous_threads)
    report["threads"] = int(threads) if threads else previous_threads
    return report


def _check_fixture(fixture: Mapping) -> dict:
    meta = fixture["meta"]
    model = build_vfnet_from_mmdet_config(meta["model_cfg"], meta)
    state_dict = convert_mmdet_state_dict(decode_fixture_weights(fixture))
    incompatible = model.load_state_dict(state_dict, strict=False)
    report = {
        "missing_keys": list(incompatible.missing_keys),
        "unexpected_keys": list(incompatible.unexpected_keys),
    }
    model.eval()  # FrozenBN either way; eval keeps the head's outputs identical to train mode
    inputs = fixture["inputs"]
    img = inputs["img"].float()
    image_sizes = [tuple(m["img_shape"][:2]) for m in inputs["img_metas"]]
    images = ImageList(img, image_sizes)

    features, (logits, boxes_init, boxes_refine) = _run_head(model, img)
    ref = fixture["head_outputs_train"]
    # (ours, reference) per level of each compared output
    pairs = {
        "cls_logits": list(zip(logits, ref["cls_scores"])),
        "bbox_init": list(zip(boxes_init, ref["bbox_preds"])),
        "bbox_refine": list(zip(boxes_refine, ref["bbox_preds_refine"])),
    }
    if fixture.get("neck_outs") is not None:
        pairs["neck"] = list(zip(features, fixture["neck_outs"]))
    max_abs = {k: max(_max_abs(a, b) for a, b in v) for k, v in pairs.items()}
    if "neck" in max_abs:
        report["neck_max_abs"] = max_abs.pop("neck")
    report["head_max_abs"] = max_abs
    report["head_max_excess"] = {k: max(_max_excess(a, b) for a, b in v) for k, v in pairs.items()}
    head_ok = all(v <= TOLERANCES["head_abs"] for v in report["head_max_excess"].values())

    predictions = (logits, boxes_init, boxes_refine)
    with torch.no_grad(), EventStorage():
        losses = model.forward_training(images, features, predictions, _gt_instances(inputs, image_sizes))
    report["losses"] = {k: float(losses[v]) for k, v in _LOSS_NAMES.items()}
    report["losses_rel"] = {k: _rel(losses[v], fixture["losses"][k]) for k, v in _LOSS_NAMES.items()}
    atss = [a for a in fixture.get("atss") or [] if a is not None]
    if atss:
        valid = model.valid_points(features, images)
        gt_labels, _ = model.label_points(model.anchor_generator(features), valid, _gt_instances(inputs, image_sizes))
        report["valid_flag_mismatches"] = [
            int((torch.cat(ours) != a["valid_flags"].bool()).sum()) for ours, a in zip(valid, atss)
        ]
        report["assignment_label_mismatches"] = [int((ours != a["labels"]).sum()) for ours, a in zip(gt_labels, atss)]
    assignment_ok = not any(report.get("valid_flag_mismatches", [])) and not any(
        report.get("assignment_label_mismatches", [])
    )

    empty = fixture.get("empty_gt")
    if empty is not None:
        empty_img = empty["img"].float()
        empty_size = tuple(empty["img_meta"]["img_shape"][:2])
        e_features, e_predictions = _run_head(model, empty_img)
        no_gt = Instances(empty_size, gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.long))
        with torch.no_grad(), EventStorage():
            e_losses = model.forward_training(ImageList(empty_img, [empty_size]), e_features, e_predictions, [no_gt])
        report["empty_gt_losses"] = {k: float(e_losses[v]) for k, v in _LOSS_NAMES.items()}
        report["empty_gt_losses_rel"] = {k: _rel(e_losses[v], empty["losses"][k]) for k, v in _LOSS_NAMES.items()}
    losses_ok = all(v <= TOLERANCES["loss_rel"] for v in report["losses_rel"].values()) and all(
        v <= TOLERANCES["loss_rel"] for v in report.get("empty_gt_losses_rel", {}).values()
    )

    default_topk = model.test_topk_candidates
    with torch.no_grad():
        report["detections"] = _compare_detections(
            model.forward_inference(images, features, predictions), fixture["detections"]
        )
        small = fixture.get("detections_small_nms_pre")
        if small is not None:
            model.test_topk_candidates = small["nms_pre"]
            report["detections_small_nms_pre"] = _compare_detections(
                model.forward_inference(images, features, predictions), small["dets"]
            )
            model.test_topk_candidates = default_topk
    dets_ok = report["detections"]["ok"] and report.get("detections_small_nms_pre", {"ok": True})["ok"]

    keys_ok = not report["missing_keys"] and not report["unexpected_keys"]
    report["ok"] = bool(keys_ok and head_ok and assignment_ok and losses_ok and dets_ok)
    return report
