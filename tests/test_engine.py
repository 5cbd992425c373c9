"""Config overrides, data checks, user datasets, checkpoint checks and the CPU autocast trainer."""
import logging
import math
import os
import tempfile
import unittest
import xml.etree.ElementTree as ET

import cv2
import numpy as np
import torch
from detectron2.config import LazyConfig, get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from detectron2.utils.events import EventStorage

from vfnet import add_vfnet_config
from vfnet.checkpoint import IncompatibleCheckpointError, VFNetCheckpointer
from vfnet.data.user_datasets import register_coco_dataset, register_dataset_spec, register_voc_dataset
from vfnet.data.validation import DatasetError, check_dataset_dicts
from vfnet.engine import AutocastTrainer, apply_overrides, load_config
from vfnet_test_utils import REPO_ROOT, small_vfnet

R50_PY = os.path.join(REPO_ROOT, "configs", "COCO-Detection", "vfnet_R_50_FPN_1x.py")
R50_YAML = os.path.join(REPO_ROOT, "configs", "COCO-Detection", "vfnet_R_50_FPN_1x.yaml")


class OverridesTest(unittest.TestCase):
    def test_known_key_and_alias(self):
        cfg = load_config(R50_PY, ["train.max_iter=7", "model.head.use_vfl=False", "model.head.stacked_convs=4"])
        self.assertEqual(cfg.train.max_iter, 7)
        self.assertFalse(cfg.model.use_vfl)
        self.assertEqual(cfg.model.head.stacked_convs, 4)

    def test_unknown_key_is_refused_with_suggestion(self):
        with self.assertRaises(KeyError) as ctx:
            load_config(R50_PY, ["train.max_iters=7"])
        self.assertIn("train.max_iters", str(ctx.exception))
        self.assertIn("train.max_iter", str(ctx.exception))

    def test_plus_adds_a_key(self):
        cfg = apply_overrides(LazyConfig.load(R50_PY), ["+train.note=hello"])
        self.assertEqual(cfg.train.note, "hello")

    def test_yaml(self):
        cfg = load_config(R50_YAML, ["MODEL.VFNET.NUM_CLASSES=3", "SOLVER.MAX_ITER", "10"])
        self.assertEqual((cfg.MODEL.VFNET.NUM_CLASSES, cfg.SOLVER.MAX_ITER), (3, 10))
        with self.assertRaises(KeyError):
            load_config(R50_YAML, ["MODEL.VFNET.NUM_CLASES=3"])

    def test_bad_files(self):
        with self.assertRaises(FileNotFoundError):
            load_config("nope.py")
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            with self.assertRaisesRegex(ValueError, "expected a LazyConfig"):
                load_config(f.name)


class DatasetChecksTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.image = os.path.join(self.tmp.name, "a.jpg")
        cv2.imwrite(self.image, np.zeros((50, 60, 3), np.uint8))

    def tearDown(self):
        self.tmp.cleanup()

    def record(self, *boxes, mode=BoxMode.XYWH_ABS):
        anns = [{"bbox": list(b), "bbox_mode": mode, "category_id": 0} for b in boxes]
        return {"file_name": self.image, "height": 50, "width": 60, "annotations": anns}

    def test_degenerate_boxes_are_dropped_and_counted(self):
        dicts = [self.record([1, 1, 0, 5], [1, 1, 5, -1], [2, 2, 10, 10])]
        with self.assertLogs("vfnet.data.validation", level=logging.WARNING) as logs:
            check_dataset_dicts(dicts, "d")
        self.assertEqual(len(dicts[0]["annotations"]), 1)
        self.assertIn("dropped 2 annotations", logs.output[0])

    def test_small_overhang_is_clipped_and_counted(self):
        dicts = [self.record([-0.5, 0, 10, 10])]
        with self.assertLogs("vfnet.data.validation", level=logging.WARNING) as logs:
            check_dataset_dicts(dicts, "d")
        self.assertEqual(dicts[0]["annotations"][0]["bbox"], [0.0, 0.0, 9.5, 10.0])
        self.assertEqual(dicts[0]["annotations"][0]["bbox_mode"], BoxMode.XYXY_ABS)
        self.assertIn("clipped 1 boxes", logs.output[0])

    def test_box_outside_the_image_is_an_error(self):
        with self.assertRaisesRegex(DatasetError, r"a\.jpg \(60x50\) has a box outside the image: \[55, 10, 20, 5\]"):
            check_dataset_dicts([self.record([55, 10, 20, 5])], "d")

    def test_invalid_box_and_missing_file(self):
        with self.assertRaisesRegex(DatasetError, "invalid box"):
            check_dataset_dicts([self.record([1, 2, float("nan"), 4])], "d")
        record = self.record([1, 1, 5, 5])
        record["file_name"] = os.path.join(self.tmp.name, "gone.jpg")
        with self.assertRaisesRegex(DatasetError, "gone.jpg does not exist"):
            check_dataset_dicts([record], "d")

    def test_clean_data_is_untouched(self):
        dicts = [self.record([1, 1, 5, 5], [0, 0, 60, 50])]
        check_dataset_dicts(dicts, "d")
        self.assertEqual([a["bbox"] for a in dicts[0]["annotations"]], [[1, 1, 5, 5], [0, 0, 60, 50]])


class UserDatasetsTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def test_coco(self):
        import json

        json_file = os.path.join(self.tmp.name, "a.json")
        with open(json_file, "w") as f:
            json.dump(
                {"images": [], "annotations": [], "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]}, f
            )
        classes = register_coco_dataset("test_user_coco", json_file, self.tmp.name)
        self.assertEqual(classes, ["cat", "dog"])  # sorted by id, as Detectron2 maps them
        self.assertEqual(MetadataCatalog.get("test_user_coco").thing_classes, ["cat", "dog"])
        self.assertEqual(register_coco_dataset("test_user_coco", json_file, self.tmp.name), ["cat", "dog"])
        with self.assertRaisesRegex(FileNotFoundError, "annotation file"):
            register_coco_dataset("test_user_coco2", os.path.join(self.tmp.name, "none.json"), self.tmp.name)

    def test_voc(self):
        root = self.tmp.name
        for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
            os.makedirs(os.path.join(root, sub))
        with open(os.path.join(root, "ImageSets", "Main", "train.txt"), "w") as f:
            f.write("img1\n")
        cv2.imwrite(os.path.join(root, "JPEGImages", "img1.jpg"), np.zeros((40, 50, 3), np.uint8))
        ann = ET.Element("annotation")
        size = ET.SubElement(ann, "size")
        ET.SubElement(size, "width").text = "50"
        ET.SubElement(size, "height").text = "40"
        for name, box in (("zebra", (5, 5, 20, 20)), ("ant", (10, 12, 30, 35))):
            obj = ET.SubElement(ann, "object")
            ET.SubElement(obj, "name").text = name
            ET.SubElement(obj, "difficult").text = "0"
            bb = ET.SubElement(obj, "bndbox")
            for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box):
                ET.SubElement(bb, k).text = str(v)
        ET.ElementTree(ann).write(os.path.join(root, "Annotations", "img1.xml"))
        classes = register_dataset_spec("test_user_voc", f"voc:{root}:train")
        self.assertEqual(classes, ["ant", "zebra"])
        dicts = DatasetCatalog.get("test_user_voc")
        self.assertEqual(sorted(a["category_id"] for a in dicts[0]["annotations"]), [0, 1])
        with self.assertRaisesRegex(ValueError, "dataset spec"):
            register_dataset_spec("x", "parquet:a:b")


class CheckpointerTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.model = small_vfnet()

    def tearDown(self):
        self.tmp.cleanup()

    def save(self, state):
        path = os.path.join(self.tmp.name, "ckpt.pth")
        torch.save({"model": state}, path)
        return path

    def test_own_checkpoint_loads(self):
        path = self.save(self.model.state_dict())
        VFNetCheckpointer(small_vfnet(), require_head=True).load(path)

    def test_other_architecture(self):
        path = self.save({"roi_heads.box_head.fc1.weight": torch.zeros(2), "proposal_generator.x": torch.zeros(1)})
        with self.assertRaisesRegex(IncompatibleCheckpointError, r"\['proposal_generator', 'roi_heads'\]"):
            VFNetCheckpointer(self.model).load(path)

    def test_unconverted_mmdet(self):
        path = self.save({"bbox_head.vfnet_cls.weight": torch.zeros(2), "backbone.conv1.weight": torch.zeros(1)})
        with self.assertRaisesRegex(IncompatibleCheckpointError, "convert_mmdet_checkpoint"):
            VFNetCheckpointer(self.model).load(path)

    def test_backbone_only(self):
        backbone = {k: v for k, v in self.model.state_dict().items() if k.startswith("backbone.")}
        path = self.save(backbone)
        VFNetCheckpointer(small_vfnet()).load(path)  # fine for training
        with self.assertRaisesRegex(IncompatibleCheckpointError, "no weights for the VFNet head"):
            VFNetCheckpointer(small_vfnet(), require_head=True).load(path)


class AutocastTrainerTest(unittest.TestCase):
    def _batches(self):
        from vfnet_test_utils import make_instances, random_image

        while True:
            yield [{"image": random_image(128, 160), "instances": make_instances((128, 160), [[10, 10, 60, 70]], [1])}]

    def test_bfloat16_step(self):
        model = small_vfnet()
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        trainer = AutocastTrainer(model, self._batches(), optimizer)
        before = model.head.cls_score.weight.detach().clone()
        with EventStorage() as storage:
            trainer.iter = 0
            trainer.storage = storage
            trainer.run_step()
        self.assertFalse(torch.equal(before, model.head.cls_score.weight))
        self.assertTrue(math.isfinite(storage.history("total_loss").latest()))

    def test_non_finite_loss_stops_training(self):
        class Diverged(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.w = torch.nn.Parameter(torch.ones(1))

            def forward(self, batch):
                return {"loss_cls": self.w * float("nan")}

        model = Diverged()
        trainer = AutocastTrainer(model, self._batches(), torch.optim.SGD(model.parameters(), lr=0.1))
        with EventStorage() as storage, self.assertRaisesRegex(FloatingPointError, "infinite or NaN"):
            trainer.iter = 0
            trainer.storage = storage
            trainer.run_step()


class DefaultPredictorTest(unittest.TestCase):
    def test_yaml_predictor_on_bgr_image(self):
        from detectron2.engine import DefaultPredictor

        cfg = get_cfg()
        add_vfnet_config(cfg)
        cfg.merge_from_file(os.path.join(REPO_ROOT, "configs", "Quickstart", "vfnet_R_18_narrow_shapes_cpu.yaml"))
        cfg.MODEL.VFNET.SCORE_THRESH_TEST = 0.0
        predictor = DefaultPredictor(cfg)
        image = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
        inst = predictor(image)["instances"]
        self.assertEqual(inst.image_size, (240, 320))  # back in the input's resolution
        self.assertTrue(0 < len(inst) <= 100)
        boxes = inst.pred_boxes.tensor
        self.assertGreater(boxes[:, 2].max().item(), 160)  # rescaled from the 120x160 model input
        self.assertLessEqual(boxes[:, 2].max().item(), 320)


if __name__ == "__main__":
    unittest.main()
