# The reference's learning-rate schedules, counted in epochs as MMDetection counts them, as
# multipliers of the base lr: a linear warm-up over the first 500 iterations from 0.1x, then x0.1
# after 8 and 11 of 12 epochs ("1x"), after 16 and 22 of 24 ("2x"), or after 36 and 40 of 41
# (VFNet-X). One epoch of COCO train2017 (117,266 images with annotations) at 16 images per
# iteration is ceil(117266 / 16) = 7,330 iterations: 1x = 87,960 iterations, 2x = 175,920.
# With another total batch size or dataset, set the iterations per epoch accordingly (and
# `train.max_iter`, `train.eval_period`, `train.checkpointer.period`).
# Project-local (detectron2's own `common/coco_schedule.py` counts 90k iterations for 1x, decays at
# 2/3 and 8/9, and warms up over 1000 iterations from 0.001x).
from fvcore.common.param_scheduler import MultiStepParamScheduler

from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler

COCO_ITERS_PER_EPOCH = 7330  # 16 images per iteration
WARMUP_ITERS = 500
WARMUP_FACTOR = 0.1


def epoch_step_scheduler(epochs, decay_epochs, iters_per_epoch=COCO_ITERS_PER_EPOCH):
    """
    The config of a step lr schedule of ``epochs`` epochs that decays x0.1 after each of
    ``decay_epochs`` (MMDetection's ``lr_config=dict(policy='step', step=decay_epochs)``), after a
    linear warm-up of 500 iterations from 0.1x. Use it with
    ``train.max_iter = epochs * iters_per_epoch``.
    """
    total_iters = int(epochs * iters_per_epoch)
    return L(WarmupParamScheduler)(
        scheduler=L(MultiStepParamScheduler)(
            values=[10.0**-i for i in range(len(decay_epochs) + 1)],
            milestones=[int(e * iters_per_epoch) for e in decay_epochs],
            num_updates=total_iters,
        ),
        warmup_length=WARMUP_ITERS / total_iters,
        warmup_method="linear",
        warmup_factor=WARMUP_FACTOR,
    )


lr_multiplier_1x = epoch_step_scheduler(12, (8, 11))  # x0.1 at iterations 58,640 and 80,630 of 87,960
lr_multiplier_2x = epoch_step_scheduler(24, (16, 22))  # x0.1 at iterations 117,280 and 161,260 of 175,920
lr_multiplier_vfnetx = epoch_step_scheduler(41, (36, 40))  # x0.1 at 263,880 and 293,200 of 300,530
