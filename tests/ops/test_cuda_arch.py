"""Tests of vfnet.ops.cuda_arch: the default CUDA architectures of the build (from a given torch
arch list and nvcc's lists, no GPU needed) and which GPUs a list runs on (CUDA's compatibility
rules: a cubin runs on later minor versions of its major version, PTX on every later GPU)."""
import unittest

import torch

from vfnet.ops import cuda_arch
from vfnet.ops.cuda_arch import Arch, default_arch_list, gpus_covered, parse_arch_list, runs_on

# What `nvcc --list-gpu-code` / `--list-gpu-arch` print: CUDA 13.0 (as installed here), and a
# CUDA 12.x list (with an arch-specific entry, which must count as its generic architecture).
NVCC_13_0 = "sm_75 sm_80 sm_86 sm_87 sm_88 sm_89 sm_90 sm_100 sm_110 sm_103 sm_120 sm_121".split()
NVCC_13_0_PTX = [c.replace("sm_", "compute_") for c in NVCC_13_0]
NVCC_12_6 = "sm_50 sm_52 sm_53 sm_60 sm_61 sm_62 sm_70 sm_72 sm_75 sm_80 sm_86 sm_87 sm_89 sm_90".split()
NVCC_12_6 += ["sm_90a"]
NVCC_12_6_PTX = [c.replace("sm_", "compute_") for c in NVCC_12_6]
# torch.cuda.get_arch_list() of torch 2.14.1+cu130 (as installed here), and of a cu126 wheel.
TORCH_CU130 = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]
TORCH_CU126 = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]


class DefaultArchListTest(unittest.TestCase):
    def test_cuda13_wheel_and_nvcc(self):
        self.assertEqual(
            default_arch_list(TORCH_CU130, NVCC_13_0, NVCC_13_0_PTX), "7.5;8.0;8.6;9.0;10.0;12.0+PTX"
        )

    def test_cuda12_wheel_keeps_volta(self):
        self.assertEqual(
            default_arch_list(TORCH_CU126, NVCC_12_6, NVCC_12_6_PTX), "5.0;6.0;7.0;7.5;8.0;8.6;9.0+PTX"
        )

    def test_limited_to_what_nvcc_compiles(self):
        # A wheel with Blackwell cubins and an older 12.x nvcc without them: up to 9.0, whose PTX
        # covers the newer GPUs.
        archs = default_arch_list(TORCH_CU126 + ["sm_100", "sm_120"], NVCC_12_6, NVCC_12_6_PTX)
        self.assertEqual(archs, "5.0;6.0;7.0;7.5;8.0;8.6;9.0+PTX")
        self.assertTrue(runs_on(parse_arch_list(archs), (12, 0)))

    def test_torch_ptx_and_arch_specific_entries(self):
        # compute_* entries are torch's own PTX, not cubins; sm_90a counts as 9.0.
        self.assertEqual(
            default_arch_list(["sm_80", "sm_90a", "compute_90"], NVCC_12_6, NVCC_12_6_PTX), "8.0;9.0+PTX"
        )

    def test_no_ptx_when_nvcc_has_none(self):
        self.assertEqual(default_arch_list(["sm_80", "sm_90"], ["sm_80", "sm_90"], []), "8.0;9.0")

    def test_nothing_in_common(self):
        with self.assertRaisesRegex(ValueError, "none of torch's CUDA architectures.*TORCH_CUDA_ARCH_LIST"):
            default_arch_list(["sm_50", "sm_70"], NVCC_13_0, NVCC_13_0_PTX)
        with self.assertRaisesRegex(ValueError, r"\(none\)"):
            default_arch_list([], NVCC_13_0, NVCC_13_0_PTX)


class ArchListTest(unittest.TestCase):
    def test_parse_and_format(self):
        archs = parse_arch_list(" 7.5;8.0 9.0a,12.0+PTX ")
        self.assertEqual(
            archs, [Arch((7, 5)), Arch((8, 0)), Arch((9, 0), specific=True), Arch((12, 0), ptx=True)]
        )
        self.assertEqual(cuda_arch.format_arch_list(archs), "7.5;8.0;9.0a;12.0+PTX")
        self.assertEqual(parse_arch_list(""), [])
        for bad in ("Ampere", "native", "8", "sm_80", "8.0+ptx"):
            with self.subTest(bad=bad):
                with self.assertRaisesRegex(ValueError, "cannot read the CUDA architecture"):
                    parse_arch_list(f"7.5;{bad}")

    def test_runs_on(self):
        archs = parse_arch_list("7.5;8.0;8.6;9.0;10.0;12.0+PTX")
        cases = {
            (7, 0): False,  # V100: no Volta cubin, PTX only runs on later GPUs
            (7, 5): True,
            (8, 9): True,  # L4 runs the 8.6 cubin
            (10, 3): True,  # B300 runs the 10.0 cubin
            (11, 0): False,  # no 11.x cubin, and the PTX is 12.0
            (12, 1): True,
            (13, 0): True,  # through the 12.0 PTX
        }
        for capability, expected in cases.items():
            with self.subTest(capability=capability):
                self.assertEqual(runs_on(archs, capability), expected)
        # Without PTX a newer major version has no code; 9.0a runs on 9.0 only.
        self.assertFalse(runs_on(parse_arch_list("8.0;9.0"), (10, 0)))
        self.assertTrue(runs_on(parse_arch_list("9.0a"), (9, 0)))
        self.assertFalse(runs_on(parse_arch_list("9.0a+PTX"), (10, 0)))
        # The former default of setup.py, "8.0;9.0+PTX": nothing for a T4; the 8.0 cubin runs on 8.6.
        self.assertFalse(runs_on(parse_arch_list("8.0;9.0+PTX"), (7, 5)))
        self.assertTrue(runs_on(parse_arch_list("8.0;9.0+PTX"), (8, 6)))

    def test_gpus_covered(self):
        runs, does_not = gpus_covered(parse_arch_list("7.5;8.0;8.6;9.0;10.0;12.0+PTX"))
        self.assertEqual(does_not, ["P100 (6.0)", "P4, P40, GTX 10xx (6.1)", "V100 (7.0)"])
        self.assertIn("T4, RTX 20xx (7.5)", runs)
        self.assertIn("H100, H200, GH200 (9.0)", runs)
        self.assertEqual(len(runs) + len(does_not), len(cuda_arch.GPU_FAMILIES))


class BuiltExtensionTest(unittest.TestCase):
    def test_extension_records_its_architectures(self):
        from vfnet.ops import HAS_C_EXTENSION

        if not HAS_C_EXTENSION:
            self.skipTest("vfnet._C is not built")
        from vfnet import _C

        archs = parse_arch_list(_C.cuda_arch_list)
        has_cuda = torch._C._dispatch_has_kernel_for_dispatch_key("vfnet::star_deform_conv", "CUDA")
        self.assertEqual(bool(archs), has_cuda, _C.cuda_arch_list)
        if torch.cuda.is_available() and has_cuda:
            self.assertTrue(runs_on(archs, torch.cuda.get_device_capability()))


def test_extension_built_with_openmp():
    # Without OpenMP, ATen's at::parallel_for in the extension's CPU kernels runs on one thread.
    from vfnet.ops import HAS_C_EXTENSION

    if not HAS_C_EXTENSION:
        import pytest

        pytest.skip("vfnet._C is not built")
    import vfnet._C as ext

    assert ext.openmp == 1


if __name__ == "__main__":
    unittest.main()
