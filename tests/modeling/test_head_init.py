"""The head's initialisation is the original VarifocalNet's (SPEC.md section 5), on the built head."""
import math
import unittest

import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.layers import ShapeSpec

from vfnet import VFNetHead
from vfnet.layers import ModulatedDeformConv2d
from vfnet_test_utils import REPO_ROOT


def build_head(dcn_on_last_conv: bool, channels: int = 256, seed: int = 0) -> VFNetHead:
    torch.manual_seed(seed)
    return VFNetHead(
        input_shape=[ShapeSpec(channels=channels, stride=s) for s in (8, 16, 32, 64, 128)],
        num_classes=80,
        feat_channels=channels,
        stacked_convs=3,
        dcn_on_last_conv=dcn_on_last_conv,
    )


class HeadInitTest(unittest.TestCase):
    def assert_normal_001(self, weight, name):
        # N(0, 0.01) over >= 9k values: the sample std is within 3% of 0.01 and the mean near 0
        self.assertAlmostEqual(weight.std().item(), 0.01, delta=3e-4, msg=name)
        self.assertLess(abs(weight.mean().item()), 3e-4, name)

    def test_reference_init_with_dcn_on_last_conv(self):
        head = build_head(dcn_on_last_conv=True)
        normal = [
            "cls_subnet.0", "cls_subnet.1", "bbox_subnet.0", "bbox_subnet.1", "bbox_init_conv", "bbox_init_pred",
            "bbox_refine_dconv", "bbox_refine_pred", "cls_dconv", "cls_score",
        ]
        modules = dict(head.named_modules())
        for name in normal:
            self.assert_normal_001(modules[name].weight.detach(), name)
            bias = modules[name].bias
            if bias is not None and name != "cls_score":
                self.assertEqual(bias.abs().sum().item(), 0.0, name)
        prior_bias = -math.log((1 - 0.01) / 0.01)
        torch.testing.assert_close(head.cls_score.bias.detach(), torch.full((80,), prior_bias))
        # the DCNv2 tower convs keep mmcv's init: uniform in +-1/sqrt(256 * 9), offsets and mask at zero
        bound = 1 / math.sqrt(256 * 9)
        for tower in (head.cls_subnet, head.bbox_subnet):
            dcn = tower[-1]
            self.assertIsInstance(dcn, ModulatedDeformConv2d)
            w = dcn.weight.detach()
            self.assertLessEqual(w.abs().max().item(), bound)
            self.assertAlmostEqual(w.std().item(), bound / math.sqrt(3), delta=0.03 * bound)
            self.assertEqual(dcn.conv_offset.weight.abs().sum().item(), 0.0)
            self.assertEqual(dcn.conv_offset.bias.abs().sum().item(), 0.0)
        for scale in list(head.bbox_init_scales) + list(head.bbox_refine_scales):
            self.assertEqual(scale.scale.item(), 1.0)

    def test_config_built_dcn_model_keeps_zero_offsets(self):
        cfg = LazyConfig.load(f"{REPO_ROOT}/configs/COCO-Detection/vfnet_R_50_FPN_MDCONV_c3-c5_MS_2x.py")
        torch.manual_seed(0)
        model = instantiate(cfg.model)
        offsets = {n: p for n, p in model.named_parameters() if ".conv_offset." in n}
        self.assertTrue(any(n.startswith("head.") for n in offsets))
        self.assertTrue(any(n.startswith("backbone.bottom_up.res5") for n in offsets))
        for name, p in offsets.items():
            self.assertEqual(p.abs().sum().item(), 0.0, name)
        self.assert_normal_001(model.head.cls_dconv.weight.detach(), "cls_dconv")


if __name__ == "__main__":
    unittest.main()


class HeadMemoryFormatTest(unittest.TestCase):
    def test_cpu_channels_last_gives_the_same_outputs(self):
        # The head's default on the CPU: channels-last copies of the features (faster oneDNN
        # convs); the outputs equal the NCHW head's within float rounding, and are channels-last
        # unless a DCNv2 tower conv (whose kernel returns NCHW) comes first.
        g = torch.Generator().manual_seed(0)
        features = [torch.randn(2, 64, 192 // s, 160 // s, generator=g) for s in (8, 16, 32, 64, 128)]
        for dcn in (False, True):
            head = build_head(dcn_on_last_conv=dcn, channels=64, seed=3)
            with torch.no_grad():
                for conv in [m for m in head.modules() if isinstance(m, torch.nn.Conv2d)]:
                    conv.weight.normal_(0, 0.05)  # a head whose outputs vary (not the init's ~0)
            self.assertTrue(head.cpu_channels_last)
            with torch.no_grad():
                fast = head(features)
                head.cpu_channels_last = False
                plain = head(features)
            for fast_level, plain_level in zip(fast, plain):
                for a, b in zip(fast_level, plain_level):
                    self.assertTrue(b.is_contiguous())
                    if not dcn:
                        self.assertTrue(a.is_contiguous(memory_format=torch.channels_last))
                    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
