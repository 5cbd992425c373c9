"""COCO evaluation of both config styles: the evaluator, LazyConfig's test loop, metrics files."""
import json
import logging
import os
from typing import Dict, List, Optional

from detectron2.config import instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog, get_detection_dataset_dicts
from detectron2.evaluation import COCOEvaluator, inference_on_dataset, print_csv_format
from detectron2.utils import comm

from ..data.validation import check_dataset_dicts

__all__ = ["has_fast_coco_eval", "build_evaluator", "checked_dataset_dicts", "write_metrics", "do_test"]

logger = logging.getLogger("detectron2")


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
