# COCO 2017 with the reference's multi-scale training ("MS train"): the short side is sampled
# uniformly in [480, 960] (MMDetection's `img_scale=[(1333, 480), (1333, 960)]`,
# `multiscale_mode="range"`), the long side kept at most 1333; everything else as `coco.py`,
# testing at 1333x800 included.
from .coco import dataloader

dataloader.train.mapper.augmentations[0].update(
    short_edge_length=(480, 960),
    sample_style="range",
    max_size=1333,
)
