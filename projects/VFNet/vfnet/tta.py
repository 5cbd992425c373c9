"""
Test-time augmentation (TTA) of VFNet: multi-scale resize and horizontal flip, merged as the
reference merges them (its ``configs/vfnet/vfnet_r50_fpn_1x_coco_tta.py``: MMDetection 2.10's
``MultiScaleFlipAug`` and the dense heads' ``aug_test_bboxes``):

1. every scale, a ``(short, long)`` pair of pixel limits, gives one keep-ratio resize of the
   original image (mmcv's rounding, :func:`vfnet.data.keep_ratio_size`), and with ``flip`` a
   horizontally flipped copy of it too, in the order scale 1, scale 1 flipped, scale 2, ...;
2. each augmented image is run alone and its candidates *before* NMS are kept (the model's score
   threshold and per-level top-k, boxes clipped to that image);
3. the candidates are mapped back to the original image (flip undone, then the resize) and
   concatenated: no averaging of boxes or scores;
4. one class-wise NMS of the model (NMS at ``test_nms_thresh``, or Soft-NMS) over the union and
   the ``max_detections_per_image`` best, as in plain inference.

The reference's scales (``REFERENCE_TTA``): short sides 800, 900, 1000, 1200 with long sides at
most 1200, 1300, 1500, 1600, and flip. The wrapper follows Detectron2's
``GeneralizedRCNNWithTTA`` / ``DatasetMapperTTA``; configs switch it on with ``TEST.AUG.ENABLED``
(yacs, plus ``TEST.AUG.MIN_SIZES``, ``TEST.AUG.MAX_SIZES`` or ``MAX_SIZE``, ``TEST.AUG.FLIP``) or
``dataloader.tta.enabled`` (LazyConfig, keys ``min_sizes``, ``max_sizes``, ``flip``).
"""
import copy
import logging
import os
from typing import Callable, Dict, List, Sequence

import numpy as np
import torch
from detectron2.config import CfgNode, configurable
from detectron2.data import transforms as T
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances
from omegaconf import OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .data.augmentations import MultiScaleKeepRatioResize

__all__ = [
    "REFERENCE_TTA",
    "MultiScaleFlipMapper",
    "VFNetWithTTA",
    "lazy_tta_options",
    "enable_tta",
    "tta_enabled",
    "do_test_with_tta",
    "yacs_tta_test_config",
]

logger = logging.getLogger("detectron2")

# The reference's vfnet_r50_fpn_1x_coco_tta.py: img_scale=[(1200, 800), (1300, 900), (1500, 1000),
# (1600, 1200)] as (long, short) limits, flip=True.
REFERENCE_TTA = {"min_sizes": [800, 900, 1000, 1200], "max_sizes": [1200, 1300, 1500, 1600], "flip": True}
_LAZY_TTA_KEYS = ("enabled", "min_sizes", "max_sizes", "flip")


class MultiScaleFlipMapper:
    """
    ``dataset_dict -> [augmented dataset_dict]``: one dict per (scale, flip), each with its
    ``"image"`` (CHW) and the ``"transforms"`` (a ``TransformList``) from the *original* image
    (``"height"`` x ``"width"``) to it. Detectron2's ``DatasetMapperTTA`` with a long-side limit
    per scale and mmcv's size rounding.
    """

    @configurable
    def __init__(self, *, min_sizes: Sequence[int], max_sizes: Sequence[int], flip: bool):
        """
        Args:
            min_sizes: short-side sizes in pixels, one per scale.
            max_sizes: long-side limits in pixels, one per scale.
            flip: add a horizontally flipped copy of every scale.
        """
        min_sizes, max_sizes = [int(s) for s in min_sizes], [int(s) for s in max_sizes]
        if not min_sizes or len(min_sizes) != len(max_sizes):
            raise ValueError(
                f"TTA: give one long-side limit per short side, got min_sizes={min_sizes}, max_sizes={max_sizes}"
            )
        if any(s <= 0 for s in min_sizes + max_sizes):
            raise ValueError(f"TTA: sizes must be positive, got min_sizes={min_sizes}, max_sizes={max_sizes}")
        self.min_sizes = min_sizes
        self.max_sizes = max_sizes
        self.flip = bool(flip)

    @classmethod
    def from_config(cls, cfg):
        if isinstance(cfg, CfgNode):
            aug = cfg.TEST.AUG
            max_sizes = list(aug.MAX_SIZES) if len(aug.MAX_SIZES) else [aug.MAX_SIZE] * len(aug.MIN_SIZES)
            return {"min_sizes": list(aug.MIN_SIZES), "max_sizes": max_sizes, "flip": aug.FLIP}
        options = lazy_tta_options(cfg)
        return {k: options[k] for k in ("min_sizes", "max_sizes", "flip")}

    def __len__(self) -> int:
        return len(self.min_sizes) * (2 if self.flip else 1)

    def __call__(self, dataset_dict: Dict) -> List[Dict]:
        image = dataset_dict["image"].permute(1, 2, 0).numpy()
        original = (dataset_dict.get("height", image.shape[0]), dataset_dict.get("width", image.shape[1]))
        if image.shape[:2] != tuple(original):  # the loader resized it already: start from its size
            pre = T.ResizeTransform(original[0], original[1], image.shape[0], image.shape[1])
        else:
            pre = T.NoOpTransform()
        augmented = []
        for short, long in zip(self.min_sizes, self.max_sizes):
            resize = MultiScaleKeepRatioResize([(long, short)])
            for flipped in ([False, True] if self.flip else [False]):
                augs = [resize, T.RandomFlip(prob=1.0, horizontal=True)] if flipped else [resize]
                new_image, transforms = T.apply_augmentations(augs, np.copy(image))
                out = copy.copy(dataset_dict)
                out["image"] = torch.from_numpy(np.ascontiguousarray(new_image.transpose(2, 0, 1)))
                out["height"], out["width"] = original
                out["transforms"] = pre + transforms
                augmented.append(out)
        return augmented


class VFNetWithTTA(nn.Module):
    """
    A VFNet with test-time augmentation: same inputs and outputs as the model's eval-mode
    ``forward`` (``[{"instances": Instances}]`` in each input's ``height`` x ``width``).
    """

    def __init__(self, model: nn.Module, tta_mapper: Callable[[Dict], List[Dict]]):
        """
        Args:
            model: a :class:`vfnet.VFNet` (or a DistributedDataParallel of one).
            tta_mapper: a dataset dict -> its augmented versions, each with ``"transforms"`` from the
                original image (:class:`MultiScaleFlipMapper`).
        """
        super().__init__()
        if isinstance(model, DistributedDataParallel):
            model = model.module
        if not (hasattr(model, "predict_candidates") and hasattr(model, "select_detections")):
            raise TypeError(f"VFNetWithTTA needs a VFNet (candidates before NMS), got {type(model).__name__}")
        self.model = model
        self.tta_mapper = tta_mapper

    def forward(self, batched_inputs: List[Dict]) -> List[Dict]:
        return [{"instances": self.inference_one_image(x)} for x in batched_inputs]

    def inference_one_image(self, dataset_dict: Dict) -> Instances:
        """Detections of one image, merged over its augmented versions (see the module docstring)."""
        height = dataset_dict.get("height", dataset_dict["image"].shape[1])
        width = dataset_dict.get("width", dataset_dict["image"].shape[2])
        boxes, scores, classes = [], [], []
        for augmented in self.tta_mapper(dataset_dict):
            transforms = augmented.pop("transforms")
            (candidates,) = self.model.predict_candidates([augmented])
            aug_boxes = candidates.pred_boxes.tensor
            back = transforms.inverse().apply_box(aug_boxes.detach().cpu().numpy())
            boxes.append(torch.as_tensor(back, dtype=aug_boxes.dtype, device=aug_boxes.device).reshape(-1, 4))
            scores.append(candidates.scores)
            classes.append(candidates.pred_classes)
        merged = Instances((height, width))
        merged.pred_boxes = Boxes(torch.cat(boxes))
        merged.scores = torch.cat(scores)
        merged.pred_classes = torch.cat(classes)
        # As plain inference: NMS and top-k, then Detectron2's postprocessing (here at scale 1:
        # clip to the image, drop empty boxes).
        return detector_postprocess(self.model.select_detections(merged), height, width)


# ------------------------------------------------------------------ configs and evaluation


def lazy_tta_options(cfg) -> Dict:
    """
    The checked ``dataloader.tta`` options of a LazyConfig: ``enabled``, ``min_sizes``,
    ``max_sizes`` and ``flip``; keys the config does not give are the reference's
    (:data:`REFERENCE_TTA`, not enabled).
    """
    node = cfg.dataloader.get("tta", None)
    given = {}
    if node is not None:
        given = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    unknown = sorted(set(given) - set(_LAZY_TTA_KEYS))
    if unknown:
        raise KeyError(f"unknown option(s) dataloader.tta.{unknown[0]}; known: {list(_LAZY_TTA_KEYS)}")
    options = dict(enabled=False, **REFERENCE_TTA)
    defaulted = [k for k in REFERENCE_TTA if k not in given]
    options.update(given)
    if options["enabled"] and defaulted:
        logger.info(f"TTA: dataloader.tta has no {defaulted}; using the reference's {[REFERENCE_TTA[k] for k in defaulted]}")
    return options


def tta_enabled(cfg) -> bool:
    """Whether the config asks for TTA (``TEST.AUG.ENABLED`` or ``dataloader.tta.enabled``)."""
    if isinstance(cfg, CfgNode):
        return bool(cfg.TEST.AUG.ENABLED)
    return bool(lazy_tta_options(cfg)["enabled"])


def enable_tta(cfg):
    """Switch TTA on in a (not frozen) config, keeping its scales; returns it."""
    if isinstance(cfg, CfgNode):
        cfg.TEST.AUG.ENABLED = True
    elif "tta" in cfg.dataloader:
        cfg.dataloader.tta.enabled = True
    else:
        cfg.dataloader.tta = {"enabled": True}
    return cfg


def do_test_with_tta(cfg, model, metrics_name: str = "eval_metrics_TTA.json") -> Dict:
    """
    Evaluate ``model`` with TTA on a LazyConfig's test set: ``cfg.dataloader.test`` with its
    resize removed (each TTA scale resizes the original image, as the reference does) and
    ``cfg.dataloader.evaluator`` writing to ``{train.output_dir}/inference_TTA``. The results
    (keys suffixed ``_TTA`` as Detectron2's ``test_with_TTA`` names them) go to
    ``{train.output_dir}/{metrics_name}``.
    """
    from .engine import do_test  # engine imports the data and model modules; keep this one light

    cfg = copy.deepcopy(cfg)
    mapper = cfg.dataloader.test.mapper
    if "augmentations" not in mapper:
        raise KeyError("TTA: dataloader.test.mapper has no `augmentations` to replace by the TTA scales")
    if len(mapper.augmentations):
        logger.info(f"TTA: the test loader's augmentations are replaced by the TTA scales: {mapper.augmentations}")
    mapper.augmentations = []
    if "output_dir" in cfg.dataloader.evaluator:
        cfg.dataloader.evaluator.output_dir = os.path.join(cfg.train.output_dir, "inference_TTA")
    tta_model = VFNetWithTTA(model, MultiScaleFlipMapper(cfg))
    logger.info(
        f"Evaluating with TTA: short sides {tta_model.tta_mapper.min_sizes}, long sides at most "
        f"{tta_model.tta_mapper.max_sizes}, flip {tta_model.tta_mapper.flip}"
    )
    results = do_test(cfg, tta_model, metrics_name=metrics_name)
    return {k + "_TTA": v for k, v in results.items()}


def yacs_tta_test_config(cfg: CfgNode) -> CfgNode:
    """A copy of a yacs config whose test loader does not resize (``INPUT.MIN_SIZE_TEST = 0``)."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.INPUT.MIN_SIZE_TEST = 0  # Detectron2: 0 disables the test resize
    cfg.freeze()
    return cfg

