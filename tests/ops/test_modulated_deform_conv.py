"""Tests of vfnet.ops.modulated_deform_conv (DCNv2; kernels in vfnet._C: CPU always, CUDA when
available) and of the fused path of vfnet.layers.ModulatedDeformConv2d.

The reference is torchvision's deform_conv2d with the same offsets and mask
(vfnet.ops.modulated_deform_conv_reference); on the CPU in float32 with one thread (the setting of
the MMDetection parity check) the fused op must reproduce it bit for bit.
"""
import unittest

import torch
from torch import nn

from vfnet.layers import ModulatedDeformConv2d
from vfnet.ops import HAS_C_EXTENSION, modulated_deform_conv, modulated_deform_conv_reference
# num_threads(1) in the float64 tests: MKL's float64 GEMMs of small shapes can take milliseconds each
# with two threads on a busy machine.
from vfnet_test_utils import ExactFloat32ConvsMixin, SampledImagePathMixin, num_threads

CUDA = torch.cuda.is_available() and HAS_C_EXTENSION
needs_ext = unittest.skipUnless(HAS_C_EXTENSION, "vfnet._C is not built")
needs_cuda = unittest.skipUnless(CUDA, "needs a GPU and vfnet._C built with CUDA")


def out_size(size, stride, padding, dilation):
    return (size + 2 * padding - 2 * dilation - 1) // stride + 1


def make_inputs(
    n, c, o, h, w, stride=1, padding=1, dilation=1, groups=1, dtype=torch.float32, seed=0, reach=1.0,
    bias=True, device="cpu",
):
    """Features; offsets up to `reach` x the map's size (many samples fall outside the map), a
    third of them whole numbers (samples on the grid, on the border, exactly at -1); a mask in
    (-0.5, 1.5); weight (o, c / groups, 3, 3) and bias."""
    g = torch.Generator().manual_seed(seed)
    ho, wo = out_size(h, stride, padding, dilation), out_size(w, stride, padding, dilation)
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    offset = (torch.rand(n, 18, ho, wo, generator=g, dtype=torch.float64) * 2 - 1) * reach * max(h, w)
    if offset.numel():
        offset[:, :, ::3] = offset[:, :, ::3].round()
        offset.view(-1)[::7] = 0.0
    mask = torch.rand(n, 9, ho, wo, generator=g, dtype=torch.float64) * 2 - 0.5
    weight = torch.randn(o, c // groups, 3, 3, generator=g, dtype=torch.float64) / (3 * (c // groups) ** 0.5)
    b = torch.randn(o, generator=g, dtype=torch.float64) if bias else None
    cast = lambda t: None if t is None else t.to(dtype=dtype, device=device)  # noqa: E731
    return cast(x), cast(offset), cast(mask), cast(weight), cast(b)


# (N, C, O, H, W, stride, padding, dilation, groups): a realistic map, stride 2 on odd sizes,
# ResNeXt groups (32 of one input channel, 64 of two), H or W of 1, a 1x1 map, maps of a few
# positions per image (one GEMM per group of images, as torchvision), padding 0 with dilation 2,
# stride 3 with padding 2 (depthwise), and a map cut into several chunks of positions.
SHAPES = [
    (2, 64, 64, 20, 26, 1, 1, 1, 1),
    (1, 64, 32, 33, 17, 2, 1, 1, 1),
    (2, 32, 64, 15, 20, 1, 1, 1, 32),
    (1, 128, 128, 9, 11, 2, 1, 1, 64),
    (3, 16, 8, 7, 1, 1, 1, 1, 1),
    (2, 8, 4, 1, 1, 1, 1, 1, 1),
    (4, 3, 6, 2, 2, 1, 1, 1, 3),
    (2, 8, 6, 10, 12, 1, 0, 2, 2),
    (1, 4, 4, 12, 9, 3, 2, 1, 4),
    (1, 128, 32, 60, 64, 1, 1, 1, 1),
]


def geometry(shape):
    return dict(zip(("stride", "padding", "dilation", "groups"), shape[5:]))


def call(fn, shape, x, offset, mask, weight, bias):
    stride, padding, dilation, _ = shape[5:]
    return fn(x, offset, mask, weight, bias, stride=stride, padding=padding, dilation=dilation)


def count_gemms(fn, *args, **kwargs):
    """Number of GEMMs (aten::mm) that fn runs: the forward runs one per chunk and weight group."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn(*args, **kwargs)
    return sum(1 for e in prof.events() if e.name == "aten::mm")


@needs_ext
class ModulatedDeformConvCPUTest(unittest.TestCase):
    def test_bitwise_equal_to_torchvision_float32_one_thread(self):
        with num_threads(1):
            for i, shape in enumerate(SHAPES):
                for with_bias in (False, True):
                    with self.subTest(shape=shape, bias=with_bias):
                        inputs = make_inputs(*shape[:5], **geometry(shape), seed=i, bias=with_bias)
                        out = call(modulated_deform_conv, shape, *inputs)
                        ref = call(modulated_deform_conv_reference, shape, *inputs)
                        self.assertEqual(out.shape, ref.shape)
                        self.assertEqual(out.dtype, torch.float32)
                        self.assertTrue(out.is_contiguous())
                        self.assertTrue(torch.equal(out, ref), f"max diff {(out - ref).abs().max()}")

    def test_matches_torchvision_default_threads(self):
        for i, shape in enumerate([SHAPES[0], SHAPES[2], SHAPES[-1]]):
            with self.subTest(shape=shape):
                inputs = make_inputs(*shape[:5], **geometry(shape), seed=10 + i)
                torch.testing.assert_close(
                    call(modulated_deform_conv, shape, *inputs),
                    call(modulated_deform_conv_reference, shape, *inputs),
                    rtol=1e-6,
                    atol=1e-6,
                )

    def test_several_chunks_and_grouped_images(self):
        # The column matrix of a chunk holds one weight group's rows, at most 8 MiB of them:
        # (1, 128, 32, 60, 64) with one group has 128 * 9 * 3840 * 4 bytes = 17 MiB of columns
        # (3 chunks), with 2 groups 8.4 MiB per group (2 chunks, a GEMM per chunk and group), with
        # 32 groups 0.5 MiB (one chunk). 34 images of 3 x 4 positions: two segments of 17 images
        # (torchvision's), one GEMM each.
        cases = [
            ((1, 128, 32, 60, 64, 1, 1, 1, 1), 3),
            ((1, 128, 32, 60, 64, 1, 1, 1, 2), 2 * 2),
            ((1, 128, 32, 60, 64, 1, 1, 1, 32), 32),
            ((34, 8, 4, 3, 4, 1, 1, 1, 1), 2),
        ]
        for shape, gemms in cases:
            with self.subTest(shape=shape):
                inputs = make_inputs(*shape[:5], **geometry(shape), seed=5)
                self.assertEqual(count_gemms(call, modulated_deform_conv, shape, *inputs), gemms)
                with num_threads(1):
                    out = call(modulated_deform_conv, shape, *inputs)
                    ref = call(modulated_deform_conv_reference, shape, *inputs)
                self.assertTrue(torch.equal(out, ref), f"max diff {(out - ref).abs().max()}")

    @num_threads(1)
    def test_float64_forward_and_gradients_match_torchvision(self):
        for i, shape in enumerate(SHAPES[1:9]):
            with self.subTest(shape=shape):
                inputs = make_inputs(*shape[:5], **geometry(shape), dtype=torch.float64, seed=20 + i)
                inputs = [t.requires_grad_() for t in inputs]
                out = call(modulated_deform_conv, shape, *inputs)
                ref = call(modulated_deform_conv_reference, shape, *inputs)
                torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
                grad_out = torch.randn_like(out)
                grads = torch.autograd.grad(out, inputs, grad_out)
                grads_ref = torch.autograd.grad(ref, inputs, grad_out)
                for name, a, b in zip("x offset mask weight bias".split(), grads, grads_ref):
                    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)

    def test_float32_gradients_match_torchvision(self):
        shape = (2, 64, 32, 13, 17, 2, 1, 1, 2)
        inputs = [t.requires_grad_() for t in make_inputs(*shape[:5], **geometry(shape), seed=3)]
        out = call(modulated_deform_conv, shape, *inputs)
        ref = call(modulated_deform_conv_reference, shape, *inputs)
        grad_out = torch.randn_like(out)
        grads = torch.autograd.grad(out, inputs, grad_out)
        grads_ref = torch.autograd.grad(ref, inputs, grad_out)
        for name, a, b in zip("x offset mask weight bias".split(), grads, grads_ref):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=name)

    @num_threads(1)
    def test_gradcheck(self):
        # Fractional offsets (bilinear interpolation is not differentiable on the grid), reaching
        # past the border.
        cases = [
            (1, 2, 2, 3, 4, 1, 1, 1, 1),
            (2, 4, 2, 5, 4, 2, 1, 1, 2),
            (1, 2, 4, 6, 7, 1, 0, 2, 2),
        ]
        for i, shape in enumerate(cases):
            with self.subTest(shape=shape):
                x, offset, mask, weight, bias = make_inputs(*shape[:5], **geometry(shape), dtype=torch.float64, seed=i)
                offset = offset.floor() + 0.1 + 0.8 * torch.rand_like(offset)
                inputs = [t.requires_grad_() for t in (x, offset, mask, weight, bias)]
                stride, padding, dilation, _ = shape[5:]

                def f(*args):
                    return modulated_deform_conv(*args, stride=stride, padding=padding, dilation=dilation)

                # Full Jacobians on the first shape, torchvision's fast mode on the others.
                self.assertTrue(torch.autograd.gradcheck(f, tuple(inputs), fast_mode=i > 0))
                self.assertTrue(torch.autograd.gradcheck(f, tuple(inputs[:4]) + (None,), fast_mode=True))

    @num_threads(1)
    def test_non_contiguous_inputs(self):
        shape = (2, 16, 8, 9, 11, 2, 1, 1, 2)
        x, offset, mask, weight, bias = make_inputs(*shape[:5], **geometry(shape), seed=4)
        ref = call(modulated_deform_conv, shape, x, offset, mask, weight, bias)
        # Offset and mask as the layer passes them: slices of one (N, 27, Ho, Wo) tensor.
        packed = torch.cat([offset, mask], dim=1)
        variants = {
            "channels_last": (
                x.to(memory_format=torch.channels_last),
                offset.to(memory_format=torch.channels_last),
                mask.to(memory_format=torch.channels_last),
                weight.to(memory_format=torch.channels_last),
                bias,
            ),
            "slices": (x, packed[:, :18], packed[:, 18:], weight, bias),
            "strided": (
                torch.stack([x, torch.zeros_like(x)], dim=2).flatten(1, 2)[:, ::2],
                offset.transpose(2, 3).contiguous().transpose(2, 3),
                mask[:, :, :, :],
                weight.transpose(2, 3).contiguous().transpose(2, 3),
                torch.stack([bias, bias], 1)[:, 0],
            ),
        }
        for name, args in variants.items():
            with self.subTest(name):
                self.assertTrue(torch.equal(call(modulated_deform_conv, shape, *args), ref))
        # And a gradient check through non-contiguous float64 inputs.
        g = torch.Generator().manual_seed(1)
        x = torch.randn(1, 2, 5, 4, dtype=torch.float64, generator=g).transpose(2, 3).requires_grad_()
        om = (torch.rand(1, 27, 4, 5, dtype=torch.float64, generator=g) * 3 + 0.05).requires_grad_()
        weight = torch.randn(2, 2, 3, 3, dtype=torch.float64, generator=g).transpose(2, 3).requires_grad_()
        self.assertTrue(
            torch.autograd.gradcheck(
                lambda x, om, w: modulated_deform_conv(x, om[:, :18], om[:, 18:], w), (x, om, weight), fast_mode=True
            )
        )

    def test_empty_batch(self):
        shape = (0, 4, 6, 5, 6, 2, 1, 1, 2)
        inputs = [t.requires_grad_() for t in make_inputs(*shape[:5], **geometry(shape))]
        out = call(modulated_deform_conv, shape, *inputs)
        self.assertEqual(out.shape, (0, 6, 3, 3))
        out.sum().backward()
        for t in inputs:
            self.assertEqual(t.grad.shape, t.shape)
            self.assertEqual(float(t.grad.abs().sum()), 0.0)

    def test_all_samples_outside_the_map(self):
        # Offsets far beyond the map: every sample reads zeros, only the bias remains; the
        # gradients of x, offset and mask are zero, that of the weight too.
        x, offset, mask, weight, bias = [t.requires_grad_() for t in make_inputs(1, 4, 3, 5, 6, seed=5)]
        far = torch.full_like(offset, 1e4).requires_grad_()
        out = modulated_deform_conv(x, far, mask, weight, bias)
        self.assertTrue(torch.equal(out, bias.detach().view(1, 3, 1, 1).expand(1, 3, 5, 6)))
        grads = torch.autograd.grad(out.sum(), (x, far, mask, weight))
        for t in grads:
            self.assertEqual(float(t.abs().sum()), 0.0)

    @num_threads(1)
    def test_zero_offsets_and_unit_mask_is_a_conv(self):
        # An independent check of the geometry: with no offsets and mask 1 it is conv2d.
        for stride, padding, dilation, groups in ((1, 1, 1, 1), (2, 1, 1, 4), (1, 2, 2, 2), (3, 0, 1, 1)):
            with self.subTest(stride=stride, padding=padding, dilation=dilation, groups=groups):
                x, offset, mask, weight, bias = make_inputs(
                    2, 8, 4, 11, 10, stride, padding, dilation, groups, dtype=torch.float64, seed=6
                )
                out = modulated_deform_conv(
                    x, torch.zeros_like(offset), torch.ones_like(mask), weight, bias, stride, padding, dilation
                )
                expected = nn.functional.conv2d(x, weight, bias, stride, padding, dilation, groups)
                torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)

    def test_offset_and_mask_of_another_dtype(self):
        x, offset, mask, weight, _ = make_inputs(2, 8, 4, 6, 7, seed=7)
        offset64, mask64 = offset.double().requires_grad_(), mask.double().requires_grad_()
        out = modulated_deform_conv(x, offset64, mask64, weight)
        self.assertTrue(torch.equal(out, modulated_deform_conv(x, offset, mask, weight)))
        out.sum().backward()
        self.assertEqual(offset64.grad.dtype, torch.float64)
        self.assertEqual(mask64.grad.dtype, torch.float64)

    def test_low_precision_cpu(self):
        shape = (2, 64, 32, 10, 13, 2, 1, 1, 2)
        x, offset, mask, weight, bias = make_inputs(*shape[:5], **geometry(shape), seed=6)
        ref = call(modulated_deform_conv_reference, shape, x, offset, mask, weight, bias)
        for dtype, tol in ((torch.bfloat16, 5e-2), (torch.float16, 5e-3)):
            with self.subTest(dtype=dtype):
                args = [t.to(dtype).requires_grad_() for t in (x, weight, bias)]
                # Offset and mask stay float32 (positions in float32).
                om = [t.clone().requires_grad_() for t in (offset, mask)]
                out = call(modulated_deform_conv, shape, args[0], om[0], om[1], args[1], args[2])
                self.assertEqual(out.dtype, dtype)
                torch.testing.assert_close(out.float(), ref, rtol=tol, atol=tol * ref.abs().max().item())
                out.float().sum().backward()
                self.assertEqual(args[0].grad.dtype, dtype)
                self.assertEqual(om[0].grad.dtype, torch.float32)
                self.assertTrue(all(torch.isfinite(t.grad.float()).all() for t in args + om))

    def test_grad_weight_summed_in_float32(self):
        # One channel of ones, no padding, zero offsets, mask 1: every column is 1, so
        # grad_weight[0, 0, i, j] = sum(grad_out) = 1, from +1 on the first half of the rows (the
        # first chunk: chunks have at most 16384 positions), -1 on the second, and one 0. Each
        # chunk's product (+-h * w / 2) is beyond bfloat16 resolution: rounded per chunk it would
        # not sum to 1.
        h, w = 130, 130
        grad_out = torch.ones(1, 1, h, w)
        grad_out[:, :, h // 2 :] = -1
        grad_out[0, 0, -1, -1] = 0
        x = torch.ones(1, 1, h + 2, w + 2, dtype=torch.bfloat16, requires_grad=True)
        weight = torch.ones(1, 1, 3, 3, dtype=torch.bfloat16, requires_grad=True)
        offset, mask = torch.zeros(1, 18, h, w), torch.ones(1, 9, h, w)
        self.assertGreaterEqual(count_gemms(modulated_deform_conv, x, offset, mask, weight, padding=0), 2)
        out = modulated_deform_conv(x, offset, mask, weight, padding=0)
        (grad_weight,) = torch.autograd.grad(out, weight, grad_out.to(torch.bfloat16))
        self.assertEqual(grad_weight.dtype, torch.bfloat16)
        self.assertEqual(grad_weight.float().flatten().tolist(), [1.0] * 9)

    def test_deterministic(self):
        shape = (2, 32, 16, 20, 30, 1, 1, 1, 1)
        inputs = [t.requires_grad_() for t in make_inputs(*shape[:5], seed=8)]
        grad_out = torch.randn(2, 16, 20, 30)
        runs = []
        previous = torch.are_deterministic_algorithms_enabled()
        try:
            for deterministic in (False, True):
                torch.use_deterministic_algorithms(deterministic)
                out = modulated_deform_conv(*inputs)
                runs.append([out] + list(torch.autograd.grad(out, inputs, grad_out)))
        finally:
            torch.use_deterministic_algorithms(previous)
        for a, b in zip(*runs):
            self.assertTrue(torch.equal(a, b))

    @num_threads(1)
    def test_opcheck(self):
        x, offset, mask, weight, bias = make_inputs(2, 4, 6, 5, 6, 2, 1, 1, 2, seed=9)
        geometry_args = ([2, 2], [1, 1], [1, 1])
        for requires_grad, b in ((False, None), (True, bias)):
            args = [t if t is None else t.clone().requires_grad_(requires_grad) for t in (x, offset, mask, weight, b)]
            torch.library.opcheck(torch.ops.vfnet.modulated_deform_conv.default, tuple(args) + geometry_args)
        grad_out = torch.randn(2, 6, 3, 3)
        torch.library.opcheck(
            torch.ops.vfnet.modulated_deform_conv_backward.default,
            (grad_out, x, offset, mask, weight) + geometry_args,
        )

    def test_torch_compile(self):
        torch._dynamo.reset()
        shape = (1, 4, 6, 7, 8, 2, 1, 1, 2)
        inputs = make_inputs(*shape[:5], **geometry(shape), seed=11)

        def f(x, offset, mask, weight, bias):
            out = torch.ops.vfnet.modulated_deform_conv(x, offset, mask, weight, bias, [2, 2], [1, 1], [1, 1])
            return out.relu().sum()

        compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
        leaves = [t.clone().requires_grad_() for t in inputs]
        leaves_ref = [t.clone().requires_grad_() for t in inputs]
        out = compiled(*leaves)
        expected = f(*leaves_ref)
        self.assertTrue(torch.equal(out, expected))
        out.backward()
        expected.backward()
        for a, b in zip(leaves, leaves_ref):
            self.assertTrue(torch.equal(a.grad, b.grad))

        # The layer, forward and backward.
        torch.manual_seed(0)
        layer = ModulatedDeformConv2d(4, 6, stride=2, groups=2, bias=True)
        nn.init.normal_(layer.conv_offset.weight, std=0.3)
        x = torch.randn(2, 4, 9, 8)
        compiled_layer = torch.compile(layer, backend="aot_eager")
        torch.testing.assert_close(compiled_layer(x), layer(x), rtol=0, atol=0)
        compiled_layer(x).sum().backward()
        self.assertIsNotNone(layer.conv_offset.weight.grad)

    def test_bad_inputs(self):
        x, offset, mask, weight, bias = make_inputs(2, 4, 6, 5, 6, groups=2)
        op = torch.ops.vfnet.modulated_deform_conv
        ones = ([1, 1], [1, 1], [1, 1])
        cases = [
            ((x[0], offset, mask, weight, bias) + ones, "expected x of shape \\(N, C, H, W\\)"),
            ((x.long(), offset, mask, weight.long(), None) + ones, "floating-point x"),
            ((x, offset, mask, weight[0], bias) + ones, "expected weight of shape \\(O, C / groups, 3, 3\\)"),
            ((x, offset, mask, torch.zeros(6, 2, 5, 5), bias) + ones, "only 3x3 kernels are supported"),
            ((x, offset, mask, torch.zeros(6, 3, 3, 3), bias) + ones, "groups dividing both C = 4 and O"),
            ((x, offset, mask, torch.zeros(5, 2, 3, 3), None) + ones, "groups dividing both"),
            ((x, offset, mask, weight.double(), bias) + ones, "weight of the same dtype as x"),
            ((x, offset.repeat(1, 2, 1, 1), mask, weight, bias) + ones, "only one offset group is supported"),
            ((x, offset[:, :17], mask, weight, bias) + ones, "expected offset of shape \\(N, 18, Ho, Wo\\)"),
            ((x, offset[:, :, :4], mask, weight, bias) + ones, "expected offset of shape \\(2, 18, 5, 6\\)"),
            ((x, offset.long(), mask, weight, bias) + ones, "floating-point offset"),
            ((x, offset, mask[:, :8], weight, bias) + ones, "expected mask of shape \\(2, 9, 5, 6\\)"),
            ((x, offset, mask.long(), weight, bias) + ones, "floating-point mask"),
            ((x, offset, mask, weight, bias[:2]) + ones, "bias of shape \\(6,\\)"),
            ((x, offset, mask, weight, bias.double()) + ones, "bias of the same dtype as x"),
            ((x, offset, mask, weight, bias, [0, 1], [1, 1], [1, 1]), "stride values >= 1"),
            ((x, offset, mask, weight, bias, [1, 1], [-1, 1], [1, 1]), "padding values >= 0"),
            ((x, offset, mask, weight, bias, [1, 1], [1, 1], [1, 0]), "dilation values >= 1"),
            ((x[:, :, :1], offset, mask, weight, bias, [1, 1], [0, 0], [1, 1]), "the output would be empty"),
        ]
        for args, message in cases:
            with self.subTest(message):
                with self.assertRaisesRegex(RuntimeError, message):
                    op(*args)
                # The fake kernel and the reference path check the same things with the same words.
                with self.assertRaisesRegex(RuntimeError, message):
                    modulated_deform_conv_reference(*args)
                with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
                    fake = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
                    with self.assertRaisesRegex(RuntimeError, message):
                        op(*fake)
        with self.assertRaisesRegex(RuntimeError, "expected stride as an int or two values"):
            modulated_deform_conv(x, offset, mask, weight, stride=(1, 1, 1))
        with self.assertRaisesRegex(RuntimeError, "grad_out of shape \\(2, 6, 5, 6\\)"):
            torch.ops.vfnet.modulated_deform_conv_backward(torch.zeros(2, 6, 5, 5), x, offset, mask, weight, *ones)


def randomized_layer(*args, seed=0, **kwargs):
    """A ModulatedDeformConv2d whose offset conv is not zero (offsets of a few pixels) and whose
    bias, if any, is random."""
    torch.manual_seed(seed)
    layer = ModulatedDeformConv2d(*args, **kwargs)
    nn.init.normal_(layer.conv_offset.weight, std=0.3)
    nn.init.normal_(layer.conv_offset.bias, std=1.0)
    if layer.bias is not None:
        nn.init.normal_(layer.bias)
    return layer


@needs_ext
class ModulatedDeformConv2dFusedTest(unittest.TestCase):
    def test_fused_and_reference_paths_agree(self):
        for kwargs in (dict(), dict(stride=2, groups=4, bias=True), dict(dilation=2, norm=nn.GroupNorm(2, 8))):
            with self.subTest(**{k: v for k, v in kwargs.items() if k != "norm"}):
                fused = randomized_layer(8, 8, **kwargs)
                kwargs = dict(kwargs, norm=nn.GroupNorm(2, 8)) if "norm" in kwargs else kwargs
                reference = ModulatedDeformConv2d(8, 8, use_fused_op=False, **kwargs)
                self.assertEqual(list(fused.state_dict()), list(reference.state_dict()))
                reference.load_state_dict(fused.state_dict())
                self.assertTrue(fused.use_fused_op)
                self.assertIn("use_fused_op=True", repr(fused))
                self.assertIn("use_fused_op=False", repr(reference))
                x = torch.randn(2, 8, 15, 14)
                x_ref = x.clone().requires_grad_()
                x.requires_grad_()
                with num_threads(1):
                    out, out_ref = fused(x), reference(x_ref)
                self.assertTrue(torch.equal(out, out_ref), f"max diff {(out - out_ref).abs().max()}")
                grad_out = torch.randn_like(out)
                out.backward(grad_out)
                out_ref.backward(grad_out)
                torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-5)
                for (name, p), p_ref in zip(fused.named_parameters(), reference.parameters()):
                    torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-4, atol=1e-4, msg=name)

    def test_fused_op_is_used(self):
        layer = randomized_layer(4, 4, stride=2)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            layer(torch.randn(1, 4, 8, 8)).sum().backward()
        names = {e.name for e in prof.events()}
        self.assertIn("vfnet::modulated_deform_conv", names)
        self.assertIn("vfnet::modulated_deform_conv_backward", names)
        self.assertNotIn("torchvision::deform_conv2d", names)

    def test_other_kernel_sizes_take_the_reference_path(self):
        fused = randomized_layer(4, 4, kernel_size=5)
        reference = ModulatedDeformConv2d(4, 4, kernel_size=5, use_fused_op=False)
        reference.load_state_dict(fused.state_dict())
        x = torch.randn(1, 4, 9, 9)
        self.assertTrue(torch.equal(fused(x), reference(x)))

    def test_cpu_autocast_bfloat16(self):
        # Under CPU autocast the fused layer computes in bfloat16 like a conv; the output is close
        # to the float32 one and every parameter gets a float32 gradient.
        layer = randomized_layer(32, 32, stride=2, bias=True, activation=torch.relu)
        x = torch.randn(2, 32, 16, 20)
        expected = layer(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(x)
        self.assertEqual(out.dtype, torch.bfloat16)
        torch.testing.assert_close(out.float(), expected, rtol=0.05, atol=0.05 * expected.abs().max().item())
        out.float().sum().backward()
        for name, p in layer.named_parameters():
            self.assertIsNotNone(p.grad, name)
            self.assertEqual(p.grad.dtype, torch.float32, name)
            self.assertTrue(torch.isfinite(p.grad).all(), name)


@needs_cuda
class ModulatedDeformConvCUDATest(ExactFloat32ConvsMixin, unittest.TestCase):
    # Whether TF32 must change the float32 results: the column path's 1x1 convs of the column
    # matrices took TF32 kernels on an H100; cuDNN may choose kernels without TF32 (allow_tf32
    # allows, it does not force), as it did there for the sampled path's stride-3 convs.
    TF32_SEEN_IN_RESULTS = True

    def test_matches_cpu(self):
        for i, shape in enumerate(SHAPES):
            with self.subTest(shape=shape):
                inputs = make_inputs(*shape[:5], **geometry(shape), dtype=torch.float64, seed=30 + i)
                inputs = [t.requires_grad_() for t in inputs]
                cuda_inputs = [t.detach().cuda().requires_grad_() for t in inputs]
                out = call(modulated_deform_conv, shape, *inputs)
                out_cuda = call(modulated_deform_conv, shape, *cuda_inputs)
                torch.testing.assert_close(out_cuda.cpu(), out, rtol=1e-10, atol=1e-10)
                grad_out = torch.randn_like(out)
                grads = torch.autograd.grad(out, inputs, grad_out)
                grads_cuda = torch.autograd.grad(out_cuda, cuda_inputs, grad_out.cuda())
                for name, a, b in zip("x offset mask weight bias".split(), grads_cuda, grads):
                    torch.testing.assert_close(a.cpu(), b, rtol=1e-8, atol=1e-8, msg=name)

    def test_matches_torchvision_cuda_float32(self):
        shape = (2, 64, 32, 30, 41, 2, 1, 1, 2)
        inputs = make_inputs(*shape[:5], **geometry(shape), seed=40, device="cuda")
        torch.testing.assert_close(
            call(modulated_deform_conv, shape, *inputs),
            call(modulated_deform_conv_reference, shape, *inputs),
            rtol=1e-4,
            atol=1e-4,
        )

    def test_follows_cudnn_tf32_setting(self):
        # float32 products as cuDNN convolutions on both paths: TF32 where
        # torch.backends.cudnn.allow_tf32 (torch's default), exact where not.
        shape = (2, 64, 32, 30, 41, 2, 1, 1, 2)
        inputs = [t.requires_grad_() for t in make_inputs(*shape[:5], **geometry(shape), seed=46, device="cuda")]
        ref = call(modulated_deform_conv_reference, shape, *inputs)
        grad_out = torch.randn_like(ref)
        ref_grad_weight = torch.autograd.grad(ref, inputs[3], grad_out)[0]
        for tf32 in (False, True):
            with self.subTest(tf32=tf32):
                torch.backends.cudnn.allow_tf32 = tf32
                out = call(modulated_deform_conv, shape, *inputs)
                grad_weight = torch.autograd.grad(out, inputs[3], grad_out)[0]
                for a, b in ((out, ref), (grad_weight, ref_grad_weight)):
                    scale = b.abs().max().item()
                    if tf32:
                        torch.testing.assert_close(a, b, rtol=0, atol=1e-2 * scale)
                        if self.TF32_SEEN_IN_RESULTS:
                            self.assertGreater((a - b).abs().max().item(), 1e-5 * scale)
                    else:
                        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * max(scale, 1.0))

    def check_against_torchvision(self, shape, seed, tol, grad_atol):
        """Output within `tol` and gradients within rtol 1e-3, atol grad_atol(reference gradient)
        of torchvision's, float32 on the GPU."""
        inputs = [t.requires_grad_() for t in make_inputs(*shape[:5], **geometry(shape), seed=seed, device="cuda")]
        out = call(modulated_deform_conv, shape, *inputs)
        ref = call(modulated_deform_conv_reference, shape, *inputs)
        torch.testing.assert_close(out, ref, rtol=tol, atol=tol)
        grad_out = torch.randn_like(out)
        grads = torch.autograd.grad(out, inputs, grad_out)
        grads_ref = torch.autograd.grad(ref, inputs, grad_out)
        for name, a, b in zip("x offset mask weight bias".split(), grads, grads_ref):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=grad_atol(b), msg=name)

    def test_several_chunks(self):
        # 128 * 9 * 130 * 130 * 4 bytes = 74 MiB of columns per image: two chunks of at most 64 MiB.
        self.check_against_torchvision((2, 128, 8, 130, 130, 1, 1, 1, 1), seed=43, tol=1e-4, grad_atol=lambda b: 1e-3)

    def test_gradcheck(self):
        x, offset, mask, weight, bias = make_inputs(2, 4, 2, 5, 6, 2, 1, 1, 2, dtype=torch.float64, seed=0)
        offset = offset.floor() + 0.1 + 0.8 * torch.rand_like(offset)
        inputs = [t.cuda().requires_grad_() for t in (x, offset, mask, weight, bias)]
        self.assertTrue(
            torch.autograd.gradcheck(
                lambda *a: modulated_deform_conv(*a, stride=2), tuple(inputs), nondet_tol=1e-10
            )
        )

    def test_half_and_bfloat16(self):
        shape = (2, 64, 32, 10, 13, 1, 1, 1, 1)
        x, offset, mask, weight, bias = make_inputs(*shape[:5], seed=41, device="cuda")
        ref = modulated_deform_conv(x, offset, mask, weight, bias)
        for dtype in (torch.float16, torch.bfloat16):
            with self.subTest(dtype=dtype):
                args = [t.to(dtype).requires_grad_() for t in (x, weight, bias)]
                out = modulated_deform_conv(args[0], offset, mask, args[1], args[2])
                self.assertEqual(out.dtype, dtype)
                torch.testing.assert_close(out.float(), ref, rtol=5e-2, atol=5e-2 * ref.abs().max().item())
                out.float().sum().backward()
                self.assertTrue(all(torch.isfinite(t.grad.float()).all() for t in args))

    def test_empty_opcheck_and_determinism_alert(self):
        inputs = make_inputs(0, 4, 4, 5, 6, device="cuda")
        self.assertEqual(modulated_deform_conv(*inputs).shape, (0, 4, 5, 6))
        x, offset, mask, weight, bias = make_inputs(2, 4, 6, 5, 6, 2, 1, 1, 2, seed=42, device="cuda")
        geometry_args = ([2, 2], [1, 1], [1, 1])
        torch.library.opcheck(torch.ops.vfnet.modulated_deform_conv.default, (x, offset, mask, weight, bias) + geometry_args)
        torch.library.opcheck(
            torch.ops.vfnet.modulated_deform_conv_backward.default,
            (torch.randn(2, 6, 3, 3, device="cuda"), x, offset, mask, weight) + geometry_args,
        )
        x.requires_grad_()
        out = modulated_deform_conv(x, offset, mask, weight, bias, stride=2)
        previous = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)
        try:
            # grad_x is summed with atomics on CUDA.
            with self.assertRaisesRegex(RuntimeError, "modulated_deform_conv_backward"):
                torch.autograd.grad(out, x, torch.ones_like(out))
        finally:
            torch.use_deterministic_algorithms(previous)

    def test_device_mismatch(self):
        x, offset, mask, weight, bias = make_inputs(1, 2, 2, 3, 3)
        with self.assertRaisesRegex(RuntimeError, "same device"):
            modulated_deform_conv(x.cuda(), offset, mask.cuda(), weight.cuda(), bias.cuda())


@needs_cuda
class ModulatedDeformConvSampledImageCUDATest(SampledImagePathMixin, ModulatedDeformConvCUDATest):
    """Every CUDA test above again on the sampled-image path (strides, dilation, weight groups)."""

    TF32_SEEN_IN_RESULTS = False  # some of cuDNN's stride-3 kernels here take no TF32

    def test_path_is_a_strided_grouped_convolution(self):
        shape = (2, 8, 6, 9, 11, 2, 1, 1, 2)  # stride 2, two weight groups
        inputs = make_inputs(*shape[:5], **geometry(shape), seed=44, device="cuda")
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            out = call(modulated_deform_conv, shape, *inputs)
        calls = [e.name for e in prof.events()]
        self.assertEqual(calls.count("aten::convolution"), 1)
        self.assertEqual(calls.count("aten::mm"), 0)
        torch.testing.assert_close(out, call(modulated_deform_conv_reference, shape, *inputs), rtol=1e-4, atol=1e-4)

    def test_several_chunks_of_whole_images(self):
        # 64 * 9 * 400 * 400 * 4 bytes = 369 MB of sampled image per image: one image per chunk.
        self.check_against_torchvision(
            (2, 64, 8, 400, 400, 1, 1, 1, 2), seed=45, tol=1e-3, grad_atol=lambda b: 1e-3 * b.abs().max().item()
        )


if __name__ == "__main__":
    unittest.main()
