# VFNet R-50 FPN, 1x (12 epochs), single-scale training.
# Reference (hyz-xmaster/VarifocalNet, vfnet_r50_fpn_1x_coco): COCO val AP 41.6, test-dev 41.6.
from ..common.coco_schedule import COCO_ITERS_PER_EPOCH
from ..common.coco_schedule import lr_multiplier_1x as lr_multiplier
from ..common.data.coco import dataloader
from ..common.models.vfnet import model
from ..common.optim import SGD as optimizer
from ..common.train import train

# 12 epochs of 7,330 iterations (16 images each); evaluate and checkpoint after every epoch, as
# the reference does.
train.max_iter = 12 * COCO_ITERS_PER_EPOCH
train.eval_period = COCO_ITERS_PER_EPOCH
train.checkpointer.period = COCO_ITERS_PER_EPOCH
# ImageNet-pretrained ResNet-50 from torchvision (the reference's `torchvision://resnet50`),
# converted for this model (see README, "ImageNet initialisation"):
#   python tools/convert_imagenet_checkpoint.py resnet50-19c8e357.pth pretrained/R-50.pth
# torchvision's weights take RGB input normalised with `model.pixel_mean/std`, as here.
# To evaluate a converted reference checkpoint: `--eval-only train.init_checkpoint=...`.
train.init_checkpoint = "pretrained/R-50.pth"
