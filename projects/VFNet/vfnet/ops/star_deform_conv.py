"""VFNet's star-shaped deformable convolution, computed straight from the boxes.

For each location (y, x) of a feature map with a box given by its side distances (l, t, r, b) (in
feature-map cells), the 3x3 kernel's nine taps sample the box's "star" points

    (y - t, x - l)   (y - t, x)   (y - t, x + r)
    (y,     x - l)   (y,     x)   (y,     x + r)
    (y + b, x - l)   (y + b, x)   (y + b, x + r)

bilinearly (zero outside the map), and the output is the usual sum over channels and taps with
``weight`` (O, C, 3, 3), plus ``bias``. :func:`star_deform_conv` equals
``torchvision.ops.deform_conv2d(x, star_offsets(ltrb), weight, bias, padding=1)``
(:func:`star_deform_conv_reference`) within float rounding, but builds neither the (N, 18, H, W)
offsets nor torchvision's (C * 9, H * W) column buffer of a whole image.

On the CPU (``csrc/cpu/sampled_conv.h``) the nine samples of each position are written into a
channels-last (N, 9 * C, H, W) tensor S (channel k * C + c holds tap k of channel c), band of rows
by band of rows (12 MiB at most), and the op is ATen's 1x1 convolution of S with the weight as
(O, 9 * C, 1, 1), which runs oneDNN's channels-last GEMM kernels in the forward and both
gradients: forward + backward costs 1.4-1.6x a plain 3x3 convolution of the same shape (P3, 2
threads). The samples are torchvision's formula term by term; the sums over (channel, tap) are
oneDNN's, so float32 results differ from torchvision's by float rounding (~1e-6 relative), float64
by ~1e-15. bfloat16 inputs (CPU autocast) are sampled in float32 and S is stored in bfloat16, so
that the 1x1 convolutions run oneDNN's bfloat16 kernels (float32 sums, as a bfloat16 conv; twice
as fast as float32 where the CPU has bfloat16 dot products); ``grad_x`` and the positions'
gradients are summed in float32, and ``grad_weight`` is taken tap by tap over the whole batch
(each element one float32 sum, rounded once). float16 inputs are computed in float32 and rounded
once. The CPU backward is deterministic. On CUDA the kernels sample a column matrix chunk by chunk
and multiply it by the weight with cuBLAS (float32 accumulation for float16/bfloat16); the
backward sums ``grad_x`` with atomics, so it is not deterministic: under
``torch.use_deterministic_algorithms(True)`` it raises. ``grad_weight`` is summed over bands /
chunks in float32 for the other dtypes.

Gradients flow to ``x``, ``ltrb``, ``weight`` and ``bias`` (first order only). As in torchvision,
the gradient with respect to a sampling position is that of the bilinear interpolation (one-sided
at integer positions) and zero where the sample is outside the map.

This module registers the ops' fake (meta) kernels for ``torch.compile`` / ``torch.export`` and
their autograd formula.
"""
from typing import Optional

import torch
from torch import Tensor

from torch._prims_common import suggest_memory_format

from ._checks import check_bias, check_device_of_x, check_dtype_of_x, check_features, check_grad_out
from ._extension import HAS_C_EXTENSION, use_fused_kernels
from .star_offsets import star_offsets

__all__ = ["star_deform_conv", "star_deform_conv_reference"]

_OP = "vfnet::star_deform_conv"


def _check_inputs(x: Tensor, ltrb: Tensor, weight: Tensor, bias: Optional[Tensor], op: str = _OP) -> None:
    # Same conditions and messages as check_star_deform_conv_inputs in csrc/vfnet_ops.cpp.
    check_features(op, x)
    if ltrb.dim() != 4:
        raise RuntimeError(
            f"{op}: expected ltrb of shape (N, 4, H, W) (l, t, r, b), but got a {ltrb.dim()}-D tensor "
            f"of shape {list(ltrb.shape)}"
        )
    if ltrb.shape[1] != 4:
        raise RuntimeError(
            f"{op}: expected ltrb to have 4 channels in dim 1 (l, t, r, b), but got {ltrb.shape[1]} "
            f"channels (shape {list(ltrb.shape)})"
        )
    if not ltrb.is_floating_point():
        raise RuntimeError(f"{op}: expected a floating-point ltrb, but got dtype {ltrb.dtype}")
    n, c, h, w = x.shape
    if ltrb.shape[0] != n or ltrb.shape[2] != h or ltrb.shape[3] != w:
        raise RuntimeError(
            f"{op}: expected ltrb of shape ({n}, 4, {h}, {w}) to match x of shape {list(x.shape)}, "
            f"but got {list(ltrb.shape)}"
        )
    if weight.dim() != 4 or weight.shape[1] != c or weight.shape[2] != 3 or weight.shape[3] != 3:
        raise RuntimeError(
            f"{op}: expected weight of shape (O, {c}, 3, 3) for x with {c} channels, but got "
            f"{list(weight.shape)}"
        )
    check_dtype_of_x(op, "weight", weight, x)
    check_device_of_x(op, "ltrb", ltrb, x)
    check_device_of_x(op, "weight", weight, x)
    check_bias(op, bias, weight, x)


def star_deform_conv_reference(
    x: Tensor, ltrb: Tensor, weight: Tensor, bias: Optional[Tensor] = None
) -> Tensor:
    """
    Pure-PyTorch :func:`star_deform_conv`: :func:`star_offsets` then
    ``torchvision.ops.deform_conv2d(..., padding=1)`` (the reference of the tests, and the
    fallback where ``vfnet._C`` has no kernels).

    The sampling positions are computed in float32 (float64 for float64 ``x``) from ``ltrb``;
    torchvision has no float16/bfloat16 CPU kernel, so such inputs are computed in float32 on the
    CPU. The result has ``x``'s dtype.
    """
    from torchvision.ops import deform_conv2d

    _check_inputs(x, ltrb, weight, bias)
    position_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    compute_dtype = x.dtype
    if x.device.type == "cpu" and x.dtype in (torch.float16, torch.bfloat16):
        compute_dtype = torch.float32
    offset = star_offsets(ltrb.to(position_dtype)).to(compute_dtype)
    out = deform_conv2d(
        x.to(compute_dtype),
        offset,
        weight.to(compute_dtype),
        None if bias is None else bias.to(compute_dtype),
        padding=1,
    )
    return out.to(x.dtype)


def star_deform_conv(x: Tensor, ltrb: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """
    3x3 deformable convolution sampling the star points of boxes ``ltrb``.

    Args:
        x: (N, C, H, W) features; float32, float64, float16 or bfloat16; on a device
            ``vfnet._C`` has kernels for (CPU; CUDA when built with CUDA for this GPU), else the
            pure-PyTorch :func:`star_deform_conv_reference` runs (one warning per device type).
            Any strides.
        ltrb: (N, 4, H, W) box side distances (l, t, r, b) from each location, in feature-map
            cells; any floating dtype (the positions are computed in float32, float64 for float64
            ``x``); may reach beyond the map (those samples read zeros).
        weight: (O, C, 3, 3) of ``x``'s dtype.
        bias: optional (O,) of ``x``'s dtype.

    Returns:
        (N, O, H, W) of ``x``'s dtype, contiguous: torchvision's
        ``deform_conv2d(x, star_offsets(ltrb), weight, bias, padding=1)``.

    Differentiable (first order) with respect to ``x``, ``ltrb``, ``weight`` and ``bias``.

    Raises:
        RuntimeError: on shapes, dtypes or devices that do not fit together (the message names
            the argument).
    """
    if use_fused_kernels(x.device):
        return torch.ops.vfnet.star_deform_conv(x, ltrb, weight, bias)
    return star_deform_conv_reference(x, ltrb, weight, bias)


if HAS_C_EXTENSION:

    @torch.library.register_fake("vfnet::star_deform_conv")
    def _star_deform_conv_fake(x, ltrb, weight, bias):
        _check_inputs(x, ltrb, weight, bias)
        n, _, h, w = x.shape
        # The kernels return the output (and grad_x) in x's memory format.
        return torch.empty(
            (n, weight.shape[0], h, w), dtype=x.dtype, device=x.device, memory_format=suggest_memory_format(x)
        )

    @torch.library.register_fake("vfnet::star_deform_conv_backward")
    def _star_deform_conv_backward_fake(grad_out, x, ltrb, weight):
        op = "vfnet::star_deform_conv_backward"
        _check_inputs(x, ltrb, weight, None, op)
        n, _, h, w = x.shape
        o = weight.shape[0]
        check_grad_out(op, grad_out, x, (n, o, h, w))
        return (
            torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=suggest_memory_format(x)),
            ltrb.new_empty(ltrb.shape),
            weight.new_empty(weight.shape),
            x.new_empty((o,)),
        )

    def _setup_context(ctx, inputs, output):
        x, ltrb, weight, bias = inputs
        ctx.save_for_backward(x, ltrb, weight)
        ctx.has_bias = bias is not None

    def _star_deform_conv_grad(ctx, grad_out):
        x, ltrb, weight = ctx.saved_tensors
        grad_x, grad_ltrb, grad_weight, grad_bias = torch.ops.vfnet.star_deform_conv_backward(
            grad_out, x, ltrb, weight
        )
        return grad_x, grad_ltrb, grad_weight, grad_bias if ctx.has_bias else None

    torch.library.register_autograd(
        "vfnet::star_deform_conv", _star_deform_conv_grad, setup_context=_setup_context
    )
