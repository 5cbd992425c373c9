"""
Training and evaluation for both config styles: LazyConfig ``.py`` files (Detectron2's
``lazyconfig_train_net.py`` loop, :func:`do_train`) and yacs ``.yaml`` files (:class:`Trainer`,
a ``DefaultTrainer``), one module per job:

- :mod:`.config`: loading either style, checked ``KEY=VALUE`` overrides;
- :mod:`.evaluation`: the COCO evaluator, LazyConfig's test loop, metrics files;
- :mod:`.trainers`: the trainers (bfloat16 autocast on CPUs) and hooks of the LazyConfig loops;
- :mod:`.lazy_train`: the LazyConfig training loop; :mod:`.swa_phase`: its SWA phase;
- :mod:`.launch`: data-parallel CPU processes;
- :mod:`.yacs_trainer`: the yacs ``Trainer``.
"""
from .config import apply_overrides, load_config
from .evaluation import build_evaluator, checked_dataset_dicts, do_test, has_fast_coco_eval, write_metrics
from .launch import launch_cpu
from .lazy_train import do_train
from .swa_phase import SWA_BEST_METRIC, do_swa, swa_iters_per_epoch, swa_options, swa_start_checkpoint
from .trainers import AutocastTrainer, ResumableBestCheckpointer, build_trainer, wrap_ddp
from .yacs_trainer import Trainer, yacs_swa_iters_per_epoch

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
