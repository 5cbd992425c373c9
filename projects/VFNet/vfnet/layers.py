"""Small layers of the VFNet head: a learnable scalar, the star-shaped deformable conv and DCNv2."""
import math
from typing import Callable, Optional

import torch
from torch import nn
from torch.nn import functional as F
from detectron2.layers import FrozenBatchNorm2d
from torchvision.ops import deform_conv2d

from .ops import HAS_C_EXTENSION, modulated_deform_conv, star_deform_conv, star_offsets

__all__ = ["Scale", "StarDeformConv2d", "ModulatedDeformConv2d", "FrozenStatsBatchNorm2d", "resolve_norm"]


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


def _autocast_dtype(x: torch.Tensor) -> torch.dtype:
    # The dtype a convolution of x runs in: autocast's where it is on for x's device (as for
    # F.conv2d), else x's.
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def _reset_deform_weight(weight: nn.Parameter, in_channels: int) -> None:
    # mmcv's (Modulated)DeformConv2d init: uniform in +-1/sqrt(in_channels * kh * kw), with the
    # layer's full input channels even when the conv is grouped.
    bound = 1.0 / math.sqrt(in_channels * weight.shape[2] * weight.shape[3])
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
        # The reference head re-draws it N(0, 0.01) (VFNetHead does too); this is mmcv's default.
        _reset_deform_weight(self.weight, in_channels)

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
    Modulated deformable convolution (DCNv2, one deformable group) that predicts its own offsets
    and mask with a conv of the same geometry (``conv_offset``: 2*K offset channels in (dy, dx)
    pairs per tap, row-major over the kernel, then K mask logits passed through a sigmoid, K =
    kh*kw), optionally followed by a norm and an activation, like
    :class:`detectron2.layers.Conv2d`. It is MMDetection's ``DCNv2`` (mmcv's
    ``ModulatedDeformConv2dPack``): the same parameters, layout and initialisation (weight
    uniform in +-1/sqrt(C_in*kh*kw), ``conv_offset`` zero, so it starts as a plain conv whose
    output is halved by the mask). Used for ``dcn_on_last_conv`` in the head's towers, the 3x3
    convs of the DCN backbones (stride 2 included) and the PAFPN-X neck.

    With ``use_fused_op`` (the default) and a 3x3 kernel it runs the fused kernel
    :func:`vfnet.ops.modulated_deform_conv` (column buffer in chunks, one GEMM per chunk and
    group; on the CPU in float32 the same output as the other path to the bit). It computes in the dtype a conv
    of ``x`` would: under ``torch.autocast`` (e.g. bfloat16 on the CPU) the autocast dtype, else
    ``x``'s. Otherwise (``use_fused_op=False``, another kernel size, or ``vfnet._C`` not built: a
    warning says so once) it calls torchvision's ``deform_conv2d`` (float32 for bfloat16/float16
    CPU inputs, which torchvision cannot compute): the reference path. No compiled Detectron2 is
    needed either way.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        padding: Optional[int] = None,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = False,
        norm: Optional[nn.Module] = None,
        activation: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        use_fused_op: bool = True,
    ):
        """
        Args:
            in_channels, out_channels: channels of the input and the output.
            kernel_size: side of the square kernel.
            stride, dilation: as in ``nn.Conv2d``; the offset conv has the same.
            padding: default ``dilation * (kernel_size // 2)`` (the output keeps the size / stride).
            groups: groups of the main conv (ResNeXt); the offsets are shared by all of them.
            bias: whether the main conv has a bias.
            norm, activation: applied to the output, in that order, when given.
            use_fused_op: run :func:`vfnet.ops.modulated_deform_conv` (3x3 kernels) rather than
                torchvision's ``deform_conv2d``; an attribute that can be changed later.
        """
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"ModulatedDeformConv2d: {in_channels} input and {out_channels} output channels "
                f"are not divisible by groups={groups}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = dilation * (kernel_size // 2) if padding is None else padding
        self.dilation = dilation
        self.groups = groups
        self.use_fused_op = use_fused_op
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.conv_offset = nn.Conv2d(
            in_channels,
            3 * kernel_size * kernel_size,
            kernel_size=kernel_size,
            stride=stride,
            padding=self.padding,
            dilation=dilation,
            bias=True,
        )
        self.norm = norm
        self.activation = activation
        _reset_deform_weight(self.weight, in_channels)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C_in, H, W) -> (N, C_out, H_out, W_out), H_out = (H + 2p - d(k-1) - 1) // s + 1."""
        offset_and_mask = self.conv_offset(x)
        num_offsets = 2 * self.kernel_size * self.kernel_size
        if self.use_fused_op and self.kernel_size == 3 and HAS_C_EXTENSION:
            # The op reads offset and mask of any dtype (positions in float32).
            dtype = _autocast_dtype(x)
            bias = None if self.bias is None else self.bias.to(dtype)
            x = modulated_deform_conv(
                x.to(dtype),
                offset_and_mask[:, :num_offsets],
                offset_and_mask[:, num_offsets:].sigmoid(),
                self.weight.to(dtype),
                bias,
                stride=self.stride,
                padding=self.padding,
                dilation=self.dilation,
            )
        else:
            dtype = _deform_conv_dtype(offset_and_mask)
            offset = offset_and_mask[:, :num_offsets].to(dtype)
            mask = offset_and_mask[:, num_offsets:].sigmoid().to(dtype)
            bias = None if self.bias is None else self.bias.to(dtype)
            x = deform_conv2d(
                x.to(dtype),
                offset,
                self.weight.to(dtype),
                bias,
                stride=self.stride,
                padding=self.padding,
                dilation=self.dilation,
                mask=mask,
            )
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, bias={self.bias is not None}, "
            f"use_fused_op={self.use_fused_op}"
        )


class FrozenStatsBatchNorm2d(FrozenBatchNorm2d):
    """
    Batch norm with frozen statistics and a trainable affine transform: MMDetection's backbone
    BN (``norm_cfg=dict(type='BN', requires_grad=True)``, ``norm_eval=True``), with which the
    reference trains its ResNets. It always normalises with ``running_mean``/``running_var``
    (buffers, never updated), and ``weight``/``bias`` are parameters. Detectron2's ``FrozenBN``
    freezes both; its state-dict keys are the same, so checkpoints load either way.

    In a frozen stage (``ResNet(freeze_at=...)``) its parameters stop training like every other.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__(num_features, eps)
        weight, bias = self.weight, self.bias
        del self.weight, self.bias  # buffers in FrozenBatchNorm2d
        self.weight = nn.Parameter(weight.clone())
        self.bias = nn.Parameter(bias.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One fused op each way (its backward gives the affine's gradients too), where
        # FrozenBatchNorm2d, whose affine has no gradient, multiplies and adds with autograd
        # whenever x needs a gradient.
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, training=False, eps=self.eps
        )

    def __repr__(self) -> str:
        return f"FrozenStatsBatchNorm2d(num_features={self.num_features}, eps={self.eps})"


#: Norm names this package adds to Detectron2's (``get_norm``'s "BN", "FrozenBN", "GN", ...).
_OWN_NORMS = {"FrozenStatsBN": FrozenStatsBatchNorm2d}


def resolve_norm(norm):
    """
    ``norm`` as :func:`detectron2.layers.get_norm` takes it: this package's names
    ("FrozenStatsBN": :class:`FrozenStatsBatchNorm2d`) become their class, anything else (a
    Detectron2 name, "", None, a callable) is returned as it is.
    """
    if isinstance(norm, str) and norm in _OWN_NORMS:
        return _OWN_NORMS[norm]
    return norm


def disable_fused_deformable_convs(module: nn.Module) -> int:
    """
    Make every deformable conv inside ``module`` that has a fused path (a ``use_fused_op``
    attribute: :class:`StarDeformConv2d`, :class:`ModulatedDeformConv2d`, RepPoints'
    ``DeformConv2d``; the head's, the DCNv2 backbone's and neck's) take its torchvision path.
    Returns how many it found.
    """
    count = 0
    for m in module.modules():
        if isinstance(getattr(m, "use_fused_op", None), bool):
            m.use_fused_op = False
            count += 1
    return count
