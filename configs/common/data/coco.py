# COCO 2017 detection data, as the reference's pipeline: RGB images (the torchvision-style
# backbones and the reference's checkpoints expect RGB), single-scale training at 1333x800
# (short side 800, long side at most 1333) with random horizontal flips, test at 1333x800,
# 16 images per batch in total (8 GPUs x 2).
# For "MS train" (short side sampled in [480, 960]) see `coco_ms.py`.
# Project-local copy of detectron2's `common/data/coco.py`, adapted.
from omegaconf import OmegaConf

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import (
    DatasetMapper,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.evaluation import COCOEvaluator

dataloader = OmegaConf.create()

dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_train"),
    mapper=L(DatasetMapper)(
        is_train=True,
        augmentations=[
            L(T.ResizeShortestEdge)(
                short_edge_length=800,
                sample_style="choice",
                max_size=1333,
            ),
            L(T.RandomFlip)(horizontal=True),
        ],
        image_format="RGB",
        use_instance_mask=False,
    ),
    total_batch_size=16,
    num_workers=4,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_val", filter_empty=False),
    mapper=L(DatasetMapper)(
        is_train=False,
        augmentations=[
            L(T.ResizeShortestEdge)(short_edge_length=800, max_size=1333),
        ],
        image_format="${...train.mapper.image_format}",
    ),
    num_workers=4,
)

# COCOEvaluator also writes the detections as COCO json (coco_instances_results.json, the
# test-dev submission format) into output_dir, as the yacs path does (OUTPUT_DIR/inference).
dataloader.evaluator = L(COCOEvaluator)(
    dataset_name="${..test.dataset.names}",
    output_dir="${...train.output_dir}/inference",
)

# Test-time augmentation (vfnet.tta), off unless `enabled` (or `tools/train_net.py --eval-only
# --tta`): the reference's vfnet_r50_fpn_1x_coco_tta.py, short sides `min_sizes` with long sides at
# most `max_sizes`, each also flipped horizontally; the detections of all are merged by one NMS.
dataloader.tta = dict(
    enabled=False,
    min_sizes=[800, 900, 1000, 1200],
    max_sizes=[1200, 1300, 1500, 1600],
    flip=True,
)
