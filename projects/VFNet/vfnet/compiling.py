"""
``torch.compile`` for a detector's backbone and head, the opt-in ``compile_mode`` of every VFL
detector (``model.compile_mode`` in a LazyConfig, ``MODEL.<DETECTOR>.COMPILE`` in yacs).

Only the backbone (with its FPN) and the head are compiled: they are the network, and they trace
to one graph each (no graph breaks, eval and train). Pre- and post-processing (label assignment,
losses, decoding, NMS) stay eager: their shapes depend on the data.
"""
from typing import Optional

import torch
from torch import nn

__all__ = [
    "COMPILE_MODES",
    "CUDA_GRAPH_MODES",
    "apply_compile_mode",
    "begin_cuda_graph_step",
    "check_compile_mode",
    "compile_backbone_and_head",
]

#: torch.compile's modes. "reduce-overhead" replays CUDA graphs (GPU; one per input size).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: The modes whose compiled modules replay CUDA graphs on a GPU.
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def check_compile_mode(mode: Optional[str], owner: str) -> Optional[str]:
    """``mode`` if it is one of :data:`COMPILE_MODES`, None for None or "" (no compilation).

    Raises:
        ValueError: any other value (the message names ``owner``, the detector).
    """
    if mode is None or mode == "":
        return None
    if mode not in COMPILE_MODES:
        raise ValueError(f"{owner}: compile_mode must be None or one of {COMPILE_MODES}, got {mode!r}")
    return mode


def apply_compile_mode(model: nn.Module, mode: Optional[str]) -> Optional[str]:
    """A detector's ``compile_mode`` argument: checked (:func:`check_compile_mode`, the message
    naming the detector's class) and, unless None or "", applied with
    :func:`compile_backbone_and_head`. Returns the mode, None for no compilation."""
    mode = check_compile_mode(mode, type(model).__name__)
    if mode is not None:
        compile_backbone_and_head(model, mode)
    return mode


def compile_backbone_and_head(model: nn.Module, mode: str) -> None:
    """
    Compile ``model.backbone`` and ``model.head`` in place with ``torch.compile(mode=mode)``
    (:meth:`torch.nn.Module.compile`: parameter names, ``state_dict`` and checkpoints are those
    of the uncompiled model).

    Nothing is compiled until the first call; each new input size compiles again, until
    torch.compile switches to dynamic sizes (from the second size on, with a few more
    recompilations where a size crosses a threshold of the convolution backends). On two CPU
    cores the first call of a ResNet-50 VFNet took 31 s in inference and 104 s for a training
    step with torch's on-disk cache empty, 4 and 8 s once it held the kernels.

    With CUDA graphs (:data:`CUDA_GRAPH_MODES`), each call of ``model`` first marks the start of a
    new step of torch's CUDA graphs (:func:`begin_cuda_graph_step`, a forward pre-hook of
    ``model``). Without it, in inference torch starts a new step at each call of a compiled
    module, so the head's call would overwrite the backbone's outputs, its own inputs ("accessing
    tensor output of CUDAGraphs that has been overwritten by a subsequent run"). The graphs'
    outputs are overwritten by the next call; the detections a call returns are computed from them
    outside the graphs and stay as they are.
    """
    model.backbone.compile(mode=mode)
    model.head.compile(mode=mode)
    if mode in CUDA_GRAPH_MODES:
        model.register_forward_pre_hook(begin_cuda_graph_step)


def begin_cuda_graph_step(module: nn.Module, args) -> None:
    """A forward pre-hook: ``torch.compiler.cudagraph_mark_step_begin()``. The compiled backbone
    and head of one call of the detector are then one step of CUDA graphs, the head's graph
    reading the backbone's outputs in place."""
    torch.compiler.cudagraph_mark_step_begin()
