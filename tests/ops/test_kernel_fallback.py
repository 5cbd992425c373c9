"""Per-device choice between the kernels of vfnet._C and the pure-PyTorch fallbacks
(vfnet.ops.use_fused_kernels), tested without a GPU: the dispatcher is made to report no kernel
for a device (as for CUDA tensors with a CPU-only build), or the GPU is made one the build has no
code for."""
import contextlib
import types
import unittest
import warnings
from unittest import mock

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from vfnet.ops import HAS_C_EXTENSION, _extension, modulated_deform_conv, star_deform_conv, varifocal_loss

needs_ext = unittest.skipUnless(HAS_C_EXTENSION, "vfnet._C is not built")


class OpRecorder(TorchDispatchMode):
    """Records the names of the ops dispatched while it is active."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.name())
        return func(*args, **(kwargs or {}))


def dispatcher_without(key):
    """A stand-in for torch._C._dispatch_has_kernel_for_dispatch_key that reports no vfnet kernel
    for the dispatch key `key`."""
    real = torch._C._dispatch_has_kernel_for_dispatch_key

    def has_kernel(name, dispatch_key):
        if name.startswith("vfnet::") and str(dispatch_key) == key:
            return False
        return real(name, dispatch_key)

    return has_kernel


def run_ops():
    """star_deform_conv, modulated_deform_conv (stride 2, 2 groups) and varifocal_loss forward and
    backward on small CPU inputs; returns the outputs, the gradients and the names of the ops
    that ran."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 6, generator=g, requires_grad=True)
    ltrb = (torch.rand(2, 4, 5, 6, generator=g) * 4).requires_grad_()
    weight = torch.randn(4, 3, 3, 3, generator=g, requires_grad=True)
    offset = torch.randn(2, 18, 3, 3, generator=g).mul(2).requires_grad_()
    mask = torch.rand(2, 9, 3, 3, generator=g, requires_grad=True)
    dcn_weight = torch.randn(4, 2, 3, 3, generator=g, requires_grad=True)
    targets = (torch.rand(2, 4, 3, 3, generator=g) > 0.8) * torch.rand(2, 4, 3, 3, generator=g)
    with OpRecorder() as recorder:
        out = star_deform_conv(x, ltrb, weight)
        out = modulated_deform_conv(out, offset, mask, dcn_weight, stride=2)
        loss = varifocal_loss(out, targets)
        grads = torch.autograd.grad(loss, (x, ltrb, weight, offset, mask, dcn_weight))
    return out, loss, grads, recorder.names


@needs_ext
class FallbackTest(unittest.TestCase):
    def setUp(self):
        # A fresh cache of the per-device decisions and warnings for each test.
        patcher = mock.patch.multiple(_extension, _NO_KERNEL_REASON={}, _WARNED_DEVICE_TYPES=set())
        patcher.start()
        self.addCleanup(patcher.stop)

    def test_kernels_used_when_the_dispatcher_has_them(self):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no warning either
            _, _, _, names = run_ops()
        self.assertIn("vfnet::star_deform_conv", names)
        self.assertIn("vfnet::modulated_deform_conv", names)
        self.assertIn("vfnet::varifocal_loss", names)
        self.assertNotIn("torchvision::deform_conv2d", names)

    def test_fallback_without_a_kernel_for_the_device(self):
        with mock.patch.object(torch._C, "_dispatch_has_kernel_for_dispatch_key", dispatcher_without("CPU")):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                out_fb, loss_fb, grads_fb, names_fb = run_ops()
                run_ops()  # a second time: no second warning
        _extension._NO_KERNEL_REASON.clear()
        out, loss, grads, _ = run_ops()
        self.assertFalse([n for n in names_fb if n.startswith("vfnet::")], names_fb)
        self.assertIn("torchvision::deform_conv2d", names_fb)
        ours = [w for w in caught if "vfnet._C has no CPU kernels" in str(w.message)]
        self.assertEqual(len(ours), 1, [str(w.message) for w in caught])
        self.assertIs(ours[0].category, RuntimeWarning)
        self.assertIn("pure-PyTorch", str(ours[0].message))
        self.assertIn("on cpu tensors", str(ours[0].message))
        # The fallbacks compute the same thing.
        torch.testing.assert_close(out_fb, out, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(loss_fb, loss, rtol=1e-5, atol=1e-5)
        for a, b in zip(grads_fb, grads):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)

    def test_decision_is_per_device(self):
        # No CUDA kernels (a CPU-only build): CUDA tensors take the fallback, CPU ones the kernels.
        with mock.patch.object(torch._C, "_dispatch_has_kernel_for_dispatch_key", dispatcher_without("CUDA")):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self.assertFalse(_extension.use_fused_kernels(torch.device("cuda", 0)))
                self.assertFalse(_extension.use_fused_kernels(torch.device("cuda", 1)))
                self.assertTrue(_extension.use_fused_kernels(torch.device("cpu")))
        self.assertEqual(len(caught), 1, [str(w.message) for w in caught])
        message = str(caught[0].message)
        for part in ("vfnet._C has no CUDA kernels", "built without CUDA", "WITH_CUDA=1", "on cuda tensors"):
            self.assertIn(part, message)
        # The answer is cached per device: the dispatcher is not asked again.
        with mock.patch.object(torch._C, "_dispatch_has_kernel_for_dispatch_key", side_effect=AssertionError):
            self.assertFalse(_extension.use_fused_kernels(torch.device("cuda", 0)))
            self.assertTrue(_extension.use_fused_kernels(torch.device("cpu")))

    def test_gpu_the_build_has_no_code_for(self):
        # A build with CUDA kernels for 7.5 ... 12.0+PTX on a V100 (7.0): fallback, and the
        # warning says how to build for it; an L4 (8.9) runs the 8.6 cubin.
        fake_build = types.SimpleNamespace(cuda_arch_list="7.5,8.0,8.6,9.0,10.0,12.0+PTX")
        gpus = {0: ((7, 0), "Tesla V100-SXM2-32GB"), 1: ((8, 9), "NVIDIA L4")}
        patches = [
            mock.patch.object(_extension, "_C", fake_build),
            mock.patch.object(torch._C, "_dispatch_has_kernel_for_dispatch_key", return_value=True),
            mock.patch.object(torch.cuda, "get_device_capability", lambda d: gpus[d.index][0]),
            mock.patch.object(torch.cuda, "get_device_name", lambda d: gpus[d.index][1]),
        ]
        with contextlib.ExitStack() as stack:
            for patch in patches:
                stack.enter_context(patch)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self.assertFalse(_extension.use_fused_kernels(torch.device("cuda", 0)))
                self.assertTrue(_extension.use_fused_kernels(torch.device("cuda", 1)))
        self.assertEqual(len(caught), 1)
        message = str(caught[0].message)
        for part in ("7.5;8.0;8.6;9.0;10.0;12.0+PTX", "Tesla V100", "compute capability 7.0"):
            self.assertIn(part, message)
        self.assertIn("TORCH_CUDA_ARCH_LIST=7.0 make install", message)


if __name__ == "__main__":
    unittest.main()
