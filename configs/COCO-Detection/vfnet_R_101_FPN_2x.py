# VFNet R-101 FPN, 2x (24 epochs), single-scale training.
# Reference (vfnet_r101_fpn_2x_coco): COCO val AP 43.5, test-dev 43.9.
from ..common.coco_schedule import COCO_ITERS_PER_EPOCH
from ..common.coco_schedule import lr_multiplier_2x as lr_multiplier
from .vfnet_R_101_FPN_1x import dataloader, model, optimizer, train

train.max_iter = 24 * COCO_ITERS_PER_EPOCH
