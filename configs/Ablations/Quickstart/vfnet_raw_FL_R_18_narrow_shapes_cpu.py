# Ablation row 1 on the embedded synthetic shapes dataset (CPU): the raw VFNet (FCOS + ATSS
# without centerness), focal loss, with the quickstart's narrow model, data and recipe
# (configs/Quickstart/vfnet_R_18_narrow_shapes_cpu.py); only the head differs.
from detectron2.config import LazyConfig

from ...common.models.vfnet_ablation import ablation_model

dataloader, model, optimizer, lr_multiplier, train = LazyConfig.load_rel(
    "../../Quickstart/vfnet_R_18_narrow_shapes_cpu.py", ("dataloader", "model", "optimizer", "lr_multiplier", "train")
)
model = ablation_model(model, star_features=False, use_vfl=False)
train.output_dir = "./output/quickstart_ablation_raw_FL"
