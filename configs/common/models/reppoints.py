# RepPoints R-50 FPN, moment transform, GroupNorm in neck and head, with `use_vfl`
# (vfnet.detectors.RepPoints): the reference's
# `vfl_reppoints_moment_r50_fpn_gn-neck+head_4x4_1x_coco.py` (MMDetection's RepPoints): 9 points,
# center init, gradient x0.1 into the deformable convs, point assignment then MaxIoU (0.5 / 0.4)
# of the initial boxes, smooth-L1 (beta 0.11) of boxes / (4 x stride), weights 0.5 and 1;
# FPN with GN, P6 from C5.
# Varifocal Loss on IoU targets, or with `use_vfl=False` the focal loss.
from detectron2.config import LazyCall as L

from vfnet.builders import STRIDES, head_input_shape, point_generator
from vfnet.detectors import MaxIoUMatcher, PointAssigner, RepPoints, RepPointsHead

from ._resnet_fpn_mmdet import backbone
# imported under "_" names, which LazyConfig.load leaves out of this file's config
from ._vfl_options import IMAGENET_RGB_INPUT as _IMAGENET_RGB_INPUT
from ._vfl_options import TEST_SELECTION as _TEST_SELECTION
from ._vfl_options import VARIFOCAL_LOSS as _VARIFOCAL_LOSS

backbone.norm = "GN"

model = L(RepPoints)(
    backbone=backbone,
    head=L(RepPointsHead)(
        input_shape=head_input_shape(256, STRIDES),
        num_classes="${..num_classes}",
        feat_channels=256,
        point_feat_channels=256,
        stacked_convs=3,
        num_points=9,
        gradient_mul=0.1,
        moment_mul=0.01,
        norm="GN",
        prior_prob=0.01,
    ),
    head_in_features=["p3", "p4", "p5", "p6", "p7"],
    # one point per cell, at its corner (x * s, y * s)
    point_generator=point_generator(STRIDES, anchor_scale=1, offset=0.0),
    init_assigner=L(PointAssigner)(scale=4, pos_num=1),
    refine_matcher=L(MaxIoUMatcher)(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0),
    num_classes=80,
    point_base_scale=4,
    **_VARIFOCAL_LOSS,
    focal_loss_alpha=0.25,
    focal_loss_gamma=2.0,
    smooth_l1_beta=0.11,
    loss_pts_init_weight=0.5,
    loss_pts_refine_weight=1.0,
    test_nms_thresh=0.5,
    **_TEST_SELECTION,
    **_IMAGENET_RGB_INPUT,
    fused_ops=True,
    compile_mode=None,  # torch.compile the backbone and the head (vfnet.compiling)
)
