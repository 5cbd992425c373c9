# COCO 2017 with the reference's VFNet-X training pipeline (its
# `vfnetx_r2_101_fpn_mdconv_c3-c5_mstrain_59e_coco.py`), in order:
#   RandomCrop(crop_type="relative_range", crop_size=(0.75, 0.75), crop_p=0.5)
#   -> Resize(img_scale=[(750, 500), (2100, 1400)], multiscale_mode="range", keep_ratio=True)
#   -> CutOut(n_holes=(5, 10), 13 hole shapes from 4x4 to 48x48, cutout_p=0.5)
#   -> RandomFlip(0.5) -> Normalize (the model's pixel_mean/std) -> Pad(32) (the backbone's
#   size_divisibility).
# RGB images, 16 per batch in total; testing at 1333x800 as `coco.py`. The crop needs the boxes,
# so the mapper is `DatasetMapperWithBoxes`; when no crop keeps a box it is re-drawn, then
# skipped (the reference draws another image instead; see `RandomCropKeepingBoxes`).
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L

from vfnet.data import CutOut, DatasetMapperWithBoxes, MultiScaleKeepRatioResize, RandomCropKeepingBoxes

from .coco import dataloader

# (width, height) of a CutOut hole, as the reference's `cutout_shape`
CUTOUT_HOLE_SIZES = [
    (4, 4), (4, 8), (8, 4), (8, 8), (16, 8), (8, 16), (16, 16),
    (16, 32), (32, 16), (32, 32), (32, 48), (48, 32), (48, 48),
]  # fmt: skip

dataloader.train.mapper = L(DatasetMapperWithBoxes)(
    is_train=True,
    augmentations=[
        L(RandomCropKeepingBoxes)(crop_type="relative_range", crop_size=(0.75, 0.75), prob=0.5),
        L(MultiScaleKeepRatioResize)(scales=[(750, 500), (2100, 1400)], multiscale_mode="range"),
        L(CutOut)(n_holes=(5, 10), hole_sizes=CUTOUT_HOLE_SIZES, prob=0.5, fill_value=0),
        L(T.RandomFlip)(horizontal=True),
    ],
    image_format="RGB",
    use_instance_mask=False,
)
dataloader.train.total_batch_size = 16
