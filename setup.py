#!/usr/bin/env python
"""Build and install the `vfnet` package (projects/VFNet/vfnet) and its extension `vfnet._C`.

The extension is built from
  - projects/VFNet/vfnet/csrc/*.cpp and csrc/cpu/*.cpp   always (CPU kernels), and
  - projects/VFNet/vfnet/csrc/cuda/*.cu                  when CUDA is enabled (CUDA kernels).
Each backend registers its kernels with TORCH_LIBRARY_IMPL, so a CPU-only build simply leaves
the .cu files out.

Environment variables:
  WITH_CUDA=auto|1|0   auto (default): build the CUDA kernels when torch has CUDA and a CUDA
                       toolkit (nvcc) is found; 1: require them; 0: CPU kernels only.
  FORCE_CUDA=1         same as WITH_CUDA=1 (the name detectron2 uses).
  CUDA_HOME            the CUDA toolkit to use (default: /usr/local/cuda, else the nvcc on PATH).
  TORCH_CUDA_ARCH_LIST GPU architectures; default: those of the visible GPUs, or
                       "8.0;9.0+PTX" when none is visible (e.g. in CI).
  MAX_JOBS             parallel compile jobs (ninja).

torch must already be installed, so install with `--no-build-isolation`:
    pip install --no-build-isolation -e .
`make install` does this (and everything else); see README.md.
"""
import glob
import os
import re
import shutil
import subprocess
import sys

from setuptools import find_packages, setup

PACKAGE_DIR = os.path.join("projects", "VFNet", "vfnet")
DEFAULT_CUDA_ARCH_LIST = "8.0;9.0+PTX"


def _log(msg):
    print(f"[vfnet setup.py] {msg}", file=sys.stderr, flush=True)


def _find_cuda_home():
    """CUDA_HOME if set, else /usr/local/cuda, else the toolkit of the nvcc on PATH."""
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    if os.path.isfile("/usr/local/cuda/bin/nvcc"):
        return "/usr/local/cuda"
    nvcc = shutil.which("nvcc")
    if nvcc:
        # /usr/local/bin/nvcc may be a wrapper script, not a symlink: ask nvcc itself if possible.
        return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    return None


def _nvcc_version(cuda_home):
    try:
        out = subprocess.check_output(
            [os.path.join(cuda_home, "bin", "nvcc"), "--version"], text=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    m = re.search(r"release (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _use_cuda(torch):
    """Decide whether to build the CUDA kernels; returns (bool, reason)."""
    flag = os.environ.get("WITH_CUDA", "auto").strip().lower() or "auto"
    if os.environ.get("FORCE_CUDA", "0") == "1":
        flag = "1"
    if flag in ("0", "false", "no", "off"):
        return False, "disabled by WITH_CUDA=0"
    if flag not in ("1", "true", "yes", "on", "auto"):
        raise SystemExit(f"WITH_CUDA must be auto, 1 or 0, got {flag!r}")
    required = flag != "auto"

    def no(reason):
        if required:
            raise SystemExit(f"WITH_CUDA=1 but the CUDA kernels cannot be built: {reason}")
        return False, reason

    if torch.version.cuda is None:
        return no(f"torch {torch.__version__} was built without CUDA")
    cuda_home = _find_cuda_home()
    if cuda_home is None or not os.path.isfile(os.path.join(cuda_home, "bin", "nvcc")):
        return no("no CUDA toolkit found (set CUDA_HOME to a directory with bin/nvcc)")
    nvcc = _nvcc_version(cuda_home)
    torch_cuda = tuple(int(x) for x in torch.version.cuda.split(".")[:2])
    if nvcc is None:
        return no(f"could not run {cuda_home}/bin/nvcc --version")
    if nvcc[0] != torch_cuda[0]:
        return no(
            f"nvcc {nvcc[0]}.{nvcc[1]} at {cuda_home} does not match the CUDA {torch.version.cuda}"
            f" that torch {torch.__version__} was built with"
        )
    return True, f"nvcc {nvcc[0]}.{nvcc[1]} at {cuda_home}"


def get_extensions():
    # Set CUDA_HOME before torch.utils.cpp_extension reads it (at import time).
    cuda_home = _find_cuda_home()
    if cuda_home and not os.environ.get("CUDA_HOME"):
        os.environ["CUDA_HOME"] = cuda_home
    import torch
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    csrc = os.path.join(PACKAGE_DIR, "csrc")
    sources = sorted(glob.glob(os.path.join(csrc, "*.cpp"))) + sorted(
        glob.glob(os.path.join(csrc, "cpu", "*.cpp"))
    )
    cuda_sources = sorted(glob.glob(os.path.join(csrc, "cuda", "*.cu")))
    # -ffp-contract=off: no fused multiply-adds where the source has a multiply and an add (GCC
    # contracts them in C++ whenever the target has FMA, e.g. with -march=native): the CPU star
    # deformable conv reproduces torchvision's sampling arithmetic bit for bit.
    extra_compile_args = {"cxx": ["-O3", "-ffp-contract=off"]}

    with_cuda, reason = _use_cuda(torch)
    if with_cuda:
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCH_LIST
        _log(
            f"building vfnet._C with CPU and CUDA kernels ({reason}; "
            f"TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST', '<visible GPUs>')})"
        )
        extension = CUDAExtension
        sources += cuda_sources
        extra_compile_args["nvcc"] = ["-O3"]
    else:
        _log(f"building vfnet._C with CPU kernels only ({reason})")
        extension = CppExtension

    return [
        extension(
            "vfnet._C",
            sources,
            include_dirs=[os.path.abspath(csrc)],
            extra_compile_args=extra_compile_args,
        )
    ]


def get_cmdclass():
    from torch.utils.cpp_extension import BuildExtension

    # BuildExtension uses ninja when it is on PATH (installed by `make install`), else falls
    # back to the slower distutils backend.
    return {"build_ext": BuildExtension}


setup(
    name="vfnet",
    version="0.1.0",
    description="VarifocalNet (VFNet) for Detectron2",
    python_requires=">=3.9",
    packages=["vfnet"]
    + [f"vfnet.{p}" for p in find_packages(PACKAGE_DIR, exclude=("csrc", "csrc.*"))],
    package_dir={"vfnet": PACKAGE_DIR},
    ext_modules=get_extensions(),
    cmdclass=get_cmdclass(),
    # torch, torchvision and detectron2 are installed by tools/install.py (`make install`), which
    # pins torch and chooses how to get detectron2; they are not repeated here so that pip never
    # replaces them.
    install_requires=["fvcore", "pycocotools", "opencv-python"],
    zip_safe=False,
)
