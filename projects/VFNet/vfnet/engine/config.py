"""Loading of both config styles (LazyConfig ``.py``, yacs ``.yaml``) and checked overrides."""
import difflib
import logging
import os
from typing import List, Sequence

from detectron2.config import CfgNode, LazyConfig, get_cfg
from omegaconf import OmegaConf

from ..config import add_vfnet_config

__all__ = ["load_config", "apply_overrides"]

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
