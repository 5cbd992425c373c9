"""
ResNet / ResNeXt stages of any width for Detectron2's :class:`~detectron2.modeling.ResNet`,
optionally with DCNv2 (on torchvision's op) in the 3x3 convs of the stages asked for.
"""
from typing import List, Sequence

from detectron2.layers import get_norm
from detectron2.modeling import ResNet
from detectron2.modeling.backbone.resnet import BasicBlock, BottleneckBlock

from .layers import ModulatedDeformConv2d, resolve_norm

__all__ = ["DeformBottleneckBlock", "make_resnet_stages"]

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
