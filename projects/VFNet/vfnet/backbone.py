"""
The yacs backbones of VFNet's model zoo (``MODEL.BACKBONE.NAME``): ResNet/ResNeXt or Res2Net
bottom-ups with FPN or PAFPN-X necks, translated from ``MODEL.RESNETS`` / ``MODEL.RES2NET`` /
``MODEL.FPN`` into the builders of :mod:`vfnet.builders` (which the LazyConfig files use too).
"""
from typing import List

from detectron2.config import instantiate
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, ResNet

from .builders import fpn_p3_p7, pafpnx_p3_p7, res2net_bottom_up, resnet_bottom_up

__all__ = [
    "build_resnet_from_cfg",
    "build_res2net_from_cfg",
    "build_vfnet_resnet_fpn_backbone",
    "build_vfnet_res2net_fpn_backbone",
    "build_vfnet_res2net_pafpnx_backbone",
]


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


def _resnet_config(cfg, input_shape: ShapeSpec):
    """:func:`vfnet.builders.resnet_bottom_up` from ``MODEL.RESNETS`` and ``MODEL.BACKBONE.FREEZE_AT``."""
    r = cfg.MODEL.RESNETS
    if r.RES5_DILATION != 1:
        raise ValueError("build_resnet_from_cfg: MODEL.RESNETS.RES5_DILATION != 1 is not supported")
    expected_res2 = r.STEM_OUT_CHANNELS * (4 if r.DEPTH >= 50 else 1)
    if r.RES2_OUT_CHANNELS != expected_res2:
        raise ValueError(
            f"MODEL.RESNETS.RES2_OUT_CHANNELS must be {expected_res2} for depth {r.DEPTH} with "
            f"STEM_OUT_CHANNELS {r.STEM_OUT_CHANNELS}, got {r.RES2_OUT_CHANNELS}"
        )
    return resnet_bottom_up(
        depth=r.DEPTH,
        stem_channels=r.STEM_OUT_CHANNELS,
        num_groups=r.NUM_GROUPS,
        width_per_group=r.WIDTH_PER_GROUP,
        stride_in_1x1=r.STRIDE_IN_1X1,
        norm=r.NORM,
        deform_on_per_stage=_deform_on_per_stage(cfg),
        out_features=r.OUT_FEATURES,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
        in_channels=input_shape.channels,
    )


def _res2net_config(cfg, input_shape: ShapeSpec):
    """:func:`vfnet.builders.res2net_bottom_up` from ``MODEL.RES2NET`` and ``MODEL.RESNETS``."""
    r = cfg.MODEL.RESNETS
    return res2net_bottom_up(
        depth=r.DEPTH,
        base_channels=r.STEM_OUT_CHANNELS,
        scales=cfg.MODEL.RES2NET.SCALES,
        base_width=cfg.MODEL.RES2NET.BASE_WIDTH,
        norm=r.NORM,
        deform_on_per_stage=_deform_on_per_stage(cfg),
        out_features=r.OUT_FEATURES,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
        in_channels=input_shape.channels,
    )


def build_resnet_from_cfg(cfg, input_shape: ShapeSpec) -> ResNet:
    """
    ResNet/ResNeXt from ``MODEL.RESNETS`` and ``MODEL.BACKBONE.FREEZE_AT``, of any width: unlike
    Detectron2's ``build_resnet_backbone``, ResNet-18/34 may have a stem other than 64 channels
    (``STEM_OUT_CHANNELS`` = ``RES2_OUT_CHANNELS``), the deformable stages are DCNv2 on
    torchvision's op (:class:`vfnet.resnet.DeformBottleneckBlock`), and ``NORM`` may be
    "FrozenStatsBN". A dilated res5 is not supported.
    """
    return instantiate(_resnet_config(cfg, input_shape))


def build_res2net_from_cfg(cfg, input_shape: ShapeSpec) -> ResNet:
    """
    Res2Net (v1d: deep stem, average-pool shortcuts) from ``MODEL.RES2NET`` (``SCALES``,
    ``BASE_WIDTH``) and ``MODEL.RESNETS`` (``DEPTH``, ``NORM``, ``STEM_OUT_CHANNELS`` = the base
    width of res2, ``OUT_FEATURES``, ``DEFORM_ON_PER_STAGE``), frozen up to
    ``MODEL.BACKBONE.FREEZE_AT``.
    """
    return instantiate(_res2net_config(cfg, input_shape))


def _fpn(cfg, bottom_up):
    f = cfg.MODEL.FPN
    return instantiate(
        fpn_p3_p7(bottom_up, out_channels=f.OUT_CHANNELS, in_features=f.IN_FEATURES, norm=f.NORM, fuse_type=f.FUSE_TYPE)
    )


@BACKBONE_REGISTRY.register()
def build_vfnet_resnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    """
    ResNet/ResNeXt (``MODEL.RESNETS``, see :func:`build_resnet_from_cfg`) + FPN (``MODEL.FPN``)
    with P6 = 3x3/2 conv on P5's output and P7 = 3x3/2 conv on ReLU(P6), as the reference VFNet's
    neck (``add_extra_convs='on_output'``).
    """
    return _fpn(cfg, _resnet_config(cfg, input_shape))


@BACKBONE_REGISTRY.register()
def build_vfnet_res2net_fpn_backbone(cfg, input_shape: ShapeSpec):
    """Res2Net (:func:`build_res2net_from_cfg`) + the FPN of :func:`build_vfnet_resnet_fpn_backbone`."""
    return _fpn(cfg, _res2net_config(cfg, input_shape))


@BACKBONE_REGISTRY.register()
def build_vfnet_res2net_pafpnx_backbone(cfg, input_shape: ShapeSpec):
    """Res2Net (:func:`build_res2net_from_cfg`) + PAFPN-X (:class:`vfnet.pafpnx.PAFPNX`), VFNet-X's backbone."""
    f = cfg.MODEL.FPN
    neck = pafpnx_p3_p7(_res2net_config(cfg, input_shape), out_channels=f.OUT_CHANNELS, in_features=f.IN_FEATURES, norm=f.NORM or "GN")
    return instantiate(neck)
