# VFNet-X (the reference's `vfnetx_r2_101_fpn_mdconv_c3-c5_mstrain_59e_coco.py`): Res2Net-101
# (26w x 4s, v1d) with DCNv2 in C3-C5, the PAFPN-X neck (FPN, a bottom-up path, a DCNv2 conv on
# every level, GroupNorm, 384 channels), a head of 4 convs x 384 channels per tower whose last
# conv is DCNv2, and Soft-NMS (IoU 0.65) at test time. Everything else as `vfnet.py`.
from vfnet.builders import STRIDES, head_input_shape, pafpnx_p3_p7

from .vfnet_res2net import model

CHANNELS = 384

model.backbone.bottom_up.stages.deform_on_per_stage = [False, True, True, True]
model.backbone = pafpnx_p3_p7(model.backbone.bottom_up, out_channels=CHANNELS, norm="GN")
model.head.input_shape = head_input_shape(CHANNELS, STRIDES)
model.head.feat_channels = CHANNELS
model.head.stacked_convs = 4
model.head.dcn_on_last_conv = True
model.test_nms_type = "soft_nms"  # linear Soft-NMS, class-wise, as mmcv's soft_nms
model.test_nms_thresh = 0.65
