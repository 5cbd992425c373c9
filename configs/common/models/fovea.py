# FoveaBox R-50 FPN with `use_vfl` (vfnet.detectors.FoveaBox): the reference's
# `vfl_fovea_r50_fpn_4x4_1x_coco.py` (MMDetection's FoveaBox, `with_deform=False`): points at cell
# centres, fovea assignment (sigma 0.4, scale ranges below, base edges 16..256), 4 convs per
# tower without norm, smooth-L1 (beta 0.11) on the log-distances; FPN P6 from C5.
# Varifocal Loss on IoU targets, or with `use_vfl=False` the focal loss (alpha 0.4, gamma 1.5).
from detectron2.config import LazyCall as L

from vfnet.builders import STRIDES, head_input_shape, point_generator
from vfnet.detectors import FoveaAssigner, FoveaBox, FoveaHead

from ._resnet_fpn_mmdet import backbone

model = L(FoveaBox)(
    backbone=backbone,
    head=L(FoveaHead)(
        input_shape=head_input_shape(256, STRIDES),
        num_classes="${..num_classes}",
        feat_channels=256,
        stacked_convs=4,
        norm="",
        prior_prob=0.01,
    ),
    head_in_features=["p3", "p4", "p5", "p6", "p7"],
    # one point per cell, at its centre ((x + 0.5) * s, (y + 0.5) * s)
    point_generator=point_generator(STRIDES, anchor_scale=1, offset=0.5),
    assigner=L(FoveaAssigner)(scale_ranges=[(1, 64), (32, 128), (64, 256), (128, 512), (256, 2048)], sigma=0.4),
    base_edges=[16, 32, 64, 128, 256],
    num_classes=80,
    use_vfl=True,
    vfl_alpha=0.75,
    vfl_gamma=2.0,
    vfl_iou_weighted=True,
    focal_loss_alpha=0.4,
    focal_loss_gamma=1.5,
    smooth_l1_beta=0.11,
    loss_bbox_weight=1.0,
    test_score_thresh=0.05,
    test_topk_candidates=1000,
    test_nms_thresh=0.5,
    max_detections_per_image=100,
    pixel_mean=[123.675, 116.28, 103.53],
    pixel_std=[58.395, 57.12, 57.375],
    input_format="RGB",
    fused_ops=True,
)
