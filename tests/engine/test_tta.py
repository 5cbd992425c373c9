"""
Tests of VFNet's test-time augmentation (vfnet.tta): the augmented sizes against mmcv's rounding,
the mapping back and merging of flipped and rescaled detections on a hand-made case, equality with
plain inference for one scale without flip, the config switches, and `tools/train_net.py
--eval-only --tta` end to end on the tiny synthetic split (random weights).
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import torch
from detectron2.config import LazyConfig, get_cfg, instantiate
from detectron2.structures import Boxes, Instances

from vfnet import add_vfnet_config
from vfnet.tta import REFERENCE_TTA, MultiScaleFlipMapper, VFNetWithTTA, enable_tta, lazy_tta_options, tta_enabled

from vfnet_test_utils import REPO_ROOT, random_image, small_vfnet

QUICKSTART_PY = os.path.join(REPO_ROOT, "configs", "Quickstart", "vfnet_R_18_narrow_shapes_cpu.py")
QUICKSTART_YAML = os.path.join(REPO_ROOT, "configs", "Quickstart", "vfnet_R_18_narrow_shapes_cpu.yaml")


def uint8_image(height, width, seed=0):
    return random_image(height, width, seed).to(torch.uint8)


class MapperTest(unittest.TestCase):
    def test_reference_scales_and_flips(self):
        mapper = MultiScaleFlipMapper(**REFERENCE_TTA)
        image = uint8_image(480, 640)
        out = mapper({"image": image, "height": 480, "width": 640})
        self.assertEqual(len(out), len(mapper))
        # mmcv's keep-ratio rescale to (long, short) limits (1200, 800), (1300, 900), (1500, 1000),
        # (1600, 1200): factor min(long / 640, short / 480), sizes rounded half up; each then flipped.
        sizes = [tuple(o["image"].shape[1:]) for o in out]
        self.assertEqual(sizes, [(800, 1067)] * 2 + [(900, 1200)] * 2 + [(1000, 1333)] * 2 + [(1200, 1600)] * 2)
        np.testing.assert_array_equal(out[1]["image"].numpy(), out[0]["image"].numpy()[:, :, ::-1])
        # the transforms take a box of the original image to the augmented one, and back
        box = np.array([[64.0, 48.0, 128.0, 96.0]])
        np.testing.assert_allclose(out[0]["transforms"].apply_box(box), box * np.array([1067 / 640, 800 / 480] * 2))
        np.testing.assert_allclose(
            out[1]["transforms"].apply_box(box), [[1067 - 128 * 1067 / 640, 80, 1067 - 64 * 1067 / 640, 160]], rtol=1e-6
        )
        for o in out:
            np.testing.assert_allclose(o["transforms"].inverse().apply_box(o["transforms"].apply_box(box)), box, rtol=1e-5)
            self.assertEqual((o["height"], o["width"]), (480, 640))

        wide = mapper({"image": uint8_image(40, 120), "height": 400, "width": 1200})  # loader resized it 10x down
        self.assertEqual([tuple(o["image"].shape[1:]) for o in wide[::2]], [(400, 1200), (433, 1300), (500, 1500), (533, 1600)])
        np.testing.assert_allclose(wide[0]["transforms"].apply_box(np.array([[0.0, 0.0, 1200.0, 400.0]])), [[0, 0, 1200, 400]])

    def test_bad_scales(self):
        with self.assertRaisesRegex(ValueError, "one long-side limit per short side"):
            MultiScaleFlipMapper(min_sizes=[800, 900], max_sizes=[1333], flip=True)
        with self.assertRaisesRegex(ValueError, "positive"):
            MultiScaleFlipMapper(min_sizes=[0], max_sizes=[1333], flip=True)
        with self.assertRaisesRegex(TypeError, "needs a VFNet"):
            VFNetWithTTA(torch.nn.Linear(2, 2), MultiScaleFlipMapper(min_sizes=[8], max_sizes=[8], flip=False))


class MergeTest(unittest.TestCase):
    def test_flip_and_scale_merging_by_hand(self):
        # A fake detector that finds, in any input, a 10x10 box at its top-left corner (class 1) and
        # the whole image (class 0), both scored 0.1 x (its call number). On a 50x100 image with
        # scales 1 and 2, each with and without flip, the boxes map back to:
        #   scale 1:          [0, 0, 10, 10]           and [0, 0, 100, 50], score 0.1
        #   scale 1, flipped: [100 - 10, 0, 100, 10]   and [0, 0, 100, 50], score 0.2
        #   scale 2:          [0, 0, 5, 5]             and [0, 0, 100, 50], score 0.3
        #   scale 2, flipped: [(200 - 10) / 2, 0, 100, 5] and [0, 0, 100, 50], score 0.4
        # One class-wise NMS (IoU 0.6) over the union: the four whole-image boxes are one object
        # (the 0.4 one stays); the small ones overlap by IoU 0.25 at most and all stay.
        model = small_vfnet(num_classes=2, test_nms_thresh=0.6).eval()
        seen = []

        def fake_candidates(batched_inputs):
            (x,) = batched_inputs
            h, w = x["image"].shape[1:]
            seen.append((h, w))
            inst = Instances((h, w))
            inst.pred_boxes = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, float(w), float(h)]]))
            inst.scores = torch.full((2,), 0.1 * len(seen))
            inst.pred_classes = torch.tensor([1, 0])
            return [inst]

        model.predict_candidates = fake_candidates
        tta = VFNetWithTTA(model, MultiScaleFlipMapper(min_sizes=[50, 100], max_sizes=[100, 200], flip=True))
        (out,) = tta([{"image": torch.zeros(3, 50, 100, dtype=torch.uint8), "height": 50, "width": 100}])
        inst = out["instances"]
        self.assertEqual(seen, [(50, 100), (50, 100), (100, 200), (100, 200)])
        self.assertEqual(inst.image_size, (50, 100))
        got = sorted(
            (round(s, 4), c, [round(v, 4) for v in b])
            for s, c, b in zip(inst.scores.tolist(), inst.pred_classes.tolist(), inst.pred_boxes.tensor.tolist())
        )
        expected = sorted(
            [
                (0.4, 0, [0.0, 0.0, 100.0, 50.0]),
                (0.4, 1, [95.0, 0.0, 100.0, 5.0]),
                (0.3, 1, [0.0, 0.0, 5.0, 5.0]),
                (0.2, 1, [90.0, 0.0, 100.0, 10.0]),
                (0.1, 1, [0.0, 0.0, 10.0, 10.0]),
            ]
        )
        self.assertEqual(got, expected)

    def test_one_scale_without_flip_is_plain_inference(self):
        model = small_vfnet(num_classes=3, test_score_thresh=0.0).eval()
        tta = VFNetWithTTA(model, MultiScaleFlipMapper(min_sizes=[128], max_sizes=[160], flip=False))
        for height, width in ((128, 160), (256, 320)):  # the original image, or one the loader halved
            inputs = [{"image": uint8_image(128, 160, seed=3), "height": height, "width": width}]
            with torch.no_grad():
                plain = model(inputs)[0]["instances"]
                augmented = tta(inputs)[0]["instances"]
            self.assertGreater(len(plain), 10)
            self.assertEqual(augmented.image_size, plain.image_size)
            self.assertTrue(torch.equal(augmented.pred_boxes.tensor, plain.pred_boxes.tensor))
            self.assertTrue(torch.equal(augmented.scores, plain.scores))
            self.assertTrue(torch.equal(augmented.pred_classes, plain.pred_classes))
        # with the flip the merged result differs (more candidates for the same NMS)
        flip = VFNetWithTTA(model, MultiScaleFlipMapper(min_sizes=[128], max_sizes=[160], flip=True))
        with torch.no_grad():
            flipped = flip(inputs)[0]["instances"]
        self.assertFalse(torch.equal(flipped.scores, plain.scores))


class ConfigTest(unittest.TestCase):
    def test_yacs(self):
        cfg = get_cfg()
        add_vfnet_config(cfg)
        mapper = MultiScaleFlipMapper(cfg)
        self.assertEqual((mapper.min_sizes, mapper.max_sizes, mapper.flip), ([800, 900, 1000, 1200], [1200, 1300, 1500, 1600], True))
        cfg.TEST.AUG.MAX_SIZES = ()
        cfg.TEST.AUG.MAX_SIZE = 2000
        self.assertEqual(MultiScaleFlipMapper(cfg).max_sizes, [2000] * 4)  # Detectron2's single limit
        self.assertFalse(tta_enabled(cfg))
        self.assertTrue(tta_enabled(enable_tta(cfg)))
        cfg.merge_from_file(QUICKSTART_YAML)
        self.assertEqual(MultiScaleFlipMapper(cfg).min_sizes, [160, 180, 200, 240])

    def test_lazy(self):
        cfg = LazyConfig.load(QUICKSTART_PY)
        self.assertFalse(tta_enabled(cfg))
        self.assertEqual(MultiScaleFlipMapper(cfg).max_sizes, [240, 260, 300, 320])
        self.assertTrue(tta_enabled(enable_tta(cfg)))
        del cfg.dataloader.tta
        self.assertEqual(lazy_tta_options(cfg), dict(enabled=False, **REFERENCE_TTA))
        enable_tta(cfg)
        self.assertEqual(MultiScaleFlipMapper(cfg).min_sizes, REFERENCE_TTA["min_sizes"])
        cfg.dataloader.tta.scales = [800]
        with self.assertRaisesRegex(KeyError, "dataloader.tta.scales"):
            lazy_tta_options(cfg)

    def test_coco_configs_write_detections_and_have_tta(self):
        cfg = LazyConfig.load(os.path.join(REPO_ROOT, "configs", "COCO-Detection", "vfnet_R_50_FPN_1x.py"))
        cfg.train.output_dir = "/somewhere"
        self.assertEqual(cfg.dataloader.evaluator.output_dir, "/somewhere/inference")
        self.assertEqual(lazy_tta_options(cfg), dict(enabled=False, **REFERENCE_TTA))
        yaml = get_cfg()
        add_vfnet_config(yaml)
        yaml.merge_from_file(os.path.join(REPO_ROOT, "configs", "COCO-Detection", "vfnet_R_50_FPN_1x.yaml"))
        self.assertEqual(vars(MultiScaleFlipMapper(yaml)), vars(MultiScaleFlipMapper(cfg)))  # the twins agree
        self.assertEqual(vars(MultiScaleFlipMapper(yaml)), REFERENCE_TTA)


class EvalOnlyTTAEndToEndTest(unittest.TestCase):
    def test_lazy_config_eval_only_with_tta(self):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = LazyConfig.load(QUICKSTART_PY)
            torch.manual_seed(0)
            weights = os.path.join(tmp, "random.pth")
            torch.save({"model": instantiate(cfg.model).state_dict()}, weights)
            out = os.path.join(tmp, "out")
            env = dict(os.environ, VFNET_DATASETS=os.path.join(tmp, "datasets"), OMP_NUM_THREADS="1")
            args = [
                "--config-file", QUICKSTART_PY, "--eval-only", "--tta",
                "dataloader.test.dataset.names=vfnet_shapes_val_tiny",
                "dataloader.evaluator.dataset_name=vfnet_shapes_val_tiny",
                "dataloader.tta.min_sizes=[160]", "dataloader.tta.max_sizes=[160]",
                "model.test_score_thresh=0.0",
                f"train.init_checkpoint={weights}", f"train.output_dir={out}",
            ]  # fmt: skip
            proc = subprocess.run(
                [sys.executable, os.path.join(REPO_ROOT, "tools", "train_net.py"), *args],
                capture_output=True, text=True, env=env, cwd=tmp, timeout=300,
            )  # fmt: skip
            self.assertEqual(proc.returncode, 0, (proc.stdout + proc.stderr)[-3000:])
            self.assertIn("Evaluating with TTA: short sides [160], long sides at most [160], flip True", proc.stderr + proc.stdout)
            with open(os.path.join(out, "eval_metrics.json")) as f:
                plain = json.load(f)["bbox"]
            with open(os.path.join(out, "eval_metrics_TTA.json")) as f:
                tta = json.load(f)["bbox"]
            self.assertNotEqual(plain["AP"], tta["AP"])  # flipped copies change the merged detections
            for folder in ("inference", "inference_TTA"):
                with open(os.path.join(out, folder, "coco_instances_results.json")) as f:
                    detections = json.load(f)
                self.assertEqual({d["image_id"] for d in detections}, set(range(1, 17)))
                self.assertTrue(all(d["bbox"][0] >= 0 and d["bbox"][0] + d["bbox"][2] <= 160 + 1e-3 for d in detections))

    def test_yacs_trainer_test_with_tta(self):
        from vfnet.engine import Trainer

        cfg = get_cfg()
        add_vfnet_config(cfg)
        cfg.merge_from_file(QUICKSTART_YAML)
        with tempfile.TemporaryDirectory() as tmp:
            cfg.merge_from_list(
                ["DATASETS.TEST", ("vfnet_shapes_val_tiny",), "MODEL.VFNET.SCORE_THRESH_TEST", 0.0, "OUTPUT_DIR", tmp]
            )
            cfg.merge_from_list(["TEST.AUG.MIN_SIZES", (160,), "TEST.AUG.MAX_SIZES", (160,), "TEST.AUG.FLIP", False])
            cfg.freeze()
            torch.manual_seed(0)
            model = Trainer.build_model(cfg)
            plain = Trainer.test(cfg, model)
            tta = Trainer.test_with_TTA(cfg, model)
            self.assertEqual(list(tta), ["bbox_TTA"])
            # one scale equal to the test size and no flip: TTA is plain inference
            np.testing.assert_equal(dict(tta["bbox_TTA"]), dict(plain["bbox"]))  # NaN == NaN here
            with open(os.path.join(tmp, "eval_metrics_TTA.json")) as f:
                np.testing.assert_equal(json.load(f), {"bbox": dict(tta["bbox_TTA"])})
            self.assertTrue(os.path.isfile(os.path.join(tmp, "inference_TTA", "coco_instances_results.json")))


if __name__ == "__main__":
    unittest.main()
