"""Checks of dataset dicts (vfnet.data.validation) and the registration of users' COCO / VOC datasets."""
import logging
import os
import tempfile
import unittest
import xml.etree.ElementTree as ET

import cv2
import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from vfnet.data.user_datasets import register_coco_dataset, register_dataset_spec
from vfnet.data.validation import DatasetError, check_dataset_dicts


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
