"""
Tests of the configs under configs/: every LazyConfig (.py) model zoo file builds the VFNet it
names, its optimizer / lr schedule / dataloader follow the reference's recipe, and every .yaml
twin builds the same model through ``build_model``. No dataset is read and only one small
forward pass (R-50, 128x160, eval mode) is run.
"""
import functools
import glob
import os
import re
import unittest

import numpy as np
import torch
import detectron2.data.transforms as T
from detectron2.config import LazyConfig, get_cfg, instantiate
from detectron2.data import DatasetMapper
from detectron2.data.detection_utils import build_augmentation
from detectron2.engine import DefaultPredictor
from detectron2.modeling import FPN, META_ARCH_REGISTRY, build_model
from detectron2.solver import LRMultiplier, build_lr_scheduler
from fvcore.common.param_scheduler import ParamScheduler

from vfnet import ATSSAssigner, VFNet, add_vfnet_config
from vfnet.data import CutOut, DatasetMapperWithBoxes, MultiScaleKeepRatioResize, RandomCropKeepingBoxes, build_train_augmentations
from vfnet.engine import Trainer
from vfnet.layers import FrozenStatsBatchNorm2d, ModulatedDeformConv2d
from vfnet.pafpnx import PAFPNX
from vfnet.res2net import Bottle2neckBlock, Res2NetStem
from vfnet_test_utils import REPO_ROOT

REPO = REPO_ROOT
CONFIG_DIR = os.path.join(REPO, "configs", "COCO-Detection")
PY_CONFIGS = sorted(glob.glob(os.path.join(CONFIG_DIR, "*.py")))
YAML_CONFIGS = sorted(
    f for f in glob.glob(os.path.join(CONFIG_DIR, "*.yaml")) if not os.path.basename(f).startswith("Base-")
)

PIXEL_MEAN = [123.675, 116.28, 103.53]
PIXEL_STD = [58.395, 57.12, 57.375]
# One COCO train2017 epoch (117,266 images) at 16 images per iteration, as MMDetection counts it
ITERS_PER_EPOCH = -(-117266 // 16)
ITERS_1X = 12 * ITERS_PER_EPOCH
# epochs -> the epochs after which the lr is divided by 10 (1x, 2x, VFNet-X's 41)
DECAY_EPOCHS = {12: (8, 11), 24: (16, 22), 41: (36, 40)}
MILESTONES = {e: tuple(d * ITERS_PER_EPOCH for d in decays) for e, decays in DECAY_EPOCHS.items()}

_NAME_RE = re.compile(
    r"vfnet_(?P<kind>R2|R|X)_(?P<depth>\d+)(?:_(?P<groups>\d+)x(?P<width>\d+)d)?_FPN"
    r"(?P<dcn>_MDCONV_c3-c5)?(?P<ms>_MS)?_(?P<num_x>\d)x"
)

# The reference's model zoo (SPEC.md section 6): config name -> (COCO val AP, test-dev AP)
ZOO = {
    "vfnet_R_50_FPN_1x": ("41.6", "41.6"),
    "vfnet_R_50_FPN_MS_2x": ("44.5", "44.8"),
    "vfnet_R_50_FPN_MDCONV_c3-c5_MS_2x": ("47.8", "48.0"),
    "vfnet_R_101_FPN_1x": ("43.0", "43.6"),
    "vfnet_R_101_FPN_2x": ("43.5", "43.9"),
    "vfnet_R_101_FPN_MS_2x": ("46.2", "46.7"),
    "vfnet_R_101_FPN_MDCONV_c3-c5_MS_2x": ("49.0", "49.2"),
    "vfnet_X_101_32x4d_FPN_MS_2x": ("47.4", "47.6"),
    "vfnet_X_101_32x4d_FPN_MDCONV_c3-c5_MS_2x": ("49.7", "50.0"),
    "vfnet_X_101_64x4d_FPN_MS_2x": ("48.2", "48.5"),
    "vfnet_X_101_64x4d_FPN_MDCONV_c3-c5_MS_2x": ("50.4", "50.8"),
    "vfnet_R2_101_FPN_MS_2x": ("49.2", "49.3"),
    "vfnet_R2_101_FPN_MDCONV_c3-c5_MS_2x": ("51.1", "51.3"),
    # VFNet-X (41 epochs + 18 of SWA), tested at 1333x800 and at 1800x1200
    "vfnetx_R2_101_PAFPNX_MDCONV_c3-c5_MS_59e": ("53.4", "53.7"),
    "vfnetx_R2_101_PAFPNX_MDCONV_c3-c5_MS_59e_test_1800x1200": ("54.5", "55.1"),
}


def parse_name(path):
    """What a model zoo file name promises: backbone, depth, groups, width per group, DCN, MS train,
    epochs (and, for VFNet-X, its neck, head, test size)."""
    name = os.path.basename(path)
    if name.startswith("vfnetx_R2_101_PAFPNX_MDCONV_c3-c5_MS_59e"):
        return dict(
            vfnetx=True, res2net=True, depth=101, groups=1, width=26, dcn=True, ms=True, epochs=41,
            test_size=(1200, 1800) if "_test_1800x1200" in name else (800, 1333),
        )
    m = _NAME_RE.match(name)
    if m is None:
        return None
    return dict(
        vfnetx=False,
        res2net=m["kind"] == "R2",
        depth=int(m["depth"]),
        groups=int(m["groups"] or 1),
        width=int(m["width"] or 64),
        dcn=bool(m["dcn"]),
        ms=bool(m["ms"]),
        epochs=12 * int(m["num_x"]),
        test_size=(800, 1333),
    )


# ---------------------------------------------------------------- expected parameter counts
# Computed from the layer shapes alone (no detectron2, no torchvision).

_BLOCKS = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}
DCN_STAGES = (False, True, True, True)  # "mdconv_c3-c5"


def offset_conv_params(channels):
    """The DCNv2 offset+mask conv of a 3x3 deformable conv on ``channels`` inputs: 27 outputs, bias."""
    return channels * 27 * 9 + 27


def resnet_params(depth, groups=1, width=64, stem=64, bn=False, fc=False, dcn=False):
    """Parameters of a bottleneck ResNet/ResNeXt: conv weights (no biases), plus BN affine
    parameters, the DCNv2 offset convs of res3-res5 and the 1000-way classifier if asked."""
    n = 3 * stem * 7 * 7 + (2 * stem if bn else 0)
    in_c, out_c, b = stem, stem * 4, groups * width
    for stage, num_blocks in enumerate(_BLOCKS[depth]):
        for i in range(num_blocks):
            cin = in_c if i == 0 else out_c
            n += cin * b + b * (b // groups) * 9 + b * out_c
            n += 2 * (b + b + out_c) if bn else 0
            n += offset_conv_params(b) if dcn and DCN_STAGES[stage] else 0
            if i == 0:  # projection shortcut
                n += in_c * out_c + (2 * out_c if bn else 0)
        in_c, out_c, b = out_c, out_c * 2, b * 2
    if fc:
        n += in_c * 1000 + 1000
    return n


def res2net_params(depth, base=64, base_width=26, scales=4, fc=False, dcn=False, deep_stem=True):
    """Parameters of a Res2Net (v1d: deep 3x3 stem; v1b: 7x7 stem) with BN, as described in the
    Res2Net paper / MMDetection's res2net.py."""
    if deep_stem:
        n = 3 * (base // 2) * 9 + (base // 2) ** 2 * 9 + (base // 2) * base * 9 + 2 * (base // 2 + base // 2 + base)
    else:
        n = 3 * base * 49 + 2 * base
    in_c = base
    for stage, num_blocks in enumerate(_BLOCKS[depth]):
        planes = base * 2**stage
        w, out_c = planes * base_width // base, 4 * planes
        for i in range(num_blocks):
            cin = in_c if i == 0 else out_c
            n += cin * w * scales + 2 * w * scales  # conv1 + BN
            n += (scales - 1) * (w * w * 9 + 2 * w)  # the 3x3 convs + BNs
            n += (scales - 1) * offset_conv_params(w) if dcn and DCN_STAGES[stage] else 0
            n += w * scales * out_c + 2 * out_c  # conv3 + BN
            if i == 0:
                n += cin * out_c + 2 * out_c  # shortcut conv + BN (after the average pool)
        in_c = out_c
    if fc:
        n += in_c * 1000 + 1000
    return n


def fpn_params(in_channels=(512, 1024, 2048), c=256):
    laterals = sum(ci * c + c for ci in in_channels)
    outputs = len(in_channels) * (c * c * 9 + c)
    p6_p7 = 2 * (c * c * 9 + c)
    return laterals + outputs + p6_p7


def pafpnx_params(in_channels=(512, 1024, 2048), c=384):
    """PAFPN-X: laterals (1x1 + bias), FPN outputs, bottom-up downsamples, DCNv2 outputs and
    P6/P7, every conv but the laterals followed by GroupNorm and without bias."""
    conv_gn = c * c * 9 + 2 * c
    laterals = sum(ci * c + c for ci in in_channels)
    n = len(in_channels)
    return laterals + n * conv_gn + (n - 1) * conv_gn + n * (conv_gn + offset_conv_params(c)) + 2 * conv_gn


def head_params(c=256, num_convs=3, num_classes=80, num_levels=5, dcn_last=False):
    conv_gn = c * c * 9 + 2 * c  # 3x3 conv without bias + GroupNorm
    towers = 2 * num_convs * conv_gn + (2 * offset_conv_params(c) if dcn_last else 0)
    bbox_init = conv_gn + (c * 4 * 9 + 4)
    bbox_refine = c * c * 9 + (c * 4 * 9 + 4)  # star deformable conv (no bias) + 3x3 conv
    cls = c * c * 9 + (c * num_classes * 9 + num_classes)
    scales = 2 * num_levels
    return towers + bbox_init + bbox_refine + cls + scales


def vfnet_params(expect):
    """Parameters of the model a zoo file name promises (BN affine parameters included)."""
    if expect["res2net"]:
        bottom_up = res2net_params(expect["depth"], dcn=expect["dcn"])
    else:
        bottom_up = resnet_params(expect["depth"], expect["groups"], expect["width"], bn=True, dcn=expect["dcn"])
    if expect["vfnetx"]:
        return bottom_up + pafpnx_params(c=384) + head_params(c=384, num_convs=4, dcn_last=True)
    return bottom_up + fpn_params() + head_params(dcn_last=expect["dcn"])


def num_params(module, trainable_only=False):
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


# ---------------------------------------------------------------- helpers

def load_lazy(path):
    return LazyConfig.load(path)


def load_yaml(path):
    cfg = get_cfg()
    add_vfnet_config(cfg)
    cfg.merge_from_file(path)
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def twin(path, ext):
    other = os.path.splitext(path)[0] + ext
    return other if os.path.isfile(other) else None


@functools.lru_cache(maxsize=None)
def r50_model():
    torch.manual_seed(0)
    return instantiate(load_lazy(os.path.join(CONFIG_DIR, "vfnet_R_50_FPN_1x.py")).model)


def named_params(model):
    return {id(p): n for n, p in model.named_parameters()}


def optimizer_settings(optimizer, model):
    """{param name: (lr, weight_decay)} of an optimizer's param groups."""
    names = named_params(model)
    settings = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            name = names[id(p)]
            assert name not in settings, f"{name} is in two param groups"
            settings[name] = (group["lr"], group["weight_decay"])
    return settings


def resize_sizes(aug):
    """The short sides a ResizeShortestEdge can give: ("choice", set of sizes) or ("range", (lo, hi))."""
    if aug.sample_style == "range":
        return "range", tuple(aug.short_edge_length)
    return "choice", set(aug.short_edge_length)


def lr_trace(scheduler_fn, num_iters):
    """lr multipliers of the first ``num_iters`` iterations, through a real optimizer."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = scheduler_fn(opt)
    values = []
    for _ in range(num_iters):
        values.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return values


class ConfigFilesTest(unittest.TestCase):
    def test_model_zoo_is_complete(self):
        names = {os.path.basename(f) for f in PY_CONFIGS}
        for row in ZOO:
            self.assertIn(row + ".py", names)
            self.assertIn(os.path.join(CONFIG_DIR, row + ".yaml"), YAML_CONFIGS)
        for path in YAML_CONFIGS:
            self.assertIsNotNone(twin(path, ".py"), f"{path} has no LazyConfig twin")

    def test_configs_do_not_use_the_installed_model_zoo(self):
        for path in glob.glob(os.path.join(REPO, "configs", "**", "*.py"), recursive=True):
            with open(path) as f:
                text = f.read()
            self.assertNotIn("model_zoo", text, path)
            self.assertNotIn("get_config(", text, path)

    def test_reference_ap_in_header(self):
        for name, (val, test_dev) in ZOO.items():
            for ext in (".py", ".yaml"):
                path = os.path.join(CONFIG_DIR, name + ext)
                with open(path) as f:
                    header = "".join(line for line in f.readlines()[:4] if line.startswith("#"))
                self.assertIn(f"val AP {val}", header, path)
                self.assertIn(f"test-dev {test_dev}", header, path)


class ParameterCountFormulaTest(unittest.TestCase):
    def test_formula_matches_torchvision_published_counts(self):
        # torchvision's documented parameter counts (with BN and the ImageNet classifier)
        self.assertEqual(resnet_params(50, bn=True, fc=True), 25_557_032)
        self.assertEqual(resnet_params(101, bn=True, fc=True), 44_549_160)
        self.assertEqual(resnet_params(101, 32, 8, bn=True, fc=True), 88_791_336)
        self.assertEqual(resnet_params(101, 64, 4, bn=True, fc=True), 83_455_272)

    def test_res2net_formula_matches_the_published_count(self):
        # Res2Net paper, Table: Res2Net-101 26w x 4s (7x7 stem) has 45.21M parameters
        self.assertEqual(round(res2net_params(101, fc=True, deep_stem=False) / 1e6, 2), 45.21)


class LazyConfigModelTest(unittest.TestCase):
    def check_model(self, model, expect):
        self.assertIsInstance(model, VFNet)
        bottom_up = model.backbone.bottom_up
        stages = [bottom_up.res2, bottom_up.res3, bottom_up.res4, bottom_up.res5]
        self.assertEqual([len(s) for s in stages], _BLOCKS[expect["depth"]])
        self.assertEqual(bottom_up.res5[-1].conv3.out_channels, 2048)
        if expect["res2net"]:
            self.assertIsInstance(bottom_up.stem, Res2NetStem)
            for i, stage in enumerate(stages):
                for b, block in enumerate(stage):
                    self.assertIsInstance(block, Bottle2neckBlock)
                    self.assertEqual(block.stage_type, "stage" if b == 0 else "normal")
                    self.assertEqual(block.width, 26 * 2**i)  # 26w x 4s
                    self.assertEqual(len(block.convs), 3)
                    deform = isinstance(block.convs[0], ModulatedDeformConv2d)
                    self.assertEqual(deform, expect["dcn"] and DCN_STAGES[i], f"res{i + 2}.{b}")
            # the stride of the first block of res3-res5 is on its 3x3 convs
            self.assertEqual(_stride(bottom_up.res3[0].convs[0]), 2)
        else:
            first = bottom_up.res2[0]
            self.assertEqual(first.conv2.groups, expect["groups"])
            self.assertEqual(first.conv2.out_channels, expect["groups"] * expect["width"])
            # torchvision style: the stride is on the 3x3 conv, DCNv2 ones included
            self.assertEqual(tuple(bottom_up.res3[0].conv1.stride), (1, 1))
            self.assertEqual(_stride(bottom_up.res3[0].conv2), 2)
            for i, stage in enumerate(stages):
                for block in stage:
                    self.assertEqual(isinstance(block.conv2, ModulatedDeformConv2d), expect["dcn"] and DCN_STAGES[i])
                    self.assertEqual(block.conv2.groups, expect["groups"])
            self.assertIsInstance(bottom_up.res4[0].conv2.norm, FrozenStatsBatchNorm2d)
        # BN as the reference trains it: statistics frozen, affine parameters trained (res3-res5)
        self.assertIsInstance(bottom_up.stem.conv1.norm, FrozenStatsBatchNorm2d)
        self.assertIsInstance(bottom_up.res4[0].conv1.norm, FrozenStatsBatchNorm2d)
        self.assertTrue(bottom_up.res4[0].conv1.norm.weight.requires_grad)
        # stem and res2 frozen (freeze_at=2), the rest trainable
        for name, p in bottom_up.named_parameters():
            self.assertEqual(p.requires_grad, not name.startswith(("stem.", "res2.")), name)
        shapes = model.backbone.output_shape()
        self.assertEqual(model.head_in_features, ["p3", "p4", "p5", "p6", "p7"])
        self.assertEqual([shapes[f].stride for f in model.head_in_features], [8, 16, 32, 64, 128])
        channels = 384 if expect["vfnetx"] else 256
        self.assertEqual({shapes[f].channels for f in model.head_in_features}, {channels})
        self.assertIsInstance(model.backbone, PAFPNX if expect["vfnetx"] else FPN)
        self.assertEqual(model.head.cls_subnet[0].out_channels, channels)
        self.assertEqual(model.head.strides, [8, 16, 32, 64, 128])
        self.assertEqual(model.head.cls_score.out_channels, 80)
        self.assertEqual(len(model.head.cls_subnet), 4 if expect["vfnetx"] else 3)
        for tower in (model.head.cls_subnet, model.head.bbox_subnet):
            self.assertEqual(isinstance(tower[-1], ModulatedDeformConv2d), expect["dcn"])
            self.assertFalse(any(isinstance(conv, ModulatedDeformConv2d) for conv in tower[:-1]))
        self.assertEqual(model.num_classes, 80)
        self.assertEqual(model.anchor_generator.strides, [8, 16, 32, 64, 128])
        self.assertEqual(model.anchor_generator.offset, 0.0)
        self.assertIsInstance(model.assigner, ATSSAssigner)
        self.assertEqual(model.assigner.topk, 9)
        self.assertEqual(model.input_format, "RGB")
        self.assertEqual(
            (model.test_nms_type, model.test_nms_thresh), ("soft_nms", 0.65) if expect["vfnetx"] else ("nms", 0.6)
        )
        self.assertEqual(num_params(model), vfnet_params(expect))
        stem_res2 = num_params(bottom_up.stem) + num_params(bottom_up.res2)
        self.assertEqual(num_params(model, trainable_only=True), num_params(model) - stem_res2)

    def test_every_config_builds_its_model(self):
        counts = {}
        for path in PY_CONFIGS:
            with self.subTest(config=os.path.basename(path)):
                cfg = load_lazy(path)
                self.assertEqual(set(cfg.keys()), {"dataloader", "lr_multiplier", "model", "optimizer", "train"})
                self.assertEqual((list(cfg.model.pixel_mean), list(cfg.model.pixel_std)), (PIXEL_MEAN, PIXEL_STD))
                with torch.device("meta"):  # structure and parameter counts only: no weights
                    model = instantiate(cfg.model)
                self.assertIsInstance(model, VFNet)
                expect = parse_name(path)
                if expect is not None:
                    self.check_model(model, expect)
                counts[os.path.basename(path)] = num_params(model)
                del model
        self.assertGreater(counts["vfnet_R_101_FPN_1x.py"], counts["vfnet_R_50_FPN_1x.py"])
        self.assertGreater(counts["vfnet_X_101_64x4d_FPN_MS_2x.py"], counts["vfnet_X_101_32x4d_FPN_MS_2x.py"])
        # 32,838,434 conv/GN parameters + 53,120 BN affine parameters (trained as the reference does)
        self.assertEqual(counts["vfnet_R_50_FPN_1x.py"], 32_891_554)

    def test_init_checkpoint_is_a_converted_imagenet_checkpoint(self):
        for path in PY_CONFIGS:
            with self.subTest(config=os.path.basename(path)):
                init = load_lazy(path).train.init_checkpoint
                self.assertRegex(init, r"^pretrained/(R|X|R2)-101(-\d+x4d)?\.pth$|^pretrained/R-50\.pth$")
                # the config (or the one it derives from) says how to make it
                text = "".join(open(p).read() for p in _config_chain(path))
                self.assertIn("tools/convert_imagenet_checkpoint.py", text)
                self.assertIn(init, text)

    def test_r50_forward_structure(self):
        model = r50_model().eval()
        old_thresh = model.test_score_thresh
        model.test_score_thresh = 0.0  # an untrained classifier scores ~0.01 everywhere
        try:
            image = torch.randint(0, 256, (3, 128, 160), dtype=torch.uint8)
            with torch.no_grad():
                outputs = model([{"image": image, "height": 256, "width": 320}])
        finally:
            model.test_score_thresh = old_thresh
        self.assertEqual(len(outputs), 1)
        instances = outputs[0]["instances"]
        self.assertEqual(instances.image_size, (256, 320))
        self.assertEqual(len(instances), 100)
        boxes = instances.pred_boxes.tensor
        self.assertEqual(boxes.shape, (100, 4))
        self.assertTrue(torch.isfinite(boxes).all())
        self.assertTrue((boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 320).all())
        self.assertTrue((boxes[:, 1] >= 0).all() and (boxes[:, 3] <= 256).all())
        self.assertTrue((instances.scores[:-1] >= instances.scores[1:]).all())  # NMS keeps score order
        self.assertTrue(((instances.scores >= 0) & (instances.scores <= 1)).all())
        self.assertTrue(((instances.pred_classes >= 0) & (instances.pred_classes < 80)).all())


def _stride(conv):
    stride = conv.stride
    return stride[0] if isinstance(stride, (tuple, list)) else stride


def _config_chain(path):
    """A config file and the files it imports its pieces from (relative imports), recursively."""
    chain, todo = [], [path]
    while todo:
        current = todo.pop()
        if current in chain:
            continue
        chain.append(current)
        with open(current) as f:
            for m in re.finditer(r"^from (\.+)([\w.-]+) import", f.read(), flags=re.M):
                base = os.path.dirname(current)
                for _ in range(len(m[1]) - 1):
                    base = os.path.dirname(base)
                todo.append(os.path.join(base, *m[2].split(".")) + ".py")
    return chain


def expected_lr_and_decay(name, base_lr=0.01, decay=1e-4):
    """MMDetection's rules for paramwise_cfg=dict(bias_lr_mult=2., bias_decay_mult=0.), from the
    parameter's name: norms (".norm.") lr x1 with decay; the deformable offset convs lr x1 with
    decay, bias included; other biases lr x2 without decay; the rest lr x1 with decay."""
    if ".norm." in name or ".conv_offset." in name or not name.endswith(".bias"):
        return base_lr, decay
    return 2 * base_lr, 0.0


class OptimizerConfigTest(unittest.TestCase):
    def check_settings(self, model, optimizer, base_lr=0.01):
        settings = optimizer_settings(optimizer, model)
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        self.assertEqual(set(settings), trainable)
        for name, (lr, wd) in settings.items():
            expected_lr, expected_wd = expected_lr_and_decay(name, base_lr)
            self.assertAlmostEqual(lr, expected_lr, msg=name)
            self.assertEqual(wd, expected_wd, name)
        return settings

    def test_mmdet_parameter_rules(self):
        model = r50_model()
        cfg = load_lazy(os.path.join(CONFIG_DIR, "vfnet_R_50_FPN_1x.py"))
        cfg.optimizer.params.model = model
        optimizer = instantiate(cfg.optimizer)
        self.assertIsInstance(optimizer, torch.optim.SGD)
        self.assertEqual(optimizer.defaults["lr"], 0.01)
        self.assertEqual(optimizer.defaults["momentum"], 0.9)
        self.assertEqual(optimizer.defaults["weight_decay"], 1e-4)
        settings = self.check_settings(model, optimizer)
        self.assertEqual(settings["head.cls_score.bias"], (0.02, 0.0))
        self.assertEqual(settings["backbone.fpn_lateral3.bias"], (0.02, 0.0))
        self.assertEqual(settings["head.cls_subnet.0.norm.bias"], (0.01, 1e-4))  # GroupNorm
        self.assertEqual(settings["backbone.bottom_up.res3.0.conv1.norm.bias"], (0.01, 1e-4))  # trained BN
        self.assertNotIn("backbone.bottom_up.res2.0.conv1.norm.bias", settings)  # frozen stage

    def test_deformable_offset_convs(self):
        cfg = load_lazy(os.path.join(CONFIG_DIR, "vfnet_R_50_FPN_MDCONV_c3-c5_MS_2x.py"))
        torch.manual_seed(0)
        model = instantiate(cfg.model)
        cfg.optimizer.params.model = model
        settings = self.check_settings(model, instantiate(cfg.optimizer))
        self.assertEqual(settings["backbone.bottom_up.res3.0.conv2.conv_offset.bias"], (0.01, 1e-4))
        self.assertEqual(settings["head.cls_subnet.2.conv_offset.bias"], (0.01, 1e-4))
        self.assertEqual(settings["head.cls_subnet.2.norm.bias"], (0.01, 1e-4))

    def test_bias_lr_follows_base_lr(self):
        model = r50_model()
        cfg = load_lazy(os.path.join(CONFIG_DIR, "vfnet_R_50_FPN_1x.py"))
        cfg.optimizer.lr = 0.02
        cfg.optimizer.params.model = model
        settings = optimizer_settings(instantiate(cfg.optimizer), model)
        self.assertAlmostEqual(settings["head.cls_score.bias"][0], 0.04)
        self.assertAlmostEqual(settings["head.cls_score.weight"][0], 0.02)
        self.assertAlmostEqual(settings["head.cls_subnet.0.norm.bias"][0], 0.02)

    def test_every_config_has_the_recipe_optimizer(self):
        for path in PY_CONFIGS:
            with self.subTest(config=os.path.basename(path)):
                opt = load_lazy(path).optimizer
                self.assertEqual((opt.lr, opt.momentum, opt.weight_decay), (0.01, 0.9, 1e-4))
                self.assertEqual((opt.params.bias_lr_mult, opt.params.bias_decay_mult), (2.0, 0.0))

    def test_yaml_optimizer_matches_lazy(self):
        model = r50_model()
        cfg = load_lazy(os.path.join(CONFIG_DIR, "vfnet_R_50_FPN_1x.py"))
        cfg.optimizer.params.model = model
        lazy = optimizer_settings(instantiate(cfg.optimizer), model)
        yaml_cfg = load_yaml(os.path.join(CONFIG_DIR, "vfnet_R_50_FPN_1x.yaml"))
        yaml = optimizer_settings(Trainer.build_optimizer(yaml_cfg, model), model)
        self.assertEqual(lazy, yaml)
        # Detectron2's own rule, still selectable, differs exactly on the norm biases
        yaml_cfg.SOLVER.PARAM_RULES = "detectron2"
        d2 = optimizer_settings(Trainer.build_optimizer(yaml_cfg, model), model)
        differ = {name for name in lazy if lazy[name] != d2[name]}
        self.assertTrue(differ)
        self.assertTrue(all(".norm.bias" in name for name in differ), sorted(differ)[:5])


class ScheduleConfigTest(unittest.TestCase):
    def test_multipliers(self):
        for path in PY_CONFIGS:
            expect = parse_name(path)
            if expect is None:
                continue
            with self.subTest(config=os.path.basename(path)):
                cfg = load_lazy(path)
                max_iter = cfg.train.max_iter
                self.assertEqual(max_iter, expect["epochs"] * ITERS_PER_EPOCH)
                sched = instantiate(cfg.lr_multiplier)
                self.assertIsInstance(sched, ParamScheduler)

                def at(it):
                    return sched(it / max_iter)

                first, second = MILESTONES[expect["epochs"]]
                self.assertAlmostEqual(at(0), 0.1)
                self.assertAlmostEqual(at(250), 0.55)
                self.assertAlmostEqual(at(500), 1.0)
                self.assertAlmostEqual(at(501), 1.0)
                self.assertAlmostEqual(at(first - 1), 1.0)
                self.assertAlmostEqual(at(first), 0.1)
                self.assertAlmostEqual(at(second - 1), 0.1)
                self.assertAlmostEqual(at(second), 0.01)
                self.assertAlmostEqual(at(max_iter - 1), 0.01)
                # evaluate and checkpoint after every epoch
                self.assertEqual(cfg.train.eval_period, ITERS_PER_EPOCH)
                self.assertEqual(cfg.train.checkpointer.period, ITERS_PER_EPOCH)

    def test_epoch_arithmetic(self):
        # the figures the README and the configs state
        self.assertEqual(ITERS_PER_EPOCH, 7330)
        self.assertEqual((ITERS_1X, 2 * ITERS_1X), (87_960, 175_920))
        self.assertEqual(MILESTONES, {12: (58_640, 80_630), 24: (117_280, 161_260), 41: (263_880, 293_200)})

    def test_warmup_through_lr_multiplier_matches_yaml(self):
        for name in ("vfnet_R_50_FPN_1x", "vfnet_R_50_FPN_MS_2x"):
            with self.subTest(config=name):
                lazy_cfg = load_lazy(os.path.join(CONFIG_DIR, name + ".py"))
                yaml_cfg = load_yaml(os.path.join(CONFIG_DIR, name + ".yaml"))
                # what the training hooks build: LRMultiplier(optimizer, multiplier, max_iter)
                lazy = lr_trace(
                    lambda opt: LRMultiplier(opt, instantiate(lazy_cfg.lr_multiplier), lazy_cfg.train.max_iter), 600
                )
                yaml = lr_trace(lambda opt: build_lr_scheduler(yaml_cfg, opt), 600)
                self.assertAlmostEqual(lazy[0], 0.1)
                self.assertAlmostEqual(lazy[500], 1.0)
                self.assertAlmostEqual(lazy[599], 1.0)
                np.testing.assert_allclose(lazy, yaml, rtol=1e-6)


class DataConfigTest(unittest.TestCase):
    def test_dataloaders(self):
        for path in PY_CONFIGS:
            expect = parse_name(path)
            with self.subTest(config=os.path.basename(path)):
                dl = load_lazy(path).dataloader
                self.assertEqual(dl.train.mapper.image_format, "RGB")
                self.assertEqual(dl.test.mapper.image_format, "RGB")
                self.assertEqual(dl.train.total_batch_size, 16)
                self.assertEqual(dl.train.dataset.names, "coco_2017_train")
                self.assertEqual(dl.test.dataset.names, "coco_2017_val")
                self.assertEqual(dl.evaluator.dataset_name, "coco_2017_val")

                train = instantiate(dl.train.mapper)  # DatasetMapper: no dataset needed
                self.assertIsInstance(train, DatasetMapper)
                self.assertTrue(train.is_train)
                self.assertEqual(train.image_format, "RGB")
                if expect["vfnetx"]:
                    self.check_vfnetx_augmentations(train)
                else:
                    resize, flip = train.augmentations.augs
                    self.assertIsInstance(resize, T.ResizeShortestEdge)
                    self.assertIsInstance(flip, T.RandomFlip)
                    self.assertEqual((flip.horizontal, flip.prob), (True, 0.5))
                    self.assertEqual(resize.max_size, 1333)
                    if expect["ms"]:
                        self.assertEqual(tuple(resize.short_edge_length), (480, 960))
                        self.assertEqual(resize.sample_style, "range")
                    else:
                        self.assertEqual(tuple(resize.short_edge_length), (800, 800))

                test = instantiate(dl.test.mapper)
                self.assertFalse(test.is_train)
                self.assertEqual(test.image_format, "RGB")
                (test_resize,) = test.augmentations.augs
                short, long = expect["test_size"]
                self.assertEqual(tuple(test_resize.short_edge_length), (short, short))
                self.assertEqual(test_resize.max_size, long)

    def check_vfnetx_augmentations(self, mapper):
        """The reference's VFNet-X pipeline: crop (relative 0.75, p 0.5) -> range resize 750x500 to
        2100x1400 -> CutOut (5-10 holes of 13 shapes, p 0.5) -> horizontal flip; boxes go to the crop."""
        self.assertIsInstance(mapper, DatasetMapperWithBoxes)
        crop, resize, cutout, flip = mapper.augmentations.augs
        self.assertIsInstance(crop, RandomCropKeepingBoxes)
        self.assertEqual((crop.crop_type, tuple(crop.crop_size), crop.prob), ("relative_range", (0.75, 0.75), 0.5))
        self.assertIsInstance(resize, MultiScaleKeepRatioResize)
        self.assertEqual((resize.scales, resize.multiscale_mode), (((750, 500), (2100, 1400)), "range"))
        self.assertIsInstance(cutout, CutOut)
        self.assertEqual((tuple(cutout.n_holes), cutout.prob, cutout.fill_value), ((5, 10), 0.5, 0))
        sizes = [tuple(h) for h in cutout.hole_sizes]
        self.assertEqual(len(sizes), 13)
        self.assertEqual((min(sizes), max(sizes)), ((4, 4), (48, 48)))
        self.assertIsInstance(flip, T.RandomFlip)
        self.assertEqual((flip.horizontal, flip.prob), (True, 0.5))

    def test_yaml_vfnetx_augmentations_match_lazy(self):
        for name in ("vfnetx_R2_101_PAFPNX_MDCONV_c3-c5_MS_59e", "vfnetx_R2_101_PAFPNX_MDCONV_c3-c5_MS_59e_test_1800x1200"):
            with self.subTest(config=name):
                cfg = load_yaml(os.path.join(CONFIG_DIR, name + ".yaml"))
                yaml_augs = build_train_augmentations(cfg)
                lazy = instantiate(load_lazy(os.path.join(CONFIG_DIR, name + ".py")).dataloader.train.mapper)
                self.assertEqual([_aug_params(a) for a in yaml_augs], [_aug_params(a) for a in lazy.augmentations.augs])
                self.assertTrue(cfg.INPUT.CROP.ENABLED)  # vfnet.engine.Trainer then maps with DatasetMapperWithBoxes

    def test_resize_output_sizes(self):
        image = np.zeros((480, 640, 3), dtype=np.uint8)
        wide = np.zeros((400, 1200, 3), dtype=np.uint8)

        def resized(aug, img):
            return aug.get_transform(img).apply_image(img).shape[:2]

        single = instantiate(load_lazy(os.path.join(CONFIG_DIR, "vfnet_R_50_FPN_1x.py")).dataloader.train.mapper)
        resize = single.augmentations.augs[0]
        self.assertEqual(resized(resize, image), (800, 1067))
        self.assertEqual(resized(resize, wide), (444, 1333))  # long side capped at 1333

        ms = instantiate(load_lazy(os.path.join(CONFIG_DIR, "vfnet_R_50_FPN_MS_2x.py")).dataloader.train.mapper)
        resize = ms.augmentations.augs[0]
        shorts = {resized(resize, image)[0] for _ in range(200)}
        self.assertGreaterEqual(min(shorts), 480)
        self.assertLessEqual(max(shorts), 960)
        self.assertGreater(len(shorts), 50)  # sampled from a range, not a few choices

    def test_yaml_data_matches_lazy(self):
        for path in YAML_CONFIGS:
            with self.subTest(config=os.path.basename(path)):
                cfg = load_yaml(path)
                expect = parse_name(path)
                self.assertEqual(cfg.INPUT.FORMAT, "RGB")
                lazy = load_lazy(twin(path, ".py")).dataloader
                self.assertEqual(cfg.SOLVER.IMS_PER_BATCH, lazy.train.total_batch_size)
                self.assertEqual(cfg.DATALOADER.ASPECT_RATIO_GROUPING, lazy.train.get("aspect_ratio_grouping", True))
                short, long = expect["test_size"]
                (test_resize,) = build_augmentation(cfg, is_train=False)
                self.assertEqual(resize_sizes(test_resize), ("choice", {short}))
                self.assertEqual(test_resize.max_size, long)
                if expect["vfnetx"]:
                    continue  # test_yaml_vfnetx_augmentations_match_lazy
                # what vfnet.engine.Trainer trains with
                resize, flip = build_train_augmentations(cfg)
                lazy_resize = lazy.train.mapper.augmentations[0]
                self.assertEqual(resize_sizes(resize), resize_sizes(instantiate(lazy_resize)))
                self.assertEqual(resize.max_size, lazy_resize.max_size)
                self.assertIsInstance(flip, T.RandomFlip)


class YamlConfigTest(unittest.TestCase):
    def test_yaml_builds_the_lazy_model(self):
        for path in YAML_CONFIGS:
            with self.subTest(config=os.path.basename(path)):
                cfg = load_yaml(path)
                self.assertEqual(cfg.MODEL.META_ARCHITECTURE, "VFNet")
                self.assertEqual(list(cfg.MODEL.PIXEL_MEAN), PIXEL_MEAN)
                self.assertEqual(list(cfg.MODEL.PIXEL_STD), PIXEL_STD)
                with torch.device("meta"):  # structure only: no weights (build_model without .to(device))
                    yaml_model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
                    lazy_model = instantiate(load_lazy(twin(path, ".py")).model)
                self.assertIsInstance(yaml_model, VFNet)
                self.assertEqual(
                    [type(m).__name__ for m in yaml_model.modules()], [type(m).__name__ for m in lazy_model.modules()]
                )
                yaml_sd = {k: tuple(v.shape) for k, v in yaml_model.state_dict().items()}
                lazy_sd = {k: tuple(v.shape) for k, v in lazy_model.state_dict().items()}
                self.assertEqual(yaml_sd, lazy_sd)
                self.assertEqual(
                    [n for n, p in yaml_model.named_parameters() if p.requires_grad],
                    [n for n, p in lazy_model.named_parameters() if p.requires_grad],
                )
                for attr in (
                    "num_classes", "head_in_features", "input_format", "use_vfl", "vfl_alpha", "vfl_gamma",
                    "vfl_iou_weighted", "loss_cls_weight", "loss_bbox_init_weight", "loss_bbox_refine_weight",
                    "test_score_thresh", "test_topk_candidates", "test_topk_mode", "test_nms_type",
                    "test_nms_thresh", "max_detections_per_image",
                ):
                    self.assertEqual(getattr(yaml_model, attr), getattr(lazy_model, attr), attr)
                self.assertEqual(type(yaml_model.assigner), type(lazy_model.assigner))
                self.assertEqual(yaml_model.assigner.topk, lazy_model.assigner.topk)
                self.assertEqual(yaml_model.anchor_generator.strides, lazy_model.anchor_generator.strides)
                self.assertEqual(yaml_model.anchor_generator.offset, lazy_model.anchor_generator.offset)
                self.assertEqual(yaml_model.head.box_normalizers, lazy_model.head.box_normalizers)
                self.assertEqual(yaml_model.head.cpu_channels_last, lazy_model.head.cpu_channels_last)
                self.assertEqual(list(cfg.MODEL.PIXEL_MEAN), list(load_lazy(twin(path, ".py")).model.pixel_mean))
                del yaml_model, lazy_model

    def test_yaml_solver_matches_lazy(self):
        for path in YAML_CONFIGS:
            with self.subTest(config=os.path.basename(path)):
                cfg = load_yaml(path)
                lazy = load_lazy(twin(path, ".py"))
                s = cfg.SOLVER
                self.assertEqual(s.BASE_LR, lazy.optimizer.lr)
                self.assertEqual(s.MOMENTUM, lazy.optimizer.momentum)
                self.assertEqual(s.WEIGHT_DECAY, lazy.optimizer.weight_decay)
                self.assertEqual((s.BIAS_LR_FACTOR, s.WEIGHT_DECAY_BIAS), (2.0, 0.0))
                self.assertEqual(s.MAX_ITER, lazy.train.max_iter)
                self.assertEqual((s.WARMUP_FACTOR, s.WARMUP_ITERS, s.WARMUP_METHOD), (0.1, 500, "linear"))
                self.assertEqual(tuple(s.STEPS), MILESTONES[s.MAX_ITER // ITERS_PER_EPOCH])
                self.assertEqual(s.CHECKPOINT_PERIOD, lazy.train.checkpointer.period)
                self.assertEqual(cfg.TEST.EVAL_PERIOD, lazy.train.eval_period)
                self.assertEqual(s.PARAM_RULES, "mmdet")
                self.assertEqual(cfg.MODEL.WEIGHTS, lazy.train.init_checkpoint)
                expect = parse_name(path)
                if expect is not None:
                    self.assertEqual(s.MAX_ITER, expect["epochs"] * ITERS_PER_EPOCH)

    def test_quickstart_twins_build_the_same_optimizer(self):
        """The quickstart's .yaml (vfnet.solver.build_optimizer) and .py give AdamW the same groups."""
        quickstart = os.path.join(REPO, "configs", "Quickstart", "vfnet_R_18_narrow_shapes_cpu")
        cfg, lazy = load_yaml(quickstart + ".yaml"), load_lazy(quickstart + ".py")
        model = instantiate(lazy.model)
        lazy.optimizer.params.model = model
        from vfnet.solver import build_optimizer

        optimizers = [instantiate(lazy.optimizer), build_optimizer(cfg, model)]
        names = {id(p): n for n, p in model.named_parameters()}
        settings = []
        for optimizer in optimizers:
            self.assertIsInstance(optimizer, torch.optim.AdamW)
            by_name = {}
            for group in optimizer.param_groups:
                for p in group["params"]:
                    by_name[names[id(p)]] = (group["lr"], group["weight_decay"], group["betas"])
            settings.append(by_name)
        self.assertEqual(settings[0], settings[1])
        self.assertEqual(settings[0]["backbone.bottom_up.stem.conv1.weight"], (1e-3, 0.05, (0.9, 0.999)))
        self.assertEqual(settings[0]["backbone.bottom_up.stem.conv1.norm.weight"], (1e-3, 0.0, (0.9, 0.999)))
        self.assertEqual(cfg.SOLVER.MAX_ITER, lazy.train.max_iter)
        self.assertEqual(cfg.SOLVER.WARMUP_ITERS, round(lazy.lr_multiplier.warmup_length * lazy.train.max_iter))

    def test_quickstart_twins_run_the_head_and_loader_alike(self):
        """Both quickstart twins keep the narrow head in NCHW on the CPU (torch's GroupNorm of
        2-channel groups is slow on channels-last inputs) and batch in the loader's worker."""
        quickstart = os.path.join(REPO, "configs", "Quickstart", "vfnet_R_18_narrow_shapes_cpu")
        cfg, lazy = load_yaml(quickstart + ".yaml"), load_lazy(quickstart + ".py")
        base = load_yaml(os.path.join(CONFIG_DIR, "Base-VFNet.yaml"))
        with torch.device("meta"):  # structure only
            yaml_head, base_head = (META_ARCH_REGISTRY.get("VFNet")(c).head for c in (cfg, base))
            lazy_head = instantiate(lazy.model).head
        self.assertEqual((yaml_head.cpu_channels_last, lazy_head.cpu_channels_last), (False, False))
        self.assertEqual((cfg.DATALOADER.ASPECT_RATIO_GROUPING, lazy.dataloader.train.aspect_ratio_grouping), (False, False))
        # the COCO models keep the default
        self.assertTrue(base_head.cpu_channels_last)
        self.assertTrue(r50_model().head.cpu_channels_last)

    def test_base_yaml_builds(self):
        model = build_model(load_yaml(os.path.join(CONFIG_DIR, "Base-VFNet.yaml")))
        self.assertIsInstance(model, VFNet)
        self.assertEqual(num_params(model), vfnet_params(parse_name("vfnet_R_50_FPN_1x")))

    def test_twins_give_the_same_detections(self):
        # one row of each family: ResNet, ResNet with DCNv2, Res2Net with DCNv2, VFNet-X (PAFPN-X, Soft-NMS)
        image = torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
        for name in (
            "vfnet_R_50_FPN_1x",
            "vfnet_R_50_FPN_MDCONV_c3-c5_MS_2x",
            "vfnet_R2_101_FPN_MDCONV_c3-c5_MS_2x",
            "vfnetx_R2_101_PAFPNX_MDCONV_c3-c5_MS_59e",
        ):
            with self.subTest(config=name):
                torch.manual_seed(0)
                lazy_model = instantiate(load_lazy(os.path.join(CONFIG_DIR, name + ".py")).model).eval()
                _perturb_offsets(lazy_model)
                yaml_model = build_model(load_yaml(os.path.join(CONFIG_DIR, name + ".yaml"))).eval()
                yaml_model.load_state_dict(lazy_model.state_dict())
                a, b = (_detect(model, image) for model in (lazy_model, yaml_model))
                self.assertEqual(len(a), 100)
                torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor)
                torch.testing.assert_close(a.scores, b.scores)
                self.assertTrue(torch.equal(a.pred_classes, b.pred_classes))

    def test_default_predictor(self):
        cfg = load_yaml(os.path.join(CONFIG_DIR, "vfnet_R_50_FPN_1x.yaml"))
        cfg.MODEL.WEIGHTS = ""  # no download; random weights
        cfg.INPUT.MIN_SIZE_TEST = 128
        cfg.INPUT.MAX_SIZE_TEST = 160
        cfg.MODEL.VFNET.SCORE_THRESH_TEST = 0.0
        predictor = DefaultPredictor(cfg)
        self.assertIsInstance(predictor.model, VFNet)
        self.assertEqual(predictor.input_format, "RGB")
        bgr = np.random.RandomState(0).randint(0, 256, (240, 300, 3), dtype=np.uint8)
        instances = predictor(bgr)["instances"]
        self.assertEqual(instances.image_size, (240, 300))
        self.assertEqual(len(instances), 100)


_AUG_ATTRS = ("crop_type", "crop_size", "prob", "max_attempts", "scales", "multiscale_mode", "n_holes", "hole_sizes",
              "fill_value", "horizontal", "vertical")


def _aug_params(aug):
    """An augmentation's type and parameters, tuples and lists alike."""
    def norm(v):
        return tuple(norm(x) for x in v) if isinstance(v, (list, tuple)) else v

    return type(aug).__name__, {a: norm(getattr(aug, a)) for a in _AUG_ATTRS if hasattr(aug, a)}


def _perturb_offsets(model):
    """Non-zero DCNv2 offsets and masks (they start at zero), so that the deformable paths matter."""
    g = torch.Generator().manual_seed(3)
    for name, p in model.named_parameters():
        if ".conv_offset." in name:
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.01)


def _detect(model, image):
    old = model.test_score_thresh
    model.test_score_thresh = 0.0  # an untrained classifier scores ~0.01 everywhere
    try:
        with torch.no_grad():
            return model([{"image": image}])[0]["instances"]
    finally:
        model.test_score_thresh = old


if __name__ == "__main__":
    unittest.main()
