"""Parity with the reference (MMDetection) on every fixture, and the checkpoint converter."""
import os
import subprocess
import sys
import tempfile
import unittest

import torch
from detectron2.checkpoint import DetectionCheckpointer

from vfnet.checkpoint import VFNetCheckpointer
from vfnet.mmdet_checkpoint import UnsupportedCheckpointError, convert_mmdet_state_dict, extract_state_dict
from vfnet.mmdet_parity import TOLERANCES, build_vfnet_from_mmdet_config, check_fixture, decode_fixture_weights, load_fixture
from vfnet_test_utils import FIXTURES_DIR, REPO_ROOT, fixture_paths

FIXTURES = fixture_paths()
# The fixtures are the project's proof of parity: without them the suite fails, unless skipping is
# asked for explicitly (e.g. on a machine without the shared folder).
needs_fixtures = unittest.skipIf(
    not FIXTURES and os.environ.get("VFNET_SKIP_FIXTURES") == "1", "VFNET_SKIP_FIXTURES=1 and no fixtures"
)
# Every model the reference's zoo needs has a fixture; a new fixture is checked whatever its name.
EXPECTED_FIXTURES = {
    "mmdet_vfnet_small.pt",
    "mmdet_vfnet_dcn_last_conv.pt",
    "mmdet_vfnet_fcos_assigner.pt",
    "mmdet_vfnet_dcn_backbone.pt",
    "mmdet_vfnet_res2net.pt",
    "mmdet_vfnetx.pt",
}


@needs_fixtures
class FixtureParityTest(unittest.TestCase):
    def test_fixtures_are_there(self):
        names = {os.path.basename(p) for p in FIXTURES}
        self.assertTrue(EXPECTED_FIXTURES <= names, f"missing from {FIXTURES_DIR}: {sorted(EXPECTED_FIXTURES - names)}")

    def test_every_fixture(self):
        for path in FIXTURES:
            with self.subTest(fixture=os.path.basename(path)):
                fixture = load_fixture(path)
                report = check_fixture(fixture)
                self.assertEqual(report["missing_keys"], [])
                self.assertEqual(report["unexpected_keys"], [])
                if fixture.get("neck_outs") is not None:
                    self.assertLessEqual(report["neck_max_abs"], TOLERANCES["head_abs"])
                if any(a is not None for a in fixture.get("atss") or []):
                    self.assertEqual(report["valid_flag_mismatches"], [0] * len(fixture["atss"]))
                    self.assertEqual(report["assignment_label_mismatches"], [0] * len(fixture["atss"]))
                # |ours - reference| <= head_abs + head_rel * |reference|, every element
                self.assertEqual(set(report["head_max_excess"]) - {"neck"}, set(report["head_max_abs"]))
                for name, excess in report["head_max_excess"].items():
                    self.assertLessEqual(excess, TOLERANCES["head_abs"], name)
                # the relative part is float rounding of pixel-sized values, not a licence
                for name, diff in report["head_max_abs"].items():
                    self.assertLessEqual(diff, 1e-3, name)
                for name, rel in {**report["losses_rel"], **report.get("empty_gt_losses_rel", {})}.items():
                    self.assertLessEqual(rel, TOLERANCES["loss_rel"], name)
                for key in ("detections", "detections_small_nms_pre"):
                    dets = report[key]
                    self.assertTrue(dets["counts_equal"] and dets["labels_equal"], f"{key}: {dets}")
                    self.assertLessEqual(dets["box_max_abs"], TOLERANCES["box_abs"])
                    self.assertLessEqual(dets["score_max_abs"], TOLERANCES["score_abs"])
                    self.assertGreater(sum(c[0] for c in dets["counts"]), 0)
                self.assertTrue(report["ok"])

    def test_cli_passes_and_fails(self):
        tool = os.path.join(REPO_ROOT, "tools", "check_mmdet_parity.py")
        ok = subprocess.run([sys.executable, tool, FIXTURES[0]], capture_output=True, text=True)
        self.assertEqual(ok.returncode, 0, ok.stdout + ok.stderr)
        self.assertIn('"ok": true', ok.stdout)
        # A fixture whose reference outputs no longer match its weights must fail the check.
        fixture = load_fixture(FIXTURES[0])
        fixture["head_outputs_train"]["cls_scores"][0] = fixture["head_outputs_train"]["cls_scores"][0] + 1e-3
        fixture["losses"]["loss_cls"] = fixture["losses"]["loss_cls"] * 1.001
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "tampered.pt")
            torch.save(fixture, path)
            bad = subprocess.run([sys.executable, tool, path], capture_output=True, text=True)
        self.assertEqual(bad.returncode, 1, bad.stdout + bad.stderr)
        self.assertIn('"ok": false', bad.stdout)

    def test_converted_checkpoint_loads_cleanly(self):
        # the CLI on the simplest and on the most complex reference layout (Res2Net-DCN + PAFPN-X)
        for path in sorted({FIXTURES[0], *[p for p in FIXTURES if p.endswith("mmdet_vfnetx.pt")]}):
            with self.subTest(fixture=os.path.basename(path)):
                fixture = load_fixture(path)
                weights = decode_fixture_weights(fixture)
                model = build_vfnet_from_mmdet_config(fixture["meta"]["model_cfg"], fixture["meta"])
                with tempfile.TemporaryDirectory() as tmp:
                    src, dst = os.path.join(tmp, "mmdet.pth"), os.path.join(tmp, "d2.pth")
                    torch.save({"meta": {"mmdet_version": "2.28.2"}, "state_dict": weights}, src)
                    tool = os.path.join(REPO_ROOT, "tools", "convert_mmdet_checkpoint.py")
                    run = subprocess.run([sys.executable, tool, src, dst], capture_output=True, text=True)
                    self.assertEqual(run.returncode, 0, run.stderr)
                    DetectionCheckpointer(model).load(dst)
                    converted = torch.load(dst, weights_only=False)["model"]
                state = model.state_dict()
                self.assertEqual(set(converted), set(state))
                for key, value in converted.items():
                    self.assertTrue(torch.equal(state[key], value.to(state[key].dtype)), key)


class ConverterRefusalTest(unittest.TestCase):
    def _head(self):
        return {
            "backbone.conv1.weight": torch.zeros(1),
            "backbone.layer1.0.conv1.weight": torch.zeros(1),
            "neck.lateral_convs.0.conv.weight": torch.zeros(1),
            "bbox_head.vfnet_cls.weight": torch.zeros(1),
        }

    def test_two_stage_detector(self):
        sd = {**self._head(), "roi_head.bbox_head.fc_cls.weight": torch.zeros(1)}
        with self.assertRaisesRegex(UnsupportedCheckpointError, "roi_head"):
            convert_mmdet_state_dict(sd)

    def test_other_head(self):
        sd = self._head()
        del sd["bbox_head.vfnet_cls.weight"]
        sd["bbox_head.atss_cls.weight"] = torch.zeros(1)
        with self.assertRaisesRegex(UnsupportedCheckpointError, "not a VFNetHead"):
            convert_mmdet_state_dict(sd)

    def test_other_backbone(self):
        sd = {k: v for k, v in self._head().items() if not k.startswith("backbone.")}
        sd["backbone.patch_embed.projection.weight"] = torch.zeros(1)
        with self.assertRaisesRegex(UnsupportedCheckpointError, r"neither .*ResNet.* nor a Res2Net.*patch_embed"):
            convert_mmdet_state_dict(sd)

    def test_deformable_conv_elsewhere_in_the_backbone(self):
        # DCN on the 1x1 conv does not exist in the reference's zoo
        sd = {**self._head(), "backbone.layer2.0.conv1.conv_offset.weight": torch.zeros(1)}
        with self.assertRaisesRegex(UnsupportedCheckpointError, r"layer2\.0\.conv1\.conv_offset"):
            convert_mmdet_state_dict(sd)

    def test_unknown_neck_key(self):
        sd = {**self._head(), "neck.fpn_convs.0.bn.weight": torch.zeros(1)}
        with self.assertRaisesRegex(UnsupportedCheckpointError, r"neck\.fpn_convs\.0\.bn\.weight"):
            convert_mmdet_state_dict(sd)

    def test_unknown_key(self):
        sd = {**self._head(), "bbox_head.vfnet_centerness.weight": torch.zeros(1)}
        with self.assertRaisesRegex(UnsupportedCheckpointError, "vfnet_centerness"):
            convert_mmdet_state_dict(sd)

    def test_not_a_checkpoint(self):
        with self.assertRaisesRegex(UnsupportedCheckpointError, "expected a checkpoint"):
            extract_state_dict([1, 2])
        with self.assertRaisesRegex(UnsupportedCheckpointError, "no state dict of tensors"):
            extract_state_dict({"epoch": 12, "optimizer": {}})
        with self.assertRaisesRegex(UnsupportedCheckpointError, "expected a state dict"):
            convert_mmdet_state_dict([1, 2])  # type: ignore[arg-type]

    def test_cli_refuses_with_message(self):
        tool = os.path.join(REPO_ROOT, "tools", "convert_mmdet_checkpoint.py")
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "frcnn.pth")
            torch.save({"state_dict": {**self._head(), "rpn_head.rpn_cls.weight": torch.zeros(1)}}, src)
            run = subprocess.run([sys.executable, tool, src, os.path.join(tmp, "out.pth")], capture_output=True, text=True)
            self.assertEqual(run.returncode, 2)
            self.assertIn("rpn_head", run.stderr)
            self.assertFalse(os.path.exists(os.path.join(tmp, "out.pth")))


_HEAD_NAMES = {
    "head.bbox_init_conv.weight": "bbox_head.vfnet_reg_conv.conv.weight",
    "head.bbox_init_conv.norm.weight": "bbox_head.vfnet_reg_conv.gn.weight",
    "head.bbox_init_conv.norm.bias": "bbox_head.vfnet_reg_conv.gn.bias",
    "head.bbox_init_pred.weight": "bbox_head.vfnet_reg.weight",
    "head.bbox_init_pred.bias": "bbox_head.vfnet_reg.bias",
    "head.bbox_refine_dconv.weight": "bbox_head.vfnet_reg_refine_dconv.weight",
    "head.bbox_refine_pred.weight": "bbox_head.vfnet_reg_refine.weight",
    "head.bbox_refine_pred.bias": "bbox_head.vfnet_reg_refine.bias",
    "head.cls_dconv.weight": "bbox_head.vfnet_cls_dconv.weight",
    "head.cls_score.weight": "bbox_head.vfnet_cls.weight",
    "head.cls_score.bias": "bbox_head.vfnet_cls.bias",
}

_TOWER = {"cls": "cls", "bbox": "reg"}

_R2_STEM = {"1": "0", "2": "3", "3": "6"}
_R2_STEM_NORM = {"1": "1", "2": "4", "3": "7"}


def _layer(m) -> str:
    return f"backbone.layer{int(m[1]) - 1}.{m[2]}"


# (pattern on this project's key, the MMDetection key from the match), written independently of
# the converter from MMDetection's module names (resnet.py, res2net.py, fpn.py, the reference's
# pafpnx.py, vfnet_head.py).
_RESNET_REVERSE = [
    (r"^backbone\.bottom_up\.stem\.conv1\.weight$", lambda m: "backbone.conv1.weight"),
    (r"^backbone\.bottom_up\.stem\.conv1\.norm\.(\w+)$", lambda m: f"backbone.bn1.{m[1]}"),
    (r"^backbone\.bottom_up\.res(\d)\.(\d+)\.conv2\.conv_offset\.(\w+)$", lambda m: f"{_layer(m)}.conv2.conv_offset.{m[3]}"),
    (r"^backbone\.bottom_up\.res(\d)\.(\d+)\.conv(\d)\.weight$", lambda m: f"{_layer(m)}.conv{m[3]}.weight"),
    (r"^backbone\.bottom_up\.res(\d)\.(\d+)\.conv(\d)\.norm\.(\w+)$", lambda m: f"{_layer(m)}.bn{m[3]}.{m[4]}"),
    (r"^backbone\.bottom_up\.res(\d)\.(\d+)\.shortcut\.weight$", lambda m: f"{_layer(m)}.downsample.0.weight"),
    (r"^backbone\.bottom_up\.res(\d)\.(\d+)\.shortcut\.norm\.(\w+)$", lambda m: f"{_layer(m)}.downsample.1.{m[3]}"),
]
_RES2NET_REVERSE = [
    (r"^backbone\.bottom_up\.stem\.conv(\d)\.weight$", lambda m: f"backbone.stem.{_R2_STEM[m[1]]}.weight"),
    (r"^backbone\.bottom_up\.stem\.conv(\d)\.norm\.(\w+)$", lambda m: f"backbone.stem.{_R2_STEM_NORM[m[1]]}.{m[2]}"),
    (r"^backbone\.bottom_up\.res(\d)\.(\d+)\.convs\.(\d)\.conv_offset\.(\w+)$", lambda m: f"{_layer(m)}.convs.{m[3]}.conv_offset.{m[4]}"),
    (r"^backbone\.bottom_up\.res(\d)\.(\d+)\.convs\.(\d)\.weight$", lambda m: f"{_layer(m)}.convs.{m[3]}.weight"),
    (r"^backbone\.bottom_up\.res(\d)\.(\d+)\.convs\.(\d)\.norm\.(\w+)$", lambda m: f"{_layer(m)}.bns.{m[3]}.{m[4]}"),
    (r"^backbone\.bottom_up\.res(\d)\.(\d+)\.conv(\d)\.weight$", lambda m: f"{_layer(m)}.conv{m[3]}.weight"),
    (r"^backbone\.bottom_up\.res(\d)\.(\d+)\.conv(\d)\.norm\.(\w+)$", lambda m: f"{_layer(m)}.bn{m[3]}.{m[4]}"),
    (r"^backbone\.bottom_up\.res(\d)\.(\d+)\.shortcut\.weight$", lambda m: f"{_layer(m)}.downsample.1.weight"),
    (r"^backbone\.bottom_up\.res(\d)\.(\d+)\.shortcut\.norm\.(\w+)$", lambda m: f"{_layer(m)}.downsample.2.{m[3]}"),
]
_NECK_REVERSE = [
    (r"^backbone\.fpn_lateral(\d)\.(\w+)$", lambda m: f"neck.lateral_convs.{int(m[1]) - 3}.conv.{m[2]}"),
    (r"^backbone\.fpn_output(\d)\.norm\.(\w+)$", lambda m: f"neck.fpn_convs.{int(m[1]) - 3}.gn.{m[2]}"),
    (r"^backbone\.fpn_output(\d)\.(\w+)$", lambda m: f"neck.fpn_convs.{int(m[1]) - 3}.conv.{m[2]}"),
    (r"^backbone\.top_block\.p(\d)\.norm\.(\w+)$", lambda m: f"neck.fpn_convs.{int(m[1]) - 3}.gn.{m[2]}"),
    (r"^backbone\.top_block\.p(\d)\.(\w+)$", lambda m: f"neck.fpn_convs.{int(m[1]) - 3}.conv.{m[2]}"),
    (r"^backbone\.pa_downsample(\d)\.norm\.(\w+)$", lambda m: f"neck.downsample_convs.{int(m[1]) - 4}.gn.{m[2]}"),
    (r"^backbone\.pa_downsample(\d)\.(\w+)$", lambda m: f"neck.downsample_convs.{int(m[1]) - 4}.conv.{m[2]}"),
    (r"^backbone\.pa_output(\d)\.norm\.(\w+)$", lambda m: f"neck.pafpn_convs.{int(m[1]) - 3}.gn.{m[2]}"),
    (r"^backbone\.pa_output(\d)\.conv_offset\.(\w+)$", lambda m: f"neck.pafpn_convs.{int(m[1]) - 3}.conv.conv_offset.{m[2]}"),
    (r"^backbone\.pa_output(\d)\.(\w+)$", lambda m: f"neck.pafpn_convs.{int(m[1]) - 3}.conv.{m[2]}"),
]
_HEAD_REVERSE = [
    (r"^head\.(cls|bbox)_subnet\.(\d+)\.norm\.(\w+)$", lambda m: f"bbox_head.{_TOWER[m[1]]}_convs.{m[2]}.gn.{m[3]}"),
    (r"^head\.(cls|bbox)_subnet\.(\d+)\.conv_offset\.(\w+)$", lambda m: f"bbox_head.{_TOWER[m[1]]}_convs.{m[2]}.conv.conv_offset.{m[3]}"),
    (r"^head\.(cls|bbox)_subnet\.(\d+)\.(\w+)$", lambda m: f"bbox_head.{_TOWER[m[1]]}_convs.{m[2]}.conv.{m[3]}"),
    (r"^head\.bbox_init_scales\.(\d)\.scale$", lambda m: f"bbox_head.scales.{m[1]}.scale"),
    (r"^head\.bbox_refine_scales\.(\d)\.scale$", lambda m: f"bbox_head.scales_refine.{m[1]}.scale"),
]
_REVERSE_RULES = _RESNET_REVERSE + _NECK_REVERSE + _HEAD_REVERSE


def _mmdet_name(d2_key: str, res2net: bool = False) -> str:
    """This project's key -> the MMDetection key."""
    import re

    if d2_key in _HEAD_NAMES:
        return _HEAD_NAMES[d2_key]
    for pattern, build in (_RES2NET_REVERSE if res2net else _RESNET_REVERSE) + _NECK_REVERSE + _HEAD_REVERSE:
        m = re.match(pattern, d2_key)
        if m:
            return build(m)
    raise KeyError(f"no MMDetection name for {d2_key}")


class ResNeXtConversionTest(unittest.TestCase):
    def test_resnext_dcn_head_round_trip(self):
        model_cfg = {
            "type": "VFNet",
            "backbone": {"type": "ResNeXt", "depth": 50, "groups": 4, "base_width": 4, "base_channels": 16,
                         "style": "pytorch", "frozen_stages": 1, "out_indices": (0, 1, 2, 3)},
            "neck": {"type": "FPN", "in_channels": [64, 128, 256, 512], "out_channels": 32, "start_level": 1,
                     "add_extra_convs": "on_output", "relu_before_extra_convs": True, "num_outs": 5},
            "bbox_head": {"type": "VFNetHead", "num_classes": 3, "in_channels": 32, "feat_channels": 32,
                          "stacked_convs": 2, "dcn_on_last_conv": True},
        }
        model = build_vfnet_from_mmdet_config(model_cfg)
        conv2 = model.backbone.bottom_up.res2[0].conv2
        self.assertEqual((conv2.groups, conv2.out_channels), (4, 16))
        ours = model.state_dict()
        torch.manual_seed(0)
        mmdet = {_mmdet_name(k): torch.randn_like(v) if v.is_floating_point() else v for k, v in ours.items()}
        mmdet["backbone.bn1.num_batches_tracked"] = torch.tensor(0)
        converted = convert_mmdet_state_dict(mmdet)
        self.assertEqual(set(converted), set(ours))
        model.load_state_dict(converted, strict=True)
        for key, value in ours.items():
            self.assertTrue(torch.equal(model.state_dict()[key], mmdet[_mmdet_name(key)]), key)


class ZooConversionTest(unittest.TestCase):
    """Every row of the reference's model zoo: its MMDetection key layout converts to exactly the
    keys (and shapes) of the config's model; one row end to end through the CLI, the
    checkpointer and a prediction."""

    def test_every_zoo_layout(self):
        import glob

        from detectron2.config import LazyConfig, instantiate

        configs = sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "COCO-Detection", "vfnet*.py")))
        self.assertGreaterEqual(len(configs), 13)
        for path in configs:
            with self.subTest(config=os.path.basename(path)):
                with torch.device("meta"):
                    model = instantiate(LazyConfig.load(path).model)
                ours = model.state_dict()
                res2net = any(".convs." in k for k in ours)
                mmdet = {_mmdet_name(k, res2net): v for k, v in ours.items()}
                self.assertEqual(len(mmdet), len(ours))  # the reverse mapping is one to one
                converted = convert_mmdet_state_dict(mmdet)
                self.assertEqual(set(converted), set(ours))
                for key, value in converted.items():
                    self.assertEqual(value.shape, ours[key].shape, key)
                    self.assertIs(value, mmdet[_mmdet_name(key, res2net)])

    def test_dcn_row_end_to_end(self):
        from detectron2.config import LazyConfig, instantiate

        cfg = LazyConfig.load(os.path.join(REPO_ROOT, "configs", "COCO-Detection", "vfnet_R_50_FPN_MDCONV_c3-c5_MS_2x.py"))
        torch.manual_seed(0)
        model = instantiate(cfg.model).eval()
        g = torch.Generator().manual_seed(1)
        mmdet = {
            _mmdet_name(k): (torch.randn(v.shape, generator=g) * 0.01 if v.is_floating_point() else v)
            for k, v in model.state_dict().items()
        }
        for key in [k for k in mmdet if k.endswith("running_var")]:
            mmdet[key] = mmdet[key].abs() + 1.0
        mmdet["backbone.layer3.0.bn1.num_batches_tracked"] = torch.tensor(100)
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = os.path.join(tmp, "vfnet_r50_dcn.pth"), os.path.join(tmp, "d2.pth")
            torch.save({"meta": {"epoch": 24}, "state_dict": mmdet, "optimizer": {}}, src)
            tool = os.path.join(REPO_ROOT, "tools", "convert_mmdet_checkpoint.py")
            run = subprocess.run([sys.executable, tool, src, dst], capture_output=True, text=True)
            self.assertEqual(run.returncode, 0, run.stderr)
            self.assertRegex(run.stdout, r"wrote .*d2\.pth: vfnet checkpoint, \d+ tensors")
            self.assertEqual(set(torch.load(dst, weights_only=False)["model"]), set(model.state_dict()))
            VFNetCheckpointer(model, require_head=True).load(dst)
        for key, value in model.state_dict().items():
            self.assertTrue(torch.equal(value, mmdet[_mmdet_name(key)]), key)
        model.test_score_thresh = 0.0
        with torch.no_grad():
            instances = model([{"image": torch.zeros(3, 96, 128, dtype=torch.uint8)}])[0]["instances"]
        self.assertEqual(len(instances), 100)
        self.assertTrue(torch.isfinite(instances.pred_boxes.tensor).all())


if __name__ == "__main__":
    unittest.main()


def test_head_tolerance_is_absolute_plus_relative():
    from vfnet.mmdet_parity import _max_excess

    ref = torch.tensor([1500.0, 0.5], dtype=torch.float64)
    # 1.5e-2 off at 1500 px is within 1e-5 * 1500 = 1.5e-2 (excess 0); 2e-4 off at 0.5 exceeds
    # the absolute 1e-4 by 1e-4 (less its 5e-6 relative share).
    assert abs(_max_excess(ref + torch.tensor([1.5e-2, 0.0]), ref)) < 1e-9
    assert abs(_max_excess(ref + torch.tensor([0.0, 2e-4]), ref) - (2e-4 - 5e-6)) < 1e-9
    assert _max_excess(ref[:1], ref) == float("inf")
