# Ablation row 3 (paper Table 3): raw VFNet + VFL + the star-shaped box feature representation:
# the classifier sees the features a 3x3 deformable conv samples at the initial box's corners,
# edge midpoints and centre (VFNet's, without its refinement branch).
from .vfnet_raw_VFL_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train

model.head.star_features = True
train.output_dir = "./output/ablation_vfnet_star_VFL_R_50_FPN_1x"
