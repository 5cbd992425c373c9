# The reference's optimizer: SGD, lr 0.01 (16 images per batch), momentum 0.9, weight decay
# 1e-4; biases at twice the lr and without weight decay (MMDetection's
# `paramwise_cfg=dict(bias_lr_mult=2., bias_decay_mult=0.)`). Norm weights (the head's
# GroupNorm) keep the normal weight decay, as MMDetection's default `norm_decay_mult=1.0`.
# One small difference remains: detectron2 applies the bias rule to the GroupNorm biases too
# (lr x2, no decay), where MMDetection leaves norm biases at lr x1 with decay 1e-4.
import torch

from detectron2.config import LazyCall as L
from detectron2.solver.build import get_default_optimizer_params

SGD = L(torch.optim.SGD)(
    params=L(get_default_optimizer_params)(
        # params.model is meant to be set to the model object before instantiating the optimizer
        base_lr="${..lr}",  # bias_lr_factor multiplies this (required by detectron2 v0.6)
        bias_lr_factor=2.0,
        weight_decay_bias=0.0,
    ),
    lr=0.01,
    momentum=0.9,
    weight_decay=1e-4,
)
