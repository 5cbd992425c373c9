"""
Conversion of MMDetection 2.x RetinaNet, ATSS, FoveaBox and RepPoints checkpoints (ResNet + FPN,
the reference repository's "VFL on other detectors" table, focal loss or VFL alike) into this
project's layout. The ResNet rules are VFNet's (:mod:`vfnet.mmdet_checkpoint`).

MMDetection                                   this project
neck.lateral_convs.{i}.conv / .gn             backbone.fpn_lateral{3+i} / .norm
neck.fpn_convs.{i}.conv / .gn, i < 3          backbone.fpn_output{3+i} / .norm
neck.fpn_convs.{3,4}.conv / .gn               backbone.top_block.p6, .p7 / .norm
RetinaNet  bbox_head.{cls,reg}_convs.{i}.conv head.{cls,bbox}_subnet.{2i} (Detectron2's RetinaNetHead)
           bbox_head.retina_cls / retina_reg  head.cls_score / head.bbox_pred
ATSS       bbox_head.{cls,reg}_convs.{i}.conv / .gn   head.{cls,bbox}_subnet.{i} / .norm
           bbox_head.atss_cls / atss_reg / atss_centerness / scales.{l}
                                              head.cls_score / bbox_pred / centerness / scales.{l}
FoveaBox   bbox_head.{cls,reg}_convs.{i}.conv head.{cls,bbox}_subnet.{i}
           bbox_head.conv_cls / conv_reg      head.cls_score / head.bbox_pred
RepPoints  bbox_head.{cls,reg}_convs.{i}.conv / .gn   head.{cls,pts}_subnet.{i} / .norm
           bbox_head.reppoints_cls_conv / _cls_out    head.cls_dconv / head.cls_score
           bbox_head.reppoints_pts_init_conv / _init_out      head.pts_init_conv / pts_init_out
           bbox_head.reppoints_pts_refine_conv / _refine_out  head.pts_refine_dconv / pts_refine_out
           bbox_head.moment_transfer          head.moment_transfer
"""
import re
from typing import Dict, List, Mapping, Optional, Tuple

import torch

from . import mmdet_checkpoint
from .mmdet_checkpoint import UnsupportedCheckpointError

__all__ = [
    "DENSE_DETECTORS",
    "converted_mmdet_checkpoint",
    "detect_dense_detector",
    "convert_dense_detector_state_dict",
    "converted_dense_checkpoint",
]

#: the head key that identifies each detector's checkpoint
DENSE_DETECTORS = {
    "retinanet": "bbox_head.retina_cls.weight",
    "atss": "bbox_head.atss_cls.weight",
    "fovea": "bbox_head.conv_cls.weight",
    "reppoints": "bbox_head.reppoints_cls_out.weight",
}

_P = r"(weight|bias)"
_TOWER = {"cls": "cls_subnet", "reg": "bbox_subnet"}
_PTS_TOWER = {"cls": "cls_subnet", "reg": "pts_subnet"}


def _tower_rules(towers: Mapping[str, str]):
    """The renames of the convs (and GroupNorms) of MMDetection's ``bbox_head.{cls,reg}_convs.{i}``
    to ``head.<towers[cls or reg]>.{i}`` (and ``.norm``)."""
    return [
        (rf"^bbox_head\.(cls|reg)_convs\.(\d+)\.conv\.{_P}$", lambda m: f"head.{towers[m[1]]}.{m[2]}.{m[3]}"),
        (rf"^bbox_head\.(cls|reg)_convs\.(\d+)\.gn\.{_P}$", lambda m: f"head.{towers[m[1]]}.{m[2]}.norm.{m[3]}"),
    ]


_HEAD_RULES = {
    "retinanet": [
        (rf"^bbox_head\.cls_convs\.(\d+)\.conv\.{_P}$", lambda m: f"head.cls_subnet.{2 * int(m[1])}.{m[2]}"),
        (rf"^bbox_head\.reg_convs\.(\d+)\.conv\.{_P}$", lambda m: f"head.bbox_subnet.{2 * int(m[1])}.{m[2]}"),
        (rf"^bbox_head\.retina_cls\.{_P}$", lambda m: f"head.cls_score.{m[1]}"),
        (rf"^bbox_head\.retina_reg\.{_P}$", lambda m: f"head.bbox_pred.{m[1]}"),
    ],
    "atss": [
        *_tower_rules(_TOWER),
        (rf"^bbox_head\.atss_cls\.{_P}$", lambda m: f"head.cls_score.{m[1]}"),
        (rf"^bbox_head\.atss_reg\.{_P}$", lambda m: f"head.bbox_pred.{m[1]}"),
        (rf"^bbox_head\.atss_centerness\.{_P}$", lambda m: f"head.centerness.{m[1]}"),
        (r"^bbox_head\.scales\.(\d+)\.scale$", lambda m: f"head.scales.{m[1]}.scale"),
    ],
    "fovea": [
        *_tower_rules(_TOWER),
        (rf"^bbox_head\.conv_cls\.{_P}$", lambda m: f"head.cls_score.{m[1]}"),
        (rf"^bbox_head\.conv_reg\.{_P}$", lambda m: f"head.bbox_pred.{m[1]}"),
    ],
    "reppoints": [
        *_tower_rules(_PTS_TOWER),
        (r"^bbox_head\.reppoints_cls_conv\.weight$", lambda m: "head.cls_dconv.weight"),
        (rf"^bbox_head\.reppoints_cls_out\.{_P}$", lambda m: f"head.cls_score.{m[1]}"),
        (rf"^bbox_head\.reppoints_pts_init_conv\.{_P}$", lambda m: f"head.pts_init_conv.{m[1]}"),
        (rf"^bbox_head\.reppoints_pts_init_out\.{_P}$", lambda m: f"head.pts_init_out.{m[1]}"),
        (r"^bbox_head\.reppoints_pts_refine_conv\.weight$", lambda m: "head.pts_refine_dconv.weight"),
        (rf"^bbox_head\.reppoints_pts_refine_out\.{_P}$", lambda m: f"head.pts_refine_out.{m[1]}"),
        (r"^bbox_head\.moment_transfer$", lambda m: "head.moment_transfer"),
    ],
}
_NECK_RULE = re.compile(rf"^neck\.(lateral|fpn)_convs\.(\d+)\.(conv|gn)\.{_P}$")


def detect_dense_detector(keys) -> Optional[str]:
    """'retinanet' | 'atss' | 'fovea' | 'reppoints' for a checkpoint of that MMDetection head, else None."""
    keys = set(keys)
    found = [name for name, key in DENSE_DETECTORS.items() if key in keys]
    if len(found) > 1:
        raise UnsupportedCheckpointError(f"the checkpoint has the heads of several detectors: {found}")
    return found[0] if found else None


def _check(detector: str, keys: List[str]) -> None:
    prefixes = sorted({k.split(".")[0] for k in keys})
    unknown = [p for p in prefixes if p not in ("backbone", "neck", "bbox_head")]
    if unknown:
        raise UnsupportedCheckpointError(
            f"not a single-stage {detector} checkpoint: it holds modules {unknown} besides backbone/neck/bbox_head"
        )
    dcn = [k for k in keys if k.startswith("backbone.") and "conv_offset" in k]
    if dcn:
        raise UnsupportedCheckpointError(f"deformable convolutions in the backbone are not supported: found {dcn[0]}")
    if not any(k.startswith("backbone.layer1.0.") for k in keys):
        raise UnsupportedCheckpointError("the backbone is not an MMDetection ResNet (no backbone.layer1.0.*)")
    if detector == "fovea" and any(k.startswith("bbox_head.feature_adaption.") for k in keys):
        raise UnsupportedCheckpointError("FoveaBox with_deform=True (bbox_head.feature_adaption) is not supported")
    if detector == "reppoints" and "bbox_head.moment_transfer" not in keys:
        raise UnsupportedCheckpointError(
            "RepPoints without the moment transform (no bbox_head.moment_transfer) is not supported"
        )


def convert_dense_detector_state_dict(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """
    Rename an MMDetection RetinaNet / ATSS / FoveaBox / RepPoints state dict into this project's
    layout (see the module docstring); ``num_batches_tracked`` buffers are dropped. Raises
    :class:`UnsupportedCheckpointError` naming what it does not understand.
    """
    if not isinstance(state_dict, Mapping) or not all(isinstance(k, str) for k in state_dict):
        raise UnsupportedCheckpointError(f"expected a state dict (names to tensors), got {type(state_dict).__name__}")
    keys = [k for k in state_dict if not k.endswith("num_batches_tracked")]
    detector = detect_dense_detector(keys)
    if detector is None:
        heads = sorted({".".join(k.split(".")[:2]) for k in keys if k.startswith("bbox_head.")})
        raise UnsupportedCheckpointError(
            f"the head is none of RetinaHead, ATSSHead, FoveaHead, RepPointsHead (it has {heads[:8]})"
        )
    _check(detector, keys)
    num_laterals = len({k.split(".")[2] for k in keys if k.startswith("neck.lateral_convs.")})
    if num_laterals != 3:
        raise UnsupportedCheckpointError(f"the FPN has {num_laterals} lateral convs; P3-P7 from C3-C5 needs 3")

    converted = _convert_backbone({k: state_dict[k] for k in keys if k.startswith("backbone.")})
    unmapped = []
    for key in keys:
        if key.startswith("backbone."):
            continue
        new_key = _rename(detector, key)
        if new_key is None:
            unmapped.append(key)
            continue
        if new_key in converted:
            raise UnsupportedCheckpointError(f"two checkpoint keys map to {new_key} (second: {key})")
        converted[new_key] = state_dict[key]
    if unmapped:
        raise UnsupportedCheckpointError(
            f"{len(unmapped)} keys of the {detector} checkpoint are not understood, e.g. {unmapped[:5]}"
        )
    return converted


def _convert_backbone(backbone_state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``backbone.*`` ResNet keys -> ``backbone.bottom_up.*``, by VFNet's ResNet rules."""
    return mmdet_checkpoint.convert_imagenet_state_dict(backbone_state)


def _rename(detector: str, key: str) -> Optional[str]:
    m = _NECK_RULE.match(key)
    if m:
        kind, index, module, param = m[1], int(m[2]), m[3], m[4]
        if kind == "lateral":
            name = f"backbone.fpn_lateral{3 + index}"
        elif index < 3:
            name = f"backbone.fpn_output{3 + index}"
        elif index < 5:
            name = f"backbone.top_block.p{3 + index}"
        else:
            return None
        return f"{name}.norm.{param}" if module == "gn" else f"{name}.{param}"
    for pattern, target in _HEAD_RULES[detector]:
        m = re.match(pattern, key)
        if m:
            return target(m)
    return None


def converted_dense_checkpoint(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, object]:
    """The dict to ``torch.save`` so that ``DetectionCheckpointer`` loads it as is."""
    return _checkpoint(convert_dense_detector_state_dict(state_dict))


def _checkpoint(converted: Mapping[str, torch.Tensor]) -> Dict[str, object]:
    return mmdet_checkpoint.converted_checkpoint(converted)


def converted_mmdet_checkpoint(state_dict: Mapping[str, torch.Tensor]) -> Tuple[str, Dict[str, object]]:
    """
    Convert an MMDetection checkpoint of any architecture this project has, chosen by its head's
    keys: ``("vfnet", ...)`` for a VFNetHead (:mod:`vfnet.mmdet_checkpoint`), else
    ``("retinanet" | "atss" | "fovea" | "reppoints", ...)``. Returns the detector's name and the
    dict to ``torch.save``; raises :class:`UnsupportedCheckpointError` naming the head it found
    when it is none of these.
    """
    keys = [k for k in state_dict if isinstance(k, str)]
    if any(k.startswith("bbox_head.vfnet_cls.") for k in keys):
        return "vfnet", _checkpoint(mmdet_checkpoint.convert_mmdet_state_dict(state_dict))
    detector = detect_dense_detector(keys)
    if detector is None:
        heads = sorted({".".join(k.split(".")[:2]) for k in keys if k.startswith("bbox_head.")})
        modules = sorted({k.split(".")[0] for k in keys})
        found = f"its bbox_head has {heads[:8]}" if heads else f"it has no bbox_head (modules: {modules[:8]})"
        raise UnsupportedCheckpointError(
            "not a checkpoint of a known MMDetection detector (VFNetHead: bbox_head.vfnet_cls, RetinaHead: "
            "bbox_head.retina_cls, ATSSHead: bbox_head.atss_cls, FoveaHead: bbox_head.conv_cls, RepPointsHead: "
            f"bbox_head.reppoints_cls_out); {found}"
        )
    return detector, converted_dense_checkpoint(state_dict)
