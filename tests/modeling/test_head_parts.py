"""The dense heads' shared building blocks (vfnet.head_parts) and batch_valid_flags, on hand-computed cases."""
import unittest

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator

from vfnet.detectors.common import batch_valid_flags
from vfnet.head_parts import box_normalizers, conv_tower, damped_star_boxes, init_dense_head, input_channels
from vfnet.layers import ModulatedDeformConv2d


class HeadPartsTest(unittest.TestCase):
    def test_box_normalizers(self):
        self.assertEqual(box_normalizers("reg_denom", [64, 128], [8, 16], "H"), [64.0, 128.0])
        self.assertEqual(box_normalizers("stride", [64, 128], [8, 16], "H"), [8.0, 16.0])
        with self.assertRaisesRegex(ValueError, "H: 1 reg_denoms for 2 levels"):
            box_normalizers("reg_denom", [64], [8, 16], "H")
        with self.assertRaisesRegex(ValueError, "H: bbox_norm_type must be"):
            box_normalizers("size", [64, 128], [8, 16], "H")

    def test_input_channels(self):
        self.assertEqual(input_channels([ShapeSpec(channels=32, stride=8)] * 2, "H"), 32)
        with self.assertRaisesRegex(ValueError, "H: all input levels must have the same channels"):
            input_channels([ShapeSpec(channels=32), ShapeSpec(channels=16)], "H")

    def test_conv_tower(self):
        tower = conv_tower(16, 32, 3, "GN", deformable_last=True)
        self.assertEqual(len(tower), 3)
        self.assertIsInstance(tower[2], ModulatedDeformConv2d)
        self.assertIsNone(tower[0].bias)  # a norm: no bias
        self.assertEqual(tower(torch.zeros(1, 16, 5, 6)).shape, (1, 32, 5, 6))
        self.assertIsNotNone(conv_tower(16, 32, 1, "")[0].bias)

    def test_damped_star_boxes(self):
        boxes = torch.tensor([8.0, 16.0, 24.0, 32.0]).reshape(1, 4, 1, 1).requires_grad_()
        star = damped_star_boxes(boxes, 8, 0.1)
        self.assertTrue(torch.allclose(star.detach().flatten(), torch.tensor([1.0, 2.0, 3.0, 4.0])))
        star.sum().backward()
        self.assertTrue(torch.allclose(boxes.grad.flatten(), torch.full((4,), 0.1 / 8)))
        self.assertEqual(damped_star_boxes(boxes, 8, 0.1, torch.bfloat16).dtype, torch.bfloat16)

    def test_init_dense_head(self):
        head = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3), torch.nn.Conv2d(4, 2, 1))
        init_dense_head(head, head[1], 0.01)
        self.assertEqual(head[0].bias.abs().sum().item(), 0.0)
        self.assertTrue(torch.allclose(head[1].bias, torch.full((2,), -4.59511985013459)))  # -log(0.99 / 0.01)
        self.assertLess(head[0].weight.std().item(), 0.02)

    def test_batch_valid_flags(self):
        # a 20 x 12 image padded to 32: its padded area is 32 x 16, 4 x 2 cells of stride 8, of the 4 x 4 map
        generator = DefaultAnchorGenerator(sizes=[[8.0]], aspect_ratios=[[0.5, 1.0]], strides=[8], offset=0.0)
        flags = batch_valid_flags([torch.zeros(1, 1, 4, 4)], [(20, 12)], generator, 16)
        expected = torch.tensor([[True, True, False, False]] * 4).reshape(-1).repeat_interleave(2)
        self.assertTrue(torch.equal(flags[0][0], expected))


if __name__ == "__main__":
    unittest.main()
