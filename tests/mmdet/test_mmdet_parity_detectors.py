"""
Parity with MMDetection 2.28's own RetinaNet, ATSS, FoveaBox and RepPoints (focal loss) on the
fixtures in tests/data (tools/make_mmdet_dense_fixture.py): every stage within VFNet's
tolerances, the same assignment of every location, the same detections.
"""
import os
import unittest


from vfnet.mmdet_parity import TOLERANCES, load_fixture
from vfnet.mmdet_parity_detectors import FIXTURE_KIND, build_from_mmdet_config, check_dense_fixture
from vfnet_test_utils import REPO_ROOT

DATA = os.path.join(REPO_ROOT, "tests", "data")
DETECTORS = ("retinanet", "atss", "fovea", "reppoints")


def _fixture(detector):
    return load_fixture(os.path.join(DATA, f"mmdet_{detector}.pt"))


class DenseDetectorParityTest(unittest.TestCase):
    def test_every_fixture(self):
        for detector in DETECTORS:
            with self.subTest(detector):
                fixture = _fixture(detector)
                self.assertEqual(fixture["kind"], FIXTURE_KIND)
                report = check_dense_fixture(fixture)
                self.assertEqual(report["missing_keys"], [])
                self.assertEqual(report["unexpected_keys"], [])
                self.assertLessEqual(report["neck_max_abs"], TOLERANCES["head_abs"])
                for name, diff in report["head_max_abs"].items():
                    self.assertLessEqual(diff, TOLERANCES["head_abs"], name)
                for name, counts in report["label_mismatches"].items():
                    self.assertEqual(counts, [0] * len(counts), name)
                for name, rel in {**report["losses_rel"], **report["empty_gt_losses_rel"]}.items():
                    self.assertLessEqual(rel, TOLERANCES["loss_rel"], name)
                for key in ("detections", "detections_small_nms_pre"):
                    self.assertTrue(report[key]["counts_equal"], report[key]["counts"])
                    self.assertTrue(report[key]["labels_equal"])
                    self.assertLessEqual(report[key]["box_max_abs"], TOLERANCES["box_abs"])
                    self.assertLessEqual(report[key]["score_max_abs"], TOLERANCES["score_abs"])
                self.assertTrue(report["ok"])

    def test_fixtures_have_positives_and_detections(self):
        # a fixture whose images had no positive or no detection would test nothing
        for detector in DETECTORS:
            with self.subTest(detector):
                fixture = _fixture(detector)
                num_classes = fixture["meta"]["model_cfg"]["bbox_head"]["num_classes"]
                for labels in fixture["targets"]["labels"]:
                    self.assertGreater(int(((labels >= 0) & (labels < num_classes)).sum()), 0)
                for dets in fixture["detections"]:
                    self.assertGreaterEqual(len(dets["labels"]), 10)

    def test_a_wrong_weight_is_caught(self):
        fixture = _fixture("atss")
        fixture["state_dict"] = dict(fixture["state_dict"])
        key = "bbox_head.atss_centerness.bias"
        fixture["state_dict"][key] = fixture["state_dict"][key] + 0.5
        report = check_dense_fixture(fixture)
        self.assertFalse(report["ok"])
        self.assertGreater(report["head_max_abs"]["centernesses"], 0.1)

    def test_unsupported_configs_are_named(self):
        cfg = _fixture("fovea")["meta"]["model_cfg"]
        cfg = {**cfg, "bbox_head": {**cfg["bbox_head"], "with_deform": True}}
        with self.assertRaisesRegex(ValueError, "with_deform"):
            build_from_mmdet_config(cfg)
        with self.assertRaisesRegex(ValueError, "unsupported reference detector 'FCOS'"):
            build_from_mmdet_config({"type": "FCOS"})


if __name__ == "__main__":
    unittest.main()
