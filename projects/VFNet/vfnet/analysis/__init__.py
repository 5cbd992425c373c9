"""
Analysis of a trained VFNet: how well its scores rank its boxes (the paper's oracle study,
:mod:`.ranking`), how well the scores predict the boxes' IoU (:mod:`.calibration`), COCO
precision-recall curves (:mod:`.coco`), training curves from ``metrics.json``
(:mod:`.training_curves`), and their pictures (:mod:`.plots`, matplotlib, headless).
"""
from .calibration import detection_ious, expected_calibration_error, reliability_bins
from .coco import evaluate_coco, load_coco_ground_truth, precision_recall_curves
from .matching import best_matching_ground_truth
from .ranking import ORACLES, RankingAnalysis, apply_oracle, ranking_table_markdown, run_ranking_analysis
from .reports import write_detection_analysis, write_training_curves
from .training_curves import load_metrics, metric_series

__all__ = [
    "ORACLES",
    "RankingAnalysis",
    "apply_oracle",
    "best_matching_ground_truth",
    "detection_ious",
    "evaluate_coco",
    "expected_calibration_error",
    "load_coco_ground_truth",
    "load_metrics",
    "metric_series",
    "precision_recall_curves",
    "ranking_table_markdown",
    "reliability_bins",
    "run_ranking_analysis",
    "write_detection_analysis",
    "write_training_curves",
]
