# VFNet-X tested at 1800x1200 (short side 1200, long side at most 1800); trained exactly as
# vfnetx_R2_101_PAFPNX_MDCONV_c3-c5_MS_59e.py (evaluate its checkpoint with --eval-only).
# Reference (VFNet-X-1200): COCO val AP 54.5, test-dev 55.1.
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L

from ..common.vfnetx_recipe import dataloader, lr_multiplier, model, optimizer, train

dataloader.test.mapper.augmentations = [L(T.ResizeShortestEdge)(short_edge_length=1200, max_size=1800)]
