"""Loading of ``vfnet._C``, the compiled kernels of every op in this package.

Importing ``vfnet._C`` registers the ops under ``torch.ops.vfnet``. When it cannot be imported (not
built, or built against another torch), or is an older build that lacks some of the ops below,
:data:`HAS_C_EXTENSION` is False, every op of :mod:`vfnet.ops` runs its pure-PyTorch fallback
(same results, slower, more memory) and one ``RuntimeWarning`` says why.

This module must not import detectron2.
"""
import warnings

import torch

__all__ = ["HAS_C_EXTENSION", "LOAD_ERROR"]

#: The ops ``vfnet._C`` must register for the compiled kernels to be used.
REQUIRED_OPS = (
    "star_offsets",
    "star_offsets_backward",
    "star_deform_conv",
    "star_deform_conv_backward",
    "varifocal_loss",
    "varifocal_loss_backward",
)


def _load_extension():
    try:
        from .. import _C  # noqa: F401  (loading the library registers torch.ops.vfnet.*)
    except ImportError as e:
        return e
    missing = [name for name in REQUIRED_OPS if not hasattr(torch.ops.vfnet, name)]
    if missing:
        return ImportError(
            f"vfnet._C was imported but does not register {', '.join('vfnet::' + m for m in missing)} "
            "(an older build?)"
        )
    return None


#: Why ``vfnet._C`` is not used (an exception), or None when it is.
LOAD_ERROR = _load_extension()
#: True when the compiled kernels of ``vfnet._C`` are used, False for the pure-PyTorch fallbacks.
HAS_C_EXTENSION = LOAD_ERROR is None
if not HAS_C_EXTENSION:
    warnings.warn(
        f"vfnet._C could not be loaded ({LOAD_ERROR}); the ops of vfnet.ops (star_offsets, "
        "star_deform_conv, varifocal_loss) fall back to their pure-PyTorch implementations (same "
        "results, slower and with more memory). Build the extension with `make install` (or "
        "`pip install --no-build-isolation -e .`), see README.md.",
        RuntimeWarning,
        stacklevel=2,
    )
