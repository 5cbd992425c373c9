# Ablation row 4 on the embedded dataset: + box refinement = the quickstart's VFNet itself.
from detectron2.config import LazyConfig

dataloader, model, optimizer, lr_multiplier, train = LazyConfig.load_rel(
    "../../Quickstart/vfnet_R_18_narrow_shapes_cpu.py", ("dataloader", "model", "optimizer", "lr_multiplier", "train")
)
train.output_dir = "./output/quickstart_ablation_vfnet_VFL"
