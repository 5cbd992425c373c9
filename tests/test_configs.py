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
import sys
import unittest

import numpy as np
import torch

try:
    import vfnet
except ImportError:  # not installed (`make install`): use the source tree
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "projects", "VFNet"))
    import vfnet

import detectron2.data.transforms as T
from detectron2.config import LazyConfig, get_cfg, instantiate
from detectron2.data import DatasetMapper
from detectron2.data.detection_utils import build_augmentation
from detectron2.engine import DefaultPredictor
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model
from detectron2.solver import LRMultiplier, build_lr_scheduler, build_optimizer
from fvcore.common.param_scheduler import ParamScheduler

from vfnet import ATSSAssigner, VFNet, add_vfnet_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO, "configs", "COCO-Detection")
PY_CONFIGS = sorted(glob.glob(os.path.join(CONFIG_DIR, "*.py")))
YAML_CONFIGS = sorted(
    f for f in glob.glob(os.path.join(CONFIG_DIR, "*.yaml")) if not os.path.basename(f).startswith("Base-")
)

PIXEL_MEAN = [123.675, 116.28, 103.53]
PIXEL_STD = [58.395, 57.12, 57.375]
ITERS_1X = 90000
# (first decay, second decay) of the reference's schedules: epochs 8 and 11 of 12, 16 and 22 of 24
MILESTONES = {1: (60000, 82500), 2: (120000, 165000)}

_NAME_RE = re.compile(r"vfnet_(?P<kind>[RX])_(?P<depth>\d+)(?:_(?P<groups>\d+)x(?P<width>\d+)d)?_FPN(?P<ms>_MS)?_(?P<num_x>\d)x")


def parse_name(path):
    """What a model zoo file name promises: depth, groups, width per group, MS train, schedule."""
    m = _NAME_RE.match(os.path.basename(path))
    if m is None:
        return None
    return dict(
        depth=int(m["depth"]),
        groups=int(m["groups"] or 1),
        width=int(m["width"] or 64),
        ms=bool(m["ms"]),
        num_x=int(m["num_x"]),
    )


# ---------------------------------------------------------------- expected parameter counts
# Computed from the layer shapes alone (no detectron2, no torchvision).

_BLOCKS = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}


def resnet_params(depth, groups=1, width=64, stem=64, bn=False, fc=False):
    """Parameters of a bottleneck ResNet/ResNeXt: conv weights (no biases), plus BN affine
    parameters and the 1000-way classifier if asked (to compare with torchvision's counts)."""
    n = 3 * stem * 7 * 7 + (2 * stem if bn else 0)
    in_c, out_c, b = stem, stem * 4, groups * width
    for num_blocks in _BLOCKS[depth]:
        for i in range(num_blocks):
            cin = in_c if i == 0 else out_c
            n += cin * b + b * (b // groups) * 9 + b * out_c
            n += 2 * (b + b + out_c) if bn else 0
            if i == 0:  # projection shortcut
                n += in_c * out_c + (2 * out_c if bn else 0)
        in_c, out_c, b = out_c, out_c * 2, b * 2
    if fc:
        n += in_c * 1000 + 1000
    return n


def fpn_params(in_channels=(512, 1024, 2048), c=256):
    laterals = sum(ci * c + c for ci in in_channels)
    outputs = len(in_channels) * (c * c * 9 + c)
    p6_p7 = 2 * (c * c * 9 + c)
    return laterals + outputs + p6_p7


def head_params(c=256, num_convs=3, num_classes=80, num_levels=5):
    conv_gn = c * c * 9 + 2 * c  # 3x3 conv without bias + GroupNorm
    towers = 2 * num_convs * conv_gn
    bbox_init = conv_gn + (c * 4 * 9 + 4)
    bbox_refine = c * c * 9 + (c * 4 * 9 + 4)  # star deformable conv (no bias) + 3x3 conv
    cls = c * c * 9 + (c * num_classes * 9 + num_classes)
    scales = 2 * num_levels
    return towers + bbox_init + bbox_refine + cls + scales


def vfnet_params(depth, groups=1, width=64):
    return resnet_params(depth, groups, width) + fpn_params() + head_params()


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
        for row in (
            "vfnet_R_50_FPN_1x",
            "vfnet_R_50_FPN_MS_2x",
            "vfnet_R_101_FPN_1x",
            "vfnet_R_101_FPN_2x",
            "vfnet_R_101_FPN_MS_2x",
            "vfnet_X_101_32x4d_FPN_MS_2x",
            "vfnet_X_101_64x4d_FPN_MS_2x",
        ):
            self.assertIn(row + ".py", names)
        self.assertIn(os.path.join(CONFIG_DIR, "vfnet_R_50_FPN_1x.yaml"), YAML_CONFIGS)
        for path in YAML_CONFIGS:
            self.assertIsNotNone(twin(path, ".py"), f"{path} has no LazyConfig twin")

    def test_configs_do_not_use_the_installed_model_zoo(self):
        for path in glob.glob(os.path.join(REPO, "configs", "**", "*.py"), recursive=True):
            with open(path) as f:
                text = f.read()
            self.assertNotIn("model_zoo", text, path)
            self.assertNotIn("get_config(", text, path)

    def test_reference_ap_in_header(self):
        expected = {
            "vfnet_R_50_FPN_1x": "41.6",
            "vfnet_R_50_FPN_MS_2x": "44.5",
            "vfnet_R_101_FPN_1x": "43.0",
            "vfnet_R_101_FPN_2x": "43.5",
            "vfnet_R_101_FPN_MS_2x": "46.2",
            "vfnet_X_101_32x4d_FPN_MS_2x": "47.4",
            "vfnet_X_101_64x4d_FPN_MS_2x": "48.2",
        }
        for name, ap in expected.items():
            for ext in (".py", ".yaml"):
                path = os.path.join(CONFIG_DIR, name + ext)
                if not os.path.isfile(path):
                    continue
                with open(path) as f:
                    header = "".join(line for line in f.readlines()[:3] if line.startswith("#"))
                self.assertIn(f"val AP {ap}", header, path)


class ParameterCountFormulaTest(unittest.TestCase):
    def test_formula_matches_torchvision_published_counts(self):
        # torchvision's documented parameter counts (with BN and the ImageNet classifier)
        self.assertEqual(resnet_params(50, bn=True, fc=True), 25_557_032)
        self.assertEqual(resnet_params(101, bn=True, fc=True), 44_549_160)
        self.assertEqual(resnet_params(101, 32, 8, bn=True, fc=True), 88_791_336)
        self.assertEqual(resnet_params(101, 64, 4, bn=True, fc=True), 83_455_272)


class LazyConfigModelTest(unittest.TestCase):
    def check_model(self, model, expect):
        self.assertIsInstance(model, VFNet)
        bottom_up = model.backbone.bottom_up
        stages = [bottom_up.res2, bottom_up.res3, bottom_up.res4, bottom_up.res5]
        self.assertEqual([len(s) for s in stages], _BLOCKS[expect["depth"]])
        first = bottom_up.res2[0]
        self.assertEqual(first.conv2.groups, expect["groups"])
        self.assertEqual(first.conv2.out_channels, expect["groups"] * expect["width"])
        self.assertEqual(bottom_up.res5[-1].conv3.out_channels, 2048)
        # torchvision style: the stride is on the 3x3 conv
        self.assertEqual(tuple(bottom_up.res3[0].conv1.stride), (1, 1))
        self.assertEqual(tuple(bottom_up.res3[0].conv2.stride), (2, 2))
        self.assertIsInstance(bottom_up.stem.conv1.norm, FrozenBatchNorm2d)
        self.assertIsInstance(bottom_up.res4[0].conv2.norm, FrozenBatchNorm2d)
        # stem and res2 frozen (freeze_at=2), the rest trainable
        for name, p in bottom_up.named_parameters():
            self.assertEqual(p.requires_grad, not name.startswith(("stem.", "res2.")), name)
        shapes = model.backbone.output_shape()
        self.assertEqual(model.head_in_features, ["p3", "p4", "p5", "p6", "p7"])
        self.assertEqual([shapes[f].stride for f in model.head_in_features], [8, 16, 32, 64, 128])
        self.assertEqual({shapes[f].channels for f in model.head_in_features}, {256})
        self.assertEqual(model.head.strides, [8, 16, 32, 64, 128])
        self.assertEqual(model.head.cls_score.out_channels, 80)
        self.assertEqual(len(model.head.cls_subnet), 3)
        self.assertEqual(model.num_classes, 80)
        self.assertEqual(model.anchor_generator.strides, [8, 16, 32, 64, 128])
        self.assertEqual(model.anchor_generator.offset, 0.0)
        self.assertIsInstance(model.assigner, ATSSAssigner)
        self.assertEqual(model.assigner.topk, 9)
        self.assertEqual(model.input_format, "RGB")
        torch.testing.assert_close(model.pixel_mean.flatten(), torch.tensor(PIXEL_MEAN))
        torch.testing.assert_close(model.pixel_std.flatten(), torch.tensor(PIXEL_STD))
        self.assertEqual(
            num_params(model), vfnet_params(expect["depth"], expect["groups"], expect["width"])
        )
        stem_res2 = num_params(bottom_up.stem) + num_params(bottom_up.res2)
        self.assertEqual(num_params(model, trainable_only=True), num_params(model) - stem_res2)

    def test_every_config_builds_its_model(self):
        counts = {}
        for path in PY_CONFIGS:
            with self.subTest(config=os.path.basename(path)):
                cfg = load_lazy(path)
                self.assertEqual(set(cfg.keys()), {"dataloader", "lr_multiplier", "model", "optimizer", "train"})
                model = instantiate(cfg.model)
                self.assertIsInstance(model, VFNet)
                expect = parse_name(path)
                if expect is not None:
                    self.check_model(model, expect)
                counts[os.path.basename(path)] = num_params(model)
                del model
        self.assertGreater(counts["vfnet_R_101_FPN_1x.py"], counts["vfnet_R_50_FPN_1x.py"])
        self.assertGreater(counts["vfnet_X_101_64x4d_FPN_MS_2x.py"], counts["vfnet_X_101_32x4d_FPN_MS_2x.py"])
        self.assertEqual(counts["vfnet_R_50_FPN_1x.py"], 32_838_434)

    def test_init_checkpoint_is_set(self):
        for path in PY_CONFIGS:
            with self.subTest(config=os.path.basename(path)):
                self.assertTrue(load_lazy(path).train.init_checkpoint)

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


class OptimizerConfigTest(unittest.TestCase):
    def test_bias_lr_and_decay(self):
        model = r50_model()
        cfg = load_lazy(os.path.join(CONFIG_DIR, "vfnet_R_50_FPN_1x.py"))
        cfg.optimizer.params.model = model
        optimizer = instantiate(cfg.optimizer)
        self.assertIsInstance(optimizer, torch.optim.SGD)
        self.assertEqual(optimizer.defaults["lr"], 0.01)
        self.assertEqual(optimizer.defaults["momentum"], 0.9)
        self.assertEqual(optimizer.defaults["weight_decay"], 1e-4)
        settings = optimizer_settings(optimizer, model)
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        self.assertEqual(set(settings), trainable)
        num_bias = 0
        for name, (lr, wd) in settings.items():
            if name.endswith(".bias"):
                num_bias += 1
                self.assertAlmostEqual(lr, 0.02, msg=name)
                self.assertEqual(wd, 0.0, name)
            else:
                self.assertAlmostEqual(lr, 0.01, msg=name)
                self.assertEqual(wd, 1e-4, name)
        self.assertGreater(num_bias, 10)
        self.assertIn("head.cls_score.bias", settings)
        self.assertIn("head.cls_subnet.0.norm.weight", settings)

    def test_bias_lr_follows_base_lr(self):
        model = r50_model()
        cfg = load_lazy(os.path.join(CONFIG_DIR, "vfnet_R_50_FPN_1x.py"))
        cfg.optimizer.lr = 0.02
        cfg.optimizer.params.model = model
        settings = optimizer_settings(instantiate(cfg.optimizer), model)
        self.assertAlmostEqual(settings["head.cls_score.bias"][0], 0.04)
        self.assertAlmostEqual(settings["head.cls_score.weight"][0], 0.02)

    def test_every_config_has_the_recipe_optimizer(self):
        for path in PY_CONFIGS:
            with self.subTest(config=os.path.basename(path)):
                opt = load_lazy(path).optimizer
                self.assertEqual((opt.lr, opt.momentum, opt.weight_decay), (0.01, 0.9, 1e-4))
                self.assertEqual(opt.params.bias_lr_factor, 2.0)
                self.assertEqual(opt.params.weight_decay_bias, 0.0)

    def test_yaml_optimizer_matches_lazy(self):
        model = r50_model()
        cfg = load_lazy(os.path.join(CONFIG_DIR, "vfnet_R_50_FPN_1x.py"))
        cfg.optimizer.params.model = model
        lazy = optimizer_settings(instantiate(cfg.optimizer), model)
        yaml = optimizer_settings(build_optimizer(load_yaml(os.path.join(CONFIG_DIR, "vfnet_R_50_FPN_1x.yaml")), model), model)
        self.assertEqual(set(lazy), set(yaml))
        for name in lazy:
            self.assertAlmostEqual(lazy[name][0], yaml[name][0], msg=name)
            self.assertAlmostEqual(lazy[name][1], yaml[name][1], msg=name)


class ScheduleConfigTest(unittest.TestCase):
    def test_multipliers(self):
        for path in PY_CONFIGS:
            expect = parse_name(path)
            if expect is None:
                continue
            with self.subTest(config=os.path.basename(path)):
                cfg = load_lazy(path)
                max_iter = cfg.train.max_iter
                self.assertEqual(max_iter, expect["num_x"] * ITERS_1X)
                sched = instantiate(cfg.lr_multiplier)
                self.assertIsInstance(sched, ParamScheduler)

                def at(it):
                    return sched(it / max_iter)

                first, second = MILESTONES[expect["num_x"]]
                self.assertAlmostEqual(at(0), 0.1)
                self.assertAlmostEqual(at(250), 0.55)
                self.assertAlmostEqual(at(500), 1.0)
                self.assertAlmostEqual(at(501), 1.0)
                self.assertAlmostEqual(at(first - 1), 1.0)
                self.assertAlmostEqual(at(first), 0.1)
                self.assertAlmostEqual(at(second - 1), 0.1)
                self.assertAlmostEqual(at(second), 0.01)
                self.assertAlmostEqual(at(max_iter - 1), 0.01)

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
                resize, flip = train.augmentations.augs
                self.assertIsInstance(resize, T.ResizeShortestEdge)
                self.assertIsInstance(flip, T.RandomFlip)
                self.assertEqual((flip.horizontal, flip.prob), (True, 0.5))
                self.assertEqual(resize.max_size, 1333)
                if expect is not None and expect["ms"]:
                    self.assertEqual(tuple(resize.short_edge_length), (480, 960))
                    self.assertEqual(resize.sample_style, "range")
                else:
                    self.assertEqual(tuple(resize.short_edge_length), (800, 800))

                test = instantiate(dl.test.mapper)
                self.assertFalse(test.is_train)
                self.assertEqual(test.image_format, "RGB")
                (test_resize,) = test.augmentations.augs
                self.assertEqual(tuple(test_resize.short_edge_length), (800, 800))
                self.assertEqual(test_resize.max_size, 1333)

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
                self.assertEqual(cfg.INPUT.FORMAT, "RGB")
                lazy = load_lazy(twin(path, ".py")).dataloader
                lazy_resize = lazy.train.mapper.augmentations[0]
                resize, flip = build_augmentation(cfg, is_train=True)
                self.assertEqual(resize_sizes(resize), resize_sizes(instantiate(lazy_resize)))
                self.assertEqual(resize.max_size, lazy_resize.max_size)
                self.assertIsInstance(flip, T.RandomFlip)
                (test_resize,) = build_augmentation(cfg, is_train=False)
                self.assertEqual(resize_sizes(test_resize), ("choice", {800}))
                self.assertEqual(test_resize.max_size, 1333)
                self.assertEqual(cfg.SOLVER.IMS_PER_BATCH, lazy.train.total_batch_size)


class YamlConfigTest(unittest.TestCase):
    def test_yaml_builds_the_lazy_model(self):
        for path in YAML_CONFIGS:
            with self.subTest(config=os.path.basename(path)):
                cfg = load_yaml(path)
                self.assertEqual(cfg.MODEL.META_ARCHITECTURE, "VFNet")
                self.assertEqual(list(cfg.MODEL.PIXEL_MEAN), PIXEL_MEAN)
                self.assertEqual(list(cfg.MODEL.PIXEL_STD), PIXEL_STD)
                yaml_model = build_model(cfg)
                self.assertIsInstance(yaml_model, VFNet)
                lazy_model = instantiate(load_lazy(twin(path, ".py")).model)
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
                for a, b in zip(yaml_model.anchor_generator.cell_anchors, lazy_model.anchor_generator.cell_anchors):
                    torch.testing.assert_close(a, b)
                self.assertEqual(yaml_model.head.box_normalizers, lazy_model.head.box_normalizers)
                torch.testing.assert_close(yaml_model.pixel_mean, lazy_model.pixel_mean)
                torch.testing.assert_close(yaml_model.pixel_std, lazy_model.pixel_std)
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
                self.assertEqual(tuple(s.STEPS), MILESTONES[s.MAX_ITER // ITERS_1X])
                self.assertEqual(cfg.MODEL.WEIGHTS, lazy.train.init_checkpoint)
                expect = parse_name(path)
                if expect is not None:
                    self.assertEqual(s.MAX_ITER, expect["num_x"] * ITERS_1X)

    def test_base_yaml_builds(self):
        model = build_model(load_yaml(os.path.join(CONFIG_DIR, "Base-VFNet.yaml")))
        self.assertIsInstance(model, VFNet)
        self.assertEqual(num_params(model), vfnet_params(50))

    def test_r50_yaml_and_lazy_give_the_same_detections(self):
        lazy_model = r50_model().eval()
        yaml_model = build_model(load_yaml(os.path.join(CONFIG_DIR, "vfnet_R_50_FPN_1x.yaml"))).eval()
        yaml_model.load_state_dict(lazy_model.state_dict())
        image = torch.randint(0, 256, (3, 128, 160), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
        outputs = []
        for model in (lazy_model, yaml_model):
            old = model.test_score_thresh
            model.test_score_thresh = 0.0
            try:
                with torch.no_grad():
                    outputs.append(model([{"image": image}])[0]["instances"])
            finally:
                model.test_score_thresh = old
        a, b = outputs
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


if __name__ == "__main__":
    unittest.main()
