"""Native operators of VFNet (kernels in `vfnet._C`, with pure-PyTorch fallbacks).

- :func:`star_offsets`: the offsets of a 3x3 deformable conv that samples a box's star points
  (plain PyTorch);
- :func:`star_deform_conv`: the star-shaped deformable conv straight from the boxes (no offsets,
  columns in chunks), equal to torchvision's ``deform_conv2d`` with those offsets;
- :func:`modulated_deform_conv`: the modulated deformable conv (DCNv2) with torchvision's layout,
  columns in chunks as the star conv;
- :func:`fused_varifocal_loss`: the Varifocal Loss in one pass each way (the eager reference is
  :func:`vfnet.losses.varifocal_loss`; ``varifocal_loss`` here is the fused one's former name).

:func:`use_fused_kernels` says whether the kernels of ``vfnet._C`` serve a device (else the ops
run their pure-PyTorch fallbacks there). The modules of this package use torch only, not
Detectron2 (importing them through ``vfnet`` still imports Detectron2: ``vfnet/__init__.py`` does).
"""
from ._extension import HAS_C_EXTENSION, use_fused_kernels
from .modulated_deform_conv import modulated_deform_conv, modulated_deform_conv_reference
from .star_deform_conv import star_deform_conv, star_deform_conv_reference
from .star_offsets import star_offsets
from .varifocal_loss import fused_varifocal_loss

#: The former name of :func:`fused_varifocal_loss` (README, "Fused ops").
varifocal_loss = fused_varifocal_loss

__all__ = [
    "HAS_C_EXTENSION",
    "use_fused_kernels",
    "star_offsets",
    "star_deform_conv",
    "star_deform_conv_reference",
    "modulated_deform_conv",
    "modulated_deform_conv_reference",
    "fused_varifocal_loss",
    "varifocal_loss",
]
