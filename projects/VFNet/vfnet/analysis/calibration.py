"""
Calibration of the IoU-aware classification score (IACS): does a detection's score predict the
IoU of its box with the object it claims?

VFNet trains the score of class c towards the IoU of the predicted box with its ground truth when
that ground truth is of class c, and towards 0 otherwise. The "actual IoU" of a detection
(box, class c, score s) is therefore measured the same way: the largest IoU of its box with a
non-crowd ground-truth box of class c in the image, 0 when there is none
(:func:`detection_ious`). Scores are binned into equal-width bins of [0, 1]
(:func:`reliability_bins`); the expected calibration error is

    ECE = sum over non-empty bins b of (n_b / N) * |mean IoU_b - mean score_b|

with n_b detections in bin b out of N (:func:`expected_calibration_error`).
"""
from collections import defaultdict
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from pycocotools.coco import COCO

from .matching import best_matching_ground_truth

__all__ = ["detection_ious", "reliability_bins", "expected_calibration_error", "calibration_report"]


def detection_ious(coco_gt: COCO, detections: Sequence[Dict]) -> Tuple[np.ndarray, np.ndarray]:
    """
    Args:
        coco_gt: the ground truth.
        detections: COCO results (``image_id``, ``category_id``, ``bbox`` XYWH, ``score``), e.g.
            ``coco_instances_results.json`` of ``COCOEvaluator``.
    Returns:
        (scores (N,), ious (N,)) float64, in the order of ``detections``; each IoU is that of the
        detection with the best-matching non-crowd ground truth of its category (0 if none).
    """
    by_image = defaultdict(list)
    for i, det in enumerate(detections):
        if det["image_id"] not in coco_gt.imgs:
            raise KeyError(f"detection {i} is on image_id {det['image_id']}, which is not in the ground truth")
        by_image[det["image_id"]].append(i)
    scores = np.array([float(d["score"]) for d in detections], dtype=np.float64)
    ious = np.zeros(len(detections), dtype=np.float64)
    for image_id, indices in by_image.items():
        anns = [a for a in coco_gt.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)]
        gt_boxes = torch.tensor([_xyxy(a["bbox"]) for a in anns], dtype=torch.float64).reshape(-1, 4)
        gt_classes = torch.tensor([a["category_id"] for a in anns], dtype=torch.long)
        boxes = torch.tensor([_xyxy(detections[i]["bbox"]) for i in indices], dtype=torch.float64)
        classes = torch.tensor([detections[i]["category_id"] for i in indices], dtype=torch.long)
        iou, _ = best_matching_ground_truth(boxes, gt_boxes, gt_classes, classes=classes)
        ious[indices] = iou.double().numpy()
    return scores, ious


def _xyxy(bbox: Sequence[float]) -> List[float]:
    x, y, w, h = bbox
    return [x, y, x + w, y + h]


def reliability_bins(scores: np.ndarray, ious: np.ndarray, num_bins: int = 10) -> List[Dict]:
    """
    Equal-width bins of the scores over [0, 1]: bin b holds the scores in
    ``[b / num_bins, (b + 1) / num_bins)``, the last bin also 1.0.

    Returns:
        one dict per bin, empty ones included: ``low``, ``high``, ``count``, ``mean_score`` and
        ``mean_iou`` (NaN when the bin is empty).
    """
    scores = np.asarray(scores, dtype=np.float64)
    ious = np.asarray(ious, dtype=np.float64)
    if scores.shape != ious.shape or scores.ndim != 1:
        raise ValueError(f"scores and ious must be 1-d of the same length, got {scores.shape} and {ious.shape}")
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    if scores.size and (scores.min() < 0 or scores.max() > 1):
        raise ValueError(f"scores must lie in [0, 1], got [{scores.min()}, {scores.max()}]")
    index = np.minimum((scores * num_bins).astype(np.int64), num_bins - 1)
    bins = []
    for b in range(num_bins):
        inside = index == b
        count = int(inside.sum())
        bins.append(
            {
                "low": b / num_bins,
                "high": (b + 1) / num_bins,
                "count": count,
                "mean_score": float(scores[inside].mean()) if count else float("nan"),
                "mean_iou": float(ious[inside].mean()) if count else float("nan"),
            }
        )
    return bins


def expected_calibration_error(bins: Sequence[Dict]) -> float:
    """``sum_b (n_b / N) |mean IoU_b - mean score_b|`` over the non-empty bins; NaN when all are empty."""
    total = sum(b["count"] for b in bins)
    if total == 0:
        return float("nan")
    return float(sum(b["count"] / total * abs(b["mean_iou"] - b["mean_score"]) for b in bins if b["count"]))


def calibration_report(coco_gt: COCO, detections: Sequence[Dict], num_bins: int = 10) -> Dict:
    """Bins, ECE and totals of ``detections`` against ``coco_gt`` (see the module docstring)."""
    scores, ious = detection_ious(coco_gt, detections)
    bins = reliability_bins(scores, ious, num_bins)
    return {
        "num_detections": int(scores.size),
        "num_bins": num_bins,
        "ece": expected_calibration_error(bins),
        "mean_score": float(scores.mean()) if scores.size else float("nan"),
        "mean_iou": float(ious.mean()) if scores.size else float("nan"),
        "bins": bins,
    }
