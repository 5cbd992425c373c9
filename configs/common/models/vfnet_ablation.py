# The paper's ablation of VFNet (Table 3, R-50 1x), as edits of VFNet (`vfnet.py`): the raw VFNet
# is FCOS + ATSS without the centerness branch (the reference's `vfnet_raw_r50_fpn_1x_coco.py`,
# `VFNetRawHead`): VFNet's backbone, neck, towers and initial box, a plain conv before the
# classifier, no refinement, one IoU-weighted GIoU loss of weight 2, and the focal loss.
# `model.head.star_features=True` classifies from the star-shaped deformable-conv features;
# `model.use_vfl=True` trains with the Varifocal Loss (IoU targets of the boxes).
# (+ box refinement is VFNet itself: `vfnet.py`.)
from detectron2.config import LazyCall as L

from vfnet.detectors.vfnet_ablation import VFNetAblationHead

from .vfnet import model


def ablation_model(vfnet_model, star_features=False, use_vfl=False):
    """Edit a VFNet model config into the ablation's: its head's settings, without refinement."""
    head = vfnet_model.head
    vfnet_model.head = L(VFNetAblationHead)(
        input_shape=head.input_shape,
        num_classes="${..num_classes}",
        star_features=star_features,
        feat_channels=head.feat_channels,
        stacked_convs=head.stacked_convs,
        norm=head.norm,
        gradient_mul=head.gradient_mul,
        bbox_norm_type=head.bbox_norm_type,
        reg_denoms=head.reg_denoms,
        prior_prob=head.prior_prob,
        fused_ops="${..fused_ops}",
    )
    # The head returns its one box as both VFNet's initial and final box: the GIoU loss of
    # weight 2 is VFNet's "refine" loss on it, and the VFL targets are its IoUs.
    vfnet_model.loss_bbox_init_weight = 0.0
    vfnet_model.loss_bbox_refine_weight = 2.0
    vfnet_model.use_vfl = use_vfl
    return vfnet_model


model = ablation_model(model)
