"""Inspect a Python environment for tools/install.py; prints one JSON object on stdout.

Run with the environment's interpreter:  python tools/install_probe.py ROOT REQUIREMENTS_TXT
Uses only the standard library and pip's vendored `packaging` until it imports torch.
"""
import importlib.metadata as md
import importlib.util
import json
import math
import os
import subprocess
import sys


def check_requirements(path):
    """Names of the requirement lines of `path` that are not satisfied by installed versions."""
    try:
        from packaging.requirements import Requirement
    except ImportError:
        from pip._vendor.packaging.requirements import Requirement
    missing = []
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line or line.startswith("-"):
                continue
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate():
                continue
            try:
                version = md.version(req.name)
            except md.PackageNotFoundError:
                missing.append(f"{line} (not installed)")
                continue
            if not req.specifier.contains(version, prereleases=True):
                missing.append(f"{line} (found {version})")
    return missing


def probe_detectron2():
    info = {"importable": False}
    if importlib.util.find_spec("detectron2") is None:
        info["error"] = "not installed"
        return info
    try:
        import detectron2

        info["version"] = getattr(detectron2, "__version__", "?")
        info["location"] = os.path.dirname(detectron2.__file__)
        dists = md.packages_distributions().get("detectron2", [])
        info["distribution"] = dists[0] if dists else None
        import detectron2.layers  # noqa: F401  (needs detectron2._C)
        import detectron2.modeling  # noqa: F401
        from detectron2 import _C

        info["fallback"] = bool(getattr(_C, "IS_PURE_PYTHON_FALLBACK", False))
        if info["fallback"]:
            info["fallback_revision"] = int(getattr(_C, "FALLBACK_REVISION", 1))
        info["importable"] = True
    except Exception as e:  # report anything: a broken install is reinstalled
        info["error"] = f"{type(e).__name__}: {e}"
    return info


def probe_vfnet(root):
    info = {"installed": False, "editable_here": False, "extension": None}
    try:
        dist = md.distribution("vfnet")
    except md.PackageNotFoundError:
        return info
    info["installed"] = True
    direct_url = dist.read_text("direct_url.json")
    if direct_url:
        d = json.loads(direct_url)
        url = d.get("url", "")
        editable = d.get("dir_info", {}).get("editable", False)
        info["editable_here"] = bool(editable) and url.rstrip("/") == "file://" + root.rstrip("/")
    pkg_dir = os.path.join(root, "projects", "VFNet", "vfnet")
    so = [f for f in os.listdir(pkg_dir) if f.startswith("_C.") and f.endswith(".so")]
    if not so:
        return info
    info["extension"] = os.path.join(pkg_dir, so[0])
    try:
        import torch

        # Load the library by path, without importing vfnet/__init__.py (the model code).
        spec = importlib.util.spec_from_file_location("vfnet._C", info["extension"])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        info["cuda_arch_list"] = getattr(module, "cuda_arch_list", "")
        info["cuda_kernels"] = torch._C._dispatch_has_kernel_for_dispatch_key(
            "vfnet::star_deform_conv", "CUDA"
        )
        error = check_ops(torch, "cpu") or check_bad_input_error(info["extension"])
        info["works"] = error is None
        if error:
            info["error"] = error
        if info["cuda_kernels"] and torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability()
            info["gpu"] = f"{torch.cuda.get_device_name()} (compute capability {major}.{minor})"
            info["cuda_error"] = check_ops(torch, "cuda")
    except Exception as e:
        info["works"] = False
        info["error"] = f"{type(e).__name__}: {e}"
    return info


def check_ops(torch, device):
    """Run both ops of vfnet._C on `device` on hand-computed cases; None, or what went wrong."""
    try:
        # Boxes of size 0: the nine taps all sample the single pixel (1), so the output is the
        # sum of the weights 0..8 = 36.
        x = torch.ones(1, 1, 1, 1, device=device)
        weight = torch.arange(9.0, device=device).view(1, 1, 3, 3)
        conv = torch.ops.vfnet.star_deform_conv(x, torch.zeros(1, 4, 1, 1, device=device), weight, None)
        # Logit 0 (p = 1/2): target 0 -> alpha * p**2 * log(2), target 1 -> log(2).
        logits = torch.zeros(2, device=device)
        targets = torch.tensor([0.0, 1.0], device=device)
        vfl = torch.ops.vfnet.varifocal_loss(logits, targets, 0.75, 2.0, True, 0)
        got = [conv.item()] + vfl.tolist()
    except Exception as e:
        return f"{device}: {type(e).__name__}: {e}"
    expected = [36.0, 0.75 * 0.25 * math.log(2), math.log(2)]
    if any(abs(a - b) > 1e-6 for a, b in zip(got, expected)):
        return f"{device}: the ops returned {got}, expected {expected}"
    return None


# Run by check_bad_input_error with the environment's Python and the extension's path.
BAD_INPUT_CHILD = r"""
import importlib.util, sys
import torch
spec = importlib.util.spec_from_file_location("vfnet._C", sys.argv[1])
spec.loader.exec_module(importlib.util.module_from_spec(spec))
x = torch.zeros(4, 5)
try:
    torch.ops.vfnet.varifocal_loss(x, x[:3], 0.75, 2.0, True, 2)
except RuntimeError as e:
    print("expected logits and targets of the same shape, but got [4, 5] and [3, 5]" in str(e))
"""


def check_bad_input_error(extension):
    """None if an op of the extension at path `extension`, given a bad input, raises the
    RuntimeError that names the problem; else what happened. In a child process, which a crash
    cannot take down: a vfnet._C compiled with standard-library headers that do not match the
    libstdc++ loaded at run time crashes there (a segmentation fault in std::ostream, formatting
    the message's shapes; seen with a compiler wrapper, /opt/gcc/bin/g++, on a GPU machine)."""
    out = subprocess.run(
        [sys.executable, "-c", BAD_INPUT_CHILD, extension],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    if out.returncode < 0:
        return (
            f"an op given a bad input crashed the process (signal {-out.returncode}) instead of raising "
            "an error: vfnet._C was probably compiled with C++ standard-library headers that do not match "
            "the libstdc++ loaded at run time (seen with a compiler wrapper as CXX); rebuild it with the "
            'system\'s compiler: `CXX=/usr/bin/g++ CC=/usr/bin/gcc LDSHARED="/usr/bin/gcc -shared" make '
            "install FORCE=1` (README.md, GPU architectures)"
        )
    if out.returncode != 0 or out.stdout.strip() != "True":
        return f"an op given a bad input did not raise the expected error: {(out.stdout + out.stderr).strip()[-500:]}"
    return None


def main():
    root, requirements = sys.argv[1], sys.argv[2]
    out = {
        "python": sys.version.split()[0],
        "prefix": sys.prefix,
        "missing_requirements": check_requirements(requirements),
    }
    if importlib.util.find_spec("torch") is not None:
        try:
            import torch
            import torchvision

            out["torch"] = torch.__version__
            out["torch_cuda"] = torch.version.cuda
            out["torchvision"] = torchvision.__version__
        except Exception as e:
            out["torch_error"] = f"{type(e).__name__}: {e}"
        else:
            out["detectron2"] = probe_detectron2()
            out["vfnet"] = probe_vfnet(root)
    sys.stdout.flush()
    print("\n@@PROBE@@" + json.dumps(out))


if __name__ == "__main__":
    main()
