"""A training data loader whose order of images is seeded."""
from typing import Callable, Optional, Sequence

from detectron2.data import build_detection_train_loader
from detectron2.data.samplers import TrainingSampler

__all__ = ["build_seeded_train_loader"]


def build_seeded_train_loader(
    dataset: Sequence[dict],
    *,
    mapper: Callable,
    total_batch_size: int,
    num_workers: int = 0,
    seed: Optional[int] = None,
    **kwargs,
):
    """
    Detectron2's ``build_detection_train_loader`` with its ``TrainingSampler`` seeded by ``seed``:
    the same infinite stream of shuffled indices on every run (each process takes its share of
    it, as usual). ``seed=None`` or a negative seed gives Detectron2's default, a random seed shared
    by the processes, so that each run sees another order.

    Together with ``train.seed`` (which Detectron2's ``default_setup`` gives to python, numpy and
    torch, and from which the data-loader workers draw their augmentation seeds), a seeded run
    repeats itself.
    """
    if seed is not None and seed < 0:
        seed = None
    sampler = TrainingSampler(len(dataset), seed=seed)
    return build_detection_train_loader(
        dataset=dataset, mapper=mapper, sampler=sampler, total_batch_size=total_batch_size, num_workers=num_workers, **kwargs
    )
