# RepPoints (moment, GN neck + head) R-50 FPN, 1x, with the focal loss: the reference's `configs/vfnet/vfl_reppoints_moment_r50_fpn_gn-neck+head_4x4_1x_coco.py` with
# `use_vfl=False`. Reference COCO val AP 38.3 (with VFL: 39.7, `reppoints_moment_GN_VFL_R_50_FPN_1x.py`).
from .reppoints_moment_GN_VFL_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train

model.use_vfl = False
train.output_dir = "./output/reppoints_moment_GN_FL_R_50_FPN_1x"
