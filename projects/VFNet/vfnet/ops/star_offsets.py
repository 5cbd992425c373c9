"""Offsets that make a 3x3 deformable convolution sample a box's "star" points.

VFNet's star-shaped deformable convolution (VarifocalNet, Zhang et al., CVPR 2021) samples, for
each feature-map location (y, x) with a predicted box given by its side distances (l, t, r, b),
the nine points

    (y - t, x - l)   (y - t, x)   (y - t, x + r)
    (y,     x - l)   (y,     x)   (y,     x + r)
    (y + b, x - l)   (y + b, x)   (y + b, x + r)

(rows, columns in feature-map cells). :func:`star_offsets` returns the offsets that a standard
3x3 deformable convolution with stride 1, padding 1 and dilation 1 needs to sample exactly these
points, in the layout of :func:`torchvision.ops.deform_conv2d`. It is plain PyTorch (a stack of
differences, which autograd and ``torch.compile`` handle as they are); the fused
:func:`vfnet.ops.star_deform_conv` never builds these offsets.
"""
import torch

__all__ = ["star_offsets"]


def _check_ltrb(ltrb: torch.Tensor) -> None:
    op = "star_offsets"
    if ltrb.dim() != 4:
        raise RuntimeError(
            f"{op}: expected ltrb of shape (N, 4, H, W) (l, t, r, b), but got a {ltrb.dim()}-D "
            f"tensor of shape {list(ltrb.shape)}"
        )
    if ltrb.shape[1] != 4:
        raise RuntimeError(
            f"{op}: expected ltrb to have 4 channels in dim 1 (l, t, r, b), but got "
            f"{ltrb.shape[1]} channels (shape {list(ltrb.shape)})"
        )
    if not ltrb.is_floating_point():
        raise RuntimeError(f"{op}: expected a floating-point ltrb, but got dtype {ltrb.dtype}")


def star_offsets(ltrb: torch.Tensor) -> torch.Tensor:
    """Offsets of a 3x3 deformable convolution that sample the star points of boxes ``ltrb``.

    Args:
        ltrb: (N, 4, H, W) floating-point tensor of box side distances (l, t, r, b) from each
            location, in feature-map cells (i.e. pixels divided by the level's stride).

    Returns:
        (N, 18, H, W) contiguous tensor of ``ltrb``'s dtype and device. For kernel tap
        ``k = 3 * i + j`` (row-major, grid position ``(i - 1, j - 1)``) channel ``2k`` is
        ``dy = {1 - t, 0, b - 1}[i]`` and channel ``2k + 1`` is ``dx = {1 - l, 0, r - 1}[j]``:
        the star point minus the tap's regular position ``(y + i - 1, x + j - 1)``. Pass it as
        ``offset`` to ``torchvision.ops.deform_conv2d(x, offset, weight, padding=1)``.

    Raises:
        RuntimeError: if ``ltrb`` is not a floating-point (N, 4, H, W) tensor.
    """
    _check_ltrb(ltrb)
    l, t, r, b = ltrb.unbind(1)
    zero = torch.zeros_like(l)
    dy = (1 - t, zero, b - 1)
    dx = (1 - l, zero, r - 1)
    return torch.stack([d for i in range(3) for j in range(3) for d in (dy[i], dx[j])], dim=1)
