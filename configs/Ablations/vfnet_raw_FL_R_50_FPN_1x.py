# Ablation row 1 (paper Table 3, R-50 1x): the raw VFNet, FCOS + ATSS without the centerness
# branch, trained with the focal loss: the reference's `configs/vfnet/vfnet_raw_r50_fpn_1x_coco.py`
# (`VFNetRawHead`, `use_vfl=False`). Same data, optimizer and schedule as VFNet R-50 1x.
# Next rows: vfnet_raw_VFL_R_50_FPN_1x.py (+ VFL), vfnet_star_VFL_R_50_FPN_1x.py (+ star-shaped
# features), vfnet_VFL_R_50_FPN_1x.py (+ box refinement = VFNet).
from detectron2.config import LazyConfig

from ..common.models.vfnet_ablation import model

dataloader, lr_multiplier, optimizer, train = LazyConfig.load_rel(
    "../COCO-Detection/vfnet_R_50_FPN_1x.py", ("dataloader", "lr_multiplier", "optimizer", "train")
)
train.output_dir = "./output/ablation_vfnet_raw_FL_R_50_FPN_1x"
