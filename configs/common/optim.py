# The reference's optimizer: SGD, lr 0.01 (16 images per batch), momentum 0.9, weight decay
# 1e-4, with MMDetection's parameter rules for `paramwise_cfg=dict(bias_lr_mult=2.,
# bias_decay_mult=0.)` (vfnet.solver.mmdet_optimizer_params): biases at twice the lr and without
# weight decay, except the norm layers' (lr x1, decay 1e-4, like their weights) and the biases of
# the deformable convs' offset convs (lr x1, decay 1e-4).
import torch

from detectron2.config import LazyCall as L

from vfnet.solver import mmdet_optimizer_params

SGD = L(torch.optim.SGD)(
    params=L(mmdet_optimizer_params)(
        # params.model is set to the model object before the optimizer is instantiated
        base_lr="${..lr}",
        weight_decay="${..weight_decay}",
        bias_lr_mult=2.0,
        bias_decay_mult=0.0,
    ),
    lr=0.01,
    momentum=0.9,
    weight_decay=1e-4,
)
