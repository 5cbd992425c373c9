"""Soft-NMS (Bodla et al., ICCV 2017), class-wise, as the reference uses for VFNet-X."""
from typing import Tuple

import torch
from torchvision.ops import box_iou

__all__ = ["batched_soft_nms"]


def batched_soft_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    iou_threshold: float = 0.65,
    sigma: float = 0.5,
    min_score: float = 1e-3,
    method: str = "linear",
) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    Class-wise Soft-NMS: repeatedly take the highest-scoring box and decay the scores of the
    boxes of the same class that overlap it, instead of removing them.

    Decay of a box j by the kept box i, with o = IoU(i, j):
    "linear": ``s_j *= 1 - o`` when o >= ``iou_threshold``; "gaussian": ``s_j *= exp(-o**2 / sigma)``;
    "naive": ``s_j = 0`` when o >= ``iou_threshold``. Boxes whose score falls below ``min_score``
    are dropped. The comparisons are mmcv's (``soft_nms``, which the reference's VFNet-X calls):
    a box exactly at the threshold is decayed, where plain NMS (``batched_nms``) keeps it.

    Args:
        boxes: (N, 4) XYXY.
        scores: (N,) scores.
        labels: (N,) class indices; boxes of different classes never interact.
    Returns:
        keep: (K,) int64 indices into the inputs, in the order the boxes were kept
            (decreasing decayed score).
        new_scores: (K,) the decayed scores of the kept boxes.
    """
    if method not in ("linear", "gaussian", "naive"):
        raise ValueError(f"batched_soft_nms: unknown method {method!r}; use 'linear', 'gaussian' or 'naive'")
    if not (boxes.shape[0] == scores.shape[0] == labels.shape[0]) or boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(
            f"batched_soft_nms: expected boxes (N, 4), scores (N,), labels (N,); got "
            f"{tuple(boxes.shape)}, {tuple(scores.shape)}, {tuple(labels.shape)}"
        )
    num = boxes.shape[0]
    if num == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device), scores.new_zeros(0)

    ious = box_iou(boxes.float(), boxes.float())
    ious = torch.where(labels[:, None] == labels[None, :], ious, torch.zeros_like(ious))
    current = scores.float().clone()
    alive = current >= min_score
    keep, kept_scores = [], []
    for _ in range(num):
        masked = torch.where(alive, current, torch.full_like(current, -1.0))
        best_score, best = masked.max(dim=0)
        if best_score < 0:
            break
        keep.append(best)
        kept_scores.append(best_score)
        alive[best] = False
        overlap = ious[best]
        if method == "linear":
            decay = torch.where(overlap >= iou_threshold, 1.0 - overlap, torch.ones_like(overlap))
        elif method == "gaussian":
            decay = torch.exp(-(overlap * overlap) / sigma)
        else:
            decay = torch.where(overlap >= iou_threshold, torch.zeros_like(overlap), torch.ones_like(overlap))
        current = current * decay
        alive &= current >= min_score
    if not keep:
        return torch.zeros(0, dtype=torch.long, device=boxes.device), scores.new_zeros(0)
    return torch.stack(keep), torch.stack(kept_scores).to(scores.dtype)
