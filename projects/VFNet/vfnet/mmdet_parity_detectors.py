"""
Parity of RetinaNet+VFL, ATSS, FoveaBox and RepPoints with MMDetection's own detectors (focal
loss): build the model a fixture of ``tools/make_mmdet_dense_fixture.py`` describes, load its
converted weights, run its inputs, and measure how far every stage is from MMDetection's.

The fixture (``fx['kind'] == 'mmdet_dense_detector'``) holds MMDetection's config, weights,
inputs, neck and head outputs, assignment labels, losses and detections; see the generator's
docstring for the format. The tolerances are VFNet's (:data:`vfnet.mmdet_parity.TOLERANCES`).
"""
from typing import Callable, Dict, List, Mapping

import torch
from detectron2.config import instantiate
from detectron2.layers import ShapeSpec
from detectron2.modeling import FPN
from detectron2.modeling.meta_arch.retinanet import RetinaNetHead
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.events import EventStorage

from .assigners import ATSSAssigner
from .builders import point_generator, resnet_bottom_up
from .detectors import (
    ATSS,
    ATSSHead,
    FoveaAssigner,
    FoveaBox,
    FoveaHead,
    MaxIoUMatcher,
    MMDetAnchorGenerator,
    MMDetBox2BoxTransform,
    PointAssigner,
    RepPoints,
    RepPointsHead,
    RetinaNetVFL,
)
from .detectors.common import ExtraLevels, valid_flags
from .mmdet_checkpoint_detectors import convert_dense_detector_state_dict
from .mmdet_parity import TOLERANCES, _compare_detections, _max_abs, _rel, decode_fixture_weights

__all__ = ["FIXTURE_KIND", "build_from_mmdet_config", "check_dense_fixture"]

FIXTURE_KIND = "mmdet_dense_detector"
IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise ValueError(f"unsupported reference model config: {what}")


def backbone_from_mmdet_config(model_cfg: Mapping) -> FPN:
    """ResNet (pytorch style, frozen BN) + FPN P3-P7 with the neck's extra levels and norm."""
    bb = model_cfg["backbone"]
    _require(bb.get("type") == "ResNet" and bb.get("style", "pytorch") == "pytorch", f"backbone {bb.get('type')}")
    _require(not bb.get("dcn"), "deformable backbone")
    base = bb.get("base_channels", 64)
    bottom_up = instantiate(
        resnet_bottom_up(
            depth=bb["depth"],
            stem_channels=base,
            width_per_group=base,
            norm="FrozenBN",
            freeze_at=bb.get("frozen_stages", 1) + 1,
        )
    )
    neck = model_cfg["neck"]
    _require(neck.get("type") == "FPN" and neck.get("start_level") == 1 and neck.get("num_outs") == 5, "FPN P3-P7")
    extra = neck.get("add_extra_convs")
    _require(extra in ("on_input", "on_output"), f"FPN add_extra_convs={extra!r}")
    norm_cfg = neck.get("norm_cfg") or {}
    _require(norm_cfg.get("type") in (None, "GN") and norm_cfg.get("num_groups", 32) == 32, f"neck norm {norm_cfg}")
    norm = "GN" if norm_cfg else ""
    out = neck["out_channels"]
    return FPN(
        bottom_up=bottom_up,
        in_features=["res3", "res4", "res5"],
        out_channels=out,
        norm=norm,
        top_block=ExtraLevels(
            neck["in_channels"][-1] if extra == "on_input" else out,
            out,
            in_feature="res5" if extra == "on_input" else "p5",
            relu_before_p7=bool(neck.get("relu_before_extra_convs", False)),
            norm=norm,
        ),
    )


def _common_kwargs(model_cfg: Mapping, meta: Mapping) -> dict:
    test = model_cfg.get("test_cfg", {})
    return dict(
        pixel_mean=list(meta.get("mean", (123.675, 116.28, 103.53))),
        pixel_std=list(meta.get("std", (58.395, 57.12, 57.375))),
        input_format="RGB" if meta.get("to_rgb", True) else "BGR",
        test_score_thresh=test.get("score_thr", 0.05),
        test_topk_candidates=test.get("nms_pre", 1000),
        test_nms_thresh=test["nms"]["iou_threshold"],
        max_detections_per_image=test.get("max_per_img", 100),
    )


def _anchor_generator(anchor_cfg: Mapping) -> MMDetAnchorGenerator:
    """The anchors of an MMDetection ``AnchorGenerator`` config (strides, ratios, octave scales)."""
    return MMDetAnchorGenerator(
        strides=anchor_cfg["strides"],
        ratios=anchor_cfg["ratios"],
        octave_base_scale=anchor_cfg["octave_base_scale"],
        scales_per_octave=anchor_cfg["scales_per_octave"],
    )


def _retinanet(model_cfg: Mapping, meta: Mapping) -> RetinaNetVFL:
    h = model_cfg["bbox_head"]
    ag = h["anchor_generator"]
    stds = h["bbox_coder"].get("target_stds", (1.0, 1.0, 1.0, 1.0))
    _require(h["loss_bbox"]["type"] == "L1Loss", f"RetinaNet box loss {h['loss_bbox']['type']}")
    assigner = model_cfg["train_cfg"]["assigner"]
    num_anchors = len(ag["ratios"]) * ag["scales_per_octave"]
    return RetinaNetVFL(
        backbone=backbone_from_mmdet_config(model_cfg),
        head=RetinaNetHead(
            input_shape=[ShapeSpec(channels=h["in_channels"])] * 5,
            num_classes=h["num_classes"],
            num_anchors=num_anchors,
            conv_dims=[h.get("feat_channels", 256)] * h.get("stacked_convs", 4),
        ),
        head_in_features=IN_FEATURES,
        anchor_generator=_anchor_generator(ag),
        box2box_transform=MMDetBox2BoxTransform(weights=[1.0 / s for s in stds]),
        anchor_matcher=MaxIoUMatcher(assigner["pos_iou_thr"], assigner["neg_iou_thr"], assigner["min_pos_iou"]),
        num_classes=h["num_classes"],
        focal_loss_alpha=h["loss_cls"]["alpha"],
        focal_loss_gamma=h["loss_cls"]["gamma"],
        smooth_l1_beta=0.0,
        box_reg_loss_type="smooth_l1",
        use_vfl=False,
        loss_normalizer="positives_per_image",
        ignore_padding=True,
        **_common_kwargs(model_cfg, meta),
    )


def _norm(head_cfg: Mapping) -> str:
    norm_cfg = head_cfg.get("norm_cfg") or {}
    _require(norm_cfg.get("type") in (None, "GN") and norm_cfg.get("num_groups", 32) == 32, f"head norm {norm_cfg}")
    return "GN" if norm_cfg else ""


def _feature_shapes(h: Mapping, strides) -> List[ShapeSpec]:
    return [ShapeSpec(channels=h["in_channels"], stride=s) for s in strides]


def _atss(model_cfg: Mapping, meta: Mapping) -> ATSS:
    h = model_cfg["bbox_head"]
    ag = h["anchor_generator"]
    _require(h["loss_bbox"]["type"] == "GIoULoss", f"ATSS box loss {h['loss_bbox']['type']}")
    _require(h.get("reg_decoded_bbox", True), "ATSS reg_decoded_bbox=False")
    stds = h["bbox_coder"].get("target_stds", (0.1, 0.1, 0.2, 0.2))
    return ATSS(
        backbone=backbone_from_mmdet_config(model_cfg),
        head=ATSSHead(
            input_shape=_feature_shapes(h, ag["strides"]),
            num_classes=h["num_classes"],
            num_anchors=len(ag["ratios"]) * ag["scales_per_octave"],
            feat_channels=h.get("feat_channels", 256),
            stacked_convs=h.get("stacked_convs", 4),
            norm=_norm({"norm_cfg": h.get("norm_cfg", {"type": "GN", "num_groups": 32})}),
        ),
        head_in_features=IN_FEATURES,
        anchor_generator=_anchor_generator(ag),
        box2box_transform=MMDetBox2BoxTransform(weights=[1.0 / s for s in stds]),
        assigner=ATSSAssigner(topk=model_cfg["train_cfg"]["assigner"].get("topk", 9)),
        num_classes=h["num_classes"],
        use_vfl=False,
        focal_loss_alpha=h["loss_cls"]["alpha"],
        focal_loss_gamma=h["loss_cls"]["gamma"],
        loss_bbox_weight=h["loss_bbox"].get("loss_weight", 2.0),
        loss_centerness_weight=h.get("loss_centerness", {}).get("loss_weight", 1.0),
        **_common_kwargs(model_cfg, meta),
    )


def _fovea(model_cfg: Mapping, meta: Mapping) -> FoveaBox:
    h = model_cfg["bbox_head"]
    _require(not h.get("with_deform", False), "FoveaBox with_deform=True")
    strides = h.get("strides", (8, 16, 32, 64, 128))
    return FoveaBox(
        backbone=backbone_from_mmdet_config(model_cfg),
        head=FoveaHead(
            input_shape=_feature_shapes(h, strides),
            num_classes=h["num_classes"],
            feat_channels=h.get("feat_channels", 256),
            stacked_convs=h.get("stacked_convs", 4),
            norm=_norm(h),
        ),
        head_in_features=IN_FEATURES,
        point_generator=instantiate(point_generator(strides, anchor_scale=1, offset=0.5)),
        assigner=FoveaAssigner(scale_ranges=h["scale_ranges"], sigma=h.get("sigma", 0.4)),
        base_edges=h["base_edge_list"],
        num_classes=h["num_classes"],
        use_vfl=False,
        focal_loss_alpha=h["loss_cls"]["alpha"],
        focal_loss_gamma=h["loss_cls"]["gamma"],
        smooth_l1_beta=h["loss_bbox"].get("beta", 0.11),
        loss_bbox_weight=h["loss_bbox"].get("loss_weight", 1.0),
        **_common_kwargs(model_cfg, meta),
    )


def _reppoints(model_cfg: Mapping, meta: Mapping) -> RepPoints:
    h = model_cfg["bbox_head"]
    _require(h.get("transform_method") == "moment", f"RepPoints transform {h.get('transform_method')!r}")
    _require(not h.get("use_grid_points", False) and h.get("center_init", True), "RepPoints grid points / no center init")
    strides = h.get("point_strides", (8, 16, 32, 64, 128))
    init = model_cfg["train_cfg"]["init"]["assigner"]
    refine = model_cfg["train_cfg"]["refine"]["assigner"]
    _require(init["type"] == "PointAssigner" and refine["type"] == "MaxIoUAssigner", "RepPoints assigners")
    return RepPoints(
        backbone=backbone_from_mmdet_config(model_cfg),
        head=RepPointsHead(
            input_shape=_feature_shapes(h, strides),
            num_classes=h["num_classes"],
            feat_channels=h.get("feat_channels", 256),
            point_feat_channels=h.get("point_feat_channels", 256),
            stacked_convs=h.get("stacked_convs", 3),
            num_points=h.get("num_points", 9),
            gradient_mul=h.get("gradient_mul", 0.1),
            moment_mul=h.get("moment_mul", 0.01),
            norm=_norm(h),
        ),
        head_in_features=IN_FEATURES,
        point_generator=instantiate(point_generator(strides, anchor_scale=1, offset=0.0)),
        init_assigner=PointAssigner(scale=init.get("scale", 4), pos_num=init.get("pos_num", 1)),
        refine_matcher=MaxIoUMatcher(refine["pos_iou_thr"], refine["neg_iou_thr"], refine["min_pos_iou"]),
        num_classes=h["num_classes"],
        point_base_scale=h.get("point_base_scale", 4),
        use_vfl=False,
        focal_loss_alpha=h["loss_cls"]["alpha"],
        focal_loss_gamma=h["loss_cls"]["gamma"],
        smooth_l1_beta=h["loss_bbox_init"].get("beta", 0.11),
        loss_pts_init_weight=h["loss_bbox_init"].get("loss_weight", 0.5),
        loss_pts_refine_weight=h["loss_bbox_refine"].get("loss_weight", 1.0),
        **_common_kwargs(model_cfg, meta),
    )


_BUILDERS: Dict[str, Callable] = {"RetinaNet": _retinanet, "ATSS": _atss, "FOVEA": _fovea, "RepPointsDetector": _reppoints}

# fixture head output names, in the order of our head's outputs; our loss name for each reference loss
_HEAD_OUTPUTS = {
    "retinanet": ("cls_scores", "bbox_preds"),
    "atss": ("cls_scores", "bbox_preds", "centernesses"),
    "fovea": ("cls_scores", "bbox_preds"),
    "reppoints": ("cls_scores", "pts_preds_init", "pts_preds_refine"),
}
_LOSS_NAMES = {
    "retinanet": {"loss_cls": "loss_cls", "loss_bbox": "loss_box_reg"},
    "atss": {"loss_cls": "loss_cls", "loss_bbox": "loss_bbox", "loss_centerness": "loss_centerness"},
    "fovea": {"loss_cls": "loss_cls", "loss_bbox": "loss_bbox"},
    "reppoints": {"loss_cls": "loss_cls", "loss_pts_init": "loss_pts_init", "loss_pts_refine": "loss_pts_refine"},
}


def build_from_mmdet_config(model_cfg: Mapping, meta: Mapping = None):
    """The model of this project equivalent to an MMDetection 2.x RetinaNet / ATSS / FOVEA /
    RepPointsDetector config dict (focal loss, as MMDetection has them)."""
    kind = model_cfg.get("type")
    if kind not in _BUILDERS:
        raise ValueError(f"unsupported reference detector {kind!r}; known: {sorted(_BUILDERS)}")
    return _BUILDERS[kind](model_cfg, meta or {})


def _gt_instances(inputs: Mapping, image_sizes) -> List[Instances]:
    return [
        Instances(size, gt_boxes=Boxes(boxes.float()), gt_classes=labels.long())
        for boxes, labels, size in zip(inputs["gt_bboxes"], inputs["gt_labels"], image_sizes)
    ]


def _label_mismatches(ours: torch.Tensor, theirs: torch.Tensor, num_classes: int, valid: torch.Tensor) -> int:
    """Valid locations whose positive class differs (ignored and background both count as not
    positive). Outside an image's own padded area MMDetection's labels are fill values (RepPoints
    fills 0, a class), with label weight 0: not compared."""
    ours = torch.where((ours >= 0) & (ours < num_classes), ours, torch.full_like(ours, num_classes))
    theirs = torch.where((theirs >= 0) & (theirs < num_classes), theirs, torch.full_like(theirs, num_classes))
    return int(((ours != theirs) & valid).sum())


def check_dense_fixture(fixture: Mapping) -> dict:
    """
    Every comparison the fixture allows, as a JSON-able report; ``report["ok"]`` when all are
    within :data:`vfnet.mmdet_parity.TOLERANCES` and the assignments agree everywhere. Runs with
    the reference's number of CPU threads (``meta['args']['threads']``).
    """
    threads = fixture["meta"].get("args", {}).get("threads")
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        return _check(fixture)
    finally:
        torch.set_num_threads(previous)


def _check(fixture: Mapping) -> dict:
    meta = fixture["meta"]
    detector = meta["detector"]
    model = build_from_mmdet_config(meta["model_cfg"], meta)
    incompatible = model.load_state_dict(convert_dense_detector_state_dict(decode_fixture_weights(fixture)), strict=False)
    report = {"detector": detector, "missing_keys": list(incompatible.missing_keys), "unexpected_keys": list(incompatible.unexpected_keys)}
    model.eval()  # frozen BN either way; the heads behave the same in both modes
    inputs = fixture["inputs"]
    img = inputs["img"].float()
    image_sizes = [tuple(m["img_shape"][:2]) for m in inputs["img_metas"]]
    images = ImageList(img, image_sizes)
    num_classes = meta["model_cfg"]["bbox_head"]["num_classes"]

    with torch.no_grad():
        features = model.backbone(img)
        features = [features[f] for f in model.head_in_features]
        predictions = model.head(features)
    report["neck_max_abs"] = max(_max_abs(a, b) for a, b in zip(features, fixture["neck_outs"]))
    reference = fixture["head_outputs_train"]
    report["head_max_abs"] = {
        name: max(_max_abs(a, b) for a, b in zip(ours, reference[name]))
        for name, ours in zip(_HEAD_OUTPUTS[detector], predictions)
    }
    if fixture.get("head_outputs_eval") is not None and detector == "reppoints":
        # the reference's eval forward returns the refined points' boxes (stride units)
        with torch.no_grad():
            boxes = [model.head.boxes(p) for p in predictions[2]]
        report["head_max_abs"]["eval_bbox_preds"] = max(
            _max_abs(a, b) for a, b in zip(boxes, fixture["head_outputs_eval"]["bbox_preds"])
        )
    head_ok = all(v <= TOLERANCES["head_abs"] for v in report["head_max_abs"].values())

    with torch.no_grad(), EventStorage():
        gt = _gt_instances(inputs, image_sizes)
        labels = _training_labels(model, detector, images, features, predictions, gt)
        losses = model.forward_training(images, features, predictions, gt)
    names = _LOSS_NAMES[detector]
    valid = labels.pop("valid")
    report["label_mismatches"] = {
        name: [_label_mismatches(a, b, num_classes, v) for a, b, v in zip(ours, fixture["targets"][name], valid)]
        for name, ours in labels.items()
    }
    report["losses"] = {k: float(losses[v]) for k, v in names.items()}
    report["losses_rel"] = {k: _rel(losses[v], fixture["losses"][k]) for k, v in names.items()}

    empty = fixture["empty_gt"]
    e_img = empty["img"].float()
    e_size = tuple(empty["img_meta"]["img_shape"][:2])
    with torch.no_grad(), EventStorage():
        e_features = model.backbone(e_img)
        e_features = [e_features[f] for f in model.head_in_features]
        no_gt = Instances(e_size, gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.long))
        e_losses = model.forward_training(ImageList(e_img, [e_size]), e_features, model.head(e_features), [no_gt])
    report["empty_gt_losses_rel"] = {k: _rel(e_losses[v], empty["losses"][k]) for k, v in names.items()}
    losses_ok = all(v <= TOLERANCES["loss_rel"] for v in report["losses_rel"].values()) and all(
        v <= TOLERANCES["loss_rel"] for v in report["empty_gt_losses_rel"].values()
    )

    default_topk = model.test_topk_candidates
    with torch.no_grad():
        report["detections"] = _compare_detections(model.forward_inference(images, features, predictions), fixture["detections"])
        small = fixture["detections_small_nms_pre"]
        model.test_topk_candidates = small["nms_pre"]
        report["detections_small_nms_pre"] = _compare_detections(
            model.forward_inference(images, features, predictions), small["dets"]
        )
        model.test_topk_candidates = default_topk
    dets_ok = report["detections"]["ok"] and report["detections_small_nms_pre"]["ok"]
    keys_ok = not report["missing_keys"] and not report["unexpected_keys"]
    labels_ok = not any(n for counts in report["label_mismatches"].values() for n in counts)
    report["ok"] = bool(keys_ok and head_ok and losses_ok and dets_ok and labels_ok)
    return report


def _training_labels(model, detector, images, features, predictions, gt) -> Dict[str, List[torch.Tensor]]:
    """Our per-image training labels in the fixture's order (class, num_classes or -1), by the
    fixture's name for them, and under "valid" the locations inside each image's padded area."""
    sizes = [f.shape[-2:] for f in features]
    divisibility = model.backbone.size_divisibility
    if detector in ("retinanet", "atss"):
        generator = model.anchor_generator
        valid = valid_flags(sizes, generator.strides, images.image_sizes, divisibility, generator.num_cell_anchors[0])
        anchors = generator(features)
        if detector == "retinanet":
            labels, _ = model.label_anchors(anchors, gt, [torch.cat(v) for v in valid])
        else:
            labels, _ = model.label_anchors(anchors, valid, gt)
        return {"labels": labels, "valid": [torch.cat(v) for v in valid]}
    strides = model.point_generator.strides
    valid = [torch.cat(v) for v in valid_flags(sizes, strides, images.image_sizes, divisibility)]
    if detector == "fovea":
        labels = []
        for inst in gt:
            matched = model.assigner(sizes, strides, inst.gt_boxes.tensor)
            labels.append(torch.where(matched >= 0, inst.gt_classes[matched.clamp(min=0)], torch.full_like(matched, model.num_classes)))
        # FoveaBox assigns every location of the batch (no valid flags)
        return {"labels": labels, "valid": [torch.ones_like(v) for v in valid]}
    # reppoints: both stages, from the same inputs as forward_training
    _, pts_init, _ = predictions
    points = model._points(features)
    stride_per_point = torch.cat([p.new_full((len(p),), float(s)) for p, s in zip(points, strides)])
    candidates = torch.cat(
        [
            (model.head.boxes(p) * s).permute(0, 2, 3, 1).reshape(p.shape[0], -1, 4) + c.repeat(1, 2)
            for p, c, s in zip(pts_init, points, strides)
        ],
        dim=1,
    )
    init_matched, _, refine_labels = model.label_points(torch.cat(points), stride_per_point, valid, candidates, gt)
    init_labels = [
        torch.where(m >= 0, inst.gt_classes[m.clamp(min=0)], torch.full_like(m, model.num_classes)) if len(inst) else torch.full_like(m, model.num_classes)
        for m, inst in zip(init_matched, gt)
    ]
    return {"labels": refine_labels, "init_labels": init_labels, "valid": valid}
