"""Inspect a Python environment for tools/install.py; prints one JSON object on stdout.

Run with the environment's interpreter:  python tools/install_probe.py ROOT REQUIREMENTS_TXT
Uses only the standard library and pip's vendored `packaging` until it imports torch.
"""
import importlib.metadata as md
import importlib.util
import json
import os
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
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
        x = torch.tensor([[[[1.0]], [[2.0]], [[3.0]], [[4.0]]]])
        out = torch.ops.vfnet.star_offsets(x).flatten().tolist()
        expected = [-1.0, 0.0, -1.0, 0.0, -1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0,
                    3.0, 0.0, 3.0, 0.0, 3.0, 2.0]
        info["works"] = out == expected
        if not info["works"]:
            info["error"] = f"star_offsets returned {out}, expected {expected}"
        info["cuda_kernels"] = torch._C._dispatch_has_kernel_for_dispatch_key(
            "vfnet::star_offsets", "CUDA"
        )
    except Exception as e:
        info["works"] = False
        info["error"] = f"{type(e).__name__}: {e}"
    return info


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
