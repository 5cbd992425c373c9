"""Native operators of VFNet (kernels in `vfnet._C`, with pure-PyTorch fallbacks).

- :func:`star_offsets`: the offsets of a 3x3 deformable conv that samples a box's star points
  (plain PyTorch);
- :func:`star_deform_conv`: the star-shaped deformable conv straight from the boxes (no offsets,
  columns in chunks), equal to torchvision's ``deform_conv2d`` with those offsets;
- :func:`modulated_deform_conv`: the modulated deformable conv (DCNv2) with torchvision's layout,
  columns in chunks as the star conv;
- :func:`varifocal_loss`: the Varifocal Loss in one pass each way.

:func:`use_fused_kernels` says whether the kernels of ``vfnet._C`` serve a device (else the ops
run their pure-PyTorch fallbacks there). This package must not import detectron2.
"""
from ._extension import HAS_C_EXTENSION, use_fused_kernels
from .modulated_deform_conv import modulated_deform_conv, modulated_deform_conv_reference
from .star_deform_conv import star_deform_conv, star_deform_conv_reference
from .star_offsets import star_offsets
from .varifocal_loss import varifocal_loss

__all__ = [
    "HAS_C_EXTENSION",
    "use_fused_kernels",
    "star_offsets",
    "star_deform_conv",
    "star_deform_conv_reference",
    "modulated_deform_conv",
    "modulated_deform_conv_reference",
    "varifocal_loss",
]
