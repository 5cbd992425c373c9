"""tools/quickstart.py end to end on the tiny shapes split: 2 iterations, evaluation, drawings, analysis, summary."""
import json
import os
import tempfile
import unittest

import torch

from vfnet_test_utils import OneThreadTestCase, load_tool

TINY = [
    "dataloader.train.dataset.names=vfnet_shapes_train_tiny",
    "dataloader.test.dataset.names=vfnet_shapes_val_tiny",
    "dataloader.evaluator.dataset_name=vfnet_shapes_val_tiny",
    "dataloader.train.total_batch_size=2",
    "train.max_iter=2",
    "model.test_score_thresh=0.0",  # a 2-iteration model scores below the default 0.05
]

# Measured on the project's 2-core machine (seeded, so the same every run there): 500 iterations reach
# 70.1, 72.7 and 73.1 AP with train.seed 0, 1 and 2 in about 1.5 minutes (72.2, 71.7 and 72.3 with
# the head channels-last, before the quickstart's config turned it off); with the VFL targets
# written to the wrong class (gt + 1, a one-line bug in VFNet.losses) seed 0 reached 2.7. At 300
# iterations, as before, the guard sat in the steep part of learning: seeds 0-3 gave 29.5, 42.7,
# 14.8 and 48.1 AP (36.3, 47.2, 24.4 and 40.7 with the float32 star conv under bfloat16 autocast of
# the version before), so a change of rounding alone could cross its old threshold of 25.
GUARD_ITERS = 500
GUARD_MIN_AP = 50.0


class QuickstartToolTest(OneThreadTestCase):
    def test_two_iterations_write_the_summary_of_the_evaluation(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "qs")
            load_tool("quickstart").main(["--output-dir", out, "--num-processes", "1", "--num-images", "2", *TINY])
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

    def test_learns_the_tiny_split(self):
        """The regression guard of the quickstart's learning: GUARD_ITERS iterations of its recipe on
        the 32 images of the tiny split, evaluated on the same images, must reach GUARD_MIN_AP. A
        model that cannot learn (wrong targets, boxes, gradients or schedule) stays far below."""
        torch.set_num_threads(2)
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "qs")
            load_tool("quickstart").main([
                "--output-dir", out, "--num-processes", "1", "--num-images", "0",
                "dataloader.train.dataset.names=vfnet_shapes_train_tiny",
                "dataloader.test.dataset.names=vfnet_shapes_train_tiny",
                "dataloader.evaluator.dataset_name=vfnet_shapes_train_tiny",
                "dataloader.train.total_batch_size=8",
                f"train.max_iter={GUARD_ITERS}",
                "train.checkpointer.period=100000",
            ])
            with open(os.path.join(out, "quickstart_summary.json")) as f:
                summary = json.load(f)
            self.assertGreaterEqual(summary["bbox_AP"], GUARD_MIN_AP, summary)
            print(f"tiny-split guard: {summary['bbox_AP']:.1f} AP")


if __name__ == "__main__":
    unittest.main()
