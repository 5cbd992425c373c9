"""
How well a detector's scores rank its boxes: the oracle study of the VarifocalNet paper (its
Table 1), on any dataset.

The paper replaces, before the NMS, the scores of FCOS+ATSS by ground-truth values: with the IoU
of each box with its ground truth as the score of the ground-truth class, COCO val AP rises from
39.2 to 74.7: good boxes are already among the candidates, the score must find them.

Definitions used here (one image at a time):

- **Candidates**: the model's own (box, class, score) candidates before its NMS
  (:meth:`vfnet.VFNet.predict_candidates`: its score threshold and per-level top-k). Every row
  of the table starts from the same candidates; a score threshold of 0 makes every point a
  candidate, up to the top-k.
- **Best-matching ground truth** (:func:`best_matching_ground_truth`), by IoU with the
  candidate's box, among the image's non-crowd ground-truth boxes, measured in the original
  image as COCO's evaluation measures it:

  - of *any* class: IoU ``u``, class ``k`` (none when ``u = 0``);
  - of the candidate's *own* class: IoU ``v`` (0 when no box of that class overlaps): the IoU
    COCO's evaluation can credit the candidate with, and the target VFNet trains its score of
    that class towards (the IACS).

- **Rows** (:data:`ORACLES`), a 2x2 of (class, score):

  ==================  =======================  ==========================================
  row                 class                    score
  ==================  =======================  ==========================================
  ``model``           the model's              the model's
  ``gt_class``        ``k`` (model's if none)  the model's
  ``gt_iou``          the model's              ``v``: a perfect IACS for the model's class
  ``gt_class+iou``    ``k`` (model's if none)  ``u``
  ==================  =======================  ==========================================

  ``gt_class+iou`` is the paper's "gt_cls_iou" (the IoU with the ground truth as the score of
  the ground-truth class: 74.7 AP in its Table 1).
- Then, for every row, the model's own NMS and top-k (:meth:`vfnet.VFNet.select_detections`)
  and Detectron2's postprocessing, as in inference, and COCO's box evaluation. The ``model`` row
  is therefore the model's ordinary COCO result.
"""
import logging
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import torch
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Instances
from pycocotools.coco import COCO

from .coco import coco_metrics, contiguous_id_maps, evaluate_coco, ground_truth_of_image
from .matching import best_matching_ground_truth

__all__ = [
    "ORACLES",
    "ORACLE_DESCRIPTIONS",
    "apply_oracle",
    "RankingAnalysis",
    "run_ranking_analysis",
    "ranking_table_markdown",
]

logger = logging.getLogger(__name__)

ORACLES = ("model", "gt_class", "gt_iou", "gt_class+iou")
ORACLE_DESCRIPTIONS = {
    "model": "the model's classes and scores",
    "gt_class": "class of the best-matching ground truth, the model's score",
    "gt_iou": "the model's class, IoU with the best-matching ground truth of that class as the score (a perfect IACS)",
    "gt_class+iou": "class of the best-matching ground truth, its IoU as the score (the paper's gt_cls_iou)",
}


def apply_oracle(
    oracle: str,
    scores: torch.Tensor,
    classes: torch.Tensor,
    gt_iou: torch.Tensor,
    gt_class: torch.Tensor,
    gt_iou_own_class: torch.Tensor,
):
    """
    The (scores, classes) of candidates under one row of the table (see the module docstring).

    Args:
        oracle: one of :data:`ORACLES`.
        scores: (N,) the model's scores; classes: (N,) int64 the model's classes.
        gt_iou: (N,) IoU ``u`` with the best-matching ground truth of any class (0: no match).
        gt_class: (N,) int64 class ``k`` of that ground truth (-1: no match).
        gt_iou_own_class: (N,) IoU ``v`` with the best-matching ground truth of the candidate's
            own class (0: none).
    Returns:
        (scores (N,), classes (N,)), new tensors.
    """
    if oracle not in ORACLES:
        raise ValueError(f"unknown oracle {oracle!r}; known: {ORACLES}")
    scores, classes = scores.clone(), classes.clone()
    if oracle == "gt_iou":
        scores = gt_iou_own_class.to(scores.dtype).clone()
    elif oracle in ("gt_class", "gt_class+iou"):
        matched = gt_class >= 0
        classes[matched] = gt_class[matched]
        if oracle == "gt_class+iou":
            scores = gt_iou.to(scores.dtype).clone()
    return scores, classes


class RankingAnalysis:
    """
    Collects, image by image, the detections of every row of :data:`ORACLES` and evaluates them
    with COCO's box evaluation.
    """

    def __init__(
        self,
        coco_gt: COCO,
        select_detections: Callable[[Instances], Instances],
        dataset_name: Optional[str] = None,
        oracles: Sequence[str] = ORACLES,
    ):
        """
        Args:
            coco_gt: the ground truth (:func:`vfnet.analysis.coco.load_coco_ground_truth`).
            select_detections: candidates -> detections, the model's NMS and top-k
                (:meth:`vfnet.VFNet.select_detections`).
            dataset_name: the registered dataset, for its contiguous class ids (else the sorted
                category ids of ``coco_gt``).
            oracles: the rows to compute.
        """
        unknown = [o for o in oracles if o not in ORACLES]
        if unknown:
            raise ValueError(f"unknown oracle(s) {unknown}; known: {ORACLES}")
        self.coco_gt = coco_gt
        self.select_detections = select_detections
        self.oracles = tuple(oracles)
        self.to_contiguous, self.to_dataset_id = contiguous_id_maps(coco_gt, dataset_name)
        self.detections: Dict[str, List[Dict]] = {o: [] for o in self.oracles}
        self.image_ids: List[int] = []

    def add_image(self, image_id: int, candidates: Instances, height: int, width: int) -> None:
        """
        Args:
            image_id: the image's id in ``coco_gt``.
            candidates: ``pred_boxes``, ``scores``, ``pred_classes`` before NMS, in the
                coordinates of the model's input (``candidates.image_size``).
            height, width: the original image size (the ground truth's coordinates).
        """
        if image_id not in self.coco_gt.imgs:
            raise KeyError(f"image_id {image_id} is not in the ground truth")
        in_h, in_w = candidates.image_size
        original = candidates.pred_boxes.clone()
        original.scale(width / in_w, height / in_h)  # as detector_postprocess maps the detections
        original.clip((height, width))
        gt_boxes, gt_classes = ground_truth_of_image(self.coco_gt, image_id, self.to_contiguous)
        gt_iou, gt_class = best_matching_ground_truth(original.tensor, gt_boxes, gt_classes)
        gt_iou_own_class, _ = best_matching_ground_truth(
            original.tensor, gt_boxes, gt_classes, classes=candidates.pred_classes
        )
        for oracle in self.oracles:
            scores, classes = apply_oracle(
                oracle, candidates.scores, candidates.pred_classes, gt_iou, gt_class, gt_iou_own_class
            )
            ranked = Instances(candidates.image_size)
            ranked.pred_boxes = candidates.pred_boxes
            ranked.scores = scores
            ranked.pred_classes = classes
            detections = detector_postprocess(self.select_detections(ranked), height, width)
            results = instances_to_coco_json(detections.to("cpu"), image_id)
            for r in results:
                r["category_id"] = self.to_dataset_id[r["category_id"]]
            self.detections[oracle].extend(results)
        self.image_ids.append(image_id)

    def evaluate(self, per_class: bool = False) -> Dict[str, Dict[str, float]]:
        """COCO box metrics (AP, AP50, ... in percent) of every row, on the images added."""
        class_names = None
        if per_class:
            class_names = [self.coco_gt.cats[c]["name"] for c in sorted(self.coco_gt.getCatIds())]
        results = {}
        for oracle in self.oracles:
            evaluator = evaluate_coco(self.coco_gt, self.detections[oracle], image_ids=self.image_ids)
            results[oracle] = coco_metrics(evaluator, class_names)
        return results


@torch.no_grad()
def run_ranking_analysis(
    model,
    data_loader: Iterable[List[Dict]],
    coco_gt: COCO,
    dataset_name: Optional[str] = None,
    max_images: Optional[int] = None,
    oracles: Sequence[str] = ORACLES,
) -> RankingAnalysis:
    """
    Run ``model`` (a :class:`vfnet.VFNet`) in eval mode over ``data_loader`` (Detectron2 test
    inputs: ``image``, ``image_id``, ``height``, ``width``) and collect every row's detections.
    Returns the :class:`RankingAnalysis`; call its ``evaluate()``.
    """
    if not (hasattr(model, "predict_candidates") and hasattr(model, "select_detections")):
        raise TypeError(f"the ranking analysis needs a VFNet (candidates before NMS), got {type(model).__name__}")
    analysis = RankingAnalysis(coco_gt, model.select_detections, dataset_name, oracles)
    was_training = model.training
    model.eval()
    try:
        for inputs in data_loader:
            for x, candidates in zip(inputs, model.predict_candidates(inputs)):
                height = x.get("height", x["image"].shape[1])
                width = x.get("width", x["image"].shape[2])
                analysis.add_image(x["image_id"], candidates, height, width)
            if max_images is not None and len(analysis.image_ids) >= max_images:
                break
    finally:
        model.train(was_training)
    return analysis


def ranking_table_markdown(results: Dict[str, Dict[str, float]], metrics: Sequence[str] = ("AP", "AP50", "AP75")) -> str:
    """The rows of :meth:`RankingAnalysis.evaluate` as a Markdown table."""
    lines = [
        "| row | class | score | " + " | ".join(metrics) + " |",
        "|---|---|---|" + "---:|" * len(metrics),
    ]
    labels = {
        "model": ("model", "model"),
        "gt_class": ("ground truth", "model"),
        "gt_iou": ("model", "IoU with ground truth of that class"),
        "gt_class+iou": ("ground truth", "IoU with ground truth"),
    }
    for oracle, values in results.items():
        cls, score = labels[oracle]
        cells = " | ".join(f"{values[m]:.1f}" for m in metrics)
        lines.append(f"| `{oracle}` | {cls} | {score} | {cells} |")
    return "\n".join(lines) + "\n"
