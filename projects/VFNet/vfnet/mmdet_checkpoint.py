"""
Conversion of MMDetection 2.x VFNet checkpoints (every row of the reference's model zoo and
VFNet-X) and of ImageNet backbone checkpoints into this project's Detectron2 state-dict layout.

MMDetection                                   this project
ResNet / ResNeXt (optionally DCNv2 in C3-C5):
backbone.conv1 / bn1                          backbone.bottom_up.stem.conv1 / .norm
backbone.layer{s}.{b}.conv{k} / bn{k}         backbone.bottom_up.res{s+1}.{b}.conv{k} / .norm
backbone.layer{s}.{b}.conv2.conv_offset       backbone.bottom_up.res{s+1}.{b}.conv2.conv_offset
backbone.layer{s}.{b}.downsample.0 / .1       backbone.bottom_up.res{s+1}.{b}.shortcut / .norm
Res2Net (v1d):
backbone.stem.{0,3,6} / {1,4,7}               backbone.bottom_up.stem.conv{1,2,3} / .norm
backbone.layer{s}.{b}.conv{1,3} / bn{1,3}     backbone.bottom_up.res{s+1}.{b}.conv{1,3} / .norm
backbone.layer{s}.{b}.convs.{i} / bns.{i}     backbone.bottom_up.res{s+1}.{b}.convs.{i} / .norm (+ .conv_offset)
backbone.layer{s}.{b}.downsample.1 / .2       backbone.bottom_up.res{s+1}.{b}.shortcut / .norm
FPN:
neck.lateral_convs.{i}.conv                   backbone.fpn_lateral{3+i}
neck.fpn_convs.{i}.conv                       backbone.fpn_output{3+i}, then top_block.p6, .p7
PAFPN-X (VFNet-X), besides the FPN names:
neck.fpn_convs.{i}.gn                         backbone.fpn_output{3+i}.norm / top_block.p{6,7}.norm
neck.downsample_convs.{i}.conv / gn           backbone.pa_downsample{4+i} / .norm
neck.pafpn_convs.{i}.conv / gn                backbone.pa_output{3+i} (+ .conv_offset) / .norm
VFNetHead:
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
import os
import re
import sys
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

__all__ = [
    "UnsupportedCheckpointError",
    "extract_state_dict",
    "backbone_family",
    "convert_mmdet_state_dict",
    "convert_imagenet_state_dict",
    "converted_checkpoint",
    "summarize",
    "convert_checkpoint_file",
]


class UnsupportedCheckpointError(ValueError):
    """The checkpoint is not one this converter understands; the message says what it holds."""


_NORM = r"(weight|bias|running_mean|running_var)"
Rule = Tuple[str, Callable[[re.Match], str]]


def _stage(m: re.Match) -> str:
    return f"res{int(m[1]) + 1}.{m[2]}"


# Keys of the bottom-up network, without the "backbone." prefix; targets without "backbone.bottom_up.".
_RESNET_RULES: List[Rule] = [
    (r"conv1\.weight", lambda m: "stem.conv1.weight"),
    (rf"bn1\.{_NORM}", lambda m: f"stem.conv1.norm.{m[1]}"),
    (r"layer(\d)\.(\d+)\.conv(\d)\.weight", lambda m: f"{_stage(m)}.conv{m[3]}.weight"),
    (r"layer(\d)\.(\d+)\.conv2\.conv_offset\.(weight|bias)", lambda m: f"{_stage(m)}.conv2.conv_offset.{m[3]}"),
    (rf"layer(\d)\.(\d+)\.bn(\d)\.{_NORM}", lambda m: f"{_stage(m)}.conv{m[3]}.norm.{m[4]}"),
    (r"layer(\d)\.(\d+)\.downsample\.0\.weight", lambda m: f"{_stage(m)}.shortcut.weight"),
    (rf"layer(\d)\.(\d+)\.downsample\.1\.{_NORM}", lambda m: f"{_stage(m)}.shortcut.norm.{m[3]}"),
]
_RES2NET_STEM = {"0": "conv1", "3": "conv2", "6": "conv3"}
_RES2NET_STEM_NORM = {"1": "conv1", "4": "conv2", "7": "conv3"}
_RES2NET_RULES: List[Rule] = [
    (r"stem\.([036])\.weight", lambda m: f"stem.{_RES2NET_STEM[m[1]]}.weight"),
    (rf"stem\.([147])\.{_NORM}", lambda m: f"stem.{_RES2NET_STEM_NORM[m[1]]}.norm.{m[2]}"),
    (r"layer(\d)\.(\d+)\.conv([13])\.weight", lambda m: f"{_stage(m)}.conv{m[3]}.weight"),
    (rf"layer(\d)\.(\d+)\.bn([13])\.{_NORM}", lambda m: f"{_stage(m)}.conv{m[3]}.norm.{m[4]}"),
    (r"layer(\d)\.(\d+)\.convs\.(\d+)\.weight", lambda m: f"{_stage(m)}.convs.{m[3]}.weight"),
    (r"layer(\d)\.(\d+)\.convs\.(\d+)\.conv_offset\.(weight|bias)", lambda m: f"{_stage(m)}.convs.{m[3]}.conv_offset.{m[4]}"),
    (rf"layer(\d)\.(\d+)\.bns\.(\d+)\.{_NORM}", lambda m: f"{_stage(m)}.convs.{m[3]}.norm.{m[4]}"),
    (r"layer(\d)\.(\d+)\.downsample\.1\.weight", lambda m: f"{_stage(m)}.shortcut.weight"),
    (rf"layer(\d)\.(\d+)\.downsample\.2\.{_NORM}", lambda m: f"{_stage(m)}.shortcut.norm.{m[3]}"),
]

_TOWER = {"cls": "cls_subnet", "reg": "bbox_subnet"}
_HEAD_RULES: List[Rule] = [
    (r"(cls|reg)_convs\.(\d+)\.conv\.(weight|bias)", lambda m: f"{_TOWER[m[1]]}.{m[2]}.{m[3]}"),
    (r"(cls|reg)_convs\.(\d+)\.conv\.conv_offset\.(weight|bias)", lambda m: f"{_TOWER[m[1]]}.{m[2]}.conv_offset.{m[3]}"),
    (r"(cls|reg)_convs\.(\d+)\.gn\.(weight|bias)", lambda m: f"{_TOWER[m[1]]}.{m[2]}.norm.{m[3]}"),
    (r"vfnet_reg_conv\.conv\.(weight|bias)", lambda m: f"bbox_init_conv.{m[1]}"),
    (r"vfnet_reg_conv\.gn\.(weight|bias)", lambda m: f"bbox_init_conv.norm.{m[1]}"),
    (r"vfnet_reg\.(weight|bias)", lambda m: f"bbox_init_pred.{m[1]}"),
    (r"scales\.(\d+)\.scale", lambda m: f"bbox_init_scales.{m[1]}.scale"),
    (r"vfnet_reg_refine_dconv\.(weight|bias)", lambda m: f"bbox_refine_dconv.{m[1]}"),
    (r"vfnet_reg_refine\.(weight|bias)", lambda m: f"bbox_refine_pred.{m[1]}"),
    (r"scales_refine\.(\d+)\.scale", lambda m: f"bbox_refine_scales.{m[1]}.scale"),
    (r"vfnet_cls_dconv\.(weight|bias)", lambda m: f"cls_dconv.{m[1]}"),
    (r"vfnet_cls\.(weight|bias)", lambda m: f"cls_score.{m[1]}"),
]


def _neck_rules(num_laterals: int) -> List[Rule]:
    """FPN / PAFPN-X rules for a neck on the last ``num_laterals`` of C2-C5 (3: C3-C5 -> P3-P7)."""
    first = 6 - num_laterals

    def output_conv(i: int) -> str:
        return f"fpn_output{first + i}" if i < num_laterals else f"top_block.p{6 + i - num_laterals}"

    return [
        (r"lateral_convs\.(\d+)\.conv\.(weight|bias)", lambda m: f"fpn_lateral{first + int(m[1])}.{m[2]}"),
        (r"fpn_convs\.(\d+)\.conv\.(weight|bias)", lambda m: f"{output_conv(int(m[1]))}.{m[2]}"),
        (r"fpn_convs\.(\d+)\.gn\.(weight|bias)", lambda m: f"{output_conv(int(m[1]))}.norm.{m[2]}"),
        (r"downsample_convs\.(\d+)\.conv\.weight", lambda m: f"pa_downsample{first + 1 + int(m[1])}.weight"),
        (r"downsample_convs\.(\d+)\.gn\.(weight|bias)", lambda m: f"pa_downsample{first + 1 + int(m[1])}.norm.{m[2]}"),
        (r"pafpn_convs\.(\d+)\.conv\.weight", lambda m: f"pa_output{first + int(m[1])}.weight"),
        (r"pafpn_convs\.(\d+)\.conv\.conv_offset\.(weight|bias)", lambda m: f"pa_output{first + int(m[1])}.conv_offset.{m[2]}"),
        (r"pafpn_convs\.(\d+)\.gn\.(weight|bias)", lambda m: f"pa_output{first + int(m[1])}.norm.{m[2]}"),
    ]


def extract_state_dict(checkpoint) -> Dict[str, torch.Tensor]:
    """The model weights of a checkpoint file's contents: ``{'state_dict': ...}`` as saved by
    MMDetection/mmcv, ``{'model': ...}``, or a bare state dict."""
    if not isinstance(checkpoint, Mapping):
        raise UnsupportedCheckpointError(f"expected a checkpoint (a dict), got {type(checkpoint).__name__}")
    state_dict = checkpoint
    for key in ("state_dict", "model"):
        if isinstance(checkpoint.get(key), Mapping):
            state_dict = checkpoint[key]
            break
    if not isinstance(state_dict, Mapping) or not state_dict or not all(torch.is_tensor(v) for v in state_dict.values()):
        raise UnsupportedCheckpointError(
            "the checkpoint has no state dict of tensors; top-level keys: " + ", ".join(sorted(map(str, checkpoint))[:10])
        )
    return dict(state_dict)


def backbone_family(keys: Sequence[str], prefix: str = "backbone.") -> str:
    """
    "resnet" (ResNet/ResNeXt, optionally with DCNv2) or "res2net", from the keys under ``prefix``;
    raises :class:`UnsupportedCheckpointError` for anything else.
    """
    keys = [k[len(prefix) :] for k in keys if k.startswith(prefix)]
    if any(k.startswith("stem.") for k in keys) and any(".convs." in k for k in keys):
        return "res2net"
    if "conv1.weight" in keys and any(k.startswith("layer1.0.") for k in keys):
        return "resnet"
    roots = sorted({k.split(".")[0] for k in keys})
    raise UnsupportedCheckpointError(
        f"the backbone is neither an MMDetection/torchvision ResNet/ResNeXt nor a Res2Net (its top-level modules: {roots[:8]})"
    )


def _rename(key: str, rules: Sequence[Rule]) -> Optional[str]:
    for pattern, target in rules:
        m = re.fullmatch(pattern, key)
        if m:
            return target(m)
    return None


def _convert(state_dict: Mapping[str, torch.Tensor], groups: Mapping[str, Tuple[str, Sequence[Rule]]]) -> Dict[str, torch.Tensor]:
    """Rename every key through the rules of its prefix (``groups``: prefix -> (new prefix, rules))."""
    converted: Dict[str, torch.Tensor] = {}
    unmapped = []
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue  # Detectron2's frozen BN has none
        new_key = None
        for prefix, (new_prefix, rules) in groups.items():
            if key.startswith(prefix):
                renamed = _rename(key[len(prefix) :], rules)
                new_key = None if renamed is None else new_prefix + renamed
                break
        if new_key is None:
            unmapped.append(key)
            continue
        if new_key in converted:
            raise UnsupportedCheckpointError(f"two checkpoint keys map to {new_key} (the second: {key})")
        converted[new_key] = value
    if unmapped:
        raise UnsupportedCheckpointError(f"{len(unmapped)} keys of the checkpoint are not understood, e.g. {unmapped[:5]}")
    return converted


def _check_detector(keys: List[str]) -> None:
    roots = sorted({k.split(".")[0] for k in keys})
    unknown = [p for p in roots if p not in ("backbone", "neck", "bbox_head")]
    if unknown:
        raise UnsupportedCheckpointError(
            f"not a VFNet checkpoint: it holds modules {unknown} besides backbone/neck/bbox_head (e.g. a two-stage detector)"
        )
    if not any(k.startswith("bbox_head.vfnet_cls.") for k in keys):
        head_keys = sorted({".".join(k.split(".")[:2]) for k in keys if k.startswith("bbox_head.")})
        raise UnsupportedCheckpointError(f"bbox_head is not a VFNetHead (no bbox_head.vfnet_cls; it has {head_keys[:8]})")


def convert_mmdet_state_dict(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """
    Rename an MMDetection VFNet state dict (ResNet/ResNeXt/Res2Net backbone, with or without
    DCNv2; FPN or PAFPN-X neck; VFNetHead) into this project's layout (see the module docstring).

    ``num_batches_tracked`` buffers are dropped. Raises :class:`UnsupportedCheckpointError`
    naming what it does not understand.
    """
    if not isinstance(state_dict, Mapping) or not all(isinstance(k, str) for k in state_dict):
        raise UnsupportedCheckpointError(f"expected a state dict (names to tensors), got {type(state_dict).__name__}")
    keys = [k for k in state_dict if not k.endswith("num_batches_tracked")]
    _check_detector(keys)
    family = backbone_family(keys)
    num_laterals = len({k.split(".")[2] for k in keys if k.startswith("neck.lateral_convs.")})
    if num_laterals == 0:
        raise UnsupportedCheckpointError("the neck is neither an MMDetection FPN nor a PAFPN-X (no neck.lateral_convs.*)")
    return _convert(
        state_dict,
        {
            "backbone.": ("backbone.bottom_up.", _RES2NET_RULES if family == "res2net" else _RESNET_RULES),
            "neck.": ("backbone.", _neck_rules(num_laterals)),
            "bbox_head.": ("head.", _HEAD_RULES),
        },
    )


def convert_imagenet_state_dict(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """
    Rename an ImageNet classification checkpoint of the backbones the configs use into the
    keys of ``model.backbone.bottom_up``: torchvision's ResNet/ResNeXt layout (``conv1``, ``bn1``,
    ``layer{s}.{b}...``; also open-mmlab's ResNeXt checkpoints) or MMDetection's Res2Net layout
    (``stem.*``, ``layer{s}.{b}.convs...``, e.g. ``res2net101_v1d_26w_4s``), with or without a
    ``backbone.`` prefix. The classifier (``fc.*``) is dropped; anything else not understood is
    refused by name.
    """
    if not isinstance(state_dict, Mapping) or not all(isinstance(k, str) for k in state_dict):
        raise UnsupportedCheckpointError(f"expected a state dict (names to tensors), got {type(state_dict).__name__}")
    prefix = "backbone." if any(k.startswith("backbone.") for k in state_dict) else ""
    if prefix:
        others = sorted({k.split(".")[0] for k in state_dict if not k.startswith(prefix)})
        if others:
            raise UnsupportedCheckpointError(
                f"not a backbone checkpoint: besides backbone.* it holds {others} (convert detectors with "
                "tools/convert_mmdet_checkpoint.py)"
            )
    body = {k[len(prefix) :]: v for k, v in state_dict.items() if not k[len(prefix) :].startswith("fc.")}
    family = backbone_family(list(body), prefix="")
    return _convert(body, {"": ("backbone.bottom_up.", _RES2NET_RULES if family == "res2net" else _RESNET_RULES)})


def converted_checkpoint(state_dict: Mapping[str, torch.Tensor], author: str = "vfnet: converted from MMDetection") -> Dict[str, object]:
    """The dict to ``torch.save`` so that ``DetectionCheckpointer`` loads it as it is (exact keys)."""
    return {"model": dict(state_dict), "__author__": author, "matching_heuristics": False}


def summarize(state_dict: Mapping[str, torch.Tensor]) -> Tuple[int, int]:
    """(number of tensors, number of parameters) of a state dict."""
    return len(state_dict), sum(int(v.numel()) for v in state_dict.values())


def convert_checkpoint_file(
    input_path: str,
    output_path: str,
    convert: Callable[[Dict[str, torch.Tensor], str], Tuple[str, Dict[str, object]]],
) -> int:
    """
    What the tools/convert_*_checkpoint.py commands do: read ``input_path``, convert its state
    dict (:func:`extract_state_dict`) with ``convert(state_dict, input_path)`` -> (a description
    such as "ATSS checkpoint", the checkpoint to save: a dict with the converted weights under
    "model"), write it to ``output_path`` (creating its folder) and print what was written.

    Returns:
        the exit status: 0, or 2 (with the reason on stderr) for an input that cannot be read or
        is not a checkpoint ``convert`` understands (:class:`UnsupportedCheckpointError`).
    """
    try:
        checkpoint = torch.load(input_path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError) as e:
        print(f"error: cannot read {input_path}: {e}", file=sys.stderr)
        return 2
    try:
        description, converted = convert(extract_state_dict(checkpoint), input_path)
    except UnsupportedCheckpointError as e:
        print(f"error: {input_path} cannot be converted: {e}", file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    torch.save(converted, output_path)
    tensors, params = summarize(converted["model"])
    print(f"wrote {output_path}: {description}, {tensors} tensors, {params / 1e6:.2f}M values")
    return 0
