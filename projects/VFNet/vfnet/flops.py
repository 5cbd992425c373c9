"""
FLOP counts of VFNet's deformable convolutions for fvcore's ``FlopCountAnalysis``.

fvcore (and Detectron2's :class:`detectron2.utils.analysis.FlopCountAnalysis`, which
``tools/analyze_model.py`` uses) counts the ops it has a handle for and skips the others with an
"unsupported operator" warning. Without handles, the deformable convolutions of VFNet, the
largest cost of its head, would count as zero: the fused ``vfnet::star_deform_conv`` and
``vfnet::modulated_deform_conv`` and torchvision's ``torchvision::deform_conv2d`` (their
``fused_ops=False`` path, and the path of exported models).

Counting convention (fvcore's): one multiply-add is one flop. A deformable convolution costs the
multiply-adds of a plain convolution of the same shapes (``N * Ho * Wo * O * C/groups * kh * kw``)
plus the bilinear sampling of its columns: 4 multiply-adds for each of the ``N * C * kh * kw *
Ho * Wo`` sampled values (fvcore counts bilinear upsampling the same way, 4 per output value),
and 1 more each for the modulation mask of DCNv2. Building the star offsets from the boxes is
elementwise and not counted (fvcore ignores elementwise ops).

``import vfnet`` adds the handles to fvcore's defaults (:func:`register_flop_handles`), so every
``FlopCountAnalysis`` made afterwards (Detectron2's tools included) counts these ops (and every
``ActivationCountAnalysis`` their output elements, :data:`ACTIVATION_HANDLES`);
:data:`FLOP_HANDLES` can also be passed to ``FlopCountAnalysis.set_op_handle(**FLOP_HANDLES)``
or ``fvcore.nn.flop_count(..., supported_ops=FLOP_HANDLES)``. The Varifocal Loss
(``vfnet::varifocal_loss``) runs only in training and never appears in an inference count.
"""
import sys
from collections import Counter
from typing import Any, Dict, List, Sequence

from fvcore.nn.jit_handles import generic_activation_jit, get_shape

__all__ = ["FLOP_HANDLES", "ACTIVATION_HANDLES", "deform_conv_flops", "register_flop_handles"]

#: Multiply-adds per bilinearly sampled value (4 neighbours), as fvcore counts bilinear upsampling.
BILINEAR_MACS = 4


def deform_conv_flops(
    x_shape: Sequence[int], weight_shape: Sequence[int], out_shape: Sequence[int], modulated: bool
) -> int:
    """
    Multiply-adds of a deformable convolution.

    Args:
        x_shape: input (N, C, H, W).
        weight_shape: weight (O, C / groups, kh, kw).
        out_shape: output (N, O, Ho, Wo).
        modulated: whether each sampled value is also multiplied by a mask (DCNv2).
    Returns:
        ``N*Ho*Wo*O*(C/groups)*kh*kw`` (the convolution) + ``N*C*kh*kw*Ho*Wo * (4 + modulated)``
        (the sampling).
    """
    n, c = x_shape[0], x_shape[1]
    o, c_per_group, kh, kw = weight_shape
    ho, wo = out_shape[2], out_shape[3]
    conv = n * ho * wo * o * c_per_group * kh * kw
    sampling = n * c * kh * kw * ho * wo * (BILINEAR_MACS + int(modulated))
    return conv + sampling


def _star_deform_conv_jit(inputs: List[Any], outputs: List[Any]) -> Counter:
    # vfnet::star_deform_conv(x, ltrb, weight, bias) -> out
    x, weight = get_shape(inputs[0]), get_shape(inputs[2])
    return Counter({"star_deform_conv": deform_conv_flops(x, weight, get_shape(outputs[0]), modulated=False)})


def _modulated_deform_conv_jit(inputs: List[Any], outputs: List[Any]) -> Counter:
    # vfnet::modulated_deform_conv(x, offset, mask, weight, bias, stride, padding, dilation) -> out
    x, weight = get_shape(inputs[0]), get_shape(inputs[3])
    return Counter({"modulated_deform_conv": deform_conv_flops(x, weight, get_shape(outputs[0]), modulated=True)})


def _torchvision_deform_conv2d_jit(inputs: List[Any], outputs: List[Any]) -> Counter:
    # torchvision::deform_conv2d(input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w,
    #                            dilation_h, dilation_w, groups, offset_groups, use_mask) -> out
    x, weight = get_shape(inputs[0]), get_shape(inputs[1])
    use_mask = bool(inputs[13].toIValue())
    return Counter({"deform_conv2d": deform_conv_flops(x, weight, get_shape(outputs[0]), modulated=use_mask)})


#: fvcore op handles, by the op names the TorchScript tracer records.
FLOP_HANDLES: Dict[str, Any] = {
    "vfnet::star_deform_conv": _star_deform_conv_jit,
    "vfnet::modulated_deform_conv": _modulated_deform_conv_jit,
    "torchvision::deform_conv2d": _torchvision_deform_conv2d_jit,
}


#: fvcore activation handles (``ActivationCountAnalysis``, Detectron2's
#: ``activation_count_operators``): the output elements, as fvcore counts a convolution's.
ACTIVATION_HANDLES: Dict[str, Any] = {
    "vfnet::star_deform_conv": generic_activation_jit("star_deform_conv"),
    "vfnet::modulated_deform_conv": generic_activation_jit("modulated_deform_conv"),
    "torchvision::deform_conv2d": generic_activation_jit("deform_conv2d"),
}


def register_flop_handles() -> bool:
    """
    Add :data:`FLOP_HANDLES` and :data:`ACTIVATION_HANDLES` to the handles every
    ``fvcore.nn.FlopCountAnalysis`` / ``ActivationCountAnalysis`` starts with (fvcore's
    ``_DEFAULT_SUPPORTED_OPS`` tables; handles set later with ``set_op_handle`` still win).

    Returns:
        True if they were added; False (and nothing changes) for an fvcore without those tables.
    """
    import fvcore.nn  # noqa: F401  (loads fvcore.nn.flop_count and fvcore.nn.activation_count)

    tables = [
        getattr(sys.modules.get(name), "_DEFAULT_SUPPORTED_OPS", None)
        for name in ("fvcore.nn.flop_count", "fvcore.nn.activation_count")
    ]
    if not all(isinstance(t, dict) for t in tables):
        return False
    tables[0].update(FLOP_HANDLES)
    tables[1].update(ACTIVATION_HANDLES)
    return True


#: Whether ``import vfnet`` could register the handles with fvcore.
REGISTERED = register_flop_handles()
