# The optimizer and schedule the quickstart used before it moved to AdamW (SGD, lr 0.03, momentum 0.9,
# Detectron2's bias rule, 2600 iterations, cosine): the recipe of the VFL-detector and ablation runs on
# the embedded dataset (configs/VFL-Detectors/Quickstart, configs/Ablations/Quickstart), whose
# learning rates were tuned for it (RetinaNet and FoveaBox need 0.005). Use with train.max_iter = MAX_ITER.
import torch
from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from detectron2.solver.build import get_default_optimizer_params
from fvcore.common.param_scheduler import CosineParamScheduler

MAX_ITER = 2600

optimizer = L(torch.optim.SGD)(
    params=L(get_default_optimizer_params)(base_lr="${..lr}", bias_lr_factor=2.0, weight_decay_bias=0.0),
    lr=0.03,
    momentum=0.9,
    weight_decay=1e-4,
)

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(CosineParamScheduler)(start_value=1.0, end_value=0.01),
    warmup_length=50 / MAX_ITER,
    warmup_method="linear",
    warmup_factor=0.01,
)
