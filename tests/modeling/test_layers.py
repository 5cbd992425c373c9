import unittest

import torch
from torchvision.ops import deform_conv2d

from vfnet import ModulatedDeformConv2d, Scale, StarDeformConv2d


def bilinear(image: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """Sample (C, H, W) at (y, x) with zero outside, as deformable convolution does."""
    _, h, w = image.shape
    y0, x0 = int(torch.floor(torch.tensor(y))), int(torch.floor(torch.tensor(x)))
    out = torch.zeros(image.shape[0], dtype=image.dtype)
    for yy in (y0, y0 + 1):
        for xx in (x0, x0 + 1):
            if 0 <= yy < h and 0 <= xx < w:
                out += (1 - abs(y - yy)) * (1 - abs(x - xx)) * image[:, yy, xx]
    return out


class StarDeformConvTest(unittest.TestCase):
    def test_each_tap_samples_its_star_point(self):
        torch.manual_seed(0)
        n, c, h, w = 1, 2, 5, 6
        x = torch.randn(n, c, h, w, dtype=torch.float64)
        ltrb = torch.rand(n, 4, h, w, dtype=torch.float64) * 4  # reaches past the map's border
        conv = StarDeformConv2d(c, 1).double()
        rows = [lambda y, t, b: y - t, lambda y, t, b: y, lambda y, t, b: y + b]
        cols = [lambda x_, l, r: x_ - l, lambda x_, l, r: x_, lambda x_, l, r: x_ + r]
        for i in range(3):
            for j in range(3):
                with torch.no_grad():
                    conv.weight.zero_()
                    conv.weight[0, 1, i, j] = 1.0  # picks channel 1 at tap (i, j)
                    out = conv(x, ltrb)
                for yy in range(h):
                    for xx in range(w):
                        l, t, r, b = ltrb[0, :, yy, xx].tolist()
                        expected = bilinear(x[0], rows[i](yy, t, b), cols[j](xx, l, r))[1]
                        self.assertAlmostEqual(out[0, 0, yy, xx].item(), expected.item(), places=10)

    def test_matches_deform_conv_with_explicit_offsets(self):
        torch.manual_seed(1)
        x = torch.randn(2, 3, 7, 4)
        ltrb = torch.rand(2, 4, 7, 4) * 3
        conv = StarDeformConv2d(3, 5, bias=True)
        torch.nn.init.normal_(conv.bias)
        l, t, r, b = ltrb.unbind(1)
        zero = torch.zeros_like(l)
        dy = [1 - t, 1 - t, 1 - t, zero, zero, zero, b - 1, b - 1, b - 1]
        dx = [1 - l, zero, r - 1, 1 - l, zero, r - 1, 1 - l, zero, r - 1]
        offset = torch.stack([v for pair in zip(dy, dx) for v in pair], dim=1)
        expected = deform_conv2d(x, offset, conv.weight, conv.bias, padding=1)
        torch.testing.assert_close(conv(x, ltrb), expected)

    def test_gradients_reach_input_weight_and_box(self):
        x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
        ltrb = (torch.rand(1, 4, 4, 4, dtype=torch.float64) * 2 + 0.3).requires_grad_()
        conv = StarDeformConv2d(2, 2).double()
        self.assertTrue(torch.autograd.gradcheck(lambda a, b: conv(a, b), (x, ltrb)))

    def test_shape_mismatch(self):
        conv = StarDeformConv2d(2, 2)
        with self.assertRaisesRegex(ValueError, "ltrb of shape"):
            conv(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4, 5))


class ModulatedDeformConvTest(unittest.TestCase):
    def test_zero_offsets_half_mask_is_half_a_conv(self):
        # conv_offset starts at zero: offsets 0, mask sigmoid(0) = 0.5.
        torch.manual_seed(0)
        layer = ModulatedDeformConv2d(3, 4)
        x = torch.randn(2, 3, 5, 6)
        expected = 0.5 * torch.nn.functional.conv2d(x, layer.weight, padding=1)
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)

    def test_offset_then_mask_channel_order(self):
        torch.manual_seed(0)
        layer = ModulatedDeformConv2d(2, 3)
        torch.nn.init.normal_(layer.conv_offset.weight, std=0.1)
        torch.nn.init.normal_(layer.conv_offset.bias, std=0.5)
        x = torch.randn(1, 2, 6, 5)
        om = layer.conv_offset(x)
        expected = deform_conv2d(x, om[:, :18], layer.weight, padding=1, mask=om[:, 18:].sigmoid())
        torch.testing.assert_close(layer(x), expected)


class ScaleTest(unittest.TestCase):
    def test_scale(self):
        s = Scale(0.5)
        self.assertEqual(s(torch.tensor([2.0, 4.0])).tolist(), [1.0, 2.0])
        self.assertEqual(s.scale.shape, ())


if __name__ == "__main__":
    unittest.main()
