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
# imported under "_" names, which LazyConfig.load leaves out of this file's config
from ._vfl_options import IMAGENET_RGB_INPUT as _IMAGENET_RGB_INPUT
from ._vfl_options import TEST_SELECTION as _TEST_SELECTION
from ._vfl_options import VARIFOCAL_LOSS as _VARIFOCAL_LOSS

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
    **_VARIFOCAL_LOSS,
    focal_loss_alpha=0.25,
    focal_loss_gamma=2.0,
    loss_bbox_weight=2.0,
    loss_centerness_weight=1.0,
    test_nms_thresh=0.6,
    **_TEST_SELECTION,
    **_IMAGENET_RGB_INPUT,
    fused_ops=True,
    compile_mode=None,  # torch.compile the backbone and the head (vfnet.compiling)
)
