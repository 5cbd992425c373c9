# RetinaNet R-50 FPN, 1x, with the focal loss: the reference's `configs/vfnet/vfl_retinanet_r50_fpn_4x4_1x_coco.py` with
# `use_vfl=False`. Reference COCO val AP 36.5 (with VFL: 37.4, `retinanet_VFL_R_50_FPN_1x.py`).
from .retinanet_VFL_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train

model.use_vfl = False
train.output_dir = "./output/retinanet_FL_R_50_FPN_1x"
