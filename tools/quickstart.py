#!/usr/bin/env python
"""
The quickstart (`make demo`): train VFNet on the project's synthetic shapes dataset on a CPU,
evaluate it with COCOEvaluator, and draw its detections on a few validation images.

    python tools/quickstart.py [--output-dir output/quickstart] [KEY=VALUE ...]

Generates the dataset the first time (~20 s, into ~/.cache/vfnet/datasets, or $VFNET_DATASETS),
then trains (~9.5 min on 2 cores), evaluates, and prints where everything went:
the metrics (OUTPUT/eval_metrics.json), the checkpoint (OUTPUT/model_final.pth), the training log and
TensorBoard events, annotated validation images (OUTPUT/val_detections/*.png), and the analysis
pictures (OUTPUT/analysis/: reliability diagram of the scores, precision-recall curves, training
curves; see vfnet.analysis).
Overrides work as in tools/train_net.py, e.g. `model.use_vfl=False` trains with the focal loss.
"""
import argparse
import json
import os
import sys
import time

try:
    import vfnet  # noqa: F401
except ImportError:  # running from a source checkout without `make install`
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "projects", "VFNet"))

import cv2
from detectron2.data import DatasetCatalog
from detectron2.engine import default_setup

from vfnet.analysis.coco import load_coco_ground_truth
from vfnet.analysis.reports import write_detection_analysis, write_training_curves
from vfnet.engine import do_train, launch_cpu, load_config
from vfnet.predictor import LazyPredictor, draw_instances

DEFAULT_CONFIG = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "configs", "Quickstart", "vfnet_R_18_narrow_shapes_cpu.py"
)


def draw_validation_images(cfg, weights: str, out_dir: str, count: int) -> list:
    predictor = LazyPredictor(cfg, weights)
    dataset = DatasetCatalog.get(cfg.dataloader.test.dataset.names)[:count]
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for record in dataset:
        image = cv2.imread(record["file_name"], cv2.IMREAD_COLOR)
        drawn = draw_instances(image[:, :, ::-1], predictor(image)["instances"], predictor.metadata, 0.3)
        path = os.path.join(out_dir, os.path.basename(record["file_name"]).rsplit(".", 1)[0] + ".png")
        cv2.imwrite(path, drawn[:, :, ::-1])
        paths.append(path)
    return paths


def write_analysis(cfg, output_dir: str) -> dict:
    """
    The analyses of the evaluated model into OUTPUT/analysis: the reliability diagram and ECE of
    its scores and the per-class precision-recall curves of its val detections (the evaluator's
    coco_instances_results.json), and the training curves of OUTPUT/metrics.json.
    """
    out = os.path.join(output_dir, "analysis")
    with open(os.path.join(cfg.dataloader.evaluator.output_dir, "coco_instances_results.json")) as f:
        detections = json.load(f)
    report = write_detection_analysis(load_coco_ground_truth(cfg.dataloader.test.dataset.names), detections, out)
    write_training_curves(os.path.join(output_dir, "metrics.json"), os.path.join(out, "training_curves.png"))
    return {"folder": out, "ece": report["calibration"]["ece"]}


def train_and_evaluate(config_file: str, overrides: list):
    """Train, then evaluate on the val split (writing OUTPUT/eval_metrics.json); runs in every process."""
    cfg = load_config(config_file, overrides)
    default_setup(cfg, argparse.Namespace(config_file=config_file, eval_only=False, opts=overrides))
    do_train(cfg)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--config-file", default=DEFAULT_CONFIG, help="quickstart config (LazyConfig .py)")
    parser.add_argument("--output-dir", default=None, help="output folder (default: the config's train.output_dir)")
    parser.add_argument("--num-images", type=int, default=8, help="validation images to draw")
    parser.add_argument(
        "--num-processes",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="CPU processes training together (data-parallel), each with its share of the cores",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="KEY=VALUE config overrides")
    args = parser.parse_args(argv)

    start = time.time()
    overrides = list(args.opts) + ([f"train.output_dir={args.output_dir}"] if args.output_dir else [])
    cfg = load_config(args.config_file, overrides)
    output_dir = os.path.abspath(cfg.train.output_dir)
    overrides.append(f"train.output_dir={output_dir}")
    cfg.train.output_dir = output_dir
    for name in (cfg.dataloader.train.dataset.names, cfg.dataloader.test.dataset.names):
        DatasetCatalog.get(name)  # generates the synthetic dataset once, before the processes start

    launch_cpu(train_and_evaluate, args.num_processes, args=(args.config_file, overrides))
    train_minutes = (time.time() - start) / 60

    weights = os.path.join(output_dir, "model_final.pth")
    images = draw_validation_images(cfg, weights, os.path.join(output_dir, "val_detections"), args.num_images)
    with open(os.path.join(output_dir, "eval_metrics.json")) as f:
        bbox = json.load(f)["bbox"]
    analysis = write_analysis(cfg, output_dir)
    total_minutes = (time.time() - start) / 60
    summary = {
        "bbox_AP": bbox["AP"],
        "bbox_AP50": bbox["AP50"],
        "bbox_AP75": bbox["AP75"],
        "score_calibration_ece": analysis["ece"],
        "train_and_eval_minutes": round(train_minutes, 2),
        "total_minutes": round(total_minutes, 2),
    }
    with open(os.path.join(output_dir, "quickstart_summary.json"), "w") as f:
        json.dump(summary, f, indent=2)

    print("\n" + "=" * 72)
    print(f"VFNet quickstart done in {total_minutes:.1f} min: bbox AP {bbox['AP']:.1f} "
          f"(AP50 {bbox['AP50']:.1f}, AP75 {bbox['AP75']:.1f}) on the synthetic shapes val split")
    print(f"  metrics (COCO, per class):  {os.path.join(output_dir, 'eval_metrics.json')}")
    print(f"  summary:                    {os.path.join(output_dir, 'quickstart_summary.json')}")
    print(f"  checkpoint:                 {weights}")
    print(f"  training log / TensorBoard: {os.path.join(output_dir, 'log.txt')}, {output_dir}/events.out.tfevents.*")
    print(f"  detections drawn on {len(images)} val images: {os.path.dirname(images[0]) if images else '-'}")
    print(f"  analysis (reliability diagram, PR curves, training curves): {analysis['folder']}")
    print("=" * 72)


if __name__ == "__main__":
    main()
