"""
The SWA phase of a LazyConfig run (``train.swa``), as the reference runs it after its main
schedule: its checked options, the checkpoint it starts from, and its loop (:func:`do_swa`).
"""
import difflib
import logging
import math
import os
from typing import Dict, Optional

from detectron2.config import instantiate
from detectron2.engine import default_writers, hooks
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from omegaconf import OmegaConf

from ..checkpoint import VFNetCheckpointer
from ..lr_scheduler import CyclicCosineParamScheduler
from ..swa import SWAHook
from .evaluation import do_test
from .trainers import build_trainer

__all__ = ["SWA_BEST_METRIC", "swa_options", "swa_start_checkpoint", "swa_iters_per_epoch", "do_swa"]

logger = logging.getLogger("detectron2")

SWA_BEST_METRIC = "bbox/AP"
_SWA_KEYS = {"enabled", "only", "start_from", "epochs", "iters_per_epoch", "lr_end_ratio"}


def swa_options(cfg) -> Optional[Dict]:
    """
    The checked ``train.swa`` options of a LazyConfig (see ``configs/common/train.py``), or None
    when SWA is off or the config has no ``train.swa``.
    """
    node = cfg.train.get("swa", None)
    if node is None:
        return None
    swa = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    for key in sorted(set(swa) - _SWA_KEYS):
        close = difflib.get_close_matches(key, _SWA_KEYS, n=1)
        hint = f"; did you mean train.swa.{close[0]}?" if close else f" (known: {sorted(_SWA_KEYS)})"
        raise KeyError(f"unknown option train.swa.{key}{hint}")
    missing = _SWA_KEYS - set(swa)
    if missing:
        raise KeyError(f"train.swa lacks {sorted(missing)}")
    if not swa["enabled"]:
        if swa["only"]:
            raise ValueError("train.swa.only=True needs train.swa.enabled=True")
        return None
    if not (isinstance(swa["epochs"], int) and swa["epochs"] >= 1):
        raise ValueError(f"train.swa.epochs must be a positive integer, got {swa['epochs']!r}")
    ipe = swa["iters_per_epoch"]
    if ipe is not None and not (isinstance(ipe, int) and ipe >= 1):
        raise ValueError(f"train.swa.iters_per_epoch must be a positive integer or None, got {ipe!r}")
    if not 0.0 <= float(swa["lr_end_ratio"]) <= 1.0:
        raise ValueError(f"train.swa.lr_end_ratio must be in [0, 1], got {swa['lr_end_ratio']!r}")
    if not (isinstance(swa["start_from"], str) and swa["start_from"]):
        raise ValueError(f"train.swa.start_from must be 'best', 'last' or a checkpoint path, got {swa['start_from']!r}")
    if swa["start_from"] == "best" and not swa["only"] and "evaluator" not in cfg.dataloader:
        raise ValueError(
            "train.swa.start_from='best' picks the main run's best checkpoint by bbox/AP, which needs "
            "dataloader.evaluator; set train.swa.start_from='last' or a checkpoint path"
        )
    return swa


def swa_start_checkpoint(cfg, swa: Dict) -> str:
    """The checkpoint whose weights SWA starts from: ``model_best.pth``, ``model_final.pth`` or a path."""
    start = swa["start_from"]
    if start == "best":
        path = os.path.join(cfg.train.output_dir, "model_best.pth")
        hint = (
            f"the main run writes it when its evaluation gives a finite {SWA_BEST_METRIC}; "
            "set train.swa.start_from='last' or a checkpoint path"
        )
    elif start == "last":
        path = os.path.join(cfg.train.output_dir, "model_final.pth")
        hint = "the main run writes it at its end; set train.swa.start_from to a checkpoint path"
    else:
        path, hint = start, "train.swa.start_from names it"
    if "://" not in path and not os.path.isfile(path):
        raise FileNotFoundError(f"SWA cannot start: {path} does not exist ({hint})")
    return path


def swa_iters_per_epoch(cfg, swa: Dict) -> int:
    """``train.swa.iters_per_epoch``, or one pass over the training set: ceil(images / batch)."""
    if swa["iters_per_epoch"] is not None:
        return swa["iters_per_epoch"]
    dataset = instantiate(cfg.dataloader.train.dataset)
    batch = cfg.dataloader.train.total_batch_size
    iters = math.ceil(len(dataset) / batch)
    logger.info(f"SWA epoch: {len(dataset)} training images / {batch} per batch = {iters} iterations")
    return iters


def do_swa(cfg, model, swa: Dict, resume: bool = False) -> None:
    """
    The SWA phase, as the reference runs it after the main schedule (its ``swa_training``):

    - weights only from :func:`swa_start_checkpoint` (the best checkpoint by bbox/AP by default),
      a fresh ``cfg.optimizer`` (the same SGD recipe) and no warm-up;
    - ``train.swa.epochs`` epochs of ``iters_per_epoch`` iterations, the lr restarting at the base
      lr every epoch and annealing with a cosine towards ``lr_end_ratio`` x base
      (:class:`CyclicCosineParamScheduler`);
    - at every epoch end, :class:`SWAHook` updates the running mean of the parameters, saves it as
      ``{output_dir}/swa_model_{epoch}.pth`` and evaluates it (``swa_bbox/AP`` in the logs,
      ``swa_eval_metrics.json``).

    The phase's own checkpoints (model, optimizer, iteration), one per epoch end, go to
    ``{output_dir}/swa/``; ``resume`` continues from the last of them, with the average reloaded
    from the matching ``swa_model_{epoch}.pth``.
    """
    output_dir = cfg.train.output_dir
    iters_per_epoch = swa_iters_per_epoch(cfg, swa)
    max_iter = swa["epochs"] * iters_per_epoch
    optimizer = instantiate(cfg.optimizer)
    # A data loader of its own: Detectron2 v0.6's AspectRatioGroupedDataset keeps its batches in
    # progress on the object, so two iterators over one loader (without workers) corrupt each other.
    train_loader = instantiate(cfg.dataloader.train)
    trainer = build_trainer(cfg, model, train_loader, optimizer)
    swa_dir = os.path.join(output_dir, "swa")
    if comm.is_main_process():
        PathManager.mkdirs(swa_dir)
    checkpointer = VFNetCheckpointer(model, swa_dir, optimizer=optimizer, trainer=trainer)
    evaluate = None
    if "evaluator" in cfg.dataloader:
        evaluate = lambda averaged: do_test(cfg, averaged, metrics_name="swa_eval_metrics.json")  # noqa: E731
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(
                scheduler=CyclicCosineParamScheduler(
                    start_value=1.0, end_value=float(swa["lr_end_ratio"]), num_cycles=swa["epochs"]
                )
            ),
            hooks.PeriodicCheckpointer(
                checkpointer, period=iters_per_epoch, max_to_keep=cfg.train.checkpointer.get("max_to_keep")
            )
            if comm.is_main_process()
            else None,
            SWAHook(iters_per_epoch=iters_per_epoch, output_dir=output_dir, eval_function=evaluate),
            hooks.PeriodicWriter(default_writers(output_dir, max_iter), period=cfg.train.log_period)
            if comm.is_main_process()
            else None,
        ]
    )
    if resume and checkpointer.has_checkpoint():
        checkpointer.resume_or_load("", resume=True)
        start_iter = trainer.iter + 1
    else:
        comm.synchronize()  # the main process may still be writing the main run's last checkpoints
        start = swa_start_checkpoint(cfg, swa)
        VFNetCheckpointer(model, require_head=True).load(start)  # weights only
        start_iter = 0
        logger.info(f"SWA from {start}")
    logger.info(
        f"SWA: {swa['epochs']} epochs of {iters_per_epoch} iterations, lr cycling from base to "
        f"{swa['lr_end_ratio']} x base every epoch"
    )
    trainer.train(start_iter, max_iter)
