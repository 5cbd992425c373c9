"""The trainers and hooks of the LazyConfig loops (main schedule and SWA phase)."""
import time

import torch
from detectron2.engine import AMPTrainer, SimpleTrainer, hooks
from detectron2.engine.defaults import create_ddp_model

__all__ = ["AutocastTrainer", "build_trainer", "wrap_ddp", "ResumableBestCheckpointer"]


class AutocastTrainer(SimpleTrainer):
    """
    :class:`SimpleTrainer` whose forward pass runs under ``torch.autocast`` (bfloat16 by default),
    for CPUs, where Detectron2's ``AMPTrainer`` (CUDA float16 with a grad scaler) does not apply.
    bfloat16 has float32's range, so no loss scaling is needed.
    """

    def __init__(self, model, data_loader, optimizer, device_type: str = "cpu", dtype=torch.bfloat16):
        super().__init__(model, data_loader, optimizer)
        self.device_type = device_type
        self.dtype = dtype

    def run_step(self):
        assert self.model.training, "[AutocastTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        with torch.autocast(self.device_type, dtype=self.dtype):
            loss_dict = self.model(data)
        losses = loss_dict if isinstance(loss_dict, torch.Tensor) else sum(loss_dict.values())
        if isinstance(loss_dict, torch.Tensor):
            loss_dict = {"total_loss": loss_dict}
        self.optimizer.zero_grad()
        losses.backward()
        self._write_metrics(loss_dict, data_time)
        self.optimizer.step()


def build_trainer(cfg, model, data_loader, optimizer) -> SimpleTrainer:
    """SimpleTrainer, or with ``train.amp.enabled``: AMPTrainer on CUDA, bfloat16 autocast on CPU."""
    if not cfg.train.amp.enabled:
        return SimpleTrainer(model, data_loader, optimizer)
    if str(cfg.train.device).startswith("cuda"):
        return AMPTrainer(model, data_loader, optimizer)
    return AutocastTrainer(model, data_loader, optimizer, device_type="cpu", dtype=torch.bfloat16)


def wrap_ddp(model, device, **ddp_kwargs):
    """``create_ddp_model``, also for CPU processes (no ``device_ids``)."""
    if not str(device).startswith("cuda"):
        ddp_kwargs.setdefault("device_ids", None)
    return create_ddp_model(model, **ddp_kwargs)


class ResumableBestCheckpointer(hooks.BestCheckpointer):
    """Detectron2's ``BestCheckpointer`` whose best score so far is saved with the trainer, so that
    ``--resume`` does not overwrite ``model_best.pth`` with a worse model."""

    def state_dict(self):
        return {"best_metric": self.best_metric, "best_iter": self.best_iter}

    def load_state_dict(self, state_dict):
        self.best_metric = state_dict["best_metric"]
        self.best_iter = state_dict["best_iter"]
