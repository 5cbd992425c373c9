"""
Pictures of the analyses, drawn with matplotlib's Agg canvas (no display, no pyplot state): each
function saves a PNG and returns the ``Figure``.
"""
import math
import os
from typing import Dict, Optional, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .training_curves import ap_keys, loss_keys, metric_series

__all__ = ["plot_reliability_diagram", "plot_pr_curves", "plot_training_curves"]


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: str) -> Figure:
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    figure.savefig(path)
    return figure


def plot_reliability_diagram(report: Dict, path: str, title: Optional[str] = None) -> Figure:
    """
    The reliability diagram of a :func:`vfnet.analysis.calibration.calibration_report`: per score
    bin, the mean IoU (bars) against the diagonal of a perfectly calibrated score, the mean score
    (dots), and below, the number of detections per bin.
    """
    bins = report["bins"]
    width = 1.0 / len(bins)
    centers = [(b["low"] + b["high"]) / 2 for b in bins]
    filled = [b for b in bins if b["count"]]
    figure = _new_figure(5.5, 6.5)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.bar(
        [(b["low"] + b["high"]) / 2 for b in filled],
        [b["mean_iou"] for b in filled],
        width=width * 0.9,
        color="tab:blue",
        edgecolor="black",
        label="mean IoU with the ground truth",
    )
    top.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    top.plot(
        [b["mean_score"] for b in filled], [b["mean_score"] for b in filled], "o", color="tab:red", label="mean score"
    )
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("IoU")
    top.legend(loc="upper left", fontsize=8)
    top.set_title(title or f"IACS reliability: ECE {report['ece']:.3f}, {report['num_detections']} detections")
    bottom.bar(centers, [b["count"] for b in bins], width=width * 0.9, color="gray", edgecolor="black")
    bottom.set_xlabel("predicted score (IACS)")
    bottom.set_ylabel("detections")
    if any(b["count"] for b in bins):
        bottom.set_yscale("log")
    return _save(figure, path)


def plot_pr_curves(curves: Dict, path: str, title: Optional[str] = None) -> Figure:
    """
    Per-category precision-recall curves of :func:`vfnet.analysis.coco.precision_recall_curves`:
    one panel per category, the curves at IoU 0.50, 0.75 and averaged over 0.50:0.95, with their AP.
    """
    categories = curves["categories"]
    if not categories:
        raise ValueError("no category with ground truth: nothing to plot")
    columns = min(len(categories), 4 if len(categories) <= 16 else 8)
    rows = math.ceil(len(categories) / columns)
    figure = _new_figure(3.0 * columns, 2.8 * rows + 0.4)
    axes = figure.subplots(rows, columns, squeeze=False, sharex=True, sharey=True)
    recall = curves["recall"]
    styles = {"0.50": ("tab:green", "AP50"), "0.75": ("tab:orange", "AP75"), "0.50:0.95": ("tab:blue", "AP")}
    for ax, category in zip(axes.flat, categories):
        for key, (color, label) in styles.items():
            ax.plot(recall, category["precision"][key], color=color, label=f"{label} {category['ap'][key]:.1f}")
        ax.set_title(category["name"], fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.legend(loc="lower left", fontsize=7)
    for ax in axes.flat[len(categories) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("recall")
    for ax in axes[:, 0]:
        ax.set_ylabel("precision")
    figure.suptitle(title or "Precision-recall per category (COCO, area all, 100 detections)")
    return _save(figure, path)


def plot_training_curves(records: Sequence[Dict], path: str, title: Optional[str] = None) -> Figure:
    """
    Training curves of ``metrics.json`` records (:func:`vfnet.analysis.training_curves.load_metrics`):
    the losses, the learning rate, and the evaluations' AP, AP50, AP75 when there are any.
    """
    panels = []
    losses = loss_keys(records)
    if losses:
        panels.append(("loss", losses))
    if any("lr" in r for r in records):
        panels.append(("learning rate", ["lr"]))
    aps = ap_keys(records)
    if aps:
        panels.append(("AP (%)", aps))
    if not panels:
        raise ValueError("the metrics have no losses, lr or AP to plot")
    figure = _new_figure(6.5, 2.6 * len(panels) + 0.4)
    axes = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (label, keys) in zip(axes, panels):
        for key in keys:
            iterations, values = metric_series(records, key)
            ax.plot(iterations, values, "o-" if len(values) < 20 else "-", label=key, markersize=3)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[-1].set_xlabel("iteration")
    figure.suptitle(title or "Training curves")
    return _save(figure, path)
