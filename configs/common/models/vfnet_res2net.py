# VFNet with a Res2Net-101 (26w x 4s, v1d: deep stem, average-pool shortcuts) bottom-up, as the
# reference's `vfnet_r2_101_fpn_mstrain_2x_coco.py`: BN with frozen statistics and trainable affine
# parameters, stem and res2 frozen; FPN and head as in `vfnet.py`. Set
# `model.backbone.bottom_up.stages.deform_on_per_stage = [False, True, True, True]` for DCNv2.
from vfnet.builders import res2net_bottom_up

from .vfnet import model

model.backbone.bottom_up = res2net_bottom_up(depth=101, base_channels=64, scales=4, base_width=26, norm="FrozenStatsBN")
