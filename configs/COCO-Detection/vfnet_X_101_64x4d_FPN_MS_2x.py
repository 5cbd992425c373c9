# VFNet X-101-64x4d FPN, 2x (24 epochs), multi-scale training (short side in [480, 960]).
# Reference (vfnet_x101_64x4d_fpn_mstrain_2x_coco): COCO val AP 48.2, test-dev 48.5.
from .vfnet_X_101_32x4d_FPN_MS_2x import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.stages.update(depth=101, num_groups=64, width_per_group=4)
# The reference's ImageNet ResNeXt-101-64x4d (`open-mmlab://resnext101_64x4d`, i.e.
# resnext101_64x4d-ee2c6f71.pth):
#   python tools/convert_imagenet_checkpoint.py resnext101_64x4d-ee2c6f71.pth pretrained/X-101-64x4d.pth
train.init_checkpoint = "pretrained/X-101-64x4d.pth"
