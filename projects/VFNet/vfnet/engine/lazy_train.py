"""Detectron2's LazyConfig training loop with VFNet's checkpointer, evaluation and SWA phase."""
import gc
import logging
from typing import Dict, Optional

from detectron2.config import instantiate
from detectron2.engine import default_writers, hooks
from detectron2.utils import comm

from ..checkpoint import VFNetCheckpointer
from .evaluation import do_test
from .swa_phase import SWA_BEST_METRIC, do_swa, swa_options
from .trainers import ResumableBestCheckpointer, build_trainer, wrap_ddp

__all__ = ["do_train"]

logger = logging.getLogger("detectron2")


def do_train(cfg, resume: bool = False) -> None:
    """
    Detectron2's LazyConfig training loop, with VFNet's checkpointer and periodic evaluation;
    then, with ``train.swa.enabled``, the SWA phase (:func:`do_swa`), or only that with
    ``train.swa.only``.
    """
    swa = swa_options(cfg)
    model = instantiate(cfg.model)
    logger.info("Model:\n{}".format(model))
    model.to(cfg.train.device)

    cfg.optimizer.params.model = model
    model = wrap_ddp(model, cfg.train.device, **cfg.train.ddp)
    if swa is None or not swa["only"]:
        _train_main_schedule(cfg, model, resume, swa)
    if swa is not None:
        gc.collect()  # the main trainer and its data loader workers
        do_swa(cfg, model, swa, resume=resume)


def _train_main_schedule(cfg, model, resume: bool, swa: Optional[Dict]) -> None:
    optimizer = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)
    trainer = build_trainer(cfg, model, train_loader, optimizer)
    checkpointer = VFNetCheckpointer(model, cfg.train.output_dir, optimizer=optimizer, trainer=trainer)
    keep_best = swa is not None and swa["start_from"] == "best"
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if comm.is_main_process() else None,
            hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
            ResumableBestCheckpointer(cfg.train.eval_period, checkpointer, SWA_BEST_METRIC, mode="max")
            if keep_best and comm.is_main_process()
            else None,
            hooks.PeriodicWriter(
                default_writers(cfg.train.output_dir, cfg.train.max_iter), period=cfg.train.log_period
            )
            if comm.is_main_process()
            else None,
        ]
    )
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=resume)
    start_iter = trainer.iter + 1 if resume and checkpointer.has_checkpoint() else 0
    if swa is not None and start_iter >= cfg.train.max_iter:
        logger.info("The main schedule is complete; going on with SWA")
        return
    trainer.train(start_iter, cfg.train.max_iter)
