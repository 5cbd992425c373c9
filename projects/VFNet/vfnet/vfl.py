"""
The Varifocal Loss for any dense detector: IoU-aware classification targets and the loss on them.

A dense detector trained with the focal loss on hard labels switches to the Varifocal Loss in
three steps, which is what the reference repository does for RetinaNet, ATSS, FoveaBox and
RepPoints (its ``use_vfl``):

1. decode the predicted boxes of the positives, and their ground-truth boxes, to XYXY pixels;
2. :func:`iou_aware_targets`: a target tensor of the logits' shape, 0 everywhere except, at each
   positive's row and ground-truth class, the IoU of its predicted box with its ground truth
   (computed on detached boxes: the target carries no gradient);
3. :func:`varifocal_classification_loss`: the Varifocal Loss summed over the rows that take part
   (``weights``) and divided by the detector's own normaliser (its number of positives), as the
   focal loss was.

Everything else (assignment, box losses, inference) stays as it is. At inference the sigmoid of
the logits is then an IoU-aware score, used for ranking as before.
"""
from typing import Optional

import torch
from detectron2.structures import Boxes
from detectron2.structures.boxes import matched_pairwise_iou
from torch import Tensor

from .losses import varifocal_loss as eager_varifocal_loss
from .ops import fused_varifocal_loss

__all__ = ["NORMALIZER_EPS", "aligned_iou", "iou_aware_targets", "varifocal_classification_loss"]

#: MMDetection adds float32 eps to every loss normaliser (``avg_factor``); so do we.
NORMALIZER_EPS = torch.finfo(torch.float32).eps


def aligned_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of (K, 4) XYXY boxes with the (K, 4) boxes at the same rows -> (K,), float32."""
    if boxes1.shape != boxes2.shape or boxes1.dim() != 2 or boxes1.shape[-1] != 4:
        raise ValueError(
            f"aligned_iou: expected two (K, 4) box tensors, got {tuple(boxes1.shape)} and {tuple(boxes2.shape)}"
        )
    return matched_pairwise_iou(Boxes(boxes1.float()), Boxes(boxes2.float()))


def iou_aware_targets(
    logits: Tensor,
    pos_rows: Tensor,
    pos_classes: Tensor,
    pred_boxes: Tensor,
    target_boxes: Tensor,
    *,
    min_iou: Optional[float] = None,
) -> Tensor:
    """
    The IoU-aware classification targets of VarifocalNet for a dense detector.

    Args:
        logits: (R, C) classification logits of R locations (anchors, points) and C classes; only
            their shape and device are used.
        pos_rows: (K,) int64 rows of the positives in ``logits``.
        pos_classes: (K,) int64 ground-truth class of each positive, in [0, C).
        pred_boxes: (K, 4) decoded predicted boxes of the positives, XYXY pixels.
        target_boxes: (K, 4) their ground-truth boxes, XYXY pixels.
        min_iou: clamp the IoUs to at least this (the reference does so with 1e-6 for ATSS,
            FoveaBox and VFNet, and does not for RetinaNet and RepPoints).
    Returns:
        (R, C) float32 targets: IoU(pred_boxes[k], target_boxes[k]) at (pos_rows[k],
        pos_classes[k]), 0 elsewhere. No gradient flows through them.
    """
    if logits.dim() != 2:
        raise ValueError(f"iou_aware_targets: logits must be (R, C), got shape {tuple(logits.shape)}")
    num_pos = pos_rows.numel()
    if not (pos_classes.numel() == num_pos and pred_boxes.shape == (num_pos, 4) and target_boxes.shape == (num_pos, 4)):
        raise ValueError(
            f"iou_aware_targets: {num_pos} positive rows, but pos_classes {tuple(pos_classes.shape)}, "
            f"pred_boxes {tuple(pred_boxes.shape)}, target_boxes {tuple(target_boxes.shape)}"
        )
    if num_pos:
        lowest, highest = torch.stack([pos_classes.min(), pos_classes.max()]).tolist()  # one wait
        if lowest < 0 or highest >= logits.shape[1]:
            raise ValueError(f"iou_aware_targets: positive classes must lie in [0, {logits.shape[1]})")
    targets = torch.zeros(logits.shape, dtype=torch.float32, device=logits.device)
    if num_pos == 0:
        return targets
    iou = aligned_iou(pred_boxes.detach(), target_boxes.detach())
    if min_iou is not None:
        iou = iou.clamp(min=min_iou)
    targets[pos_rows, pos_classes] = iou
    return targets


def varifocal_classification_loss(
    logits: Tensor,
    targets: Tensor,
    normalizer: float,
    *,
    weights: Optional[Tensor] = None,
    alpha: float = 0.75,
    gamma: float = 2.0,
    iou_weighted: bool = True,
    fused: bool = True,
) -> Tensor:
    """
    ``sum(VFL(logits, targets) * weights) / (normalizer + eps)``, the classification loss of a
    dense detector trained with the Varifocal Loss.

    Args:
        logits: (R, C) logits (computed in float32).
        targets: (R, C) targets from :func:`iou_aware_targets`.
        normalizer: the detector's loss normaliser, e.g. its number of positives (>= 1).
        weights: optional (R,) per-row weights, e.g. 0 for anchors outside the image or ignored
            by the assigner (the reference's ``label_weights``); None: every row counts.
        alpha, gamma, iou_weighted: Varifocal Loss parameters (0.75, 2, True in the reference).
        fused: use the fused kernel :func:`vfnet.ops.fused_varifocal_loss` (same result) or the eager
            :func:`vfnet.losses.varifocal_loss`.
    Returns:
        A 0-d float32 tensor.
    """
    if logits.shape != targets.shape:
        raise ValueError(
            f"varifocal_classification_loss: logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ"
        )
    vfl = fused_varifocal_loss if fused else eager_varifocal_loss
    logits = logits.float()
    targets = targets.float()
    if weights is None:
        total = vfl(logits, targets, alpha=alpha, gamma=gamma, iou_weighted=iou_weighted, reduction="sum")
    else:
        if weights.shape != logits.shape[:1]:
            raise ValueError(
                f"varifocal_classification_loss: weights must be ({logits.shape[0]},), got {tuple(weights.shape)}"
            )
        loss = vfl(logits, targets, alpha=alpha, gamma=gamma, iou_weighted=iou_weighted, reduction="none")
        total = (loss * weights.to(loss.dtype)[:, None]).sum()
    return total / (float(normalizer) + NORMALIZER_EPS)
