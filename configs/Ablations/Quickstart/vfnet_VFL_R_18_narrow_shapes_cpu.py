# Ablation row 4 on the embedded dataset: + box refinement = the quickstart's VFNet itself.
from detectron2.config import LazyConfig
from ...common.quickstart_sgd_recipe import MAX_ITER as SGD_MAX_ITER, lr_multiplier, optimizer

dataloader, model, train = LazyConfig.load_rel(
    "../../Quickstart/vfnet_R_18_narrow_shapes_cpu.py", ("dataloader", "model", "train")
)
# The SGD recipe these runs were tuned with (the quickstart itself now trains with AdamW).
train.max_iter = SGD_MAX_ITER
train.output_dir = "./output/quickstart_ablation_vfnet_VFL"
