"""MMDetection's optimizer parameter rules, on a small model with every kind of parameter."""
import unittest

import torch
from detectron2.config import get_cfg
from torch import nn

from vfnet import add_vfnet_config
from vfnet.layers import FrozenStatsBatchNorm2d, ModulatedDeformConv2d, StarDeformConv2d
from vfnet.solver import build_optimizer, mmdet_optimizer_params


def small_model() -> nn.Module:
    model = nn.Module()
    model.conv = nn.Conv2d(3, 4, 3)  # weight, bias
    model.bn = FrozenStatsBatchNorm2d(4)  # norm weight, bias
    model.gn = nn.GroupNorm(2, 4)
    model.dcn = ModulatedDeformConv2d(4, 4, 3, norm=nn.GroupNorm(2, 4))  # weight, conv_offset.{weight,bias}, norm
    model.star = StarDeformConv2d(4, 4, bias=True)
    model.frozen = nn.Conv2d(4, 4, 1)
    for p in model.frozen.parameters():
        p.requires_grad = False
    return model


# name -> (lr multiplier, weight decay multiplier), MMDetection's DefaultOptimizerConstructor with
# bias_lr_mult=2, bias_decay_mult=0 (norm_decay_mult=1, dcn_offset_lr_mult=1 by default)
EXPECTED = {
    "conv.weight": (1, 1),
    "conv.bias": (2, 0),
    "bn.weight": (1, 1),
    "bn.bias": (1, 1),
    "gn.weight": (1, 1),
    "gn.bias": (1, 1),
    "dcn.weight": (1, 1),
    "dcn.conv_offset.weight": (1, 1),
    "dcn.conv_offset.bias": (1, 1),
    "dcn.norm.weight": (1, 1),
    "dcn.norm.bias": (1, 1),
    "star.weight": (1, 1),
    "star.bias": (2, 0),
}


def settings_by_name(model, groups):
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for group in groups:
        for p in group["params"]:
            out[names[id(p)]] = (group["lr"], group["weight_decay"])
    return out


class MMDetOptimizerParamsTest(unittest.TestCase):
    def test_rules(self):
        model = small_model()
        groups = mmdet_optimizer_params(model, base_lr=0.01, weight_decay=1e-4)
        settings = settings_by_name(model, groups)
        self.assertEqual(set(settings), set(EXPECTED))  # frozen parameters left out
        for name, (lr_mult, wd_mult) in EXPECTED.items():
            self.assertAlmostEqual(settings[name][0], 0.01 * lr_mult, msg=name)
            self.assertAlmostEqual(settings[name][1], 1e-4 * wd_mult, msg=name)
        self.assertEqual(len(groups), 2)  # parameters of the same settings share a group

    def test_multipliers(self):
        model = small_model()
        settings = settings_by_name(
            model,
            mmdet_optimizer_params(
                model, base_lr=0.1, weight_decay=0.5, bias_lr_mult=3.0, bias_decay_mult=0.2,
                norm_decay_mult=0.0, dcn_offset_lr_mult=0.5,
            ),
        )
        self.assertEqual(settings["conv.bias"], (0.1 * 3.0, 0.5 * 0.2))
        self.assertEqual(settings["gn.bias"], (0.1, 0.0))
        self.assertEqual(settings["dcn.conv_offset.bias"], (0.05, 0.5))
        self.assertEqual(settings["dcn.conv_offset.weight"], (0.05, 0.5))
        self.assertEqual(settings["dcn.weight"], (0.1, 0.5))

    def test_yacs(self):
        cfg = get_cfg()
        add_vfnet_config(cfg)
        cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY = 0.01, 1e-4
        cfg.SOLVER.BIAS_LR_FACTOR, cfg.SOLVER.WEIGHT_DECAY_BIAS, cfg.SOLVER.WEIGHT_DECAY_NORM = 2.0, 0.0, 1e-4
        model = small_model()
        optimizer = build_optimizer(cfg, model)
        self.assertIsInstance(optimizer, torch.optim.SGD)
        settings = settings_by_name(model, optimizer.param_groups)
        for name, (lr_mult, wd_mult) in EXPECTED.items():
            self.assertAlmostEqual(settings[name][0], 0.01 * lr_mult, msg=name)
            self.assertAlmostEqual(settings[name][1], 1e-4 * wd_mult, msg=name)
        cfg.SOLVER.PARAM_RULES = "adam"
        with self.assertRaisesRegex(ValueError, "PARAM_RULES must be"):
            build_optimizer(cfg, model)

    def test_adamw_over_both_rules(self):
        cfg = get_cfg()
        add_vfnet_config(cfg)
        cfg.SOLVER.OPTIMIZER, cfg.SOLVER.BETAS = "AdamW", (0.8, 0.99)
        cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY = 1e-3, 0.05
        cfg.SOLVER.BIAS_LR_FACTOR, cfg.SOLVER.WEIGHT_DECAY_BIAS, cfg.SOLVER.WEIGHT_DECAY_NORM = 1.0, 0.0, 0.0
        model = small_model()
        for rules in ("mmdet", "detectron2"):
            cfg.SOLVER.PARAM_RULES = rules
            optimizer = build_optimizer(cfg, model)
            self.assertIsInstance(optimizer, torch.optim.AdamW, rules)
            self.assertEqual(optimizer.defaults["betas"], (0.8, 0.99))
            settings = settings_by_name(model, optimizer.param_groups)
            # weights decay, biases and norms do not (norm decay 0 under both rules)
            self.assertEqual(settings["conv.weight"], (1e-3, 0.05), rules)
            self.assertEqual(settings["conv.bias"], (1e-3, 0.0), rules)
            self.assertEqual(settings["gn.weight"], (1e-3, 0.0), rules)
        cfg.SOLVER.OPTIMIZER = "Adam"
        with self.assertRaisesRegex(ValueError, "SOLVER.OPTIMIZER must be one of"):
            build_optimizer(cfg, model)


if __name__ == "__main__":
    unittest.main()
