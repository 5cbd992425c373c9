# ATSS R-50 FPN with `use_vfl` (vfnet.detectors.ATSS): the reference's `vfl_atss_r50_fpn_1x_coco.py`
# (MMDetection's ATSS): one anchor of 8 x stride per location, ATSS assignment (top 9 per level),
# deltas with weights (10, 10, 5, 5) (clamped as MMDetection does), 4 GN convs per tower, GIoU (weight 2) weighted by the
# centerness targets, centerness BCE; FPN P6 from P5's output (no ReLU before P7).
# Varifocal Loss on IoU targets, or with `use_vfl=False` the focal loss.
from detectron2.config import LazyCall as L

from vfnet import ATSSAssigner
from vfnet.builders import STRIDES, head_input_shape
from vfnet.detectors import ATSS, ATSSHead, MMDetAnchorGenerator, MMDetBox2BoxTransform

from ._resnet_fpn_mmdet import backbone

backbone.top_block.update(in_channels="${..out_channels}", in_feature="p5")

model = L(ATSS)(
    backbone=backbone,
    head=L(ATSSHead)(
        input_shape=head_input_shape(256, STRIDES),
        num_classes="${..num_classes}",
        num_anchors=1,
        feat_channels=256,
        stacked_convs=4,
        norm="GN",
        prior_prob=0.01,
    ),
    head_in_features=["p3", "p4", "p5", "p6", "p7"],
    anchor_generator=L(MMDetAnchorGenerator)(
        strides=[8, 16, 32, 64, 128], ratios=[1.0], octave_base_scale=8, scales_per_octave=1
    ),
    box2box_transform=L(MMDetBox2BoxTransform)(weights=[10.0, 10.0, 5.0, 5.0]),
    assigner=L(ATSSAssigner)(topk=9),
    num_classes=80,
    use_vfl=True,
    vfl_alpha=0.75,
    vfl_gamma=2.0,
    vfl_iou_weighted=True,
    focal_loss_alpha=0.25,
    focal_loss_gamma=2.0,
    loss_bbox_weight=2.0,
    loss_centerness_weight=1.0,
    test_score_thresh=0.05,
    test_topk_candidates=1000,
    test_nms_thresh=0.6,
    max_detections_per_image=100,
    pixel_mean=[123.675, 116.28, 103.53],
    pixel_std=[58.395, 57.12, 57.375],
    input_format="RGB",
    fused_ops=True,
)
