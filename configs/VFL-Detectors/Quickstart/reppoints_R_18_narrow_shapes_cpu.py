# RepPoints (moment, GN neck + head) with the Varifocal Loss on the embedded synthetic shapes dataset, on the CPU: the
# detector of ../reppoints*_VFL_R_50_FPN_1x.py (the reference's recipe) at the quickstart's width,
# with the quickstart's data and recipe (2000 iterations of 16 images, AdamW,
# cosine lr, bfloat16 autocast). `model.use_vfl=False` trains it with the focal loss.
from detectron2.config import LazyConfig

from ...common.models.reppoints import model
from ._narrow import HEAD_CHANNELS, NUM_CONVS, head_input_shape, narrow_backbone

dataloader, optimizer, lr_multiplier, train = LazyConfig.load_rel(
    "../../Quickstart/vfnet_R_18_narrow_shapes_cpu.py", ("dataloader", "optimizer", "lr_multiplier", "train")
)
model.num_classes = 6
narrow_backbone(model.backbone)
model.head.input_shape = head_input_shape()
model.head.feat_channels = HEAD_CHANNELS
model.head.point_feat_channels = HEAD_CHANNELS
model.head.stacked_convs = NUM_CONVS
train.output_dir = "./output/quickstart_reppoints"
