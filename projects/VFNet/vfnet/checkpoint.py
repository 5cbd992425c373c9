"""Loading weights with errors for checkpoints of another architecture."""
import logging
import os
from typing import Any, Dict, List

from detectron2.checkpoint import DetectionCheckpointer

__all__ = ["VFNetCheckpointer", "IncompatibleCheckpointError"]

logger = logging.getLogger(__name__)

_MMDET_PREFIXES = ("bbox_head.", "neck.")


class IncompatibleCheckpointError(RuntimeError):
    """The checkpoint holds weights of another architecture."""


class VFNetCheckpointer(DetectionCheckpointer):
    """
    A :class:`DetectionCheckpointer` that refuses checkpoints of other architectures: modules the
    model does not have (e.g. ``roi_heads`` of a Faster R-CNN), an unconverted MMDetection
    checkpoint, or, with ``require_head=True`` (evaluation, inference), a checkpoint with no
    weights for the VFNet head. Backbone-only checkpoints (ImageNet initialisation) load as usual
    for training, and shape mismatches (another number of classes) are skipped with a warning,
    as in Detectron2.
    """

    def __init__(self, model, save_dir: str = "", *, require_head: bool = False, **checkpointables):
        super().__init__(model, save_dir, **checkpointables)
        self.require_head = require_head
        self._loading_path = None

    def load(self, path: str, *args, **kwargs) -> Dict[str, Any]:
        if path and "://" not in path and not os.path.exists(path):
            raise FileNotFoundError(
                f"checkpoint {path} does not exist. The configs' ImageNet initialisations (pretrained/*.pth) "
                "are made from the downloaded ImageNet weights with tools/convert_imagenet_checkpoint.py, and "
                "reference checkpoints with tools/convert_mmdet_checkpoint.py (README); set "
                "train.init_checkpoint=\"\" (MODEL.WEIGHTS \"\") to train from scratch"
            )
        self._loading_path = path
        try:
            return super().load(path, *args, **kwargs)
        finally:
            self._loading_path = None

    def _load_model(self, checkpoint: Any):
        model_state = checkpoint.get("model", {})
        keys: List[str] = list(model_state.keys())
        source = self._loading_path or "the checkpoint"
        if keys and all(k.startswith(("backbone.", "bbox_head.", "neck.")) for k in keys) and any(
            k.startswith(_MMDET_PREFIXES) for k in keys
        ):
            raise IncompatibleCheckpointError(
                f"{source} is an MMDetection checkpoint; convert it first with "
                "`python tools/convert_mmdet_checkpoint.py IN.pth OUT.pth`"
            )
        incompatible = super()._load_model(checkpoint)
        # (fvcore's Checkpointer has already unwrapped a DistributedDataParallel model to its .module)
        model_modules = {name for name, _ in self.model.named_children()}
        foreign = sorted({k.split(".")[0] for k in incompatible.unexpected_keys} - model_modules)
        if foreign:
            raise IncompatibleCheckpointError(
                f"{source} holds weights for modules this VFNet does not have: {foreign} "
                f"(e.g. {[k for k in incompatible.unexpected_keys if k.split('.')[0] in foreign][:3]}); "
                "it is a checkpoint of another architecture"
            )
        if self.require_head and not any(k.startswith(("head.", "module.head.")) for k in keys):
            raise IncompatibleCheckpointError(
                f"{source} has no weights for the VFNet head (head.*): it is not a trained VFNet checkpoint "
                f"(its modules: {sorted({k.split('.')[0] for k in keys})[:6]})"
            )
        return incompatible
