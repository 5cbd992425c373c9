# Ablation row 2 on the embedded dataset: raw VFNet + the Varifocal Loss.
from .vfnet_raw_FL_R_18_narrow_shapes_cpu import dataloader, lr_multiplier, model, optimizer, train

model.use_vfl = True
train.output_dir = "./output/quickstart_ablation_raw_VFL"
