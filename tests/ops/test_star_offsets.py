"""Tests of vfnet.ops.star_offsets (kernels in vfnet._C: CPU always, CUDA when available)."""
import unittest

import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

from vfnet.ops import HAS_C_EXTENSION, star_offsets, star_offsets_reference


def random_ltrb(n, h, w, dtype=torch.float64, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 4, h, w, generator=g, dtype=torch.float64) * 3).to(dtype).to(device)


def star_points(ltrb):
    """(N, 9, H, W) rows and columns of the 9 star points, tap k = 3 * i + j."""
    n, _, h, w = ltrb.shape
    y = torch.arange(h, dtype=ltrb.dtype).view(1, h, 1).expand(n, h, w)
    x = torch.arange(w, dtype=ltrb.dtype).view(1, 1, w).expand(n, h, w)
    l, t, r, b = ltrb.unbind(1)
    rows = (y - t, y, y + b)
    cols = (x - l, x, x + r)
    ys = torch.stack([rows[i] for i in range(3) for j in range(3)], dim=1)
    xs = torch.stack([cols[j] for i in range(3) for j in range(3)], dim=1)
    return ys, xs


class StarOffsetsTest(unittest.TestCase):
    def test_extension_is_built(self):
        # `make install` builds vfnet._C; the pure-PyTorch fallback only covers a missing build.
        self.assertTrue(HAS_C_EXTENSION, "vfnet._C is not built: run `make install`")

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
        for fn in (star_offsets, star_offsets_reference):
            out = fn(ltrb)
            self.assertEqual(out.shape, (1, 18, 1, 1))
            torch.testing.assert_close(out, expected, rtol=0, atol=0)

    def test_matches_reference(self):
        for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            with self.subTest(dtype=dtype):
                ltrb = random_ltrb(3, 7, 5, dtype=dtype)
                out = star_offsets(ltrb)
                self.assertEqual(out.dtype, dtype)
                self.assertEqual(out.shape, (3, 18, 7, 5))
                self.assertTrue(out.is_contiguous())
                torch.testing.assert_close(out, star_offsets_reference(ltrb), rtol=0, atol=0)

    def test_offsets_point_at_star_points(self):
        ltrb = random_ltrb(2, 4, 6)
        off = star_offsets(ltrb)
        ys, xs = star_points(ltrb)
        n, _, h, w = ltrb.shape
        y = torch.arange(h, dtype=ltrb.dtype).view(1, 1, h, 1)
        x = torch.arange(w, dtype=ltrb.dtype).view(1, 1, 1, w)
        i = torch.arange(3, dtype=ltrb.dtype).repeat_interleave(3).view(1, 9, 1, 1)
        j = torch.arange(3, dtype=ltrb.dtype).repeat(3).view(1, 9, 1, 1)
        torch.testing.assert_close(y + i - 1 + off[:, 0::2], ys)
        torch.testing.assert_close(x + j - 1 + off[:, 1::2], xs)

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

    def test_gradcheck(self):
        ltrb = random_ltrb(2, 3, 4).requires_grad_()
        self.assertTrue(torch.autograd.gradcheck(star_offsets, (ltrb,)))
        self.assertTrue(torch.autograd.gradgradcheck(star_offsets, (ltrb,)))
        # Non-contiguous input, as in detectron2's test_roi_align_rotated.
        ltrb_t = random_ltrb(2, 4, 3).transpose(2, 3).requires_grad_()
        self.assertFalse(ltrb_t.is_contiguous())
        self.assertTrue(torch.autograd.gradcheck(star_offsets, (ltrb_t,)))

    def test_grad_matches_reference(self):
        ltrb = random_ltrb(2, 3, 5).requires_grad_()
        g = torch.randn(2, 18, 3, 5, dtype=torch.float64)
        (grad,) = torch.autograd.grad(star_offsets(ltrb), ltrb, g)
        (grad_ref,) = torch.autograd.grad(star_offsets_reference(ltrb), ltrb, g)
        torch.testing.assert_close(grad, grad_ref)

    @unittest.skipUnless(HAS_C_EXTENSION, "vfnet._C is not built")
    def test_opcheck(self):
        for requires_grad in (False, True):
            ltrb = random_ltrb(2, 3, 4, dtype=torch.float32).requires_grad_(requires_grad)
            torch.library.opcheck(torch.ops.vfnet.star_offsets.default, (ltrb,))
            grad = torch.randn(2, 18, 3, 4).requires_grad_(requires_grad)
            torch.library.opcheck(torch.ops.vfnet.star_offsets_backward.default, (grad,))

    def test_batch_zero_and_empty(self):
        for shape in ((0, 4, 5, 6), (2, 4, 0, 3)):
            ltrb = torch.zeros(shape, requires_grad=True)
            out = star_offsets(ltrb)
            self.assertEqual(out.shape, (shape[0], 18, shape[2], shape[3]))
            out.sum().backward()
            self.assertEqual(ltrb.grad.shape, ltrb.shape)

    def test_non_contiguous(self):
        base = random_ltrb(2, 5, 6, dtype=torch.float32)
        for ltrb in (
            base.permute(0, 3, 1, 2).permute(0, 2, 3, 1),  # same values, channels-last strides
            base.to(memory_format=torch.channels_last),
            base.transpose(2, 3),
            random_ltrb(2, 8, 6, dtype=torch.float32)[:, :, ::2],
        ):
            with self.subTest(stride=ltrb.stride()):
                torch.testing.assert_close(
                    star_offsets(ltrb), star_offsets_reference(ltrb.contiguous()), rtol=0, atol=0
                )

    def test_bad_input(self):
        cases = [
            (torch.zeros(1, 3, 2, 2), "4 channels"),
            (torch.zeros(1, 5, 2, 2), "got 5 channels"),
            (torch.zeros(4, 2, 2), r"\(N, 4, H, W\).*3-D"),
            (torch.zeros(1, 1, 4, 2, 2), "5-D"),
            (torch.zeros(1, 4, 2, 2, dtype=torch.int64), "floating-point"),
        ]
        for fn in (star_offsets, star_offsets_reference):
            for x, pattern in cases:
                with self.subTest(fn=fn.__name__, shape=tuple(x.shape), dtype=x.dtype):
                    with self.assertRaisesRegex(RuntimeError, "star_offsets.*" + pattern):
                        fn(x)

    @unittest.skipUnless(HAS_C_EXTENSION, "vfnet._C is not built")
    def test_backward_op_bad_input(self):
        with self.assertRaisesRegex(RuntimeError, "star_offsets_backward.*18 channels"):
            torch.ops.vfnet.star_offsets_backward(torch.zeros(1, 4, 2, 2))

    def test_torch_compile_fullgraph(self):
        # The fake kernel lets torch.compile trace through the op without a graph break.
        fn = torch.compile(lambda t: star_offsets(t) * 2, fullgraph=True, backend="eager")
        ltrb = random_ltrb(2, 3, 4, dtype=torch.float32)
        torch.testing.assert_close(fn(ltrb), star_offsets_reference(ltrb) * 2)


@unittest.skipIf(not torch.cuda.is_available(), "CUDA is not available")
class StarOffsetsCUDATest(unittest.TestCase):
    def test_cuda_has_kernels(self):
        self.assertTrue(
            torch._C._dispatch_has_kernel_for_dispatch_key("vfnet::star_offsets", "CUDA"),
            "vfnet._C was built without CUDA kernels",
        )

    def test_cuda_matches_cpu(self):
        for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            with self.subTest(dtype=dtype):
                ltrb = random_ltrb(3, 17, 9, dtype=dtype)
                out = star_offsets(ltrb.cuda())
                self.assertTrue(out.is_cuda)
                torch.testing.assert_close(out.cpu(), star_offsets(ltrb), rtol=0, atol=0)

    def test_cuda_backward_matches_cpu(self):
        ltrb = random_ltrb(2, 5, 7)
        g = torch.randn(2, 18, 5, 7, dtype=torch.float64)
        grads = []
        for device in ("cpu", "cuda"):
            x = ltrb.to(device).requires_grad_()
            (gx,) = torch.autograd.grad(star_offsets(x), x, g.to(device))
            grads.append(gx.cpu())
        torch.testing.assert_close(grads[1], grads[0])

    def test_cuda_gradcheck_and_opcheck(self):
        ltrb = random_ltrb(2, 3, 4, device="cuda").requires_grad_()
        self.assertTrue(torch.autograd.gradcheck(star_offsets, (ltrb,)))
        torch.library.opcheck(torch.ops.vfnet.star_offsets.default, (ltrb,))
        grad = torch.randn(2, 18, 3, 4, device="cuda", requires_grad=True)
        torch.library.opcheck(torch.ops.vfnet.star_offsets_backward.default, (grad,))

    def test_cuda_batch_zero_and_non_contiguous(self):
        self.assertEqual(star_offsets(torch.zeros(0, 4, 3, 3, device="cuda")).shape, (0, 18, 3, 3))
        ltrb = random_ltrb(2, 6, 5, device="cuda").transpose(2, 3)
        torch.testing.assert_close(
            star_offsets(ltrb), star_offsets_reference(ltrb.contiguous()), rtol=0, atol=0
        )


if __name__ == "__main__":
    unittest.main()
