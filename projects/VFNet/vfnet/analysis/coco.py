"""
COCO evaluation for the analyses: ground truth of a registered dataset, pycocotools' ``COCOeval``
on a list of detections (the AP definitions of Detectron2's ``COCOEvaluator``), and the
precision-recall curves in its ``precision`` array.
"""
import contextlib
import copy
import io
import json
import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

__all__ = [
    "COCO_METRICS",
    "coco_from_dict",
    "load_coco_ground_truth",
    "contiguous_id_maps",
    "ground_truth_of_image",
    "evaluate_coco",
    "coco_metrics",
    "precision_recall_curves",
]

logger = logging.getLogger(__name__)

COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def coco_from_dict(dataset: Dict) -> COCO:
    """A pycocotools ``COCO`` of an in-memory COCO-format dict (``images``, ``annotations``, ``categories``)."""
    coco = COCO()
    coco.dataset = copy.deepcopy(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_coco_ground_truth(dataset_name: Optional[str] = None, json_file: Optional[str] = None) -> COCO:
    """
    The ground truth as a pycocotools ``COCO``: from ``json_file``, or from the registered dataset
    ``dataset_name`` (its ``json_file`` metadata when it has one, as ``COCOEvaluator`` does, else
    Detectron2's ``convert_to_coco_dict`` of its dicts).
    """
    if json_file is None:
        if dataset_name is None:
            raise ValueError("load_coco_ground_truth: give a dataset_name or a json_file")
        from detectron2.data import DatasetCatalog, MetadataCatalog

        json_file = getattr(MetadataCatalog.get(dataset_name), "json_file", None)
        if json_file:
            DatasetCatalog.get(dataset_name)  # datasets generated on first use write their json then
        else:
            from detectron2.data.datasets.coco import convert_to_coco_dict

            return coco_from_dict(convert_to_coco_dict(dataset_name))
    with open(json_file) as f:
        return coco_from_dict(json.load(f))


def contiguous_id_maps(coco: COCO, dataset_name: Optional[str] = None) -> Tuple[Dict[int, int], Dict[int, int]]:
    """
    ``(dataset id -> contiguous class, contiguous class -> dataset id)``: the metadata's
    ``thing_dataset_id_to_contiguous_id`` when ``dataset_name`` has one, else the sorted category
    ids of ``coco`` (Detectron2's ``load_coco_json`` convention).
    """
    mapping = None
    if dataset_name is not None:
        from detectron2.data import MetadataCatalog

        mapping = getattr(MetadataCatalog.get(dataset_name), "thing_dataset_id_to_contiguous_id", None)
    if mapping is None:
        mapping = {cat_id: i for i, cat_id in enumerate(sorted(coco.getCatIds()))}
    mapping = {int(k): int(v) for k, v in mapping.items()}
    return mapping, {v: k for k, v in mapping.items()}


def ground_truth_of_image(coco: COCO, image_id: int, to_contiguous: Dict[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    The non-crowd ground truth of one image: ``(boxes (M, 4) float32 XYXY in pixels, classes (M,)
    int64 contiguous)``. Crowd regions are left out: COCO's evaluation ignores detections on them
    rather than counting them as matches.
    """
    boxes, classes = [], []
    for ann in coco.imgToAnns.get(image_id, []):
        if ann.get("iscrowd", 0):
            continue
        x, y, w, h = ann["bbox"]
        boxes.append([x, y, x + w, y + h])
        classes.append(to_contiguous[ann["category_id"]])
    return (
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(classes, dtype=torch.long),
    )


def evaluate_coco(coco_gt: COCO, detections: List[Dict], image_ids: Optional[Sequence[int]] = None) -> Optional[COCOeval]:
    """
    pycocotools' box ``COCOeval`` of ``detections`` (COCO results: ``image_id``, ``category_id``,
    ``bbox`` XYWH, ``score``), evaluated, accumulated and summarised (its printout captured).
    ``image_ids``: evaluate on these images only (default: all of ``coco_gt``). Returns None when
    there are no detections, as ``COCOEvaluator`` reports NaN then.
    """
    if not detections:
        return None
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(copy.deepcopy(detections))
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        if image_ids is not None:
            evaluator.params.imgIds = sorted(int(i) for i in image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def coco_metrics(evaluator: Optional[COCOeval], class_names: Optional[Sequence[str]] = None) -> Dict[str, float]:
    """
    ``COCOEvaluator``'s numbers of an evaluated ``COCOeval``: AP, AP50, AP75, APs, APm, APl in
    percent (NaN for an area range without ground truth), and ``AP-<class>`` per class when ``class_names`` (in the order of the category ids)
    are given; NaN everywhere when ``evaluator`` is None (no detections).
    """
    if evaluator is None:
        return {m: float("nan") for m in COCO_METRICS}
    # COCOeval reports -1 where no ground truth falls in an area range; COCOEvaluator says NaN
    results = {
        m: float(evaluator.stats[i] * 100) if evaluator.stats[i] >= 0 else float("nan")
        for i, m in enumerate(COCO_METRICS)
    }
    if class_names is not None:
        precision = evaluator.eval["precision"]  # (IoU thresholds, recalls, classes, areas, max dets)
        if precision.shape[2] != len(class_names):
            raise ValueError(f"{len(class_names)} class names for {precision.shape[2]} evaluated categories")
        for k, name in enumerate(class_names):
            p = precision[:, :, k, 0, -1]
            p = p[p > -1]
            results[f"AP-{name}"] = float(np.mean(p) * 100) if p.size else float("nan")
    return results


def precision_recall_curves(evaluator: COCOeval) -> Dict:
    """
    Per-category precision-recall curves from an evaluated ``COCOeval`` (area "all", the largest
    max-detections setting): COCO's interpolated precision at its 101 recall levels.

    Returns:
        ``{"recall": [101 levels], "categories": [{"id", "name", "precision": {"0.50": [...],
        "0.75": [...], "0.50:0.95": [...]}, "ap": {same keys: AP in percent}}]}``; the
        "0.50:0.95" curve is the mean over COCO's ten IoU thresholds. Categories without ground
        truth (precision -1 everywhere) are left out.
    """
    precision = evaluator.eval["precision"]  # (T, R, K, A, M)
    iou_thresholds = evaluator.params.iouThrs
    t50 = int(np.argmin(np.abs(iou_thresholds - 0.5)))
    t75 = int(np.argmin(np.abs(iou_thresholds - 0.75)))
    cat_ids = evaluator.params.catIds
    out = {"recall": [float(r) for r in evaluator.params.recThrs], "categories": []}
    for k, cat_id in enumerate(cat_ids):
        p = precision[:, :, k, 0, -1]  # (T, R)
        if (p < 0).all():
            continue
        p = np.clip(p, 0.0, None)  # no GT at one threshold cannot happen once any is >= 0
        curves = {"0.50": p[t50], "0.75": p[t75], "0.50:0.95": p.mean(axis=0)}
        out["categories"].append(
            {
                "id": int(cat_id),
                "name": evaluator.cocoGt.cats[cat_id]["name"],
                "precision": {key: [float(v) for v in curve] for key, curve in curves.items()},
                "ap": {key: float(curve.mean() * 100) for key, curve in curves.items()},
            }
        )
    return out
