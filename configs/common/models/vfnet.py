# VarifocalNet (VFNet), R-50 FPN: the model of the reference's `vfnet_r50_fpn_1x_coco.py`.
# ResNet in torchvision ("pytorch") style: stride on the 3x3 conv; BN with frozen statistics and
# trainable affine parameters (MMDetection's `norm_eval=True`, `requires_grad=True`:
# "FrozenStatsBN"; Detectron2's "FrozenBN" would freeze the affine parameters too), stem and res2
# frozen; RGB input normalised with ImageNet mean/std, as the torchvision weights and the
# reference's checkpoints expect. FPN P3-P5 from C3-C5, P6/P7 from P5's output.
# The deformable (DCNv2) rows set `stages.deform_on_per_stage`; Res2Net and VFNet-X replace the
# bottom-up / the neck (see `vfnet_res2net.py`, `vfnetx.py` next to this file).
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.backbone import FPN, BasicStem, ResNet
from detectron2.modeling.backbone.fpn import LastLevelP6P7

from vfnet import ATSSAssigner, VFNet, VFNetHead, make_resnet_stages
from vfnet.layers import resolve_norm

model = L(VFNet)(
    backbone=L(FPN)(
        bottom_up=L(ResNet)(
            stem=L(BasicStem)(in_channels=3, out_channels=64, norm=L(resolve_norm)(norm="FrozenStatsBN")),
            # ResNeXt: add num_groups / width_per_group (e.g. 32 x 4 for X-101-32x4d)
            stages=L(make_resnet_stages)(
                depth=50,
                stride_in_1x1=False,
                norm="FrozenStatsBN",
                # DCNv2 in the 3x3 convs of res2..res5 ("mdconv_c3-c5": [False, True, True, True])
                deform_on_per_stage=[False, False, False, False],
            ),
            out_features=["res3", "res4", "res5"],
            freeze_at=2,
        ),
        in_features="${.bottom_up.out_features}",
        out_channels=256,
        # P6 = 3x3/2 conv on P5 (the FPN output, not C5), P7 = 3x3/2 conv on ReLU(P6)
        top_block=L(LastLevelP6P7)(in_channels=256, out_channels="${..out_channels}", in_feature="p5"),
    ),
    head=L(VFNetHead)(
        # Shape (channels, stride) of P3-P7; the strides scale the star-shaped offsets
        input_shape=[ShapeSpec(channels=256, stride=s) for s in [8, 16, 32, 64, 128]],
        num_classes="${..num_classes}",
        feat_channels=256,
        stacked_convs=3,
        norm="GN",
        dcn_on_last_conv=False,
        gradient_mul=0.1,
        bbox_norm_type="reg_denom",
        reg_denoms=[64, 128, 256, 512, 1024],
        prior_prob=0.01,
        # fused kernel of vfnet._C for the two star-shaped deformable convs (see fused_ops below)
        fused_ops="${..fused_ops}",
    ),
    head_in_features=["p3", "p4", "p5", "p6", "p7"],
    # One square anchor of side 8 x stride per location, centred on the point (j*s, i*s)
    # (offset 0): ATSS matches these anchors; the boxes are measured from their centres.
    anchor_generator=L(DefaultAnchorGenerator)(
        sizes=[[8 * s] for s in [8, 16, 32, 64, 128]],
        aspect_ratios=[1.0],
        strides=[8, 16, 32, 64, 128],
        offset=0.0,
    ),
    assigner=L(ATSSAssigner)(topk=9),
    num_classes=80,
    use_vfl=True,
    vfl_alpha=0.75,
    vfl_gamma=2.0,
    vfl_iou_weighted=True,
    loss_cls_weight=1.0,
    loss_bbox_init_weight=1.5,
    loss_bbox_refine_weight=2.0,
    test_score_thresh=0.05,
    test_topk_candidates=1000,
    test_topk_mode="pairs",
    test_nms_type="nms",
    test_nms_thresh=0.6,
    max_detections_per_image=100,
    pixel_mean=[123.675, 116.28, 103.53],
    pixel_std=[58.395, 57.12, 57.375],
    input_format="RGB",
    # Fused kernels of vfnet._C (the head's star-shaped deformable convs and the Varifocal Loss);
    # False: the pure-PyTorch reference paths (torchvision deform_conv2d, eager loss). Same results.
    fused_ops=True,
)
