#!/usr/bin/env python
"""
How well a trained VFNet ranks its boxes: the VarifocalNet paper's oracle study (its Table 1) on
a dataset. COCO AP with the model's classes and scores, with the class of each candidate replaced
by that of its best-matching ground truth, with its score replaced by its IoU with that ground
truth, and both (definitions: vfnet/analysis/ranking.py and the README).

    python tools/analyze_ranking.py --config-file configs/Quickstart/vfnet_R_18_narrow_shapes_cpu.py \
        --weights output/quickstart/model_final.pth --output output/quickstart/ranking

Writes OUTPUT/ranking.md (the table), OUTPUT/ranking.json (all COCO metrics of every row, per
class too) and OUTPUT/coco_instances_results.json (the model row's detections, the input of
tools/analyze_detections.py). ``--dataset`` evaluates another registered dataset than the
config's test set; ``KEY=VALUE`` overrides as in tools/train_net.py, e.g. ``model.test_score_thresh=0``
to make every point (up to the per-level top-k) a candidate.
"""
import argparse
import json
import os
import sys

try:
    import vfnet  # noqa: F401
except ImportError:  # running from a source checkout without `make install`
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "projects", "VFNet"))

import torch
from detectron2.config import CfgNode, instantiate
from detectron2.utils.logger import setup_logger

from vfnet.analysis.coco import load_coco_ground_truth
from vfnet.analysis.ranking import ORACLE_DESCRIPTIONS, ORACLES, ranking_table_markdown, run_ranking_analysis
from vfnet.checkpoint import VFNetCheckpointer
from vfnet.engine import Trainer, load_config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--config-file", required=True, help="a .py (LazyConfig) or .yaml config")
    parser.add_argument("--weights", required=True, help="checkpoint to analyse")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--dataset", default=None, help="registered dataset (default: the config's test set)")
    parser.add_argument("--max-images", type=int, default=None, help="analyse only the first N images")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: the config's)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="KEY=VALUE config overrides")
    return parser.parse_args(argv)


def build_model_and_loader(cfg, weights: str, dataset: str, device):
    """The model with ``weights`` in eval mode and the test loader of ``dataset``, for either config style."""
    if isinstance(cfg, CfgNode):
        cfg = cfg.clone()
        if device:
            cfg.MODEL.DEVICE = device
        model = Trainer.build_model(cfg)
        loader = Trainer.build_test_loader(cfg, dataset)
    else:
        if device:
            cfg.train.device = device
        cfg.dataloader.test.dataset.names = dataset
        model = instantiate(cfg.model).to(cfg.train.device)
        loader = instantiate(cfg.dataloader.test)
    VFNetCheckpointer(model, require_head=True).load(weights)
    return model.eval(), loader


def main(argv=None):
    args = parse_args(argv)
    setup_logger(name="vfnet")
    setup_logger(name="detectron2")
    cfg = load_config(args.config_file, args.opts)
    if isinstance(cfg, CfgNode):
        dataset = args.dataset or cfg.DATASETS.TEST[0]
    else:
        names = cfg.dataloader.test.dataset.names
        dataset = args.dataset or (names if isinstance(names, str) else names[0])
    model, loader = build_model_and_loader(cfg, args.weights, dataset, args.device)
    coco_gt = load_coco_ground_truth(dataset)
    with torch.no_grad():
        analysis = run_ranking_analysis(model, loader, coco_gt, dataset, max_images=args.max_images)
    results = analysis.evaluate(per_class=True)

    os.makedirs(args.output, exist_ok=True)
    table = ranking_table_markdown(results)
    summary = {
        "config_file": args.config_file,
        "weights": args.weights,
        "dataset": dataset,
        "num_images": len(analysis.image_ids),
        "rows": {o: ORACLE_DESCRIPTIONS[o] for o in ORACLES},
        "results": results,
    }
    with open(os.path.join(args.output, "ranking.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(args.output, "ranking.md"), "w") as f:
        f.write(f"Ranking analysis of `{args.weights}` on `{dataset}` ({len(analysis.image_ids)} images)\n\n")
        f.write(table)
    with open(os.path.join(args.output, "coco_instances_results.json"), "w") as f:
        json.dump(analysis.detections["model"], f)
    print(table)
    print(f"written to {args.output}: ranking.md, ranking.json, coco_instances_results.json (the model row)")
    return results


if __name__ == "__main__":
    main()
