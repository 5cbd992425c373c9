"""
yacs configuration of the VFL detectors (for ``.yaml`` configs and ``DefaultPredictor``), and the
ResNet + FPN backbone with MMDetection's extra levels that they use.

- ``MODEL.RETINANET``: Detectron2's keys, plus those of :class:`RetinaNetVFL` (``USE_VFL``...);
- ``MODEL.ATSS``, ``MODEL.FOVEA``, ``MODEL.REPPOINTS``: one node per detector;
- ``MODEL.ANCHOR_GENERATOR``: ``OCTAVE_BASE_SCALE`` / ``SCALES_PER_OCTAVE`` / ``CENTER_OFFSET`` for
  ``NAME: "MMDetAnchorGenerator"``;
- ``MODEL.FPN.TOP_BLOCK_IN_FEATURE`` / ``TOP_BLOCK_RELU`` for
  ``BACKBONE.NAME: "build_resnet_fpn_extra_levels_backbone"``.
"""
from detectron2.config import CfgNode as CN
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, FPN

from ..backbone import build_resnet_from_cfg
from .common import ExtraLevels

__all__ = ["add_vfl_detectors_config", "build_resnet_fpn_extra_levels_backbone", "NUM_CLASSES_KEY"]

#: meta-architecture -> the config node that holds its NUM_CLASSES
NUM_CLASSES_KEY = {
    "VFNet": "VFNET",
    "RetinaNet": "RETINANET",
    "RetinaNetVFL": "RETINANET",
    "ATSS": "ATSS",
    "FoveaBox": "FOVEA",
    "RepPoints": "REPPOINTS",
}


def _vfl_keys(node: CN) -> None:
    node.USE_VFL = True
    node.VFL_ALPHA = 0.75
    node.VFL_GAMMA = 2.0
    node.VFL_IOU_WEIGHTED = True
    node.FUSED_OPS = True  # the fused kernels of vfnet._C: the Varifocal Loss, RepPoints' deformable convs (same results)
    node.COMPILE = ""  # torch.compile the backbone and the head: "", "default", "reduce-overhead", ... (vfnet.compiling)


def _head_keys(node: CN, num_convs: int, norm: str, focal_alpha: float, focal_gamma: float, nms: float) -> None:
    node.NUM_CLASSES = 80
    node.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    node.NUM_CONVS = num_convs
    node.FEAT_CHANNELS = 256
    node.NORM = norm
    node.PRIOR_PROB = 0.01
    node.FOCAL_LOSS_ALPHA = focal_alpha
    node.FOCAL_LOSS_GAMMA = focal_gamma
    node.SCORE_THRESH_TEST = 0.05
    node.TOPK_CANDIDATES_TEST = 1000
    node.NMS_THRESH_TEST = nms
    _vfl_keys(node)


def add_vfl_detectors_config(cfg) -> None:
    """Add the keys of RetinaNetVFL, ATSS, FoveaBox and RepPoints to a Detectron2 config, in place."""
    r = cfg.MODEL.RETINANET
    _vfl_keys(r)
    r.LOSS_NORMALIZER = "ema"  # or "positives_per_image" (MMDetection)
    r.IGNORE_PADDING = False  # True: MMDetection's valid flags
    r.MATCHER = "detectron2"  # or "mmdet" (MaxIoUMatcher)

    a = cfg.MODEL.ATSS = CN()
    _head_keys(a, num_convs=4, norm="GN", focal_alpha=0.25, focal_gamma=2.0, nms=0.6)
    a.ANCHOR_SCALE = 8  # anchors: squares of ANCHOR_SCALE x stride
    a.TOPK = 9
    a.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
    a.LOSS_BBOX_WEIGHT = 2.0
    a.LOSS_CENTERNESS_WEIGHT = 1.0

    f = cfg.MODEL.FOVEA = CN()
    _head_keys(f, num_convs=4, norm="", focal_alpha=0.4, focal_gamma=1.5, nms=0.5)
    f.BASE_EDGES = [16, 32, 64, 128, 256]
    f.SCALE_RANGES = [[1, 64], [32, 128], [64, 256], [128, 512], [256, 2048]]
    f.SIGMA = 0.4
    f.SMOOTH_L1_BETA = 0.11
    f.LOSS_BBOX_WEIGHT = 1.0

    p = cfg.MODEL.REPPOINTS = CN()
    _head_keys(p, num_convs=3, norm="GN", focal_alpha=0.25, focal_gamma=2.0, nms=0.5)
    p.POINT_FEAT_CHANNELS = 256
    p.NUM_POINTS = 9
    p.GRADIENT_MUL = 0.1
    p.POINT_BASE_SCALE = 4
    p.REFINE_IOU_THRESHOLDS = [0.4, 0.5]
    p.SMOOTH_L1_BETA = 0.11
    p.LOSS_PTS_INIT_WEIGHT = 0.5
    p.LOSS_PTS_REFINE_WEIGHT = 1.0

    g = cfg.MODEL.ANCHOR_GENERATOR
    g.OCTAVE_BASE_SCALE = 4
    g.SCALES_PER_OCTAVE = 3
    g.CENTER_OFFSET = 0.0

    cfg.MODEL.FPN.TOP_BLOCK_IN_FEATURE = "res5"  # "res5": P6 from C5 (MMDetection 'on_input'); "p5"
    cfg.MODEL.FPN.TOP_BLOCK_RELU = False  # ReLU between P6 and P7


@BACKBONE_REGISTRY.register()
def build_resnet_fpn_extra_levels_backbone(cfg, input_shape: ShapeSpec):
    """
    ResNet (``MODEL.RESNETS``, any width) + FPN (``MODEL.FPN``, with its ``NORM``) + P6/P7 as
    :class:`ExtraLevels`: from ``MODEL.FPN.TOP_BLOCK_IN_FEATURE`` ("res5": C5, or "p5"), with a
    ReLU before P7 if ``MODEL.FPN.TOP_BLOCK_RELU``, normed like the FPN.
    """
    bottom_up = build_resnet_from_cfg(cfg, input_shape)
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    in_feature = cfg.MODEL.FPN.TOP_BLOCK_IN_FEATURE
    in_channels = bottom_up.output_shape()[in_feature].channels if in_feature.startswith("res") else out_channels
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=out_channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=ExtraLevels(
            in_channels,
            out_channels,
            in_feature=in_feature,
            relu_before_p7=cfg.MODEL.FPN.TOP_BLOCK_RELU,
            norm=cfg.MODEL.FPN.NORM,
        ),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
