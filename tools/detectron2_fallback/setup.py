"""setup.py of the pure-Python detectron2 v0.6 fallback (path 3 of `make install`).

tools/install.py copies this file and _C.py next to the `detectron2` package taken from the
verified sdist of the registry package pb1-detectron2==0.6 (with the detectron2.projects.*
packages v0.6 bundles moved under detectron2/projects/), writes export_init.py over
detectron2/export/__init__.py (v0.6's imports caffe2, which PyTorch no longer has: the patched one
guards that import as Detectron2 main does, so detectron2.export and detectron2.utils.analysis
import), then runs `pip install --no-build-isolation` on the result. No compiled code is built.
_C.py's FALLBACK_REVISION numbers these changes: `make install` redoes an older fallback.
"""
from setuptools import find_packages, setup

setup(
    name="detectron2",
    version="0.6",
    author="FAIR",
    url="https://github.com/facebookresearch/detectron2",
    description=(
        "Detectron2 v0.6 Python code (from pb1-detectron2==0.6) without compiled ops: "
        "detectron2._C is a pure-Python fallback whose compiled ops raise a clear error"
    ),
    license="Apache-2.0",
    packages=find_packages(include=("detectron2", "detectron2.*")),
    package_data={
        "detectron2.model_zoo": ["configs/*.yaml", "configs/**/*.yaml", "configs/**/*.py"]
    },
    python_requires=">=3.7",
    install_requires=[
        # Pins that v0.6 needs on current Python: Image.LINEAR was removed in Pillow 10, and
        # detectron2.model_zoo imports pkg_resources (removed in setuptools 81).
        "Pillow>=7.1,<10",
        "setuptools<81",
        "matplotlib",
        "pycocotools>=2.0.2",
        "termcolor>=1.1",
        "yacs>=0.1.8",
        "tabulate",
        "cloudpickle",
        "tqdm>4.29.0",
        "tensorboard",
        "fvcore>=0.1.5,<0.1.6",
        "iopath>=0.1.7,<0.1.10",
        "omegaconf>=2.1",
        "hydra-core>=1.1",
        # LazyConfig.to_py formats with black (v0.6 pins black==21.4b2; current black has the
        # same format_str/Mode/InvalidInput API).
        "black",
    ],
    zip_safe=False,
)
