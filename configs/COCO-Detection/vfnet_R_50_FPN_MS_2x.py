# VFNet R-50 FPN, 2x (24 epochs), multi-scale training (short side in [480, 960]).
# Reference (vfnet_r50_fpn_mstrain_2x_coco): COCO val AP 44.5, test-dev 44.8.
from ..common.coco_schedule import COCO_ITERS_PER_EPOCH
from ..common.coco_schedule import lr_multiplier_2x as lr_multiplier
from ..common.data.coco_ms import dataloader
from .vfnet_R_50_FPN_1x import model, optimizer, train

train.max_iter = 24 * COCO_ITERS_PER_EPOCH
