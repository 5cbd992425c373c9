#!/usr/bin/env python3
"""Create the Python environment of this project and install everything into it.

    python3 tools/install.py [--venv .venv] [--d2-source auto|git|pypi|PATH] [--with-cuda auto|1|0]

`make install` runs this. Steps (each is skipped when already done, so a re-run is fast):
  1. the environment: create the virtualenv VENV unless VENV/bin/python already exists (then that
     environment is used as it is: a venv or conda env of yours);
  2. requirements.txt: torch==2.14.1, torchvision==0.29.2, fvcore, pycocotools, opencv-python, matplotlib,
     build tools, pytest;
  3. detectron2, by D2_SOURCE:
       auto  an importable detectron2 already in the environment is kept as it is; otherwise the
             official git repository if it can be reached; otherwise the registry fallback;
       git   the official git repository (D2_GIT_URL), built as detectron2's install docs say;
       pypi  the registry package pb1-detectron2==0.6 (sha256-verified) repackaged as a
             pure-Python `detectron2` 0.6 with a `detectron2._C` fallback (tools/detectron2_fallback);
       PATH  a local detectron2 checkout (or sdist/wheel), built with pip;
  4. this project, editable (`pip install --no-build-isolation -e .`), which builds `vfnet._C`:
     CPU kernels always, CUDA kernels too when a CUDA toolkit is found (WITH_CUDA=auto|1|0);
     rebuilt only when setup.py, the C++/CUDA sources, torch or the build options changed;
  5. a check that torch, detectron2 and vfnet._C load, that its ops give hand-computed values
     and that one given a bad input raises its error (in a child process: a crash is reported)
     (on the CPU, and on the GPU when one is visible), then a summary, also written to
     VENV/vfnet-install.txt (it records which detectron2 path was taken, and the CUDA
     architectures vfnet._C was compiled for and the GPUs they run on).
Uses only the standard library, so any Python >= 3.9 can run it.
"""
import argparse
import ast
import datetime
import hashlib
import importlib.util
import json
import os
import shutil
import ssl
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements.txt"
PROBE = ROOT / "tools" / "install_probe.py"
CUDA_ARCH = ROOT / "projects" / "VFNet" / "vfnet" / "ops" / "cuda_arch.py"
FALLBACK_DIR = ROOT / "tools" / "detectron2_fallback"
CACHE_DIR = ROOT / ".cache" / "install"
BUILD_DIR = ROOT / "build" / "detectron2-fallback"
RECORD_NAME = "vfnet-install.txt"

D2_GIT_URL = "https://github.com/facebookresearch/detectron2.git"
D2_SDIST = {
    "requirement": "pb1-detectron2==0.6",
    "filename": "pb1-detectron2-0.6.tar.gz",
    "url": "https://files.pythonhosted.org/packages/60/26/"
    "48f5bbb7ee492696a21da23303daeecdfe3942c498a70d34108acf63b2bd/pb1-detectron2-0.6.tar.gz",
    "sha256": "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29",
}
# Packages that detectron2 v0.6 bundles as detectron2.projects.* (its setup.py's PROJECTS).
D2_V06_PROJECTS = {
    "point_rend": "projects/PointRend/point_rend",
    "deeplab": "projects/DeepLab/deeplab",
    "panoptic_deeplab": "projects/Panoptic-DeepLab/panoptic_deeplab",
}
GIT_TIMEOUT_S = 15

PATH_DESCRIPTIONS = {
    "kept": "kept the detectron2 already in the environment",
    "git": "built from the official git repository",
    "local": "built from a local source",
    "pypi-fallback": "pure-Python detectron2 0.6 fallback from the registry package "
    "pb1-detectron2==0.6 (no compiled detectron2 ops)",
}


class InstallError(Exception):
    pass


# --------------------------------------------------------------------------------------------
# output and subprocesses


def info(msg):
    print(f"[install] {msg}", flush=True)


def step(n, total, title):
    print(f"\n==> [{n}/{total}] {title}", flush=True)


def warn(msg):
    print(f"[install] WARNING: {msg}", flush=True)


def run(cmd, env=None, cwd=None, check=True):
    """Run a command, streaming its output; returns its exit code."""
    shown = " ".join(str(c) for c in cmd)
    info(f"$ {shown}")
    t0 = time.time()
    rc = subprocess.call([str(c) for c in cmd], env=env, cwd=cwd, stdin=subprocess.DEVNULL)
    if check and rc != 0:
        raise InstallError(f"command failed with exit code {rc}: {shown}")
    info(f"  ({time.time() - t0:.0f} s)")
    return rc


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# environment, probe and record


class Env:
    def __init__(self, venv, with_cuda):
        self.venv = venv
        self.python = venv / "bin" / "python"
        env = dict(os.environ)
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"  # ninja, pip, ...
        env["VIRTUAL_ENV"] = str(venv)
        env.pop("PYTHONHOME", None)
        env.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        env.setdefault("MAX_JOBS", str(os.cpu_count() or 1))
        env["WITH_CUDA"] = with_cuda
        if with_cuda != "0" and not env.get("CUDA_HOME"):
            if os.path.isfile("/usr/local/cuda/bin/nvcc"):
                env["CUDA_HOME"] = "/usr/local/cuda"
        self.env = env

    def pip(self, *args, check=True):
        return run([self.python, "-m", "pip", *args], env=self.env, cwd=ROOT, check=check)

    def probe(self):
        out = subprocess.run(
            [str(self.python), str(PROBE), str(ROOT), str(REQUIREMENTS)],
            env=self.env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        marker = "@@PROBE@@"
        if out.returncode != 0 or marker not in out.stdout:
            raise InstallError(
                f"could not inspect the environment {self.venv}:\n{out.stdout}\n{out.stderr}"
            )
        return json.loads(out.stdout.rsplit(marker, 1)[1])


def read_record(venv):
    record = {}
    path = venv / RECORD_NAME
    if path.is_file():
        for line in path.read_text().splitlines():
            if ":" in line and not line.startswith("#"):
                key, value = line.split(":", 1)
                record[key.strip()] = value.strip()
    return record


def write_record(venv, record):
    lines = [
        f"# Written by tools/install.py (`make install`) on "
        f"{datetime.datetime.now().isoformat(timespec='seconds')}; read by its next run.",
    ]
    lines += [f"{k}: {v}" for k, v in record.items()]
    (venv / RECORD_NAME).write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------
# steps


def ensure_venv(venv):
    python = venv / "bin" / "python"
    if python.exists():
        info(f"using the existing environment {venv}")
        return
    info(f"creating the virtualenv {venv} with {sys.executable} ({sys.version.split()[0]})")
    run([sys.executable, "-m", "venv", venv])


def ensure_requirements(env, probe, force):
    missing = probe["missing_requirements"]
    if not missing and not force:
        info(
            f"all of requirements.txt is installed (torch {probe.get('torch')}, "
            f"torchvision {probe.get('torchvision')})"
        )
        return False
    for m in missing:
        info(f"needed: {m}")
    # A recent pip first (the one a new venv ships with may be old), then everything in one go.
    env.pip("install", "--upgrade", "pip")
    env.pip("install", "-r", REQUIREMENTS)
    return True


def git_reachable(url):
    if shutil.which("git") is None:
        return False, "git is not installed"
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="true")
    try:
        r = subprocess.run(
            ["git", "ls-remote", "--exit-code", url, "HEAD"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=GIT_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return False, f"`git ls-remote {url}` timed out after {GIT_TIMEOUT_S} s"
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        return False, f"`git ls-remote {url}` failed: {last}"
    return True, "reachable"


def install_detectron2_git(env):
    url = os.environ.get("D2_GIT_URL", D2_GIT_URL)
    ref = os.environ.get("D2_GIT_REF", "")
    spec = f"git+{url}" + (f"@{ref}" if ref else "")
    info(f"installing detectron2 from {spec} (compiles its C++ ops; several minutes on 2 cores)")
    # As detectron2's INSTALL.md says, plus --no-build-isolation so that its setup.py sees torch.
    env.pip("install", "--no-build-isolation", spec)
    return {"detectron2_path": "git", "detectron2_source": spec}


def install_detectron2_local(env, source):
    path = Path(source).expanduser().resolve()
    if not path.exists():
        raise InstallError(
            f"D2_SOURCE={source!r} is neither auto, git, pypi nor an existing path"
        )
    info(f"installing detectron2 from the local source {path}")
    env.pip("install", "--no-build-isolation", path)
    return {"detectron2_path": "local", "detectron2_source": str(path)}


def fetch_verified_sdist():
    """The sdist of pb1-detectron2==0.6, downloaded once into .cache/ and sha256-verified."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    target = CACHE_DIR / D2_SDIST["filename"]
    want = D2_SDIST["sha256"]
    if target.is_file() and sha256_of(target) == want:
        info(f"using the cached {target.relative_to(ROOT)} (sha256 verified)")
        return target
    target.unlink(missing_ok=True)
    # Not `pip download`: pip reads the sdist's metadata and then refuses it ("Distributions from
    # PyPI cannot declare direct URL dependencies": its [all] extra names a GitHub zip), even with
    # --no-deps. So fetch the file from the package index directly and check its sha256 here.
    url = os.environ.get("D2_SDIST_URL", D2_SDIST["url"])  # e.g. a mirror; sha256 still checked
    info(f"downloading {url}")
    cafile = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE")
    context = ssl.create_default_context(cafile=cafile if cafile and os.path.isfile(cafile) else None)
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as tmp:
        got = Path(tmp) / D2_SDIST["filename"]
        try:
            with urllib.request.urlopen(url, timeout=120, context=context) as r, open(got, "wb") as f:
                shutil.copyfileobj(r, f)
        except OSError as e:
            raise InstallError(f"could not download {url}: {e}") from e
        have = sha256_of(got)
        if have != want:
            raise InstallError(
                f"sha256 mismatch for {D2_SDIST['filename']}: expected {want}, got {have}; "
                "refusing to install it"
            )
        shutil.move(str(got), target)
    info(f"downloaded {D2_SDIST['filename']}, sha256 verified: {want}")
    return target


def assemble_fallback(sdist):
    """Build dir with detectron2/ (+ projects, + _C.py fallback) and our setup.py."""
    if BUILD_DIR.exists():
        shutil.rmtree(BUILD_DIR)
    src_root = BUILD_DIR / "sdist"
    src_root.mkdir(parents=True)
    with tarfile.open(sdist) as tar:
        try:
            tar.extractall(src_root, filter="data")
        except TypeError:  # Python without extraction filters
            tar.extractall(src_root)
    (top,) = [p for p in src_root.iterdir() if p.is_dir()]
    pkg = BUILD_DIR / "pkg"
    pkg.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "_C.*", "_C")
    shutil.copytree(top / "detectron2", pkg / "detectron2", ignore=ignore)
    for name, rel in D2_V06_PROJECTS.items():
        src = top / rel
        if src.is_dir():
            shutil.copytree(src, pkg / "detectron2" / "projects" / name, ignore=ignore)
        else:
            warn(f"the sdist has no {rel}; detectron2.projects.{name} will be missing")
    if not (pkg / "detectron2" / "model_zoo" / "configs" / "common" / "train.py").is_file():
        raise InstallError("the sdist has no detectron2/model_zoo/configs; cannot repackage it")
    shutil.copy2(FALLBACK_DIR / "_C.py", pkg / "detectron2" / "_C.py")
    # v0.6's detectron2/export/__init__.py imports caffe2 (gone from PyTorch): guard it as main does.
    shutil.copy2(FALLBACK_DIR / "export_init.py", pkg / "detectron2" / "export" / "__init__.py")
    shutil.copy2(FALLBACK_DIR / "setup.py", pkg / "setup.py")
    if (top / "LICENSE").is_file():
        shutil.copy2(top / "LICENSE", pkg / "LICENSE")
    return pkg


def fallback_revision():
    """FALLBACK_REVISION of tools/detectron2_fallback/_C.py: the revision this checkout installs."""
    tree = ast.parse((FALLBACK_DIR / "_C.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["FALLBACK_REVISION"]:
            return int(ast.literal_eval(node.value))
    raise InstallError(f"{FALLBACK_DIR / '_C.py'} defines no FALLBACK_REVISION")


def install_detectron2_fallback(env, probe):
    sdist = fetch_verified_sdist()
    pkg = assemble_fallback(sdist)
    d2 = probe.get("detectron2", {})
    other = d2.get("distribution")
    if other and other != "detectron2":
        info(f"removing the distribution {other}, which also provides `detectron2`")
        env.pip("uninstall", "-y", other)
    info("installing it as the pure-Python distribution `detectron2` 0.6 (+ its pins Pillow<10, "
         "setuptools<81)")
    env.pip("install", "--no-build-isolation", pkg)
    return {
        "detectron2_path": "pypi-fallback",
        "detectron2_source": f"{D2_SDIST['requirement']} sdist, sha256 {D2_SDIST['sha256']}",
    }


def ensure_detectron2(env, probe, source, record, force):
    """Returns the record entries describing the detectron2 that is installed."""
    d2 = probe.get("detectron2", {})
    previous = record.get("detectron2_path")
    if d2.get("importable"):
        where = f"detectron2 {d2.get('version')} at {d2.get('location')}"
        if d2.get("fallback"):
            where += " (pure-Python fallback)"
        ours = d2.get("fallback") or (
            previous in ("git", "local", "pypi-fallback")
            and record.get("detectron2_location") == d2.get("location")
        )
        keep = False
        # A fallback repackaged by an older checkout (e.g. without the caffe2 guard) is redone.
        stale = d2.get("fallback") and d2.get("fallback_revision", 1) < fallback_revision()
        if stale and source in ("auto", "pypi"):
            info(f"the installed fallback is of revision {d2.get('fallback_revision', 1)}; this checkout "
                 f"repackages revision {fallback_revision()} (tools/detectron2_fallback/): reinstalling it")
            return install_detectron2_fallback(env, probe)
        if source == "auto" and not (force and ours):  # never replace a detectron2 of yours
            keep = True
        elif source == "pypi" and d2.get("fallback") and not force:
            keep = True
        elif source == "git" and previous == "git" and not force:
            keep = True
        elif source not in ("auto", "git", "pypi") and not force:
            keep = previous == "local" and record.get("detectron2_source") == str(
                Path(source).expanduser().resolve()
            )
        if keep:
            info(f"keeping {where}")
            if previous and record.get("detectron2_location") == d2.get("location"):
                path, src = previous, record.get("detectron2_source", "")
            elif d2.get("fallback"):
                path, src = "pypi-fallback", "pb1-detectron2==0.6 (installed earlier)"
            else:
                path, src = "kept", "already in the environment"
            return {"detectron2_path": path, "detectron2_source": src}
        info(f"replacing {where} (D2_SOURCE={source})")
    elif d2.get("error") and d2["error"] != "not installed":
        warn(f"detectron2 is installed but does not import: {d2['error']}; reinstalling it")

    if source == "pypi":
        return install_detectron2_fallback(env, probe)
    if source == "git":
        ok, why = git_reachable(os.environ.get("D2_GIT_URL", D2_GIT_URL))
        if not ok:
            raise InstallError(
                f"D2_SOURCE=git, but the detectron2 git repository cannot be reached ({why}). "
                "Use D2_SOURCE=pypi (pure-Python fallback) or a local checkout."
            )
        return install_detectron2_git(env)
    if source != "auto":
        return install_detectron2_local(env, source)
    # auto: git if reachable, else the registry fallback.
    url = os.environ.get("D2_GIT_URL", D2_GIT_URL)
    info(f"checking whether {url} can be reached (up to {GIT_TIMEOUT_S} s)")
    ok, why = git_reachable(url)
    if ok:
        try:
            return install_detectron2_git(env)
        except InstallError as e:
            warn(f"installing detectron2 from git failed ({e}); using the registry fallback")
    else:
        info(f"not reachable ({why}): using the registry package pb1-detectron2==0.6")
    return install_detectron2_fallback(env, probe)


def vfnet_build_keys(probe, with_cuda):
    """Hashes of what the install of vfnet (setup.py) and the build of vfnet._C depend on."""
    setup_key = hashlib.sha256((ROOT / "setup.py").read_bytes()).hexdigest()[:16]
    h = hashlib.sha256(setup_key.encode())
    # The sources, and the module that chooses the default CUDA architectures.
    for f in sorted((ROOT / "projects" / "VFNet" / "vfnet" / "csrc").rglob("*")) + [CUDA_ARCH]:
        if f.is_file():
            h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes() + b"\0")
    for k in ("CUDA_HOME", "TORCH_CUDA_ARCH_LIST", "FORCE_CUDA", "CXX", "CC"):
        h.update(f"{k}={os.environ.get(k, '')}\0".encode())
    h.update(f"WITH_CUDA={with_cuda}\0torch={probe.get('torch')}\0".encode())
    return setup_key, h.hexdigest()[:16]


def ensure_vfnet(env, probe, record, with_cuda, force):
    """Returns (record entries, whether something was built)."""
    vf = probe.get("vfnet", {})
    setup_key, build_key = vfnet_build_keys(probe, with_cuda)
    keys = {"vfnet_setup_key": setup_key, "vfnet_build_key": build_key}
    installed_here = vf.get("editable_here") and record.get("vfnet_setup_key") == setup_key
    if installed_here and vf.get("works") and record.get("vfnet_build_key") == build_key and not force:
        info(f"vfnet is installed (editable) and vfnet._C is up to date ({vf['extension']})")
        return keys, False
    if installed_here and not force:
        # Only the extension needs rebuilding: build it in place, incrementally (ninja keeps its
        # objects in build/temp.*), instead of re-running the whole editable install.
        why = "vfnet._C does not load" if not vf.get("works") else "the C++/CUDA sources, torch " \
            "or the build options changed"
        info(f"rebuilding vfnet._C in place ({why})")
        run([env.python, "setup.py", "build_ext", "--inplace"], env=env.env, cwd=ROOT)
        return keys, True
    if not vf.get("installed"):
        reason = "not installed yet"
    elif not vf.get("editable_here"):
        reason = "installed, but not as an editable install of this checkout"
    elif force:
        reason = "--force"
    elif "vfnet_setup_key" not in record:
        reason = f"no install record in {env.venv / RECORD_NAME}"
    else:
        reason = "setup.py changed"
    info(f"installing vfnet in editable mode, which builds vfnet._C ({reason}; about 2 minutes "
         "with the CUDA kernels for six GPU architectures on 2 cores)")
    # -v shows the compiler commands (nvcc included) in the log. --use-pep517: a PEP 660 editable
    # install (an import hook maps `vfnet` to projects/VFNet/vfnet) even with an older pip, which
    # would otherwise run `setup.py develop`, which ignores package_dir.
    env.pip("install", "-v", "--use-pep517", "--no-build-isolation", "--no-deps", "-e", ROOT)
    return keys, True


def describe_cuda_build(vf, torch_cuda):
    """Summary lines: the CUDA architectures vfnet._C was compiled for and the GPUs they run on."""
    if not vf.get("cuda_kernels"):
        return ["no CUDA kernels: on GPUs the ops run their pure-PyTorch fallbacks (README.md)"]
    built = vf.get("cuda_arch_list", "").replace(",", ";")
    lines = [f"CUDA kernels compiled for TORCH_CUDA_ARCH_LIST={built or '(not recorded)'}"]
    spec = importlib.util.spec_from_file_location("vfnet_cuda_arch", CUDA_ARCH)
    cuda_arch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cuda_arch)
    try:
        archs = cuda_arch.parse_arch_list(built)
    except ValueError:
        return lines
    runs, does_not = cuda_arch.gpus_covered(archs)
    ptx = [a.capability for a in archs if a.ptx]
    later = f"; later GPUs through the PTX of {ptx[-1][0]}.{ptx[-1][1]}" if ptx else ""
    lines += textwrap.wrap(f"runs on: {'; '.join(runs)}{later}", width=84, subsequent_indent="  ")
    if does_not:
        lines += textwrap.wrap(f"not on: {'; '.join(does_not)}", width=84, subsequent_indent="  ")
        if torch_cuda and int(torch_cuda.split(".")[0]) >= 13 and any("V100" in g for g in does_not):
            lines.append("(CUDA 13 has no Volta: for V100s use a CUDA 12 build of torch and a CUDA 12 "
                         "toolkit, README.md)")
    if vf.get("gpu"):
        lines.append(f"{'FAILED' if vf.get('cuda_error') else 'checked'} on this machine's {vf['gpu']}")
    return lines


# --------------------------------------------------------------------------------------------


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--venv", default=os.environ.get("VENV", ".venv"),
                   help="environment to create or use (default: .venv)")
    p.add_argument("--d2-source", default=os.environ.get("D2_SOURCE", "auto") or "auto",
                   help="auto | git | pypi | PATH of a detectron2 source (default: auto)")
    p.add_argument("--with-cuda", default=os.environ.get("WITH_CUDA", "auto") or "auto",
                   choices=["auto", "1", "0"],
                   help="build the CUDA kernels of vfnet._C: auto (when a CUDA toolkit is found), "
                   "1 (required) or 0 (never)")
    p.add_argument("--force", action="store_true",
                   help="redo every step (reinstall requirements, detectron2 and vfnet)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    venv = Path(args.venv).expanduser()
    if not venv.is_absolute():
        venv = Path.cwd() / venv
    total = 5
    print(f"VFNet install: environment {venv}, D2_SOURCE={args.d2_source}, "
          f"WITH_CUDA={args.with_cuda}", flush=True)

    step(1, total, "Python environment")
    ensure_venv(venv)
    env = Env(venv, args.with_cuda)
    record = read_record(venv)
    probe = env.probe()
    info(f"Python {probe['python']} at {probe['prefix']}")

    step(2, total, "torch, torchvision and the other requirements (requirements.txt)")
    if ensure_requirements(env, probe, args.force):
        probe = env.probe()
        if probe["missing_requirements"]:
            raise InstallError(f"still missing after pip install: {probe['missing_requirements']}")
        if "torch_error" in probe:
            raise InstallError(f"torch does not import: {probe['torch_error']}")

    step(3, total, f"detectron2 (D2_SOURCE={args.d2_source})")
    d2_record = ensure_detectron2(env, probe, args.d2_source, record, args.force)
    changed_d2 = d2_record.get("detectron2_path") != record.get("detectron2_path") or (
        d2_record.get("detectron2_source") != record.get("detectron2_source")
    )

    step(4, total, "vfnet (editable) and its extension vfnet._C")
    vfnet_keys, rebuilt = ensure_vfnet(env, probe, record, args.with_cuda, args.force)

    step(5, total, "check")
    if rebuilt or changed_d2 or args.force or not probe.get("detectron2", {}).get("importable"):
        probe = env.probe()
    d2, vf = probe.get("detectron2", {}), probe.get("vfnet", {})
    problems = []
    if probe["missing_requirements"]:
        problems.append(f"requirements not satisfied: {probe['missing_requirements']}")
    if not d2.get("importable"):
        problems.append(f"detectron2 does not import: {d2.get('error')}")
    if not vf.get("works"):
        problems.append(f"vfnet._C does not work: {vf.get('error', 'not built')}")
    if args.with_cuda == "1" and not vf.get("cuda_kernels"):
        problems.append("WITH_CUDA=1 but vfnet._C has no CUDA kernels")
    if problems:
        raise InstallError("; ".join(problems))
    if vf.get("cuda_error"):
        warn(f"the CUDA kernels of vfnet._C fail on this machine's {vf['gpu']}: {vf['cuda_error']}. "
             "If vfnet._C was not compiled for it (see the summary), rebuild it with "
             "TORCH_CUDA_ARCH_LIST unset, or including this GPU (README.md)")
    checked = f"the CPU and the {vf['gpu']}" if vf.get("gpu") and not vf.get("cuda_error") else "the CPU"
    info("torch, torchvision, detectron2 and vfnet._C load; vfnet::star_deform_conv and "
         f"vfnet::varifocal_loss give the expected values on {checked}, and an op given a bad input "
         "raises the error that names it")

    cuda = "CPU + CUDA kernels" if vf.get("cuda_kernels") else "CPU kernels only"
    gpu_lines = describe_cuda_build(vf, probe.get("torch_cuda"))
    new_record = {
        "environment": str(venv),
        "python": probe["python"],
        "torch": probe.get("torch"),
        "torchvision": probe.get("torchvision"),
        **d2_record,
        "detectron2_version": d2.get("version"),
        "detectron2_location": d2.get("location"),
        "vfnet_extension": vf.get("extension"),
        "vfnet_kernels": cuda,
        "vfnet_cuda_archs": vf.get("cuda_arch_list", "").replace(",", ";"),
        **vfnet_keys,
    }
    write_record(venv, new_record)

    path = d2_record["detectron2_path"]
    print(
        f"\nVFNet install: done in {time.time() - t0:.0f} s\n"
        f"  environment : {venv} (Python {probe['python']})\n"
        f"  torch       : {probe.get('torch')}, torchvision {probe.get('torchvision')}\n"
        f"  detectron2  : path '{path}': {PATH_DESCRIPTIONS.get(path, path)}\n"
        f"                {d2.get('version')} at {d2.get('location')}\n"
        f"                source: {d2_record.get('detectron2_source')}\n"
        f"  vfnet._C    : {cuda}: {vf.get('extension')}\n"
        + "".join(f"                {line}\n" for line in gpu_lines)
        + f"  record      : {venv / RECORD_NAME}\n"
        f"  another detectron2: make install D2_SOURCE=git|pypi|/path/to/detectron2 (README.md)",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except InstallError as e:
        print(f"\n[install] ERROR: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
