# VarifocalNet (VFNet), R-50 FPN: the model of the reference's `vfnet_r50_fpn_1x_coco.py`.
# ResNet in torchvision ("pytorch") style: stride on the 3x3 conv; BN with frozen statistics and
# trainable affine parameters (MMDetection's `norm_eval=True`, `requires_grad=True`:
# "FrozenStatsBN"; Detectron2's "FrozenBN" would freeze the affine parameters too), stem and res2
# frozen; RGB input normalised with ImageNet mean/std, as the torchvision weights and the
# reference's checkpoints expect. FPN P3-P5 from C3-C5, P6/P7 from P5's output.
# The deformable (DCNv2) rows set `stages.deform_on_per_stage`; Res2Net and VFNet-X replace the
# bottom-up / the neck (see `vfnet_res2net.py`, `vfnetx.py` next to this file).
# The parts come from vfnet.builders (shared with the yacs configs, the parity tool and the
# tests); each is the LazyCall tree it shows, e.g. `model.backbone.bottom_up.stages.depth`.
from detectron2.config import LazyCall as L

from vfnet import ATSSAssigner, VFNet, VFNetHead
from vfnet.builders import STRIDES, fpn_p3_p7, head_input_shape, point_generator, resnet_bottom_up

# imported under "_" names, which LazyConfig.load leaves out of this file's config
from ._vfl_options import IMAGENET_RGB_INPUT as _IMAGENET_RGB_INPUT
from ._vfl_options import TEST_SELECTION as _TEST_SELECTION
from ._vfl_options import VARIFOCAL_LOSS as _VARIFOCAL_LOSS

model = L(VFNet)(
    # ResNet-50 (ResNeXt: `stages.num_groups` / `stages.width_per_group`, e.g. 32 x 4); FPN P3-P5,
    # P6 = 3x3/2 conv on P5 (the FPN output, not C5), P7 = 3x3/2 conv on ReLU(P6)
    backbone=fpn_p3_p7(
        resnet_bottom_up(depth=50, stride_in_1x1=False, norm="FrozenStatsBN", freeze_at=2), out_channels=256
    ),
    head=L(VFNetHead)(
        # Shape (channels, stride) of P3-P7; the strides scale the star-shaped offsets
        input_shape=head_input_shape(256, STRIDES),
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
        # on the CPU the head runs on channels-last copies of the features (faster oneDNN convs)
        cpu_channels_last=True,
    ),
    head_in_features=["p3", "p4", "p5", "p6", "p7"],
    # One square anchor of side 8 x stride per location, centred on the point (j*s, i*s)
    # (offset 0): ATSS matches these anchors; the boxes are measured from their centres.
    anchor_generator=point_generator(STRIDES, anchor_scale=8, offset=0.0),
    assigner=L(ATSSAssigner)(topk=9),
    num_classes=80,
    **_VARIFOCAL_LOSS,
    loss_cls_weight=1.0,
    loss_bbox_init_weight=1.5,
    loss_bbox_refine_weight=2.0,
    test_topk_mode="pairs",
    test_nms_type="nms",
    test_nms_thresh=0.6,
    **_TEST_SELECTION,
    **_IMAGENET_RGB_INPUT,
    # Fused kernels of vfnet._C (the head's star-shaped deformable convs and the Varifocal Loss);
    # False: the pure-PyTorch reference paths (torchvision deform_conv2d, eager loss). Same results.
    fused_ops=True,
    # torch.compile the backbone and the head: None, "default", "reduce-overhead", ... (vfnet.compiling)
    compile_mode=None,
)
