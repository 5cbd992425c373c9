# VFNet R-50 FPN, 1x (12 epochs), single-scale training.
# Reference (hyz-xmaster/VarifocalNet, vfnet_r50_fpn_1x_coco): COCO val AP 41.6, test-dev 41.6.
from ..common.coco_schedule import lr_multiplier_1x as lr_multiplier
from ..common.data.coco import dataloader
from ..common.models.vfnet import model
from ..common.optim import SGD as optimizer
from ..common.train import train

train.max_iter = 90000
# ImageNet-pretrained ResNet-50 from torchvision (the reference's `torchvision://resnet50`), as
# converted to detectron2's names by detectron2's `tools/convert-torchvision-to-d2.py`; the
# checkpointer downloads it when training starts. To make it yourself:
#   python tools/convert-torchvision-to-d2.py resnet50-19c8e357.pth R-50.pkl
# and set `train.init_checkpoint=/path/to/R-50.pkl`. torchvision's weights take RGB input
# normalised with the mean/std of `model.pixel_mean/std`, as this config does.
# To evaluate a converted reference checkpoint: `--eval-only train.init_checkpoint=...`.
train.init_checkpoint = "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
