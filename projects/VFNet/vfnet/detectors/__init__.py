"""
Dense detectors with the Varifocal Loss (``use_vfl``), as in the reference repository's second
table: RetinaNet (Detectron2's own, subclassed), ATSS, FoveaBox and RepPoints, and the heads of
the paper's ablation of VFNet. Importing this package registers the meta-architectures, the
backbone ``build_resnet_fpn_extra_levels_backbone`` and the anchor generator
``MMDetAnchorGenerator``.
"""
from .assigners import FoveaAssigner, MaxIoUMatcher, PointAssigner
from .atss import ATSS, ATSSHead
from .common import ExtraLevels, MMDetAnchorGenerator, MMDetBox2BoxTransform
from .config import add_vfl_detectors_config, build_resnet_fpn_extra_levels_backbone
from .fovea import FoveaBox, FoveaHead
from .reppoints import RepPoints, RepPointsHead
from .retinanet_vfl import RetinaNetVFL

__all__ = [
    "RetinaNetVFL",
    "ATSS",
    "ATSSHead",
    "FoveaBox",
    "FoveaHead",
    "RepPoints",
    "RepPointsHead",
    "MaxIoUMatcher",
    "PointAssigner",
    "FoveaAssigner",
    "MMDetAnchorGenerator",
    "MMDetBox2BoxTransform",
    "ExtraLevels",
    "add_vfl_detectors_config",
    "build_resnet_fpn_extra_levels_backbone",
]
