# Ablation row 3 on the embedded dataset: raw VFNet + VFL + star-shaped box features.
from .vfnet_raw_VFL_R_18_narrow_shapes_cpu import dataloader, lr_multiplier, model, optimizer, train

model.head.star_features = True
train.output_dir = "./output/quickstart_ablation_star_VFL"
