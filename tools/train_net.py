#!/usr/bin/env python
"""
Train or evaluate VFNet, from a LazyConfig ``.py`` or a yacs ``.yaml`` config.

    # train on COCO with 8 GPUs (datasets under $DETECTRON2_DATASETS, as Detectron2 expects)
    python tools/train_net.py --config-file configs/COCO-Detection/vfnet_R_50_FPN_1x.py --num-gpus 8
    # evaluate a checkpoint
    python tools/train_net.py --config-file configs/COCO-Detection/vfnet_R_50_FPN_1x.py --eval-only \
        train.init_checkpoint=/path/to/model.pth
    # ... and with test-time augmentation (the reference's scales and flip; see vfnet.tta)
    python tools/train_net.py --config-file configs/COCO-Detection/vfnet_R_50_FPN_1x.py --eval-only --tta \
        train.init_checkpoint=/path/to/model.pth
    # your own COCO-format data (number and names of classes taken from the data)
    python tools/train_net.py --config-file configs/COCO-Detection/vfnet_R_50_FPN_1x.py \
        --train-data coco:train.json:train_images/ --val-data coco:val.json:val_images/

Multi-machine training, ``--resume`` and ``KEY=VALUE`` overrides work as in Detectron2's tools.
Evaluation writes the detections as COCO json (the test-dev submission format) to
``OUTPUT/inference/coco_instances_results.json`` (``OUTPUT/inference_TTA/`` with TTA).
"""
import logging
import os
import sys

import torch

try:
    import vfnet  # noqa: F401
except ImportError:  # running from a source checkout without `make install`
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "projects", "VFNet"))

from detectron2.config import CfgNode, instantiate
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm

from vfnet.checkpoint import VFNetCheckpointer
from vfnet.data.user_datasets import register_dataset_spec
from vfnet.detectors.config import NUM_CLASSES_KEY
from vfnet.engine import Trainer, apply_overrides, do_test, do_train, launch_cpu, load_config, wrap_ddp
from vfnet.tta import do_test_with_tta, enable_tta, tta_enabled

logger = logging.getLogger("detectron2")


def use_datasets(cfg, train_spec: str, val_spec: str):
    """Register the user's datasets and point the config (and its number of classes) at them."""
    classes = None
    if train_spec:
        classes = register_dataset_spec("user_train", train_spec)
    if val_spec:
        val_classes = register_dataset_spec("user_val", val_spec, class_names=classes)
        if classes is not None and list(val_classes) != list(classes):
            raise ValueError(f"--val-data has classes {val_classes}, --train-data has {classes}")
        classes = classes or val_classes
    if classes is None:
        return cfg
    logger.info(f"Using {len(classes)} classes from the data: {classes}")
    if isinstance(cfg, CfgNode):
        if train_spec:
            cfg.DATASETS.TRAIN = ("user_train",)
        if val_spec:
            cfg.DATASETS.TEST = ("user_val",)
        node = NUM_CLASSES_KEY.get(cfg.MODEL.META_ARCHITECTURE)
        if node is None:
            raise ValueError(f"--train-data/--val-data: unknown meta-architecture {cfg.MODEL.META_ARCHITECTURE!r}")
        cfg.MODEL[node].NUM_CLASSES = len(classes)
    else:
        if train_spec:
            cfg.dataloader.train.dataset.names = "user_train"
        if val_spec:
            cfg.dataloader.test.dataset.names = "user_val"
            cfg.dataloader.evaluator.dataset_name = "user_val"
        cfg.model.num_classes = len(classes)
    return cfg


def check_device(cfg):
    device = cfg.MODEL.DEVICE if isinstance(cfg, CfgNode) else cfg.train.device
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        key = "MODEL.DEVICE" if isinstance(cfg, CfgNode) else "train.device"
        raise RuntimeError(f"the config asks for device {device!r} but no GPU is available; add `{key}=cpu`")


def setup(args):
    cfg = load_config(args.config_file)
    cfg = use_datasets(cfg, args.train_data, args.val_data)
    cfg = apply_overrides(cfg, args.opts)
    if args.tta:
        enable_tta(cfg)
    check_device(cfg)
    if isinstance(cfg, CfgNode):
        cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    if tta_enabled(cfg) and not args.eval_only:
        logger.warning("Test-time augmentation is used by --eval-only runs; this training run evaluates without it")
    if isinstance(cfg, CfgNode):
        if args.eval_only:
            model = Trainer.build_model(cfg)
            VFNetCheckpointer(model, cfg.OUTPUT_DIR, require_head=True).resume_or_load(
                cfg.MODEL.WEIGHTS, resume=args.resume
            )
            results = Trainer.test(cfg, model)
            if tta_enabled(cfg):
                results.update(Trainer.test_with_TTA(cfg, model))
            return results
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        return trainer.train()

    if args.eval_only:
        model = instantiate(cfg.model)
        model.to(cfg.train.device)
        model = wrap_ddp(model, cfg.train.device)
        VFNetCheckpointer(model, require_head=True).load(cfg.train.init_checkpoint)
        results = do_test(cfg, model)
        if tta_enabled(cfg):
            results.update(do_test_with_tta(cfg, model))
        return results
    do_train(cfg, resume=args.resume)
    return None


def argument_parser():
    parser = default_argument_parser(epilog=__doc__)
    parser.add_argument(
        "--train-data",
        default="",
        metavar="SPEC",
        help="train on your own data: coco:ANNOTATIONS.json:IMAGE_DIR or voc:VOC_DIR:SPLIT",
    )
    parser.add_argument(
        "--val-data", default="", metavar="SPEC", help="evaluate on your own data (same forms as --train-data)"
    )
    parser.add_argument(
        "--tta",
        action="store_true",
        help="with --eval-only, also evaluate with test-time augmentation (TEST.AUG / dataloader.tta scales)",
    )
    return parser


def invoke_main() -> None:
    parser = argument_parser()
    args = parser.parse_args()
    if args.tta and not args.eval_only:
        parser.error("--tta evaluates a trained model: use it with --eval-only")
    print("Command Line Args:", args)
    if args.num_gpus > 1 and not torch.cuda.is_available():
        # No GPU: N data-parallel CPU processes (gloo), as Detectron2's newer `launch` does.
        if args.num_machines != 1:
            raise SystemExit("training on CPUs across several machines is not supported; use --num-machines 1")
        launch_cpu(main, args.num_gpus, args=(args,))
        return
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    invoke_main()
