"""The analyses written to files: JSON numbers and PNG pictures (used by the tools and `make demo`)."""
import json
import os
from typing import Dict, Optional, Sequence

from pycocotools.coco import COCO

from .calibration import calibration_report
from .coco import coco_metrics, evaluate_coco, precision_recall_curves
from .plots import plot_pr_curves, plot_reliability_diagram, plot_training_curves
from .training_curves import load_metrics

__all__ = ["write_detection_analysis", "write_training_curves"]


def write_detection_analysis(coco_gt: COCO, detections: Sequence[Dict], output_dir: str, num_bins: int = 10) -> Dict:
    """
    Calibration and precision-recall curves of COCO-format ``detections``, written to
    ``output_dir``: ``reliability.png`` and ``calibration.json`` (bins, ECE), ``pr_curves.png``
    and ``pr_curves.json`` (curves, per-category AP, COCO metrics).

    Returns:
        ``{"calibration": ..., "pr_curves": ...}`` as written.
    """
    if not detections:
        raise ValueError("no detections to analyse")
    os.makedirs(output_dir, exist_ok=True)
    calibration = calibration_report(coco_gt, detections, num_bins)
    with open(os.path.join(output_dir, "calibration.json"), "w") as f:
        json.dump(calibration, f, indent=2)
    plot_reliability_diagram(calibration, os.path.join(output_dir, "reliability.png"))

    evaluator = evaluate_coco(coco_gt, detections)
    curves = precision_recall_curves(evaluator)
    curves["metrics"] = coco_metrics(evaluator)
    with open(os.path.join(output_dir, "pr_curves.json"), "w") as f:
        json.dump(curves, f)
    plot_pr_curves(curves, os.path.join(output_dir, "pr_curves.png"))
    return {"calibration": calibration, "pr_curves": curves}


def write_training_curves(metrics_json: str, png_path: str, title: Optional[str] = None) -> str:
    """
    Plot Detectron2's ``metrics.json`` (losses, lr, AP) into ``png_path``, titled ``title``
    (default: "Training curves: <the run's folder name>"); returns the path.
    """
    run = os.path.basename(os.path.dirname(os.path.abspath(metrics_json)))
    plot_training_curves(load_metrics(metrics_json), png_path, title=title or f"Training curves: {run}")
    return png_path
