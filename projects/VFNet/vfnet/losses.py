"""Losses of VFNet: the Varifocal Loss, in the functional style of ``fvcore.nn``."""
import torch
from torch.nn import functional as F

__all__ = ["varifocal_loss"]


def varifocal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = 0.75,
    gamma: float = 2.0,
    iou_weighted: bool = True,
    reduction: str = "sum",
) -> torch.Tensor:
    """
    Varifocal Loss (VarifocalNet, CVPR 2021), with p = sigmoid(logits):

    - where ``targets`` q > 0: -w * (q * log(p) + (1 - q) * log(1 - p)), w = q
      (w = 1 when ``iou_weighted`` is False);
    - where q = 0: -alpha * p**gamma * log(1 - p).

    Args:
        logits: float tensor of any shape, classification logits.
        targets: same shape, IoU-aware classification targets in [0, 1] (the IoU of the
            predicted box with its ground truth at the true class, 0 elsewhere).
        alpha: weight of the negatives.
        gamma: focusing exponent of the negatives.
        iou_weighted: weight positives by their target q (True) or by 1.
        reduction: "none" | "mean" | "sum".
    Returns:
        The loss, of the input's shape for "none", else a scalar.
    """
    if logits.shape != targets.shape:
        raise ValueError(
            f"varifocal_loss: logits {tuple(logits.shape)} and targets {tuple(targets.shape)} "
            "must have the same shape"
        )
    targets = targets.type_as(logits)
    prob = logits.sigmoid()
    positive = (targets > 0.0).to(logits.dtype)
    positive_weight = targets * positive if iou_weighted else positive
    focal_weight = positive_weight + alpha * (prob - targets).abs().pow(gamma) * (1.0 - positive)
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * focal_weight
    if reduction == "none":
        return loss
    if reduction == "mean":
        return loss.mean() if loss.numel() > 0 else loss.sum() * 0.0
    if reduction == "sum":
        return loss.sum()
    raise ValueError(f"varifocal_loss: unknown reduction {reduction!r}; use 'none', 'mean' or 'sum'")
