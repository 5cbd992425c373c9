# The reference's learning-rate schedules, as multipliers of the base lr: linear warm-up over
# the first 500 iterations from 0.1x, then x0.1 after 8 of 12 epochs and again after 11 of 12
# ("1x"), or after 16 and 22 of 24 epochs ("2x"). Epochs are counted in detectron2's manner:
# 1x = 90k iterations of 16 images (~12 COCO train2017 epochs), 2x = 180k.
# Project-local (detectron2's own `common/coco_schedule.py` decays at 2/3 and 8/9 and warms up
# over 1000 iterations from 0.001x).
from fvcore.common.param_scheduler import MultiStepParamScheduler

from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler

ITERS_PER_1X = 90000  # 16 images per batch
WARMUP_ITERS = 500
WARMUP_FACTOR = 0.1


def vfnet_X_scheduler(num_X, decay_epochs=(8, 11), epochs_per_1x=12):
    """
    The config of a multi-step lr schedule of ``num_X`` x 90k iterations (batch 16) that decays
    x0.1 at each of ``decay_epochs``, given for the 1x schedule (12 epochs) and scaled with
    ``num_X`` (2x: epochs 16 and 22 of 24), after a linear warm-up of 500 iterations from 0.1x.
    Use it with ``train.max_iter = num_X * 90000``.
    """
    total_iters = int(num_X * ITERS_PER_1X)
    milestones = [int(round(total_iters * e / epochs_per_1x)) for e in decay_epochs]
    return L(WarmupParamScheduler)(
        scheduler=L(MultiStepParamScheduler)(
            values=[10.0**-i for i in range(len(milestones) + 1)],
            milestones=milestones,
            num_updates=total_iters,
        ),
        warmup_length=WARMUP_ITERS / total_iters,
        warmup_method="linear",
        warmup_factor=WARMUP_FACTOR,
    )


lr_multiplier_1x = vfnet_X_scheduler(1)  # decays at iterations 60000 and 82500 of 90000
lr_multiplier_2x = vfnet_X_scheduler(2)  # decays at iterations 120000 and 165000 of 180000
