"""
The VFNet-X training augmentations (vfnet.data.augmentations) and the mapper that gives them the
boxes: sizes, offsets, scales and holes against the reference's documented sampling (computed
here from its formulas with a separately seeded numpy generator), boxes shifted and clipped by
hand, bounds over many draws, and the VFNet-X data config. Runs in about a second.
"""

import os
import re
import tempfile
import unittest
from unittest import mock

import cv2
import numpy as np
import torch
from PIL import Image

import detectron2.data.transforms as T
from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetMapper
from detectron2.structures import BoxMode

from vfnet.data import (
    CheckedDatasetMapper,
    CutOut,
    CutOutTransform,
    DatasetMapperWithBoxes,
    MultiScaleKeepRatioResize,
    RandomCropKeepingBoxes,
    boxes_kept_by_crop,
    build_train_augmentations,
    keep_ratio_size,
)
from vfnet_test_utils import REPO_ROOT

REPO = REPO_ROOT
VFNETX_DATA = os.path.join(REPO, "configs", "common", "data", "coco_vfnetx.py")
HOLE_SIZES = [(4, 4), (4, 8), (8, 4), (8, 8), (16, 8), (8, 16), (16, 16), (16, 32), (32, 16), (32, 32), (32, 48), (48, 32), (48, 48)]  # fmt: skip


def _apply(aug, image, boxes=None):
    aug_input = T.AugInput(image, boxes=boxes)
    tfm = aug(aug_input)
    return tfm, aug_input


class RandomCropKeepingBoxesTest(unittest.TestCase):
    H, W = 100, 200
    WHOLE = np.array([[0, 0, 200, 100]], dtype=np.float32)  # kept by every crop

    def test_sizes_and_offsets_follow_the_reference_formulas(self):
        image = np.zeros((self.H, self.W, 3), np.uint8)
        aug = RandomCropKeepingBoxes("relative_range", (0.75, 0.75), prob=0.5)
        crops = 0
        for seed in range(200):
            np.random.seed(seed)
            tfm = aug.get_transform(image, self.WHOLE)
            # the reference: u < p crops; r ~ 0.75 + U[0, 1) * 0.25 per side (h, w);
            # size int(H * r + 0.5); offsets randint(0, margin + 1), h first
            rs = np.random.RandomState(seed)
            if not rs.random_sample() < 0.5:
                self.assertIsInstance(tfm, T.NoOpTransform)
                continue
            crops += 1
            r_h, r_w = 0.75 + rs.rand(2) * 0.25
            crop_h, crop_w = int(self.H * r_h + 0.5), int(self.W * r_w + 0.5)
            y0 = rs.randint(0, self.H - crop_h + 1)
            x0 = rs.randint(0, self.W - crop_w + 1)
            self.assertIsInstance(tfm, T.CropTransform)
            self.assertEqual((tfm.x0, tfm.y0, tfm.w, tfm.h), (x0, y0, crop_w, crop_h))
            self.assertTrue(75 <= tfm.h <= 100 and 150 <= tfm.w <= 200)
            self.assertTrue(0 <= tfm.y0 <= self.H - tfm.h and 0 <= tfm.x0 <= self.W - tfm.w)
        self.assertTrue(70 < crops < 130, crops)  # p = 0.5 over 200 draws

    def test_probability(self):
        image = np.zeros((self.H, self.W, 3), np.uint8)
        np.random.seed(0)
        for prob, lo, hi in ((0.0, 0, 0), (1.0, 1000, 1000), (0.3, 250, 350)):
            aug = RandomCropKeepingBoxes(prob=prob)
            n = sum(isinstance(aug.get_transform(image, self.WHOLE), T.CropTransform) for _ in range(1000))
            self.assertTrue(lo <= n <= hi, (prob, n))

    def test_crop_keeps_a_box_or_is_redrawn_then_skipped(self):
        image = np.zeros((self.H, self.W, 3), np.uint8)
        corner = np.array([[0, 0, 6, 6]], dtype=np.float32)  # lost by most 0.75-1.0 crops
        aug = RandomCropKeepingBoxes(prob=1.0, max_attempts=10)
        outcomes = {"crop": 0, "none": 0}
        for seed in range(200):
            np.random.seed(seed)
            tfm = aug.get_transform(image, corner)
            # by hand: crops drawn in turn until one has x0 < 6 and y0 < 6, at most 10
            rs = np.random.RandomState(seed)
            rs.random_sample()
            expected = None
            for _ in range(10):
                r_h, r_w = 0.75 + rs.rand(2) * 0.25
                crop_h, crop_w = int(self.H * r_h + 0.5), int(self.W * r_w + 0.5)
                y0, x0 = rs.randint(0, self.H - crop_h + 1), rs.randint(0, self.W - crop_w + 1)
                if x0 < 6 and y0 < 6:
                    expected = (x0, y0, crop_w, crop_h)
                    break
            if expected is None:
                self.assertIsInstance(tfm, T.NoOpTransform)
                outcomes["none"] += 1
            else:
                self.assertEqual((tfm.x0, tfm.y0, tfm.w, tfm.h), expected)
                outcomes["crop"] += 1
        self.assertTrue(outcomes["crop"] > 20 and outcomes["none"] > 20, outcomes)  # both branches seen
        # a box no crop can keep (zero width), and no box at all: never cropped
        self.assertIsInstance(aug.get_transform(image, np.array([[50, 10, 50, 90]], np.float32)), T.NoOpTransform)
        self.assertIsInstance(aug.get_transform(image, np.zeros((0, 4), np.float32)), T.NoOpTransform)

    def test_boxes_kept_by_crop(self):
        crop = T.CropTransform(10, 20, 50, 40)
        boxes = np.array(
            [[0, 0, 30, 30], [100, 100, 120, 120], [60, 10, 80, 70], [15, 25, 35, 45], [0, 0, 10, 100],
             [15, 60, 35, 80]],  # the last starts at the crop's bottom edge (y 20 + 40): nothing left inside
            np.float32,
        )
        self.assertEqual(boxes_kept_by_crop(boxes, crop).tolist(), [True, False, False, True, False, False])

    def test_needs_boxes(self):
        aug = RandomCropKeepingBoxes(prob=1.0)
        with self.assertRaisesRegex(ValueError, re.escape(
            "this augmentation needs the image's boxes (AugInput(image, boxes=...)); "
            "Detectron2's DatasetMapper does not pass them: use vfnet.data.DatasetMapperWithBoxes"
        )):
            _apply(aug, np.zeros((8, 8, 3), np.uint8))
        with self.assertRaisesRegex(ValueError, r"\(N, 4\)"):
            aug.get_transform(np.zeros((8, 8, 3), np.uint8), np.zeros((3,)))
        with self.assertRaisesRegex(ValueError, "probability"):
            RandomCropKeepingBoxes(prob=1.5)


class AugmentationArgumentsTest(unittest.TestCase):
    """Defaults (the VFNet-X config's values), argument checks naming the argument, the reference's draws."""

    def test_crop_defaults_and_checks(self):
        crop = RandomCropKeepingBoxes()
        self.assertEqual((crop.crop_type, tuple(crop.crop_size), crop.prob, crop.max_attempts),
                         ("relative_range", (0.75, 0.75), 0.5, 10))
        self.assertEqual(RandomCropKeepingBoxes(max_attempts=1).max_attempts, 1)
        with self.assertRaisesRegex(ValueError, "^max_attempts must be >= 1, got 0$"):
            RandomCropKeepingBoxes(max_attempts=0)
        with self.assertRaisesRegex(ValueError, r"^prob must be a probability in \[0, 1\], got 1.5$"):
            RandomCropKeepingBoxes(prob=1.5)

    def test_cutout_defaults_and_checks(self):
        cutout = CutOut(2, [(4, 4)])
        self.assertEqual((cutout.n_holes, cutout.prob, cutout.fill_value), ((2, 2), 0.5, 0))
        self.assertEqual(CutOut((0, 3), [(4, 1)]).n_holes, (0, 3))  # zero holes and 1-px sides are allowed
        with self.assertRaisesRegex(ValueError, r"^prob must be a probability in \[0, 1\], got -0.1$"):
            CutOut(2, [(4, 4)], prob=-0.1)
        with self.assertRaisesRegex(ValueError, r"^hole_sizes must be a non-empty list of pairs of positive integers"):
            CutOut(2, [(0, 4)])
        with self.assertRaisesRegex(ValueError, r"^scales must be a non-empty list of pairs of positive integers"):
            MultiScaleKeepRatioResize([(0, 500)])
        # the holes are black by default; a per-channel fill reaches the transform
        image = np.full((6, 8, 3), 200, np.uint8)
        self.assertEqual(CutOutTransform(np.array([[0, 0, 2, 3]])).apply_image(image)[:3, :2].tolist(), [[[0] * 3] * 2] * 3)
        np.random.seed(0)
        tfm = CutOut(1, [(2, 2)], prob=1.0, fill_value=(1, 2, 3)).get_transform(image)
        self.assertEqual(tfm.fill_value, (1, 2, 3))

    def test_probability_is_strict_as_the_reference(self):
        # the reference's np.random.choice([True, False], p=[p, 1 - p]) applies when u < p, not at u == p
        image = np.zeros((20, 20, 3), np.uint8)
        boxes = np.array([[0, 0, 20, 20]], np.float32)
        for aug, args in ((RandomCropKeepingBoxes(prob=0.5), (image, boxes)), (CutOut(1, [(2, 2)], prob=0.5), (image,))):
            with mock.patch.object(type(aug), "_rand_range", return_value=0.5):
                self.assertIsInstance(aug.get_transform(*args), T.NoOpTransform, type(aug).__name__)

    def test_resize_interpolation_and_long_edge_bound(self):
        resize = MultiScaleKeepRatioResize([(10, 5), (11, 6)], interp=Image.NEAREST)
        self.assertEqual(resize.get_transform(np.zeros((4, 4, 3), np.uint8)).interp, Image.NEAREST)
        np.random.seed(0)
        self.assertEqual({resize.sample_scale()[0] for _ in range(200)}, {10, 11})  # long edge in [10, 11]

    def test_yacs_options_reach_the_augmentations(self):
        from detectron2.config import get_cfg

        from vfnet import add_vfnet_config

        cfg = get_cfg()
        add_vfnet_config(cfg)
        cfg.INPUT.CROP.ENABLED = True
        cfg.INPUT.CROP.SIZE = [0.6, 0.7]
        cfg.INPUT.CROP.PROB = 0.3
        cfg.INPUT.RESIZE_SCALES = [[1000, 600], [1200, 800]]
        cfg.INPUT.RESIZE_SCALES_MODE = "value"
        cfg.INPUT.CUTOUT.ENABLED = True
        cfg.INPUT.CUTOUT.PROB = 0.2
        cfg.INPUT.CUTOUT.FILL_VALUE = 7
        for flip_mode in ("vertical", "none"):
            cfg.INPUT.RANDOM_FLIP = flip_mode
            with self.subTest(flip=flip_mode):
                augs = build_train_augmentations(cfg)
                crop, resize, cutout = augs[:3]
                self.assertEqual((tuple(crop.crop_size), crop.prob), ((0.6, 0.7), 0.3))
                self.assertEqual((resize.scales, resize.multiscale_mode), (((1000, 600), (1200, 800)), "value"))
                self.assertEqual((cutout.prob, cutout.fill_value), (0.2, 7))
                if flip_mode == "none":
                    self.assertEqual(len(augs), 3)
                else:
                    self.assertEqual((augs[3].horizontal, augs[3].vertical), (False, True))


class MapperTest(unittest.TestCase):
    """Boxes through DatasetMapperWithBoxes (Detectron2's DatasetMapper annotation path)."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.file = os.path.join(self.tmp.name, "a.png")
        cv2.imwrite(self.file, np.full((100, 200, 3), 255, np.uint8))

    def tearDown(self):
        self.tmp.cleanup()

    def record(self, boxes, crowd=()):
        anns = [
            {"bbox": list(b), "bbox_mode": BoxMode.XYXY_ABS, "category_id": i, "iscrowd": int(i in crowd)}
            for i, b in enumerate(boxes)
        ]
        return {"file_name": self.file, "height": 100, "width": 200, "annotations": anns}

    def test_fixed_crop_shifts_clips_and_drops_boxes(self):
        mapper = DatasetMapperWithBoxes(
            is_train=True, augmentations=[T.CropTransform(10, 20, 50, 40)], image_format="RGB"
        )
        boxes = [
            [0, 0, 30, 30],  # partly inside: (-10, -20, 20, 10) -> clipped (0, 0, 20, 10)
            [100, 100, 120, 120],  # outside: dropped
            [60, 10, 80, 70],  # touches the right edge only: width 0 after clipping, dropped
            [15, 25, 35, 45],  # inside: (5, 5, 25, 25)
            [12, 22, 20, 30],  # a crowd box: dropped as Detectron2 drops crowds
            [55.5, 30, 70, 50.25],  # (45.5, 10, 60, 30.25) -> (45.5, 10, 50, 30.25)
        ]
        out = mapper(self.record(boxes, crowd=(4,)))
        self.assertEqual(tuple(out["image"].shape), (3, 40, 50))
        inst = out["instances"]
        self.assertEqual(inst.gt_classes.tolist(), [0, 3, 5])
        np.testing.assert_allclose(
            inst.gt_boxes.tensor.numpy(), [[0, 0, 20, 10], [5, 5, 25, 25], [45.5, 10, 50, 30.25]], rtol=0, atol=1e-5
        )

    def test_random_crop_sees_the_boxes(self):
        crop = RandomCropKeepingBoxes(prob=1.0)
        mapper = DatasetMapperWithBoxes(is_train=True, augmentations=[crop], image_format="RGB")
        np.random.seed(0)
        for _ in range(20):
            out = mapper(self.record([[0, 0, 6, 6]]))
            self.assertEqual(len(out["instances"]), 1)  # the crop always keeps the corner box
            h, w = out["image"].shape[1:]
            self.assertTrue(75 <= h <= 100 and 150 <= w <= 200)
        # Detectron2's own DatasetMapper gives the augmentations no boxes: a clear error
        plain = DatasetMapper(is_train=True, augmentations=[crop], image_format="RGB")
        with self.assertRaisesRegex(ValueError, "DatasetMapperWithBoxes"):
            plain(self.record([[0, 0, 6, 6]]))

    def test_test_mode_and_errors_name_the_file(self):
        mapper = DatasetMapperWithBoxes(
            is_train=False, augmentations=[T.ResizeShortestEdge(50, 100)], image_format="RGB"
        )
        out = mapper(self.record([[0, 0, 6, 6]]))
        self.assertEqual(tuple(out["image"].shape), (3, 50, 100))
        self.assertNotIn("instances", out)
        bad = dict(self.record([]), file_name=os.path.join(self.tmp.name, "missing.png"))
        with self.assertRaisesRegex(RuntimeError, "missing.png"):
            mapper(bad)

    def test_same_output_as_detectron2_mapper(self):
        # Without box-taking augmentations, DatasetMapperWithBoxes must give what Detectron2's DatasetMapper
        # gives: image (in each format), sem_seg, top-k proposals, instances (crowd dropped), test-mode keys.
        rng = np.random.default_rng(0)
        image = os.path.join(self.tmp.name, "colour.png")
        cv2.imwrite(image, rng.integers(0, 255, (100, 200, 3), dtype=np.uint8))
        labels = os.path.join(self.tmp.name, "labels.png")
        cv2.imwrite(labels, rng.integers(0, 5, (100, 200), dtype=np.uint8))
        record = dict(
            self.record([[0, 0, 30, 30], [15, 25, 35, 45], [12, 22, 20, 30]], crowd=(2,)),
            file_name=image,
            sem_seg_file_name=labels,
            proposal_boxes=np.array([[0, 0, 40, 40], [20, 30, 90, 60], [5, 5, 9, 9]], np.float32),
            proposal_objectness_logits=np.array([0.5, 2.0, 1.0], np.float32),
            proposal_bbox_mode=BoxMode.XYXY_ABS,
        )
        del record["annotations"][1]["iscrowd"]  # no key: not a crowd, as in Detectron2
        augmentations = [T.CropTransform(10, 20, 150, 60), T.HFlipTransform(150)]
        for is_train in (True, False):
            for image_format in ("BGR", "RGB"):
                with self.subTest(is_train=is_train, image_format=image_format):
                    args = dict(is_train=is_train, augmentations=augmentations, image_format=image_format,
                                precomputed_proposal_topk=1)
                    ours, reference = DatasetMapperWithBoxes(**args)(record), DatasetMapper(**args)(record)
                    self.assertEqual(sorted(ours), sorted(reference))
                    self.assertTrue(torch.equal(ours["image"], reference["image"]))
                    self.assertEqual(ours["sem_seg"].dtype, torch.int64)
                    self.assertTrue(torch.equal(ours["sem_seg"], reference["sem_seg"]))
                    for field in ("proposal_boxes", "objectness_logits"):
                        a, b = ours["proposals"].get(field), reference["proposals"].get(field)
                        self.assertTrue(torch.equal(getattr(a, "tensor", a), getattr(b, "tensor", b)))
                    self.assertEqual(len(ours["proposals"]), 1)  # of the 2 left inside the crop
                    if is_train:
                        self.assertEqual(ours["instances"].gt_classes.tolist(), [0, 1])
                        self.assertTrue(torch.equal(ours["instances"].gt_boxes.tensor, reference["instances"].gt_boxes.tensor))
                    else:
                        self.assertNotIn("annotations", ours)
        # test time without annotations; a one-row image (its sem_seg stays 2-D)
        row = os.path.join(self.tmp.name, "row.png")
        cv2.imwrite(row, rng.integers(0, 255, (1, 8, 3), dtype=np.uint8))
        record = {"file_name": row, "sem_seg_file_name": row, "height": 1, "width": 8}
        args = dict(is_train=False, augmentations=[], image_format="BGR")
        ours, reference = DatasetMapperWithBoxes(**args)(record), DatasetMapper(**args)(record)
        self.assertEqual(sorted(ours), sorted(reference))
        self.assertEqual(tuple(ours["sem_seg"].shape), (1, 8))
        self.assertTrue(torch.equal(ours["sem_seg"], reference["sem_seg"]))

    def test_augmentations_see_the_non_crowd_boxes_as_they_stand(self):
        seen = []

        class Recorder(T.Augmentation):
            def get_transform(self, image, boxes):
                seen.append(None if boxes is None else boxes.copy())
                return T.NoOpTransform()

        mapper = DatasetMapperWithBoxes(
            is_train=True, augmentations=[Recorder(), T.CropTransform(10, 20, 150, 60), Recorder()], image_format="RGB"
        )
        record = self.record([[0, 0, 30, 30], [12, 22, 20, 30], [15, 25, 35, 45]], crowd=(1,))
        record["annotations"][2].update(bbox=[15, 25, 20, 20], bbox_mode=BoxMode.XYWH_ABS)
        del record["annotations"][2]["iscrowd"]  # no key: not a crowd
        mapper(record)
        self.assertEqual([b.dtype for b in seen], [np.float32, np.float32])
        self.assertEqual(seen[0].tolist(), [[0, 0, 30, 30], [15, 25, 35, 45]])  # XYXY, the crowd box left out
        self.assertEqual(seen[1].tolist(), [[-10, -20, 20, 10], [5, 5, 25, 25]])  # after the crop (moved by 10, 20)
        # no annotations at all (test time): boxes is None
        seen.clear()
        no_annotations = self.record([])
        del no_annotations["annotations"]
        mapper(no_annotations)
        self.assertEqual(seen, [None, None])

    def test_error_names_the_cause(self):
        mapper = CheckedDatasetMapper(is_train=True, augmentations=[], image_format="BGR")
        missing = os.path.join(self.tmp.name, "missing.png")
        with self.assertRaisesRegex(RuntimeError, f"^failed to load image {re.escape(missing)}: FileNotFoundError: "):
            mapper(dict(self.record([]), file_name=missing))
        no_file = self.record([])
        del no_file["file_name"]
        with self.assertRaisesRegex(RuntimeError, "^failed to load image <no file_name>: KeyError: 'file_name'$"):
            mapper(no_file)

    def test_corrupt_image_error_names_the_file(self):
        garbage = os.path.join(self.tmp.name, "garbage.jpg")
        with open(garbage, "wb") as f:
            f.write(bytes(range(256)) * 8)
        truncated = os.path.join(self.tmp.name, "truncated.jpg")
        ok, encoded = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (100, 200, 3), dtype=np.uint8))
        with open(truncated, "wb") as f:
            f.write(encoded.tobytes()[: len(encoded) // 3])
        for mapper_class in (CheckedDatasetMapper, DatasetMapperWithBoxes):
            mapper = mapper_class(is_train=True, augmentations=[], image_format="BGR")
            for path in (garbage, truncated):
                with self.subTest(mapper=mapper_class.__name__, file=os.path.basename(path)):
                    with self.assertRaises(RuntimeError) as ctx:
                        mapper(dict(self.record([[0, 0, 6, 6]]), file_name=path))
                    self.assertTrue(str(ctx.exception).startswith(f"failed to load image {path}: "), str(ctx.exception))
                    self.assertIsInstance(ctx.exception.__cause__, OSError)  # PIL's error, kept as the cause
            # an image whose size differs from its record's
            with self.assertRaisesRegex(RuntimeError, f"failed to load image {re.escape(self.file)}: .*[Mm]ismatch"):
                mapper(dict(self.record([[0, 0, 6, 6]]), height=90))


class MultiScaleKeepRatioResizeTest(unittest.TestCase):
    def test_keep_ratio_size_by_hand(self):
        # 480x640 at 1333x800: s = min(1333/640, 800/480) = 5/3 -> (800, int(1066.67 + 0.5))
        self.assertEqual(keep_ratio_size(480, 640, (1333, 800)), (800, 1067))
        # long edge bound: 300x1000 at (1333, 800): s = min(1.333, 2.667) -> (int(399.9 + .5), 1333)
        self.assertEqual(keep_ratio_size(300, 1000, (1333, 800)), (400, 1333))
        # a sampled "short" edge larger than the long one is used as the long bound, as mmcv does:
        # 1000x500 at (800, 1300): s = min(1300/1000, 800/500) = 1.3 -> (1300, 650)
        self.assertEqual(keep_ratio_size(1000, 500, (800, 1300)), (1300, 650))
        self.assertEqual(keep_ratio_size(1000, 500, (1300, 800)), (1300, 650))
        # rounding: 3x7 at (10, 10): s = 10/7 -> (int(4.2857 + .5), int(10.0 + .5)) = (4, 10)
        self.assertEqual(keep_ratio_size(3, 7, (10, 10)), (4, 10))

    def test_range_mode_matches_a_hand_computation_and_stays_in_range(self):
        aug = MultiScaleKeepRatioResize([(750, 500), (2100, 1400)], "range")
        image = np.zeros((480, 640, 3), np.uint8)
        longs, shorts = [], []
        for seed in range(300):
            np.random.seed(seed)
            tfm = aug.get_transform(image)
            rs = np.random.RandomState(seed)
            long_edge, short_edge = rs.randint(750, 2101), rs.randint(500, 1401)
            longs.append(long_edge)
            shorts.append(short_edge)
            bound_long, bound_short = max(long_edge, short_edge), min(long_edge, short_edge)
            s = min(bound_long / 640, bound_short / 480)
            self.assertEqual((tfm.new_h, tfm.new_w), (int(480 * s + 0.5), int(640 * s + 0.5)))
            self.assertEqual((tfm.h, tfm.w), (480, 640))
            self.assertLessEqual(tfm.new_w, 2100)
            self.assertLessEqual(tfm.new_h, 1400)
            # the smallest bounds (750, 500) give s = min(750/640, 500/480) = 500/480
            self.assertTrue(tfm.new_h >= 500 and tfm.new_w >= 667, (tfm.new_h, tfm.new_w))
            self.assertLess(abs(tfm.new_w / tfm.new_h - 640 / 480), 0.01)
        self.assertTrue(min(longs) < 800 and max(longs) > 2050 and min(shorts) < 550 and max(shorts) > 1350)

    def test_value_mode_single_scale_and_image(self):
        np.random.seed(0)
        aug = MultiScaleKeepRatioResize([(1333, 640), (1333, 800)], "value")
        seen = {aug.sample_scale() for _ in range(50)}
        self.assertEqual(seen, {(1333, 640), (1333, 800)})
        single = MultiScaleKeepRatioResize([(1333, 800)])
        self.assertEqual({single.sample_scale() for _ in range(5)}, {(1333, 800)})
        tfm, out = _apply(single, np.zeros((480, 640, 3), np.uint8), np.array([[64, 48, 128, 96]], np.float32))
        self.assertEqual(out.image.shape, (800, 1067, 3))
        np.testing.assert_allclose(out.boxes, [[64 * 1067 / 640, 80, 128 * 1067 / 640, 160]], rtol=1e-5)

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "multiscale_mode"):
            MultiScaleKeepRatioResize([(1, 2)], "ratio")
        with self.assertRaisesRegex(ValueError, "two"):
            MultiScaleKeepRatioResize([(1, 2), (3, 4), (5, 6)], "range")
        with self.assertRaisesRegex(ValueError, "scales"):
            MultiScaleKeepRatioResize([(1333,)])
        with self.assertRaisesRegex(ValueError, "scales"):
            MultiScaleKeepRatioResize([(1333, 0)])


class CutOutTest(unittest.TestCase):
    H, W = 60, 90

    def test_holes_follow_the_reference_formulas(self):
        aug = CutOut(n_holes=(5, 10), hole_sizes=HOLE_SIZES, prob=1.0)
        image = np.full((self.H, self.W, 3), 255, np.uint8)
        counts = set()
        for seed in range(100):
            np.random.seed(seed)
            tfm, out = _apply(aug, image)
            self.assertIsInstance(tfm, CutOutTransform)
            # the reference: u < p; n = randint(5, 11); per hole x1 = randint(0, W),
            # y1 = randint(0, H), shape = candidates[randint(0, 13)], clipped at W, H
            rs = np.random.RandomState(seed)
            self.assertLess(rs.random_sample(), 1.0)
            n = rs.randint(5, 11)
            expected = []
            for _ in range(n):
                x1, y1 = rs.randint(0, self.W), rs.randint(0, self.H)
                w, h = HOLE_SIZES[rs.randint(0, len(HOLE_SIZES))]
                expected.append([x1, y1, min(x1 + w, self.W), min(y1 + h, self.H)])
            self.assertEqual(tfm.holes.tolist(), expected)
            counts.add(len(tfm.holes))
            mask = np.zeros((self.H, self.W), bool)
            for x1, y1, x2, y2 in expected:
                w, h = x2 - x1, y2 - y1
                self.assertTrue(
                    (w, h) in HOLE_SIZES
                    or any(min(cw, self.W - x1) == w and min(ch, self.H - y1) == h for cw, ch in HOLE_SIZES)
                )
                mask[y1:y2, x1:x2] = True
            self.assertTrue((out.image[mask] == 0).all())
            self.assertTrue((out.image[~mask] == 255).all())  # untouched outside the holes
            self.assertTrue((image == 255).all())  # the input array is not modified
        self.assertTrue(counts <= set(range(5, 11)) and len(counts) >= 5, counts)

    def test_probability_and_boxes(self):
        image = np.full((self.H, self.W, 3), 7, np.uint8)
        boxes = np.array([[1, 2, 30, 40]], np.float32)
        np.random.seed(0)
        never = CutOut(n_holes=(5, 10), hole_sizes=HOLE_SIZES, prob=0.0)
        for _ in range(100):
            tfm, out = _apply(never, image, boxes)
            self.assertIsInstance(tfm, T.NoOpTransform)
            self.assertTrue((out.image == 7).all())
        half = CutOut(n_holes=(5, 10), hole_sizes=HOLE_SIZES, prob=0.5)
        applied = sum(isinstance(half.get_transform(image), CutOutTransform) for _ in range(1000))
        self.assertTrue(430 <= applied <= 570, applied)
        tfm, out = _apply(CutOut(n_holes=3, hole_sizes=[(5, 5)], prob=1.0), image, boxes)
        np.testing.assert_array_equal(out.boxes, boxes)
        self.assertEqual(len(tfm.holes), 3)

    def test_fill_value_per_channel_and_errors(self):
        tfm = CutOutTransform(np.array([[1, 2, 4, 3]]), fill_value=(10, 20, 30))
        out = tfm.apply_image(np.zeros((5, 6, 3), np.uint8))
        np.testing.assert_array_equal(out[2, 1:4], [[10, 20, 30]] * 3)
        self.assertEqual(int(out.sum()), 3 * 60)
        with self.assertRaisesRegex(ValueError, "channels"):
            tfm.apply_image(np.zeros((5, 6), np.uint8))
        with self.assertRaisesRegex(ValueError, "n_holes"):
            CutOut(n_holes=(10, 5), hole_sizes=HOLE_SIZES)
        with self.assertRaisesRegex(ValueError, "hole_sizes"):
            CutOut(n_holes=5, hole_sizes=[(4, -4)])
        with self.assertRaisesRegex(ValueError, "holes"):
            CutOutTransform(np.zeros((2, 3)))


class VFNetXDataConfigTest(unittest.TestCase):
    def test_pipeline(self):
        cfg = LazyConfig.load(VFNETX_DATA)
        self.assertEqual(cfg.dataloader.train.total_batch_size, 16)
        self.assertEqual(cfg.dataloader.train.dataset.names, "coco_2017_train")
        mapper = instantiate(cfg.dataloader.train.mapper)
        self.assertIsInstance(mapper, DatasetMapperWithBoxes)
        self.assertEqual(mapper.image_format, "RGB")
        crop, resize, cutout, flip = mapper.augmentations.augs
        self.assertEqual((crop.crop_type, list(crop.crop_size), crop.prob), ("relative_range", [0.75, 0.75], 0.5))
        self.assertEqual((resize.scales, resize.multiscale_mode), (((750, 500), (2100, 1400)), "range"))
        self.assertEqual(
            (cutout.n_holes, list(cutout.hole_sizes), cutout.prob, cutout.fill_value), ((5, 10), HOLE_SIZES, 0.5, 0)
        )
        self.assertIsInstance(flip, T.RandomFlip)
        self.assertEqual((flip.prob, flip.horizontal), (0.5, True))
        test = instantiate(cfg.dataloader.test.mapper)
        (resize,) = test.augmentations.augs
        self.assertEqual((resize.short_edge_length, resize.max_size), ((800, 800), 1333))

        # the whole pipeline on one image: sizes in the allowed range, boxes inside the image.
        # After a crop (at least 225x300), s >= min(750 / long, 500 / short), so the short side
        # is at least min(750 * 225 / 400, 500) = 421.
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "a.png")
            cv2.imwrite(path, np.full((300, 400, 3), 200, np.uint8))
            record = {
                "file_name": path,
                "height": 300,
                "width": 400,
                "annotations": [{"bbox": [50, 60, 250, 200], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 1}],
            }
            np.random.seed(0)
            for _ in range(10):
                out = mapper(record)
                h, w = out["image"].shape[1:]
                self.assertTrue(max(h, w) <= 2100 and min(h, w) <= 1400 and min(h, w) >= 421, (h, w))
                boxes = out["instances"].gt_boxes.tensor
                self.assertEqual(len(boxes), 1)
                self.assertTrue(bool((boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all() and (boxes >= 0).all()))


if __name__ == "__main__":
    unittest.main()
