# FoveaBox R-50 FPN with `use_vfl` (vfnet.detectors.FoveaBox): the reference's
# `vfl_fovea_r50_fpn_4x4_1x_coco.py` (MMDetection's FoveaBox, `with_deform=False`): points at cell
# centres, fovea assignment (sigma 0.4, scale ranges below, base edges 16..256), 4 convs per
# tower without norm, smooth-L1 (beta 0.11) on the log-distances; FPN P6 from C5.
# Varifocal Loss on IoU targets, or with `use_vfl=False` the focal loss (alpha 0.4, gamma 1.5).
from detectron2.config import LazyCall as L

from vfnet.builders import STRIDES, head_input_shape, point_generator
from vfnet.detectors import FoveaAssigner, FoveaBox, FoveaHead

from ._resnet_fpn_mmdet import backbone
# imported under "_" names, which LazyConfig.load leaves out of this file's config
from ._vfl_options import IMAGENET_RGB_INPUT as _IMAGENET_RGB_INPUT
from ._vfl_options import TEST_SELECTION as _TEST_SELECTION
from ._vfl_options import VARIFOCAL_LOSS as _VARIFOCAL_LOSS

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
    **_VARIFOCAL_LOSS,
    focal_loss_alpha=0.4,
    focal_loss_gamma=1.5,
    smooth_l1_beta=0.11,
    loss_bbox_weight=1.0,
    test_nms_thresh=0.5,
    **_TEST_SELECTION,
    **_IMAGENET_RGB_INPUT,
    fused_ops=True,
    compile_mode=None,  # torch.compile the backbone and the head (vfnet.compiling)
)
