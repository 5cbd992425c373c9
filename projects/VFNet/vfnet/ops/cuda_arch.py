"""CUDA architectures: which ones ``vfnet._C`` is compiled for, and which GPUs a build runs on.

An architecture list is written as ``TORCH_CUDA_ARCH_LIST`` writes it, e.g. ``"7.5;8.0;12.0+PTX"``:
``"8.0"`` is machine code (a cubin) for compute capability 8.0, which runs on every GPU of the same
major version and a minor version at least 8.0's (8.0, 8.6, 8.9); ``"+PTX"`` adds PTX, which the
driver compiles when the library is loaded for any GPU of that capability or later. An
arch-specific entry such as ``"9.0a"`` runs on that capability only.

Standard library only: ``setup.py`` and ``tools/install.py`` load this file by its path, without
importing torch or vfnet.
"""
import re
from typing import Iterable, List, NamedTuple, Optional, Sequence, Tuple

__all__ = [
    "Arch",
    "GPU_FAMILIES",
    "default_arch_list",
    "format_arch_list",
    "gpus_covered",
    "parse_arch_list",
    "runs_on",
]

Capability = Tuple[int, int]


class Arch(NamedTuple):
    capability: Capability
    ptx: bool = False  # PTX too, besides the cubin
    specific: bool = False  # an "a" variant (e.g. 9.0a): runs on this capability only

    def __str__(self) -> str:
        major, minor = self.capability
        return f"{major}.{minor}{'a' if self.specific else ''}{'+PTX' if self.ptx else ''}"


#: GPUs by compute capability, for the install summary and the README (not exhaustive).
GPU_FAMILIES = (
    ((6, 0), "P100"),
    ((6, 1), "P4, P40, GTX 10xx"),
    ((7, 0), "V100"),
    ((7, 5), "T4, RTX 20xx"),
    ((8, 0), "A100, A30"),
    ((8, 6), "A10, A40, RTX A6000, RTX 30xx"),
    ((8, 9), "L4, L40S, RTX 40xx"),
    ((9, 0), "H100, H200, GH200"),
    ((10, 0), "B200, GB200"),
    ((10, 3), "B300, GB300"),
    ((12, 0), "RTX PRO 6000 Blackwell, RTX 50xx"),
)

_ENTRY = re.compile(r"^(\d+)\.(\d)(a?)(\+PTX)?$")


def _capabilities(names: Iterable[str], prefix: str) -> set:
    """Compute capabilities of the names ``prefix + "86"`` (or ``"90a"``: as its generic ``9.0``)
    in ``names``, e.g. prefix ``"sm_"`` for cubins, ``"compute_"`` for PTX."""
    found = set()
    for name in names:
        name = name.strip()
        m = re.match(r"^" + prefix + r"(\d+)(\d)[af]?$", name)
        if m:
            found.add((int(m.group(1)), int(m.group(2))))
    return found


def parse_arch_list(text: str) -> List[Arch]:
    """
    Parse a ``TORCH_CUDA_ARCH_LIST`` value (entries separated by ``;``, spaces or ``,``).

    Raises:
        ValueError: for an entry that is not ``X.Y``, ``X.Ya`` or either with ``+PTX`` (e.g. the
            names "Ampere" or "native", which only torch expands).
    """
    archs = []
    for entry in re.split(r"[;,\s]+", text.strip()):
        if not entry:
            continue
        m = _ENTRY.match(entry)
        if m is None:
            raise ValueError(f"cannot read the CUDA architecture {entry!r} in {text!r}")
        archs.append(Arch((int(m.group(1)), int(m.group(2))), bool(m.group(4)), bool(m.group(3))))
    return archs


def format_arch_list(archs: Iterable[Arch]) -> str:
    return ";".join(str(a) for a in archs)


def default_arch_list(
    torch_archs: Sequence[str], nvcc_codes: Sequence[str], nvcc_ptx: Sequence[str]
) -> str:
    """
    The architectures to compile for by default: the cubins of the installed torch wheel that
    the found nvcc can compile, plus PTX of the newest of them.

    Args:
        torch_archs: ``torch.cuda.get_arch_list()``, e.g. ``["sm_75", "sm_80", "sm_90",
            "compute_90"]`` (``compute_*`` entries, torch's own PTX, are not cubins: ignored).
        nvcc_codes: ``nvcc --list-gpu-code``, e.g. ``["sm_75", ..., "sm_121"]``.
        nvcc_ptx: ``nvcc --list-gpu-arch``, e.g. ``["compute_75", ..., "compute_121"]``.

    Returns:
        A ``TORCH_CUDA_ARCH_LIST`` value, e.g. ``"7.5;8.0;8.6;9.0;10.0;12.0+PTX"``. Arch-specific
        entries of the wheel (``sm_90a``) count as their generic architecture (``9.0``).

    Raises:
        ValueError: if no architecture of torch's list can be compiled by this nvcc.
    """
    both = sorted(_capabilities(torch_archs, "sm_") & _capabilities(nvcc_codes, "sm_"))
    if not both:
        raise ValueError(
            f"none of torch's CUDA architectures ({' '.join(torch_archs) or 'none'}) can be compiled "
            f"by this nvcc (it knows {' '.join(nvcc_codes) or 'none'}); set TORCH_CUDA_ARCH_LIST"
        )
    archs = [Arch(c) for c in both]
    if both[-1] in _capabilities(nvcc_ptx, "compute_"):
        archs[-1] = Arch(both[-1], ptx=True)
    return format_arch_list(archs)


def runs_on(archs: Sequence[Arch], capability: Capability) -> bool:
    """Whether a library compiled for ``archs`` has code for a GPU of compute ``capability``."""
    for a in archs:
        if a.specific:
            if a.capability == capability:
                return True
            continue
        if a.capability[0] == capability[0] and a.capability[1] <= capability[1]:
            return True  # a cubin runs on later minor versions of its major version
        if a.ptx and a.capability <= capability:
            return True  # PTX is compiled by the driver for any later GPU
    return False


def gpus_covered(archs: Sequence[Arch]) -> Tuple[List[str], List[str]]:
    """The entries of :data:`GPU_FAMILIES` that ``archs`` runs on, and those it does not, as
    ``"T4, RTX 20xx (7.5)"``."""
    yes, no = [], []
    for capability, names in GPU_FAMILIES:
        (yes if runs_on(archs, capability) else no).append(f"{names} ({capability[0]}.{capability[1]})")
    return yes, no
