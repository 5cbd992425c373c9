"""
Res2Net (Gao et al., TPAMI 2021), the "v1d" variant of the reference's Res2Net-101 (26w x 4s):
a deep 3-conv stem, average-pool downsampling in the shortcuts, hierarchical 3x3 convs inside each
bottleneck. The blocks are Detectron2 ``CNNBlockBase``s, so :class:`detectron2.modeling.ResNet`
assembles, freezes and names the stages (res2-res5) as for a ResNet.
"""
import math
from typing import List, Sequence

import torch
from detectron2.layers import CNNBlockBase, Conv2d, get_norm
from torch import nn
from torch.nn import functional as F

from .layers import ModulatedDeformConv2d, resolve_norm

__all__ = ["Res2NetStem", "Bottle2neckBlock", "make_res2net_stages"]

_BLOCKS_PER_STAGE = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}


class Res2NetStem(CNNBlockBase):
    """
    The deep stem: 3x3/2 conv to ``out_channels // 2``, 3x3 conv, 3x3 conv to ``out_channels``,
    each followed by its norm and a ReLU, then a 3x3/2 max-pool (stride 4 in all).
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 64, norm="BN"):
        super().__init__(in_channels, out_channels, 4)
        norm = resolve_norm(norm)
        mid = out_channels // 2
        self.conv1 = Conv2d(in_channels, mid, 3, stride=2, padding=1, bias=False, norm=get_norm(norm, mid))
        self.conv2 = Conv2d(mid, mid, 3, padding=1, bias=False, norm=get_norm(norm, mid))
        self.conv3 = Conv2d(mid, out_channels, 3, padding=1, bias=False, norm=get_norm(norm, out_channels))
        for conv in (self.conv1, self.conv2, self.conv3):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) -> (N, out_channels, ceil(H/4), ceil(W/4)) for H, W multiples of 4."""
        for conv in (self.conv1, self.conv2, self.conv3):
            x = F.relu_(conv(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class Bottle2neckBlock(CNNBlockBase):
    """
    The Res2Net bottleneck: 1x1 conv to ``width * scales`` channels, split into ``scales``
    groups of ``width``; groups 0..scales-2 each pass through their own 3x3 conv (with the
    block's stride; DCNv2 when ``deform``), where in a ``normal`` block group i > 0 first adds
    the previous group's 3x3 output, and in the first block of a stage (``stage``) every group
    takes only its own split; the last group is passed on as it is (through a 3x3/stride
    average pool in a strided ``stage`` block); then concatenation and a 1x1 conv to
    ``out_channels``, plus the shortcut (average pool by the stride, 1x1 conv and norm, when
    the shape changes), then ReLU.

    Names: ``conv1``, ``convs.{i}`` (with ``.norm``; ``.conv_offset`` when deformable), ``conv3``,
    ``shortcut``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        width: int,
        scales: int = 4,
        stride: int = 1,
        stage_type: str = "normal",
        deform: bool = False,
        norm="BN",
    ):
        super().__init__(in_channels, out_channels, stride)
        if scales < 2:
            raise ValueError(f"Bottle2neckBlock: scales must be >= 2 (1 is a plain ResNet), got {scales}")
        if stage_type not in ("normal", "stage"):
            raise ValueError(f"Bottle2neckBlock: stage_type must be 'normal' or 'stage', got {stage_type!r}")
        if stage_type == "normal" and (stride != 1 or in_channels != out_channels):
            raise ValueError("Bottle2neckBlock: only the first ('stage') block of a stage may change the shape")
        norm = resolve_norm(norm)
        self.width = width
        self.scales = scales
        self.stage_type = stage_type

        self.conv1 = Conv2d(in_channels, width * scales, 1, bias=False, norm=get_norm(norm, width * scales))

        def conv3x3() -> nn.Module:
            if deform:
                return ModulatedDeformConv2d(width, width, 3, stride=stride, norm=get_norm(norm, width))
            return Conv2d(width, width, 3, stride=stride, padding=1, bias=False, norm=get_norm(norm, width))

        self.convs = nn.ModuleList([conv3x3() for _ in range(scales - 1)])
        self.conv3 = Conv2d(width * scales, out_channels, 1, bias=False, norm=get_norm(norm, out_channels))
        self.last_split_pool = (
            nn.AvgPool2d(kernel_size=3, stride=stride, padding=1) if stage_type == "stage" and stride != 1 else None
        )
        if stride != 1 or in_channels != out_channels:
            self.shortcut_pool = (
                nn.AvgPool2d(kernel_size=stride, stride=stride, ceil_mode=True, count_include_pad=False)
                if stride != 1
                else None
            )
            self.shortcut = Conv2d(in_channels, out_channels, 1, bias=False, norm=get_norm(norm, out_channels))
        else:
            self.shortcut_pool = None
            self.shortcut = None
        for module in self.modules():
            if isinstance(module, Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) -> (N, C_out, ceil(H / stride), ceil(W / stride))."""
        splits = torch.split(F.relu_(self.conv1(x)), self.width, dim=1)
        outputs = []
        for i, conv in enumerate(self.convs):
            inp = splits[i] if i == 0 or self.stage_type == "stage" else outputs[-1] + splits[i]
            outputs.append(F.relu_(conv(inp.contiguous())))
        last = splits[-1]
        outputs.append(last if self.last_split_pool is None else self.last_split_pool(last))
        out = self.conv3(torch.cat(outputs, dim=1))
        if self.shortcut is not None:
            shortcut = self.shortcut(x if self.shortcut_pool is None else self.shortcut_pool(x))
        else:
            shortcut = x
        return F.relu_(out + shortcut)


def make_res2net_stages(
    depth: int,
    *,
    base_channels: int = 64,
    scales: int = 4,
    base_width: int = 26,
    norm="FrozenBN",
    deform_on_per_stage: Sequence[bool] = (False, False, False, False),
) -> List[List[Bottle2neckBlock]]:
    """
    The four stages (res2-res5) of a Res2Net, for :class:`detectron2.modeling.ResNet` with a
    :class:`Res2NetStem` of ``base_channels`` outputs.

    Stage i has ``planes = base_channels * 2**i``, outputs ``4 * planes`` channels and splits
    ``width = floor(planes * base_width / base_channels)`` channels ``scales`` ways (Res2Net-101
    26w x 4s: base_channels 64, base_width 26, scales 4). Its first block (stride 1 in res2,
    2 after) is a ``stage`` block, the others ``normal``. ``deform_on_per_stage[i]``: the 3x3
    convs of stage i are DCNv2 (the zoo's "mdconv_c3-c5": (False, True, True, True)).
    """
    if depth not in _BLOCKS_PER_STAGE:
        raise ValueError(f"make_res2net_stages: depth must be one of {sorted(_BLOCKS_PER_STAGE)}, got {depth}")
    deform_on_per_stage = list(deform_on_per_stage)
    if len(deform_on_per_stage) != 4:
        raise ValueError(f"make_res2net_stages: deform_on_per_stage needs 4 entries (res2-res5), got {deform_on_per_stage}")
    stages = []
    in_channels = base_channels
    for idx, num_blocks in enumerate(_BLOCKS_PER_STAGE[depth]):
        planes = base_channels * 2**idx
        width = int(math.floor(planes * base_width / base_channels))
        blocks = []
        for b in range(num_blocks):
            blocks.append(
                Bottle2neckBlock(
                    in_channels if b == 0 else 4 * planes,
                    4 * planes,
                    width=width,
                    scales=scales,
                    stride=(1 if idx == 0 else 2) if b == 0 else 1,
                    stage_type="stage" if b == 0 else "normal",
                    deform=deform_on_per_stage[idx],
                    norm=norm,
                )
            )
        stages.append(blocks)
        in_channels = 4 * planes
    return stages
