"""``DefaultTrainer`` for yacs ``.yaml`` configs: VFNet's data checks, evaluation, optimizer, SWA, TTA."""
import os
import weakref
from collections import OrderedDict

from detectron2.config import CfgNode
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, hooks
from detectron2.solver import LRMultiplier

from ..checkpoint import VFNetCheckpointer
from ..data.augmentations import build_train_augmentations
from ..data.mapper import CheckedDatasetMapper, DatasetMapperWithBoxes
from ..lr_scheduler import CyclicCosineParamScheduler
from ..solver import build_optimizer
from ..swa import SWAHook
from ..tta import MultiScaleFlipMapper, VFNetWithTTA, yacs_tta_test_config
from .evaluation import build_evaluator, checked_dataset_dicts, write_metrics

__all__ = ["Trainer", "yacs_swa_iters_per_epoch"]


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
