"""Tests of vfnet.ops.star_deform_conv (kernels in vfnet._C: CPU always, CUDA when available).

The reference is torchvision's deform_conv2d with explicit star offsets
(vfnet.ops.star_deform_conv_reference): within float rounding in float32 (the CPU kernel sums in
oneDNN's order, torchvision in MKL's), to 1e-12 in float64.
"""
import os
import subprocess
import sys
import textwrap
import unittest

import torch

from vfnet.ops import HAS_C_EXTENSION, star_deform_conv, star_deform_conv_reference
from vfnet_test_utils import ExactFloat32ConvsMixin, SampledImagePathMixin, num_threads

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CUDA = torch.cuda.is_available() and HAS_C_EXTENSION
needs_ext = unittest.skipUnless(HAS_C_EXTENSION, "vfnet._C is not built")
needs_cuda = unittest.skipUnless(CUDA, "needs a GPU and vfnet._C built with CUDA")


def make_inputs(n, c, o, h, w, dtype=torch.float32, seed=0, reach=1.5, bias=True, device="cpu"):
    """Features, boxes reaching from 0 to `reach` x the map's size (many sample points fall
    outside the map), some sides exactly 0 or integers (points on the grid and on the border),
    weight and bias."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    ltrb = torch.rand(n, 4, h, w, generator=g, dtype=torch.float64) * reach * max(h, w)
    if n * h * w > 0:
        ltrb[:, :, ::3] = torch.randint(0, 4, ltrb[:, :, ::3].shape, generator=g).double()
        ltrb.view(-1)[:: 7] = 0.0
    weight = torch.randn(o, c, 3, 3, generator=g, dtype=torch.float64) / (3 * c**0.5)
    b = torch.randn(o, generator=g, dtype=torch.float64) if bias else None
    cast = lambda t: None if t is None else t.to(dtype=dtype, device=device)  # noqa: E731
    return cast(x), cast(ltrb), cast(weight), cast(b)


# (N, C, O, H, W): realistic head shapes (64 channels: the fixtures), H or W of 1, 1x1, a map of a
# few positions per image (one GEMM per group of images, as torchvision), and maps large enough
# to be cut into several chunks of positions.
SHAPES = [
    (2, 64, 64, 40, 52),
    (2, 64, 64, 5, 7),
    (2, 64, 64, 3, 4),
    (2, 64, 64, 2, 3),
    (1, 32, 16, 1, 9),
    (3, 16, 8, 7, 1),
    (2, 8, 4, 1, 1),
    (4, 3, 5, 2, 2),
    (1, 128, 32, 48, 50),
]


@needs_ext
class StarDeformConvCPUTest(unittest.TestCase):
    def test_matches_torchvision_float32_one_thread(self):
        # Outputs of magnitude ~1: a difference of 1e-5 is a few float32 ulps of the sums.
        with num_threads(1):
            for i, shape in enumerate(SHAPES):
                for with_bias in (False, True):
                    with self.subTest(shape=shape, bias=with_bias):
                        x, ltrb, weight, bias = make_inputs(*shape, seed=i, bias=with_bias)
                        out = star_deform_conv(x, ltrb, weight, bias)
                        ref = star_deform_conv_reference(x, ltrb, weight, bias)
                        self.assertEqual(out.shape, ref.shape)
                        self.assertEqual(out.dtype, torch.float32)
                        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)

    def test_bfloat16_samples_and_sums(self):
        # bfloat16 on the CPU: S is stored in bfloat16 and its 1x1 convolutions run in bfloat16
        # (float32 sums), as a bfloat16 conv does. Boxes of size 0: every tap samples its own
        # pixel, so S holds x's values exactly and the output is the conv of x with the taps'
        # summed weights, rounded once to bfloat16 from a float32 sum.
        x, _, weight, bias = make_inputs(2, 32, 16, 9, 11, seed=8)
        x, weight, bias = x.bfloat16(), weight.bfloat16(), bias.bfloat16()
        ltrb = torch.zeros(2, 4, 9, 11)
        out = star_deform_conv(x, ltrb, weight, bias)
        self.assertEqual(out.dtype, torch.bfloat16)
        ref = torch.nn.functional.conv2d(x.double(), weight.double().sum((2, 3), keepdim=True), bias.double())
        torch.testing.assert_close(out.double(), ref, rtol=2.0**-8, atol=1e-6 * ref.abs().max().item())

        # Fractional boxes: within bfloat16's rounding of the samples and the output of the
        # float32 result (which is torchvision's within 1e-5).
        x32, ltrb, w32, b32 = make_inputs(2, 32, 16, 9, 11, seed=9, reach=3.0)
        x, weight, bias = x32.bfloat16(), w32.bfloat16(), b32.bfloat16()
        ref = star_deform_conv(x.float(), ltrb, weight.float(), bias.float())
        out = star_deform_conv(x, ltrb, weight, bias)
        torch.testing.assert_close(out.float(), ref, rtol=0, atol=1e-2 * ref.abs().max().item())

        # One tap, one channel per output (weight 1 at [o, o, 1, 0], tap (0, -l)): the output is
        # the sample itself, rounded once to bfloat16 as torch rounds (to nearest, ties to even).
        one_tap = torch.zeros(32, 32, 3, 3, dtype=torch.bfloat16)
        one_tap[torch.arange(32), torch.arange(32), 1, 0] = 1
        torch.testing.assert_close(
            star_deform_conv(x, ltrb, one_tap),
            star_deform_conv(x.float(), ltrb, one_tap.float()).to(torch.bfloat16),
            rtol=0,
            atol=0,
        )

        # Every convolution of the forward and backward (S's, its gradient's, the weight's)
        # takes bfloat16 operands.
        inputs = [t.requires_grad_() for t in (x, weight)]
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
            out = star_deform_conv(inputs[0], ltrb, inputs[1], bias)
            torch.autograd.grad(out, inputs, torch.ones_like(out))
        convs = [e for e in prof.events() if e.name in ("aten::convolution", "aten::convolution_backward")]
        self.assertEqual(len(convs), 1 + 1 + 9)  # one band: S's conv, its gradient, nine taps
        for e in convs:
            self.assertEqual(e.input_dtypes[:2], ["c10::BFloat16", "c10::BFloat16"], e.name)

    @unittest.skipUnless(torch.backends.mkldnn.is_available(), "this torch is built without oneDNN")
    def test_one_thread_uses_onednn_for_the_samples_conv(self):
        # Single-threaded, ATen runs a 1x1 float convolution with its own im2col + GEMM path
        # (aten::_slow_conv2d_*), 2.2x slower than oneDNN for the 9 * C channels of the samples;
        # the kernel's 1x1 convolutions are dilated so that ATen picks oneDNN there too.
        x, ltrb, weight, bias = make_inputs(2, 64, 64, 20, 24, seed=11)

        def op_names():
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                forward_and_backward(x, ltrb, weight, bias)
            return [e.name for e in prof.events()]

        for threads in (1, 2):
            with self.subTest(threads=threads), num_threads(threads):
                names = op_names()
                self.assertEqual(names.count("aten::mkldnn_convolution"), 1, threads)
                self.assertFalse([n for n in names if n.startswith("aten::_slow_conv2d")], threads)
                self.assertFalse([n for n in names if n.startswith("aten::slow_conv_dilated")], threads)
        # With oneDNN turned off, the plain 1x1 call (ATen's im2col path), not its slower dilated one.
        with num_threads(1), torch.backends.mkldnn.flags(enabled=False):
            names = op_names()
            self.assertNotIn("aten::mkldnn_convolution", names)
            self.assertFalse([n for n in names if n.startswith("aten::slow_conv_dilated")])
            self.assertTrue([n for n in names if n.startswith("aten::_slow_conv2d")])

    def test_matches_torchvision_default_threads(self):
        for i, shape in enumerate(SHAPES[:3] + SHAPES[-1:]):
            with self.subTest(shape=shape):
                x, ltrb, weight, bias = make_inputs(*shape, seed=10 + i)
                torch.testing.assert_close(
                    star_deform_conv(x, ltrb, weight, bias),
                    star_deform_conv_reference(x, ltrb, weight, bias),
                    rtol=1e-5,
                    atol=1e-5,
                )

    def test_float64_forward_and_gradients_match_torchvision(self):
        for i, shape in enumerate(SHAPES[1:8]):
            for with_bias in (False, True):
                with self.subTest(shape=shape, bias=with_bias):
                    inputs = make_inputs(*shape, dtype=torch.float64, seed=20 + i, bias=with_bias)
                    inputs = [None if t is None else t.requires_grad_() for t in inputs]
                    out = star_deform_conv(*inputs)
                    ref = star_deform_conv_reference(*inputs)
                    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
                    grad_out = torch.randn_like(out)
                    wrt = [t for t in inputs if t is not None]
                    grads = torch.autograd.grad(out, wrt, grad_out)
                    grads_ref = torch.autograd.grad(ref, wrt, grad_out)
                    for name, a, b in zip("x ltrb weight bias".split(), grads, grads_ref):
                        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)

    def test_gradients_with_channels_split_over_threads(self):
        # The backward splits the channels over the threads (at least 16 each): 50 channels are
        # one slice with 1 thread, 25 + 25 with 2, 16 + 17 + 17 with 3 (runs that are not a
        # multiple of the 8 lanes of the dot products). Each split gives torchvision's gradients.
        inputs = make_inputs(2, 50, 6, 9, 11, dtype=torch.float64, seed=31)
        inputs = [t.requires_grad_() for t in inputs]
        ref = star_deform_conv_reference(*inputs)
        grad_out = torch.randn_like(ref)
        grads_ref = torch.autograd.grad(ref, inputs, grad_out)
        for threads in (1, 2, 3):
            with self.subTest(threads=threads), num_threads(threads):
                grads = torch.autograd.grad(star_deform_conv(*inputs), inputs, grad_out)
                for name, a, b in zip("x ltrb weight bias".split(), grads, grads_ref):
                    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)

    def test_float32_gradients_match_torchvision(self):
        x, ltrb, weight, bias = make_inputs(2, 64, 32, 12, 17, seed=3)
        inputs = [t.requires_grad_() for t in (x, ltrb, weight, bias)]
        out = star_deform_conv(*inputs)
        ref = star_deform_conv_reference(*inputs)
        grad_out = torch.randn_like(out)
        grads = torch.autograd.grad(out, inputs, grad_out)
        grads_ref = torch.autograd.grad(ref, inputs, grad_out)
        for name, a, b in zip("x ltrb weight bias".split(), grads, grads_ref):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=name)

    def test_gradcheck(self):
        for shape, reach in (((2, 2, 2, 3, 4), 0.6), ((1, 2, 3, 1, 4), 1.2), ((2, 2, 2, 3, 1), 1.0)):
            with self.subTest(shape=shape):
                g = torch.Generator().manual_seed(0)
                n, c, o, h, w = shape
                x = torch.randn(n, c, h, w, dtype=torch.float64, generator=g, requires_grad=True)
                # Fractional sides (bilinear interpolation is not differentiable on the grid),
                # reaching past the border.
                ltrb = (torch.rand(n, 4, h, w, dtype=torch.float64, generator=g) * reach * max(h, w) + 0.05)
                ltrb.requires_grad_()
                weight = torch.randn(o, c, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)
                bias = torch.randn(o, dtype=torch.float64, generator=g, requires_grad=True)
                # Full Jacobians on the smallest shape, torchvision's fast mode on the others.
                fast = n * h * w > 4
                self.assertTrue(
                    torch.autograd.gradcheck(star_deform_conv, (x, ltrb, weight, bias), fast_mode=fast)
                )
                self.assertTrue(
                    torch.autograd.gradcheck(star_deform_conv, (x, ltrb, weight, None), fast_mode=True)
                )

    def test_gradcheck_non_contiguous(self):
        g = torch.Generator().manual_seed(1)
        x = torch.randn(2, 3, 5, 4, dtype=torch.float64, generator=g).transpose(2, 3).requires_grad_()
        ltrb = (torch.rand(2, 4, 5, 4, dtype=torch.float64, generator=g) * 3 + 0.05).transpose(2, 3)
        ltrb.requires_grad_()
        weight = torch.randn(2, 3, 3, 3, dtype=torch.float64, generator=g).transpose(2, 3).requires_grad_()
        self.assertFalse(x.is_contiguous() or ltrb.is_contiguous() or weight.is_contiguous())
        self.assertTrue(torch.autograd.gradcheck(star_deform_conv, (x, ltrb, weight, None), fast_mode=True))

    def test_non_contiguous_inputs(self):
        x, ltrb, weight, bias = make_inputs(2, 16, 8, 9, 11, seed=4)
        ref = star_deform_conv(x, ltrb, weight, bias)
        variants = {
            "channels_last x": (x.to(memory_format=torch.channels_last), ltrb, weight, bias),
            "channels_last ltrb": (x, ltrb.to(memory_format=torch.channels_last), weight, bias),
            "strided": (
                torch.stack([x, torch.zeros_like(x)], dim=2).flatten(1, 2)[:, ::2],
                torch.stack([ltrb, torch.zeros_like(ltrb)], dim=2).flatten(1, 2)[:, ::2],
                weight.transpose(2, 3).contiguous().transpose(2, 3),
                torch.stack([bias, bias], 1)[:, 0],
            ),
        }
        for name, args in variants.items():
            with self.subTest(name):
                self.assertTrue(torch.equal(star_deform_conv(*args), ref))

    def test_empty_batch_and_empty_map(self):
        for shape in ((0, 4, 3, 5, 6), (2, 4, 3, 0, 5)):
            with self.subTest(shape=shape):
                x, ltrb, weight, bias = make_inputs(*shape)
                inputs = [t.requires_grad_() for t in (x, ltrb, weight, bias)]
                out = star_deform_conv(*inputs)
                n, _, h, w = x.shape
                self.assertEqual(out.shape, (n, 3, h, w))
                out.sum().backward()
                for t in inputs:
                    self.assertEqual(t.grad.shape, t.shape)
                    self.assertEqual(float(t.grad.abs().sum()), 0.0)

    def test_all_samples_outside_the_map(self):
        # Boxes far beyond the map: every tap but the centre reads zeros; the centre tap is the
        # feature itself, so only the centre weights act.
        x, ltrb, weight, bias = make_inputs(1, 4, 3, 5, 6, seed=5)
        ltrb = torch.full_like(ltrb, 1e4)
        centre_only = torch.zeros_like(weight)
        centre_only[:, :, 1, 1] = weight[:, :, 1, 1]
        expected = torch.nn.functional.conv2d(x, centre_only, bias, padding=1)
        torch.testing.assert_close(star_deform_conv(x, ltrb, weight, bias), expected)

    def test_low_precision_cpu(self):
        x, ltrb, weight, bias = make_inputs(2, 64, 32, 10, 13, seed=6)
        ref = star_deform_conv_reference(x, ltrb, weight, bias)
        for dtype, tol in ((torch.bfloat16, 5e-2), (torch.float16, 5e-3)):
            with self.subTest(dtype=dtype):
                args = [t.to(dtype).requires_grad_() for t in (x, weight, bias)]
                # The boxes stay float32 (positions in float32, as the head passes them).
                box = ltrb.clone().requires_grad_()
                out = star_deform_conv(args[0], box, args[1], args[2])
                self.assertEqual(out.dtype, dtype)
                torch.testing.assert_close(out.float(), ref, rtol=tol, atol=tol * ref.abs().max().item())
                out.float().sum().backward()
                self.assertEqual(args[0].grad.dtype, dtype)
                self.assertEqual(box.grad.dtype, torch.float32)
                self.assertTrue(all(torch.isfinite(t.grad.float()).all() for t in args + [box]))

    def test_ltrb_of_another_dtype(self):
        x, ltrb, weight, _ = make_inputs(2, 8, 4, 6, 7, seed=7)
        box64 = ltrb.double().requires_grad_()
        out = star_deform_conv(x, box64, weight)
        self.assertTrue(torch.equal(out, star_deform_conv(x, ltrb, weight)))
        out.sum().backward()
        self.assertEqual(box64.grad.dtype, torch.float64)

    def test_deterministic(self):
        x, ltrb, weight, bias = make_inputs(2, 32, 16, 20, 30, seed=8)
        inputs = [t.requires_grad_() for t in (x, ltrb, weight, bias)]
        grad_out = torch.randn(2, 16, 20, 30)
        runs = []
        for _ in range(2):
            out = star_deform_conv(*inputs)
            runs.append([out] + list(torch.autograd.grad(out, inputs, grad_out)))
        for a, b in zip(*runs):
            self.assertTrue(torch.equal(a, b))

    def test_opcheck(self):
        x, ltrb, weight, bias = make_inputs(2, 3, 4, 5, 6, seed=9)
        for requires_grad in (False, True):
            for b in (None, bias):
                args = [t if t is None else t.clone().requires_grad_(requires_grad) for t in (x, ltrb, weight, b)]
                torch.library.opcheck(torch.ops.vfnet.star_deform_conv.default, tuple(args))
        grad_out = torch.randn(2, 4, 5, 6)
        torch.library.opcheck(torch.ops.vfnet.star_deform_conv_backward.default, (grad_out, x, ltrb, weight))
        # channels-last x (the head's layout on the CPU): output and grad_x in x's format, the fake
        # kernel's strides included
        x_cl = x.contiguous(memory_format=torch.channels_last)
        out = star_deform_conv(x_cl, ltrb, weight, bias)
        self.assertTrue(out.is_contiguous(memory_format=torch.channels_last))
        torch.library.opcheck(torch.ops.vfnet.star_deform_conv.default, (x_cl, ltrb, weight, bias))
        torch.library.opcheck(torch.ops.vfnet.star_deform_conv_backward.default, (grad_out, x_cl, ltrb, weight))

    def test_torch_compile_and_torchscript(self):
        x, ltrb, weight, bias = make_inputs(1, 4, 3, 5, 6, seed=11)

        def f(x, ltrb, weight, bias):
            return torch.ops.vfnet.star_deform_conv(x, ltrb, weight, bias).relu().sum()

        expected = f(x, ltrb, weight, bias)
        compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
        torch.testing.assert_close(compiled(x, ltrb, weight, bias), expected)
        scripted = torch.jit.script(f)
        torch.testing.assert_close(scripted(x, ltrb, weight, bias), expected)

    def test_bad_inputs(self):
        x, ltrb, weight, bias = make_inputs(2, 4, 3, 5, 6)
        op = torch.ops.vfnet.star_deform_conv
        cases = [
            ((x[0], ltrb, weight, bias), "expected x of shape"),
            ((x, ltrb[:, :3], weight, bias), "ltrb to have 4 channels"),
            ((x, ltrb[:, :, :4], weight, bias), "ltrb of shape \\(2, 4, 5, 6\\) to match x"),
            ((x, ltrb, weight[:, :3], bias), "weight of shape \\(O, 4, 3, 3\\)"),
            ((x, ltrb, weight[..., :2], bias), "weight of shape"),
            ((x, ltrb, weight.double(), bias), "weight of the same dtype as x"),
            ((x, ltrb, weight, bias[:2]), "bias of shape \\(3,\\)"),
            ((x, ltrb, weight, bias.double()), "bias of the same dtype as x"),
            ((x.long(), ltrb, weight.long(), None), "floating-point x"),
            ((x, ltrb.long(), weight, bias), "floating-point ltrb"),
        ]
        for args, message in cases:
            with self.subTest(message):
                with self.assertRaisesRegex(RuntimeError, message):
                    op(*args)
                if message != "expected x of shape":  # the fake kernel checks the same things
                    with self.assertRaisesRegex(RuntimeError, message.split(" \\(")[0]):
                        star_deform_conv_reference(*args)
        with self.assertRaisesRegex(RuntimeError, "grad_out of shape"):
            torch.ops.vfnet.star_deform_conv_backward(torch.zeros(2, 4, 5, 6), x, ltrb, weight)


@needs_ext
class FusedLayerAndModelTest(unittest.TestCase):
    def test_layer_paths_agree(self):
        from vfnet import StarDeformConv2d

        torch.manual_seed(0)
        fused = StarDeformConv2d(16, 8, bias=True)
        reference = StarDeformConv2d(16, 8, bias=True, use_fused_op=False)
        reference.load_state_dict(fused.state_dict())
        self.assertIn("use_fused_op=True", repr(fused))
        x, ltrb, _, _ = make_inputs(2, 16, 8, 9, 10, seed=12)
        torch.testing.assert_close(fused(x, ltrb), reference(x, ltrb), rtol=1e-5, atol=1e-5)

    def test_model_fused_and_reference_paths_agree(self):
        from detectron2.utils.events import EventStorage
        from vfnet_test_utils import make_instances, random_image, small_vfnet

        def run(fused):
            model = small_vfnet(num_classes=3)
            model.fused_ops = fused
            model.head.fused_ops = fused
            model.head.cls_dconv.use_fused_op = fused
            model.head.bbox_refine_dconv.use_fused_op = fused
            model.train()
            batch = [
                {
                    "image": random_image(160, 256, seed=s),
                    "instances": make_instances((160, 256), [[10, 12, 60, 70], [40, 30, 220, 150]], [0, 2]),
                }
                for s in (1, 2)
            ]
            with EventStorage():
                losses = model(batch)
            total = sum(losses.values())
            total.backward()
            grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
            model.eval()
            with torch.no_grad():
                detections = model([{"image": random_image(160, 256, seed=3)}])
            return losses, grads, detections

        with num_threads(1):
            losses, grads, det = run(True)
            losses_ref, grads_ref, det_ref = run(False)
        for k in losses_ref:
            torch.testing.assert_close(losses[k], losses_ref[k], rtol=1e-6, atol=0, msg=k)
        for k in grads_ref:
            torch.testing.assert_close(grads[k], grads_ref[k], rtol=1e-4, atol=1e-6, msg=k)
        a, b = det[0]["instances"], det_ref[0]["instances"]
        self.assertTrue(torch.equal(a.pred_boxes.tensor, b.pred_boxes.tensor))
        self.assertTrue(torch.equal(a.scores, b.scores))

    def test_config_switch(self):
        from detectron2.config import get_cfg
        from detectron2.modeling import build_model

        from vfnet import add_vfnet_config

        cfg = get_cfg()
        add_vfnet_config(cfg)
        self.assertTrue(cfg.MODEL.VFNET.FUSED_OPS)
        cfg.MODEL.META_ARCHITECTURE = "VFNet"
        cfg.MODEL.DEVICE = "cpu"
        cfg.MODEL.BACKBONE.NAME = "build_vfnet_resnet_fpn_backbone"
        cfg.MODEL.RESNETS.DEPTH = 18
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
        cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
        cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"]
        cfg.MODEL.FPN.OUT_CHANNELS = 32
        cfg.MODEL.VFNET.FEAT_CHANNELS = 32
        for fused in (True, False):
            cfg.MODEL.VFNET.FUSED_OPS = fused
            model = build_model(cfg)
            self.assertEqual(model.fused_ops, fused)
            self.assertEqual(model.head.cls_dconv.use_fused_op, fused)
            self.assertEqual(model.head.bbox_refine_dconv.use_fused_op, fused)


class MissingExtensionTest(unittest.TestCase):
    def test_fallback_and_one_warning(self):
        # Without vfnet._C: one RuntimeWarning saying why, and every op runs its PyTorch path.
        code = textwrap.dedent(
            """
            import sys, warnings
            sys.modules["vfnet._C"] = None  # makes `import vfnet._C` fail
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                import torch
                import vfnet
                from vfnet import ModulatedDeformConv2d, StarDeformConv2d
                from vfnet.ops import HAS_C_EXTENSION, modulated_deform_conv, star_deform_conv, varifocal_loss
            ours = [w for w in caught if "vfnet._C could not be loaded" in str(w.message)]
            assert not HAS_C_EXTENSION
            assert len(ours) == 1 and ours[0].category is RuntimeWarning, [str(w.message) for w in caught]
            x = torch.randn(1, 2, 4, 5, requires_grad=True)
            ltrb = torch.rand(1, 4, 4, 5) * 3
            y = StarDeformConv2d(2, 3)(x, ltrb) + star_deform_conv(x, ltrb, torch.randn(3, 2, 3, 3))
            offset, mask = torch.randn(1, 18, 2, 3), torch.rand(1, 9, 2, 3)
            y = ModulatedDeformConv2d(3, 2, stride=2)(y).sum() + modulated_deform_conv(
                y, offset, mask, torch.randn(2, 3, 3, 3), stride=2
            )
            loss = varifocal_loss(y, torch.zeros_like(y)) + y.sum()
            loss.backward()
            assert x.grad is not None
            print("ok")
            """
        )
        env = dict(os.environ, PYTHONWARNINGS="default")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        self.assertEqual(out.returncode, 0, out.stderr[-3000:])
        self.assertIn("ok", out.stdout)


def count_calls(op_name, fn, *args):
    """Number of calls of the aten op `op_name` that fn(*args) makes (profiler events)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn(*args)
    return sum(1 for e in prof.events() if e.name == op_name)


def forward_and_backward(x, ltrb, weight, bias=None):
    inputs = [t.detach().requires_grad_() for t in (x, weight)]
    out = star_deform_conv(inputs[0], ltrb, inputs[1], bias)
    torch.autograd.grad(out, inputs, torch.ones_like(out))


def fractional_boxes(n, h, w, reach, device, seed):
    """Box sides k + f with f in [0.1, 0.9]: every sampling position is at least 0.1 from the
    grid, where bilinear sampling has kinks (gradcheck's finite differences must not cross one)."""
    g = torch.Generator().manual_seed(seed)
    whole = torch.randint(0, reach + 1, (n, 4, h, w), generator=g).double()
    return (whole + 0.1 + 0.8 * torch.rand(n, 4, h, w, generator=g, dtype=torch.float64)).to(device)


class ChunkPlanMixin:
    """How the kernels cut the batch, on `device`.

    CPU (csrc/cpu/sampled_conv.h): the samples S (9 samples x C channels per position) are
    built and convolved in bands of output rows of at most 12 MiB of S (in S's dtype: bfloat16
    for bfloat16, float64 for float64, else float32), the whole batch in one band when it fits,
    in the forward and the backward. `SPLIT` is cut into several bands per image, `GROUPED` is one band; the
    forward's ``aten::convolution`` calls show it.

    CUDA (make_column_plan in csrc/deform_columns.h): chunks of at most 64 MiB of columns,
    at least 1024 positions; the images of a group (the largest divisor of N up to 32) share one
    chunk when their positions fit; the forward's ``aten::mm`` calls (one per chunk) show it."""

    device = "cpu"
    # The op of one band (CPU) or chunk (CUDA) in the forward, per dtype.
    SPLIT_OPS = {torch.float32: "aten::convolution", torch.float64: "aten::convolution"}
    # (N, C, O, H, W). CPU: 9 * 32 * 128 * 128 * 4 bytes = 18 MiB of S per image in float32,
    # 36 MiB in float64: 2 and 3 bands.
    SPLIT = (1, 32, 4, 128, 128)
    # 34 images of 3 x 4 positions: one band (CPU); 2 groups of 17 (CUDA).
    GROUPED = (34, 8, 4, 3, 4)
    GROUPED_CALLS = 1
    # (H, W) of a 1-channel image whose grad_weight is a sum of 360000 products. On the CPU in
    # bfloat16 (9 * 600 * 600 * 2 bytes = 6 MiB of S, one band), S's gradient is one
    # convolution_backward call and the weight's nine, one per tap over the whole image (sums
    # over bands, as float32 takes them, would round each band's part to bfloat16).
    LOW_PRECISION_MAP = (600, 600)
    LOW_PRECISION_CALLS = 1 + 9
    LOW_PRECISION_DTYPES = (torch.bfloat16,)

    def inputs(self, shape, dtype, seed):
        x, _, weight, bias = make_inputs(*shape, dtype=dtype, seed=seed, device=self.device)
        n, _, _, h, w = shape
        ltrb = fractional_boxes(n, h, w, reach=max(h, w) // 2, device=self.device, seed=seed).to(dtype)
        return x, ltrb, weight, bias

    def check_float32_against_torchvision(self, shape, seed):
        x, ltrb, weight, bias = [t.requires_grad_() for t in self.inputs(shape, torch.float32, seed)]
        with num_threads(1):
            out = star_deform_conv(x, ltrb, weight, bias)
            ref = star_deform_conv_reference(x, ltrb, weight, bias)
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
        grad_out = torch.randn_like(out)
        grads = torch.autograd.grad(out, (x, ltrb, weight, bias), grad_out)
        grads_ref = torch.autograd.grad(ref, (x, ltrb, weight, bias), grad_out)
        for name, a, b in zip("x ltrb weight bias".split(), grads, grads_ref):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3, msg=name)

    def check_gradcheck(self, shape, seed):
        inputs = [t.requires_grad_() for t in self.inputs(shape, torch.float64, seed)]
        self.assertTrue(torch.autograd.gradcheck(star_deform_conv, inputs, fast_mode=True, nondet_tol=1e-10))

    def test_several_chunks_per_image(self):
        n = self.SPLIT[0]
        for dtype in (torch.float32, torch.float64):
            x, ltrb, weight, bias = self.inputs(self.SPLIT, dtype, seed=0)
            calls = count_calls(self.SPLIT_OPS[dtype], star_deform_conv, x, ltrb, weight, bias)
            self.assertGreaterEqual(calls, 2 * n, dtype)
        self.check_float32_against_torchvision(self.SPLIT, seed=1)
        self.check_gradcheck(self.SPLIT, seed=2)

    def test_several_images_per_chunk(self):
        x, ltrb, weight, bias = self.inputs(self.GROUPED, torch.float64, seed=3)
        calls = count_calls(self.SPLIT_OPS[torch.float64], star_deform_conv, x, ltrb, weight, bias)
        self.assertEqual(calls, self.GROUPED_CALLS)
        self.check_float32_against_torchvision(self.GROUPED, seed=4)
        self.check_gradcheck(self.GROUPED, seed=5)

    def test_grad_weight_summed_in_float32(self):
        # One channel of ones, boxes of size 0 (the nine taps sample the pixel itself): every
        # column is 1, so grad_weight[0, 0, i, j] = sum(grad_out) = 1, from +1 on the first half
        # of the rows, -1 on the second, and one 0. The parts' sums (up to +-h * w / 2) are
        # beyond bfloat16 resolution (and, on CUDA, float16's range): rounded per part they would
        # sum to 0, inf - inf or worse. (On the CPU in bfloat16 there are no parts: each tap's
        # weight gradient is one oneDNN sum over the whole image, in float32, rounded once.)
        h, w = self.LOW_PRECISION_MAP
        grad_out = torch.ones(1, 1, h, w, device=self.device)
        grad_out[:, :, h // 2 :] = -1
        grad_out[0, 0, -1, -1] = 0
        for dtype in self.LOW_PRECISION_DTYPES:
            with self.subTest(dtype=dtype):
                x = torch.ones(1, 1, h, w, dtype=dtype, device=self.device, requires_grad=True)
                weight = torch.ones(1, 1, 3, 3, dtype=dtype, device=self.device, requires_grad=True)
                ltrb = torch.zeros(1, 4, h, w, device=self.device)
                if self.device == "cpu":
                    calls = count_calls("aten::convolution_backward", forward_and_backward, x, ltrb, weight)
                else:
                    calls = count_calls("aten::mm", star_deform_conv, x, ltrb, weight)
                self.assertGreaterEqual(calls, self.LOW_PRECISION_CALLS)
                out = star_deform_conv(x, ltrb, weight)
                (grad_weight,) = torch.autograd.grad(out, weight, grad_out.to(dtype))
                self.assertEqual(grad_weight.dtype, dtype)
                self.assertEqual(grad_weight.float().flatten().tolist(), [1.0] * 9)

    def test_deterministic_algorithms(self):
        inputs = make_inputs(2, 4, 3, 6, 7, seed=6, device=self.device)
        x, ltrb, weight, bias = [t.requires_grad_() for t in inputs]
        out = star_deform_conv(x, ltrb, weight, bias)
        previous = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)
        try:
            if self.device == "cuda":
                # grad_x is summed with atomics on CUDA.
                with self.assertRaisesRegex(RuntimeError, "star_deform_conv_backward"):
                    torch.autograd.grad(out, x, torch.ones_like(out), retain_graph=True)
            else:
                grads = torch.autograd.grad(out, (x, ltrb, weight), torch.ones_like(out), retain_graph=True)
                torch.use_deterministic_algorithms(False)
                again = torch.autograd.grad(out, (x, ltrb, weight), torch.ones_like(out))
                for a, b in zip(grads, again):
                    self.assertTrue(torch.equal(a, b))
        finally:
            torch.use_deterministic_algorithms(previous)


@needs_ext
class StarDeformConvChunkPlanCPUTest(ChunkPlanMixin, unittest.TestCase):
    device = "cpu"


@needs_cuda
class StarDeformConvChunkPlanCUDATest(ExactFloat32ConvsMixin, ChunkPlanMixin, unittest.TestCase):
    device = "cuda"
    # The column GEMMs with cuDNN's TF32 off (ExactFloat32ConvsMixin): at::mm.
    SPLIT_OPS = {torch.float32: "aten::mm", torch.float64: "aten::mm"}
    GROUPED_CALLS = 2
    # 128 * 9 * 130 * 130 * 4 bytes = 74 MiB per image in float32, 149 MiB in float64.
    SPLIT = (2, 128, 4, 130, 130)
    # Two chunks of 2 million positions (9 * 4e6 * 2 bytes = 69 MiB), whose grad_weight products
    # (+-2e6) overflow float16.
    LOW_PRECISION_MAP = (2000, 2000)
    LOW_PRECISION_CALLS = 2  # aten::mm, one per chunk
    LOW_PRECISION_DTYPES = (torch.float16, torch.bfloat16)

    def test_several_chunks_per_image_with_tf32(self):
        # cuDNN's TF32 on: the float32 products are 1x1 convolutions, each chunk's written into
        # (forward) and read from (backward) its part of one image's rows.
        torch.backends.cudnn.allow_tf32 = True
        x, ltrb, weight, bias = [t.requires_grad_() for t in self.inputs(self.SPLIT, torch.float32, seed=6)]
        self.assertGreaterEqual(count_calls("aten::convolution", star_deform_conv, x, ltrb, weight, bias), 2 * self.SPLIT[0])
        out = star_deform_conv(x, ltrb, weight, bias)
        ref = star_deform_conv_reference(x, ltrb, weight, bias)
        grad_out = torch.randn_like(out)
        grads = torch.autograd.grad(out, (x, ltrb, weight, bias), grad_out)
        grads_ref = torch.autograd.grad(ref, (x, ltrb, weight, bias), grad_out)
        for name, a, b in zip("out x ltrb weight bias".split(), (out,) + grads, (ref,) + grads_ref):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-2 * b.abs().max().item(), msg=name)


@needs_cuda
class StarDeformConvCUDATest(ExactFloat32ConvsMixin, unittest.TestCase):
    # Whether TF32 must change the float32 results: the column path's 1x1 convs of the column
    # matrices took TF32 kernels on an H100; cuDNN may choose kernels without TF32 (allow_tf32
    # allows, it does not force), as it did there for the sampled path's stride-3 convs.
    TF32_SEEN_IN_RESULTS = True

    def test_matches_cpu(self):
        for i, shape in enumerate(SHAPES):
            with self.subTest(shape=shape):
                inputs = make_inputs(*shape, dtype=torch.float64, seed=30 + i)
                inputs = [t.requires_grad_() for t in inputs]
                cuda_inputs = [t.detach().cuda().requires_grad_() for t in inputs]
                out = star_deform_conv(*inputs)
                out_cuda = star_deform_conv(*cuda_inputs)
                torch.testing.assert_close(out_cuda.cpu(), out, rtol=1e-10, atol=1e-10)
                grad_out = torch.randn_like(out)
                grads = torch.autograd.grad(out, inputs, grad_out)
                grads_cuda = torch.autograd.grad(out_cuda, cuda_inputs, grad_out.cuda())
                for name, a, b in zip("x ltrb weight bias".split(), grads_cuda, grads):
                    torch.testing.assert_close(a.cpu(), b, rtol=1e-8, atol=1e-8, msg=name)

    def test_matches_torchvision_cuda_float32(self):
        x, ltrb, weight, bias = make_inputs(2, 64, 32, 30, 41, seed=40, device="cuda")
        torch.testing.assert_close(
            star_deform_conv(x, ltrb, weight, bias), star_deform_conv_reference(x, ltrb, weight, bias),
            rtol=1e-4, atol=1e-4,
        )

    def test_gradcheck(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, 3, 4, 5, dtype=torch.float64, generator=g).cuda().requires_grad_()
        ltrb = (torch.rand(2, 4, 4, 5, dtype=torch.float64, generator=g) * 4 + 0.05).cuda().requires_grad_()
        weight = torch.randn(2, 3, 3, 3, dtype=torch.float64, generator=g).cuda().requires_grad_()
        bias = torch.randn(2, dtype=torch.float64, generator=g).cuda().requires_grad_()
        self.assertTrue(
            torch.autograd.gradcheck(star_deform_conv, (x, ltrb, weight, bias), nondet_tol=1e-10)
        )

    def test_half_and_bfloat16(self):
        x, ltrb, weight, bias = make_inputs(2, 64, 32, 10, 13, seed=41, device="cuda")
        ref = star_deform_conv(x, ltrb, weight, bias)
        for dtype in (torch.float16, torch.bfloat16):
            with self.subTest(dtype=dtype):
                args = [t.to(dtype).requires_grad_() for t in (x, weight, bias)]
                out = star_deform_conv(args[0], ltrb, args[1], args[2])
                self.assertEqual(out.dtype, dtype)
                torch.testing.assert_close(out.float(), ref, rtol=5e-2, atol=5e-2 * ref.abs().max().item())
                out.float().sum().backward()
                self.assertTrue(all(torch.isfinite(t.grad.float()).all() for t in args))

    def test_empty_and_opcheck(self):
        x, ltrb, weight, bias = make_inputs(0, 4, 3, 5, 6, device="cuda")
        self.assertEqual(star_deform_conv(x, ltrb, weight, bias).shape, (0, 3, 5, 6))
        x, ltrb, weight, bias = make_inputs(2, 3, 4, 5, 6, seed=42, device="cuda")
        torch.library.opcheck(torch.ops.vfnet.star_deform_conv.default, (x, ltrb, weight, bias))
        torch.library.opcheck(
            torch.ops.vfnet.star_deform_conv_backward.default, (torch.randn(2, 4, 5, 6, device="cuda"), x, ltrb, weight)
        )

    def test_follows_cudnn_tf32_setting(self):
        # Both paths run their float32 products as cuDNN convolutions: TF32 where
        # torch.backends.cudnn.allow_tf32 (torch's default), exact float32 products where not.
        inputs = [t.requires_grad_() for t in make_inputs(2, 64, 32, 30, 41, seed=52, device="cuda")]
        grad_out = torch.randn(2, 32, 30, 41, device="cuda")
        ref = star_deform_conv_reference(*inputs)
        ref_grads = torch.autograd.grad(ref, inputs, grad_out)
        for tf32 in (False, True):
            torch.backends.cudnn.allow_tf32 = tf32
            out = star_deform_conv(*inputs)
            grads = torch.autograd.grad(out, inputs, grad_out)
            for name, a, b in zip("out x ltrb weight bias".split(), (out,) + grads, (ref,) + ref_grads):
                with self.subTest(tf32=tf32, tensor=name):
                    scale = b.abs().max().item()
                    if tf32 and name != "bias":  # bias's gradient is a sum of grad_out: no product
                        torch.testing.assert_close(a, b, rtol=0, atol=1e-2 * scale)
                        if self.TF32_SEEN_IN_RESULTS:
                            self.assertGreater((a - b).abs().max().item(), 1e-5 * scale)
                    else:
                        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * max(scale, 1.0))

    def test_device_mismatch(self):
        x, ltrb, weight, bias = make_inputs(1, 2, 2, 3, 3)
        with self.assertRaisesRegex(RuntimeError, "same device"):
            torch.ops.vfnet.star_deform_conv(x.cuda(), ltrb, weight.cuda(), bias.cuda())


@needs_cuda
class StarDeformConvColumnProductsCUDATest(ExactFloat32ConvsMixin, unittest.TestCase):
    def test_products_per_dtype(self):
        # The column path's GEMMs: cuDNN 1x1 convolutions of the column matrices in float32 while
        # cuDNN may use TF32 (one forward, one backward per chunk and weight group), else at::mm.
        x, ltrb, weight, bias = make_inputs(2, 8, 4, 6, 7, seed=53, device="cuda")
        cases = ((torch.float32, True, 1), (torch.float32, False, 0), (torch.float64, True, 0), (torch.float16, True, 0))
        for dtype, tf32, convs in cases:
            with self.subTest(dtype=dtype, tf32=tf32):
                torch.backends.cudnn.allow_tf32 = tf32
                args = [t.to(dtype).requires_grad_() for t in (x, weight, bias)]
                inputs = (args[0], ltrb, args[1], args[2])
                self.assertEqual(count_calls("aten::convolution", star_deform_conv, *inputs), convs)
                self.assertEqual(count_calls("aten::mm", star_deform_conv, *inputs), 1 - convs)
                self.assertEqual(count_calls("aten::convolution_backward", forward_and_backward, *inputs), convs)


@needs_cuda
class StarDeformConvSampledImageCUDATest(SampledImagePathMixin, StarDeformConvCUDATest):
    TF32_SEEN_IN_RESULTS = False  # some of cuDNN's stride-3 kernels here take no TF32

    def test_path_is_a_strided_convolution(self):
        x, ltrb, weight, bias = make_inputs(2, 8, 4, 6, 7, seed=50, device="cuda")
        self.assertEqual(count_calls("aten::mm", forward_and_backward, x, ltrb, weight, bias), 0)
        self.assertEqual(count_calls("aten::convolution", star_deform_conv, x, ltrb, weight, bias), 1)
        self.assertEqual(count_calls("aten::convolution_backward", forward_and_backward, x, ltrb, weight, bias), 1)
        os.environ["VFNET_CUDA_DEFORM_CONV"] = "bogus"
        with self.assertRaisesRegex(RuntimeError, "VFNET_CUDA_DEFORM_CONV must be 'columns' or 'sampled'"):
            star_deform_conv(x, ltrb, weight, bias)

    def test_several_chunks_of_whole_images(self):
        # 64 * 9 * 400 * 400 * 4 bytes = 369 MB of sampled image per image: one image per chunk
        # (kSampledImageBytes = 512 MiB).
        x, _, weight, bias = make_inputs(2, 64, 8, 400, 400, seed=51, device="cuda")
        ltrb = fractional_boxes(2, 400, 400, reach=6, device="cuda", seed=51).float()
        self.assertEqual(count_calls("aten::convolution", star_deform_conv, x, ltrb, weight, bias), 2)
        inputs = [t.requires_grad_() for t in (x, ltrb, weight, bias)]
        out = star_deform_conv(*inputs)
        ref = star_deform_conv_reference(*inputs)
        torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-3)
        grad_out = torch.randn_like(out)
        grads = torch.autograd.grad(out, inputs, grad_out)
        grads_ref = torch.autograd.grad(ref, inputs, grad_out)
        for name, a, b in zip("x ltrb weight bias".split(), grads, grads_ref):
            scale = b.abs().max().item()
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3 * scale, msg=name)


if __name__ == "__main__":
    unittest.main()
