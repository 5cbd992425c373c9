"""Loading of ``vfnet._C``, the compiled kernels of every op in this package, and the choice, per
device, between those kernels and the pure-PyTorch fallbacks.

Importing ``vfnet._C`` registers the ops under ``torch.ops.vfnet``. When it cannot be imported (not
built, or built against another torch), or is an older build that lacks some of the ops below,
:data:`HAS_C_EXTENSION` is False, every op of :mod:`vfnet.ops` runs its pure-PyTorch fallback
(same results, slower, more memory) and one ``RuntimeWarning`` says why.

When it loads, it may still have no kernels for a device: a CPU-only build (no CUDA toolkit
matching torch was found at build time) has none for CUDA tensors, and a build for other GPU
architectures has no code for the GPU at hand. :func:`use_fused_kernels` asks the dispatcher
(and, on CUDA, compares the GPU with ``vfnet._C.cuda_arch_list``) once per device; without
kernels the ops take the fallback there, with one ``RuntimeWarning`` per device type that says
why and how to rebuild.
"""
import warnings
from typing import Dict, Optional

import torch

from . import cuda_arch

__all__ = ["HAS_C_EXTENSION", "LOAD_ERROR", "use_fused_kernels"]

#: The ops ``vfnet._C`` must register for the compiled kernels to be used.
REQUIRED_OPS = (
    "star_deform_conv",
    "star_deform_conv_backward",
    "modulated_deform_conv",
    "modulated_deform_conv_backward",
    "varifocal_loss",
    "varifocal_loss_backward",
)

_FALLBACK = (
    "the ops of vfnet.ops (star_deform_conv, modulated_deform_conv, varifocal_loss) fall back to "
    "their pure-PyTorch implementations (same results, slower and with more memory)"
)


def _load_extension():
    try:
        from .. import _C
    except ImportError as e:
        return None, e
    missing = [name for name in REQUIRED_OPS if not hasattr(torch.ops.vfnet, name)]
    if missing:
        return None, ImportError(
            f"vfnet._C was imported but does not register {', '.join('vfnet::' + m for m in missing)} "
            "(an older build?)"
        )
    return _C, None


#: ``vfnet._C`` (None when not loaded), and why it is not loaded (an exception), or None.
_C, LOAD_ERROR = _load_extension()
#: True when ``vfnet._C`` is loaded: its kernels are used on the devices it has kernels for.
HAS_C_EXTENSION = LOAD_ERROR is None
if not HAS_C_EXTENSION:
    warnings.warn(
        f"vfnet._C could not be loaded ({LOAD_ERROR}); {_FALLBACK}. Build the extension with "
        "`make install` (or `pip install --no-build-isolation -e .`), see README.md.",
        RuntimeWarning,
        stacklevel=2,
    )

# torch.device -> None (vfnet._C has kernels for it) or why not; the device types warned about.
_NO_KERNEL_REASON: Dict[torch.device, Optional[str]] = {}
_WARNED_DEVICE_TYPES = set()


# Called while torch.compile traces the ops' first call on a device: its dispatcher queries are
# not traceable, and their answer does not change within a process.
@torch.compiler.assume_constant_result
def _no_kernel_reason(device: torch.device) -> Optional[str]:
    key = torch._C._dispatch_key_for_device(device.type)
    missing = [
        name
        for name in REQUIRED_OPS
        if not torch._C._dispatch_has_kernel_for_dispatch_key(f"vfnet::{name}", key)
    ]
    if missing:
        if device.type == "cuda":
            return (
                f"vfnet._C has no CUDA kernels: it was built without CUDA (at build time no CUDA "
                f"toolkit matching the CUDA {torch.version.cuda} of torch was found, or "
                "WITH_CUDA=0). To build them, install a CUDA toolkit of that major version, point "
                "CUDA_HOME at it and run `make install WITH_CUDA=1` (README.md, Install)"
            )
        return (
            f"vfnet._C has no {key} kernels (for {', '.join('vfnet::' + m for m in missing)}); "
            "this device is served by the pure-PyTorch implementations only"
        )
    if device.type == "cuda":
        built = getattr(_C, "cuda_arch_list", "")
        try:
            archs = cuda_arch.parse_arch_list(built)
        except ValueError:
            return None  # a list only torch could read (e.g. "native"): trust the build
        capability = torch.cuda.get_device_capability(device)
        if archs and not cuda_arch.runs_on(archs, capability):
            name = torch.cuda.get_device_name(device)
            cc = f"{capability[0]}.{capability[1]}"
            return (
                f"vfnet._C was compiled for the CUDA architectures {cuda_arch.format_arch_list(archs)}, "
                f"which do not run on {device} ({name}, compute capability {cc}). Rebuild it with "
                "`make install` and TORCH_CUDA_ARCH_LIST unset (every architecture of torch), or "
                f"for this GPU with `TORCH_CUDA_ARCH_LIST={cc} make install` (README.md, Install)"
            )
    return None


def use_fused_kernels(device: torch.device) -> bool:
    """
    Whether the ops of :mod:`vfnet.ops` run the kernels of ``vfnet._C`` for tensors on
    ``device`` (else their pure-PyTorch fallbacks). Decided on the first call for each device
    and cached; the first device of a type without kernels gets one ``RuntimeWarning`` with the
    reason and the fix.
    """
    if not HAS_C_EXTENSION:
        return False
    if device not in _NO_KERNEL_REASON:
        _NO_KERNEL_REASON[device] = _no_kernel_reason(device)
    reason = _NO_KERNEL_REASON[device]
    if reason is None:
        return True
    if device.type not in _WARNED_DEVICE_TYPES:
        _WARNED_DEVICE_TYPES.add(device.type)
        message = f"{reason}. Meanwhile {_FALLBACK} on {device.type} tensors."
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    return False
