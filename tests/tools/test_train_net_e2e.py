"""
End to end with the real Detectron2 trainer, data loader (a worker process), evaluator and
checkpointer: a few iterations of the quickstart on the tiny synthetic split, then --resume,
--eval-only, DefaultPredictor, the demo tool, and the errors users meet on bad input.
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

import cv2
import numpy as np

from vfnet_test_utils import REPO_ROOT

PY_CONFIG = os.path.join(REPO_ROOT, "configs", "Quickstart", "vfnet_R_18_narrow_shapes_cpu.py")
YAML_CONFIG = os.path.join(REPO_ROOT, "configs", "Quickstart", "vfnet_R_18_narrow_shapes_cpu.yaml")
TRAIN_NET = os.path.join(REPO_ROOT, "tools", "train_net.py")
TINY = [
    "dataloader.train.dataset.names=vfnet_shapes_train_tiny",
    "dataloader.test.dataset.names=vfnet_shapes_val_tiny",
    "dataloader.evaluator.dataset_name=vfnet_shapes_val_tiny",
    "dataloader.train.total_batch_size=4",
    "train.checkpointer.period=2",
    "train.log_period=1",
    "model.test_score_thresh=0.0",  # a 4-iteration model scores below the default 0.05
]


class TrainNetEndToEndTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.env = dict(os.environ, VFNET_DATASETS=os.path.join(cls.tmp.name, "datasets"), OMP_NUM_THREADS="1")
        cls.out = os.path.join(cls.tmp.name, "out")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def run_tool(self, *args, expect_ok=True):
        proc = subprocess.run(
            [sys.executable, *args], capture_output=True, text=True, env=self.env, cwd=self.tmp.name, timeout=600
        )
        output = proc.stdout + proc.stderr
        if expect_ok:
            self.assertEqual(proc.returncode, 0, output[-4000:])
        self.last_stdout = proc.stdout
        return proc.returncode, output

    def test_1_train_resume_eval_predict(self):
        common = TINY + [f"train.output_dir={self.out}"]
        _, log = self.run_tool(TRAIN_NET, "--config-file", PY_CONFIG, *common, "train.max_iter=4")
        self.assertIn("Starting training from iteration 0", log)
        self.assertTrue(os.path.isfile(os.path.join(self.out, "model_final.pth")))
        self.assertTrue(any(f.startswith("events.out.tfevents") for f in os.listdir(self.out)))
        with open(os.path.join(self.out, "eval_metrics.json")) as f:
            metrics = json.load(f)["bbox"]
        for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AP-circle", "AP-cross"):
            self.assertIn(key, metrics)

        _, log = self.run_tool(TRAIN_NET, "--config-file", PY_CONFIG, "--resume", *common, "train.max_iter=6")
        self.assertIn("Starting training from iteration 4", log)

        os.remove(os.path.join(self.out, "eval_metrics.json"))
        weights = os.path.join(self.out, "model_final.pth")
        _, log = self.run_tool(
            TRAIN_NET, "--config-file", PY_CONFIG, "--eval-only", *common, f"train.init_checkpoint={weights}"
        )
        self.assertIn("copypaste: AP,AP50,AP75,APs,APm,APl", log)
        self.assertTrue(os.path.isfile(os.path.join(self.out, "eval_metrics.json")))

        # DefaultPredictor with the .yaml twin and the weights trained from the .py config.
        code = f"""
import cv2, json, sys
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.engine import DefaultPredictor
from vfnet import add_vfnet_config
cfg = get_cfg()
add_vfnet_config(cfg)
cfg.merge_from_file({YAML_CONFIG!r})
cfg.MODEL.WEIGHTS = {weights!r}
cfg.MODEL.VFNET.SCORE_THRESH_TEST = 0.0
predictor = DefaultPredictor(cfg)
image = cv2.imread(DatasetCatalog.get("vfnet_shapes_val_tiny")[0]["file_name"])
inst = predictor(image)["instances"]
print(json.dumps({{"n": len(inst), "size": list(inst.image_size), "max_x": float(inst.pred_boxes.tensor[:, 2].max())}}))
"""
        self.run_tool("-c", code)
        result = json.loads(self.last_stdout.strip().splitlines()[-1])
        self.assertTrue(0 < result["n"] <= 100)
        self.assertEqual(result["size"], [160, 160])
        self.assertLessEqual(result["max_x"], 160.0)

        demo_out = os.path.join(self.tmp.name, "demo")
        images = os.path.join(self.tmp.name, "datasets", "shapes-v1-tiny", "val")
        _, log = self.run_tool(
            os.path.join(REPO_ROOT, "tools", "demo.py"),
            "--config-file",
            PY_CONFIG,
            "--weights",
            weights,
            "--input",
            images,
            "--output",
            demo_out,
            "--confidence-threshold",
            "0.0",
        )
        self.assertEqual(len(os.listdir(demo_out)), 16)

    def test_3_two_cpu_processes(self):
        # Without GPUs, --num-gpus 2 trains in two data-parallel CPU processes (gloo); the loss
        # normalisers are all-reduced between them.
        out = os.path.join(self.tmp.name, "out_ddp")
        _, log = self.run_tool(
            TRAIN_NET, "--config-file", PY_CONFIG, "--num-gpus", "2", *TINY, f"train.output_dir={out}", "train.max_iter=2"
        )
        self.assertIn("Starting training from iteration 0", log)
        self.assertTrue(os.path.isfile(os.path.join(out, "model_final.pth")))
        with open(os.path.join(out, "eval_metrics.json")) as f:
            self.assertIn("AP", json.load(f)["bbox"])

    def test_2_bad_input_errors(self):
        # An unknown config key names the key.
        code, log = self.run_tool(
            TRAIN_NET, "--config-file", PY_CONFIG, *TINY, "train.max_iters=3", expect_ok=False
        )
        self.assertNotEqual(code, 0)
        self.assertIn("unknown config key 'train.max_iters'", log)
        self.assertIn("train.max_iter", log)

        # A checkpoint of another architecture names what it holds.
        import torch

        bad = os.path.join(self.tmp.name, "frcnn.pth")
        torch.save({"model": {"roi_heads.box_predictor.cls_score.weight": torch.zeros(3)}}, bad)
        code, log = self.run_tool(
            TRAIN_NET, "--config-file", PY_CONFIG, "--eval-only", *TINY, f"train.init_checkpoint={bad}", expect_ok=False
        )
        self.assertIn("roi_heads", log)
        self.assertIn("another architecture", log)

        # A missing image and an out-of-image box, in a dataset of the user's.
        data = os.path.join(self.tmp.name, "user")
        os.makedirs(os.path.join(data, "images"), exist_ok=True)
        cv2.imwrite(os.path.join(data, "images", "a.jpg"), np.zeros((64, 80, 3), np.uint8))
        def write(annotations, images):
            with open(os.path.join(data, "ann.json"), "w") as f:
                json.dump({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]}, f)
        image_a = {"id": 1, "file_name": "a.jpg", "height": 64, "width": 80}
        write([{"id": 1, "image_id": 1, "category_id": 1, "bbox": [60, 10, 40, 20], "area": 800, "iscrowd": 0}], [image_a])
        spec = f"coco:{data}/ann.json:{data}/images"
        args = ["--config-file", PY_CONFIG, "--train-data", spec, f"train.output_dir={self.out}_user", "train.max_iter=1"]
        code, log = self.run_tool(TRAIN_NET, *args, expect_ok=False)
        self.assertIn("box outside the image", log)
        self.assertIn("a.jpg", log)

        image_b = {"id": 2, "file_name": "missing.jpg", "height": 64, "width": 80}
        write([{"id": 1, "image_id": 2, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0}], [image_b])
        code, log = self.run_tool(TRAIN_NET, *args, expect_ok=False)
        self.assertIn("missing.jpg does not exist", log)

        # Degenerate boxes are dropped and counted in the log; training goes on.
        write(
            [
                {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 0, 20], "area": 0, "iscrowd": 0},
                {"id": 2, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 20], "area": 600, "iscrowd": 0},
            ],
            [image_a],
        )
        code, log = self.run_tool(TRAIN_NET, *args, "dataloader.train.total_batch_size=1")
        self.assertIn("dropped 1 annotations with degenerate boxes", log)


if __name__ == "__main__":
    unittest.main()
