"""Soft-NMS (Bodla et al., ICCV 2017), class-wise, as the reference uses for VFNet-X."""
from typing import Tuple

import torch

__all__ = ["batched_soft_nms", "soft_nms_decay"]


def soft_nms_decay(overlap: torch.Tensor, method: str, iou_threshold: float, sigma: float) -> torch.Tensor:
    """The factor that Soft-NMS multiplies a box's score by, given its IoU ``overlap`` with the
    kept box (any shape): "linear" ``1 - o`` where o >= ``iou_threshold``, "gaussian"
    ``exp(-o**2 / sigma)``, "naive" 0 where o >= ``iou_threshold``; 1 elsewhere."""
    if method == "linear":
        return torch.where(overlap >= iou_threshold, 1.0 - overlap, torch.ones_like(overlap))
    if method == "gaussian":
        return torch.exp(-(overlap * overlap) / sigma)
    return torch.where(overlap >= iou_threshold, torch.zeros_like(overlap), torch.ones_like(overlap))


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

    # Classes never interact, so each runs its own Soft-NMS, all in step: every step keeps the best
    # live box of every class. A class's picks, their order and its decays are those of the one-box-
    # at-a-time loop (a box is only ever decayed by its own class's picks), in as many steps as the
    # largest class has boxes, with O(N) work per step (each box's IoU with its class's pick, as
    # torchvision's box_iou computes it) and no host sync per step.
    device = boxes.device
    classes, cls = torch.unique(labels, return_inverse=True)
    num_classes = len(classes)
    steps = int(torch.bincount(cls).max())
    boxes = boxes.float()
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    current = scores.float().clone()
    # Index `num` is a sentinel: the "pick" of a class that has none left; it is never alive.
    alive = torch.cat([current >= min_score, current.new_zeros(1, dtype=torch.bool)])
    index = torch.arange(num, device=device)
    none_left = torch.full((num_classes,), num, dtype=torch.long, device=device)
    picks, pick_scores = [], []
    for step in range(steps):
        live = alive[:num]
        masked = torch.where(live, current, -1.0)
        best_score = torch.full((num_classes,), -1.0, device=device).scatter_reduce(0, cls, masked, "amax")
        # The first box of the class at its best score (the loop's tie rule, on any device).
        is_best = live & (masked == best_score[cls])
        best = none_left.scatter_reduce(0, cls, torch.where(is_best, index, num), "amin")
        picks.append(best)
        pick_scores.append(best_score)
        alive[best] = False
        pick = best[cls]
        pick_box = pick.clamp(max=num - 1)  # the sentinel reads box 0..num-1, masked out below
        picked = boxes[pick_box]
        wh = (torch.min(picked[:, 2:], boxes[:, 2:]) - torch.max(picked[:, :2], boxes[:, :2])).clamp(min=0)
        inter = wh[:, 0] * wh[:, 1]
        overlap = torch.where(pick < num, inter / (area[pick_box] + area - inter), 0.0)
        current = current * soft_nms_decay(overlap, method, iou_threshold, sigma)
        alive[:num] &= current >= min_score
        if step % 32 == 31 and not bool(alive.any()):
            break
    keep = torch.stack(picks).flatten()
    kept_scores = torch.stack(pick_scores).flatten()
    # The loop stops at the first negative best score (none with scores in [0, 1]).
    found = (keep < num) & (kept_scores >= 0)
    keep, kept_scores = keep[found], kept_scores[found]
    # The loop's order: decreasing score, ties by box index (each pick is the first best box).
    by_index = torch.argsort(keep)
    keep, kept_scores = keep[by_index], kept_scores[by_index]
    order = torch.sort(kept_scores, descending=True, stable=True).indices
    return keep[order], kept_scores[order].to(scores.dtype)
