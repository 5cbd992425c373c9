"""Tests of vfnet.ops.varifocal_loss, the fused Varifocal Loss (kernels in vfnet._C: CPU always,
CUDA when available), against the eager reference vfnet.losses.varifocal_loss."""
import math
import unittest

import torch

from vfnet.losses import varifocal_loss as eager_varifocal_loss
from vfnet.ops import HAS_C_EXTENSION, varifocal_loss
from vfnet_test_utils import num_threads

CUDA = torch.cuda.is_available() and HAS_C_EXTENSION
needs_ext = unittest.skipUnless(HAS_C_EXTENSION, "vfnet._C is not built")
needs_cuda = unittest.skipUnless(CUDA, "needs a GPU and vfnet._C built with CUDA")

REDUCTIONS = ("none", "sum", "mean")


def make_inputs(*shape, dtype=torch.float32, seed=0, positive_fraction=0.05, scale=4.0, device="cpu"):
    """Logits spread over a wide range, IoU targets: most zero, some in (0, 1], a few exactly 1."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(*shape, generator=g, dtype=torch.float64) * scale - 2.0
    targets = torch.rand(*shape, generator=g, dtype=torch.float64)
    targets[torch.rand(*shape, generator=g) > positive_fraction] = 0.0
    if targets.numel() > 10:
        targets.view(-1)[::97] = 1.0
    return logits.to(dtype=dtype, device=device), targets.to(dtype=dtype, device=device)


def loss_and_grad(fn, logits, targets, reduction, grad=None, **kwargs):
    x = logits.detach().clone().requires_grad_()
    loss = fn(x, targets, reduction=reduction, **kwargs)
    if grad is None:
        grad = torch.ones_like(loss)
    loss.backward(grad)
    return loss.detach(), x.grad


@needs_ext
class VarifocalLossOpTest(unittest.TestCase):
    def test_matches_eager(self):
        logits, targets = make_inputs(3, 1000, 20)
        grad_none = torch.rand(3, 1000, 20)
        for reduction in REDUCTIONS:
            for kwargs in (
                {},
                {"iou_weighted": False},
                {"alpha": 0.25, "gamma": 1.5},
                {"gamma": 1.0},
                {"gamma": 0.0},
                {"gamma": 3.0, "alpha": 1.0},
            ):
                with self.subTest(reduction=reduction, **kwargs):
                    g = grad_none if reduction == "none" else None
                    loss, grad = loss_and_grad(varifocal_loss, logits, targets, reduction, g, **kwargs)
                    loss_ref, grad_ref = loss_and_grad(eager_varifocal_loss, logits, targets, reduction, g, **kwargs)
                    self.assertEqual(loss.shape, loss_ref.shape)
                    self.assertEqual(loss.dtype, torch.float32)
                    # float32 rounding of the eager formula (less accurate per element, see
                    # test_more_accurate_than_eager) vs the fused kernel
                    if reduction == "none":
                        torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=1e-6)
                    else:
                        torch.testing.assert_close(loss, loss_ref, rtol=2e-6, atol=0)
                    torch.testing.assert_close(grad, grad_ref, rtol=1e-4, atol=1e-7)

    def test_realistic_size(self):
        # 2 images x 20k points x 80 classes, as in VFNet.losses (reduction "sum").
        logits, targets = make_inputs(2, 20000, 80, positive_fraction=0.002, seed=1)
        loss, grad = loss_and_grad(varifocal_loss, logits, targets, "sum")
        loss_ref, grad_ref = loss_and_grad(eager_varifocal_loss, logits, targets, "sum")
        self.assertLess(abs(loss.item() - loss_ref.item()) / loss_ref.item(), 1e-6)
        torch.testing.assert_close(grad, grad_ref, rtol=1e-4, atol=1e-7)
        # The fused loss is at least as close to the float64 value as the eager one.
        exact = eager_varifocal_loss(logits.double(), targets.double()).item()
        self.assertLessEqual(abs(loss.item() - exact), abs(loss_ref.item() - exact) + 1e-6 * exact)

    def test_more_accurate_than_eager(self):
        # Per element, against the float64 value: the fused float32 kernel is at least as close
        # as the eager float32 formula.
        logits, targets = make_inputs(200, 500, seed=8, positive_fraction=0.2)
        for kwargs in ({}, {"gamma": 1.5, "iou_weighted": False}):
            with self.subTest(**kwargs):
                exact, grad_exact = loss_and_grad(
                    eager_varifocal_loss, logits.double(), targets.double(), "none", **kwargs
                )
                for name, fn in (("fused", varifocal_loss), ("eager", eager_varifocal_loss)):
                    loss, grad = loss_and_grad(fn, logits, targets, "none", **kwargs)
                    err = ((loss.double() - exact).abs() / exact.abs().clamp(min=1e-30)).max().item()
                    gerr = ((grad.double() - grad_exact).abs() / grad_exact.abs().clamp(min=1e-30)).mean().item()
                    if name == "fused":
                        fused_err, fused_gerr = err, gerr
                self.assertLess(fused_err, 1e-4)
                self.assertLessEqual(fused_err, err)
                self.assertLessEqual(fused_gerr, gerr)

    def test_extreme_logits(self):
        logits = torch.tensor([-1e30, -1e4, -100.0, -88.0, -30.0, -1e-8, 0.0, 1e-8, 30.0, 88.0, 100.0, 1e4, 1e30] * 2)
        targets = torch.tensor([0.0] * 13 + [0.7, 1.0, 0.2, 0.5, 1.0, 0.3, 1.0, 0.9, 0.1, 1.0, 0.4, 0.5, 1.0])
        loss, grad = loss_and_grad(varifocal_loss, logits, targets, "none")
        loss_ref, grad_ref = loss_and_grad(eager_varifocal_loss, logits.double(), targets.double(), "none")
        self.assertTrue(torch.isfinite(loss).all() and torch.isfinite(grad).all())
        torch.testing.assert_close(loss.double(), loss_ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad.double(), grad_ref, rtol=1e-5, atol=1e-6)

    def test_closed_form(self):
        # q = 0: alpha * p^gamma * -log(1 - p); q > 0: -q (q log p + (1 - q) log(1 - p)).
        x = torch.tensor([0.0, 2.0, -1.0, 0.5])
        q = torch.tensor([0.0, 0.0, 0.6, 1.0])
        p = x.double().sigmoid()
        qd = q.double()
        neg = 0.75 * p**2 * -torch.log1p(-p)
        pos = -(qd * torch.log(p) + (1 - qd) * torch.log1p(-p))
        expected = torch.where(qd > 0, qd * pos, neg)
        torch.testing.assert_close(varifocal_loss(x, q, reduction="none").double(), expected, rtol=1e-6, atol=1e-7)
        expected_unweighted = torch.where(qd > 0, pos, neg)
        torch.testing.assert_close(
            varifocal_loss(x, q, iou_weighted=False, reduction="none").double(), expected_unweighted,
            rtol=1e-6, atol=1e-7,
        )
        torch.testing.assert_close(varifocal_loss(x, q).double(), expected.sum(), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(varifocal_loss(x, q, reduction="mean").double(), expected.mean(), rtol=1e-6, atol=1e-7)

    def test_gradcheck(self):
        logits, targets = make_inputs(4, 7, dtype=torch.float64, positive_fraction=0.4, scale=3.0, seed=2)
        for reduction in REDUCTIONS:
            for kwargs in ({}, {"iou_weighted": False, "gamma": 1.5, "alpha": 0.5}):
                with self.subTest(reduction=reduction, **kwargs):
                    x = logits.clone().requires_grad_()
                    self.assertTrue(
                        torch.autograd.gradcheck(
                            lambda a: varifocal_loss(a, targets, reduction=reduction, **kwargs), (x,)
                        )
                    )

    def test_targets_get_no_gradient(self):
        logits, targets = make_inputs(5, 6, positive_fraction=0.5)
        x = logits.clone().requires_grad_()
        q = targets.clone().requires_grad_()
        varifocal_loss(x, q).backward()
        self.assertIsNotNone(x.grad)
        self.assertIsNone(q.grad)

    def test_empty(self):
        for reduction in REDUCTIONS:
            with self.subTest(reduction=reduction):
                x = torch.zeros(0, 80, requires_grad=True)
                q = torch.zeros(0, 80)
                loss = varifocal_loss(x, q, reduction=reduction)
                ref = eager_varifocal_loss(x, q, reduction=reduction)
                self.assertEqual(loss.shape, ref.shape)
                if reduction != "none":
                    self.assertEqual(loss.item(), 0.0)
                loss.sum().backward()
                self.assertEqual(x.grad.shape, x.shape)

    def test_non_contiguous(self):
        logits, targets = make_inputs(30, 40, seed=3)
        for reduction in REDUCTIONS:
            with self.subTest(reduction=reduction):
                a = varifocal_loss(logits.t(), targets.t(), reduction=reduction)
                b = eager_varifocal_loss(logits.t(), targets.t(), reduction=reduction)
                torch.testing.assert_close(a, b, rtol=2e-6, atol=1e-7)
                # grad of a reduction "none" loss through a non-contiguous view
                x = logits.clone().requires_grad_()
                varifocal_loss(x.t(), targets.t(), reduction="none")[::2].sum().backward()
                x_ref = logits.clone().requires_grad_()
                eager_varifocal_loss(x_ref.t(), targets.t(), reduction="none")[::2].sum().backward()
                torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-8)

    def test_low_precision_cpu(self):
        logits, targets = make_inputs(50, 80, seed=4)
        for dtype in (torch.bfloat16, torch.float16):
            with self.subTest(dtype=dtype):
                lo, ta = logits.to(dtype), targets.to(dtype)
                loss, grad = loss_and_grad(varifocal_loss, lo, ta, "sum")
                ref, grad_ref = loss_and_grad(eager_varifocal_loss, lo.float(), ta.float(), "sum")
                self.assertEqual(loss.dtype, dtype)
                self.assertEqual(grad.dtype, dtype)
                torch.testing.assert_close(loss.float(), ref, rtol=1e-2, atol=0)
                torch.testing.assert_close(grad.float(), grad_ref, rtol=2e-2, atol=1e-3)

    def test_targets_of_another_dtype(self):
        logits, targets = make_inputs(10, 8)
        torch.testing.assert_close(varifocal_loss(logits, targets.double()), varifocal_loss(logits, targets))

    def test_same_result_with_any_number_of_threads(self):
        logits, targets = make_inputs(4, 5000, 20, seed=5)
        results = []
        for threads in (1, 2):
            with num_threads(threads):
                results.append(loss_and_grad(varifocal_loss, logits, targets, "sum"))
        self.assertTrue(torch.equal(results[0][0], results[1][0]))
        self.assertTrue(torch.equal(results[0][1], results[1][1]))

    def test_opcheck(self):
        logits, targets = make_inputs(6, 9, seed=6)
        for reduction in (0, 1, 2):
            for requires_grad in (False, True):
                x = logits.clone().requires_grad_(requires_grad)
                torch.library.opcheck(
                    torch.ops.vfnet.varifocal_loss.default, (x, targets, 0.75, 2.0, True, reduction)
                )
            grad = torch.rand(6, 9) if reduction == 0 else torch.tensor(1.5)
            torch.library.opcheck(
                torch.ops.vfnet.varifocal_loss_backward.default, (grad, logits, targets, 0.75, 2.0, False, reduction)
            )

    def test_torch_compile_and_torchscript(self):
        logits, targets = make_inputs(6, 9, seed=7)

        def f(x, q):
            return torch.ops.vfnet.varifocal_loss(x, q, 0.75, 2.0, True, 2) * 2.0

        expected = f(logits, targets)
        torch.testing.assert_close(torch.compile(f, backend="aot_eager", fullgraph=True)(logits, targets), expected)
        torch.testing.assert_close(torch.jit.script(f)(logits, targets), expected)

    def test_bad_inputs(self):
        logits, targets = make_inputs(4, 5)
        with self.assertRaisesRegex(ValueError, "same shape"):
            varifocal_loss(logits, targets[:3])
        with self.assertRaisesRegex(ValueError, "unknown reduction"):
            varifocal_loss(logits, targets, reduction="max")
        op = torch.ops.vfnet.varifocal_loss
        with self.assertRaisesRegex(RuntimeError, "same shape"):
            op(logits, targets[:3], 0.75, 2.0, True, 2)
        with self.assertRaisesRegex(RuntimeError, "targets of the same dtype"):
            op(logits, targets.double(), 0.75, 2.0, True, 2)
        with self.assertRaisesRegex(RuntimeError, "floating-point logits"):
            op(logits.long(), targets.long(), 0.75, 2.0, True, 2)
        with self.assertRaisesRegex(RuntimeError, "gamma >= 0"):
            op(logits, targets, 0.75, -1.0, True, 2)
        with self.assertRaisesRegex(RuntimeError, "reduction 0 \\(none\\), 1 \\(mean\\) or 2 \\(sum\\)"):
            op(logits, targets, 0.75, 2.0, True, 3)
        with self.assertRaisesRegex(RuntimeError, "0-d grad"):
            torch.ops.vfnet.varifocal_loss_backward(torch.ones(4, 5), logits, targets, 0.75, 2.0, True, 2)


@needs_cuda
class VarifocalLossOpCUDATest(unittest.TestCase):
    def test_matches_cpu(self):
        logits, targets = make_inputs(2, 3000, 80, seed=10)
        for reduction in REDUCTIONS:
            for kwargs in ({}, {"iou_weighted": False, "gamma": 1.5}):
                with self.subTest(reduction=reduction, **kwargs):
                    loss, grad = loss_and_grad(varifocal_loss, logits, targets, reduction, **kwargs)
                    loss_c, grad_c = loss_and_grad(varifocal_loss, logits.cuda(), targets.cuda(), reduction, **kwargs)
                    torch.testing.assert_close(loss_c.cpu(), loss, rtol=1e-5, atol=1e-6)
                    torch.testing.assert_close(grad_c.cpu(), grad, rtol=1e-5, atol=1e-7)

    def test_gradcheck(self):
        logits, targets = make_inputs(4, 7, dtype=torch.float64, positive_fraction=0.4, device="cuda")
        for reduction in REDUCTIONS:
            x = logits.clone().requires_grad_()
            self.assertTrue(
                torch.autograd.gradcheck(lambda a: varifocal_loss(a, targets, reduction=reduction), (x,))
            )

    def test_half_and_bfloat16(self):
        # The reference is float32 on the same rounded inputs, so only the kernel's own rounding is
        # measured. A float16 sum of 800k terms (~5e5) is past float16's range (65504): "mean" there,
        # and "sum" on a size whose loss fits.
        cases = ((2, 5000, 80, "mean"), (2, 500, 80, "sum"))
        for *shape, reduction in cases:
            logits, targets = make_inputs(*shape, seed=11, device="cuda")
            for dtype in (torch.float16, torch.bfloat16):
                with self.subTest(dtype=dtype, reduction=reduction):
                    lo, ta = logits.to(dtype), targets.to(dtype)
                    loss, grad = loss_and_grad(varifocal_loss, lo, ta, reduction)
                    ref, grad_ref = loss_and_grad(varifocal_loss, lo.float(), ta.float(), reduction)
                    self.assertEqual(loss.dtype, dtype)
                    self.assertEqual(grad.dtype, dtype)
                    self.assertTrue(math.isfinite(loss.item()))
                    torch.testing.assert_close(loss.float(), ref, rtol=1e-2, atol=0)
                    # One unit in the last place relative, and float16's subnormal spacing (2^-24):
                    # the "mean" gradients (~1e-6) are subnormal in float16.
                    ulp, tiny = (2.0**-7, 0.0) if dtype == torch.bfloat16 else (2.0**-10, 2.0**-24)
                    torch.testing.assert_close(grad.float(), grad_ref, rtol=ulp, atol=tiny + 1e-4 * grad_ref.abs().max().item())

    def test_deterministic_and_empty(self):
        logits, targets = make_inputs(2, 20000, 80, seed=12, device="cuda")
        a = varifocal_loss(logits, targets)
        b = varifocal_loss(logits, targets)
        self.assertTrue(torch.equal(a, b))
        self.assertEqual(varifocal_loss(logits[:0], targets[:0]).item(), 0.0)

    def test_opcheck(self):
        logits, targets = make_inputs(6, 9, seed=13, device="cuda")
        for reduction in (0, 1, 2):
            torch.library.opcheck(
                torch.ops.vfnet.varifocal_loss.default,
                (logits.clone().requires_grad_(), targets, 0.75, 2.0, True, reduction),
            )


if __name__ == "__main__":
    unittest.main()
