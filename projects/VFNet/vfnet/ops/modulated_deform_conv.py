"""Modulated deformable convolution (DCNv2), fused: columns in chunks, one GEMM per chunk and group.

For each output position (oy, ox) the 3x3 kernel's tap k = 3 * i + j samples ``x`` bilinearly
(zero outside the map) at

    Y = oy * stride_h - pad_h + i * dilation_h + offset[:, 2 * k]
    X = ox * stride_w - pad_w + j * dilation_w + offset[:, 2 * k + 1]

multiplies the sample by ``mask[:, k]``, and the output is the usual sum over the channels of the
weight group and the taps with ``weight`` (O, C / groups, 3, 3), plus ``bias``: torchvision's
``deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask)`` with one offset group
(:func:`modulated_deform_conv_reference`), and mmcv's ``ModulatedDeformConv2d``. The kernels of
``vfnet._C`` (``torch.ops.vfnet.modulated_deform_conv`` and ``modulated_deform_conv_backward``)
are those of the star-shaped conv (:mod:`vfnet.ops.star_deform_conv`, ``csrc/deform_columns.h``)
with positions read from ``offset``: they never build the (C * 9, Ho * Wo) column matrix of a
whole image, but sample the columns of a few hundred positions at a time and multiply them by
the weight as they go.

On the CPU in float32 and float64 the output is torchvision's bit for bit (same sampling
arithmetic, same GEMM per column and group); bfloat16 inputs are sampled in float32 and multiplied
in bfloat16 with float32 accumulation, float16 inputs computed in float32. ``offset`` and ``mask``
may have any floating dtype: they are read in float32 (float64 for float64 ``x``) and their
gradients have their dtypes. On CUDA the kernels follow the same formulas (float32 accumulation for
float16/bfloat16) and match torchvision within rounding, not bit for bit; the backward sums
``grad_x`` with atomics, so it is not deterministic: under ``torch.use_deterministic_algorithms(True)``
it raises. ``grad_weight`` is summed over the chunks in float32 for every input dtype.

Gradients flow to ``x``, ``offset``, ``mask``, ``weight`` and ``bias`` (first order only). As in
torchvision, the gradient with respect to a sampling position is that of the bilinear
interpolation (one-sided at integer positions) and zero where the sample is outside the map.

Supported: 3x3 kernels, one offset group (``offset`` with 18 channels), any weight groups, stride
>= 1, padding >= 0, dilation >= 1; anything else raises a ``RuntimeError`` that names it.

This module registers the ops' fake (meta) kernels for ``torch.compile`` / ``torch.export`` and
their autograd formula. It must not import detectron2.
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ._checks import check_bias, check_device_of_x, check_dtype_of_x, check_features, check_grad_out
from ._extension import HAS_C_EXTENSION, use_fused_kernels

__all__ = ["modulated_deform_conv", "modulated_deform_conv_reference"]

_OP = "vfnet::modulated_deform_conv"
_BACKWARD_OP = "vfnet::modulated_deform_conv_backward"

IntPair = Union[int, Sequence[int]]


def _pair(value: IntPair, name: str) -> List[int]:
    if isinstance(value, int):
        return [value, value]
    values = [int(v) for v in value]
    if len(values) != 2:
        raise RuntimeError(f"{_OP}: expected {name} as an int or two values (h, w), but got {list(value)}")
    return values


def _check_pair(values: Sequence[int], name: str, least: int, op: str) -> None:
    if len(values) != 2:
        raise RuntimeError(f"{op}: expected {name} as two values (h, w), but got {len(values)} values {list(values)}")
    if values[0] < least or values[1] < least:
        raise RuntimeError(f"{op}: expected {name} values >= {least}, but got {list(values)}")


def _check_inputs(
    x: Tensor,
    offset: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    op: str = _OP,
) -> Tuple[int, int]:
    """Same conditions and messages as check_modulated_deform_conv_inputs in csrc/vfnet_ops.cpp;
    returns the output size (Ho, Wo)."""
    check_features(op, x)
    if weight.dim() != 4:
        raise RuntimeError(
            f"{op}: expected weight of shape (O, C / groups, 3, 3), but got a {weight.dim()}-D tensor of "
            f"shape {list(weight.shape)}"
        )
    if weight.shape[2] != 3 or weight.shape[3] != 3:
        raise RuntimeError(
            f"{op}: only 3x3 kernels are supported, but got weight of shape {list(weight.shape)} (a "
            f"{weight.shape[2]}x{weight.shape[3]} kernel)"
        )
    n, c, h, w = x.shape
    o, c_per_group = weight.shape[0], weight.shape[1]
    if c_per_group == 0 or c % c_per_group or o % (c // c_per_group):
        raise RuntimeError(
            f"{op}: expected weight of shape (O, C / groups, 3, 3) with groups dividing both C = {c} and "
            f"O, but got weight of shape {list(weight.shape)} for x of shape {list(x.shape)}"
        )
    check_dtype_of_x(op, "weight", weight, x)
    check_device_of_x(op, "weight", weight, x)
    _check_pair(stride, "stride", 1, op)
    _check_pair(padding, "padding", 0, op)
    _check_pair(dilation, "dilation", 1, op)
    span_h = h + 2 * padding[0] - (2 * dilation[0] + 1)
    span_w = w + 2 * padding[1] - (2 * dilation[1] + 1)
    if span_h < 0 or span_w < 0:
        raise RuntimeError(
            f"{op}: the output would be empty: x of shape {list(x.shape)} is smaller than the 3x3 kernel "
            f"with padding {list(padding)} and dilation {list(dilation)}"
        )
    ho, wo = span_h // stride[0] + 1, span_w // stride[1] + 1
    if offset.dim() != 4 or offset.shape[1] == 0 or offset.shape[1] % 18:
        raise RuntimeError(
            f"{op}: expected offset of shape (N, 18, Ho, Wo) ((dy, dx) of each of the 9 taps), but got "
            f"{list(offset.shape)}"
        )
    if offset.shape[1] != 18:
        raise RuntimeError(
            f"{op}: only one offset group is supported (offset with 18 channels), but got offset with "
            f"{offset.shape[1]} channels ({offset.shape[1] // 18} offset groups)"
        )
    if not offset.is_floating_point():
        raise RuntimeError(f"{op}: expected a floating-point offset, but got dtype {offset.dtype}")
    if offset.shape[0] != n or offset.shape[2] != ho or offset.shape[3] != wo:
        raise RuntimeError(
            f"{op}: expected offset of shape ({n}, 18, {ho}, {wo}) (the output grid of x of shape "
            f"{list(x.shape)} with stride {list(stride)}, padding {list(padding)}, dilation "
            f"{list(dilation)}), but got {list(offset.shape)}"
        )
    if mask.dim() != 4 or tuple(mask.shape) != (n, 9, ho, wo):
        raise RuntimeError(
            f"{op}: expected mask of shape ({n}, 9, {ho}, {wo}) (one value per tap and output position), "
            f"but got {list(mask.shape)}"
        )
    if not mask.is_floating_point():
        raise RuntimeError(f"{op}: expected a floating-point mask, but got dtype {mask.dtype}")
    check_device_of_x(op, "offset", offset, x)
    check_device_of_x(op, "mask", mask, x)
    check_bias(op, bias, weight, x)
    return ho, wo


def modulated_deform_conv_reference(
    x: Tensor,
    offset: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    stride: IntPair = 1,
    padding: IntPair = 1,
    dilation: IntPair = 1,
) -> Tensor:
    """
    Pure-PyTorch :func:`modulated_deform_conv`: torchvision's ``deform_conv2d`` (the reference of
    the tests, and the fallback where ``vfnet._C`` has no kernels), with the same input checks.

    ``offset`` and ``mask`` are cast to the dtype of the computation; torchvision has no
    float16/bfloat16 CPU kernel, so such inputs are computed in float32 on the CPU. The result has
    ``x``'s dtype.
    """
    from torchvision.ops import deform_conv2d

    stride, padding, dilation = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    _check_inputs(x, offset, mask, weight, bias, stride, padding, dilation)
    compute_dtype = x.dtype
    if x.device.type == "cpu" and x.dtype in (torch.float16, torch.bfloat16):
        compute_dtype = torch.float32
    out = deform_conv2d(
        x.to(compute_dtype),
        offset.to(compute_dtype),
        weight.to(compute_dtype),
        None if bias is None else bias.to(compute_dtype),
        stride=tuple(stride),
        padding=tuple(padding),
        dilation=tuple(dilation),
        mask=mask.to(compute_dtype),
    )
    return out.to(x.dtype)


def modulated_deform_conv(
    x: Tensor,
    offset: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    stride: IntPair = 1,
    padding: IntPair = 1,
    dilation: IntPair = 1,
) -> Tensor:
    """
    Modulated deformable 3x3 convolution (DCNv2) with torchvision's layout and semantics.

    Args:
        x: (N, C, H, W) features; float32, float64, float16 or bfloat16; on a device ``vfnet._C``
            has kernels for (CPU; CUDA when built with CUDA for this GPU), else the pure-PyTorch
            :func:`modulated_deform_conv_reference` runs (one warning per device type). Any strides.
        offset: (N, 18, Ho, Wo): (dy, dx) of each tap, taps row-major over the 3x3 kernel (one
            offset group), in input pixels; any floating dtype. Positions may fall outside the map
            (those samples read zeros).
        mask: (N, 9, Ho, Wo) modulation of each tap; any floating dtype.
        weight: (O, C / groups, 3, 3) of ``x``'s dtype; groups = C / weight.shape[1] (as in
            torchvision), dividing O.
        bias: optional (O,) of ``x``'s dtype.
        stride, padding, dilation: an int or (h, w); stride >= 1, padding >= 0, dilation >= 1.
            Ho = (H + 2 * pad_h - 2 * dilation_h - 1) // stride_h + 1 (Wo alike), at least 1.

    Returns:
        (N, O, Ho, Wo) of ``x``'s dtype, contiguous: torchvision's
        ``deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask)``.

    Differentiable (first order) with respect to ``x``, ``offset``, ``mask``, ``weight`` and ``bias``.

    Raises:
        RuntimeError: on other kernel sizes, several offset groups, and shapes, dtypes or devices
            that do not fit together (the message names the argument).
    """
    stride, padding, dilation = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    if use_fused_kernels(x.device):
        return torch.ops.vfnet.modulated_deform_conv(x, offset, mask, weight, bias, stride, padding, dilation)
    return modulated_deform_conv_reference(x, offset, mask, weight, bias, stride, padding, dilation)


if HAS_C_EXTENSION:

    @torch.library.register_fake(_OP)
    def _modulated_deform_conv_fake(x, offset, mask, weight, bias, stride, padding, dilation):
        ho, wo = _check_inputs(x, offset, mask, weight, bias, stride, padding, dilation)
        return x.new_empty((x.shape[0], weight.shape[0], ho, wo))

    @torch.library.register_fake(_BACKWARD_OP)
    def _modulated_deform_conv_backward_fake(grad_out, x, offset, mask, weight, stride, padding, dilation):
        ho, wo = _check_inputs(x, offset, mask, weight, None, stride, padding, dilation, _BACKWARD_OP)
        n, o = x.shape[0], weight.shape[0]
        check_grad_out(_BACKWARD_OP, grad_out, x, (n, o, ho, wo))
        return (
            x.new_empty(x.shape),
            offset.new_empty(offset.shape),
            mask.new_empty(mask.shape),
            weight.new_empty(weight.shape),
            x.new_empty((o,)),
        )

    def _setup_context(ctx, inputs, output):
        x, offset, mask, weight, bias, stride, padding, dilation = inputs
        ctx.save_for_backward(x, offset, mask, weight)
        ctx.has_bias = bias is not None
        ctx.geometry = (stride, padding, dilation)

    def _modulated_deform_conv_grad(ctx, grad_out):
        x, offset, mask, weight = ctx.saved_tensors
        grad_x, grad_offset, grad_mask, grad_weight, grad_bias = torch.ops.vfnet.modulated_deform_conv_backward(
            grad_out, x, offset, mask, weight, *ctx.geometry
        )
        return grad_x, grad_offset, grad_mask, grad_weight, grad_bias if ctx.has_bias else None, None, None, None

    torch.library.register_autograd(_OP, _modulated_deform_conv_grad, setup_context=_setup_context)
