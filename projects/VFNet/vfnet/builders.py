"""
The one place where VFNet's model is assembled from its parts. Every way of making the model
calls these builders: the LazyConfig model files (``configs/common/models/``), the yacs backbones
and :meth:`VFNet.from_config <vfnet.VFNet.from_config>`, the MMDetection parity tool
(:mod:`vfnet.mmdet_parity`) and the tests.

Each builder returns the LazyCall config of its part: the tree a LazyConfig user edits (e.g.
``model.backbone.bottom_up.stages.depth``); :func:`detectron2.config.instantiate` builds the
module from it, which is what the yacs, parity and test paths do.
"""
from typing import List, Optional, Sequence

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling import FPN, ResNet
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.backbone.fpn import LastLevelP6P7
from detectron2.modeling.backbone.resnet import BasicStem

from .resnet import make_resnet_stages
from .layers import resolve_norm
from .pafpnx import PAFPNX
from .res2net import Res2NetStem, make_res2net_stages

__all__ = [
    "STRIDES",
    "resnet_bottom_up",
    "res2net_bottom_up",
    "fpn_p3_p7",
    "pafpnx_p3_p7",
    "head_input_shape",
    "point_generator",
]

#: Strides of P3-P7, the levels VFNet's head runs on.
STRIDES = (8, 16, 32, 64, 128)
_C3_C5 = ("res3", "res4", "res5")


def resnet_bottom_up(
    *,
    depth: int = 50,
    stem_channels: int = 64,
    num_groups: int = 1,
    width_per_group: int = 64,
    stride_in_1x1: bool = False,
    norm: str = "FrozenStatsBN",
    deform_on_per_stage: Sequence[bool] = (False, False, False, False),
    out_features: Sequence[str] = _C3_C5,
    freeze_at: int = 2,
    in_channels: int = 3,
):
    """
    ResNet / ResNeXt (:func:`vfnet.resnet.make_resnet_stages`: any stem width, DCNv2 stages,
    "FrozenStatsBN") as ``L(ResNet)(stem=L(BasicStem)(...), stages=L(make_resnet_stages)(...))``.
    """
    return L(ResNet)(
        stem=L(BasicStem)(in_channels=in_channels, out_channels=stem_channels, norm=L(resolve_norm)(norm=norm)),
        # ResNeXt: num_groups x width_per_group (e.g. 32 x 4 for X-101-32x4d)
        stages=L(make_resnet_stages)(
            depth=depth,
            stem_channels=stem_channels,
            num_groups=num_groups,
            width_per_group=width_per_group,
            stride_in_1x1=stride_in_1x1,
            norm=norm,
            # DCNv2 in the 3x3 convs of res2..res5 ("mdconv_c3-c5": [False, True, True, True])
            deform_on_per_stage=list(deform_on_per_stage),
        ),
        out_features=list(out_features),
        freeze_at=freeze_at,
    )


def res2net_bottom_up(
    *,
    depth: int = 101,
    base_channels: int = 64,
    scales: int = 4,
    base_width: int = 26,
    norm: str = "FrozenStatsBN",
    deform_on_per_stage: Sequence[bool] = (False, False, False, False),
    out_features: Sequence[str] = _C3_C5,
    freeze_at: int = 2,
    in_channels: int = 3,
):
    """Res2Net v1d (:mod:`vfnet.res2net`) as ``L(ResNet)(stem=L(Res2NetStem)(...), stages=L(make_res2net_stages)(...))``."""
    return L(ResNet)(
        stem=L(Res2NetStem)(in_channels=in_channels, out_channels=base_channels, norm=norm),
        stages=L(make_res2net_stages)(
            depth=depth,
            base_channels=base_channels,
            scales=scales,
            base_width=base_width,
            norm=norm,
            deform_on_per_stage=list(deform_on_per_stage),
        ),
        out_features=list(out_features),
        freeze_at=freeze_at,
    )


def fpn_p3_p7(
    bottom_up, *, out_channels: int = 256, in_features: Optional[Sequence[str]] = None, norm: str = "", fuse_type: str = "sum"
):
    """
    VFNet's FPN on ``bottom_up`` (a config from the builders above): P3-P5 from C3-C5 (or
    ``in_features``; default: the bottom-up's ``out_features``), P6 = 3x3/2 conv on P5's output,
    P7 = 3x3/2 conv on ReLU(P6): the reference's ``add_extra_convs='on_output'``.
    """
    return L(FPN)(
        bottom_up=bottom_up,
        in_features="${.bottom_up.out_features}" if in_features is None else list(in_features),
        out_channels=out_channels,
        norm=norm,
        top_block=L(LastLevelP6P7)(in_channels="${..out_channels}", out_channels="${..out_channels}", in_feature="p5"),
        fuse_type=fuse_type,
    )


def pafpnx_p3_p7(bottom_up, *, out_channels: int = 384, in_features: Sequence[str] = _C3_C5, norm: str = "GN"):
    """VFNet-X's neck, :class:`vfnet.pafpnx.PAFPNX`, on ``bottom_up``'s C3-C5."""
    return L(PAFPNX)(bottom_up=bottom_up, in_features=list(in_features), out_channels=out_channels, norm=norm)


def head_input_shape(channels: int, strides: Sequence[int] = STRIDES) -> List[ShapeSpec]:
    """The head's ``input_shape``: one ShapeSpec per level, ``channels`` each (the neck's)."""
    return [ShapeSpec(channels=channels, stride=s) for s in strides]


def point_generator(strides: Sequence[int] = STRIDES, *, anchor_scale: float = 8, offset: float = 0.0):
    """
    The points VFNet predicts from, as a Detectron2 anchor generator: one square anchor of side
    ``anchor_scale`` x stride per location of each level, centred on (j s, i s) + ``offset`` x s.
    ATSS matches these anchors (offset 0); the FCOS assigner uses their centres (offset 0.5).
    """
    return L(DefaultAnchorGenerator)(
        sizes=[[anchor_scale * s] for s in strides],
        aspect_ratios=[1.0],
        strides=list(strides),
        offset=offset,
    )
