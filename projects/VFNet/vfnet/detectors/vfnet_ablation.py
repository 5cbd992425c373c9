"""
The heads of the paper's ablation of VFNet (Table 3, R-50 1x): VFNet without box refinement.

- raw VFNet (FCOS + ATSS without the centerness branch; the reference's ``VFNetRawHead``):
  ``VFNetAblationHead(star_features=False)``, trained with the focal loss or the VFL;
- + star-shaped box features: ``VFNetAblationHead(star_features=True)``: the classifier sees
  the features the star-shaped deformable conv samples at the initial box (as VFNet's does);
- + box refinement: VFNet itself (:class:`vfnet.VFNetHead`).

The head returns its initial boxes twice, as ``(logits, boxes, boxes)``, so that it runs inside
:class:`vfnet.VFNet` unchanged: VFNet decodes and scores (its VFL targets are the IoUs of) its
"refined" boxes, here the initial ones. Configure VFNet with ``loss_bbox_init_weight=0`` and
``loss_bbox_refine_weight=2.0``: the raw head's one IoU-weighted GIoU loss, of weight 2.
"""
from typing import List, Sequence, Tuple

from detectron2.layers import ShapeSpec
from torch import Tensor, nn
from torch.nn import functional as F

from ..head_parts import box_normalizers, conv_tower, damped_star_boxes, init_dense_head, input_channels, tower_conv
from ..layers import Scale, StarDeformConv2d

__all__ = ["VFNetAblationHead"]


class VFNetAblationHead(nn.Module):
    """
    VFNet's head without the refinement branch. Per level:

    - towers: ``stacked_convs`` x (3x3 conv, GroupNorm, ReLU), one for classification and one for
      regression;
    - box: regression tower -> 3x3 conv + GN + ReLU -> 3x3 conv to 4 -> ``exp(scale_l * x) *
      box_normalizer_l``, distances (l, t, r, b) in pixels;
    - classification: ``star_features=False``: cls tower -> 3x3 conv + GN + ReLU (the raw head's
      ``vfnet_cls_conv``); ``True``: cls tower -> star-shaped deformable conv at the box (its
      gradient scaled by ``gradient_mul``) -> ReLU; then a 3x3 conv to the class logits.
    """

    def __init__(
        self,
        *,
        input_shape: List[ShapeSpec],
        num_classes: int,
        star_features: bool = False,
        feat_channels: int = 256,
        stacked_convs: int = 3,
        norm: str = "GN",
        gradient_mul: float = 0.1,
        bbox_norm_type: str = "reg_denom",
        reg_denoms: Sequence[float] = (64, 128, 256, 512, 1024),
        prior_prob: float = 0.01,
        fused_ops: bool = True,
    ):
        """
        Args:
            input_shape: shapes (channels, stride) of the input levels.
            num_classes: number of foreground classes.
            star_features: classify from star-shaped deformable-conv features (True) or from a
                plain 3x3 conv (False, the raw VFNet).
            feat_channels, stacked_convs, norm: the towers.
            gradient_mul: gradient scale from the star offsets back into the box.
            bbox_norm_type: "reg_denom" (multiply exp() by ``reg_denoms``) or "stride".
            prior_prob: the classifier's initial prior.
            fused_ops: the fused star-shaped deformable conv (:func:`vfnet.ops.star_deform_conv`).
        """
        super().__init__()
        in_channels = input_channels(input_shape, "VFNetAblationHead")
        self.strides = [int(s.stride) for s in input_shape]
        self.box_normalizers = box_normalizers(bbox_norm_type, reg_denoms, self.strides, "VFNetAblationHead")
        self.num_classes = num_classes
        self.star_features = star_features
        self.gradient_mul = gradient_mul
        self.fused_ops = fused_ops

        self.cls_subnet = conv_tower(in_channels, feat_channels, stacked_convs, norm)
        self.bbox_subnet = conv_tower(in_channels, feat_channels, stacked_convs, norm)
        self.bbox_init_conv = tower_conv(feat_channels, feat_channels, norm)
        self.bbox_init_pred = nn.Conv2d(feat_channels, 4, kernel_size=3, padding=1)
        self.bbox_init_scales = nn.ModuleList(Scale(1.0) for _ in input_shape)
        if star_features:
            self.cls_dconv = StarDeformConv2d(feat_channels, feat_channels, use_fused_op=fused_ops)
        else:
            self.cls_conv = tower_conv(feat_channels, feat_channels, norm)
        self.cls_score = nn.Conv2d(feat_channels, num_classes, kernel_size=3, padding=1)

        # The reference's init_weights: every conv (and the star conv) N(0, 0.01), biases 0.
        init_dense_head(self, self.cls_score, prior_prob, also=(StarDeformConv2d,))

    def forward(self, features: List[Tensor]) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
        """
        Args:
            features: one (N, C, H_l, W_l) map per level, finest first.
        Returns:
            logits: per level (N, num_classes, H_l, W_l).
            boxes, boxes: per level (N, 4, H_l, W_l) distances (l, t, r, b) in pixels, float32,
            the same tensors twice (VFNet's initial and final boxes).
        """
        if len(features) != len(self.strides):
            raise ValueError(f"VFNetAblationHead: got {len(features)} feature levels, built for {len(self.strides)}")
        logits, boxes = [], []
        for level, x in enumerate(features):
            cls_feat, reg_feat = self.cls_subnet(x), self.bbox_subnet(x)
            box = self.bbox_init_scales[level](self.bbox_init_pred(self.bbox_init_conv(reg_feat))).float().exp()
            box = box * self.box_normalizers[level]
            if self.star_features:
                star_box = damped_star_boxes(
                    box, self.strides[level], self.gradient_mul, None if self.fused_ops else cls_feat.dtype
                )
                cls_feat = F.relu(self.cls_dconv(cls_feat, star_box))
            else:
                cls_feat = self.cls_conv(cls_feat)
            logits.append(self.cls_score(cls_feat))
            boxes.append(box)
        return logits, boxes, boxes
