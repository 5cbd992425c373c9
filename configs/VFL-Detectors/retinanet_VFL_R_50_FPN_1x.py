# RetinaNet R-50 FPN, 1x, with the Varifocal Loss: the reference's `configs/vfnet/vfl_retinanet_r50_fpn_4x4_1x_coco.py`
# (hyz-xmaster/VarifocalNet). Reference COCO val AP: 37.4 with VFL (this file), 36.5 with the focal
# loss (`retinanet_FL_R_50_FPN_1x.py`, or `model.use_vfl=False`).
# To evaluate the reference's checkpoint:
#   python tools/convert_mmdet_checkpoint.py REFERENCE.pth converted.pth
#   python tools/train_net.py --config-file THIS_FILE --eval-only train.init_checkpoint=converted.pth
from ..common.coco_schedule import COCO_ITERS_PER_EPOCH
from ..common.coco_schedule import lr_multiplier_1x as lr_multiplier
from ..common.data.coco import dataloader
from ..common.models.retinanet_vfl import model
from ..common.optim import SGD as optimizer
from ..common.train import train

# 16 images per batch, lr 0.01; plain SGD: the reference's config has no bias rules for this
# detector (biases at lr x1 with weight decay, as every other parameter)
optimizer.params.bias_lr_mult = 1.0
optimizer.params.bias_decay_mult = 1.0
# 12 epochs of 7,330 iterations; evaluate and checkpoint after every epoch
train.max_iter = 12 * COCO_ITERS_PER_EPOCH
train.eval_period = COCO_ITERS_PER_EPOCH
train.checkpointer.period = COCO_ITERS_PER_EPOCH
train.output_dir = "./output/retinanet_VFL_R_50_FPN_1x"
# ImageNet-pretrained ResNet-50 from torchvision (the reference's `torchvision://resnet50`):
#   python tools/convert_imagenet_checkpoint.py resnet50-19c8e357.pth pretrained/R-50.pth
train.init_checkpoint = "pretrained/R-50.pth"
