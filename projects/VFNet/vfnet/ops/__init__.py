"""Native operators of VFNet (kernels in `vfnet._C`, with pure-PyTorch fallbacks).

This package must not import detectron2.
"""
from .star_offsets import HAS_C_EXTENSION, star_offsets, star_offsets_reference

__all__ = ["HAS_C_EXTENSION", "star_offsets", "star_offsets_reference"]
