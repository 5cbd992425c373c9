# ATSS R-50 FPN, 1x, with the focal loss: the reference's `configs/vfnet/vfl_atss_r50_fpn_1x_coco.py` with
# `use_vfl=False`. Reference COCO val AP 39.3 (with VFL: 40.2, `atss_VFL_R_50_FPN_1x.py`).
from .atss_VFL_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train

model.use_vfl = False
train.output_dir = "./output/atss_FL_R_50_FPN_1x"
