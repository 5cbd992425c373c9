# RetinaNet R-50 FPN with `use_vfl`: Detectron2's RetinaNet (vfnet.detectors.RetinaNetVFL) set up
# as the reference's `vfl_retinanet_r50_fpn_4x4_1x_coco.py` (MMDetection's RetinaNet), so that
# its checkpoints load and evaluate, and training follows its recipe:
# - anchors: 3 scales (4 x stride x 2^(i/3)) x 3 ratios per location, in MMDetection's order
#   and arithmetic (MMDetAnchorGenerator); deltas with weights (1, 1, 1, 1), their log-scales
#   clamped from both sides as MMDetection does (MMDetBox2BoxTransform);
# - matching: MMDetection's MaxIoUAssigner (>= 0.5 positive, < 0.4 negative, each ground truth
#   claims its best anchors);
# - L1 box loss on the deltas; both losses over the positives of each image (at least 1 each);
#   anchors outside an image's own padded area take no part;
# - Varifocal Loss (alpha 0.75, gamma 2, IoU-weighted) on IoU targets, or with `use_vfl=False` the
#   focal loss (alpha 0.25, gamma 2).
# Without the four recipe options (loss_normalizer, ignore_padding, anchor_matcher, L1) it is
# Detectron2's RetinaNet recipe.
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.meta_arch.retinanet import RetinaNetHead

from vfnet.detectors import MaxIoUMatcher, MMDetAnchorGenerator, MMDetBox2BoxTransform, RetinaNetVFL

from ._resnet_fpn_mmdet import backbone
# imported under "_" names, which LazyConfig.load leaves out of this file's config
from ._vfl_options import IMAGENET_RGB_INPUT as _IMAGENET_RGB_INPUT
from ._vfl_options import TEST_SELECTION as _TEST_SELECTION
from ._vfl_options import VARIFOCAL_LOSS as _VARIFOCAL_LOSS

model = L(RetinaNetVFL)(
    backbone=backbone,
    head=L(RetinaNetHead)(
        input_shape=[ShapeSpec(channels=256)] * 5,
        num_classes="${..num_classes}",
        conv_dims=[256, 256, 256, 256],
        prior_prob=0.01,
        num_anchors=9,
    ),
    head_in_features=["p3", "p4", "p5", "p6", "p7"],
    anchor_generator=L(MMDetAnchorGenerator)(
        strides=[8, 16, 32, 64, 128], ratios=[0.5, 1.0, 2.0], octave_base_scale=4, scales_per_octave=3
    ),
    box2box_transform=L(MMDetBox2BoxTransform)(weights=[1.0, 1.0, 1.0, 1.0]),
    anchor_matcher=L(MaxIoUMatcher)(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0),
    num_classes=80,
    focal_loss_alpha=0.25,
    focal_loss_gamma=2.0,
    smooth_l1_beta=0.0,  # L1
    box_reg_loss_type="smooth_l1",
    **_VARIFOCAL_LOSS,
    loss_normalizer="positives_per_image",
    ignore_padding=True,
    test_nms_thresh=0.5,
    **_TEST_SELECTION,
    **_IMAGENET_RGB_INPUT,
    fused_ops=True,
    compile_mode=None,  # torch.compile the backbone and the head (vfnet.compiling)
)
