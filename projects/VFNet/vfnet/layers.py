"""Small layers of the VFNet head: a learnable scalar, the star-shaped deformable conv and DCNv2."""
import math
from typing import Callable, Optional

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import deform_conv2d

from .ops import HAS_C_EXTENSION, star_deform_conv, star_offsets

__all__ = ["Scale", "StarDeformConv2d", "ModulatedDeformConv2d"]


class Scale(nn.Module):
    """Multiplies its input by one learnable scalar (``scale``, a 0-d parameter)."""

    def __init__(self, init_value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def _deform_conv_dtype(x: torch.Tensor) -> torch.dtype:
    # torchvision's CPU deformable-conv kernel has no bfloat16/float16 path: under CPU autocast,
    # compute it in float32 (as autocast does for other ops it cannot run in low precision).
    if x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16):
        return torch.float32
    return x.dtype


def _reset_deform_weight(weight: nn.Parameter) -> None:
    # The reference's deformable convs keep their own default init (uniform in +-1/sqrt(fan_in)),
    # not the head's normal(0, 0.01), because the head's initialiser matches only nn.Conv2d.
    fan_in = weight.shape[1] * weight.shape[2] * weight.shape[3]
    bound = 1.0 / math.sqrt(fan_in)
    nn.init.uniform_(weight, -bound, bound)


class StarDeformConv2d(nn.Module):
    """
    3x3 deformable convolution whose nine taps sit on a box around each location: its corners,
    the midpoints of its edges' rows and columns, and the location itself (VFNet's star shape).

    The box is given as distances (l, t, r, b) from each location, in feature-map cells; the
    sampling points are (x - l, y - t), (x, y - t), (x + r, y - t), (x - l, y), (x, y),
    (x + r, y), (x - l, y + b), (x, y + b), (x + r, y + b).

    With ``use_fused_op`` (the default) it runs the fused kernel :func:`vfnet.ops.star_deform_conv`
    (no offset tensor, column buffer in chunks; on the CPU in float32 the same output as the other
    path to the bit, and bfloat16 inputs are computed natively, e.g. under CPU autocast). Otherwise,
    or when ``vfnet._C`` is not built (a warning says so once), it builds the offsets with
    :func:`vfnet.ops.star_offsets` and calls torchvision's ``deform_conv2d`` (float32 for
    bfloat16/float16 CPU inputs): the reference path.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = False, use_fused_op: bool = True):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.use_fused_op = use_fused_op
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        _reset_deform_weight(self.weight)

    def forward(self, x: torch.Tensor, ltrb: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: (N, C_in, H, W) features.
            ltrb: (N, 4, H, W) box side distances (l, t, r, b) in feature-map cells (the fused
                op takes any floating dtype and computes the positions in float32).
        Returns:
            (N, C_out, H, W), of ``x``'s dtype with the fused op (float32 from the reference
            path for bfloat16/float16 CPU inputs).
        """
        if ltrb.shape[0] != x.shape[0] or ltrb.shape[-2:] != x.shape[-2:]:
            raise ValueError(
                f"StarDeformConv2d: ltrb of shape {tuple(ltrb.shape)} does not match features "
                f"of shape {tuple(x.shape)} (expected ({x.shape[0]}, 4, {x.shape[2]}, {x.shape[3]}))"
            )
        if self.use_fused_op and HAS_C_EXTENSION:
            bias = None if self.bias is None else self.bias.to(x.dtype)
            return star_deform_conv(x, ltrb, self.weight.to(x.dtype), bias)
        dtype = _deform_conv_dtype(x)
        offset = star_offsets(ltrb).to(dtype)
        bias = None if self.bias is None else self.bias.to(dtype)
        return deform_conv2d(x.to(dtype), offset, self.weight.to(dtype), bias, padding=1)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size=3, bias={self.bias is not None}, "
            f"use_fused_op={self.use_fused_op}"
        )


class ModulatedDeformConv2d(nn.Module):
    """
    3x3 modulated deformable convolution (DCNv2) that predicts its own offsets and mask with a
    3x3 conv (``conv_offset``: 18 offset channels in (dy, dx) pairs per tap, then 9 mask logits
    passed through a sigmoid), optionally followed by a norm and an activation, like
    :class:`detectron2.layers.Conv2d`. Used for ``dcn_on_last_conv`` in the head's towers.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bias: bool = False,
        norm: Optional[nn.Module] = None,
        activation: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.conv_offset = nn.Conv2d(in_channels, 27, kernel_size=3, padding=1, bias=True)
        self.norm = norm
        self.activation = activation
        _reset_deform_weight(self.weight)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C_in, H, W) -> (N, C_out, H, W)."""
        offset_and_mask = self.conv_offset(x)
        dtype = _deform_conv_dtype(offset_and_mask)
        offset = offset_and_mask[:, :18].to(dtype)
        mask = offset_and_mask[:, 18:].sigmoid().to(dtype)
        bias = None if self.bias is None else self.bias.to(dtype)
        x = deform_conv2d(x.to(dtype), offset, self.weight.to(dtype), bias, padding=1, mask=mask)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size=3, bias={self.bias is not None}"
