# Ablation row 1 on the embedded synthetic shapes dataset (CPU): the raw VFNet (FCOS + ATSS
# without centerness), focal loss, with the quickstart's narrow model and data, and the SGD
# recipe the quickstart had (configs/Quickstart/vfnet_R_18_narrow_shapes_cpu.py); only the head differs.
from detectron2.config import LazyConfig

from ...common.models.vfnet_ablation import ablation_model
from ...common.quickstart_sgd_recipe import MAX_ITER as SGD_MAX_ITER, lr_multiplier, optimizer

dataloader, model, train = LazyConfig.load_rel(
    "../../Quickstart/vfnet_R_18_narrow_shapes_cpu.py", ("dataloader", "model", "train")
)
# The SGD recipe these runs were tuned with (the quickstart itself now trains with AdamW).
train.max_iter = SGD_MAX_ITER
model = ablation_model(model, star_features=False, use_vfl=False)
train.output_dir = "./output/quickstart_ablation_raw_FL"
