"""
ONNX export of VFNet: torchvision's deformable convolution as the standard ``DeformConv`` node.

ONNX has had ``DeformConv`` in its default domain since opset 19 (input, weight, offset, bias,
mask; attributes dilations, group, kernel_shape, offset_group, pads, strides), with
torchvision's offset layout ((dy, dx) of each kernel tap, row-major). torchvision 0.29 registers
ONNX symbolics for ``nms``, ``roi_align`` and ``roi_pool`` but none for ``deform_conv2d``:
:func:`register_deform_conv2d_symbolic` adds one to ``torch.onnx`` (the TorchScript-based
exporter, ``torch.onnx.export(..., dynamo=False)``). Models export with every deformable conv on
its torchvision path (:func:`vfnet.export.prepare_for_export`), so the star offsets (from the
initial boxes, :func:`vfnet.ops.star_offsets`) and the DCNv2 offsets and mask (from their offset
conv) are computed in the graph, and no op of a custom domain remains.

onnxruntime (>= 1.32 checked here) runs ``DeformConv`` on the CPU; ``onnx.reference`` does too,
slowly, in pure Python (:func:`run_onnx` takes either).
"""
from typing import Callable, Dict, List, Sequence

import numpy as np
import torch

__all__ = [
    "MIN_DEFORM_CONV_OPSET",
    "DEFAULT_OPSET",
    "register_deform_conv2d_symbolic",
    "export_onnx",
    "onnx_op_domains",
    "load_onnx",
    "run_onnx",
]

#: The first opset whose default domain has DeformConv.
MIN_DEFORM_CONV_OPSET = 19
DEFAULT_OPSET = 19

_registered = False


def _deform_conv2d_symbolic(g, *args):
    from torch.onnx import symbolic_helper

    return symbolic_helper.parse_args("v", "v", "v", "v", "v", "i", "i", "i", "i", "i", "i", "i", "i", "b")(
        _deform_conv_node
    )(g, *args)


def _deform_conv_node(
    g, x, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups, offset_groups, use_mask
):
    from torch.onnx import symbolic_helper

    weight_shape = symbolic_helper._get_tensor_sizes(weight)
    if weight_shape is None or len(weight_shape) != 4 or any(s is None for s in weight_shape[2:]):
        raise RuntimeError(
            "torchvision::deform_conv2d -> ONNX DeformConv: the weight's kernel size must be known at "
            f"export time (got shape {weight_shape})"
        )
    # torchvision passes a placeholder mask (and a zero bias) when there is none.
    inputs = [x, weight, offset, bias] + ([mask] if use_mask else [])
    return g.op(
        "DeformConv",
        *inputs,
        dilations_i=[dil_h, dil_w],
        group_i=groups,
        kernel_shape_i=list(weight_shape[2:]),
        offset_group_i=offset_groups,
        pads_i=[pad_h, pad_w, pad_h, pad_w],
        strides_i=[stride_h, stride_w],
    )


def register_deform_conv2d_symbolic() -> None:
    """
    Teach ``torch.onnx.export(..., dynamo=False)`` to write ``torchvision::deform_conv2d`` as ONNX
    ``DeformConv`` (for opset 19 and later). Idempotent.
    """
    global _registered
    if not _registered:
        torch.onnx.register_custom_op_symbolic(
            "torchvision::deform_conv2d", _deform_conv2d_symbolic, MIN_DEFORM_CONV_OPSET
        )
        _registered = True


def export_onnx(
    module: torch.nn.Module,
    args: tuple,
    path: str,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Dict[str, Dict[int, str]],
    opset: int = DEFAULT_OPSET,
) -> str:
    """
    ``torch.onnx.export`` (TorchScript-based exporter) of ``module`` (e.g. a ``TracingAdapter``)
    at ``opset`` (>= 19), with the ``DeformConv`` symbolic registered; checks the file with
    ``onnx.checker`` and that every node is of the default ONNX domain. Returns ``path``.
    """
    import onnx

    if opset < MIN_DEFORM_CONV_OPSET:
        raise ValueError(f"ONNX opset {opset}: DeformConv needs opset >= {MIN_DEFORM_CONV_OPSET}")
    register_deform_conv2d_symbolic()
    was_training = module.training
    module.eval()
    try:
        torch.onnx.export(
            module,
            args,
            path,
            opset_version=opset,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            dynamo=False,
        )
    finally:
        module.train(was_training)
    model = onnx.load(path)
    onnx.checker.check_model(model)
    foreign = sorted(d for d in onnx_op_domains(model) if d not in ("", "ai.onnx"))
    if foreign:
        raise RuntimeError(f"{path}: the graph has ops of custom domains {foreign}; expected standard ONNX only")
    return path


def onnx_op_domains(model) -> Dict[str, List[str]]:
    """{domain: sorted op types} of every node of an ``onnx.ModelProto``, subgraphs included."""
    found: Dict[str, set] = {}

    def walk(graph):
        for node in graph.node:
            found.setdefault(node.domain, set()).add(node.op_type)
            for attr in node.attribute:
                if attr.g is not None and len(attr.g.node):
                    walk(attr.g)
                for sub in attr.graphs:
                    walk(sub)

    walk(model.graph)
    return {d: sorted(ops) for d, ops in found.items()}


def load_onnx(path: str, engine: str = "onnxruntime") -> Callable[[Dict[str, np.ndarray]], List[np.ndarray]]:
    """
    A function that runs an exported model on the CPU, ``inputs -> outputs in order``, with
    ``engine`` "onnxruntime" (fast) or "reference" (the ``onnx`` package's pure-Python
    ``ReferenceEvaluator``, slow).
    """
    if engine == "onnxruntime":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    elif engine == "reference":
        from onnx.reference import ReferenceEvaluator

        session = ReferenceEvaluator(path)
    else:
        raise ValueError(f"engine must be 'onnxruntime' or 'reference', got {engine!r}")
    return lambda inputs: session.run(None, inputs)


def run_onnx(path: str, inputs: Dict[str, np.ndarray], engine: str = "onnxruntime") -> List[np.ndarray]:
    """``load_onnx(path, engine)(inputs)``: run an exported model once."""
    return load_onnx(path, engine)(inputs)
