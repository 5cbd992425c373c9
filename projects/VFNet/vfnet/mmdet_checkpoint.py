"""
Conversion of MMDetection 2.x VFNet checkpoints (ResNet/ResNeXt + FPN + VFNetHead) into this
project's Detectron2 state-dict layout.

MMDetection                                   this project
backbone.conv1 / bn1                          backbone.bottom_up.stem.conv1 / .norm
backbone.layer{s}.{b}.conv{k} / bn{k}         backbone.bottom_up.res{s+1}.{b}.conv{k} / .norm
backbone.layer{s}.{b}.downsample.0 / .1       backbone.bottom_up.res{s+1}.{b}.shortcut / .norm
neck.lateral_convs.{i}.conv                   backbone.fpn_lateral{3+i}
neck.fpn_convs.{i}.conv                       backbone.fpn_output{3+i}, then top_block.p6, .p7
bbox_head.{cls,reg}_convs.{i}.conv / gn       head.{cls,bbox}_subnet.{i} / .norm (+ .conv_offset)
bbox_head.vfnet_reg_conv.conv / gn            head.bbox_init_conv / .norm
bbox_head.vfnet_reg                           head.bbox_init_pred
bbox_head.scales.{l}                          head.bbox_init_scales.{l}
bbox_head.vfnet_reg_refine_dconv              head.bbox_refine_dconv
bbox_head.vfnet_reg_refine                    head.bbox_refine_pred
bbox_head.scales_refine.{l}                   head.bbox_refine_scales.{l}
bbox_head.vfnet_cls_dconv                     head.cls_dconv
bbox_head.vfnet_cls                           head.cls_score
"""
import re
from typing import Dict, List, Mapping, Optional, Tuple

import torch

__all__ = ["UnsupportedCheckpointError", "convert_mmdet_state_dict", "extract_state_dict"]


class UnsupportedCheckpointError(ValueError):
    """The checkpoint is not an MMDetection ResNet/ResNeXt + FPN + VFNetHead checkpoint."""


_NORM_PARAMS = r"(weight|bias|running_mean|running_var)"

_BACKBONE_RULES = [
    (rf"^backbone\.conv1\.weight$", "backbone.bottom_up.stem.conv1.weight"),
    (rf"^backbone\.bn1\.{_NORM_PARAMS}$", r"backbone.bottom_up.stem.conv1.norm.\1"),
    (r"^backbone\.layer(\d)\.(\d+)\.conv(\d)\.weight$", "RES:{1}.conv{2}.weight"),
    (rf"^backbone\.layer(\d)\.(\d+)\.bn(\d)\.{_NORM_PARAMS}$", "RES:{1}.conv{2}.norm.{3}"),
    (r"^backbone\.layer(\d)\.(\d+)\.downsample\.0\.weight$", "RES:{1}.shortcut.weight"),
    (rf"^backbone\.layer(\d)\.(\d+)\.downsample\.1\.{_NORM_PARAMS}$", "RES:{1}.shortcut.norm.{2}"),
]

_HEAD_RULES = [
    (r"^bbox_head\.(cls|reg)_convs\.(\d+)\.conv\.(weight|bias)$", "TOWER:{1}.{2}"),
    (r"^bbox_head\.(cls|reg)_convs\.(\d+)\.conv\.conv_offset\.(weight|bias)$", "TOWER:{1}.conv_offset.{2}"),
    (r"^bbox_head\.(cls|reg)_convs\.(\d+)\.gn\.(weight|bias)$", "TOWER:{1}.norm.{2}"),
    (r"^bbox_head\.vfnet_reg_conv\.conv\.(weight|bias)$", r"head.bbox_init_conv.\1"),
    (r"^bbox_head\.vfnet_reg_conv\.gn\.(weight|bias)$", r"head.bbox_init_conv.norm.\1"),
    (r"^bbox_head\.vfnet_reg\.(weight|bias)$", r"head.bbox_init_pred.\1"),
    (r"^bbox_head\.scales\.(\d+)\.scale$", r"head.bbox_init_scales.\1.scale"),
    (r"^bbox_head\.vfnet_reg_refine_dconv\.(weight|bias)$", r"head.bbox_refine_dconv.\1"),
    (r"^bbox_head\.vfnet_reg_refine\.(weight|bias)$", r"head.bbox_refine_pred.\1"),
    (r"^bbox_head\.scales_refine\.(\d+)\.scale$", r"head.bbox_refine_scales.\1.scale"),
    (r"^bbox_head\.vfnet_cls_dconv\.(weight|bias)$", r"head.cls_dconv.\1"),
    (r"^bbox_head\.vfnet_cls\.(weight|bias)$", r"head.cls_score.\1"),
]


def extract_state_dict(checkpoint) -> Dict[str, torch.Tensor]:
    """The model weights of an MMDetection checkpoint file's contents (``{'state_dict': ...}``
    as saved by MMDetection, or a bare state dict)."""
    if not isinstance(checkpoint, Mapping):
        raise UnsupportedCheckpointError(
            f"expected an MMDetection checkpoint (a dict), got {type(checkpoint).__name__}"
        )
    state_dict = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state_dict, Mapping) or not all(torch.is_tensor(v) for v in state_dict.values()):
        raise UnsupportedCheckpointError(
            "the checkpoint has no 'state_dict' of tensors; top-level keys: " + ", ".join(sorted(map(str, checkpoint))[:10])
        )
    return dict(state_dict)


def _check_architecture(keys: List[str]) -> None:
    prefixes = sorted({k.split(".")[0] for k in keys})
    unknown = [p for p in prefixes if p not in ("backbone", "neck", "bbox_head")]
    if unknown:
        raise UnsupportedCheckpointError(
            f"not a VFNet checkpoint: it holds modules {unknown} besides backbone/neck/bbox_head "
            "(e.g. a two-stage detector)"
        )
    if not any(k.startswith("bbox_head.vfnet_cls.") for k in keys):
        head_keys = sorted({".".join(k.split(".")[:2]) for k in keys if k.startswith("bbox_head.")})
        raise UnsupportedCheckpointError(
            f"bbox_head is not a VFNetHead (no bbox_head.vfnet_cls; it has {head_keys[:8]})"
        )
    dcn_backbone = [k for k in keys if k.startswith("backbone.") and "conv_offset" in k]
    if dcn_backbone:
        raise UnsupportedCheckpointError(
            "deformable convolutions in the backbone (DCN model-zoo rows) are not supported: "
            f"found {dcn_backbone[0]} and {len(dcn_backbone) - 1} more"
        )
    if not any(k.startswith("backbone.layer1.0.") for k in keys):
        raise UnsupportedCheckpointError(
            "the backbone is not an MMDetection ResNet/ResNeXt (no backbone.layer1.0.*)"
        )
    if any(k.startswith(("neck.downsample_convs", "neck.pafpn_convs")) for k in keys):
        raise UnsupportedCheckpointError("the neck is a PAFPN (VFNet-X), which is not supported; only FPN is")


def convert_mmdet_state_dict(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """
    Rename an MMDetection VFNet state dict into this project's layout (see the module docstring).

    ``num_batches_tracked`` buffers are dropped (Detectron2's FrozenBatchNorm2d has none).
    Raises :class:`UnsupportedCheckpointError` naming what it does not understand.
    """
    if not isinstance(state_dict, Mapping) or not all(isinstance(k, str) for k in state_dict):
        raise UnsupportedCheckpointError(
            f"expected a state dict (names to tensors), got {type(state_dict).__name__}"
        )
    keys = [k for k in state_dict if not k.endswith("num_batches_tracked")]
    _check_architecture(keys)

    num_laterals = len({k.split(".")[2] for k in keys if k.startswith("neck.lateral_convs.")})
    if num_laterals == 0:
        raise UnsupportedCheckpointError("the neck is not an MMDetection FPN (no neck.lateral_convs.*)")
    first_level = 6 - num_laterals  # 3 laterals -> C3..C5

    def neck_name(kind: str, index: int) -> str:
        if kind == "lateral":
            return f"backbone.fpn_lateral{first_level + index}"
        if index < num_laterals:
            return f"backbone.fpn_output{first_level + index}"
        extra = index - num_laterals
        if extra > 1:
            raise UnsupportedCheckpointError(f"the FPN has more than two extra levels (neck.fpn_convs.{index})")
        return f"backbone.top_block.p{6 + extra}"

    converted: Dict[str, torch.Tensor] = {}
    unmapped = []
    for key in keys:
        new_key = _rename(key, neck_name)
        if new_key is None:
            unmapped.append(key)
            continue
        if new_key in converted:
            raise UnsupportedCheckpointError(f"two checkpoint keys map to {new_key} (second: {key})")
        converted[new_key] = state_dict[key]
    if unmapped:
        raise UnsupportedCheckpointError(
            f"{len(unmapped)} keys of the checkpoint are not understood, e.g. {unmapped[:5]}"
        )
    return converted


def _rename(key: str, neck_name) -> Optional[str]:
    m = re.match(r"^neck\.(lateral|fpn)_convs\.(\d+)\.conv\.(weight|bias)$", key)
    if m:
        return f"{neck_name(m.group(1), int(m.group(2)))}.{m.group(3)}"
    for pattern, target in _BACKBONE_RULES + _HEAD_RULES:
        m = re.match(pattern, key)
        if not m:
            continue
        if target.startswith("RES:"):
            stage = int(m.group(1)) + 1
            return f"backbone.bottom_up.res{stage}." + target[len("RES:") :].format(*m.groups())
        if target.startswith("TOWER:"):
            tower = "cls_subnet" if m.group(1) == "cls" else "bbox_subnet"
            return f"head.{tower}." + target[len("TOWER:") :].format(*m.groups())
        return m.expand(target)
    return None


def converted_checkpoint(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, object]:
    """The dict to ``torch.save`` so that ``DetectionCheckpointer`` loads it as is."""
    return {
        "model": convert_mmdet_state_dict(state_dict),
        "__author__": "vfnet: converted from MMDetection",
        "matching_heuristics": False,
    }


def summarize(state_dict: Mapping[str, torch.Tensor]) -> Tuple[int, int]:
    """(number of tensors, number of parameters) of a state dict."""
    return len(state_dict), sum(int(v.numel()) for v in state_dict.values())
