# ATSS with the Varifocal Loss on the embedded synthetic shapes dataset, on the CPU: the
# detector of ../atss*_VFL_R_50_FPN_1x.py (the reference's recipe) at the quickstart's width,
# with the quickstart's data and the SGD recipe it had (2600 iterations of 16 images,
# cosine lr from 0.03, bfloat16 autocast). `model.use_vfl=False` trains it with the focal loss.
from detectron2.config import LazyConfig

from ...common.models.atss import model
from ...common.quickstart_sgd_recipe import MAX_ITER as SGD_MAX_ITER, lr_multiplier, optimizer
from ._narrow import HEAD_CHANNELS, NUM_CONVS, head_input_shape, narrow_backbone

dataloader, train = LazyConfig.load_rel(
    "../../Quickstart/vfnet_R_18_narrow_shapes_cpu.py", ("dataloader", "train")
)
# The SGD recipe these runs were tuned with (the quickstart itself now trains with AdamW).
train.max_iter = SGD_MAX_ITER
model.num_classes = 6
narrow_backbone(model.backbone)
model.head.input_shape = head_input_shape()
model.head.feat_channels = HEAD_CHANNELS
model.head.stacked_convs = NUM_CONVS
train.output_dir = "./output/quickstart_atss"
