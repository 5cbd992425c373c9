# Ablation row 2 (paper Table 3): the raw VFNet (FCOS + ATSS without centerness) + the Varifocal
# Loss: the classifier learns the IoU of its box with its ground truth (the reference's
# `vfnet_raw_r50_fpn_1x_coco.py` with `use_vfl=True`).
from .vfnet_raw_FL_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train

model.use_vfl = True
train.output_dir = "./output/ablation_vfnet_raw_VFL_R_50_FPN_1x"
