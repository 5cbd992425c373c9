"""Stand-in for detectron2's compiled extension `detectron2._C` (pure-Python fallback).

This detectron2 is the official v0.6 Python code, taken from the registry package
``pb1-detectron2==0.6`` (whose source distribution has no C++ sources) and repackaged by the
VFNet installer (tools/install.py, ``make install``) as a pure-Python distribution named
``detectron2``. Detectron2 needs ``detectron2._C`` to import at all; this module makes it
importable, and every compiled op it would provide raises :class:`MissingCompiledOpError`
(a RuntimeError) that names the op, what it is for and how to get a compiled detectron2.

Nothing else is affected: models built from detectron2's Python layers (and torchvision ops)
work, VFNet included. Code that can avoid a compiled op can check
``IS_PURE_PYTHON_FALLBACK``, e.g. ``COCOEvaluator(..., use_fast_impl=not IS_PURE_PYTHON_FALLBACK)``.
"""
import torch

#: True: this detectron2 has no compiled ops.
IS_PURE_PYTHON_FALLBACK = True
#: Revision of the repackaging (tools/detectron2_fallback/): `make install` reinstalls a fallback
#: of an older revision. 2: detectron2.export imports without caffe2 (export_init.py).
FALLBACK_REVISION = 2
#: Where the Python code of this detectron2 comes from.
FALLBACK_SOURCE = "pb1-detectron2==0.6 (sdist sha256 5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29)"

_HOW_TO_FIX = (
    "To use it, install a compiled detectron2 in this environment: `make install D2_SOURCE=git` "
    "(builds github.com/facebookresearch/detectron2 as its install docs say) or "
    "`make install D2_SOURCE=/path/to/a/detectron2/checkout`; see README.md, section Install."
)


class MissingCompiledOpError(RuntimeError):
    """A compiled detectron2 op was called, but this detectron2 is the pure-Python fallback."""


def _message(name, purpose):
    return (
        f"detectron2 compiled op `{name}` is not available: it is used for {purpose}. "
        "This detectron2 is the pure-Python fallback of v0.6 (repackaged from the registry "
        "package pb1-detectron2==0.6 by the VFNet installer) and has no compiled ops. "
        + _HOW_TO_FIX
    )


def _unavailable(name, purpose):
    def op(*args, **kwargs):
        raise MissingCompiledOpError(_message(name, purpose))

    op.__name__ = op.__qualname__ = name
    op.__doc__ = f"Unavailable in the pure-Python detectron2 fallback ({purpose})."
    return op


_ROTATED_IOU = "the IoU of rotated boxes (detectron2.layers.pairwise_iou_rotated, RotatedBoxes)"
_DEFORM = (
    "Detectron2's own deformable convolution (detectron2.layers.DeformConv / ModulatedDeformConv,"
    " MODEL.RESNETS.DEFORM_ON_PER_STAGE); torchvision.ops.deform_conv2d works without it"
)
_ROI_ALIGN_ROTATED = "ROIAlignRotated (detectron2.layers.ROIAlignRotated, rotated-box ROI heads)"
_FAST_COCO = (
    "fast COCO evaluation (detectron2.evaluation.COCOEvaluator with use_fast_impl=True, the "
    "default); pass use_fast_impl=False to use pycocotools' Python COCOeval instead"
)
_NMS_ROTATED = "NMS of rotated boxes (detectron2.layers.nms_rotated / batched_nms_rotated)"

# Every symbol of detectron2._C that detectron2 v0.6 uses.
_OPS = {
    "box_iou_rotated": _ROTATED_IOU,
    "deform_conv_forward": _DEFORM,
    "deform_conv_backward_input": _DEFORM,
    "deform_conv_backward_filter": _DEFORM,
    "modulated_deform_conv_forward": _DEFORM,
    "modulated_deform_conv_backward": _DEFORM,
    "roi_align_rotated_forward": _ROI_ALIGN_ROTATED,
    "roi_align_rotated_backward": _ROI_ALIGN_ROTATED,
    "COCOevalAccumulate": _FAST_COCO,
    "COCOevalEvaluateImages": _FAST_COCO,
    "InstanceAnnotation": _FAST_COCO,
    "ImageEvaluation": _FAST_COCO,
}
globals().update({name: _unavailable(name, purpose) for name, purpose in _OPS.items()})


def get_compiler_version():
    """Called by detectron2.utils.collect_env (e.g. in default_setup): must not raise."""
    return "none (pure-Python detectron2 v0.6 fallback: no compiled ops)"


def get_cuda_version():
    """Called by detectron2.utils.collect_env (e.g. in default_setup): must not raise."""
    return "none (pure-Python detectron2 v0.6 fallback: no compiled ops)"


def has_cuda():
    """collect_env asks this before reading GPU arch flags from the extension file."""
    return False


# detectron2.layers.nms_rotated calls torch.ops.detectron2.nms_rotated, which the compiled
# extension registers: register the same schema with a kernel that raises the same kind of error.
def _register_torch_ops():
    try:
        if hasattr(torch.ops.detectron2, "nms_rotated"):  # already registered (e.g. reloaded)
            return
    except Exception:
        pass
    lib = torch.library.Library("detectron2", "FRAGMENT")
    lib.define("nms_rotated(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")

    def nms_rotated(dets, scores, iou_threshold):
        raise MissingCompiledOpError(_message("nms_rotated", _NMS_ROTATED))

    lib.impl("nms_rotated", nms_rotated, "CompositeExplicitAutograd")
    return lib


_LIB = _register_torch_ops()  # keep a reference: the registration lives as long as `_LIB`


def __getattr__(name):
    # Unknown names raise AttributeError (so `hasattr(_C, name)` is simply False), with a hint.
    raise AttributeError(
        f"module 'detectron2._C' has no attribute {name!r} (this detectron2 is the pure-Python "
        "v0.6 fallback installed by the VFNet installer; it has no compiled ops)"
    )
