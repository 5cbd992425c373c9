"""The VFNet head: two towers, an initial box, star-shaped deformable convs, refinement and IACS."""
import math
from typing import List, Sequence, Tuple

import torch
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec
from torch import nn
from torch.nn import functional as F

from .head_parts import box_normalizers, conv_tower, damped_star_boxes, input_channels, tower_conv
from .layers import ModulatedDeformConv2d, Scale, StarDeformConv2d

__all__ = ["VFNetHead"]


class VFNetHead(nn.Module):
    """
    The head of VarifocalNet, shared across pyramid levels.

    For each level it predicts, per location:

    - an initial box (l, t, r, b) in input pixels: reg tower -> conv+GN+ReLU -> 3x3 conv ->
      ``exp(scale_l * x) * box_normalizer_l``;
    - star-shaped deformable-conv features, sampled at the initial box's corners, edge midpoints
      and centre (the box is passed with its gradient scaled by ``gradient_mul``);
    - refinement factors: star conv on the reg tower -> ReLU -> 3x3 conv -> ``exp(scale'_l * x)``,
      multiplied into the *detached* initial box;
    - the IoU-aware classification score (IACS) logits: star conv on the cls tower -> ReLU ->
      3x3 conv to ``num_classes``.
    """

    @configurable
    def __init__(
        self,
        *,
        input_shape: List[ShapeSpec],
        num_classes: int,
        feat_channels: int = 256,
        stacked_convs: int = 3,
        norm: str = "GN",
        dcn_on_last_conv: bool = False,
        gradient_mul: float = 0.1,
        bbox_norm_type: str = "reg_denom",
        reg_denoms: Sequence[float] = (64, 128, 256, 512, 1024),
        prior_prob: float = 0.01,
        fused_ops: bool = True,
        cpu_channels_last: bool = True,
    ):
        """
        Args:
            input_shape: shapes of the input feature maps, one per level (same channels).
            num_classes: number of foreground classes.
            feat_channels: channels of the towers and deformable convs.
            stacked_convs: convs per tower.
            norm: norm of the tower convs ("GN" = GroupNorm with 32 groups; "" for none).
            dcn_on_last_conv: make the last conv of each tower a modulated deformable conv.
            gradient_mul: strength of the gradient that flows from the star offsets back into
                the initial box.
            bbox_norm_type: "reg_denom" (multiply exp() by ``reg_denoms``) or "stride".
            reg_denoms: per-level box normalisers in pixels for "reg_denom".
            prior_prob: prior probability the classifier's bias is initialised for.
            fused_ops: run the two star-shaped deformable convs with the fused kernel
                :func:`vfnet.ops.star_deform_conv` (default; torchvision's ``deform_conv2d``
                within float rounding, several times faster and with a fraction of the
                memory), or with star offsets + torchvision (the reference path). Without
                ``vfnet._C`` the reference path runs either way.
            cpu_channels_last: on the CPU, run the head on channels-last copies of the features
                (oneDNN's channels-last convolutions are ~15-25% faster there, and the fused
                star conv then needs no layout change); the outputs are then channels-last too
                (not after a DCNv2 tower conv, ``dcn_on_last_conv``, whose kernel returns NCHW).
                Values are the same within float rounding; on other devices nothing changes.
                Narrow heads are better off without it: torch's CPU GroupNorm is several times
                slower on channels-last inputs than on NCHW ones when its groups have few
                channels (the quickstart's 64-channel head, 2 per group, trains ~13% faster
                without it; its configs turn it off; yacs: ``MODEL.VFNET.CPU_CHANNELS_LAST``).
        """
        super().__init__()
        in_channels = input_channels(input_shape, "VFNetHead")
        self.strides = [int(s.stride) for s in input_shape]
        num_levels = len(input_shape)
        self.box_normalizers = box_normalizers(bbox_norm_type, reg_denoms, self.strides, "VFNetHead")
        if stacked_convs < 1:
            raise ValueError(f"VFNetHead: stacked_convs must be >= 1, got {stacked_convs}")
        if norm == "GN" and feat_channels % 32 != 0:
            raise ValueError(f"VFNetHead: GroupNorm(32) needs feat_channels divisible by 32, got {feat_channels}")
        self.num_classes = num_classes
        self.gradient_mul = gradient_mul
        self.fused_ops = fused_ops
        self.cpu_channels_last = cpu_channels_last

        self.cls_subnet = conv_tower(in_channels, feat_channels, stacked_convs, norm, deformable_last=dcn_on_last_conv)
        self.bbox_subnet = conv_tower(in_channels, feat_channels, stacked_convs, norm, deformable_last=dcn_on_last_conv)
        self.bbox_init_conv = tower_conv(feat_channels, feat_channels, norm)
        self.bbox_init_pred = nn.Conv2d(feat_channels, 4, kernel_size=3, padding=1)
        self.bbox_init_scales = nn.ModuleList([Scale(1.0) for _ in range(num_levels)])
        self.bbox_refine_dconv = StarDeformConv2d(feat_channels, feat_channels, use_fused_op=fused_ops)
        self.bbox_refine_pred = nn.Conv2d(feat_channels, 4, kernel_size=3, padding=1)
        self.bbox_refine_scales = nn.ModuleList([Scale(1.0) for _ in range(num_levels)])
        self.cls_dconv = StarDeformConv2d(feat_channels, feat_channels, use_fused_op=fused_ops)
        self.cls_score = nn.Conv2d(feat_channels, num_classes, kernel_size=3, padding=1)

        self._init_weights(prior_prob)

    def _init_weights(self, prior_prob: float) -> None:
        """
        The original VarifocalNet's ``init_weights`` (the model zoo was trained with it): every
        plain conv of the head and both star deformable convs ~ N(0, 0.01) with zero bias, the
        classifier's bias for ``prior_prob``. A DCNv2 tower conv (``dcn_on_last_conv``) keeps its
        own (mmcv's) initialisation, its offset conv at zero: the reference's loop skips it.
        """
        convs = [m for m in self.modules() if type(m) in (nn.Conv2d, Conv2d)]
        inside_dcn = {id(m.conv_offset) for m in self.modules() if isinstance(m, ModulatedDeformConv2d)}
        for module in [m for m in convs if id(m) not in inside_dcn] + [self.bbox_refine_dconv, self.cls_dconv]:
            nn.init.normal_(module.weight, mean=0.0, std=0.01)
            if module.bias is not None:
                nn.init.constant_(module.bias, 0.0)
        nn.init.constant_(self.cls_score.bias, -math.log((1 - prior_prob) / prior_prob))

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]):
        v = cfg.MODEL.VFNET
        return {
            "input_shape": input_shape,
            "num_classes": v.NUM_CLASSES,
            "feat_channels": v.FEAT_CHANNELS,
            "stacked_convs": v.NUM_CONVS,
            "norm": v.NORM,
            "dcn_on_last_conv": v.DCN_ON_LAST_CONV,
            "gradient_mul": v.GRADIENT_MUL,
            "bbox_norm_type": v.BBOX_NORM_TYPE,
            "reg_denoms": list(v.REG_DENOMS),
            "prior_prob": v.PRIOR_PROB,
            "fused_ops": v.FUSED_OPS,
            "cpu_channels_last": v.CPU_CHANNELS_LAST,
        }

    def forward(
        self, features: List[torch.Tensor]
    ) -> Tuple[List[torch.Tensor], List[torch.Tensor], List[torch.Tensor]]:
        """
        Args:
            features: one (N, C, H_l, W_l) map per level, finest first.
        Returns (channels-last on the CPU with ``cpu_channels_last`` and no DCNv2 tower conv):
            logits: per level (N, num_classes, H_l, W_l) IACS logits.
            boxes_init: per level (N, 4, H_l, W_l) initial (l, t, r, b) in input pixels, float32.
            boxes_refine: per level (N, 4, H_l, W_l) refined (l, t, r, b) in input pixels, float32.
        """
        if len(features) != len(self.strides):
            raise ValueError(f"VFNetHead: got {len(features)} feature levels, built for {len(self.strides)}")
        logits, boxes_init, boxes_refine = [], [], []
        for level, x in enumerate(features):
            if self.cpu_channels_last and x.device.type == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
            cls_feat, reg_feat = self.cls_subnet(x), self.bbox_subnet(x)

            init_logits = self.bbox_init_pred(self.bbox_init_conv(reg_feat))
            box_init = self.bbox_init_scales[level](init_logits).float().exp() * self.box_normalizers[level]

            # Star offsets see the initial box with a damped gradient, in feature-map cells.
            star_box = damped_star_boxes(
                box_init, self.strides[level], self.gradient_mul, None if self.fused_ops else reg_feat.dtype
            )

            refine_feat = F.relu(self.bbox_refine_dconv(reg_feat, star_box))
            refine_factors = self.bbox_refine_scales[level](self.bbox_refine_pred(refine_feat)).float().exp()
            box_refine = refine_factors * box_init.detach()

            cls_feat = F.relu(self.cls_dconv(cls_feat, star_box))
            logits.append(self.cls_score(cls_feat))
            boxes_init.append(box_init)
            boxes_refine.append(box_refine)
        return logits, boxes_init, boxes_refine
