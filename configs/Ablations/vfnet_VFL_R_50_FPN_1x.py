# Ablation row 4 (paper Table 3): + bounding-box refinement = VFNet R-50 1x itself
# (configs/COCO-Detection/vfnet_R_50_FPN_1x.py, reference COCO val AP 41.6).
from detectron2.config import LazyConfig

dataloader, lr_multiplier, model, optimizer, train = LazyConfig.load_rel(
    "../COCO-Detection/vfnet_R_50_FPN_1x.py", ("dataloader", "lr_multiplier", "model", "optimizer", "train")
)
train.output_dir = "./output/ablation_vfnet_VFL_R_50_FPN_1x"
