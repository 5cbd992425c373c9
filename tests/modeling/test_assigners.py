import math
import random
import statistics
import unittest

import torch
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.structures import Boxes, Instances

from vfnet import ATSSAssigner, FCOSAssigner
from vfnet.assigners import LabelAssigner
from vfnet.host_calls import HostCallCounter


def _grid(sizes, strides, offset=0.0):
    """Anchors (side 8*stride) per level for feature maps of the given (H, W), and all-valid flags."""
    gen = DefaultAnchorGenerator(
        sizes=[[8 * s] for s in strides], aspect_ratios=[1.0], strides=list(strides), offset=offset
    )
    feats = [torch.zeros(1, 1, h, w) for h, w in sizes]
    anchors = gen(feats)
    valid = [torch.ones(len(a), dtype=torch.bool) for a in anchors]
    return anchors, valid


def _index(size_w, x, y, stride, level_start=0):
    return level_start + (y // stride) * size_w + (x // stride)


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if inter > 0 else 0.0


def naive_atss(anchors_per_level, valid_per_level, gts, topk):
    """ATSS written from its description, one GT and one point at a time, in float64."""
    anchors = [tuple(map(float, a)) for lvl in anchors_per_level for a in lvl.tensor.tolist()]
    valid = [bool(v) for lvl in valid_per_level for v in lvl.tolist()]
    level_of = [i for i, lvl in enumerate(anchors_per_level) for _ in range(len(lvl))]
    center = lambda b: ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)  # noqa: E731
    best = [(-math.inf, -1)] * len(anchors)
    for g, gt in enumerate(gts):
        gc = center(gt)
        candidates = []
        for level in range(len(anchors_per_level)):
            idxs = [i for i in range(len(anchors)) if level_of[i] == level and valid[i]]
            idxs.sort(key=lambda i: (math.dist(center(anchors[i]), gc), i))
            candidates += idxs[:topk]
        ious = [_iou(anchors[i], gt) for i in candidates]
        thr = statistics.mean(ious) + (statistics.stdev(ious) if len(ious) > 1 else math.nan)
        for i, iou in zip(candidates, ious):
            cx, cy = center(anchors[i])
            inside = min(cx - gt[0], cy - gt[1], gt[2] - cx, gt[3] - cy) > 0.01
            if iou >= thr and inside and iou > best[i][0]:
                best[i] = (iou, g)
    return [g for _, g in best]


class ATSSAssignerTest(unittest.TestCase):
    def test_no_boxes(self):
        anchors, valid = _grid([(8, 8), (4, 4)], (8, 16))
        matched = ATSSAssigner(9)(anchors, valid, Boxes(torch.zeros(0, 4)))
        self.assertEqual(matched.tolist(), [-1] * 80)

    def test_tie_between_two_nearest_points(self):
        # GT centre (12, 8) is equidistant from points (8, 8) and (16, 8): both are candidates,
        # with equal IoUs, so both reach the threshold and both are inside the box.
        anchors, valid = _grid([(8, 8)], (8,))
        matched = ATSSAssigner(topk=2)(anchors, valid, Boxes(torch.tensor([[4.0, 4.0, 20.0, 12.0]])))
        positives = (matched >= 0).nonzero().squeeze(1).tolist()
        self.assertEqual(positives, [_index(8, 8, 8, 8), _index(8, 16, 8, 8)])
        self.assertTrue((matched[positives] == 0).all())

    def test_point_inside_two_boxes_goes_to_higher_iou(self):
        # Box A equals the anchor at (16, 16) (IoU 1); box B = [2, 2, 34, 34] has IoU 0.25 with its
        # three candidates, all inside it. (16, 16) is claimed by both and goes to A.
        anchors, valid = _grid([(8, 8)], (8,))
        gts = torch.tensor([[-16.0, -16.0, 48.0, 48.0], [2.0, 2.0, 34.0, 34.0]])
        matched = ATSSAssigner(topk=3)(anchors, valid, Boxes(gts))
        expected = [-1] * 64
        expected[_index(8, 16, 16, 8)] = 0
        expected[_index(8, 24, 16, 8)] = 1
        expected[_index(8, 16, 24, 8)] = 1
        self.assertEqual(matched.tolist(), expected)

    def test_tiny_box(self):
        anchors, valid = _grid([(8, 8)], (8,))
        # No point centre falls inside this box: it gets no positive.
        matched = ATSSAssigner(9)(anchors, valid, Boxes(torch.tensor([[9.0, 9.0, 11.0, 11.0]])))
        self.assertEqual(int((matched >= 0).sum()), 0)
        # This one contains exactly the point (8, 8); every candidate anchor covers it (equal IoUs).
        matched = ATSSAssigner(9)(anchors, valid, Boxes(torch.tensor([[7.0, 7.0, 9.5, 9.5]])))
        self.assertEqual((matched >= 0).nonzero().squeeze(1).tolist(), [_index(8, 8, 8, 8)])

    def test_centre_must_be_inside_by_more_than_001(self):
        anchors, valid = _grid([(8, 8)], (8,))
        # The point (8, 8) lies on the box's left edge plus 0.005: not inside.
        matched = ATSSAssigner(9)(anchors, valid, Boxes(torch.tensor([[7.995, 6.0, 10.0, 10.0]])))
        self.assertEqual(int((matched >= 0).sum()), 0)

    def test_invalid_points_never_match(self):
        anchors, valid = _grid([(8, 8)], (8,))
        gt = Boxes(torch.tensor([[4.0, 4.0, 20.0, 12.0]]))
        valid[0][_index(8, 8, 8, 8)] = False
        matched = ATSSAssigner(topk=2)(anchors, valid, gt)
        self.assertEqual(matched[_index(8, 8, 8, 8)].item(), -1)
        self.assertEqual(matched.tolist(), naive_atss(anchors, valid, gt.tensor.tolist(), 2))

    def test_matches_naive_reference_on_random_scenes(self):
        rng = random.Random(0)
        anchors, valid = _grid([(16, 20), (8, 10), (4, 5)], (8, 16, 32))
        num_positives = 0
        for trial in range(20):
            gts = []
            for _ in range(rng.randint(1, 6)):
                w, h = rng.uniform(4, 120), rng.uniform(4, 120)
                x, y = rng.uniform(0, 160 - w), rng.uniform(0, 128 - h)
                gts.append([x, y, x + w, y + h])
            for lvl in valid:
                lvl.copy_(torch.rand(len(lvl), generator=torch.Generator().manual_seed(trial)) > 0.1)
            matched = ATSSAssigner(9)(anchors, valid, Boxes(torch.tensor(gts)))
            self.assertEqual(matched.tolist(), naive_atss(anchors, valid, gts, 9), f"trial {trial}")
            num_positives += int((matched >= 0).sum())
        self.assertGreater(num_positives, 100)

    def test_waits_for_the_device_twice(self):
        # The valid points (their number sets the shapes) and the per-level counts of them, once for
        # all levels; the positives are not selected by a mask.
        anchors, valid = _grid([(16, 20), (8, 10), (4, 5)], (8, 16, 32))
        gts = Boxes(torch.tensor([[10.0, 20.0, 90.0, 70.0], [60.0, 5.0, 150.0, 120.0]]))
        with HostCallCounter() as calls:
            matched = ATSSAssigner(9)(anchors, valid, gts)
        self.assertEqual(calls.waits, ["nonzero", "tolist"])
        self.assertEqual(matched.tolist(), naive_atss(anchors, valid, gts.tensor.tolist(), 9))

    def test_bad_topk(self):
        with self.assertRaisesRegex(ValueError, "topk"):
            ATSSAssigner(0)


class FCOSAssignerTest(unittest.TestCase):
    def test_inside_and_regress_range_and_smallest_area(self):
        anchors, valid = _grid([(8, 8), (4, 4)], (8, 16), offset=0.5)
        assigner = FCOSAssigner((8, 16), regress_ranges=((-1, 16), (16, 1e8)))
        # Point (12, 12) on level 0 is inside both boxes; its largest distance to the small box
        # is 8 (in range), to the big one 52 (out of level 0's range).
        gts = torch.tensor([[0.0, 0.0, 64.0, 64.0], [4.0, 4.0, 20.0, 20.0]])
        matched = assigner(anchors, valid, Boxes(gts))
        self.assertEqual(matched[_index(8, 12, 12, 8)].item(), 1)
        # On level 1 the point (24, 24) sees the big box at max distance 40 (in range): big box.
        self.assertEqual(matched[_index(4, 24, 24, 16, level_start=64)].item(), 0)
        # Level 0 point (36, 36): only inside the big box, max distance 36 > 16: unmatched.
        self.assertEqual(matched[_index(8, 36, 36, 8)].item(), -1)

    def test_smaller_box_wins(self):
        anchors, valid = _grid([(8, 8)], (8,), offset=0.5)
        assigner = FCOSAssigner((8,), regress_ranges=((-1, 1e8),))
        gts = torch.tensor([[0.0, 0.0, 64.0, 64.0], [8.0, 8.0, 24.0, 24.0]])
        matched = assigner(anchors, valid, Boxes(gts))
        self.assertEqual(matched[_index(8, 12, 12, 8)].item(), 1)
        self.assertEqual(matched[_index(8, 44, 44, 8)].item(), 0)

    def test_center_sampling(self):
        anchors, valid = _grid([(8, 8)], (8,), offset=0.5)
        gt = Boxes(torch.tensor([[0.0, 0.0, 64.0, 64.0]]))
        plain = FCOSAssigner((8,), regress_ranges=((-1, 1e8),))(anchors, valid, gt)
        sampled = FCOSAssigner((8,), regress_ranges=((-1, 1e8),), center_sampling=True, center_sample_radius=1.5)(
            anchors, valid, gt
        )
        self.assertEqual(int((plain >= 0).sum()), 64)
        # Radius 1.5 * 8 = 12 around the centre (32, 32): points 20.. 44 exclusive -> 28, 36 per axis.
        positives = {(i % 8 * 8 + 4, i // 8 * 8 + 4) for i in (sampled >= 0).nonzero().squeeze(1).tolist()}
        self.assertEqual(positives, {(x, y) for x in (28, 36) for y in (28, 36)})

    def test_regress_range_bounds_are_inclusive(self):
        # The reference (FCOSHead._get_target_single, used by VFNetHead without ATSS) keeps a point
        # when lower <= max distance <= upper. Levels: stride 8 in [-1, 16], stride 16 in [16, 1e8].
        anchors, valid = _grid([(8, 8), (4, 4)], (8, 16), offset=0.5)
        assigner = FCOSAssigner((8, 16), regress_ranges=((-1, 16), (16, 1e8)))
        level0 = lambda x, y: _index(8, x, y, 8)  # noqa: E731
        level1 = lambda x, y: _index(4, x, y, 16, level_start=64)  # noqa: E731

        def match(box):
            return assigner(anchors, valid, Boxes(torch.tensor([box])))

        # Level 0 point (4, 4) in [0, 0, 20, 20]: distances (4, 4, 16, 16), max 16 = level 0's upper bound.
        self.assertEqual(match([0.0, 0.0, 20.0, 20.0])[level0(4, 4)].item(), 0, "max distance 16 = upper bound")
        self.assertEqual(match([0.0, 0.0, 20.5, 20.5])[level0(4, 4)].item(), -1)  # max 16.5
        # Level 1 point (40, 40) in [32, 32, 56, 56]: distances (8, 8, 16, 16), max 16 = level 1's lower bound.
        self.assertEqual(match([32.0, 32.0, 56.0, 56.0])[level1(40, 40)].item(), 0, "max distance 16 = lower bound")
        self.assertEqual(match([32.0, 32.0, 55.5, 55.5])[level1(40, 40)].item(), -1)  # max 15.5

    def test_center_sampling_radius_follows_each_levels_stride(self):
        # Radius 2 strides around the centre (32, 32) of [0, 8, 64, 56], cut to the box; ranges unbounded.
        anchors, valid = _grid([(8, 8), (4, 4)], (8, 16), offset=0.5)
        gt = Boxes(torch.tensor([[0.0, 8.0, 64.0, 56.0]]))
        assigner = FCOSAssigner((8, 16), ((-1, 1e8), (-1, 1e8)), center_sampling=True, center_sample_radius=2.0)
        matched = assigner(anchors, valid, gt)
        positives = [set(), set()]
        for i in (matched >= 0).nonzero().squeeze(1).tolist():
            level, j, stride, width = (0, i, 8, 8) if i < 64 else (1, i - 64, 16, 4)
            positives[level].add(((j % width + 0.5) * stride, (j // width + 0.5) * stride))
        # stride 8: radius 16, region (16, 48) x (16, 48): points 20, 28, 36, 44 on each axis
        self.assertEqual(positives[0], {(x, y) for x in (20, 28, 36, 44) for y in (20, 28, 36, 44)})
        # stride 16: radius 32, region (0, 64) x (8, 56) once cut to the box: x 8, 24, 40, 56; y 24, 40
        self.assertEqual(positives[1], {(x, y) for x in (8, 24, 40, 56) for y in (24, 40)})

    def test_no_boxes_and_level_mismatch(self):
        anchors, valid = _grid([(4, 4)], (8,), offset=0.5)
        self.assertEqual(FCOSAssigner((8,), ((-1, 1e8),))(anchors, valid, Boxes(torch.zeros(0, 4))).tolist(), [-1] * 16)
        with self.assertRaisesRegex(ValueError, "levels"):
            FCOSAssigner((8, 16), ((-1, 64), (64, 1e8)))(anchors, valid, Boxes(torch.zeros(0, 4)))
        with self.assertRaisesRegex(ValueError, "regress ranges"):
            FCOSAssigner((8, 16), ((-1, 64),))



class _FixedMatches(LabelAssigner):
    """Returns the matches it was given for each successive image."""

    assigns_padding = False

    def __init__(self, matches):
        self.matches = list(matches)

    def __call__(self, anchors_per_level, valid_per_level, gt_boxes):
        return torch.tensor(self.matches.pop(0))


class LabelImagesTest(unittest.TestCase):
    def test_matches_become_classes_and_boxes_and_unmatched_points_background(self):
        anchors, valid = _grid([(1, 2), (1, 1)], [8, 16])  # 3 points
        with_gt = Instances((32, 32))
        with_gt.gt_boxes = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [4.0, 4.0, 20.0, 30.0]]))
        with_gt.gt_classes = torch.tensor([3, 1])
        empty = Instances((32, 32))
        empty.gt_boxes = Boxes(torch.zeros(0, 4))
        empty.gt_classes = torch.zeros(0, dtype=torch.long)
        assigner = _FixedMatches([[1, -1, 0], [-1, -1, -1]])
        labels, boxes = assigner.label_images(anchors, [valid, valid], [with_gt, empty], num_classes=5)
        self.assertEqual(labels[0].tolist(), [1, 5, 3])
        self.assertEqual(boxes[0].tolist(), [[4.0, 4.0, 20.0, 30.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 10.0, 10.0]])
        self.assertEqual(labels[1].tolist(), [5, 5, 5])
        self.assertEqual(boxes[1].tolist(), [[0.0] * 4] * 3)


class AssignerDefaultsTest(unittest.TestCase):
    def test_defaults_are_the_references(self):
        # MMDetection's ATSSAssigner(topk=9); FCOS/VFNet head: regress ranges ((-1, 64), ..., (512, INF)),
        # center_sampling=False, center_sample_radius=1.5 (SPEC.md; the reference's vfnet_head.py)
        self.assertEqual(ATSSAssigner().topk, 9)
        fcos = FCOSAssigner(strides=[8, 16, 32, 64, 128])
        self.assertEqual(fcos.regress_ranges, [(-1.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, 512.0), (512.0, 1e8)])
        self.assertFalse(fcos.center_sampling)
        self.assertEqual(fcos.center_sample_radius, 1.5)

    def test_atss_topk_must_be_positive(self):
        self.assertEqual(ATSSAssigner(topk=1).topk, 1)  # the smallest valid top-k
        with self.assertRaisesRegex(ValueError, "topk must be >= 1, got 0"):
            ATSSAssigner(topk=0)


if __name__ == "__main__":
    unittest.main()
