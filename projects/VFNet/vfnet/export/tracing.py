"""
TorchScript and ONNX export of VFNet, the way Detectron2 exports its dense detectors.

Detectron2's ``tools/deploy/export_model.py`` traces a dense detector (RetinaNet, FCOS) whole,
through :class:`detectron2.export.TracingAdapter`: the exported graph takes one image tensor and
returns the final detections, post-processing included (score threshold, top-k, box decoding,
clipping, class-wise NMS, the ``max_detections_per_image`` best). VFNet exports the same way:

- input ``image``: (3, H, W) float32, the image *after* the test-time resize (e.g. shortest edge
  800, longest at most 1333), in the model's channel order (``input_format``, RGB for VFNet's
  configs), pixel values 0-255; normalisation and padding happen in the graph;
- outputs ``pred_boxes`` (K, 4) XYXY in the input image's pixels, ``pred_classes`` (K,) int64,
  ``scores`` (K,) float32, ``image_size`` (2,) int64 (H, W): K varies with the image (at most
  ``max_detections_per_image``). Rescaling to the original image is left to the caller, as in
  Detectron2's export (``height``/``width`` are not inputs of the graph).

The NMS is in the graph: ``torchvision::nms`` in TorchScript, ``NonMaxSuppression`` in ONNX.
Soft-NMS (VFNet-X, ``test_nms_type="soft_nms"``) is a Python loop whose trip count tracing would
freeze, and the ``"points"`` top-k mode compares a feature-map size with the top-k in Python:
both are refused with a message (export with ``test_nms_type=nms`` / ``test_topk_mode=pairs``).

Every deformable conv is switched to its torchvision path first (:func:`prepare_for_export`):
the fused ``vfnet::*`` ops are this package's own and exist neither in ONNX nor in a runtime
without ``vfnet._C``; on the CPU in float32 both paths give the same output bit for bit.
"""
from typing import Dict, List, Tuple

import torch
from detectron2.export import TracingAdapter, scripting_with_instances
from detectron2.structures import Boxes, Instances
from torch import Tensor, nn

from ..layers import disable_fused_deformable_convs
from ..meta_arch import VFNet
from .onnx_export import DEFAULT_OPSET, export_onnx

__all__ = [
    "OUTPUT_NAMES",
    "ExportError",
    "prepare_for_export",
    "trace_model",
    "export_torchscript",
    "export_model_onnx",
    "script_model",
    "outputs_to_instances",
]

#: Names of the exported graph's outputs, in order (TracingAdapter flattens Instances' fields
#: sorted by name, then its image size).
OUTPUT_NAMES = ("pred_boxes", "pred_classes", "scores", "image_size")


class ExportError(RuntimeError):
    """The model cannot be exported this way; the message says why and what to do."""


def prepare_for_export(model: nn.Module) -> nn.Module:
    """
    Put ``model`` in eval mode with every deformable conv on its torchvision path, in place, and
    check that VFNet's test-time options can be traced. Returns ``model``.

    Raises:
        ExportError: Soft-NMS or the "points" top-k mode (see the module docstring), or a model
            whose backbone and head are compiled (``compile_mode``).
    """
    if getattr(model, "compile_mode", None) is not None:
        raise ExportError(
            f"{type(model).__name__} with compile_mode={model.compile_mode!r} cannot be exported (its backbone and "
            "head are compiled by torch.compile); export with model.compile_mode=None (MODEL.<DETECTOR>.COMPILE '')"
        )
    model.eval()
    disable_fused_deformable_convs(model)
    if isinstance(model, VFNet):
        if model.test_nms_type != "nms":
            raise ExportError(
                f"VFNet with test_nms_type={model.test_nms_type!r} cannot be traced (Soft-NMS is a Python "
                "loop); export with model.test_nms_type=nms (MODEL.VFNET.NMS_TYPE nms)"
            )
        if model.test_topk_mode != "pairs":
            raise ExportError(
                f"VFNet with test_topk_mode={model.test_topk_mode!r} cannot be traced (its top-k depends on a "
                "feature-map size compared in Python); export with model.test_topk_mode=pairs "
                "(MODEL.VFNET.TOPK_CANDIDATES_MODE pairs)"
            )
    return model


def _custom_ops(graph) -> List[str]:
    return sorted({n.kind() for n in graph.nodes() if n.kind().startswith("vfnet::")})


def trace_model(model: nn.Module, image: Tensor) -> Tuple[TracingAdapter, torch.jit.ScriptModule]:
    """
    Trace ``model`` (already :func:`prepare_for_export`-ed) on one (3, H, W) image.

    Returns:
        (adapter, traced): the ``TracingAdapter`` (its ``outputs_schema`` rebuilds Instances) and
        the traced TorchScript module, ``traced(image) -> (pred_boxes, pred_classes, scores,
        image_size)``.
    """
    adapter = TracingAdapter(model, [{"image": image}]).eval()
    with torch.no_grad():
        traced = torch.jit.trace(adapter, (image,))
    leftover = _custom_ops(traced.inlined_graph)
    if leftover:
        raise ExportError(f"the traced graph still calls {leftover}; call prepare_for_export(model) first")
    return adapter, traced


def export_torchscript(model: nn.Module, image: Tensor, path: str) -> torch.jit.ScriptModule:
    """:func:`trace_model`, saved to ``path`` (load with ``torch.jit.load``)."""
    _, traced = trace_model(model, image)
    traced.save(path)
    return traced


def export_model_onnx(model: nn.Module, image: Tensor, path: str, opset: int = DEFAULT_OPSET) -> TracingAdapter:
    """
    Export ``model`` (already :func:`prepare_for_export`-ed) to ONNX at ``path``, traced on
    ``image`` (3, H, W), with dynamic height and width. Returns the ``TracingAdapter``.
    """
    adapter = TracingAdapter(model, [{"image": image}]).eval()
    detections = {0: "detections"}
    export_onnx(
        adapter,
        (image,),
        path,
        input_names=["image"],
        output_names=list(OUTPUT_NAMES),
        dynamic_axes={
            "image": {1: "height", 2: "width"},
            "pred_boxes": detections,
            "pred_classes": detections,
            "scores": detections,
        },
        opset=opset,
    )
    return adapter


def outputs_to_instances(outputs) -> Instances:
    """The four outputs of an exported model (tensors or numpy arrays) -> ``Instances``."""
    boxes, classes, scores, image_size = (torch.as_tensor(o) for o in outputs)
    result = Instances((int(image_size[0]), int(image_size[1])))
    result.pred_boxes = Boxes(boxes)
    result.pred_classes = classes
    result.scores = scores
    return result


def script_model(model: nn.Module) -> torch.jit.ScriptModule:
    """
    Script ``model`` as Detectron2's ``export_model.py --export-method scripting`` does for a
    detector that returns Instances (``scripting_with_instances``): the result takes a tuple of
    ``{"image": (3, H, W)}`` dicts and returns one dict of fields per image.

    Raises:
        ExportError: TorchScript's compiler refused the model; the message quotes its first
            complaint. (At the time of writing VFNet's head and detector are not scriptable: use
            tracing.)
    """

    class ScriptableVFNet(nn.Module):
        def __init__(self, detector: nn.Module):
            super().__init__()
            self.model = detector
            self.eval()

        def forward(self, inputs: Tuple[Dict[str, Tensor]]) -> List[Dict[str, Tensor]]:
            return [i.get_fields() for i in self.model(inputs)]

    fields = {"pred_boxes": Boxes, "scores": Tensor, "pred_classes": Tensor}
    try:
        return scripting_with_instances(ScriptableVFNet(model), fields)
    except Exception as e:  # TorchScript's frontend raises several types; all mean "not scriptable"
        first = str(e).strip().splitlines()
        raise ExportError(
            f"{type(model).__name__} cannot be scripted: {type(e).__name__}: {' '.join(first[:8])} ... "
            "Use tracing (--export-method tracing), which exports the same detections."
        ) from e
