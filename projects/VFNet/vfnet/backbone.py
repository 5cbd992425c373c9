"""ResNet/ResNeXt + FPN (P3-P7, P6 on P5's output) for VFNet, built from Detectron2's parts."""
from typing import List

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, FPN, ResNet
from detectron2.modeling.backbone.fpn import LastLevelP6P7
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, BottleneckBlock

__all__ = ["make_resnet_stages", "build_resnet_from_cfg", "build_vfnet_resnet_fpn_backbone"]

_BLOCKS_PER_STAGE = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}


def make_resnet_stages(
    depth: int,
    *,
    stem_channels: int = 64,
    num_groups: int = 1,
    width_per_group: int = 64,
    stride_in_1x1: bool = False,
    norm: str = "FrozenBN",
) -> List[list]:
    """
    The four stages (res2-res5) of a ResNet or ResNeXt of any width, for :class:`ResNet`.

    ``ResNet.make_default_stages`` fixes the widths of a 64-wide ResNet; this builds the same
    blocks for other stems (``stem_channels``; res2 outputs 4x that for depth >= 50) and for
    ResNeXt (``num_groups`` x ``width_per_group`` bottleneck channels in res2, e.g. 32x4d).
    ``stride_in_1x1=False`` puts the stride on the 3x3 conv, as torchvision/MMDetection do.
    """
    if depth not in _BLOCKS_PER_STAGE:
        raise ValueError(f"make_resnet_stages: depth must be one of {sorted(_BLOCKS_PER_STAGE)}, got {depth}")
    if depth < 50 and num_groups != 1:
        raise ValueError("make_resnet_stages: ResNet-18/34 have no grouped (ResNeXt) variant")
    in_channels = stem_channels
    out_channels = stem_channels if depth < 50 else stem_channels * 4
    bottleneck_channels = num_groups * width_per_group
    stages = []
    for idx, num_blocks in enumerate(_BLOCKS_PER_STAGE[depth]):
        kwargs = dict(
            num_blocks=num_blocks,
            stride_per_block=[1 if idx == 0 else 2] + [1] * (num_blocks - 1),
            in_channels=in_channels,
            out_channels=out_channels,
            norm=norm,
        )
        if depth < 50:
            kwargs["block_class"] = BasicBlock
        else:
            kwargs.update(
                block_class=BottleneckBlock,
                bottleneck_channels=bottleneck_channels,
                stride_in_1x1=stride_in_1x1,
                num_groups=num_groups,
            )
        stages.append(ResNet.make_stage(**kwargs))
        in_channels = out_channels
        out_channels *= 2
        bottleneck_channels *= 2
    return stages


def build_resnet_from_cfg(cfg, input_shape: ShapeSpec) -> ResNet:
    """
    ResNet/ResNeXt from ``MODEL.RESNETS`` and ``MODEL.BACKBONE.FREEZE_AT``, of any width: unlike
    Detectron2's ``build_resnet_backbone``, ResNet-18/34 may have a stem other than 64 channels
    (``STEM_OUT_CHANNELS`` = ``RES2_OUT_CHANNELS``). Deformable stages and a dilated res5 are
    not supported (VFNet's model zoo here has neither).
    """
    r = cfg.MODEL.RESNETS
    if any(r.DEFORM_ON_PER_STAGE) or r.RES5_DILATION != 1:
        raise ValueError("build_vfnet_resnet_fpn_backbone: deformable stages and RES5_DILATION != 1 are not supported")
    expected_res2 = r.STEM_OUT_CHANNELS * (4 if r.DEPTH >= 50 else 1)
    if r.RES2_OUT_CHANNELS != expected_res2:
        raise ValueError(
            f"MODEL.RESNETS.RES2_OUT_CHANNELS must be {expected_res2} for depth {r.DEPTH} with "
            f"STEM_OUT_CHANNELS {r.STEM_OUT_CHANNELS}, got {r.RES2_OUT_CHANNELS}"
        )
    stem = BasicStem(in_channels=input_shape.channels, out_channels=r.STEM_OUT_CHANNELS, norm=r.NORM)
    stages = make_resnet_stages(
        r.DEPTH,
        stem_channels=r.STEM_OUT_CHANNELS,
        num_groups=r.NUM_GROUPS,
        width_per_group=r.WIDTH_PER_GROUP,
        stride_in_1x1=r.STRIDE_IN_1X1,
        norm=r.NORM,
    )
    return ResNet(stem, stages, out_features=r.OUT_FEATURES, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)


@BACKBONE_REGISTRY.register()
def build_vfnet_resnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    """
    ResNet (``MODEL.RESNETS``, see :func:`build_resnet_from_cfg`) + FPN (``MODEL.FPN``) with
    P6 = 3x3/2 conv on P5's output and P7 = 3x3/2 conv on ReLU(P6), as the reference VFNet's
    neck (``add_extra_convs='on_output'``).
    """
    bottom_up = build_resnet_from_cfg(cfg, input_shape)
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=out_channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelP6P7(out_channels, out_channels, in_feature="p5"),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
