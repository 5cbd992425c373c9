"""
The bottom-ups and necks of the model zoo: ResNet/ResNeXt with DCNv2 stages, Res2Net, PAFPN-X, the
frozen-statistics BN, and the ImageNet checkpoint conversion, each against an independent
computation (torchvision's models and ops, or the layer's definition written out with
torch.nn.functional).
"""
import os
import subprocess
import sys
import tempfile
import unittest

import torch
import torchvision
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import ResNet, build_backbone
from detectron2.modeling.backbone.resnet import BasicStem, BottleneckBlock
from torch.nn import functional as F
from torchvision.ops import deform_conv2d

from vfnet import add_vfnet_config
from vfnet.resnet import DeformBottleneckBlock, make_resnet_stages
from vfnet.layers import FrozenStatsBatchNorm2d, ModulatedDeformConv2d, resolve_norm
from vfnet.mmdet_checkpoint import UnsupportedCheckpointError, convert_imagenet_state_dict, converted_checkpoint
from vfnet.pafpnx import PAFPNX
from vfnet.res2net import Bottle2neckBlock, Res2NetStem, make_res2net_stages
from vfnet_test_utils import REPO_ROOT


def randomize_(module: torch.nn.Module, seed: int = 0, offset_std: float = 0.05) -> torch.nn.Module:
    """Random weights everywhere (offset convs small, BN statistics plausible), so that every path matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            std = offset_std if "conv_offset" in name else 0.1
            p.copy_(torch.randn(p.shape, generator=g) * std + (1.0 if name.endswith("norm.weight") else 0.0))
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return module


def frozen_bn(x, norm):
    return F.batch_norm(x, norm.running_mean, norm.running_var, norm.weight, norm.bias, training=False, eps=norm.eps)


def dcn_v2(x, layer, stride=1):
    """DCNv2 as mmcv defines it: offsets = the first 18 offset-conv channels, mask = sigmoid of the last 9."""
    om = F.conv2d(x, layer.conv_offset.weight, layer.conv_offset.bias, stride=stride, padding=1)
    return deform_conv2d(x, om[:, :18], layer.weight, stride=stride, padding=1, mask=om[:, 18:].sigmoid())


class FrozenStatsBatchNormTest(unittest.TestCase):
    def test_statistics_frozen_affine_trained(self):
        torch.manual_seed(0)
        norm = randomize_(torch.nn.Sequential(FrozenStatsBatchNorm2d(4)))[0]
        self.assertEqual({n for n, _ in norm.named_parameters()}, {"weight", "bias"})
        self.assertEqual(set(norm.state_dict()), {"weight", "bias", "running_mean", "running_var"})
        norm.train()
        x = torch.randn(3, 4, 5, 5, requires_grad=True)
        stats = (norm.running_mean.clone(), norm.running_var.clone())
        out = norm(x)
        # training mode still normalises with the running statistics and never updates them
        expected = (x - stats[0][:, None, None]) / torch.sqrt(stats[1][:, None, None] + 1e-5)
        expected = expected * norm.weight[:, None, None] + norm.bias[:, None, None]
        torch.testing.assert_close(out, expected)
        out.sum().backward()
        self.assertTrue(torch.equal(norm.running_mean, stats[0]) and torch.equal(norm.running_var, stats[1]))
        # d(sum)/d(bias) = number of elements per channel; d/d(weight) = sum of the normalised input
        torch.testing.assert_close(norm.bias.grad, torch.full((4,), 75.0))
        normalised = (x.detach() - stats[0][:, None, None]) / torch.sqrt(stats[1][:, None, None] + 1e-5)
        torch.testing.assert_close(norm.weight.grad, normalised.sum(dim=(0, 2, 3)))

    def test_loads_frozen_bn_checkpoints_and_freezes_with_its_stage(self):
        source = randomize_(torch.nn.Sequential(FrozenBatchNorm2d(3)))
        target = torch.nn.Sequential(FrozenStatsBatchNorm2d(3))
        target.load_state_dict(source.state_dict())
        x = torch.randn(2, 3, 4, 4)
        torch.testing.assert_close(target(x), source(x))
        stem = BasicStem(3, 8, norm=resolve_norm("FrozenStatsBN"))
        stem.freeze()
        self.assertFalse(any(p.requires_grad for p in stem.parameters()))

    def test_resolve_norm(self):
        self.assertIs(resolve_norm("FrozenStatsBN"), FrozenStatsBatchNorm2d)
        for name in ("BN", "FrozenBN", "GN", "", None):
            self.assertEqual(resolve_norm(name), name)


class ModulatedDeformConvGeometryTest(unittest.TestCase):
    def test_stride_and_groups_match_torchvision(self):
        torch.manual_seed(0)
        layer = randomize_(ModulatedDeformConv2d(8, 12, 3, stride=2, groups=4))
        self.assertEqual(tuple(layer.weight.shape), (12, 2, 3, 3))
        self.assertEqual(layer.conv_offset.stride, (2, 2))
        x = torch.randn(2, 8, 9, 11)
        expected = dcn_v2(x, layer, stride=2)
        out = layer(x)
        self.assertEqual(tuple(out.shape), (2, 12, 5, 6))
        torch.testing.assert_close(out, expected)

    def test_mmcv_initialisation(self):
        torch.manual_seed(0)
        layer = ModulatedDeformConv2d(64, 64, 3, groups=32)
        bound = 1 / (64 * 9) ** 0.5  # mmcv: the full input channels, not per group
        self.assertLessEqual(layer.weight.abs().max().item(), bound)
        self.assertGreater(layer.weight.abs().max().item(), 0.9 * bound)
        self.assertEqual(layer.conv_offset.weight.abs().sum().item(), 0.0)
        self.assertEqual(layer.conv_offset.bias.abs().sum().item(), 0.0)

    def test_bad_groups(self):
        with self.assertRaisesRegex(ValueError, "not divisible by groups=3"):
            ModulatedDeformConv2d(8, 8, 3, groups=3)


class DeformBottleneckTest(unittest.TestCase):
    def test_starts_as_a_bottleneck_with_half_a_3x3_conv(self):
        # zero offset convs: offsets 0, mask sigmoid(0) = 1/2
        torch.manual_seed(0)
        block = DeformBottleneckBlock(16, 32, bottleneck_channels=8, stride=2, num_groups=2, norm="FrozenBN")
        plain = BottleneckBlock(16, 32, bottleneck_channels=8, stride=2, num_groups=2, norm="FrozenBN")
        plain.load_state_dict({k: v for k, v in block.state_dict().items() if "conv_offset" not in k})
        with torch.no_grad():
            plain.conv2.weight.mul_(0.5)
        x = torch.randn(2, 16, 10, 14)
        torch.testing.assert_close(block(x), plain(x), rtol=1e-5, atol=1e-5)

    def test_forward_with_offsets(self):
        torch.manual_seed(0)
        block = randomize_(DeformBottleneckBlock(16, 32, bottleneck_channels=8, stride=2, norm="FrozenBN"))
        x = torch.randn(1, 16, 10, 14)
        out = F.relu(frozen_bn(F.conv2d(x, block.conv1.weight), block.conv1.norm))
        out = F.relu(frozen_bn(dcn_v2(out, block.conv2, stride=2), block.conv2.norm))
        out = frozen_bn(F.conv2d(out, block.conv3.weight), block.conv3.norm)
        shortcut = frozen_bn(F.conv2d(x, block.shortcut.weight, stride=2), block.shortcut.norm)
        torch.testing.assert_close(block(x), F.relu(out + shortcut))

    def test_stages(self):
        stages = make_resnet_stages(50, stem_channels=16, deform_on_per_stage=[False, True, True, True])
        self.assertEqual(
            [[type(b) for b in s] for s in stages],
            [[BottleneckBlock] * 3, [DeformBottleneckBlock] * 4, [DeformBottleneckBlock] * 6, [DeformBottleneckBlock] * 3],
        )
        with self.assertRaisesRegex(ValueError, "4 entries"):
            make_resnet_stages(50, deform_on_per_stage=[True])
        with self.assertRaisesRegex(ValueError, "bottleneck blocks"):
            make_resnet_stages(18, deform_on_per_stage=[False, True, True, True])


def res2net_block_reference(block: Bottle2neckBlock, x: torch.Tensor, deform: bool) -> torch.Tensor:
    """The Res2Net bottleneck written out from its definition (Gao et al.; MMDetection's Bottle2neck)."""
    stride = block.stride
    out = F.relu(frozen_bn(F.conv2d(x, block.conv1.weight), block.conv1.norm))
    splits = list(out.split(block.width, dim=1))
    pieces, previous = [], None
    for i, conv in enumerate(block.convs):
        inp = splits[i] if (i == 0 or block.stage_type == "stage") else previous + splits[i]
        y = dcn_v2(inp, conv, stride) if deform else F.conv2d(inp, conv.weight, stride=stride, padding=1)
        previous = F.relu(frozen_bn(y, conv.norm))
        pieces.append(previous)
    last = splits[-1]
    if block.stage_type == "stage" and stride != 1:
        last = F.avg_pool2d(last, 3, stride, padding=1)  # count_include_pad=True (nn.AvgPool2d default)
    out = frozen_bn(F.conv2d(torch.cat(pieces + [last], dim=1), block.conv3.weight), block.conv3.norm)
    if block.shortcut is None:
        shortcut = x
    else:
        pooled = x if stride == 1 else F.avg_pool2d(x, stride, stride, ceil_mode=True, count_include_pad=False)
        shortcut = frozen_bn(F.conv2d(pooled, block.shortcut.weight), block.shortcut.norm)
    return F.relu(out + shortcut)


class Res2NetTest(unittest.TestCase):
    def test_blocks_match_their_definition(self):
        cases = [
            dict(stage_type="stage", stride=2, in_channels=16, deform=False),
            dict(stage_type="stage", stride=2, in_channels=16, deform=True),
            dict(stage_type="stage", stride=1, in_channels=16, deform=False),
            dict(stage_type="normal", stride=1, in_channels=32, deform=False),
            dict(stage_type="normal", stride=1, in_channels=32, deform=True),
        ]
        for case in cases:
            with self.subTest(**case):
                torch.manual_seed(0)
                block = randomize_(
                    Bottle2neckBlock(
                        case["in_channels"], 32, width=6, scales=4, stride=case["stride"],
                        stage_type=case["stage_type"], deform=case["deform"], norm="FrozenBN",
                    )
                )
                x = torch.randn(2, case["in_channels"], 11, 13)  # odd sizes: ceil-mode pooling matters
                out = block(x)
                self.assertEqual(tuple(out.shape), (2, 32, -(-11 // case["stride"]), -(-13 // case["stride"])))
                torch.testing.assert_close(out, res2net_block_reference(block, x, case["deform"]))

    def test_stem(self):
        torch.manual_seed(0)
        stem = randomize_(Res2NetStem(3, 16, norm="FrozenBN"))
        x = torch.randn(1, 3, 32, 40)
        y = F.relu(frozen_bn(F.conv2d(x, stem.conv1.weight, stride=2, padding=1), stem.conv1.norm))
        y = F.relu(frozen_bn(F.conv2d(y, stem.conv2.weight, padding=1), stem.conv2.norm))
        y = F.relu(frozen_bn(F.conv2d(y, stem.conv3.weight, padding=1), stem.conv3.norm))
        expected = F.max_pool2d(y, 3, 2, padding=1)
        torch.testing.assert_close(stem(x), expected)
        self.assertEqual([stem.conv1.out_channels, stem.conv2.out_channels, stem.conv3.out_channels], [8, 8, 16])

    def test_res2net_101_26w_4s_widths(self):
        stages = make_res2net_stages(101, deform_on_per_stage=[False, True, True, True])
        self.assertEqual([len(s) for s in stages], [3, 4, 23, 3])
        self.assertEqual([s[0].width for s in stages], [26, 52, 104, 208])
        self.assertEqual([s[0].out_channels for s in stages], [256, 512, 1024, 2048])
        self.assertEqual([s[0].stride for s in stages], [1, 2, 2, 2])
        self.assertEqual([type(s[1].convs[0]).__name__ for s in stages], ["Conv2d"] + ["ModulatedDeformConv2d"] * 3)
        backbone = ResNet(Res2NetStem(3, 64), stages, out_features=["res3", "res4", "res5"], freeze_at=2)
        shapes = backbone.output_shape()
        self.assertEqual([(shapes[f].channels, shapes[f].stride) for f in ("res3", "res4", "res5")], [(512, 8), (1024, 16), (2048, 32)])

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "scales must be >= 2"):
            Bottle2neckBlock(8, 8, width=2, scales=1)
        with self.assertRaisesRegex(ValueError, "only the first"):
            Bottle2neckBlock(8, 16, width=2, stage_type="normal")
        with self.assertRaisesRegex(ValueError, "depth must be one of"):
            make_res2net_stages(34)


class _FakeBottomUp(torch.nn.Module):
    """A 'bottom-up' that returns given feature maps (C3-C5) whatever its input."""

    def __init__(self, features):
        super().__init__()
        self.features = features

    def forward(self, x):
        return self.features

    def output_shape(self):
        return {k: ShapeSpec(channels=v.shape[1], stride=s) for (k, v), s in zip(self.features.items(), (8, 16, 32))}


class PAFPNXTest(unittest.TestCase):
    def test_matches_its_definition(self):
        from detectron2.modeling import Backbone

        torch.manual_seed(0)
        feats = {"res3": torch.randn(1, 16, 20, 24), "res4": torch.randn(1, 24, 10, 12), "res5": torch.randn(1, 40, 5, 6)}
        bottom_up = type("FakeBackbone", (_FakeBottomUp, Backbone), {})(feats)
        neck = randomize_(PAFPNX(bottom_up, ["res3", "res4", "res5"], out_channels=64, norm="GN"))
        out = neck(torch.zeros(1, 3, 160, 192))

        def gn(x, conv):
            return F.group_norm(x, 32, conv.norm.weight, conv.norm.bias)

        lat = [F.conv2d(feats[f], getattr(neck, f"fpn_lateral{l}").weight, getattr(neck, f"fpn_lateral{l}").bias)
               for l, f in zip((3, 4, 5), ("res3", "res4", "res5"))]
        lat[1] = lat[1] + F.interpolate(lat[2], scale_factor=2, mode="nearest")
        lat[0] = lat[0] + F.interpolate(lat[1], scale_factor=2, mode="nearest")
        inter = [gn(F.conv2d(x, getattr(neck, f"fpn_output{l}").weight, padding=1), getattr(neck, f"fpn_output{l}"))
                 for l, x in zip((3, 4, 5), lat)]
        for i, l in ((1, 4), (2, 5)):
            down = getattr(neck, f"pa_downsample{l}")
            inter[i] = inter[i] + gn(F.conv2d(inter[i - 1], down.weight, stride=2, padding=1), down)
        outs = [gn(dcn_v2(x, getattr(neck, f"pa_output{l}")), getattr(neck, f"pa_output{l}")) for l, x in zip((3, 4, 5), inter)]
        p6 = gn(F.conv2d(outs[-1], neck.top_block.p6.weight, stride=2, padding=1), neck.top_block.p6)
        p7 = gn(F.conv2d(F.relu(p6), neck.top_block.p7.weight, stride=2, padding=1), neck.top_block.p7)
        expected = dict(zip(["p3", "p4", "p5", "p6", "p7"], outs + [p6, p7]))
        self.assertEqual(list(out), list(expected))
        for name in expected:
            torch.testing.assert_close(out[name], expected[name], msg=name)
        self.assertEqual({k: (v.channels, v.stride) for k, v in neck.output_shape().items()},
                         {"p3": (64, 8), "p4": (64, 16), "p5": (64, 32), "p6": (64, 64), "p7": (64, 128)})
        self.assertEqual(neck.size_divisibility, 32)
        # no bias where a norm follows; the laterals have one and no norm
        self.assertIsNone(neck.fpn_output3.bias)
        self.assertIsNone(neck.pa_output3.bias)
        self.assertIsNotNone(neck.fpn_lateral3.bias)
        self.assertIsNone(neck.fpn_lateral3.norm)

    def test_reference_initialisation(self):
        torch.manual_seed(0)
        feats = {"res3": torch.zeros(1, 16, 8, 8), "res4": torch.zeros(1, 24, 4, 4), "res5": torch.zeros(1, 40, 2, 2)}
        from detectron2.modeling import Backbone

        neck = PAFPNX(type("FakeBackbone", (_FakeBottomUp, Backbone), {})(feats), ["res3", "res4", "res5"], 64)
        # Xavier-uniform on every nn.Conv2d (the DCNv2 offset convs too), zero biases
        for conv in (neck.fpn_lateral3, neck.fpn_output4, neck.pa_downsample5, neck.top_block.p7, neck.pa_output3.conv_offset):
            fan_in, fan_out = conv.weight[0].numel(), conv.weight.shape[0] * conv.weight[0, 0].numel()
            bound = (6 / (fan_in + fan_out)) ** 0.5
            self.assertLessEqual(conv.weight.abs().max().item(), bound, conv)
            self.assertGreater(conv.weight.abs().max().item(), 0.9 * bound, conv)
        self.assertEqual(neck.fpn_lateral3.bias.abs().sum().item(), 0.0)
        self.assertEqual(neck.pa_output3.conv_offset.bias.abs().sum().item(), 0.0)
        self.assertLessEqual(neck.pa_output3.weight.abs().max().item(), 1 / (64 * 9) ** 0.5)  # mmcv's DCN init

    def test_bad_inputs(self):
        from detectron2.modeling import Backbone

        feats = {"res3": torch.zeros(1, 16, 8, 8), "res4": torch.zeros(1, 24, 4, 4), "res5": torch.zeros(1, 40, 2, 2)}
        bottom_up = type("FakeBackbone", (_FakeBottomUp, Backbone), {})(feats)
        with self.assertRaisesRegex(ValueError, r"\['res6'\] are not outputs"):
            PAFPNX(bottom_up, ["res5", "res6"], 64)
        with self.assertRaisesRegex(ValueError, "must double"):
            PAFPNX(bottom_up, ["res3", "res5"], 64)


def _yaml_cfg(**resnets):
    cfg = get_cfg()
    add_vfnet_config(cfg)
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = 16
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    for k, v in resnets.items():
        setattr(cfg.MODEL.RESNETS, k, v)
    return cfg


class YamlBackboneBuildersTest(unittest.TestCase):
    def test_deformable_resnet(self):
        cfg = _yaml_cfg(DEFORM_ON_PER_STAGE=[False, True, True, True], DEFORM_MODULATED=True, NORM="FrozenStatsBN")
        cfg.MODEL.BACKBONE.NAME = "build_vfnet_resnet_fpn_backbone"
        backbone = build_backbone(cfg)
        self.assertIsInstance(backbone.bottom_up.res3[0], DeformBottleneckBlock)
        self.assertNotIsInstance(backbone.bottom_up.res2[0], DeformBottleneckBlock)
        self.assertIsInstance(backbone.bottom_up.res4[0].conv2.norm, FrozenStatsBatchNorm2d)
        cfg.MODEL.RESNETS.DEFORM_MODULATED = False
        with self.assertRaisesRegex(ValueError, "DCNv2 with one deformable group"):
            build_backbone(cfg)

    def test_res2net_backbones(self):
        cfg = _yaml_cfg(DEFORM_ON_PER_STAGE=[False, False, True, True], DEFORM_MODULATED=True)
        cfg.MODEL.RES2NET.BASE_WIDTH = 6
        cfg.MODEL.BACKBONE.NAME = "build_vfnet_res2net_fpn_backbone"
        fpn = build_backbone(cfg)
        self.assertIsInstance(fpn.bottom_up.stem, Res2NetStem)
        self.assertEqual(fpn.bottom_up.res2[0].width, 6)
        self.assertIsInstance(fpn.bottom_up.res4[1].convs[0], ModulatedDeformConv2d)
        self.assertNotIsInstance(fpn.bottom_up.res3[1].convs[0], ModulatedDeformConv2d)
        cfg.MODEL.BACKBONE.NAME = "build_vfnet_res2net_pafpnx_backbone"
        cfg.MODEL.FPN.NORM = "GN"
        pafpnx = build_backbone(cfg)
        self.assertIsInstance(pafpnx, PAFPNX)
        out = pafpnx(torch.zeros(1, 3, 128, 192))
        self.assertEqual({k: tuple(v.shape) for k, v in out.items()},
                         {"p3": (1, 32, 16, 24), "p4": (1, 32, 8, 12), "p5": (1, 32, 4, 6), "p6": (1, 32, 2, 3), "p7": (1, 32, 1, 2)})


class ImageNetConversionTest(unittest.TestCase):
    """torchvision's classification ResNets, converted, give the same features in our backbones."""

    def check(self, tv_model, depth, via_cli=False, **stage_kwargs):
        randomize_(tv_model, seed=1)
        tv_model.eval()
        converted = convert_imagenet_state_dict(tv_model.state_dict())
        self.assertFalse(any(k.startswith("fc") or "num_batches_tracked" in k for k in converted))
        bottom_up = ResNet(
            BasicStem(3, 64, norm=resolve_norm("FrozenStatsBN")),
            make_resnet_stages(depth, norm="FrozenStatsBN", **stage_kwargs),
            out_features=["res3", "res4", "res5"],
            freeze_at=2,
        )
        model = torch.nn.Module()
        model.backbone = torch.nn.Module()
        model.backbone.bottom_up = bottom_up
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = os.path.join(tmp, "tv.pth"), os.path.join(tmp, "out.pth")
            if via_cli:
                torch.save(tv_model.state_dict(), src)
                tool = os.path.join(REPO_ROOT, "tools", "convert_imagenet_checkpoint.py")
                run = subprocess.run([sys.executable, tool, src, dst], capture_output=True, text=True)
                self.assertEqual(run.returncode, 0, run.stderr)
                self.assertIn("ResNet/ResNeXt backbone", run.stdout)
            else:
                torch.save(converted_checkpoint(converted), dst)
            DetectionCheckpointer(model).load(dst)
        self.assertEqual(set(converted), {f"backbone.bottom_up.{k}" for k in bottom_up.state_dict()})
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            t = tv_model.maxpool(tv_model.relu(tv_model.bn1(tv_model.conv1(x))))
            t = tv_model.layer1(t)
            c3 = tv_model.layer2(t)
            c5 = tv_model.layer4(tv_model.layer3(c3))
            ours = bottom_up(x)
        torch.testing.assert_close(ours["res3"], c3)
        torch.testing.assert_close(ours["res5"], c5)

    def test_resnet50(self):
        self.check(torchvision.models.resnet50(), 50, via_cli=True)

    def test_resnext50_32x4d(self):
        self.check(torchvision.models.resnext50_32x4d(), 50, num_groups=32, width_per_group=4)

    def test_res2net_layout_and_refusals(self):
        torch.manual_seed(0)
        bottom_up = ResNet(
            Res2NetStem(3, 16, norm="FrozenBN"),
            make_res2net_stages(50, base_channels=16, base_width=6, norm="FrozenBN"),
            out_features=["res5"],
        )
        inverse = {"conv1": "0", "conv2": "3", "conv3": "6"}
        inverse_norm = {"conv1": "1", "conv2": "4", "conv3": "7"}
        mmdet = {}
        for key, value in bottom_up.state_dict().items():
            parts = key.split(".")
            if parts[0] == "stem":
                index = (inverse_norm if parts[2] == "norm" else inverse)[parts[1]]
                name = f"stem.{index}.{parts[-1]}"
            else:
                stage, block, rest = int(parts[0][3:]) - 1, parts[1], parts[2:]
                if rest[0] == "convs":
                    rest = ["bns", rest[1], rest[-1]] if rest[2] == "norm" else rest
                elif rest[0] == "shortcut":
                    rest = ["downsample", "2" if rest[1] == "norm" else "1", rest[-1]]
                elif rest[1] == "norm":
                    rest = [f"bn{rest[0][-1]}", rest[-1]]
                name = ".".join([f"layer{stage}", block] + rest)
            mmdet[name] = value
        mmdet["fc.weight"] = torch.zeros(10, 128)
        converted = convert_imagenet_state_dict({f"backbone.{k}": v for k, v in mmdet.items()})
        self.assertEqual(set(converted), {f"backbone.bottom_up.{k}" for k in bottom_up.state_dict()})
        with self.assertRaisesRegex(UnsupportedCheckpointError, r"besides backbone\.\* it holds \['neck'\]"):
            convert_imagenet_state_dict({"backbone.conv1.weight": torch.zeros(1), "neck.x": torch.zeros(1)})
        with self.assertRaisesRegex(UnsupportedCheckpointError, "neither"):
            convert_imagenet_state_dict({"features.0.weight": torch.zeros(1)})  # a VGG


if __name__ == "__main__":
    unittest.main()


class FusedOpsSwitchTest(unittest.TestCase):
    def test_fused_ops_false_reaches_every_deformable_conv(self):
        from detectron2.config import LazyConfig, instantiate

        from vfnet.layers import StarDeformConv2d

        path = os.path.join(REPO_ROOT, "configs", "COCO-Detection", "vfnet_R_50_FPN_MDCONV_c3-c5_MS_2x.py")
        outputs = {}
        for fused in (True, False):
            cfg = LazyConfig.load(path)
            cfg.model.fused_ops = fused
            torch.manual_seed(0)
            model = instantiate(cfg.model).eval()
            layers = [m for m in model.modules() if isinstance(m, (StarDeformConv2d, ModulatedDeformConv2d))]
            self.assertEqual(len(layers), 2 + 13 + 2)  # head star convs, res3-res5 blocks, head DCNv2 convs
            self.assertEqual({m.use_fused_op for m in layers}, {fused})
            randomize_(model.backbone.bottom_up.res3, seed=2, offset_std=0.1)
            with torch.no_grad():
                outputs[fused] = model.backbone(torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0)))
        # the fused DCNv2 and star convs give torchvision's results (bit for bit on the CPU in float32)
        for name in outputs[True]:
            torch.testing.assert_close(outputs[True][name], outputs[False][name], rtol=0, atol=0)
