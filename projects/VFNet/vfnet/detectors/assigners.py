"""
Label assignment strategies of MMDetection's RetinaNet, RepPoints and FoveaBox, restated.

(ATSS, for the ATSS detector, is :class:`vfnet.assigners.ATSSAssigner`.)

- :class:`MaxIoUMatcher`: MMDetection's ``MaxIoUAssigner`` with Detectron2's ``Matcher``
  interface, so that it drops into Detectron2's RetinaNet as its ``anchor_matcher``.
- :class:`PointAssigner`: RepPoints' first stage, the nearest point of the ground truth's
  pyramid level.
- :class:`FoveaAssigner`: FoveaBox's fovea areas, level by scale range.
"""
import math
from typing import List, Sequence, Tuple

import torch
from torch import Tensor

__all__ = ["MaxIoUMatcher", "PointAssigner", "FoveaAssigner"]


class MaxIoUMatcher:
    """
    MMDetection's ``MaxIoUAssigner`` (``gt_max_assign_all=True``, no ignored boxes), with the
    call interface of Detectron2's :class:`~detectron2.modeling.matcher.Matcher`.

    A prediction (anchor, box) whose best IoU with any ground truth is >= ``pos_iou_thr`` is
    positive for that ground truth; below ``neg_iou_thr`` it is negative; in between it is
    ignored. Then every ground truth whose best IoU is >= ``min_pos_iou`` claims all predictions
    that reach that best IoU, in the order of the ground truths (a later one overrides an earlier
    one). Detectron2's ``Matcher(allow_low_quality_matches=True)`` makes those predictions
    positive too but leaves them matched to their own best ground truth; MMDetection reassigns
    them, which is what this class does.
    """

    def __init__(self, pos_iou_thr: float = 0.5, neg_iou_thr: float = 0.4, min_pos_iou: float = 0.0):
        if not 0.0 <= neg_iou_thr <= pos_iou_thr <= 1.0:
            raise ValueError(
                f"MaxIoUMatcher: need 0 <= neg_iou_thr <= pos_iou_thr <= 1, got {neg_iou_thr}, {pos_iou_thr}"
            )
        self.pos_iou_thr = pos_iou_thr
        self.neg_iou_thr = neg_iou_thr
        self.min_pos_iou = min_pos_iou

    @torch.no_grad()
    def __call__(self, match_quality_matrix: Tensor) -> Tuple[Tensor, Tensor]:
        """
        Args:
            match_quality_matrix: (G, N) IoUs of G ground truths with N predictions.
        Returns:
            matches: (N,) int64 index of the matched ground truth (meaningful where label is 1).
            labels: (N,) int8, 1 positive, 0 negative, -1 ignored.
        """
        num_gt, num_pred = match_quality_matrix.shape
        device = match_quality_matrix.device
        if num_gt == 0:
            return (
                torch.zeros(num_pred, dtype=torch.int64, device=device),
                torch.zeros(num_pred, dtype=torch.int8, device=device),
            )
        max_iou, matches = match_quality_matrix.max(dim=0)
        # masked_fill_, not assignment through a mask (that selects the indices first: a wait
        # for the device)
        labels = torch.full((num_pred,), -1, dtype=torch.int8, device=device)
        labels.masked_fill_((max_iou >= 0) & (max_iou < self.neg_iou_thr), 0)
        labels.masked_fill_(max_iou >= self.pos_iou_thr, 1)

        gt_max_iou = match_quality_matrix.max(dim=1).values
        claims = (match_quality_matrix == gt_max_iou[:, None]) & (gt_max_iou >= self.min_pos_iou)[:, None]
        claimed = claims.any(dim=0)
        # the last ground truth that claims a prediction wins
        last_claimant = (num_gt - 1) - claims.flip(0).to(torch.uint8).argmax(dim=0)
        matches = torch.where(claimed, last_claimant, matches)
        labels.masked_fill_(claimed, 1)
        return matches, labels


class PointAssigner:
    """
    RepPoints' first-stage assignment (MMDetection's ``PointAssigner``): a ground truth of width
    w and height h belongs to pyramid level ``int((log2(w / scale) + log2(h / scale)) / 2)``
    (clamped to the levels there are); on that level its ``pos_num`` points nearest its centre,
    in units of its (w, h), are positive, unless a point is already nearer to an earlier ground
    truth.
    """

    def __init__(self, scale: int = 4, pos_num: int = 1):
        if pos_num < 1:
            raise ValueError(f"PointAssigner: pos_num must be >= 1, got {pos_num}")
        self.scale = scale
        self.pos_num = pos_num

    @torch.no_grad()
    def __call__(self, points: Tensor, strides: Tensor, gt_boxes: Tensor) -> Tensor:
        """
        Args:
            points: (P, 2) point coordinates (x, y) in pixels (the locations that take part).
            strides: (P,) stride of each point's level (powers of two).
            gt_boxes: (G, 4) XYXY ground truth.
        Returns:
            (P,) int64 index of the assigned ground truth, -1 for none.
        """
        num_points, num_gt = points.shape[0], gt_boxes.shape[0]
        assigned = torch.full((num_points,), -1, dtype=torch.long, device=points.device)
        if num_points == 0 or num_gt == 0:
            return assigned
        points_lvl = torch.log2(strides.float()).int()
        lvl_min, lvl_max = points_lvl.min(), points_lvl.max()
        gt_xy = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
        gt_wh = (gt_boxes[:, 2:] - gt_boxes[:, :2]).clamp(min=1e-6)
        gt_lvl = ((torch.log2(gt_wh[:, 0] / self.scale) + torch.log2(gt_wh[:, 1] / self.scale)) / 2).int()
        gt_lvl = torch.clamp(gt_lvl, min=lvl_min, max=lvl_max)
        assigned_dist = points.new_full((num_points,), math.inf)
        # The ground truths' levels, and each level's points, read once (each read waits for the
        # device); the loop over the ground truths then runs without waiting.
        level_points = {}
        for g, level in enumerate(gt_lvl.tolist()):
            if level not in level_points:
                level_idx = (points_lvl == level).nonzero().squeeze(1)
                level_points[level] = (level_idx, points[level_idx])
            level_idx, level_xy = level_points[level]
            if level_idx.numel() == 0:
                continue
            dist = ((level_xy - gt_xy[g : g + 1]) / gt_wh[g : g + 1]).norm(dim=1)
            k = min(self.pos_num, dist.numel())
            min_dist, nearest = torch.topk(dist, k, largest=False)
            nearest = level_idx[nearest]  # distinct points
            current = assigned_dist[nearest]
            closer = min_dist < current
            assigned[nearest] = torch.where(closer, g, assigned[nearest])
            assigned_dist[nearest] = torch.where(closer, min_dist, current)
        return assigned


class FoveaAssigner:
    """
    FoveaBox's assignment (MMDetection's ``FoveaHead._get_target_single``): a ground truth of
    scale sqrt(w * h) in a level's ``scale_range`` (bounds included; ranges overlap, so a ground
    truth may take part on two levels) claims on that level the cells of its fovea, the box shrunk
    about its centre by ``sigma`` (cells whose centres lie inside it, in feature-map units); on
    each level larger ground truths are laid first and smaller ones overwrite them.
    """

    def __init__(self, scale_ranges: Sequence[Tuple[float, float]], sigma: float = 0.4):
        self.scale_ranges = [tuple(float(v) for v in r) for r in scale_ranges]
        self.sigma = sigma

    @torch.no_grad()
    def __call__(
        self, feature_sizes: Sequence[Tuple[int, int]], strides: Sequence[int], gt_boxes: Tensor
    ) -> Tensor:
        """
        Args:
            feature_sizes: (H_l, W_l) of each level.
            strides: stride of each level in pixels.
            gt_boxes: (G, 4) XYXY ground truth.
        Returns:
            (sum_l H_l * W_l,) int64 index of the assigned ground truth, -1 for none, in
            (level, y, x) order.
        """
        if len(feature_sizes) != len(self.scale_ranges) or len(strides) != len(self.scale_ranges):
            raise ValueError(
                f"FoveaAssigner: {len(feature_sizes)} levels and {len(strides)} strides for "
                f"{len(self.scale_ranges)} scale ranges"
            )
        device = gt_boxes.device
        gt_scale = torch.sqrt((gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1]))
        per_level: List[Tensor] = []
        for (h, w), stride, (lower, upper) in zip(feature_sizes, strides, self.scale_ranges):
            assigned = torch.full((h, w), -1, dtype=torch.long, device=device)
            hit = ((gt_scale >= lower) & (gt_scale <= upper)).nonzero().flatten()
            if hit.numel():
                hit = hit[torch.sort(-gt_scale[hit])[1]]
                boxes = gt_boxes[hit] / stride
                half_w = 0.5 * (boxes[:, 2] - boxes[:, 0])
                half_h = 0.5 * (boxes[:, 3] - boxes[:, 1])
                left = torch.ceil(boxes[:, 0] + (1 - self.sigma) * half_w - 0.5).long().clamp(0, w - 1)
                right = torch.floor(boxes[:, 0] + (1 + self.sigma) * half_w - 0.5).long().clamp(0, w - 1)
                top = torch.ceil(boxes[:, 1] + (1 - self.sigma) * half_h - 0.5).long().clamp(0, h - 1)
                bottom = torch.floor(boxes[:, 1] + (1 + self.sigma) * half_h - 0.5).long().clamp(0, h - 1)
                # One read of the rectangles (it waits for the device), then painted in order.
                for g, x1, y1, x2, y2 in torch.stack([hit, left, top, right, bottom], dim=1).tolist():
                    assigned[y1 : y2 + 1, x1 : x2 + 1] = g
            per_level.append(assigned.reshape(-1))
        return torch.cat(per_level)
