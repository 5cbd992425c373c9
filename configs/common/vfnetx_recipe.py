# The reference's VFNet-X recipe (`vfnetx_r2_101_fpn_mdconv_c3-c5_mstrain_59e_coco.py`): the VFNet-X
# model (`models/vfnetx.py`), its augmentations (`data/coco_vfnetx.py`), SGD as every VFNet, 41
# epochs with the lr x0.1 after epochs 36 and 40 (a checkpoint and an evaluation after every
# epoch), then 18 epochs of SWA from the best checkpoint by bbox AP (`train.swa`), Soft-NMS at test.
# The top-level VFNet-X configs import everything from here.
from .coco_schedule import COCO_ITERS_PER_EPOCH
from .coco_schedule import lr_multiplier_vfnetx as lr_multiplier
from .data.coco_vfnetx import dataloader
from .models.vfnetx import model
from .optim import SGD as optimizer
from .train import train

train.max_iter = 41 * COCO_ITERS_PER_EPOCH
train.eval_period = COCO_ITERS_PER_EPOCH
train.checkpointer.period = COCO_ITERS_PER_EPOCH
train.swa.update(enabled=True, start_from="best", epochs=18, iters_per_epoch=COCO_ITERS_PER_EPOCH, lr_end_ratio=0.01)
# The reference's ImageNet Res2Net-101 v1d 26w x 4s (`open-mmlab://res2net101_v1d_26w_4s`):
#   python tools/convert_imagenet_checkpoint.py res2net101_v1d_26w_4s_mmdetv2-f0a600f9.pth pretrained/R2-101.pth
train.init_checkpoint = "pretrained/R2-101.pth"
