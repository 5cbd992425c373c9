# RetinaNet R-50 FPN, 1x, with the Varifocal Loss: the reference's `configs/vfnet/vfl_retinanet_r50_fpn_4x4_1x_coco.py`
# (hyz-xmaster/VarifocalNet). Reference COCO val AP: 37.4 with VFL (this file), 36.5 with the focal
# loss (`retinanet_FL_R_50_FPN_1x.py`, or `model.use_vfl=False`).
# To evaluate the reference's checkpoint:
#   python tools/convert_mmdet_checkpoint.py REFERENCE.pth converted.pth
#   python tools/train_net.py --config-file THIS_FILE --eval-only train.init_checkpoint=converted.pth
from ..common.coco_schedule import lr_multiplier_1x as lr_multiplier
from ..common.data.coco import dataloader
from ..common.models.retinanet_vfl import model
from ..common.optim import SGD as optimizer
from ..common.train import train

# 16 images per batch, lr 0.01; plain SGD: the reference's config has no bias rules for this
# detector (biases at lr x1 with weight decay)
optimizer.params.bias_lr_factor = 1.0
optimizer.params.weight_decay_bias = None
train.max_iter = 90000
train.output_dir = "./output/retinanet_VFL_R_50_FPN_1x"
# ImageNet-pretrained ResNet-50 from torchvision (the reference's `torchvision://resnet50`)
train.init_checkpoint = "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
