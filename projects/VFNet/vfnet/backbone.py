"""
ResNet/ResNeXt (optionally with DCNv2 in C3-C5) and Res2Net bottom-ups, FPN and PAFPN-X necks,
built from Detectron2's parts, and the yacs builders of the combinations VFNet's model zoo uses.
"""
from typing import List, Sequence

from detectron2.layers import ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, FPN, ResNet
from detectron2.modeling.backbone.fpn import LastLevelP6P7
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, BottleneckBlock

from .layers import ModulatedDeformConv2d, resolve_norm
from .pafpnx import PAFPNX
from .res2net import Res2NetStem, make_res2net_stages

__all__ = [
    "DeformBottleneckBlock",
    "make_resnet_stages",
    "build_resnet_from_cfg",
    "build_res2net_from_cfg",
    "build_vfnet_resnet_fpn_backbone",
    "build_vfnet_res2net_fpn_backbone",
    "build_vfnet_res2net_pafpnx_backbone",
]

_BLOCKS_PER_STAGE = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}


class DeformBottleneckBlock(BottleneckBlock):
    """
    Detectron2's ``BottleneckBlock`` whose 3x3 conv (``conv2``, with the block's stride and
    groups) is a modulated deformable conv (DCNv2, one deformable group) predicting its offsets
    and mask with ``conv2.conv_offset`` (27 channels, zero-initialised): MMDetection's ResNet
    Bottleneck with ``dcn=dict(type='DCNv2', deform_groups=1, fallback_on_stride=False)``.

    Unlike Detectron2's own ``DeformBottleneckBlock`` it runs on torchvision's deformable conv,
    so it needs no compiled Detectron2 and trains on the CPU too.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bottleneck_channels: int,
        stride: int = 1,
        num_groups: int = 1,
        norm="BN",
        stride_in_1x1: bool = False,
        dilation: int = 1,
    ):
        super().__init__(
            in_channels,
            out_channels,
            bottleneck_channels=bottleneck_channels,
            stride=stride,
            num_groups=num_groups,
            norm=norm,
            stride_in_1x1=stride_in_1x1,
            dilation=dilation,
        )
        self.conv2 = ModulatedDeformConv2d(
            bottleneck_channels,
            bottleneck_channels,
            3,
            stride=1 if stride_in_1x1 else stride,
            dilation=dilation,
            groups=num_groups,
            norm=get_norm(norm, bottleneck_channels),
        )


def make_resnet_stages(
    depth: int,
    *,
    stem_channels: int = 64,
    num_groups: int = 1,
    width_per_group: int = 64,
    stride_in_1x1: bool = False,
    norm="FrozenBN",
    deform_on_per_stage: Sequence[bool] = (False, False, False, False),
) -> List[list]:
    """
    The four stages (res2-res5) of a ResNet or ResNeXt of any width, for :class:`ResNet`.

    ``ResNet.make_default_stages`` fixes the widths of a 64-wide ResNet; this builds the same
    blocks for other stems (``stem_channels``; res2 outputs 4x that for depth >= 50) and for
    ResNeXt (``num_groups`` x ``width_per_group`` bottleneck channels in res2, e.g. 32x4d).
    ``stride_in_1x1=False`` puts the stride on the 3x3 conv, as torchvision/MMDetection do.
    ``deform_on_per_stage[i]``: the 3x3 convs of every block of stage i are DCNv2
    (:class:`DeformBottleneckBlock`); the model zoo's "mdconv_c3-c5" is (False, True, True, True).
    ``norm``: a Detectron2 norm name or "FrozenStatsBN" (:class:`vfnet.layers.FrozenStatsBatchNorm2d`,
    the reference's trainable-affine BN).
    """
    if depth not in _BLOCKS_PER_STAGE:
        raise ValueError(f"make_resnet_stages: depth must be one of {sorted(_BLOCKS_PER_STAGE)}, got {depth}")
    if depth < 50 and num_groups != 1:
        raise ValueError("make_resnet_stages: ResNet-18/34 have no grouped (ResNeXt) variant")
    deform_on_per_stage = list(deform_on_per_stage)
    if len(deform_on_per_stage) != 4:
        raise ValueError(f"make_resnet_stages: deform_on_per_stage needs 4 entries (res2-res5), got {deform_on_per_stage}")
    if depth < 50 and any(deform_on_per_stage):
        raise ValueError("make_resnet_stages: deformable stages need bottleneck blocks (depth >= 50)")
    norm = resolve_norm(norm)
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
                block_class=DeformBottleneckBlock if deform_on_per_stage[idx] else BottleneckBlock,
                bottleneck_channels=bottleneck_channels,
                stride_in_1x1=stride_in_1x1,
                num_groups=num_groups,
            )
        stages.append(ResNet.make_stage(**kwargs))
        in_channels = out_channels
        out_channels *= 2
        bottleneck_channels *= 2
    return stages


def _deform_on_per_stage(cfg) -> List[bool]:
    r = cfg.MODEL.RESNETS
    deform = list(r.DEFORM_ON_PER_STAGE)
    if any(deform) and (not r.DEFORM_MODULATED or r.DEFORM_NUM_GROUPS != 1):
        raise ValueError(
            "MODEL.RESNETS.DEFORM_ON_PER_STAGE: VFNet's deformable backbones are DCNv2 with one deformable "
            f"group (DEFORM_MODULATED=True, DEFORM_NUM_GROUPS=1), got DEFORM_MODULATED={r.DEFORM_MODULATED}, "
            f"DEFORM_NUM_GROUPS={r.DEFORM_NUM_GROUPS}"
        )
    return deform


def build_resnet_from_cfg(cfg, input_shape: ShapeSpec) -> ResNet:
    """
    ResNet/ResNeXt from ``MODEL.RESNETS`` and ``MODEL.BACKBONE.FREEZE_AT``, of any width: unlike
    Detectron2's ``build_resnet_backbone``, ResNet-18/34 may have a stem other than 64 channels
    (``STEM_OUT_CHANNELS`` = ``RES2_OUT_CHANNELS``), the deformable stages are DCNv2 on
    torchvision's op (:class:`DeformBottleneckBlock`), and ``NORM`` may be "FrozenStatsBN".
    A dilated res5 is not supported.
    """
    r = cfg.MODEL.RESNETS
    if r.RES5_DILATION != 1:
        raise ValueError("build_resnet_from_cfg: MODEL.RESNETS.RES5_DILATION != 1 is not supported")
    expected_res2 = r.STEM_OUT_CHANNELS * (4 if r.DEPTH >= 50 else 1)
    if r.RES2_OUT_CHANNELS != expected_res2:
        raise ValueError(
            f"MODEL.RESNETS.RES2_OUT_CHANNELS must be {expected_res2} for depth {r.DEPTH} with "
            f"STEM_OUT_CHANNELS {r.STEM_OUT_CHANNELS}, got {r.RES2_OUT_CHANNELS}"
        )
    stem = BasicStem(in_channels=input_shape.channels, out_channels=r.STEM_OUT_CHANNELS, norm=resolve_norm(r.NORM))
    stages = make_resnet_stages(
        r.DEPTH,
        stem_channels=r.STEM_OUT_CHANNELS,
        num_groups=r.NUM_GROUPS,
        width_per_group=r.WIDTH_PER_GROUP,
        stride_in_1x1=r.STRIDE_IN_1X1,
        norm=r.NORM,
        deform_on_per_stage=_deform_on_per_stage(cfg),
    )
    return ResNet(stem, stages, out_features=r.OUT_FEATURES, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)


def build_res2net_from_cfg(cfg, input_shape: ShapeSpec) -> ResNet:
    """
    Res2Net (v1d: deep stem, average-pool shortcuts) from ``MODEL.RES2NET`` (``SCALES``,
    ``BASE_WIDTH``) and ``MODEL.RESNETS`` (``DEPTH``, ``NORM``, ``STEM_OUT_CHANNELS`` = the base
    width of res2, ``OUT_FEATURES``, ``DEFORM_ON_PER_STAGE``), frozen up to
    ``MODEL.BACKBONE.FREEZE_AT``.
    """
    r = cfg.MODEL.RESNETS
    norm = resolve_norm(r.NORM)
    stem = Res2NetStem(in_channels=input_shape.channels, out_channels=r.STEM_OUT_CHANNELS, norm=norm)
    stages = make_res2net_stages(
        r.DEPTH,
        base_channels=r.STEM_OUT_CHANNELS,
        scales=cfg.MODEL.RES2NET.SCALES,
        base_width=cfg.MODEL.RES2NET.BASE_WIDTH,
        norm=norm,
        deform_on_per_stage=_deform_on_per_stage(cfg),
    )
    return ResNet(stem, stages, out_features=r.OUT_FEATURES, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)


def _fpn(cfg, bottom_up) -> FPN:
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=out_channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelP6P7(out_channels, out_channels, in_feature="p5"),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


def _pafpnx(cfg, bottom_up) -> PAFPNX:
    return PAFPNX(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM or "GN",
    )


@BACKBONE_REGISTRY.register()
def build_vfnet_resnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    """
    ResNet/ResNeXt (``MODEL.RESNETS``, see :func:`build_resnet_from_cfg`) + FPN (``MODEL.FPN``)
    with P6 = 3x3/2 conv on P5's output and P7 = 3x3/2 conv on ReLU(P6), as the reference VFNet's
    neck (``add_extra_convs='on_output'``).
    """
    return _fpn(cfg, build_resnet_from_cfg(cfg, input_shape))


@BACKBONE_REGISTRY.register()
def build_vfnet_res2net_fpn_backbone(cfg, input_shape: ShapeSpec):
    """Res2Net (:func:`build_res2net_from_cfg`) + the FPN of :func:`build_vfnet_resnet_fpn_backbone`."""
    return _fpn(cfg, build_res2net_from_cfg(cfg, input_shape))


@BACKBONE_REGISTRY.register()
def build_vfnet_res2net_pafpnx_backbone(cfg, input_shape: ShapeSpec):
    """Res2Net (:func:`build_res2net_from_cfg`) + PAFPN-X (:class:`vfnet.pafpnx.PAFPNX`), VFNet-X's backbone."""
    return _pafpnx(cfg, build_res2net_from_cfg(cfg, input_shape))
