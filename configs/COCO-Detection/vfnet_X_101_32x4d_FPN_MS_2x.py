# VFNet X-101-32x4d FPN, 2x (24 epochs), multi-scale training (short side in [480, 960]).
# Reference (vfnet_x101_32x4d_fpn_mstrain_2x_coco): COCO val AP 47.4, test-dev 47.6.
from .vfnet_R_101_FPN_MS_2x import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.stages.update(depth=101, num_groups=32, width_per_group=4)
# The reference's ImageNet ResNeXt-101-32x4d (`open-mmlab://resnext101_32x4d`, i.e.
# resnext101_32x4d-a5af3160.pth; torchvision has no 32x4d), in torchvision's layout:
#   python tools/convert_imagenet_checkpoint.py resnext101_32x4d-a5af3160.pth pretrained/X-101-32x4d.pth
# It takes RGB input with the same mean/std as torchvision's ResNets.
train.init_checkpoint = "pretrained/X-101-32x4d.pth"
