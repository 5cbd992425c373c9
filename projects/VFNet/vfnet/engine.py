"""
Training and evaluation loops for both config styles: LazyConfig ``.py`` files (Detectron2's
``lazyconfig_train_net.py`` loop) and yacs ``.yaml`` files (``DefaultTrainer``).
"""
import difflib
import gc
import json
import logging
import math
import os
import time
import weakref
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import torch
from detectron2.config import CfgNode, LazyConfig, get_cfg, instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader, build_detection_train_loader, get_detection_dataset_dicts
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, default_writers, hooks
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import COCOEvaluator, inference_on_dataset, print_csv_format
from detectron2.solver import LRMultiplier
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from omegaconf import OmegaConf

from .checkpoint import VFNetCheckpointer
from .config import add_vfnet_config
from .data.augmentations import build_train_augmentations
from .data.mapper import CheckedDatasetMapper, DatasetMapperWithBoxes
from .data.validation import check_dataset_dicts
from .lr_scheduler import CyclicCosineParamScheduler
from .solver import build_optimizer
from .swa import SWAHook
from .tta import MultiScaleFlipMapper, VFNetWithTTA, yacs_tta_test_config

__all__ = [
    "load_config",
    "apply_overrides",
    "build_evaluator",
    "checked_dataset_dicts",
    "do_test",
    "do_train",
    "do_swa",
    "swa_options",
    "Trainer",
    "write_metrics",
    "launch_cpu",
]

logger = logging.getLogger("detectron2")

# MMDetection keeps the loss and test options in the head; here they are options of the
# detector. ``model.head.<option>=...`` overrides are accepted for these and applied to ``model``.
_DETECTOR_OPTIONS_ALIASED_FROM_HEAD = (
    "use_vfl",
    "vfl_alpha",
    "vfl_gamma",
    "vfl_iou_weighted",
    "focal_loss_alpha",
    "focal_loss_gamma",
    "loss_cls_weight",
    "loss_bbox_init_weight",
    "loss_bbox_refine_weight",
    "test_score_thresh",
    "test_topk_candidates",
    "test_topk_mode",
    "test_nms_type",
    "test_nms_thresh",
    "max_detections_per_image",
)


def has_fast_coco_eval() -> bool:
    """Whether detectron2's compiled COCO evaluation is available (not in the pure-Python v0.6)."""
    try:
        from detectron2 import _C
    except ImportError:
        return False
    return not getattr(_C, "IS_PURE_PYTHON_FALLBACK", False)


def build_evaluator(dataset_name: str, output_dir: Optional[str] = None) -> COCOEvaluator:
    """COCO box evaluation (AP, AP50, AP75, APs/m/l and per-class AP) of ``dataset_name``."""
    json_file = getattr(MetadataCatalog.get(dataset_name), "json_file", None)
    if json_file and not os.path.exists(json_file):
        DatasetCatalog.get(dataset_name)  # datasets generated on first use (vfnet.data) write it
    return COCOEvaluator(dataset_name, tasks=("bbox",), output_dir=output_dir, use_fast_impl=has_fast_coco_eval())


def checked_dataset_dicts(names, **kwargs) -> List[Dict]:
    """``get_detection_dataset_dicts`` followed by :func:`check_dataset_dicts` on the result."""
    dicts = get_detection_dataset_dicts(names, **kwargs)
    return check_dataset_dicts(dicts, dataset_name=",".join([names] if isinstance(names, str) else names))


# ------------------------------------------------------------------ configs


def _all_keys(cfg) -> List[str]:
    keys = []

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                keys.append(f"{prefix}{k}")
                walk(v, f"{prefix}{k}.")

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return keys


def _yacs_keys(cfg: CfgNode, prefix: str = "") -> List[str]:
    keys = []
    for k, v in cfg.items():
        keys.append(prefix + k)
        if isinstance(v, CfgNode):
            keys.extend(_yacs_keys(v, prefix + k + "."))
    return keys


def apply_overrides(cfg, overrides: Sequence[str]):
    """
    Apply ``KEY=VALUE`` overrides to a config, refusing keys it does not have.

    LazyConfig: ``+KEY=VALUE`` adds a new key on purpose, and ``model.head.<detector option>``
    is accepted as an alias of ``model.<option>`` (MMDetection's names; see
    ``_DETECTOR_OPTIONS_ALIASED_FROM_HEAD``). yacs ``CfgNode``: ``KEY=VALUE`` items or
    ``KEY VALUE`` pairs, as ``merge_from_list`` takes them.
    """
    if isinstance(cfg, CfgNode):
        opts: List[str] = []
        for item in overrides:
            opts.extend(item.split("=", 1) if "=" in item else [item])
        if len(opts) % 2:
            raise ValueError(f"yacs overrides must be KEY VALUE pairs or KEY=VALUE items, got {list(overrides)}")
        known = _yacs_keys(cfg)
        for key in opts[0::2]:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=3)
                hint = f"; did you mean {' or '.join(close)}?" if close else ""
                raise KeyError(f"unknown config key {key!r}{hint}")
        cfg.merge_from_list(opts)
        return cfg
    resolved = []
    missing = object()
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not of the form KEY=VALUE")
        if key.startswith("+"):
            resolved.append(f"{key[1:]}={value}")
            continue
        if key.startswith("model.head.") and key[len("model.head.") :] in _DETECTOR_OPTIONS_ALIASED_FROM_HEAD:
            new_key = "model." + key[len("model.head.") :]
            logger.info(f"override {key} applies to the detector: {new_key}")
            key = new_key
        if OmegaConf.select(cfg, key, default=missing) is missing:
            close = difflib.get_close_matches(key, _all_keys(cfg), n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise KeyError(f"unknown config key {key!r} in override {item!r}{hint}")
        resolved.append(f"{key}={value}")
    return LazyConfig.apply_overrides(cfg, resolved)


def load_config(config_file: str, overrides: Sequence[str] = ()):
    """
    Load a LazyConfig ``.py`` (an omegaconf DictConfig) or a yacs ``.yaml`` with ``MODEL.VFNET``
    (a CfgNode), then apply :func:`apply_overrides`.
    """
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"config file {config_file} does not exist")
    if config_file.endswith(".py"):
        cfg = LazyConfig.load(config_file)
    elif config_file.endswith((".yaml", ".yml")):
        cfg = get_cfg()
        add_vfnet_config(cfg)
        cfg.merge_from_file(config_file)
    else:
        raise ValueError(f"config file {config_file}: expected a LazyConfig .py or a yacs .yaml")
    return apply_overrides(cfg, overrides)


# ------------------------------------------------------------------ LazyConfig loops


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


def write_metrics(results: Dict, output_dir: str, name: str = "eval_metrics.json") -> Optional[str]:
    """
    Write evaluation results as JSON (main process only) to ``output_dir/name``; not
    ``metrics.json``, which is Detectron2's training log of scalars. Returns the path.
    """
    if not comm.is_main_process() or not output_dir:
        return None
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, name)
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    logger.info(f"Evaluation metrics written to {path}")
    return path


def wrap_ddp(model, device, **ddp_kwargs):
    """``create_ddp_model``, also for CPU processes (no ``device_ids``)."""
    if not str(device).startswith("cuda"):
        ddp_kwargs.setdefault("device_ids", None)
    return create_ddp_model(model, **ddp_kwargs)


def do_test(cfg, model, metrics_name: str = "eval_metrics.json") -> Dict:
    """
    Evaluate ``model`` on ``cfg.dataloader.test`` with ``cfg.dataloader.evaluator``; the results go
    to ``{train.output_dir}/{metrics_name}``.
    """
    if "evaluator" not in cfg.dataloader:
        return {}
    results = inference_on_dataset(model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator))
    if comm.is_main_process():
        print_csv_format(results)
    write_metrics(results, cfg.train.output_dir, name=metrics_name)
    return results


class ResumableBestCheckpointer(hooks.BestCheckpointer):
    """Detectron2's ``BestCheckpointer`` whose best score so far is saved with the trainer, so that
    ``--resume`` does not overwrite ``model_best.pth`` with a worse model."""

    def state_dict(self):
        return {"best_metric": self.best_metric, "best_iter": self.best_iter}

    def load_state_dict(self, state_dict):
        self.best_metric = state_dict["best_metric"]
        self.best_iter = state_dict["best_iter"]


# ------------------------------------------------------------------ SWA options

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


# ------------------------------------------------------------------ LazyConfig training


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


# ------------------------------------------------------------------ CPU processes


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cpu_worker(rank: int, main_func, world_size: int, dist_url: str, args: tuple):
    import torch.distributed as dist

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    dist.init_process_group("gloo", init_method=dist_url, world_size=world_size, rank=rank)
    if hasattr(comm, "create_local_process_group"):  # Detectron2 after v0.6
        comm.create_local_process_group(world_size)
    else:
        comm._LOCAL_PROCESS_GROUP = dist.new_group(list(range(world_size)))
    comm.synchronize()
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()


def launch_cpu(main_func, num_processes: int, args: tuple = ()):
    """
    Run ``main_func(*args)`` in ``num_processes`` CPU processes on this machine that train
    together (data-parallel, gloo), each with its share of the CPU threads; with 1, in this
    process. Detectron2 v0.6's ``launch`` needs one GPU per process; this is its CPU counterpart.
    """
    if num_processes <= 1:
        return main_func(*args)
    import torch.multiprocessing as mp

    dist_url = f"tcp://127.0.0.1:{_free_port()}"
    mp.start_processes(
        _cpu_worker, nprocs=num_processes, args=(main_func, num_processes, dist_url, args), start_method="spawn"
    )
    return None


# ------------------------------------------------------------------ yacs loop


def yacs_swa_iters_per_epoch(cfg: CfgNode) -> int:
    """Iterations per SWA epoch of a yacs config with ``SOLVER.SWA.ENABLED``: MAX_ITER / EPOCHS."""
    epochs, max_iter = cfg.SOLVER.SWA.EPOCHS, cfg.SOLVER.MAX_ITER
    if epochs < 1 or max_iter % epochs:
        raise ValueError(
            f"SOLVER.SWA.EPOCHS ({epochs}) must divide SOLVER.MAX_ITER ({max_iter}): "
            "set SOLVER.MAX_ITER to SWA epochs x iterations per epoch"
        )
    return max_iter // epochs


class Trainer(DefaultTrainer):
    """
    ``DefaultTrainer`` for ``.yaml`` configs: COCO evaluation, checked data, VFNet checkpointer;
    with ``SOLVER.SWA.ENABLED``, an SWA run (see ``add_vfnet_config``).
    """

    def build_hooks(self):
        # DefaultTrainer.__init__ builds its checkpointer, then the hooks; swap ours in first.
        self.checkpointer = VFNetCheckpointer(self._trainer.model, self.cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        ret = super().build_hooks()
        if self.cfg.SOLVER.SWA.ENABLED:
            swa = SWAHook(
                iters_per_epoch=yacs_swa_iters_per_epoch(self.cfg),
                output_dir=self.cfg.OUTPUT_DIR,
                eval_function=lambda averaged: self.test(self.cfg, averaged, metrics_name="swa_eval_metrics.json"),
            )
            writers = [i for i, h in enumerate(ret) if isinstance(h, hooks.PeriodicWriter)]
            ret.insert(writers[0] if writers else len(ret), swa)  # its results logged in that step
        return ret

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        if not cfg.SOLVER.SWA.ENABLED:
            return super().build_lr_scheduler(cfg, optimizer)
        scheduler = CyclicCosineParamScheduler(1.0, cfg.SOLVER.SWA.LR_END_RATIO, cfg.SOLVER.SWA.EPOCHS)
        yacs_swa_iters_per_epoch(cfg)  # checks MAX_ITER against EPOCHS
        return LRMultiplier(optimizer, scheduler, cfg.SOLVER.MAX_ITER)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)  # SOLVER.PARAM_RULES: MMDetection's rules by default

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(dataset_name, output_folder or os.path.join(cfg.OUTPUT_DIR, "inference"))

    @classmethod
    def build_train_loader(cls, cfg):
        dicts = checked_dataset_dicts(
            cfg.DATASETS.TRAIN,
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            min_keypoints=0,
            proposal_files=None,
        )
        augmentations = build_train_augmentations(cfg)
        mapper_class = DatasetMapperWithBoxes if cfg.INPUT.CROP.ENABLED else CheckedDatasetMapper
        mapper = mapper_class(cfg, True, augmentations=augmentations)
        return build_detection_train_loader(cfg, mapper=mapper, dataset=dicts)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=CheckedDatasetMapper(cfg, False))

    @classmethod
    def test(cls, cfg, model, evaluators=None, metrics_name: str = "eval_metrics.json"):
        results = super().test(cfg, model, evaluators)
        write_metrics(dict(results), cfg.OUTPUT_DIR, name=metrics_name)
        return results

    @classmethod
    def test_with_TTA(cls, cfg, model):
        """
        Evaluate with test-time augmentation (``TEST.AUG``; :mod:`vfnet.tta`) on images the test
        loader does not resize; COCO results in ``OUTPUT_DIR/inference_TTA``, metrics in
        ``OUTPUT_DIR/eval_metrics_TTA.json``, result keys suffixed ``_TTA`` as in Detectron2.
        """
        tta_model = VFNetWithTTA(model, MultiScaleFlipMapper(cfg))
        evaluators = [
            cls.build_evaluator(cfg, name, output_folder=os.path.join(cfg.OUTPUT_DIR, "inference_TTA"))
            for name in cfg.DATASETS.TEST
        ]
        results = cls.test(yacs_tta_test_config(cfg), tta_model, evaluators, metrics_name="eval_metrics_TTA.json")
        return OrderedDict((k + "_TTA", v) for k, v in results.items())
