"""Offsets that make a 3x3 deformable convolution sample a box's "star" points.

VFNet's star-shaped deformable convolution (VarifocalNet, Zhang et al., CVPR 2021) samples, for
each feature-map location (y, x) with a predicted box given by its side distances (l, t, r, b),
the nine points

    (y - t, x - l)   (y - t, x)   (y - t, x + r)
    (y,     x - l)   (y,     x)   (y,     x + r)
    (y + b, x - l)   (y + b, x)   (y + b, x + r)

(rows, columns in feature-map cells). :func:`star_offsets` returns the offsets that a standard
3x3 deformable convolution with stride 1, padding 1 and dilation 1 needs to sample exactly these
points, in the layout of :func:`torchvision.ops.deform_conv2d`: for kernel tap ``k = 3 * i + j``
(row-major, grid position ``(i - 1, j - 1)``), channel ``2k`` is dy and ``2k + 1`` is dx, and the
offset is the target point minus the tap's regular position ``(y + i - 1, x + j - 1)``::

    dy = {1 - t, 0, b - 1}[i]        dx = {1 - l, 0, r - 1}[j]

The kernels live in the C++/CUDA extension ``vfnet._C`` (``torch.ops.vfnet.star_offsets`` and
``torch.ops.vfnet.star_offsets_backward``); this module registers their fake (meta) kernels for
``torch.compile`` / ``torch.export`` and their autograd formulas. When ``vfnet._C`` is missing,
one warning says so and :func:`star_offsets` uses :func:`star_offsets_reference` instead.
"""
import torch

from ._extension import HAS_C_EXTENSION

__all__ = ["HAS_C_EXTENSION", "star_offsets", "star_offsets_reference"]

NUM_TAPS = 9
NUM_OFFSET_CHANNELS = 2 * NUM_TAPS


def _check_nchw(x, op, arg, channels, meaning):
    # Same messages as the C++ checks in csrc/vfnet_ops.cpp.
    if x.dim() != 4:
        raise RuntimeError(
            f"{op}: expected {arg} of shape (N, {channels}, H, W) ({meaning}), but got a "
            f"{x.dim()}-D tensor of shape {list(x.shape)}"
        )
    if x.shape[1] != channels:
        raise RuntimeError(
            f"{op}: expected {arg} to have {channels} channels in dim 1 ({meaning}), but got "
            f"{x.shape[1]} channels (shape {list(x.shape)})"
        )
    if not x.is_floating_point():
        raise RuntimeError(f"{op}: expected a floating-point {arg}, but got dtype {x.dtype}")


def _check_ltrb(ltrb):
    _check_nchw(ltrb, "vfnet::star_offsets", "ltrb", 4, "l, t, r, b")


def _check_grad_offset(grad_offset):
    _check_nchw(
        grad_offset,
        "vfnet::star_offsets_backward",
        "grad_offset",
        NUM_OFFSET_CHANNELS,
        "dy, dx for each of the 9 taps",
    )


def star_offsets_reference(ltrb: torch.Tensor) -> torch.Tensor:
    """Pure-PyTorch :func:`star_offsets` (reference for tests, and fallback without ``vfnet._C``).

    Args:
        ltrb: (N, 4, H, W) floating-point tensor of box side distances (l, t, r, b) from each
            location, in feature-map cells (i.e. pixels divided by the level's stride).

    Returns:
        (N, 18, H, W) tensor of the same dtype and device: (dy, dx) for each of the 9 taps of a
        3x3 deformable convolution, in :func:`torchvision.ops.deform_conv2d` layout.
    """
    _check_ltrb(ltrb)
    l, t, r, b = ltrb.unbind(1)
    zero = torch.zeros_like(l)
    dy = (1 - t, zero, b - 1)
    dx = (1 - l, zero, r - 1)
    return torch.stack([d for i in range(3) for j in range(3) for d in (dy[i], dx[j])], dim=1)


def star_offsets(ltrb: torch.Tensor) -> torch.Tensor:
    """Offsets of a 3x3 deformable convolution that sample the star points of boxes ``ltrb``.

    Args:
        ltrb: (N, 4, H, W) floating-point tensor (float32, float64, float16 or bfloat16; any
            strides; CPU, or CUDA when ``vfnet._C`` was built with CUDA) of box side distances
            (l, t, r, b) from each location, in feature-map cells.

    Returns:
        (N, 18, H, W) contiguous tensor of the same dtype and device. For tap ``k = 3 * i + j``
        channel ``2k`` is ``dy = {1 - t, 0, b - 1}[i]`` and channel ``2k + 1`` is
        ``dx = {1 - l, 0, r - 1}[j]``. Pass it as ``offset`` to
        ``torchvision.ops.deform_conv2d(x, offset, weight, padding=1)`` (3x3 kernel, stride 1)
        to sample rows {y - t, y, y + b} x columns {x - l, x, x + r}.

    Differentiable with respect to ``ltrb`` (the gradient does not depend on ``ltrb``).

    Raises:
        RuntimeError: if ``ltrb`` is not a floating-point (N, 4, H, W) tensor.
    """
    if HAS_C_EXTENSION:
        return torch.ops.vfnet.star_offsets(ltrb)
    return star_offsets_reference(ltrb)


if HAS_C_EXTENSION:

    @torch.library.register_fake("vfnet::star_offsets")
    def _star_offsets_fake(ltrb):
        _check_ltrb(ltrb)
        n, _, h, w = ltrb.shape
        return ltrb.new_empty((n, NUM_OFFSET_CHANNELS, h, w))

    @torch.library.register_fake("vfnet::star_offsets_backward")
    def _star_offsets_backward_fake(grad_offset):
        _check_grad_offset(grad_offset)
        n, _, h, w = grad_offset.shape
        return grad_offset.new_empty((n, 4, h, w))

    def _star_offsets_grad(ctx, grad_offset):
        return torch.ops.vfnet.star_offsets_backward(grad_offset)

    def _star_offsets_backward_grad(ctx, grad_grad_ltrb):
        # star_offsets_backward is linear: it is the transpose of the linear part of star_offsets,
        # so its own backward is that linear part, star_offsets(g) - star_offsets(0).
        g = grad_grad_ltrb
        return torch.ops.vfnet.star_offsets(g) - torch.ops.vfnet.star_offsets(torch.zeros_like(g))

    torch.library.register_autograd(
        "vfnet::star_offsets", _star_offsets_grad, setup_context=lambda ctx, inputs, output: None
    )
    torch.library.register_autograd(
        "vfnet::star_offsets_backward",
        _star_offsets_backward_grad,
        setup_context=lambda ctx, inputs, output: None,
    )
