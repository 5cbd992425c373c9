"""tools/quickstart.py end to end on the tiny shapes split: 2 iterations, evaluation, drawings, analysis, summary."""
import importlib.util
import json
import os
import tempfile
import unittest

import torch

from vfnet_test_utils import REPO_ROOT

TINY = [
    "dataloader.train.dataset.names=vfnet_shapes_train_tiny",
    "dataloader.test.dataset.names=vfnet_shapes_val_tiny",
    "dataloader.evaluator.dataset_name=vfnet_shapes_val_tiny",
    "dataloader.train.total_batch_size=2",
    "train.max_iter=2",
    "model.test_score_thresh=0.0",  # a 2-iteration model scores below the default 0.05
]


def _quickstart_tool():
    path = os.path.join(REPO_ROOT, "tools", "quickstart.py")
    spec = importlib.util.spec_from_file_location("vfnet_quickstart_tool", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class QuickstartToolTest(unittest.TestCase):
    def setUp(self):
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def tearDown(self):
        torch.set_num_threads(self.threads)

    def test_two_iterations_write_the_summary_of_the_evaluation(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "qs")
            _quickstart_tool().main(["--output-dir", out, "--num-processes", "1", "--num-images", "2", *TINY])
            self.assertTrue(os.path.isfile(os.path.join(out, "model_final.pth")))  # --output-dir wins over the config's
            with open(os.path.join(out, "eval_metrics.json")) as f:
                bbox = json.load(f)["bbox"]  # written by the evaluation
            with open(os.path.join(out, "quickstart_summary.json")) as f:
                summary = json.load(f)
            reported = (summary["bbox_AP"], summary["bbox_AP50"], summary["bbox_AP75"])
            self.assertEqual(reported, (bbox["AP"], bbox["AP50"], bbox["AP75"]))
            self.assertTrue(0.0 <= summary["score_calibration_ece"] <= 1.0)
            self.assertLessEqual(summary["train_and_eval_minutes"], summary["total_minutes"])
            self.assertEqual(len([f for f in os.listdir(os.path.join(out, "val_detections")) if f.endswith(".png")]), 2)
            self.assertTrue(any(f.endswith(".png") for f in os.listdir(os.path.join(out, "analysis"))))


if __name__ == "__main__":
    unittest.main()
