#!/usr/bin/env python
"""
Calibration and precision-recall curves of a detector's COCO-format detections: the reliability
diagram of its scores against the IoU of its boxes (with the expected calibration error) and
per-category precision-recall curves from COCO's evaluation.

    python tools/analyze_detections.py --results output/quickstart/inference/coco_instances_results.json \
        --dataset vfnet_shapes_val --output output/quickstart/analysis

The detections are those ``tools/train_net.py --eval-only`` (and any COCOEvaluator with an
output_dir) writes as ``inference/coco_instances_results.json``. Writes OUTPUT/reliability.png,
OUTPUT/calibration.json (bins and ECE), OUTPUT/pr_curves.png and OUTPUT/pr_curves.json.
"""
import argparse
import json
import os
import sys

try:
    import vfnet  # noqa: F401
except ImportError:  # running from a source checkout without `make install`
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "projects", "VFNet"))

from vfnet.analysis.coco import load_coco_ground_truth
from vfnet.analysis.reports import write_detection_analysis


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--results", required=True, help="COCO-format detections (coco_instances_results.json)")
    ground_truth = parser.add_mutually_exclusive_group(required=True)
    ground_truth.add_argument("--dataset", help="registered Detectron2 dataset the detections are of")
    ground_truth.add_argument("--gt-json", help="COCO-format ground truth json")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--bins", type=int, default=10, help="score bins of the reliability diagram")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    coco_gt = load_coco_ground_truth(args.dataset, args.gt_json)
    with open(args.results) as f:
        detections = json.load(f)
    out = write_detection_analysis(coco_gt, detections, args.output, args.bins)
    cal, metrics = out["calibration"], out["pr_curves"]["metrics"]
    print(
        f"{cal['num_detections']} detections: AP {metrics['AP']:.1f}, ECE {cal['ece']:.4f} "
        f"(mean score {cal['mean_score']:.3f}, mean IoU {cal['mean_iou']:.3f})"
    )
    print(f"written to {args.output}: reliability.png, calibration.json, pr_curves.png, pr_curves.json")
    return out


if __name__ == "__main__":
    main()
