"""
Export of VFNet to TorchScript (tracing) and ONNX (opset >= 19, standard ``DeformConv``), and the
check that an exported model gives the eager model's detections. ``tools/export_model.py`` is
the command line; see :mod:`vfnet.export.tracing` for what the exported graph takes and returns.
"""
from .agreement import BOX_TOLERANCE_PX, SCORE_TOLERANCE, detection_agreement
from .onnx_export import (
    DEFAULT_OPSET,
    MIN_DEFORM_CONV_OPSET,
    export_onnx,
    load_onnx,
    onnx_op_domains,
    register_deform_conv2d_symbolic,
    run_onnx,
)
from .tracing import (
    OUTPUT_NAMES,
    ExportError,
    export_model_onnx,
    export_torchscript,
    outputs_to_instances,
    prepare_for_export,
    script_model,
    trace_model,
)

__all__ = [
    "BOX_TOLERANCE_PX",
    "SCORE_TOLERANCE",
    "detection_agreement",
    "DEFAULT_OPSET",
    "MIN_DEFORM_CONV_OPSET",
    "export_onnx",
    "load_onnx",
    "onnx_op_domains",
    "register_deform_conv2d_symbolic",
    "run_onnx",
    "OUTPUT_NAMES",
    "ExportError",
    "export_model_onnx",
    "export_torchscript",
    "outputs_to_instances",
    "prepare_for_export",
    "script_model",
    "trace_model",
]
