"""The reference's optimizer parameter groups (mmcv's ``DefaultOptimizerConstructor`` rules)."""
from typing import Any, Dict, List, Tuple

import torch
from detectron2.layers import FrozenBatchNorm2d
from detectron2.solver import build_optimizer as d2_build_optimizer
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from .layers import ModulatedDeformConv2d, StarDeformConv2d

__all__ = ["OPTIMIZERS", "mmdet_optimizer_params", "build_optimizer"]

_NORM_TYPES = (_BatchNorm, _InstanceNorm, nn.GroupNorm, nn.LayerNorm, FrozenBatchNorm2d)
_DEFORMABLE_TYPES = (ModulatedDeformConv2d, StarDeformConv2d)


def mmdet_optimizer_params(
    model: nn.Module,
    *,
    base_lr: float,
    weight_decay: float,
    bias_lr_mult: float = 2.0,
    bias_decay_mult: float = 0.0,
    norm_decay_mult: float = 1.0,
    dcn_offset_lr_mult: float = 1.0,
) -> List[Dict[str, Any]]:
    """
    Parameter groups for ``torch.optim.SGD`` that give every trainable parameter the lr and
    weight decay MMDetection gives it with the reference's ``paramwise_cfg=dict(bias_lr_mult=2.,
    bias_decay_mult=0.)``:

    - norm layers (BN, GN, ...: weights and biases): lr x1, weight decay x ``norm_decay_mult``;
    - the offset/mask convs inside a deformable conv (``conv_offset``): lr x ``dcn_offset_lr_mult``,
      full weight decay, their bias included;
    - any other bias: lr x ``bias_lr_mult``, weight decay x ``bias_decay_mult``;
    - everything else: lr x1, full weight decay.

    Detectron2's ``get_default_optimizer_params(bias_lr_factor=2, weight_decay_bias=0)`` differs
    on the norm biases and the offset-conv biases, which it also gives lr x2 and no decay.
    Frozen parameters (``requires_grad=False``) are left out. Parameters of the same (lr, weight
    decay) share a group.
    """
    settings: Dict[Tuple[float, float], List[nn.Parameter]] = {}
    seen = set()

    def visit(module: nn.Module, parent_is_deformable: bool) -> None:
        is_norm = isinstance(module, _NORM_TYPES)
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            lr, decay = base_lr, weight_decay
            if parent_is_deformable and isinstance(module, nn.Conv2d):
                lr = base_lr * dcn_offset_lr_mult
            elif name == "bias" and not is_norm:
                lr = base_lr * bias_lr_mult
            if is_norm:
                decay = weight_decay * norm_decay_mult
            elif name == "bias" and not parent_is_deformable:
                decay = weight_decay * bias_decay_mult
            settings.setdefault((lr, decay), []).append(param)
        for child in module.children():
            visit(child, isinstance(module, _DEFORMABLE_TYPES))

    visit(model, False)
    return [{"params": params, "lr": lr, "weight_decay": decay} for (lr, decay), params in settings.items()]


OPTIMIZERS = ("SGD", "AdamW")


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """
    The optimizer of a yacs config: ``SOLVER.OPTIMIZER`` "SGD" (``MOMENTUM``, ``NESTEROV``) or
    "AdamW" (``BETAS``), over the parameter groups of ``SOLVER.PARAM_RULES``: "detectron2"
    (Detectron2's ``get_default_optimizer_params``; with SGD exactly Detectron2's
    ``build_optimizer``) or "mmdet" (:func:`mmdet_optimizer_params`, its multipliers read from
    ``SOLVER``: ``BIAS_LR_FACTOR``; ``WEIGHT_DECAY_BIAS`` and ``WEIGHT_DECAY_NORM`` relative to
    ``WEIGHT_DECAY``, a norm decay of None meaning the full one). Gradient clipping as Detectron2's
    ``SOLVER.CLIP_GRADIENTS``.
    """
    s = cfg.SOLVER
    rules = s.get("PARAM_RULES", "detectron2")
    kind = s.get("OPTIMIZER", "SGD")
    if kind not in OPTIMIZERS:
        raise ValueError(f"SOLVER.OPTIMIZER must be one of {OPTIMIZERS}, got {kind!r}")
    if rules not in ("mmdet", "detectron2"):
        raise ValueError(f"SOLVER.PARAM_RULES must be 'mmdet' or 'detectron2', got {rules!r}")
    if rules == "detectron2" and kind == "SGD":
        return d2_build_optimizer(cfg, model)

    if rules == "detectron2":
        params = get_default_optimizer_params(
            model,
            base_lr=s.BASE_LR,
            weight_decay_norm=s.WEIGHT_DECAY_NORM,
            bias_lr_factor=s.BIAS_LR_FACTOR,
            weight_decay_bias=s.WEIGHT_DECAY_BIAS,
        )
    else:

        def relative(decay) -> float:
            if decay is None:
                return 1.0
            if s.WEIGHT_DECAY == 0:
                return 0.0
            return decay / s.WEIGHT_DECAY

        params = mmdet_optimizer_params(
            model,
            base_lr=s.BASE_LR,
            weight_decay=s.WEIGHT_DECAY,
            bias_lr_mult=s.BIAS_LR_FACTOR,
            bias_decay_mult=relative(s.WEIGHT_DECAY_BIAS),
            norm_decay_mult=relative(s.WEIGHT_DECAY_NORM),
        )
    if kind == "AdamW":
        return maybe_add_gradient_clipping(cfg, torch.optim.AdamW)(
            params, lr=s.BASE_LR, betas=tuple(s.BETAS), weight_decay=s.WEIGHT_DECAY
        )
    return maybe_add_gradient_clipping(cfg, torch.optim.SGD)(
        params, lr=s.BASE_LR, momentum=s.MOMENTUM, nesterov=s.NESTEROV, weight_decay=s.WEIGHT_DECAY
    )
