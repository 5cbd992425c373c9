# VFNet R-101 FPN, 2x (24 epochs), multi-scale training (short side in [480, 960]).
# Reference (vfnet_r101_fpn_mstrain_2x_coco): COCO val AP 46.2, test-dev 46.7.
from ..common.data.coco_ms import dataloader
from .vfnet_R_101_FPN_2x import lr_multiplier, model, optimizer, train
