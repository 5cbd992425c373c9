# VFNet Res2Net-101 (26w x 4s) FPN with DCNv2 in C3-C5 and on the last conv of each head tower,
# 2x (24 epochs), multi-scale training (short side in [480, 960]).
# Reference (vfnet_r2_101_fpn_mdconv_c3-c5_mstrain_2x_coco): COCO val AP 51.1, test-dev 51.3.
from .vfnet_R2_101_FPN_MS_2x import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.stages.deform_on_per_stage = [False, True, True, True]
model.head.dcn_on_last_conv = True
