"""
The building blocks the dense heads share (VFNet's, its ablation's, ATSS', FoveaBox's,
RepPoints'): their towers of 3x3 convs, the one input width they accept, VFNet's box
normalisers, the damped-gradient star boxes and the N(0, 0.01) initialisation; and, for timing
and exporting models with random weights, a classifier redrawn to spread its scores.
"""
import math
from typing import List, Optional, Sequence, Tuple

import torch
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from torch import Tensor, nn
from torch.nn import functional as F

from .layers import ModulatedDeformConv2d

__all__ = [
    "tower_conv",
    "conv_tower",
    "input_channels",
    "box_normalizers",
    "damped_star_boxes",
    "init_dense_head",
    "spread_classifier_scores",
]


def tower_conv(in_channels: int, channels: int, norm: str) -> Conv2d:
    """3x3 conv (stride 1, padding 1), ``norm``, ReLU; with a bias only without a norm."""
    return Conv2d(
        in_channels,
        channels,
        kernel_size=3,
        padding=1,
        bias=not norm,
        norm=get_norm(norm, channels),
        activation=F.relu,
    )


def conv_tower(in_channels: int, channels: int, num_convs: int, norm: str, *, deformable_last: bool = False) -> nn.Sequential:
    """``num_convs`` x :func:`tower_conv`, (N, in_channels, H, W) -> (N, channels, H, W); with
    ``deformable_last`` the last one is a :class:`ModulatedDeformConv2d` (+ norm, ReLU) instead."""
    convs = []
    for i in range(num_convs):
        channels_in = in_channels if i == 0 else channels
        if deformable_last and i == num_convs - 1:
            convs.append(ModulatedDeformConv2d(channels_in, channels, norm=get_norm(norm, channels), activation=F.relu))
        else:
            convs.append(tower_conv(channels_in, channels, norm))
    return nn.Sequential(*convs)


def input_channels(input_shape: Sequence[ShapeSpec], owner: str) -> int:
    """The channels of the input levels, which a head shared across levels needs to be one."""
    channels = {s.channels for s in input_shape}
    if len(channels) != 1:
        raise ValueError(f"{owner}: all input levels must have the same channels, got {channels}")
    return channels.pop()


def box_normalizers(bbox_norm_type: str, reg_denoms: Sequence[float], strides: Sequence[int], owner: str) -> List[float]:
    """Per level, the pixels that VFNet's exp() box distances are multiplied by: ``reg_denoms``
    ("reg_denom", one per level) or the level's stride ("stride")."""
    if bbox_norm_type == "reg_denom":
        if len(reg_denoms) != len(strides):
            raise ValueError(f"{owner}: {len(reg_denoms)} reg_denoms for {len(strides)} levels")
        return [float(d) for d in reg_denoms]
    if bbox_norm_type == "stride":
        return [float(s) for s in strides]
    raise ValueError(f"{owner}: bbox_norm_type must be 'reg_denom' or 'stride', got {bbox_norm_type!r}")


def damped_star_boxes(boxes: Tensor, stride: int, gradient_mul: float, dtype: Optional[torch.dtype] = None) -> Tensor:
    """
    (N, 4, H, W) float32 (l, t, r, b) boxes in pixels -> the same in feature-map cells for the
    star-shaped deformable conv, with their gradient scaled by ``gradient_mul``. ``dtype``: cast
    to it (torchvision's path needs the features' dtype; the fused op takes the float32 boxes as
    they are, positions in float32 even for bfloat16 features under autocast).
    """
    star = ((1 - gradient_mul) * boxes.detach() + gradient_mul * boxes) / stride
    return star if dtype is None else star.to(dtype)


def init_dense_head(head: nn.Module, classifier: nn.Conv2d, prior_prob: float, also: Tuple[type, ...] = ()) -> None:
    """Every conv (and every module of a type in ``also``) N(0, 0.01) with zero bias, in the order
    of ``head.modules()``; the classifier's bias set for ``prior_prob``."""
    for module in head.modules():
        if isinstance(module, (nn.Conv2d,) + also):
            nn.init.normal_(module.weight, mean=0.0, std=0.01)
            if module.bias is not None:
                nn.init.constant_(module.bias, 0.0)
    nn.init.constant_(classifier.bias, -math.log((1 - prior_prob) / prior_prob))


def spread_classifier_scores(model: nn.Module, seed: int) -> None:
    """
    Redraw ``model.head.cls_score`` (a conv: VFNet's, Detectron2's RetinaNet/FCOS heads') so that
    its logits have std ~1 around -2 and the scores spread mostly over 0.02-0.5, far from float32's
    saturation at 1. With the prior-initialised classifier every score of a random model is about
    0.01, below the score threshold, and post-processing would see no candidate: exports are
    checked and models timed with this instead.
    """
    head = getattr(model, "head", None)
    if head is None or not isinstance(getattr(head, "cls_score", None), nn.Conv2d):
        raise ValueError(f"spread_classifier_scores: {type(model).__name__} has no head.cls_score conv")
    weight = head.cls_score.weight
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        weight.copy_(torch.randn(weight.shape, generator=g) * (2.0 / weight[0].numel() ** 0.5))
        head.cls_score.bias.fill_(-2.0)
