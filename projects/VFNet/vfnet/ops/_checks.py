"""
The argument checks the deformable-conv ops (:mod:`.star_deform_conv`,
:mod:`.modulated_deform_conv`) share in Python (their fake kernels and pure-PyTorch paths), with
the messages of their C++ twins in csrc/vfnet_ops.cpp. Each raises a ``RuntimeError`` that names
the op and the argument.
"""
from typing import Optional, Sequence

from torch import Tensor


def check_features(op: str, x: Tensor) -> None:
    """``x`` must be a floating-point (N, C, H, W) tensor."""
    if x.dim() != 4:
        raise RuntimeError(
            f"{op}: expected x of shape (N, C, H, W), but got a {x.dim()}-D tensor of shape {list(x.shape)}"
        )
    if not x.is_floating_point():
        raise RuntimeError(f"{op}: expected a floating-point x, but got dtype {x.dtype}")


def check_dtype_of_x(op: str, name: str, t: Tensor, x: Tensor) -> None:
    """``t`` (called ``name``) must have ``x``'s dtype."""
    if t.dtype != x.dtype:
        raise RuntimeError(f"{op}: expected {name} of the same dtype as x ({x.dtype}), but got {t.dtype}")


def check_device_of_x(op: str, name: str, t: Tensor, x: Tensor) -> None:
    """``t`` (called ``name``) must be on ``x``'s device."""
    if t.device != x.device:
        raise RuntimeError(
            f"{op}: expected x and {name} on the same device, but got x on {x.device} and {name} on {t.device}"
        )


def check_bias(op: str, bias: Optional[Tensor], weight: Tensor, x: Tensor) -> None:
    """An optional bias must be (O,) for the (O, ...) ``weight``, of ``x``'s dtype and device."""
    if bias is None:
        return
    if bias.dim() != 1 or bias.shape[0] != weight.shape[0]:
        raise RuntimeError(
            f"{op}: expected bias of shape ({weight.shape[0]},) for weight of shape {list(weight.shape)}, but got "
            f"{list(bias.shape)}"
        )
    check_dtype_of_x(op, "bias", bias, x)
    check_device_of_x(op, "bias", bias, x)


def check_grad_out(op: str, grad_out: Tensor, x: Tensor, shape: Sequence[int]) -> None:
    """The gradient of a backward op must have the forward output's ``shape`` and ``x``'s dtype."""
    if tuple(grad_out.shape) != tuple(shape):
        raise RuntimeError(
            f"{op}: expected grad_out of shape ({', '.join(str(s) for s in shape)}), but got {list(grad_out.shape)}"
        )
    check_dtype_of_x(op, "grad_out", grad_out, x)
