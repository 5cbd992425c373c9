"""Tests of vfnet.ops.star_offsets (plain PyTorch) against the star points of the SPEC (2. Head):
explicit points, a hand-written case, and what torchvision's deform_conv2d samples with them."""
import unittest

import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

from vfnet.ops import star_offsets


def random_ltrb(n, h, w, dtype=torch.float64, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 4, h, w, generator=g, dtype=torch.float64) * 3).to(dtype).to(device)


def star_points(ltrb):
    """(N, 9, H, W) rows and columns of the 9 star points, tap k = 3 * i + j."""
    n, _, h, w = ltrb.shape
    y = torch.arange(h, dtype=ltrb.dtype, device=ltrb.device).view(1, h, 1).expand(n, h, w)
    x = torch.arange(w, dtype=ltrb.dtype, device=ltrb.device).view(1, 1, w).expand(n, h, w)
    l, t, r, b = ltrb.unbind(1)
    rows = (y - t, y, y + b)
    cols = (x - l, x, x + r)
    ys = torch.stack([rows[i] for i in range(3) for j in range(3)], dim=1)
    xs = torch.stack([cols[j] for i in range(3) for j in range(3)], dim=1)
    return ys, xs


def offsets_from_points(ltrb):
    """The SPEC's construction: each star point minus its tap's grid position (y + i - 1,
    x + j - 1), as (dy, dx) pairs in row-major tap order."""
    ys, xs = star_points(ltrb)
    n, _, h, w = ltrb.shape
    y = torch.arange(h, dtype=ltrb.dtype, device=ltrb.device).view(1, 1, h, 1)
    x = torch.arange(w, dtype=ltrb.dtype, device=ltrb.device).view(1, 1, 1, w)
    i = torch.arange(3, dtype=ltrb.dtype, device=ltrb.device).repeat_interleave(3).view(1, 9, 1, 1)
    j = torch.arange(3, dtype=ltrb.dtype, device=ltrb.device).repeat(3).view(1, 9, 1, 1)
    return torch.stack([ys - (y + i - 1), xs - (x + j - 1)], dim=2).view(n, 18, h, w)


class StarOffsetsTest(unittest.TestCase):
    def test_hand_written_case(self):
        # l, t, r, b = 1, 2, 3, 4 at a single location:
        # dy = {1 - t, 0, b - 1} = {-1, 0, 3}, dx = {1 - l, 0, r - 1} = {0, 0, 2}.
        ltrb = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 4, 1, 1)
        expected = torch.tensor(
            [-1, 0, -1, 0, -1, 2,  # taps 0, 1, 2 (top row)
             0, 0, 0, 0, 0, 2,  # taps 3, 4, 5 (middle row)
             3, 0, 3, 0, 3, 2],  # taps 6, 7, 8 (bottom row)
            dtype=torch.float32,
        ).view(1, 18, 1, 1)
        out = star_offsets(ltrb)
        self.assertEqual(out.shape, (1, 18, 1, 1))
        torch.testing.assert_close(out, expected, rtol=0, atol=0)

    def test_offsets_point_at_star_points(self):
        for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            with self.subTest(dtype=dtype):
                ltrb = random_ltrb(2, 4, 6, dtype=dtype)
                out = star_offsets(ltrb)
                self.assertEqual(out.dtype, dtype)
                self.assertEqual(out.shape, (2, 18, 4, 6))
                self.assertTrue(out.is_contiguous())
                # Integers and halves of small size: both constructions are exact in every dtype.
                ltrb = (random_ltrb(2, 4, 6) * 2).round().div(2).to(dtype)
                torch.testing.assert_close(star_offsets(ltrb), offsets_from_points(ltrb), rtol=0, atol=0)

    def _sample_with_deform_conv(self, image, ltrb):
        """Output channel k = value that a 3x3 deform conv samples at tap k."""
        weight = torch.zeros(9, 1, 3, 3, dtype=image.dtype)
        for k in range(9):
            weight[k, 0, k // 3, k % 3] = 1.0
        return deform_conv2d(image, star_offsets(ltrb), weight, padding=1)

    def test_deform_conv_samples_integer_star_points(self):
        # Integer sides: every star point is a pixel, so the samples are exact pixel values.
        image = torch.arange(1.0, 1 + 9 * 11, dtype=torch.float64).view(1, 1, 9, 11)
        ltrb = torch.zeros(1, 4, 9, 11, dtype=torch.float64)
        ltrb[0, :, 4, 5] = torch.tensor([2.0, 1.0, 3.0, 4.0])  # l, t, r, b at (y, x) = (4, 5)
        samples = self._sample_with_deform_conv(image, ltrb)[0, :, 4, 5]
        expected = torch.stack(
            [image[0, 0, row, col] for row in (4 - 1, 4, 4 + 4) for col in (5 - 2, 5, 5 + 3)]
        )
        torch.testing.assert_close(samples, expected, rtol=0, atol=1e-12)

    def test_deform_conv_samples_star_points_bilinearly(self):
        # Fractional sides, all points inside the image: compare with grid_sample.
        n, h, w = 2, 12, 13
        g = torch.Generator().manual_seed(1)
        image = torch.rand(n, 1, h, w, generator=g, dtype=torch.float64)
        ltrb = torch.rand(n, 4, h, w, generator=g, dtype=torch.float64) * 2.5
        ys, xs = star_points(ltrb)
        inside = (ys >= 0).all(1) & (ys <= h - 1).all(1) & (xs >= 0).all(1) & (xs <= w - 1).all(1)
        self.assertGreater(int(inside.sum()), 20)
        samples = self._sample_with_deform_conv(image, ltrb)
        # grid_sample (align_corners=True) at the star points: grid (N, 9 * H, W, 2) as (x, y).
        grid = torch.stack([xs / (w - 1) * 2 - 1, ys / (h - 1) * 2 - 1], dim=-1)
        ref = F.grid_sample(
            image, grid.view(n, 9 * h, w, 2), mode="bilinear", align_corners=True
        ).view(n, 9, h, w)
        mask = inside.unsqueeze(1).expand_as(ref)
        torch.testing.assert_close(samples[mask], ref[mask])

    def test_gradient_closed_form(self):
        # d offsets / d ltrb is constant: l moves dx of the left column (taps 0, 3, 6) by -1, t
        # dy of the top row (taps 0, 1, 2) by -1, r dx of the right column (2, 5, 8) by +1, b dy
        # of the bottom row (6, 7, 8) by +1.
        ltrb = random_ltrb(2, 3, 5).requires_grad_()
        g = torch.randn(2, 18, 3, 5, dtype=torch.float64)
        (grad,) = torch.autograd.grad(star_offsets(ltrb), ltrb, g)
        dy, dx = g[:, 0::2], g[:, 1::2]
        left, top, right, bottom = [0, 3, 6], [0, 1, 2], [2, 5, 8], [6, 7, 8]
        expected = torch.stack(
            [-dx[:, left].sum(1), -dy[:, top].sum(1), dx[:, right].sum(1), dy[:, bottom].sum(1)], dim=1
        )
        torch.testing.assert_close(grad, expected, rtol=0, atol=1e-12)
        self.assertTrue(torch.autograd.gradcheck(star_offsets, (ltrb,)))

    def test_batch_zero_empty_and_non_contiguous(self):
        for shape in ((0, 4, 5, 6), (2, 4, 0, 3)):
            ltrb = torch.zeros(shape, requires_grad=True)
            out = star_offsets(ltrb)
            self.assertEqual(out.shape, (shape[0], 18, shape[2], shape[3]))
            out.sum().backward()
            self.assertEqual(ltrb.grad.shape, ltrb.shape)
        base = (random_ltrb(2, 5, 6) * 2).round().div(2).float()
        for ltrb in (base.to(memory_format=torch.channels_last), base.transpose(2, 3), base[:, :, ::2]):
            with self.subTest(stride=ltrb.stride()):
                out = star_offsets(ltrb)
                self.assertTrue(out.is_contiguous())
                torch.testing.assert_close(out, offsets_from_points(ltrb), rtol=0, atol=0)

    def test_bad_input(self):
        cases = [
            (torch.zeros(1, 3, 2, 2), "4 channels"),
            (torch.zeros(1, 5, 2, 2), "got 5 channels"),
            (torch.zeros(4, 2, 2), r"\(N, 4, H, W\).*3-D"),
            (torch.zeros(1, 1, 4, 2, 2), "5-D"),
            (torch.zeros(1, 4, 2, 2, dtype=torch.int64), "floating-point"),
        ]
        for x, pattern in cases:
            with self.subTest(shape=tuple(x.shape), dtype=x.dtype):
                with self.assertRaisesRegex(RuntimeError, "star_offsets.*" + pattern):
                    star_offsets(x)

    def test_torch_compile_fullgraph(self):
        fn = torch.compile(lambda t: star_offsets(t) * 2, fullgraph=True, backend="eager")
        ltrb = (random_ltrb(2, 3, 4) * 2).round().div(2).float()
        torch.testing.assert_close(fn(ltrb), offsets_from_points(ltrb) * 2, rtol=0, atol=0)


@unittest.skipIf(not torch.cuda.is_available(), "CUDA is not available")
class StarOffsetsCUDATest(unittest.TestCase):
    def test_cuda(self):
        ltrb = random_ltrb(3, 17, 9, device="cuda").requires_grad_()
        out = star_offsets(ltrb)
        self.assertTrue(out.is_cuda)
        torch.testing.assert_close(out, offsets_from_points(ltrb))
        small = random_ltrb(2, 3, 4, device="cuda").requires_grad_()
        self.assertTrue(torch.autograd.gradcheck(star_offsets, (small,)))


if __name__ == "__main__":
    unittest.main()
