"""
Stochastic Weight Averaging (SWA) as the reference runs it after VFNet-X's main schedule, and the
offline averaging of saved checkpoints (the reference's ``swa/get_swa_model.py``).

During the SWA phase (see ``vfnet.engine.do_swa``) the lr restarts every epoch
(:class:`vfnet.lr_scheduler.CyclicCosineParamScheduler`) and, at the end of every epoch,
:class:`SWAHook` folds the model's parameters into a running mean, saves it as
``swa_model_{epoch}.pth`` and evaluates it.
"""

import copy
import logging
import os
from collections import OrderedDict
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import torch
from detectron2.engine import HookBase
from detectron2.evaluation.testing import flatten_results_dict
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "ParameterAverage",
    "SWAHook",
    "average_state_dicts",
    "average_checkpoints",
    "CheckpointMismatchError",
]

logger = logging.getLogger(__name__)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


class ParameterAverage:
    """
    The running equal-weight mean of a model's parameters over the calls to :meth:`update`, kept
    in a copy of the model (``module``) that can be evaluated and saved like the model itself.

    ``update`` does ``avg = avg + (p - avg) / (n + 1)`` for every parameter (the first call
    copies), as the reference's ``AveragedModel``. Buffers (BatchNorm statistics) are not averaged:
    they keep their values of the moment the average was created, as in the reference, whose
    backbones have frozen BatchNorm. (``torch.optim.swa_utils.AveragedModel`` is not used: from
    PyTorch 2.x on it copies the model's current buffers at every update.)
    """

    def __init__(self, model: nn.Module):
        self.module = copy.deepcopy(_unwrap(model))
        for p in self.module.parameters():
            p.grad = None
        self.num_averaged = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current parameters of ``model`` (the averaged architecture) into the mean."""
        current = dict(_unwrap(model).named_parameters())
        averaged = dict(self.module.named_parameters())
        if current.keys() != averaged.keys():
            missing, unexpected = sorted(averaged.keys() - current.keys()), sorted(current.keys() - averaged.keys())
            raise KeyError(
                f"the model's parameters differ from the averaged ones: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        for name, avg in averaged.items():
            p = current[name].detach().to(avg.device)
            if self.num_averaged == 0:
                avg.copy_(p)
            else:
                avg.copy_(avg + (p - avg) / (self.num_averaged + 1))
        self.num_averaged += 1


class SWAHook(HookBase):
    """
    At the end of every SWA epoch (every ``iters_per_epoch`` iterations): update a
    :class:`ParameterAverage` of the trainer's model, save it as
    ``{output_dir}/{file_prefix}_{epoch}.pth`` (``{"model": state_dict, "swa_epoch": epoch,
    "num_averaged": n}``, loadable by ``DetectionCheckpointer``; main process only, and without
    moving ``last_checkpoint``), and, with ``eval_function``, evaluate it and put its results in the
    event storage with the prefix ``swa_`` (e.g. ``swa_bbox/AP``).

    Under DistributedDataParallel every process averages the unwrapped module's parameters (equal
    on all processes) and calls ``eval_function`` (which must run on all processes, as
    Detectron2's ``EvalHook`` requires). When training resumes at iteration ``k * iters_per_epoch
    + j``, the average of the first ``k`` epochs is reloaded from ``{file_prefix}_{k}.pth``.
    """

    def __init__(
        self,
        *,
        iters_per_epoch: int,
        output_dir: str,
        eval_function: Optional[Callable[[nn.Module], Mapping]] = None,
        file_prefix: str = "swa_model",
    ):
        """
        Args:
            iters_per_epoch: iterations per SWA epoch; the average is updated after iterations
                ``iters_per_epoch - 1``, ``2 * iters_per_epoch - 1``, ... (0-based).
            output_dir: where the averaged models are written.
            eval_function: called with the averaged model; returns a nested dict of metrics.
            file_prefix: the averaged model of epoch ``e`` (1-based) is ``{file_prefix}_{e}.pth``.
        """
        if int(iters_per_epoch) != iters_per_epoch or iters_per_epoch < 1:
            raise ValueError(f"iters_per_epoch must be a positive integer, got {iters_per_epoch}")
        self._iters_per_epoch = int(iters_per_epoch)
        self._output_dir = output_dir
        self._eval_function = eval_function
        self._file_prefix = file_prefix
        self.average: Optional[ParameterAverage] = None

    def path_of_epoch(self, epoch: int) -> str:
        return os.path.join(self._output_dir, f"{self._file_prefix}_{epoch}.pth")

    def before_train(self):
        self.average = ParameterAverage(self.trainer.model)
        epochs_done = self.trainer.start_iter // self._iters_per_epoch
        if epochs_done > 0:
            self._restore(epochs_done)

    def after_step(self):
        next_iter = self.trainer.iter + 1
        if next_iter % self._iters_per_epoch != 0:
            return
        epoch = next_iter // self._iters_per_epoch
        self.average.update(self.trainer.model)
        self._save(epoch)
        if self._eval_function is not None:
            self._evaluate(epoch)

    def _save(self, epoch: int) -> None:
        if comm.is_main_process():
            path = self.path_of_epoch(epoch)
            PathManager.mkdirs(self._output_dir)
            data = {
                "model": self.average.module.state_dict(),
                "swa_epoch": epoch,
                "num_averaged": self.average.num_averaged,
            }
            with PathManager.open(path, "wb") as f:
                torch.save(data, f)
            logger.info(f"Saved the average of {self.average.num_averaged} SWA epochs to {path}")
        comm.synchronize()

    def _restore(self, epochs_done: int) -> None:
        path = self.path_of_epoch(epochs_done)
        if not PathManager.exists(path):
            raise FileNotFoundError(
                f"resuming SWA after {epochs_done} epochs needs their average {path}, which does not exist"
            )
        with PathManager.open(path, "rb") as f:
            state = torch.load(f, map_location="cpu", weights_only=True)
        if state.get("num_averaged") != epochs_done:
            raise ValueError(f"{path} averages {state.get('num_averaged')} epochs, expected {epochs_done}")
        self.average.module.load_state_dict(state["model"], strict=True)
        self.average.num_averaged = epochs_done
        logger.info(f"Resumed the SWA average of {epochs_done} epochs from {path}")

    def _evaluate(self, epoch: int) -> None:
        results = self._eval_function(self.average.module)
        if results:
            flattened = {f"swa_{k}": float(v) for k, v in flatten_results_dict(results).items()}
            self.trainer.storage.put_scalars(**flattened, smoothing_hint=False)
            if "swa_bbox/AP" in flattened:
                logger.info(f"SWA model of epoch {epoch}: bbox AP {flattened['swa_bbox/AP']:.3f}")
        comm.synchronize()


class CheckpointMismatchError(ValueError):
    """Checkpoints to average do not hold the same tensors."""


def average_state_dicts(state_dicts: Sequence[Mapping[str, torch.Tensor]], names: Optional[Sequence[str]] = None):
    """
    The element-wise mean of several state dicts with the same keys, shapes and dtypes.

    Floating-point tensors are averaged in float64 and cast back to their dtype; other tensors
    (integer counters such as BatchNorm's ``num_batches_tracked``, booleans) are taken from the
    last state dict.

    Args:
        state_dicts: at least one ``{name: tensor}``.
        names: one label per state dict (e.g. its file), for the error messages.
    Returns:
        OrderedDict in the key order of the first state dict.
    Raises:
        CheckpointMismatchError: naming the state dicts and the keys, shapes or dtypes that differ.
    """
    if not state_dicts:
        raise ValueError("nothing to average: no state dicts given")
    names = list(names) if names is not None else [f"state dict {i}" for i in range(len(state_dicts))]
    if len(names) != len(state_dicts):
        raise ValueError(f"{len(names)} names for {len(state_dicts)} state dicts")
    first, first_name = state_dicts[0], names[0]
    for sd, name in zip(state_dicts, names):
        for key, value in sd.items():
            if not isinstance(value, torch.Tensor):
                raise CheckpointMismatchError(f"{name}: {key} is a {type(value).__name__}, not a tensor")
        missing, extra = sorted(first.keys() - sd.keys()), sorted(sd.keys() - first.keys())
        if missing or extra:
            raise CheckpointMismatchError(
                f"{name} and {first_name} hold different tensors: {len(missing)} only in {first_name} "
                f"(e.g. {missing[:3]}), {len(extra)} only in {name} (e.g. {extra[:3]})"
            )
        for key, value in first.items():
            other = sd[key]
            if other.shape != value.shape or other.dtype != value.dtype:
                raise CheckpointMismatchError(
                    f"{key} is {tuple(other.shape)} {other.dtype} in {name} but "
                    f"{tuple(value.shape)} {value.dtype} in {first_name}"
                )
    averaged = OrderedDict()
    for key, value in first.items():
        if value.is_floating_point() or value.is_complex():
            wide = torch.complex128 if value.is_complex() else torch.float64
            total = sum(sd[key].detach().to("cpu", wide) for sd in state_dicts)
            averaged[key] = (total / len(state_dicts)).to(value.dtype)
        else:
            averaged[key] = state_dicts[-1][key].detach().cpu().clone()
    return averaged


def _model_state(checkpoint, path: str) -> Dict[str, torch.Tensor]:
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("model"), Mapping):
        return checkpoint["model"]
    if isinstance(checkpoint, Mapping) and checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return checkpoint  # a bare state dict
    keys = sorted(checkpoint.keys())[:6] if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
    raise CheckpointMismatchError(
        f"{path} holds no model weights (expected a Detectron2 checkpoint with a 'model' entry or a "
        f"state dict; found {keys}). MMDetection checkpoints: convert them first with "
        "tools/convert_mmdet_checkpoint.py"
    )


def average_checkpoints(paths: Sequence[str]) -> Dict[str, object]:
    """
    The plain average of the model weights of several checkpoints (Detectron2 ``.pth`` files with
    a ``"model"`` entry, e.g. ``model_0089999.pth``, or bare state dicts), as
    :func:`average_state_dicts` computes it. Returns ``{"model": averaged, "averaged_from": paths}``,
    which ``DetectionCheckpointer`` loads; optimizer and trainer states are not kept.
    """
    if not paths:
        raise ValueError("nothing to average: no checkpoint given")
    states: List[Mapping[str, torch.Tensor]] = []
    for path in paths:
        try:
            with PathManager.open(path, "rb") as f:
                checkpoint = torch.load(f, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError) as e:
            raise OSError(f"cannot read checkpoint {path}: {e}") from e
        states.append(_model_state(checkpoint, path))
    return {"model": average_state_dicts(states, names=list(paths)), "averaged_from": [str(p) for p in paths]}
