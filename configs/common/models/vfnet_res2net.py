# VFNet with a Res2Net-101 (26w x 4s, v1d: deep stem, average-pool shortcuts) bottom-up, as the
# reference's `vfnet_r2_101_fpn_mstrain_2x_coco.py`: BN with frozen statistics and trainable affine
# parameters, stem and res2 frozen; FPN and head as in `vfnet.py`. Set
# `model.backbone.bottom_up.stages.deform_on_per_stage = [False, True, True, True]` for DCNv2.
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import ResNet

from vfnet.res2net import Res2NetStem, make_res2net_stages

from .vfnet import model

model.backbone.bottom_up = L(ResNet)(
    stem=L(Res2NetStem)(in_channels=3, out_channels=64, norm="FrozenStatsBN"),
    stages=L(make_res2net_stages)(
        depth=101,
        base_channels=64,
        scales=4,
        base_width=26,
        norm="FrozenStatsBN",
        deform_on_per_stage=[False, False, False, False],
    ),
    out_features=["res3", "res4", "res5"],
    freeze_at=2,
)
