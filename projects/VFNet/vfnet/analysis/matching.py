"""Matching of predicted boxes to ground-truth boxes by IoU."""
from typing import Optional, Tuple

import torch
from detectron2.structures import Boxes, pairwise_iou

__all__ = ["best_matching_ground_truth"]


def best_matching_ground_truth(
    boxes: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_classes: torch.Tensor,
    classes: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    The ground truth each box overlaps most: ``g(i) = argmax_j IoU(box_i, gt_j)``.

    Args:
        boxes: (N, 4) XYXY predicted boxes.
        gt_boxes: (M, 4) XYXY ground-truth boxes (COCO crowd regions left out by the caller).
        gt_classes: (M,) int64 classes of the ground truth.
        classes: None: match against every ground truth, whatever its class; (N,) int64: match
            each box only against the ground truth of its own class.

    Returns:
        iou: (N,) float32, the IoU with the best match; 0 when no ground truth overlaps the box.
        gt_class: (N,) int64, the class of the best match; -1 when the IoU is 0 (no match). On a
        tie the ground truth listed first wins.
    """
    if boxes.dim() != 2 or boxes.shape[-1] != 4 or gt_boxes.dim() != 2 or gt_boxes.shape[-1] != 4:
        raise ValueError(
            f"best_matching_ground_truth: expected boxes (N, 4) and gt_boxes (M, 4), got "
            f"{tuple(boxes.shape)} and {tuple(gt_boxes.shape)}"
        )
    if gt_classes.shape != (gt_boxes.shape[0],):
        raise ValueError(f"gt_classes must have shape ({gt_boxes.shape[0]},), got {tuple(gt_classes.shape)}")
    if classes is not None and classes.shape != (boxes.shape[0],):
        raise ValueError(f"classes must have shape ({boxes.shape[0]},), got {tuple(classes.shape)}")
    num = boxes.shape[0]
    if gt_boxes.shape[0] == 0 or num == 0:
        return boxes.new_zeros(num, dtype=torch.float32), torch.full((num,), -1, dtype=torch.long, device=boxes.device)
    iou = pairwise_iou(Boxes(boxes.float()), Boxes(gt_boxes.float().to(boxes.device)))  # (N, M)
    gt_classes = gt_classes.to(boxes.device)
    if classes is not None:
        iou = torch.where(classes[:, None] == gt_classes[None, :], iou, torch.zeros_like(iou))
    best = iou.argmax(dim=1)  # the first of equal maxima, as torch.argmax documents
    best_iou = iou.gather(1, best[:, None])[:, 0]
    matched_class = torch.where(best_iou > 0, gt_classes[best], torch.full_like(best, -1))
    return best_iou, matched_class
