"""
Label assignment: which ground-truth box, if any, each point of the dense grid learns.
:class:`LabelAssigner` is the interface VFNet expects; :class:`ATSSAssigner` and
:class:`FCOSAssigner` are the reference's two.
"""
import abc
import math
from typing import List, Optional, Sequence, Tuple

import torch
from detectron2.structures import Boxes, Instances, pairwise_iou, pairwise_point_box_distance

__all__ = ["LabelAssigner", "ATSSAssigner", "FCOSAssigner"]

_INSIDE_EPS = 0.01


class LabelAssigner(abc.ABC):
    """
    The assigners :class:`vfnet.VFNet` takes::

        matched_idxs = assigner(anchors_per_level, valid_per_level, gt_boxes)

    with ``anchors_per_level`` a list (one per level) of :class:`Boxes` of shape (P_l, 4) whose
    centres are the points, ``valid_per_level`` a list of bool tensors (P_l,) telling which points
    lie inside the image's own padded area, and ``gt_boxes`` the image's ground truth (G, 4) as
    XYXY pixels; it returns an int64 tensor (sum P_l,) holding the index of the matched ground
    truth or -1.

    A subclass declares, as class attributes:

    - ``assigns_padding``: True when every point of the padded batch takes part in the
      classification loss (unmatched ones as negatives), False when only the points inside each
      image's own padded area do (the others get no loss, as the reference's valid flags);
    - ``strides``: the strides of the levels it was configured for, or None when it works on any
      levels; VFNet checks them against its head's.
    """

    strides: Optional[List[int]] = None

    @property
    @abc.abstractmethod
    def assigns_padding(self) -> bool:
        """Whether the points outside each image's own padded area take part (see the class)."""

    @abc.abstractmethod
    def __call__(
        self, anchors_per_level: List[Boxes], valid_per_level: List[torch.Tensor], gt_boxes: Boxes
    ) -> torch.Tensor:
        """(sum P_l,) int64 index of each point's ground truth in ``gt_boxes``, -1 for none."""

    @torch.no_grad()
    def label_images(
        self,
        anchors_per_level: List[Boxes],
        valid: List[List[torch.Tensor]],
        gt_instances: List[Instances],
        num_classes: int,
    ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """
        Assign the points of every image of a batch.

        Args:
            anchors_per_level: as for ``__call__``, the same for every image.
            valid: per image, ``valid_per_level``.
            gt_instances: per image, ``gt_boxes`` and ``gt_classes``.
            num_classes: the class index given to background.
        Returns:
            gt_labels: per image (sum P_l,) int64 class of each point, ``num_classes`` for background.
            gt_boxes: per image (sum P_l, 4) XYXY ground truth of each point (zeros for background).
        """
        gt_labels, gt_boxes = [], []
        for valid_per_level, instances in zip(valid, gt_instances):
            matched = self(anchors_per_level, valid_per_level, instances.gt_boxes)
            foreground = matched >= 0
            if len(instances) > 0:
                index = matched.clamp(min=0)
                labels = torch.where(foreground, instances.gt_classes[index], torch.full_like(matched, num_classes))
                boxes = instances.gt_boxes.tensor[index] * foreground[:, None]
            else:
                labels = torch.full_like(matched, num_classes)
                boxes = torch.zeros((len(matched), 4), device=matched.device)
            gt_labels.append(labels)
            gt_boxes.append(boxes)
        return gt_labels, gt_boxes


class ATSSAssigner(LabelAssigner):
    """
    Adaptive Training Sample Selection (Zhang et al., CVPR 2020), as the reference VFNet uses it.

    Per ground truth, on each level the ``topk`` valid anchors whose centres are nearest to the
    GT centre are candidates; the IoU threshold is mean + std (unbiased) of the candidates' IoUs;
    a candidate is positive when its IoU reaches the threshold and its centre lies inside the GT
    (every side distance > 0.01 px). A point claimed by several GTs takes the one of highest IoU.
    """

    assigns_padding = False  # only points inside the image's own padded area take part

    def __init__(self, topk: int = 9):
        if topk < 1:
            raise ValueError(f"ATSSAssigner: topk must be >= 1, got {topk}")
        self.topk = topk

    @torch.no_grad()
    def __call__(
        self, anchors_per_level: List[Boxes], valid_per_level: List[torch.Tensor], gt_boxes: Boxes
    ) -> torch.Tensor:
        num_points = sum(len(a) for a in anchors_per_level)
        device = anchors_per_level[0].tensor.device
        matched_idxs = torch.full((num_points,), -1, dtype=torch.long, device=device)
        num_gt = len(gt_boxes)
        valid = torch.cat(valid_per_level)
        valid_idxs = valid.nonzero().squeeze(1)
        if num_gt == 0 or len(valid_idxs) == 0:
            return matched_idxs

        anchors = Boxes(Boxes.cat(anchors_per_level).tensor[valid_idxs])
        ious = pairwise_iou(anchors, gt_boxes)  # (A, G)
        anchor_centers = anchors.get_centers()
        # The reference's formula: torch.cdist goes through a matrix product for large inputs and
        # rounds otherwise, which can reorder near-ties in the top-k below.
        distances = (anchor_centers[:, None, :] - gt_boxes.get_centers()[None, :, :]).pow(2).sum(-1).sqrt()

        # Candidates: per level, the topk valid anchors nearest to each GT centre.
        num_valid_per_level = torch.stack([v.sum() for v in valid_per_level]).tolist()  # one wait, not one per level
        candidate_idxs = []
        start = 0
        for n in num_valid_per_level:
            if n > 0:
                k = min(self.topk, n)
                _, idxs = distances[start : start + n].topk(k, dim=0, largest=False)
                candidate_idxs.append(idxs + start)
            start += n
        candidate_idxs = torch.cat(candidate_idxs, dim=0)  # (K, G)

        gt_range = torch.arange(num_gt, device=device)
        candidate_ious = ious[candidate_idxs, gt_range]
        threshold = candidate_ious.mean(0) + candidate_ious.std(0)
        is_pos = candidate_ious >= threshold[None, :]

        # (A, G, 4) side distances, read at each GT's own candidates -> (K, G)
        side_distances = pairwise_point_box_distance(anchor_centers, gt_boxes)
        is_pos &= side_distances[candidate_idxs, gt_range].amin(dim=-1) > _INSIDE_EPS

        # A point claimed by several GTs keeps the one of highest IoU. A GT's candidates are distinct
        # points, so each (candidate, GT) is written once; not selecting the positives by a mask
        # saves the host a wait for the device.
        claimed_ious = torch.full_like(ious, -math.inf)
        claimed_ious[candidate_idxs, gt_range] = torch.where(is_pos, candidate_ious, -math.inf)
        best_iou, best_gt = claimed_ious.max(dim=1)
        matched_valid = torch.where(best_iou > -math.inf, best_gt, torch.full_like(best_gt, -1))
        matched_idxs[valid_idxs] = matched_valid
        return matched_idxs


class FCOSAssigner(LabelAssigner):
    """
    FCOS-style assignment (Tian et al., ICCV 2019): a point learns a GT when it lies inside the
    GT (or, with centre sampling, inside a square of ``radius * stride`` around the GT centre,
    cut to the GT) and the largest of its four distances to the GT's sides falls in its level's
    regress range; among several such GTs the smallest in area wins. Validity flags are not used:
    the reference assigns every point of the padded batch.
    """

    assigns_padding = True  # every point of the padded batch takes part (as negatives)

    def __init__(
        self,
        strides: Sequence[int],
        regress_ranges: Sequence[Tuple[float, float]] = (
            (-1, 64),
            (64, 128),
            (128, 256),
            (256, 512),
            (512, 1e8),
        ),
        center_sampling: bool = False,
        center_sample_radius: float = 1.5,
    ):
        if len(strides) != len(regress_ranges):
            raise ValueError(
                f"FCOSAssigner: {len(strides)} strides but {len(regress_ranges)} regress ranges"
            )
        self.strides = [int(s) for s in strides]
        self.regress_ranges = [tuple(float(v) for v in r) for r in regress_ranges]
        self.center_sampling = center_sampling
        self.center_sample_radius = center_sample_radius

    @torch.no_grad()
    def __call__(
        self, anchors_per_level: List[Boxes], valid_per_level: List[torch.Tensor], gt_boxes: Boxes
    ) -> torch.Tensor:
        if len(anchors_per_level) != len(self.strides):
            raise ValueError(
                f"FCOSAssigner: got {len(anchors_per_level)} levels, configured for {len(self.strides)}"
            )
        points = torch.cat([a.get_centers() for a in anchors_per_level])
        num_points = points.shape[0]
        device = points.device
        num_gt = len(gt_boxes)
        if num_gt == 0:
            return torch.full((num_points,), -1, dtype=torch.long, device=device)
        gt = gt_boxes.tensor
        level_sizes = [len(a) for a in anchors_per_level]
        ranges = torch.cat(
            [points.new_tensor(r).expand(n, 2) for r, n in zip(self.regress_ranges, level_sizes)]
        )
        ltrb = pairwise_point_box_distance(points, gt_boxes)  # (P, G, 4)

        if self.center_sampling:
            # Per level, each GT's sampling region: a square of radius * stride around its
            # centre, cut to the GT.
            center = gt_boxes.get_centers()
            inside = []
            for points_l, stride in zip(points.split(level_sizes), self.strides):
                radius = stride * self.center_sample_radius
                region = torch.cat((torch.maximum(center - radius, gt[:, :2]), torch.minimum(center + radius, gt[:, 2:])), 1)
                inside.append(pairwise_point_box_distance(points_l, Boxes(region)).amin(dim=-1) > 0)
            inside = torch.cat(inside)
        else:
            inside = ltrb.amin(dim=-1) > 0

        max_distance = ltrb.amax(dim=-1)
        in_range = (max_distance >= ranges[:, None, 0]) & (max_distance <= ranges[:, None, 1])
        areas = gt_boxes.area()[None].expand(num_points, num_gt)
        areas = torch.where(inside & in_range, areas, torch.full_like(areas, math.inf))
        min_area, min_area_idx = areas.min(dim=1)
        return torch.where(min_area < math.inf, min_area_idx, torch.full_like(min_area_idx, -1))
