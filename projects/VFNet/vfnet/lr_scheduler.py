"""Learning-rate multipliers (fvcore ``ParamScheduler``\\ s) that Detectron2 does not have."""

import math

from fvcore.common.param_scheduler import CosineParamScheduler, ParamScheduler

__all__ = ["CyclicCosineParamScheduler"]


class CyclicCosineParamScheduler(ParamScheduler):
    """
    A cosine from ``start_value`` to ``end_value`` repeated ``num_cycles`` times: the SWA schedule
    of the reference (mmcv's ``CyclicLrUpdaterHook`` with ``target_ratio=(1, end_value)``,
    ``cyclic_times=num_cycles``, ``step_ratio_up=0``, by iteration), one cycle per SWA epoch.

    With ``E`` iterations per cycle, iteration ``i`` of ``num_cycles * E`` gets
    ``end + (start - end) / 2 * (1 + cos(pi * (i mod E) / E))``: ``start`` at the first iteration
    of every cycle, ``end`` reached only after its last one. As a Detectron2 ``lr_multiplier``
    (``LRMultiplier``, ``hooks.LRScheduler``) with ``train.max_iter = num_cycles * E`` it multiplies
    the optimizer's base lr: ``start_value=1.0, end_value=0.01`` anneals 0.01 -> 0.0001 every
    epoch, as VFNet-X's SWA does.
    """

    def __init__(self, start_value: float = 1.0, end_value: float = 0.01, num_cycles: int = 1):
        if int(num_cycles) != num_cycles or num_cycles < 1:
            raise ValueError(f"num_cycles must be a positive integer, got {num_cycles}")
        self._cosine = CosineParamScheduler(start_value, end_value)
        self._num_cycles = int(num_cycles)

    def __call__(self, where: float) -> float:
        position = where * self._num_cycles  # cycles completed, e.g. i / E
        nearest = round(position)
        if abs(position - nearest) < 1e-9:  # (i / (N * E)) * N can land a hair below an integer
            position = nearest
        return self._cosine(position - math.floor(position))
