# VFNet R-101 FPN, 1x (12 epochs), single-scale training.
# Reference (vfnet_r101_fpn_1x_coco): COCO val AP 43.0, test-dev 43.6.
from .vfnet_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.stages.depth = 101
# torchvision's ImageNet ResNet-101 (the reference's `torchvision://resnet101`):
#   python tools/convert_imagenet_checkpoint.py resnet101-5d3b4d8f.pth pretrained/R-101.pth
train.init_checkpoint = "pretrained/R-101.pth"
