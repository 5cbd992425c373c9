#!/usr/bin/env python
"""
Export a VFNet config + checkpoint to TorchScript or ONNX, as Detectron2's
tools/deploy/export_model.py does for its models, and check the export against eager PyTorch.

    python tools/export_model.py --config-file configs/COCO-Detection/vfnet_R_50_FPN_1x.py \\
        --format onnx --output out/ --sample-image img.jpg --check --check-image img2.jpg \\
        train.init_checkpoint=vfnet_R_50_FPN_1x.pth

Writes OUTPUT/model.ts (TorchScript) or OUTPUT/model.onnx (ONNX, opset >= 19, deformable convs
as standard DeformConv nodes) and, with --check, OUTPUT/export_check.json: per image, the
detections of the exported model against the eager model's (same count and classes, boxes
within 1e-3 px, scores within 1e-5). The exported graph takes the image after the config's
test-time resize, (3, H, W) float32 in the model's channel order, and returns pred_boxes,
pred_classes, scores and image_size (NMS included); see vfnet/export/tracing.py.

Weights: overrides after the flags, train.init_checkpoint=... (LazyConfig .py) or MODEL.WEIGHTS=...
or "MODEL.WEIGHTS path" (.yaml); without them the model has the config's (random when it names none).
"""
import argparse
import json
import logging
import os
import sys
import time

import numpy as np
import torch

try:
    import vfnet  # noqa: F401
except ImportError:  # not installed: use the checkout's package
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "projects", "VFNet"))

from detectron2.config import CfgNode  # noqa: E402
from detectron2.data import DatasetCatalog  # noqa: E402
from detectron2.data import transforms as T  # noqa: E402
from detectron2.data.detection_utils import read_image  # noqa: E402
from detectron2.engine import DefaultPredictor  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

from vfnet.export import (  # noqa: E402
    DEFAULT_OPSET,
    ExportError,
    detection_agreement,
    export_model_onnx,
    export_torchscript,
    load_onnx,
    onnx_op_domains,
    outputs_to_instances,
    prepare_for_export,
    script_model,
)
from vfnet.head_parts import spread_classifier_scores  # noqa: E402
from vfnet.predictor import build_predictor  # noqa: E402

logger = logging.getLogger("vfnet.export_model")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Export a VFNet model (TorchScript or ONNX) and check it against eager PyTorch.")
    p.add_argument("--config-file", required=True, metavar="FILE", help="LazyConfig .py or yacs .yaml")
    p.add_argument("--format", choices=["torchscript", "onnx"], default="torchscript", help="output format")
    p.add_argument("--export-method", choices=["tracing", "scripting"], default="tracing",
                   help="tracing (TorchScript or ONNX) or scripting (TorchScript only)")
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument("--sample-image", default=None,
                   help="image to trace with (default: the first image of the config's test dataset)")
    p.add_argument("--check", action="store_true",
                   help="compare the exported model with eager PyTorch on the --check-image images (default: the sample image)")
    p.add_argument("--check-image", action="append", default=[], metavar="IMAGE",
                   help="an image for --check (repeat the flag for several)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (>= 19, for DeformConv)")
    p.add_argument("--onnx-engine", choices=["onnxruntime", "reference"], default="onnxruntime",
                   help="what runs the ONNX model for --check: onnxruntime, or onnx's pure-Python reference evaluator")
    p.add_argument("--device", default="cpu", help="device of the model while exporting (default: cpu)")
    p.add_argument("--spread-scores", type=int, default=None, metavar="SEED",
                   help="for an untrained model: re-draw the classifier (weights N(0, 2/sqrt(fan-in)), bias -2) so that scores "
                   "spread over (0, 1). With the prior-initialised classifier every score is about 0.01, below "
                   "the 0.05 threshold, and near-ties would make the order of detections arbitrary")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY=VALUE")
    return p.parse_args(argv)


def _first_name(names) -> str:
    return names if isinstance(names, str) else list(names)[0]


def test_dataset_name(cfg) -> str:
    if isinstance(cfg, CfgNode):
        if not cfg.DATASETS.TEST:
            raise ValueError("the config names no test dataset (DATASETS.TEST): pass --sample-image")
        return cfg.DATASETS.TEST[0]
    return _first_name(cfg.dataloader.test.dataset.names)


def load_input(predictor, path: str) -> torch.Tensor:
    """An image file -> (3, H, W) float32 as the model sees it: the predictor's resize and channel order."""
    image = read_image(path, format=predictor.input_format)
    if isinstance(predictor, DefaultPredictor):
        image = predictor.aug.get_transform(image).apply_image(image)
    else:
        aug_input = T.AugInput(image)
        predictor.augmentations(aug_input)
        image = aug_input.image
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)).astype("float32"))


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logger(name="vfnet")
    if args.export_method == "scripting" and args.format != "torchscript":
        raise SystemExit("--export-method scripting exports TorchScript only (--format torchscript)")
    os.makedirs(args.output, exist_ok=True)

    predictor, _ = build_predictor(args.config_file, "", args.opts, device=args.device)
    model = predictor.model
    if args.spread_scores is not None:
        spread_classifier_scores(model, args.spread_scores)
    prepare_for_export(model)

    sample = args.sample_image
    if sample is None:
        cfg = predictor.cfg
        sample = DatasetCatalog.get(test_dataset_name(cfg))[0]["file_name"]
    image = load_input(predictor, sample).to(args.device)
    logger.info(f"sample input {sample}: {tuple(image.shape)}")

    t0 = time.perf_counter()
    try:
        if args.export_method == "scripting":
            path = os.path.join(args.output, "model.ts")
            exported = script_model(model)
            exported.save(path)
        elif args.format == "torchscript":
            path = os.path.join(args.output, "model.ts")
            export_torchscript(model, image, path)
        else:
            path = os.path.join(args.output, "model.onnx")
            export_model_onnx(model, image, path, opset=args.opset)
    except ExportError as e:
        print(f"export_model: {e}", file=sys.stderr)
        return 2
    summary = {"file": path, "format": args.format, "export_method": args.export_method,
               "export_seconds": round(time.perf_counter() - t0, 2), "sample_input_shape": list(image.shape)}
    if args.format == "onnx":
        import onnx

        summary["opset"] = args.opset
        summary["onnx_ops"] = onnx_op_domains(onnx.load(path)).get("", [])
    logger.info(f"wrote {path}")
    print(json.dumps(summary))

    if not args.check:
        return 0
    return check(args, model, predictor, path, args.check_image or [sample])


def check(args, model, predictor, path: str, images) -> int:
    """Run eager and exported models on ``images``; print and save their agreement."""
    if args.format == "onnx":
        run_exported = load_onnx(path, engine=args.onnx_engine)
    else:
        loaded = torch.jit.load(path)
    rows = []
    for file_name in images:
        image = load_input(predictor, file_name).to(args.device)
        with torch.no_grad():
            t0 = time.perf_counter()
            reference = model([{"image": image}])[0]["instances"].to("cpu")
            eager_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            if args.format == "onnx":
                outputs = run_exported({"image": image.cpu().numpy()})
            elif args.export_method == "scripting":
                outputs = loaded(({"image": image},))[0]
                outputs = [outputs["pred_boxes"].tensor, outputs["pred_classes"], outputs["scores"],
                           torch.tensor(image.shape[-2:])]
            else:
                outputs = loaded(image)
            exported_s = time.perf_counter() - t0
        row = {"image": file_name, "input_shape": list(image.shape)}
        row.update(detection_agreement(reference, outputs_to_instances([torch.as_tensor(o).cpu() for o in outputs])))
        row.update(eager_seconds=round(eager_s, 3), exported_seconds=round(exported_s, 3))
        rows.append(row)
        print(json.dumps(row))
    with open(os.path.join(args.output, "export_check.json"), "w") as f:
        json.dump(rows, f, indent=1)
    if all(r["count"] == 0 for r in rows):
        print("export_model: warning: the eager model detects nothing on any check image, so the check "
              "compared no detections (random weights? give MODEL.WEIGHTS / train.init_checkpoint, or "
              "--spread-scores)", file=sys.stderr)
    bad = [r["image"] for r in rows if not r["agree"]]
    if bad:
        print(f"export_model: the exported model disagrees with eager PyTorch on {bad}", file=sys.stderr)
        return 1
    print(f"export_model: {len(rows)} image(s): same detections as eager PyTorch "
          f"(max box difference {max(r['max_box_diff_px'] for r in rows):.2e} px)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
