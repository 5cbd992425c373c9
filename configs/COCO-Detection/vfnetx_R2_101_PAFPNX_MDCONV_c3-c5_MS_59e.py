# VFNet-X: Res2Net-101 (26w x 4s) with DCNv2 in C3-C5, PAFPN-X neck, 4 x 384 head, random crop +
# multi-scale (750x500 to 2100x1400) + CutOut training for 41 epochs, then 18 epochs of SWA;
# Soft-NMS; tested at 1333x800.
# Reference (vfnetx_r2_101_fpn_mdconv_c3-c5_mstrain_59e_coco, 1333x800): COCO val AP 53.4, test-dev 53.7.
from ..common.vfnetx_recipe import dataloader, lr_multiplier, model, optimizer, train
