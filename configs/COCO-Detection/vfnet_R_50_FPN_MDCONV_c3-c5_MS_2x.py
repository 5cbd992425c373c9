# VFNet R-50 FPN with DCNv2 in C3-C5 and on the last conv of each head tower, 2x (24 epochs),
# multi-scale training (short side in [480, 960]).
# Reference (vfnet_r50_fpn_mdconv_c3-c5_mstrain_2x_coco): COCO val AP 47.8, test-dev 48.0.
from .vfnet_R_50_FPN_MS_2x import dataloader, lr_multiplier, model, optimizer, train

# the 3x3 convs of every block of res3-res5 are modulated deformable convs (DCNv2), the stride-2
# first blocks included; their offset convs start at zero (ImageNet weights have none)
model.backbone.bottom_up.stages.deform_on_per_stage = [False, True, True, True]
model.head.dcn_on_last_conv = True
