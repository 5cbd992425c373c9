"""``detectron2/export/__init__.py`` of the pure-Python detectron2 v0.6 fallback.

tools/install.py writes this file over v0.6's own when it repackages pb1-detectron2==0.6 (see
setup.py next to it). v0.6 imports its Caffe2 exporter (``export/api.py``) unconditionally, and
caffe2 is no longer part of PyTorch, so ``import detectron2.export``, and with it
``detectron2.utils.analysis`` (``FlopCountAnalysis``, ``parameter_count_table``, ...) and
Detectron2's tools that use them, failed with ``No module named 'caffe2'``. Detectron2 main
imports the Caffe2 API only when caffe2 can be imported; this module does the same, and keeps the
two names main's tools read from here (``STABLE_ONNX_OPSET_VERSION``, a no-op
``add_export_config``).
"""
import warnings

from .flatten import TracingAdapter
from .torchscript import dump_torchscript_IR, scripting_with_instances

try:
    from caffe2.proto import caffe2_pb2 as _caffe2_pb2  # noqa: F401
    from caffe2.python import core as _caffe2_core  # noqa: F401
except ImportError:
    _HAS_CAFFE2 = False
else:
    _HAS_CAFFE2 = True

if _HAS_CAFFE2:
    # v0.6's Caffe2 API: add_export_config, Caffe2Tracer, Caffe2Model, export_caffe2_model, ...
    from .api import *  # noqa: F401,F403
else:

    def add_export_config(cfg):
        """The Caffe2 export options are gone with caffe2: returns ``cfg`` unchanged."""
        warnings.warn("add_export_config: caffe2 is not installed; it does nothing", DeprecationWarning)
        return cfg


#: The ONNX opset Detectron2 main's tools/deploy/export_model.py exports with.
STABLE_ONNX_OPSET_VERSION = 11

__all__ = [k for k in globals().keys() if not k.startswith("_") and k != "warnings"]
