# ResNet-50 + FPN P3-P7 as MMDetection builds it for RetinaNet, FoveaBox and RepPoints: ResNet
# in torchvision ("pytorch") style (stride on the 3x3 conv), BN with frozen statistics and
# trainable affine parameters as the reference trains it ("FrozenStatsBN"), stem and res2 frozen;
# FPN P3-P5 from C3-C5, P6 = 3x3/2 conv on C5 (`add_extra_convs='on_input'`), P7 = 3x3/2 conv on
# P6 without a ReLU in between (Detectron2's LastLevelP6P7 has one). ATSS edits `top_block` to
# take P5's output instead; RepPoints sets `norm="GN"` on the FPN and the top block.
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import FPN

from vfnet.builders import resnet_bottom_up
from vfnet.detectors import ExtraLevels

backbone = L(FPN)(
    bottom_up=resnet_bottom_up(depth=50, stride_in_1x1=False, norm="FrozenStatsBN", freeze_at=2),
    in_features="${.bottom_up.out_features}",
    out_channels=256,
    norm="",
    top_block=L(ExtraLevels)(
        in_channels=2048, out_channels="${..out_channels}", in_feature="res5", relu_before_p7=False, norm="${..norm}"
    ),
)
