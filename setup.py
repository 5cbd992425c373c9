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
  TORCH_CUDA_ARCH_LIST GPU architectures, e.g. "8.0;9.0+PTX"; default: the architectures of the
                       installed torch wheel (torch.cuda.get_arch_list()) that nvcc can compile,
                       plus PTX of the newest, whether or not a GPU is visible
                       (vfnet/ops/cuda_arch.py). The list built is vfnet._C.cuda_arch_list.
  MAX_JOBS             parallel compile jobs (ninja).

torch must already be installed, so install with `--no-build-isolation`:
    pip install --no-build-isolation -e .
`make install` does this (and everything else); see README.md.
"""
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys

from setuptools import find_packages, setup

PACKAGE_DIR = os.path.join("projects", "VFNet", "vfnet")


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


def _nvcc(cuda_home, *args):
    """Output of `nvcc ARGS` of the toolkit at cuda_home, or None if it cannot be run."""
    try:
        return subprocess.check_output([os.path.join(cuda_home, "bin", "nvcc"), *args], text=True)
    except (OSError, subprocess.CalledProcessError):
        return None


def _nvcc_version(cuda_home):
    out = _nvcc(cuda_home, "--version")
    m = re.search(r"release (\d+)\.(\d+)", out or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def _load_cuda_arch():
    """vfnet/ops/cuda_arch.py, loaded by its path (importing vfnet would import the model)."""
    path = os.path.join(PACKAGE_DIR, "ops", "cuda_arch.py")
    spec = importlib.util.spec_from_file_location("vfnet_cuda_arch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cuda_arch_list(torch, cuda_home):
    """TORCH_CUDA_ARCH_LIST if set, else torch's architectures that this nvcc can compile."""
    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return os.environ["TORCH_CUDA_ARCH_LIST"], "set in the environment"
    codes = (_nvcc(cuda_home, "--list-gpu-code") or "").split()
    ptx = (_nvcc(cuda_home, "--list-gpu-arch") or "").split()
    wheel = torch.cuda.get_arch_list()
    archs = _load_cuda_arch().default_arch_list(wheel, codes, ptx)
    return archs, f"those of torch {torch.__version__} ({' '.join(wheel)}) that nvcc compiles"


def _use_cuda(torch):
    """Decide whether to build the CUDA kernels and for which architectures; returns
    (TORCH_CUDA_ARCH_LIST value or None, reason)."""
    flag = os.environ.get("WITH_CUDA", "auto").strip().lower() or "auto"
    if os.environ.get("FORCE_CUDA", "0") == "1":
        flag = "1"
    if flag in ("0", "false", "no", "off"):
        return None, "disabled by WITH_CUDA=0"
    if flag not in ("1", "true", "yes", "on", "auto"):
        raise SystemExit(f"WITH_CUDA must be auto, 1 or 0, got {flag!r}")
    required = flag != "auto"

    def no(reason):
        if required:
            raise SystemExit(f"WITH_CUDA=1 but the CUDA kernels cannot be built: {reason}")
        return None, reason

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
    try:
        arch_list, source = _cuda_arch_list(torch, cuda_home)
    except ValueError as e:
        return no(str(e))
    return arch_list, f"nvcc {nvcc[0]}.{nvcc[1]} at {cuda_home}; architectures: {source}"


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
    # -fopenmp: ATen's at::parallel_for is a header template that runs in parallel only where
    # _OPENMP is defined; without it every CPU kernel of vfnet._C ran on one thread whatever
    # torch.get_num_threads() said. The library links libgomp.so.1, which resolves to the copy
    # torch has already loaded (one OpenMP runtime, one thread pool).
    extra_compile_args = {"cxx": ["-O3", "-ffp-contract=off", "-fopenmp"]}

    arch_list, reason = _use_cuda(torch)
    if arch_list:
        # torch's build reads it from the environment (without it: only the visible GPUs').
        os.environ["TORCH_CUDA_ARCH_LIST"] = arch_list
        _log(f"building vfnet._C with CPU and CUDA kernels for TORCH_CUDA_ARCH_LIST={arch_list} ({reason})")
        extension = CUDAExtension
        sources += cuda_sources
        extra_compile_args["nvcc"] = ["-O3"]
        # Recorded in the library as vfnet._C.cuda_arch_list (`;` would end the shell command).
        extra_compile_args["cxx"].append(
            "-DVFNET_CUDA_ARCH_LIST=" + ",".join(re.split(r"[;\s]+", arch_list.strip()))
        )
    else:
        _log(f"building vfnet._C with CPU kernels only ({reason})")
        extension = CppExtension

    return [
        extension(
            "vfnet._C",
            sources,
            include_dirs=[os.path.abspath(csrc)],
            extra_compile_args=extra_compile_args,
            extra_link_args=["-fopenmp"],
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
