"""Checks of dataset dicts (vfnet.data.validation) and the registration of users' COCO / VOC datasets."""
import json
import logging
import os
import re
import tempfile
import unittest
import uuid
import xml.etree.ElementTree as ET

import cv2
import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.evaluation import PascalVOCDetectionEvaluator
from detectron2.structures import BoxMode

from vfnet.data.user_datasets import register_coco_dataset, register_dataset_spec, register_voc_dataset
from vfnet.data.validation import DatasetError, check_dataset_dicts


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


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

    def test_crowd_and_zero_height_and_records_without_size(self):
        crowd = {"bbox": [-30, -30, 500, 500], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": 1}
        record = self.record([2, 2, 10, 0], [3, 3, 4, 4], [5, 5, 6, 6], [-0.5, 0, 10, 10], [0, -0.5, 10, 10])
        record["annotations"].insert(1, crowd)
        with self.assertLogs("vfnet.data.validation", level=logging.WARNING) as logs:
            check_dataset_dicts([record], "d")
        # the crowd region is kept as it is (not checked, not clipped), in its place; the zero-height box is
        # dropped (the order of the others kept); the two overhanging boxes are clipped
        self.assertEqual([a["bbox"] for a in record["annotations"]],
                         [[-30, -30, 500, 500], [3, 3, 4, 4], [5, 5, 6, 6], [0.0, 0.0, 9.5, 10.0], [0.0, 0.0, 10.0, 9.5]])
        self.assertIn("dropped 1 annotations", logs.output[0])
        self.assertIn("clipped 2 boxes", logs.output[0])
        # without height/width the overhang cannot be checked: only degenerate boxes go
        record = self.record([-5, -5, 10, 10], [1, 1, 0, 3])
        del record["height"]
        check_dataset_dicts([record], "d")
        self.assertEqual([a["bbox"] for a in record["annotations"]], [[-5, -5, 10, 10]])
        # the error names the dataset and the file
        with self.assertRaisesRegex(DatasetError, f"^mine: image {self.image} has an invalid box"):
            check_dataset_dicts([self.record([1, 2, float("inf"), 4])], "mine")

    def test_overhang_tolerance_is_one_pixel_on_each_side(self):
        # The 60 x 50 image: XYXY boxes overhanging one side by exactly 1 px are clipped; by 1.25 px
        # they are errors. The sides differ in width and height, so swapping them is seen.
        inside = [10.0, 10.0, 20.0, 20.0]
        for side, edge in ((0, 0.0), (1, 0.0), (2, 60.0), (3, 50.0)):
            outward = -1.0 if side < 2 else 1.0
            with self.subTest(side=side):
                at_tolerance = list(inside)
                at_tolerance[side] = edge + outward * 1.0
                dicts = [self.record(at_tolerance, mode=BoxMode.XYXY_ABS)]
                with self.assertLogs("vfnet.data.validation", level=logging.WARNING):
                    check_dataset_dicts(dicts, "d")
                clipped = list(inside)
                clipped[side] = edge
                self.assertEqual(dicts[0]["annotations"][0]["bbox"], clipped)

                beyond = list(inside)
                beyond[side] = edge + outward * 1.25
                with self.assertRaisesRegex(DatasetError, "box outside the image"):
                    check_dataset_dicts([self.record(beyond, mode=BoxMode.XYXY_ABS)], "d")

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

    def test_missing_fields(self):
        # no bbox_mode: COCO's XYWH, as Detectron2's COCO loader writes it: [50, 10, 11, 5] ends at x = 61,
        # 1 px over the 60-px width, and is clipped to XYXY [50, 10, 60, 15]
        record = self.record([50, 10, 11, 5])
        del record["annotations"][0]["bbox_mode"]
        with self.assertLogs("vfnet.data.validation", level=logging.WARNING):
            check_dataset_dicts([record], "d")
        self.assertEqual(record["annotations"][0]["bbox"], [50.0, 10.0, 60.0, 15.0])
        # no annotations (an unlabelled image): passes as it is, no key added
        unlabelled = {"file_name": self.image, "height": 50, "width": 60}
        self.assertEqual(check_dataset_dicts([unlabelled], "d"), [{"file_name": self.image, "height": 50, "width": 60}])
        # no bbox: an invalid box, named
        record = self.record([1, 1, 5, 5])
        del record["annotations"][0]["bbox"]
        with self.assertRaisesRegex(DatasetError, "^d: image .*a\\.jpg has an invalid box None$"):
            check_dataset_dicts([record], "d")
        # no file_name: the error says so; no dataset name: "dataset"
        record = self.record([1, 1, 5, 5])
        del record["file_name"]
        with self.assertRaisesRegex(DatasetError, "^dataset: image file <no file_name> does not exist$"):
            check_dataset_dicts([record])

    def test_outside_box_message_gives_the_box_in_xyxy_to_two_decimals(self):
        # XYWH [-5.125, 0, 10.5, 10] is XYXY [-5.125, 0, 5.375, 10] (exact in binary): 5.125 px over the left edge
        with self.assertRaisesRegex(DatasetError, re.escape("[-5.125, 0, 10.5, 10] (XYXY [-5.12, 0.0, 5.38, 10.0])")):
            check_dataset_dicts([self.record([-5.125, 0, 10.5, 10])], "d")

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
        json_file = os.path.join(self.tmp.name, "a.json")
        # Category ids neither contiguous nor in name order: Detectron2's load_coco_json maps the
        # sorted ids 3, 7, 12 to 0, 1, 2 and names the classes in that order.
        categories = [{"id": 7, "name": "ant"}, {"id": 12, "name": "moth"}, {"id": 3, "name": "zebra"}]
        images = [
            {"id": 5, "file_name": "b.jpg", "height": 40, "width": 70},
            {"id": 9, "file_name": "sub/c.jpg", "height": 30, "width": 20},
        ]
        annotations = [
            {"id": 1, "image_id": 5, "category_id": 7, "bbox": [1.5, 2.0, 10.0, 20.0], "area": 200.0, "iscrowd": 0},
            {"id": 2, "image_id": 5, "category_id": 3, "bbox": [30.0, 5.0, 12.0, 8.0], "area": 96.0, "iscrowd": 0},
            {"id": 3, "image_id": 9, "category_id": 12, "bbox": [0.0, 0.0, 4.0, 6.0], "area": 24.0, "iscrowd": 0},
        ]
        with open(json_file, "w") as f:
            json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
        coco_name = unique_name("test_user_coco")  # catalogs are global: a re-run in one process needs new names
        classes = register_coco_dataset(coco_name, json_file, self.tmp.name)
        self.assertEqual(classes, ["zebra", "ant", "moth"])  # sorted by id, as Detectron2 maps them
        self.assertEqual(MetadataCatalog.get(coco_name).thing_classes, ["zebra", "ant", "moth"])
        self.assertEqual(register_coco_dataset(coco_name, json_file, self.tmp.name), ["zebra", "ant", "moth"])

        dicts = sorted(DatasetCatalog.get(coco_name), key=lambda r: r["image_id"])
        self.assertEqual(MetadataCatalog.get(coco_name).thing_dataset_id_to_contiguous_id, {3: 0, 7: 1, 12: 2})
        self.assertEqual(
            [(r["image_id"], r["file_name"], r["height"], r["width"]) for r in dicts],
            [(5, os.path.join(self.tmp.name, "b.jpg"), 40, 70), (9, os.path.join(self.tmp.name, "sub/c.jpg"), 30, 20)],
        )
        records = [[(a["category_id"], list(a["bbox"]), a["bbox_mode"]) for a in r["annotations"]] for r in dicts]
        self.assertEqual(
            records,
            [
                [(1, [1.5, 2.0, 10.0, 20.0], BoxMode.XYWH_ABS), (0, [30.0, 5.0, 12.0, 8.0], BoxMode.XYWH_ABS)],
                [(2, [0.0, 0.0, 4.0, 6.0], BoxMode.XYWH_ABS)],
            ],
        )
        with self.assertRaisesRegex(FileNotFoundError, "annotation file"):
            register_coco_dataset(unique_name("test_user_coco2"), os.path.join(self.tmp.name, "none.json"), self.tmp.name)

    def make_voc(self, objects=(("zebra", (5, 6, 20, 21), "0"), ("ant", (10, 12, 30, 35), "1"))):
        """A VOC folder in the temporary folder: split "train" with one 50x40 image, img1, and its objects."""
        root = self.tmp.name
        for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
            os.makedirs(os.path.join(root, sub), exist_ok=True)
        with open(os.path.join(root, "ImageSets", "Main", "train.txt"), "w") as f:
            f.write("img1\n")
        cv2.imwrite(os.path.join(root, "JPEGImages", "img1.jpg"), np.zeros((40, 50, 3), np.uint8))
        ann = ET.Element("annotation")
        size = ET.SubElement(ann, "size")
        ET.SubElement(size, "width").text = "50"
        ET.SubElement(size, "height").text = "40"
        for name, box, difficult in objects:
            obj = ET.SubElement(ann, "object")
            ET.SubElement(obj, "name").text = name
            ET.SubElement(obj, "difficult").text = difficult
            bb = ET.SubElement(obj, "bndbox")
            for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box):
                ET.SubElement(bb, k).text = str(v)
        ET.ElementTree(ann).write(os.path.join(root, "Annotations", "img1.xml"))
        return root

    def test_voc(self):
        root = self.make_voc()
        voc_name = unique_name("test_user_voc")
        classes = register_dataset_spec(voc_name, f"voc:{root}:train")
        self.assertEqual(classes, ["ant", "zebra"])
        (record,) = DatasetCatalog.get(voc_name)
        self.assertEqual(record["file_name"], os.path.join(root, "JPEGImages", "img1.jpg"))
        self.assertEqual((record["image_id"], record["height"], record["width"]), ("img1", 40, 50))
        # VOC's pixel indices are 1-based: Detectron2's load_voc_instances takes 1 from xmin and
        # ymin (only) and keeps the boxes XYXY; "difficult" objects are kept.
        self.assertEqual(
            [(a["category_id"], a["bbox"], a["bbox_mode"]) for a in record["annotations"]],
            [(1, [4.0, 5.0, 20.0, 21.0], BoxMode.XYXY_ABS), (0, [9.0, 11.0, 30.0, 35.0], BoxMode.XYXY_ABS)],
        )
        with self.assertRaisesRegex(ValueError, "dataset spec"):
            register_dataset_spec("x", "parquet:a:b")

    def write_coco(self, json_file, categories=({"id": 7, "name": "ant"}, {"id": 3, "name": "zebra"})):
        with open(json_file, "w") as f:
            json.dump({"images": [], "annotations": [], "categories": list(categories)}, f)
        return json_file

    def test_coco_errors_name_the_problem(self):
        json_file = self.write_coco(os.path.join(self.tmp.name, "a.json"))
        name = unique_name("test_user_coco")
        missing = os.path.join(self.tmp.name, "none.json")
        with self.assertRaisesRegex(FileNotFoundError, f"^{name}: annotation file {re.escape(missing)} does not exist$"):
            register_coco_dataset(name, missing, self.tmp.name)
        with self.assertRaisesRegex(FileNotFoundError, f"^{name}: image folder {re.escape(missing)} does not exist$"):
            register_coco_dataset(name, json_file, missing)
        empty = self.write_coco(os.path.join(self.tmp.name, "empty.json"), categories=())
        with self.assertRaisesRegex(ValueError, f"^{re.escape(empty)}: no 'categories' in this COCO file$"):
            register_coco_dataset(unique_name("test_user_coco"), empty, self.tmp.name)

    def test_coco_name_taken(self):
        json_file = self.write_coco(os.path.join(self.tmp.name, "a.json"))
        other_json = self.write_coco(os.path.join(self.tmp.name, "b.json"))
        images = os.path.join(self.tmp.name, "images")
        os.makedirs(images)
        name = unique_name("test_user_coco")
        self.assertEqual(register_coco_dataset(name, json_file, self.tmp.name), ["zebra", "ant"])
        # the same name with another annotation file, or the same file with another image folder: an error
        # naming the file it is registered with
        for args in ((other_json, self.tmp.name), (json_file, images)):
            with self.assertRaisesRegex(ValueError, f"^dataset {name} is already registered with other files "
                                                    f"\\({re.escape(json_file)}\\)$"):
                register_coco_dataset(name, *args)
        # a name registered by other code: a VOC folder (named), or a bare DatasetCatalog entry
        voc_name = unique_name("test_user_voc")
        register_dataset_spec(voc_name, f"voc:{self.make_voc()}:train")
        with self.assertRaisesRegex(ValueError, f"already registered with other files \\({re.escape(self.tmp.name)}\\)$"):
            register_coco_dataset(voc_name, json_file, self.tmp.name)
        bare = unique_name("test_user_bare")
        DatasetCatalog.register(bare, lambda: [])
        with self.assertRaisesRegex(ValueError, "already registered with other files \\(files unknown\\)$"):
            register_coco_dataset(bare, json_file, self.tmp.name)
        # registered with Detectron2's own register_coco_instances (metadata without classes until loaded):
        # the classes come from the file
        d2_name = unique_name("test_user_d2")
        register_coco_instances(d2_name, {}, json_file, self.tmp.name)
        self.assertEqual(register_coco_dataset(d2_name, json_file, self.tmp.name), ["zebra", "ant"])

    def test_coco_spec(self):
        # the annotation path may hold a colon (the spec is split at its last one); the image folder may not
        folder = os.path.join(self.tmp.name, "run:1")
        os.makedirs(folder)
        json_file = self.write_coco(os.path.join(folder, "a.json"))
        name = unique_name("test_user_coco")
        self.assertEqual(register_dataset_spec(name, f"coco:{json_file}:{self.tmp.name}"), ["zebra", "ant"])
        self.assertEqual((MetadataCatalog.get(name).json_file, MetadataCatalog.get(name).image_root), (json_file, self.tmp.name))
        for spec in (f"COCO:{json_file}:{self.tmp.name}", "coco:a.json", "voc:only-a-folder"):
            with self.assertRaisesRegex(ValueError, f"^dataset spec {re.escape(repr(spec))}: expected coco:"):
                register_dataset_spec(unique_name("test_user_bad"), spec)

    def test_voc_metadata_as_detectron2_voc_evaluator_reads_it(self):
        root = self.make_voc()
        name = unique_name("test_user_voc")
        # given class names (the training split's) are kept, in their order
        self.assertEqual(register_dataset_spec(name, f"voc:{root}:train", ["zebra", "cat", "ant"]), ["zebra", "cat", "ant"])
        meta = MetadataCatalog.get(name)
        evaluator = PascalVOCDetectionEvaluator(name)  # reads dirname, split, thing_classes, year (2007 or 2012)
        self.assertEqual(evaluator._image_set_path, os.path.join(root, "ImageSets", "Main", "train.txt"))
        self.assertEqual(evaluator._anno_file_template, os.path.join(root, "Annotations", "{}.xml"))
        self.assertEqual(evaluator._class_names, ["zebra", "cat", "ant"])
        self.assertFalse(evaluator._is_2007)  # VOC2012's area AP, not VOC2007's 11-point AP
        self.assertEqual(meta.evaluator_type, "coco")  # Detectron2's train_net picks COCOEvaluator, as vfnet.engine does
        (record,) = DatasetCatalog.get(name)
        self.assertEqual([a["category_id"] for a in record["annotations"]], [0, 2])  # zebra, ant in the given order
        # class names given through register_voc_dataset too
        self.assertEqual(register_voc_dataset(unique_name("test_user_voc"), root, "train", ("ant", "zebra")), ["ant", "zebra"])

    def test_voc_errors_name_the_problem(self):
        root = self.make_voc()
        ids_file = os.path.join(root, "ImageSets", "Main", "val.txt")
        with self.assertRaisesRegex(FileNotFoundError, f"^{re.escape(ids_file)} does not exist \\(expected a Pascal VOC "
                                                       "folder with ImageSets/Main/val.txt\\)$"):
            register_dataset_spec(unique_name("test_user_voc"), f"voc:{root}:val")
        name = unique_name("test_user_voc")
        register_dataset_spec(name, f"voc:{root}:train", ["zebra"])  # "ant" is not a given class
        anno_file = os.path.join(root, "Annotations", "img1.xml")
        with self.assertRaisesRegex(ValueError, f"^{re.escape(anno_file)}: class 'ant' is not one of \\['zebra'\\]$"):
            DatasetCatalog.get(name)
        self.make_voc(objects=())
        with self.assertRaisesRegex(ValueError, f"^{re.escape(root)}: no objects in the annotations of split train$"):
            register_dataset_spec(unique_name("test_user_voc"), f"voc:{root}:train")
