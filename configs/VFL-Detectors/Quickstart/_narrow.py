# The quickstart's narrow model, for the VFL detectors on the embedded synthetic shapes dataset:
# ResNet-18 with a 32-wide stem and trainable BatchNorm (nothing frozen, no ImageNet weights),
# FPN and head of 64 channels, 2 convs per tower (configs/Quickstart/vfnet_R_18_narrow_shapes_cpu.py).
from detectron2.layers import ShapeSpec

STRIDES = [8, 16, 32, 64, 128]
FPN_CHANNELS = 64
HEAD_CHANNELS = 64
NUM_CONVS = 2
C5_CHANNELS = 256  # res5 of a ResNet-18 with a 32-wide stem


def narrow_backbone(backbone):
    """Edit a ResNet-50 + FPN config (common/models/_resnet_fpn_mmdet.py) into the quickstart's."""
    bottom_up = backbone.bottom_up
    bottom_up.stem.out_channels = 32
    bottom_up.stem.norm = "BN"
    bottom_up.stages.depth = 18
    bottom_up.stages.stem_channels = 32
    bottom_up.stages.norm = "BN"
    bottom_up.freeze_at = 0
    backbone.out_channels = FPN_CHANNELS
    top = backbone.top_block
    top.in_channels = C5_CHANNELS if top.in_feature == "res5" else FPN_CHANNELS
    return backbone


def head_input_shape():
    return [ShapeSpec(channels=FPN_CHANNELS, stride=s) for s in STRIDES]
