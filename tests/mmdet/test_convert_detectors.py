"""
Conversion of the reference's RetinaNet, ATSS, FoveaBox and RepPoints checkpoints
(tools/convert_mmdet_checkpoint.py), on the layouts of MMDetection's own state dicts (those of
the fixtures in tests/data): every key lands on the model, the names are those of the COCO
configs' models, and other layouts are refused by name.
"""
import contextlib
import io
import os
import tempfile
import unittest

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate

from vfnet.mmdet_checkpoint import UnsupportedCheckpointError
from vfnet.mmdet_checkpoint_detectors import convert_dense_detector_state_dict, converted_mmdet_checkpoint, detect_dense_detector
from vfnet.mmdet_parity import decode_fixture_weights, load_fixture
from vfnet.mmdet_parity_detectors import build_from_mmdet_config
from vfnet_test_utils import REPO_ROOT, fixture_paths, load_tool

DATA = os.path.join(REPO_ROOT, "tests", "data")
COCO_CONFIGS = {
    "retinanet": "configs/VFL-Detectors/retinanet_VFL_R_50_FPN_1x.py",
    "atss": "configs/VFL-Detectors/atss_VFL_R_50_FPN_1x.py",
    "fovea": "configs/VFL-Detectors/fovea_VFL_R_50_FPN_1x.py",
    "reppoints": "configs/VFL-Detectors/reppoints_moment_GN_VFL_R_50_FPN_1x.py",
}


_PREVIOUS_THREADS = []


def setUpModule():
    # small models: one thread is as fast, and much steadier on a shared, loaded machine
    _PREVIOUS_THREADS.append(torch.get_num_threads())
    torch.set_num_threads(1)


def tearDownModule():
    torch.set_num_threads(_PREVIOUS_THREADS.pop())


def _tool():
    return load_tool("convert_mmdet_checkpoint")


def _reference_state_dict(detector):
    fixture = load_fixture(os.path.join(DATA, f"mmdet_{detector}.pt"))
    return fixture, decode_fixture_weights(fixture)


class ConvertDenseDetectorsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.tool = _tool()

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def _convert_file(self, checkpoint, name):
        src, dst = os.path.join(self.tmp.name, f"{name}.pth"), os.path.join(self.tmp.name, f"{name}_d2.pth")
        torch.save(checkpoint, src)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = self.tool.main([src, dst])
        return rc, dst, out.getvalue() + err.getvalue()

    def test_reference_layouts_load_exactly(self):
        for detector in COCO_CONFIGS:
            with self.subTest(detector):
                fixture, state_dict = _reference_state_dict(detector)
                self.assertEqual(detect_dense_detector(state_dict), detector)
                # a checkpoint as MMDetection saves it, with its num_batches_tracked buffers
                checkpoint = {"meta": {"mmdet_version": "2.10.0"}, "state_dict": state_dict}
                rc, dst, log = self._convert_file(checkpoint, detector)
                self.assertEqual(rc, 0, log)
                self.assertIn(f"{detector} checkpoint", log)
                model = build_from_mmdet_config(fixture["meta"]["model_cfg"], fixture["meta"])
                converted = torch.load(dst, weights_only=False)["model"]
                incompatible = model.load_state_dict(converted, strict=False)
                self.assertEqual(incompatible.missing_keys, [])
                self.assertEqual(incompatible.unexpected_keys, [])
                for key, value in converted.items():
                    self.assertTrue(torch.equal(model.state_dict()[key], value), key)
                DetectionCheckpointer(model).load(dst)  # and Detectron2's checkpointer takes it as is

    def test_names_are_those_of_the_coco_configs(self):
        # the reference's R-50 checkpoints have these layouts at full width and with their own
        # number of tower convs: the same names as the COCO configs' models
        for detector, path in COCO_CONFIGS.items():
            with self.subTest(detector):
                fixture, state_dict = _reference_state_dict(detector)
                converted = convert_dense_detector_state_dict(state_dict)
                cfg = LazyConfig.load(os.path.join(REPO_ROOT, path))
                num_convs = fixture["meta"]["model_cfg"]["bbox_head"]["stacked_convs"]
                if detector == "retinanet":
                    cfg.model.head.conv_dims = [256] * num_convs
                else:
                    cfg.model.head.stacked_convs = num_convs
                self.assertEqual(sorted(converted), sorted(instantiate(cfg.model).state_dict()))

    def test_other_layouts_are_refused_by_name(self):
        _, retina = _reference_state_dict("retinanet")
        _, fovea = _reference_state_dict("fovea")
        _, reppoints = _reference_state_dict("reppoints")
        cases = [
            ({**retina, "roi_head.bbox_head.fc_cls.weight": torch.zeros(2)}, "roi_head"),
            ({**retina, "backbone.layer2.0.conv2.conv_offset.weight": torch.zeros(2)}, "deformable convolutions in the backbone"),
            ({**fovea, "bbox_head.feature_adaption.conv_offset.weight": torch.zeros(2)}, "with_deform"),
            ({k: v for k, v in reppoints.items() if k != "bbox_head.moment_transfer"}, "moment transform"),
            ({**retina, "bbox_head.extra_conv.weight": torch.zeros(2)}, "bbox_head.extra_conv.weight"),
        ]
        for state_dict, message in cases:
            with self.subTest(message):
                with self.assertRaisesRegex(UnsupportedCheckpointError, message):
                    converted_mmdet_checkpoint(state_dict)

    def test_unknown_head_names_what_it_found(self):
        state_dict = {"backbone.conv1.weight": torch.zeros(1), "bbox_head.fcos_cls.weight": torch.zeros(1)}
        rc, _, log = self._convert_file({"state_dict": state_dict}, "fcos")
        self.assertEqual(rc, 2)
        self.assertIn("bbox_head.fcos_cls", log)
        self.assertIn("RetinaHead", log)

    @unittest.skipIf(
        not any(p.endswith("mmdet_vfnet_small.pt") for p in fixture_paths()), "VFNet's shared fixtures are not available"
    )
    def test_vfnet_checkpoints_still_go_to_vfnet_converter(self):
        fixture = load_fixture(next(p for p in fixture_paths() if p.endswith("mmdet_vfnet_small.pt")))
        detector, checkpoint = converted_mmdet_checkpoint(decode_fixture_weights(fixture))
        self.assertEqual(detector, "vfnet")
        self.assertIn("head.bbox_refine_pred.weight", checkpoint["model"])


if __name__ == "__main__":
    unittest.main()
