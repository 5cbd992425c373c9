"""
Analysis of a trained VFNet: how well its scores rank its boxes (the paper's oracle study,
:mod:`.ranking`), how well the scores predict the boxes' IoU (:mod:`.calibration`), COCO
precision-recall curves (:mod:`.coco`), training curves from ``metrics.json``
(:mod:`.training_curves`), and their pictures (:mod:`.plots`, matplotlib, headless); results of
the same configurations over several seeds (:mod:`.seed_runs`).
"""
from .calibration import detection_ious, expected_calibration_error, reliability_bins
from .coco import evaluate_coco, load_coco_ground_truth, precision_recall_curves
from .matching import best_matching_ground_truth
from .ranking import ORACLES, RankingAnalysis, apply_oracle, ranking_table_markdown, run_ranking_analysis
from .reports import write_detection_analysis, write_training_curves
from .seed_runs import collect_seed_runs, paired_differences, seed_runs_markdown, suffix_pairs, summarize_seed_runs
from .training_curves import load_metrics, metric_series

__all__ = [
    "ORACLES",
    "RankingAnalysis",
    "apply_oracle",
    "best_matching_ground_truth",
    "collect_seed_runs",
    "detection_ious",
    "evaluate_coco",
    "expected_calibration_error",
    "load_coco_ground_truth",
    "load_metrics",
    "metric_series",
    "paired_differences",
    "precision_recall_curves",
    "ranking_table_markdown",
    "reliability_bins",
    "run_ranking_analysis",
    "seed_runs_markdown",
    "suffix_pairs",
    "summarize_seed_runs",
    "write_detection_analysis",
    "write_training_curves",
]
