"""
Inference on single images from either config style, and drawing of the detections.

``.yaml`` configs go through Detectron2's own ``DefaultPredictor``; LazyConfig ``.py`` configs
through :class:`LazyPredictor`, which does the same: load the weights, resize like the config's
test loader, convert BGR input to the model's format, and run the model in eval mode.
"""
from typing import List, Optional, Sequence

import numpy as np
import torch
from detectron2.config import CfgNode, instantiate
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.engine import DefaultPredictor
from detectron2.structures import Instances
from detectron2.utils.visualizer import ColorMode, Visualizer

from .checkpoint import VFNetCheckpointer
from .engine import load_config

__all__ = ["LazyPredictor", "build_predictor", "draw_instances"]


class LazyPredictor:
    """
    ``DefaultPredictor`` for a LazyConfig: ``predictor(bgr_image) -> {"instances": Instances}``
    in the image's own resolution.
    """

    def __init__(self, cfg, weights: Optional[str] = None):
        self.cfg = cfg
        self.model = instantiate(cfg.model).to(cfg.train.device).eval()
        VFNetCheckpointer(self.model, require_head=True).load(weights or cfg.train.init_checkpoint)
        test_mapper = cfg.dataloader.test.mapper
        self.augmentations = T.AugmentationList([instantiate(a) for a in test_mapper.get("augmentations", [])])
        self.input_format = test_mapper.get("image_format", "BGR")
        self.metadata = MetadataCatalog.get(_first(cfg.dataloader.test.dataset.names))

    @torch.no_grad()
    def __call__(self, original_image: np.ndarray) -> dict:
        """original_image: (H, W, 3) uint8 in BGR order (as ``cv2.imread`` gives)."""
        if self.input_format == "RGB":
            original_image = original_image[:, :, ::-1]
        height, width = original_image.shape[:2]
        aug_input = T.AugInput(original_image)
        self.augmentations(aug_input)
        image = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1))).float()
        return self.model([{"image": image, "height": height, "width": width}])[0]


def _first(names) -> str:
    return names if isinstance(names, str) else list(names)[0]


def build_predictor(config_file: str, weights: str, overrides: Sequence[str] = (), device: Optional[str] = None):
    """
    A predictor for ``config_file`` (``.yaml``: ``DefaultPredictor``; ``.py``: :class:`LazyPredictor`)
    with the given weights, else the config's (``MODEL.WEIGHTS`` / ``train.init_checkpoint``, after
    ``overrides``). Returns ``(predictor, metadata)``.
    """
    cfg = load_config(config_file, overrides)
    if isinstance(cfg, CfgNode):
        weights = weights or cfg.MODEL.WEIGHTS
        cfg.MODEL.WEIGHTS = ""  # loaded below, with the architecture checks of VFNetCheckpointer
        if device:
            cfg.MODEL.DEVICE = device
        cfg.freeze()
        predictor = DefaultPredictor(cfg)
        VFNetCheckpointer(predictor.model, require_head=True).load(weights)
        names = cfg.DATASETS.TEST or cfg.DATASETS.TRAIN
        return predictor, MetadataCatalog.get(names[0] if names else "__unused")
    if device:
        cfg.train.device = device
    predictor = LazyPredictor(cfg, weights)
    return predictor, predictor.metadata


def draw_instances(
    rgb_image: np.ndarray, instances: Instances, metadata, score_threshold: float = 0.3
) -> np.ndarray:
    """Draw detections with scores >= ``score_threshold`` on an (H, W, 3) RGB image; returns RGB."""
    instances = instances.to("cpu")
    instances = instances[instances.scores >= score_threshold]
    # Small images are drawn enlarged, so that the labels stay readable.
    scale = max(1.0, 480.0 / max(rgb_image.shape[:2]))
    visualizer = Visualizer(rgb_image, metadata, scale=scale, instance_mode=ColorMode.IMAGE)
    return visualizer.draw_instance_predictions(instances).get_image()


def list_images(paths: List[str]) -> List[str]:
    """Expand folders into the image files they contain (sorted)."""
    import os

    extensions = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
    files = []
    for path in paths:
        if os.path.isdir(path):
            files.extend(
                sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(extensions))
            )
        else:
            files.append(path)
    return files
