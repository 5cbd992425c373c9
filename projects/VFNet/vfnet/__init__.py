"""VarifocalNet for Detectron2."""
from . import backbone as _  # noqa: F401  (registers build_vfnet_resnet_fpn_backbone)
from . import data  # noqa: F401  (registers the built-in synthetic datasets; generated on first use)
from . import detectors  # noqa: F401  (registers RetinaNetVFL, ATSS, FoveaBox, RepPoints)
from . import flops as _  # noqa: F401,F811  (FLOP handles of the deformable convs, added to fvcore's)
from .assigners import ATSSAssigner, FCOSAssigner
from .backbone import build_vfnet_resnet_fpn_backbone
from .resnet import make_resnet_stages
from .config import add_vfnet_config
from .head import VFNetHead
from .layers import ModulatedDeformConv2d, Scale, StarDeformConv2d
from .losses import varifocal_loss
from .meta_arch import VFNet
from .nms import batched_soft_nms

__all__ = [
    "add_vfnet_config",
    "VFNet",
    "VFNetHead",
    "ATSSAssigner",
    "FCOSAssigner",
    "StarDeformConv2d",
    "ModulatedDeformConv2d",
    "Scale",
    "varifocal_loss",
    "batched_soft_nms",
    "build_vfnet_resnet_fpn_backbone",
    "make_resnet_stages",
]
