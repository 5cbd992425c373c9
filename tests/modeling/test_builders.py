"""vfnet.builders: the LazyCall trees every way of building VFNet shares, and what they build."""
import unittest

import torch
from detectron2.config import instantiate

from vfnet.builders import STRIDES, fpn_p3_p7, head_input_shape, point_generator, res2net_bottom_up, resnet_bottom_up
from vfnet.resnet import DeformBottleneckBlock


class BuildersTest(unittest.TestCase):
    def test_the_tree_users_edit(self):
        cfg = resnet_bottom_up(depth=18, stem_channels=8, norm="BN", freeze_at=0)
        cfg.stages.depth = 34  # as a config file edits it
        cfg.stem.out_channels = cfg.stages.stem_channels = 16
        resnet = instantiate(cfg)
        # ResNet-34: 3, 4, 6, 3 basic blocks (He et al., Table 1); res5 has 8 x the stem's 16 channels
        self.assertEqual([len(getattr(resnet, f"res{i}")) for i in range(2, 6)], [3, 4, 6, 3])
        self.assertEqual(resnet.output_shape()["res5"].channels, 128)
        self.assertEqual(sorted(resnet.output_shape()), ["res3", "res4", "res5"])

    def test_deformable_stages_and_res2net(self):
        resnet = instantiate(
            resnet_bottom_up(depth=50, stem_channels=8, width_per_group=8, deform_on_per_stage=[False, True, False, True])
        )
        self.assertEqual(
            [isinstance(getattr(resnet, f"res{i}")[0], DeformBottleneckBlock) for i in range(2, 6)],
            [False, True, False, True],
        )
        res2net = instantiate(res2net_bottom_up(depth=50, base_channels=16, base_width=4))
        self.assertEqual(type(res2net.stem).__name__, "Res2NetStem")
        self.assertEqual([len(getattr(res2net, f"res{i}")) for i in range(2, 6)], [3, 4, 6, 3])

    def test_fpn_levels_and_p6_from_p5(self):
        torch.manual_seed(0)
        fpn = instantiate(fpn_p3_p7(resnet_bottom_up(depth=18, stem_channels=8, norm="BN"), out_channels=16))
        shapes = fpn.output_shape()
        self.assertEqual({k: (v.channels, v.stride) for k, v in shapes.items()}, {f"p{i}": (16, 2**i) for i in range(3, 8)})
        fpn.eval()
        with torch.no_grad():
            out = fpn(torch.randn(1, 3, 64, 96))
            # P6 = conv on P5 (the FPN output), P7 = conv on ReLU(P6)
            torch.testing.assert_close(out["p6"], fpn.top_block.p6(out["p5"]))
            torch.testing.assert_close(out["p7"], fpn.top_block.p7(torch.relu(out["p6"])))

    def test_points_and_head_shapes(self):
        generator = instantiate(point_generator(STRIDES, anchor_scale=8, offset=0.5))
        anchors = generator([torch.zeros(1, 1, 2, 3), torch.zeros(1, 1, 1, 2)] + [torch.zeros(1, 1, 1, 1)] * 3)
        # level 0, stride 8: centres ((j + 0.5) 8, (i + 0.5) 8), squares of side 64
        first = anchors[0].tensor[:4].tolist()
        self.assertEqual(first, [[-28.0, -28.0, 36.0, 36.0], [-20.0, -28.0, 44.0, 36.0], [-12.0, -28.0, 52.0, 36.0], [-28.0, -20.0, 36.0, 44.0]])
        self.assertEqual([(s.channels, s.stride) for s in head_input_shape(32)], [(32, s) for s in STRIDES])
