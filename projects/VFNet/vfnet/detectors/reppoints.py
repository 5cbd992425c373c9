"""RepPoints (Yang et al., ICCV 2019), moment transform, as MMDetection's ``RepPointsHead``, with ``use_vfl``."""
import math
from typing import Dict, List, Tuple

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, cat
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.structures import Boxes, ImageList, Instances, pairwise_iou
from detectron2.utils.events import get_event_storage
from fvcore.nn import smooth_l1_loss
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.ops import deform_conv2d

from ..head_parts import conv_tower, init_dense_head, input_channels
from ..layers import _autocast_dtype, _deform_conv_dtype
from ..ops import HAS_C_EXTENSION, modulated_deform_conv
from ..vfl import NORMALIZER_EPS
from .assigners import MaxIoUMatcher, PointAssigner
from .base import VFLDenseDetector
from .common import classwise_nms, positives_per_image_normalizer, select_topk_candidates, batch_valid_flags

__all__ = ["RepPoints", "RepPointsHead", "DeformConv2d", "moment_boxes"]


class DeformConv2d(nn.Module):
    """A k x k deformable convolution without bias (mmcv's ``DeformConv2d``, DCNv1); offsets
    (N, 2 * k * k, H, W) as (dy, dx) per tap, row-major.

    With ``use_fused_op`` (the default) and a 3x3 kernel it runs the fused
    :func:`vfnet.ops.modulated_deform_conv` with a mask of ones, which is DCNv1 exactly (each
    sample times 1.0), in the dtype a conv of ``x`` would (the autocast dtype under autocast).
    Otherwise, or without a built ``vfnet._C``, torchvision's ``deform_conv2d`` (float32 for
    bfloat16/float16 CPU inputs). :func:`vfnet.layers.disable_fused_deformable_convs` switches it
    off, as the detector's ``fused_ops=False`` does."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, use_fused_op: bool = True):
        super().__init__()
        self.kernel_size = kernel_size
        self.use_fused_op = use_fused_op
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")

    def forward(self, x: Tensor, offset: Tensor) -> Tensor:
        """x: (N, C_in, H, W), offset: (N, 2 * k * k, H, W) -> (N, C_out, H, W)."""
        if self.use_fused_op and self.kernel_size == 3 and HAS_C_EXTENSION:
            dtype = _autocast_dtype(x)
            n, _, h, w = offset.shape
            mask = offset.new_ones(n, 9, h, w)
            return modulated_deform_conv(x.to(dtype), offset, mask, self.weight.to(dtype), None, stride=1, padding=1)
        dtype = _deform_conv_dtype(x)
        return deform_conv2d(
            x.to(dtype), offset.to(dtype), self.weight.to(dtype), None, padding=(self.kernel_size - 1) // 2
        )

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, use_fused_op={self.use_fused_op}"


def moment_boxes(points: Tensor, moment_transfer: Tensor, moment_mul: float, y_first: bool = True) -> Tensor:
    """
    RepPoints' moment transform: a point set -> the box centred on the points' mean, of half size
    the points' (unbiased) standard deviation times exp(moment_transfer) per axis.

    Args:
        points: (N, 2 * P, ...) point sets, each point as (y, x) (``y_first``) or (x, y).
        moment_transfer: (2,) learnable log-scales of the width and height; its gradient is
            scaled by ``moment_mul``.
    Returns:
        (N, 4, ...) boxes (x1, y1, x2, y2) in the points' units.
    """
    pts = points.view(points.shape[0], -1, 2, *points.shape[2:])
    pts_y = pts[:, :, 0, ...] if y_first else pts[:, :, 1, ...]
    pts_x = pts[:, :, 1, ...] if y_first else pts[:, :, 0, ...]
    mean_y = pts_y.mean(dim=1, keepdim=True)
    mean_x = pts_x.mean(dim=1, keepdim=True)
    std_y = torch.std(pts_y - mean_y, dim=1, keepdim=True)
    std_x = torch.std(pts_x - mean_x, dim=1, keepdim=True)
    transfer = moment_transfer * moment_mul + moment_transfer.detach() * (1 - moment_mul)
    half_width = std_x * torch.exp(transfer[0])
    half_height = std_y * torch.exp(transfer[1])
    return torch.cat([mean_x - half_width, mean_y - half_height, mean_x + half_width, mean_y + half_height], dim=1)


class RepPointsHead(nn.Module):
    """
    RepPoints' head (center init, moment transform): a classification and a points tower (convs
    + GroupNorm + ReLU); per location, 9 initial points (offsets in units of the level's stride,
    from a conv on the points tower), then a 3x3 deformable conv that samples at those points,
    on each tower: one gives the class logits, the other the refinement of the points. The
    points reach the deformable convs with their gradient scaled by ``gradient_mul``.
    """

    @configurable
    def __init__(
        self,
        *,
        input_shape: List[ShapeSpec],
        num_classes: int,
        feat_channels: int = 256,
        point_feat_channels: int = 256,
        stacked_convs: int = 3,
        num_points: int = 9,
        gradient_mul: float = 0.1,
        moment_mul: float = 0.01,
        norm: str = "GN",
        prior_prob: float = 0.01,
    ):
        super().__init__()
        in_channels = input_channels(input_shape, "RepPointsHead")
        kernel = int(math.isqrt(num_points))
        if kernel * kernel != num_points or kernel % 2 == 0:
            raise ValueError(f"RepPointsHead: num_points must be an odd square, got {num_points}")
        self.num_classes = num_classes
        self.num_points = num_points
        self.gradient_mul = gradient_mul
        self.moment_mul = moment_mul
        self.cls_subnet = conv_tower(in_channels, feat_channels, stacked_convs, norm)
        self.pts_subnet = conv_tower(in_channels, feat_channels, stacked_convs, norm)
        self.cls_dconv = DeformConv2d(feat_channels, point_feat_channels, kernel)
        self.cls_score = nn.Conv2d(point_feat_channels, num_classes, 1)
        self.pts_init_conv = nn.Conv2d(feat_channels, point_feat_channels, 3, padding=1)
        self.pts_init_out = nn.Conv2d(point_feat_channels, 2 * num_points, 1)
        self.pts_refine_dconv = DeformConv2d(feat_channels, point_feat_channels, kernel)
        self.pts_refine_out = nn.Conv2d(point_feat_channels, 2 * num_points, 1)
        self.moment_transfer = nn.Parameter(torch.zeros(2))
        init_dense_head(self, self.cls_score, prior_prob)
        for dconv in (self.cls_dconv, self.pts_refine_dconv):
            nn.init.normal_(dconv.weight, mean=0.0, std=0.01)
        # (y, x) of each tap of the deformable conv's kernel, row-major: the offsets are the points minus these
        grid = torch.arange(-(kernel // 2), kernel // 2 + 1, dtype=torch.float32)
        base = torch.stack([grid.repeat_interleave(kernel), grid.repeat(kernel)], dim=1).reshape(1, -1, 1, 1)
        self.register_buffer("dcn_base_offset", base, persistent=False)

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]):
        r = cfg.MODEL.REPPOINTS
        return {
            "input_shape": input_shape,
            "num_classes": r.NUM_CLASSES,
            "feat_channels": r.FEAT_CHANNELS,
            "point_feat_channels": r.POINT_FEAT_CHANNELS,
            "stacked_convs": r.NUM_CONVS,
            "num_points": r.NUM_POINTS,
            "gradient_mul": r.GRADIENT_MUL,
            "norm": r.NORM,
            "prior_prob": r.PRIOR_PROB,
        }

    def forward(self, features: List[Tensor]) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
        """
        Returns:
            per level: logits (N, K, H_l, W_l), initial and refined points (N, 2 * num_points,
            H_l, W_l) as (y, x) offsets from the location in units of the level's stride.
        """
        logits, pts_init, pts_refine = [], [], []
        for x in features:
            cls_feat, pts_feat = self.cls_subnet(x), self.pts_subnet(x)
            init = self.pts_init_out(F.relu(self.pts_init_conv(pts_feat)))
            g = self.gradient_mul
            offset = (1 - g) * init.detach() + g * init - self.dcn_base_offset.to(init.dtype)
            logits.append(self.cls_score(F.relu(self.cls_dconv(cls_feat, offset))))
            refine = self.pts_refine_out(F.relu(self.pts_refine_dconv(pts_feat, offset)))
            pts_init.append(init)
            pts_refine.append(refine + init.detach())
        return logits, pts_init, pts_refine

    def boxes(self, points: Tensor, y_first: bool = True) -> Tensor:
        """:func:`moment_boxes` with this head's ``moment_transfer``."""
        return moment_boxes(points, self.moment_transfer, self.moment_mul, y_first=y_first)


@META_ARCH_REGISTRY.register()
class RepPoints(VFLDenseDetector):
    """
    RepPoints as MMDetection's ``RepPointsHead`` trains and tests it (moment transform, center
    init). Two assignments per image: the initial points' boxes learn the ground truth of the
    :class:`PointAssigner` (the nearest point on the ground truth's level); the refined points'
    boxes and the classifier learn that of a :class:`MaxIoUMatcher` of the ground truth with the
    (detached) boxes of the initial points (IoU >= 0.5 positive, < 0.4 negative, between ignored).
    Losses: focal loss over the valid locations that are not ignored, over the refinement's
    positives per image (at least 1 each); smooth-L1 (beta 0.11) of the boxes divided by
    4 x stride, weights 0.5 (initial) and 1 (refined), over each stage's positives per image.
    At test the refined points' box is the detection.

    ``use_vfl=True`` (the reference's ``RepPointsHead(use_vfl=True)``): the classifier learns,
    at each refinement positive's class, the IoU of its refined box with its ground truth (not
    clamped) with the Varifocal Loss, over the same locations and normaliser.

    Training returns ``{"loss_cls", "loss_pts_init", "loss_pts_refine"}``.
    """

    @configurable
    def __init__(
        self,
        *,
        point_generator: DefaultAnchorGenerator,
        init_assigner: PointAssigner,
        refine_matcher: MaxIoUMatcher,
        point_base_scale: float = 4,
        smooth_l1_beta: float = 0.11,
        loss_pts_init_weight: float = 0.5,
        loss_pts_refine_weight: float = 1.0,
        test_nms_thresh: float = 0.5,
        **kwargs,
    ):
        """
        Args:
            point_generator: one anchor per location whose centres are the points (x * s, y * s):
                ``DefaultAnchorGenerator(sizes=[[s]], aspect_ratios=[1.0], strides, offset=0.0)``.
            init_assigner: :class:`PointAssigner` of the first stage.
            refine_matcher: :class:`MaxIoUMatcher` of the second stage.
            point_base_scale: the box losses divide boxes by ``point_base_scale`` x stride.
            smooth_l1_beta, loss_pts_init_weight, loss_pts_refine_weight: the box losses.
            test_nms_thresh: IoU threshold of the class-wise NMS.
            kwargs: :class:`VFLDenseDetector`'s other arguments (backbone, the
                :class:`RepPointsHead`, head_in_features, num_classes, the VFL and focal loss
                options, inference, input normalisation).
        """
        super().__init__(test_nms_thresh=test_nms_thresh, **kwargs)
        if point_generator.num_cell_anchors != [1] * len(point_generator.strides):
            raise ValueError("RepPoints: the point generator must place one point per location")
        self.point_generator = point_generator
        self.init_assigner = init_assigner
        self.refine_matcher = refine_matcher
        self.point_base_scale = point_base_scale
        self.smooth_l1_beta = smooth_l1_beta
        self.loss_pts_init_weight = loss_pts_init_weight
        self.loss_pts_refine_weight = loss_pts_refine_weight

    @classmethod
    def from_config(cls, cfg):
        r = cfg.MODEL.REPPOINTS
        backbone, feature_shapes = cls.backbone_and_feature_shapes(cfg, "REPPOINTS")
        strides = [s.stride for s in feature_shapes]
        low, high = r.REFINE_IOU_THRESHOLDS
        return {
            **cls.shared_options_from_config(cfg, r),
            "backbone": backbone,
            "head": RepPointsHead(cfg, feature_shapes),
            "point_generator": DefaultAnchorGenerator(sizes=[[s] for s in strides], aspect_ratios=[1.0], strides=strides, offset=0.0),
            "init_assigner": PointAssigner(scale=r.POINT_BASE_SCALE, pos_num=1),
            "refine_matcher": MaxIoUMatcher(pos_iou_thr=high, neg_iou_thr=low, min_pos_iou=0.0),
            "point_base_scale": r.POINT_BASE_SCALE,
            "smooth_l1_beta": r.SMOOTH_L1_BETA,
            "loss_pts_init_weight": r.LOSS_PTS_INIT_WEIGHT,
            "loss_pts_refine_weight": r.LOSS_PTS_REFINE_WEIGHT,
        }

    def _points(self, features: List[Tensor]) -> List[Tensor]:
        return [anchors.get_centers() for anchors in self.point_generator(features)]

    # ------------------------------------------------------------------ training

    def forward_training(self, images: ImageList, features, predictions, gt_instances: List[Instances]):
        logits, pts_init, pts_refine = predictions
        points = self._points(features)
        strides = self.point_generator.strides
        level_sizes = [len(p) for p in points]
        stride_per_point = torch.cat([points[0].new_full((n,), float(s)) for n, s in zip(level_sizes, strides)])
        valid = [
            torch.cat(v)
            for v in batch_valid_flags(features, images.image_sizes, self.point_generator, self.backbone.size_divisibility)
        ]
        # boxes in pixels, per image (N, P, 4): the loss boxes of both stages, from absolute points
        # (x, y) = offset * stride + location; and the second stage's anchors, from the
        # initial points' boxes in stride units, scaled and shifted (the reference's two paths)
        boxes_init = cat([self._absolute_boxes(p, c, s) for p, c, s in zip(pts_init, points, strides)], dim=1)
        boxes_refine = cat([self._absolute_boxes(p, c, s) for p, c, s in zip(pts_refine, points, strides)], dim=1)
        with torch.no_grad():
            candidates = cat(
                [
                    (self.head.boxes(p.detach()) * s).permute(0, 2, 3, 1).reshape(p.shape[0], -1, 4) + c.repeat(1, 2)
                    for p, c, s in zip(pts_init, points, strides)
                ],
                dim=1,
            )
        logits = cat([l.permute(0, 2, 3, 1).reshape(l.shape[0], -1, self.num_classes) for l in logits], dim=1)
        points = cat(points)
        init_matched, refine_matched, refine_labels = self.label_points(points, stride_per_point, valid, candidates, gt_instances)
        return self.losses(
            logits, boxes_init, boxes_refine, stride_per_point, valid, init_matched, refine_matched, refine_labels, gt_instances
        )

    def _absolute_boxes(self, pts: Tensor, centers: Tensor, stride: int) -> Tensor:
        """(N, 2P, H, W) (y, x) offsets in stride units -> (N, H*W, 4) moment boxes of the
        absolute points (x, y) in pixels."""
        n = pts.shape[0]
        yx = pts.permute(0, 2, 3, 1).reshape(n, -1, self.head.num_points, 2)
        xy = torch.stack([yx[..., 1], yx[..., 0]], dim=-1) * stride + centers[None, :, None, :]
        flat = xy.reshape(-1, 2 * self.head.num_points)
        return self.head.boxes(flat, y_first=False).reshape(n, -1, 4)

    @torch.no_grad()
    def label_points(
        self,
        points: Tensor,
        strides: Tensor,
        valid: List[Tensor],
        candidates: Tensor,
        gt_instances: List[Instances],
    ) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
        """
        Args:
            points: (P, 2) all locations; strides: (P,) their levels' strides.
            valid: per image (P,) validity; candidates: (N, P, 4) the second stage's boxes.
        Returns:
            init_matched: per image (P,) ground truth of the first stage, -1 for none.
            refine_matched: per image (P,) ground truth of the second stage, -1 for none.
            refine_labels: per image (P,) class of the second stage, ``num_classes`` for
                background, -1 for ignored (and for invalid locations).
        """
        init_matched, refine_matched, refine_labels = [], [], []
        for i, inst in enumerate(gt_instances):
            idx = valid[i].nonzero().squeeze(1)
            m_init = torch.full((len(points),), -1, dtype=torch.long, device=points.device)
            m_init[idx] = self.init_assigner(points[idx], strides[idx], inst.gt_boxes.tensor)
            matches, match_labels = self.refine_matcher(pairwise_iou(inst.gt_boxes, Boxes(candidates[i][idx])))
            m_refine = torch.full((len(points),), -1, dtype=torch.long, device=points.device)
            labels = torch.full((len(points),), -1, dtype=torch.long, device=points.device)
            # Written through the valid locations' indices with torch.where, not selected by masks
            # (each mask selection waits for the device).
            pos = match_labels == 1
            m_refine[idx] = torch.where(pos, matches, -1)
            valid_labels = torch.where(match_labels == 0, self.num_classes, -1)
            if len(inst) > 0:
                valid_labels = torch.where(pos, inst.gt_classes[matches.clamp(min=0)], valid_labels)
            labels[idx] = valid_labels
            init_matched.append(m_init)
            refine_matched.append(m_refine)
            refine_labels.append(labels)
        return init_matched, refine_matched, refine_labels

    def losses(
        self,
        logits: Tensor,
        boxes_init: Tensor,
        boxes_refine: Tensor,
        strides: Tensor,
        valid: List[Tensor],
        init_matched: List[Tensor],
        refine_matched: List[Tensor],
        refine_labels: List[Tensor],
        gt_instances: List[Instances],
    ) -> Dict[str, Tensor]:
        """
        Args:
            logits: (N, P, K); boxes_init, boxes_refine: (N, P, 4) in pixels; strides: (P,).
            valid, init_matched, refine_matched, refine_labels: per image, from :meth:`label_points`.
        """
        num_images = len(gt_instances)
        labels = torch.stack(refine_labels)  # (N, P)
        # every image's positives of both stages, read in one call
        num_pos = torch.stack([(m >= 0).sum() for m in init_matched + refine_matched]).tolist()
        num_pos_init, num_pos_refine = num_pos[:num_images], num_pos[num_images:]
        get_event_storage().put_scalar("num_pos_points", sum(num_pos_refine) / num_images)
        normalizer_init = positives_per_image_normalizer(num_pos_init)
        normalizer_refine = positives_per_image_normalizer(num_pos_refine)

        # The ground truths of all images in one tensor, each image's from its offset.
        all_gt = torch.cat([inst.gt_boxes.tensor for inst in gt_instances])
        gt_offsets = torch.tensor(
            [0] + [len(inst) for inst in gt_instances[:-1]], device=all_gt.device
        ).cumsum(0)

        def box_loss(pred: Tensor, matched: List[Tensor]) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
            matched = torch.stack(matched)  # (N, P)
            images, locations = matched.ge(0).nonzero(as_tuple=True)
            gt = all_gt[matched[images, locations] + gt_offsets[images]]
            scale = (self.point_base_scale * strides[locations])[:, None]
            pos_pred = pred[images, locations]
            loss = smooth_l1_loss(pos_pred / scale, gt / scale, beta=self.smooth_l1_beta, reduction="sum")
            return loss, images, locations, (pos_pred, gt)

        loss_init, *_ = box_loss(boxes_init, init_matched)
        loss_refine, pos_images, pos_locations, (pos_refine, pos_gt) = box_loss(boxes_refine, refine_matched)
        loss_init = loss_init / (normalizer_init + NORMALIZER_EPS)
        loss_refine = loss_refine / (normalizer_refine + NORMALIZER_EPS)
        if len(pos_locations) == 0:
            loss_refine = boxes_refine.sum() * 0.0
        if sum(num_pos_init) == 0:
            loss_init = boxes_init.sum() * 0.0

        weights = (labels >= 0).to(torch.float32).reshape(-1)  # ignored and invalid locations: 0
        flat_logits = logits.reshape(-1, self.num_classes)
        pos_rows = pos_images * logits.shape[1] + pos_locations
        pos_classes = labels[pos_images, pos_locations]
        if self.use_vfl:
            loss_cls = self.iou_aware_classification_loss(
                flat_logits, pos_rows, pos_classes, pos_refine, pos_gt, normalizer_refine, weights=weights
            )
        else:
            loss_cls = self.hard_label_classification_loss(
                flat_logits, pos_rows, pos_classes, normalizer_refine, weights=weights
            )
        return {
            "loss_cls": loss_cls,
            "loss_pts_init": self.loss_pts_init_weight * loss_init,
            "loss_pts_refine": self.loss_pts_refine_weight * loss_refine,
        }

    # ------------------------------------------------------------------ inference

    def forward_inference(self, images: ImageList, features: List[Tensor], predictions) -> List[Instances]:
        logits, _, pts_refine = predictions
        points = self._points(features)
        strides = self.point_generator.strides
        results = []
        for img_idx, image_size in enumerate(images.image_sizes):
            height, width = image_size
            all_boxes, all_scores, all_classes = [], [], []
            for logits_l, pts_l, points_l, stride in zip(logits, pts_refine, points, strides):
                scores = logits_l[img_idx].permute(1, 2, 0).reshape(-1, self.num_classes).sigmoid()
                idx, classes, cand_scores = select_topk_candidates(scores, self.test_score_thresh, self.test_topk_candidates)
                boxes = self.head.boxes(pts_l[img_idx : img_idx + 1])[0].permute(1, 2, 0).reshape(-1, 4)[idx]
                boxes = boxes * stride + points_l[idx].repeat(1, 2)
                boxes = torch.stack(
                    [
                        boxes[:, 0].clamp(min=0, max=width),
                        boxes[:, 1].clamp(min=0, max=height),
                        boxes[:, 2].clamp(min=0, max=width),
                        boxes[:, 3].clamp(min=0, max=height),
                    ],
                    dim=-1,
                )
                all_boxes.append(boxes)
                all_scores.append(cand_scores)
                all_classes.append(classes)
            results.append(
                classwise_nms(
                    cat(all_boxes), cat(all_scores), cat(all_classes), image_size, self.test_nms_thresh, self.max_detections_per_image
                )
            )
        return results
