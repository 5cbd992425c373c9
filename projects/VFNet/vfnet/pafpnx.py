"""PAFPN-X, the neck of VFNet-X: an FPN, a bottom-up path, then a DCNv2 conv on every level."""
import math
from typing import Dict, List

import torch
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import Backbone
from torch import nn
from torch.nn import functional as F

from .layers import ModulatedDeformConv2d

__all__ = ["PAFPNX"]


class PAFPNX(Backbone):
    """
    The reference's ``PAFPNX`` (VarifocalNet's ``mmdet/models/necks/pafpnx.py``, with
    ``add_extra_convs`` on the outputs, ReLU before P7, no norm on the laterals, GroupNorm
    elsewhere, ``pafpn_conv_cfg=DCNv2``), on a bottom-up network's C3-C5:

    1. laterals ``fpn_lateral{l}`` (1x1 conv with bias, no norm) and the top-down sum with
       nearest upsampling, as in FPN;
    2. ``inter[l] = fpn_output{l}(lateral[l])`` (3x3 conv + norm, no activation);
    3. bottom-up, from the finest level: ``inter[l] += pa_downsample{l}(inter[l-1])`` (3x3
       stride-2 conv + norm), each level using the already augmented one below it;
    4. ``p{l} = pa_output{l}(inter[l])`` (3x3 DCNv2 + norm, no activation);
    5. ``p6 = top_block.p6(p5)``, ``p7 = top_block.p7(relu(p6))`` (3x3 stride-2 convs + norm).

    Convs followed by a norm have no bias. Outputs "p3".."p7" (for C3-C5 inputs), all with
    ``out_channels`` channels, strides 8..128.

    Initialisation as the reference's neck: every ``nn.Conv2d`` (the DCNv2 offset convs
    included) Xavier-uniform with zero bias; the DCNv2 main weights keep mmcv's uniform
    initialisation.
    """

    def __init__(self, bottom_up: Backbone, in_features: List[str], out_channels: int, norm: str = "GN"):
        """
        Args:
            bottom_up: the bottom-up network (e.g. a ResNet / Res2Net).
            in_features: its outputs used, finest first, of strides doubling from one to the next
                (e.g. ["res3", "res4", "res5"]).
            out_channels: channels of every output.
            norm: the norm after every non-lateral conv ("GN": GroupNorm with 32 groups).
        """
        super().__init__()
        input_shapes = bottom_up.output_shape()
        missing = [f for f in in_features if f not in input_shapes]
        if missing:
            raise ValueError(f"PAFPNX: in_features {missing} are not outputs of the bottom-up network {sorted(input_shapes)}")
        strides = [input_shapes[f].stride for f in in_features]
        for finer, coarser in zip(strides, strides[1:]):
            if coarser != 2 * finer:
                raise ValueError(f"PAFPNX: the strides of in_features must double from level to level, got {strides}")
        if not norm:
            raise ValueError("PAFPNX: needs a norm (the reference's is 'GN')")
        self.bottom_up = bottom_up
        self.in_features = tuple(in_features)
        self.levels = [int(math.log2(s)) for s in strides]

        def conv3x3(stride: int = 1) -> Conv2d:
            return Conv2d(
                out_channels, out_channels, 3, stride=stride, padding=1, bias=False, norm=get_norm(norm, out_channels)
            )

        for level, f in zip(self.levels, in_features):
            self.add_module(f"fpn_lateral{level}", Conv2d(input_shapes[f].channels, out_channels, 1, bias=True))
            self.add_module(f"fpn_output{level}", conv3x3())
            if level != self.levels[0]:
                self.add_module(f"pa_downsample{level}", conv3x3(stride=2))
            self.add_module(
                f"pa_output{level}", ModulatedDeformConv2d(out_channels, out_channels, 3, norm=get_norm(norm, out_channels))
            )
        last = self.levels[-1]
        self.top_block = nn.Module()
        self.top_block.p6 = conv3x3(stride=2)
        self.top_block.p7 = conv3x3(stride=2)
        out_levels = self.levels + [last + 1, last + 2]
        self._out_features = [f"p{level}" for level in out_levels]
        self._out_feature_strides = {f"p{level}": 2**level for level in out_levels}
        self._out_feature_channels = {name: out_channels for name in self._out_features}
        self._size_divisibility = strides[-1]

        for name, module in self.named_modules():
            if isinstance(module, nn.Conv2d) and not name.startswith("bottom_up."):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """(N, 3, H, W) images -> {"p3": (N, C, H/8, W/8), ..., "p7": (N, C, H/128, W/128)}."""
        bottom_up = self.bottom_up(x)
        laterals = [getattr(self, f"fpn_lateral{level}")(bottom_up[f]) for level, f in zip(self.levels, self.in_features)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest")
        inter = [getattr(self, f"fpn_output{level}")(lat) for level, lat in zip(self.levels, laterals)]
        for i in range(1, len(inter)):
            inter[i] = inter[i] + getattr(self, f"pa_downsample{self.levels[i]}")(inter[i - 1])
        outs = [getattr(self, f"pa_output{level}")(feat) for level, feat in zip(self.levels, inter)]
        p6 = self.top_block.p6(outs[-1])
        outs += [p6, self.top_block.p7(F.relu(p6))]
        return dict(zip(self._out_features, outs))

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }

