# VFNet Res2Net-101 (26w x 4s) FPN, 2x (24 epochs), multi-scale training (short side in [480, 960]).
# Reference (vfnet_r2_101_fpn_mstrain_2x_coco): COCO val AP 49.2, test-dev 49.3.
from ..common.models.vfnet_res2net import model
from .vfnet_R_50_FPN_MS_2x import dataloader, lr_multiplier, optimizer, train

# The reference's ImageNet Res2Net-101 v1d 26w x 4s (`open-mmlab://res2net101_v1d_26w_4s`, i.e.
# res2net101_v1d_26w_4s_mmdetv2-f0a600f9.pth):
#   python tools/convert_imagenet_checkpoint.py res2net101_v1d_26w_4s_mmdetv2-f0a600f9.pth pretrained/R2-101.pth
train.init_checkpoint = "pretrained/R2-101.pth"
