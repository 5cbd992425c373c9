"""The Varifocal Loss as one fused kernel each way.

With p = sigmoid(logits) and q the targets:

- where q > 0: ``w * bce(logits, q)``, w = q (``iou_weighted``) or 1;
- where q <= 0: ``alpha * |p - q|**gamma * bce(logits, q)``;

the formula of :func:`vfnet.losses.varifocal_loss` (the eager reference, which builds half a dozen
temporaries of the input's size). The kernels of ``vfnet._C``
(``torch.ops.vfnet.varifocal_loss`` / ``varifocal_loss_backward``) read the logits and targets
once in each direction and write only the output (reduction "none"), or a scalar, and the
gradient. Elements are computed in float32 (float64 for float64 inputs; float16/bfloat16 inputs
are read as float32), sums accumulated in float64 in fixed blocks (CPU) or in a fixed tree (CUDA),
so results do not depend on the number of threads.

Gradient: with respect to the logits only, including the derivative of the negatives' focal
weight ``|p - q|**gamma``; the positives' weight q is a target, not a function of the logits. The
targets get no gradient (they are IoUs computed from detached boxes in VFNet); pass detached
targets.

Why a kernel rather than ``torch.compile`` of the eager loss: on the CPU the kernel is 7-14x
faster forward + backward at COCO sizes (2 x 20000 x 80, 8 x 21000 x 80), with the same peak
memory, and needs no compilation (the compiled loss's first call takes 12-18 s, ~3 s with a
filled inductor cache); ``tools/benchmark_ops.py --op vfl`` measures all three. (Inductor's
vectorised ``log1p``, which the stable BCE needs, is what the compiled loss spends its time on.)

This module registers the ops' fake (meta) kernels and autograd formula.
"""
import torch
from torch import Tensor

from ._extension import HAS_C_EXTENSION, use_fused_kernels

__all__ = ["fused_varifocal_loss"]

#: reduction name -> the op's ``int reduction`` (torch's own enum: none 0, mean 1, sum 2).
REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}


def _check(logits: Tensor, targets: Tensor, gamma: float, reduction: int, op: str) -> None:
    # Same conditions as check_varifocal_loss_inputs in csrc/vfnet_ops.cpp.
    if logits.shape != targets.shape:
        raise RuntimeError(
            f"{op}: expected logits and targets of the same shape, but got {list(logits.shape)} and "
            f"{list(targets.shape)}"
        )
    if not logits.is_floating_point():
        raise RuntimeError(f"{op}: expected floating-point logits, but got dtype {logits.dtype}")
    if targets.dtype != logits.dtype:
        raise RuntimeError(
            f"{op}: expected targets of the same dtype as logits ({logits.dtype}), but got {targets.dtype}"
        )
    if targets.device != logits.device:
        raise RuntimeError(
            f"{op}: expected logits and targets on the same device, but got logits on "
            f"{logits.device} and targets on {targets.device}"
        )
    if gamma < 0:
        raise RuntimeError(f"{op}: expected gamma >= 0, but got {gamma}")
    if reduction not in (0, 1, 2):
        raise RuntimeError(f"{op}: expected reduction 0 (none), 1 (mean) or 2 (sum), but got {reduction}")


def fused_varifocal_loss(
    logits: Tensor,
    targets: Tensor,
    alpha: float = 0.75,
    gamma: float = 2.0,
    iou_weighted: bool = True,
    reduction: str = "sum",
) -> Tensor:
    """
    Varifocal Loss, fused: same arguments and result as :func:`vfnet.losses.varifocal_loss`.

    Args:
        logits: float tensor of any shape (float32, float64, float16, bfloat16); on a device
            without kernels in ``vfnet._C`` the eager function runs (one warning per device type).
        targets: same shape, IoU-aware targets in [0, 1]; converted to ``logits``' dtype. Gets no
            gradient.
        alpha: weight of the negatives.
        gamma: focusing exponent of the negatives (>= 0).
        iou_weighted: weight positives by their target q (True) or by 1.
        reduction: "none" | "mean" | "sum" ("mean" divides by the number of elements; 0 for none).

    Returns:
        The loss, of ``logits``' shape and dtype for "none", else a 0-d tensor of its dtype.

    Raises:
        ValueError: if the shapes differ or ``reduction`` is unknown (as the eager function).
    """
    if logits.shape != targets.shape:
        raise ValueError(
            f"varifocal_loss: logits {tuple(logits.shape)} and targets {tuple(targets.shape)} "
            "must have the same shape"
        )
    if reduction not in REDUCTIONS:
        raise ValueError(f"varifocal_loss: unknown reduction {reduction!r}; use 'none', 'mean' or 'sum'")
    if not use_fused_kernels(logits.device):
        from ..losses import varifocal_loss as eager_varifocal_loss

        return eager_varifocal_loss(logits, targets, alpha, gamma, iou_weighted, reduction)
    return torch.ops.vfnet.varifocal_loss(
        logits, targets.to(logits.dtype), float(alpha), float(gamma), bool(iou_weighted), REDUCTIONS[reduction]
    )


if HAS_C_EXTENSION:

    @torch.library.register_fake("vfnet::varifocal_loss")
    def _varifocal_loss_fake(logits, targets, alpha, gamma, iou_weighted, reduction):
        _check(logits, targets, gamma, reduction, "vfnet::varifocal_loss")
        if reduction == REDUCTIONS["none"]:
            return logits.new_empty(logits.shape)
        return logits.new_empty(())

    @torch.library.register_fake("vfnet::varifocal_loss_backward")
    def _varifocal_loss_backward_fake(grad, logits, targets, alpha, gamma, iou_weighted, reduction):
        op = "vfnet::varifocal_loss_backward"
        _check(logits, targets, gamma, reduction, op)
        expected = tuple(logits.shape) if reduction == REDUCTIONS["none"] else ()
        if tuple(grad.shape) != expected:
            raise RuntimeError(f"{op}: expected grad of shape {list(expected)}, but got {list(grad.shape)}")
        return logits.new_empty(logits.shape)

    def _setup_context(ctx, inputs, output):
        logits, targets, alpha, gamma, iou_weighted, reduction = inputs
        ctx.save_for_backward(logits, targets)
        ctx.params = (alpha, gamma, iou_weighted, reduction)

    def _varifocal_loss_grad(ctx, grad):
        logits, targets = ctx.saved_tensors
        grad_logits = torch.ops.vfnet.varifocal_loss_backward(grad, logits, targets, *ctx.params)
        return grad_logits, None, None, None, None, None

    torch.library.register_autograd(
        "vfnet::varifocal_loss", _varifocal_loss_grad, setup_context=_setup_context
    )
