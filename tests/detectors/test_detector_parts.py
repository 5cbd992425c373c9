"""
The parts of the VFL detectors: MMDetection's assigners (against their documented rules on
hand-made cases), its anchors, the FPN's extra levels, valid flags, and each detector's whole
forward pass (training with and without ground truth, backward, inference).
"""
import math
import unittest
from unittest import mock

import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.matcher import Matcher
from detectron2.utils.events import EventStorage

from vfnet.detectors import ExtraLevels, FoveaAssigner, MaxIoUMatcher, MMDetAnchorGenerator, MMDetBox2BoxTransform, PointAssigner
from vfnet.detectors import common
from vfnet.detectors.common import means_over_workers, select_topk_candidates, valid_flags
from vfnet.host_calls import HostCallCounter
from vfnet_test_utils import REPO_ROOT, make_instances, random_image


_PREVIOUS_THREADS = []


def setUpModule():
    # small models: one thread is as fast, and much steadier on a shared, loaded machine
    _PREVIOUS_THREADS.append(torch.get_num_threads())
    torch.set_num_threads(1)


def tearDownModule():
    torch.set_num_threads(_PREVIOUS_THREADS.pop())


class MaxIoUMatcherTest(unittest.TestCase):
    def test_thresholds_and_low_quality_reassignment(self):
        iou = torch.tensor([[0.60, 0.45, 0.10, 0.30, 0.00], [0.55, 0.20, 0.10, 0.35, 0.00]])
        matches, labels = MaxIoUMatcher(pos_iou_thr=0.5, neg_iou_thr=0.4)(iou)
        self.assertEqual(labels.tolist(), [1, -1, 0, 0, 0])
        # prediction 0 is best for ground truth 0 (0.60) but is ground truth 1's best (0.55):
        # MMDetection gives it to ground truth 1; Detectron2's Matcher keeps ground truth 0
        self.assertEqual(matches[0].item(), 1)
        d2_matches, d2_labels = Matcher([0.4, 0.5], [0, -1, 1], allow_low_quality_matches=True)(iou)
        self.assertEqual(d2_matches[0].item(), 0)
        self.assertEqual(d2_labels.tolist(), labels.tolist())

    def test_ties_and_the_later_ground_truth_wins(self):
        iou = torch.tensor([[0.30, 0.30, 0.10], [0.30, 0.20, 0.25]])
        matches, labels = MaxIoUMatcher()(iou)
        # both ground truths' best is 0.30; every prediction at its ground truth's best is claimed
        self.assertEqual(labels.tolist(), [1, 1, 0])
        self.assertEqual(matches[:2].tolist(), [1, 0])

    def test_ground_truth_without_overlap_claims_every_zero_iou(self):
        # min_pos_iou = 0 (RetinaNet's, RepPoints'): a ground truth whose best IoU is 0 claims
        # every prediction it does not overlap, as MMDetection's MaxIoUAssigner does
        iou = torch.tensor([[0.0, 0.0, 0.0], [0.7, 0.2, 0.0]])
        matches, labels = MaxIoUMatcher()(iou)
        self.assertEqual(labels.tolist(), [1, 1, 1])
        self.assertEqual(matches.tolist(), [1, 0, 0])

    def test_no_ground_truth(self):
        matches, labels = MaxIoUMatcher()(torch.zeros(0, 4))
        self.assertEqual(labels.tolist(), [0, 0, 0, 0])

    def test_bad_thresholds(self):
        with self.assertRaisesRegex(ValueError, "neg_iou_thr <= pos_iou_thr"):
            MaxIoUMatcher(pos_iou_thr=0.3, neg_iou_thr=0.4)


class PointAssignerTest(unittest.TestCase):
    points = torch.tensor([[4.0, 4.0], [12.0, 4.0], [20.0, 4.0], [8.0, 8.0], [24.0, 8.0]])
    strides = torch.tensor([8, 8, 8, 16, 16])

    def test_level_and_nearest_point(self):
        # 30 x 30: level int(log2(30 / 4)) = 2, clamped to 3; nearest point (12, 4)
        # 64 x 64: level log2(64 / 4) = 4; its centre (32, 32) is nearest (24, 8) there
        gt = torch.tensor([[0.0, 0.0, 30.0, 30.0], [0.0, 0.0, 64.0, 64.0]])
        self.assertEqual(PointAssigner(scale=4)(self.points, self.strides, gt).tolist(), [-1, 0, -1, -1, 1])

    def test_nearer_ground_truth_keeps_the_point_in_either_order(self):
        big = [0.0, 0.0, 30.0, 30.0]
        small = [10.0, 0.0, 16.0, 8.0]  # centre (13, 4): 1/6 of its width from (12, 4)
        for order, expected in (([big, small], 1), ([small, big], 0)):
            assigned = PointAssigner()(self.points, self.strides, torch.tensor(order))
            self.assertEqual(assigned[1].item(), expected)

    def test_empty(self):
        self.assertEqual(PointAssigner()(self.points, self.strides, torch.zeros(0, 4)).tolist(), [-1] * 5)

    def test_waits_for_the_device_once_plus_once_per_level_not_per_ground_truth(self):
        # Six ground truths on two levels: their levels read once, each level's points once.
        gt = torch.tensor([[0.0, 0.0, 30.0, 30.0], [0.0, 0.0, 64.0, 64.0], [10.0, 0.0, 16.0, 8.0]] * 2)
        with HostCallCounter() as calls:
            assigned = PointAssigner(scale=4)(self.points, self.strides, gt)
        self.assertEqual(calls.waits, ["tolist", "nonzero", "nonzero"])
        # the first of equally near duplicates keeps a point; the small box is nearest (12, 4)
        self.assertEqual(assigned.tolist(), [-1, 2, -1, -1, 1])


class FoveaAssignerTest(unittest.TestCase):
    def test_fovea_cells_smaller_boxes_on_top(self):
        # stride 8, 6 x 6 cells; box [8, 8, 40, 40] / 8 = [1, 1, 5, 5]: the fovea (sigma 0.4) is
        # x, y in [ceil(1 + 0.6 * 2 - 0.5), floor(1 + 1.4 * 2 - 0.5)] = [2, 3];
        # [16, 16, 40, 40] -> [3, 3]; a box of scale 100 is outside the range (1, 64)
        gt = torch.tensor([[16.0, 16.0, 40.0, 40.0], [8.0, 8.0, 40.0, 40.0], [0.0, 0.0, 100.0, 100.0]])
        assigned = FoveaAssigner(scale_ranges=[(1, 64)], sigma=0.4)([(6, 6)], [8], gt).view(6, 6)
        expected = torch.full((6, 6), -1)
        expected[2:4, 2:4] = 1
        expected[3, 3] = 0
        self.assertEqual(assigned.tolist(), expected.tolist())

    def test_overlapping_ranges_give_two_levels(self):
        gt = torch.tensor([[0.0, 0.0, 48.0, 48.0]])  # scale 48: in (1, 64) and (32, 128)
        assigned = FoveaAssigner(scale_ranges=[(1, 64), (32, 128)])([(8, 8), (4, 4)], [8, 16], gt)
        self.assertGreater(int((assigned[:64] == 0).sum()), 0)
        self.assertGreater(int((assigned[64:] == 0).sum()), 0)

    def test_waits_for_the_device_twice_per_level_with_ground_truths(self):
        gt = torch.tensor([[16.0, 16.0, 40.0, 40.0], [8.0, 8.0, 40.0, 40.0], [0.0, 0.0, 48.0, 48.0]])
        assigner = FoveaAssigner(scale_ranges=[(1, 64), (32, 128), (256, 512)])
        with HostCallCounter() as calls:
            assigner([(8, 8), (4, 4), (2, 2)], [8, 16, 32], gt)
        self.assertEqual(calls.waits, ["nonzero", "tolist", "nonzero", "tolist", "nonzero"])

    def test_levels_must_match(self):
        with self.assertRaisesRegex(ValueError, "2 levels and 2 strides for 1 scale ranges"):
            FoveaAssigner(scale_ranges=[(1, 64)])([(8, 8), (4, 4)], [8, 16], torch.zeros(0, 4))


class MMDetAnchorGeneratorTest(unittest.TestCase):
    def test_boxes_and_order(self):
        gen = MMDetAnchorGenerator(strides=[8], ratios=[0.5, 1.0, 2.0], octave_base_scale=4, scales_per_octave=3)
        cell = list(gen.cell_anchors)[0].double()
        for r_idx, ratio in enumerate([0.5, 1.0, 2.0]):
            for s_idx in range(3):
                size = 8 * 4 * 2 ** (s_idx / 3)
                w, h = size / math.sqrt(ratio), size * math.sqrt(ratio)
                expected = torch.tensor([-w / 2, -h / 2, w / 2, h / 2], dtype=torch.float64)
                torch.testing.assert_close(cell[r_idx * 3 + s_idx], expected, rtol=0, atol=1e-4)

    def test_same_boxes_as_detectron2_in_another_order(self):
        gen = MMDetAnchorGenerator(strides=[8, 16], ratios=[0.5, 1.0, 2.0])
        d2 = DefaultAnchorGenerator(
            sizes=[[s * 4 * 2 ** (i / 3) for i in range(3)] for s in (8, 16)], aspect_ratios=[0.5, 1.0, 2.0], strides=[8, 16], offset=0.0
        )
        features = [torch.zeros(1, 1, 5, 7), torch.zeros(1, 1, 3, 4)]
        for ours, theirs in zip(gen(features), d2(features)):
            ours, theirs = ours.tensor.view(-1, 9, 4), theirs.tensor.view(-1, 9, 4)
            # Detectron2: size-major (s * 3 + r); MMDetection: ratio-major (r * 3 + s)
            permuted = theirs[:, [s * 3 + r for r in range(3) for s in range(3)]]
            torch.testing.assert_close(ours, permuted, rtol=0, atol=1e-4)


class MMDetBox2BoxTransformTest(unittest.TestCase):
    def test_log_scales_clamped_from_both_sides(self):
        # MMDetection's delta2bbox clamps dw, dh to +-log(1000 / 16); Detectron2's from above only
        transform = MMDetBox2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0))
        box = torch.tensor([[0.0, 0.0, 100.0, 50.0]])
        deltas = torch.tensor([[0.0, 0.0, -50.0, 50.0]])  # dw = -10, dh = +10 after the weights
        out = transform.apply_deltas(deltas, box)[0]
        clamp = math.log(1000.0 / 16)
        w, h = 100 * math.exp(-clamp), 50 * math.exp(clamp)
        torch.testing.assert_close(out, torch.tensor([50 - w / 2, 25 - h / 2, 50 + w / 2, 25 + h / 2]), rtol=1e-5, atol=1e-3)
        self.assertEqual(deltas[0, 2].item(), -50.0)  # the input is left as it is


class ExtraLevelsTest(unittest.TestCase):
    def test_relu_between_p6_and_p7(self):
        torch.manual_seed(0)
        x = torch.randn(1, 8, 16, 16)
        plain = ExtraLevels(8, 4, in_feature="res5", relu_before_p7=False)
        with_relu = ExtraLevels(8, 4, in_feature="res5", relu_before_p7=True)
        with_relu.load_state_dict(plain.state_dict())
        p6, p7 = plain(x)
        self.assertEqual(tuple(p6.shape), (1, 4, 8, 8))
        torch.testing.assert_close(p7, plain.p7(p6))
        torch.testing.assert_close(with_relu(x)[1], plain.p7(torch.relu(p6)))
        self.assertFalse(torch.allclose(p7, with_relu(x)[1]))

    def test_group_norm(self):
        levels = ExtraLevels(64, 32, norm="GN")
        self.assertIsInstance(levels.p6.norm, torch.nn.GroupNorm)
        self.assertIsNone(levels.p6.bias)


class ValidFlagsAndCandidatesTest(unittest.TestCase):
    def test_own_padded_area(self):
        # a 70 x 50 image in a 96 x 80 batch, padded to 32: 96 x 64 of its own, so at stride 8 the
        # columns 8 and 9 of the 10 are outside it; two anchors per location
        flags = valid_flags([(12, 10)], [8], [(70, 50)], 32, num_anchors=2)[0][0].view(12, 10, 2)
        self.assertTrue(flags[:, :8].all())
        self.assertFalse(flags[:, 8:].any())

    def test_threshold_then_topk_pairs(self):
        scores = torch.tensor([[0.9, 0.01], [0.04, 0.6], [0.7, 0.8]])
        idx, cls, s = select_topk_candidates(scores, 0.05, 3)
        self.assertEqual(list(zip(idx.tolist(), cls.tolist())), [(0, 0), (2, 1), (2, 0)])
        torch.testing.assert_close(s, torch.tensor([0.9, 0.8, 0.7]))


class MeansOverWorkersTest(unittest.TestCase):
    def test_one_worker(self):
        values = [torch.tensor(3), torch.tensor(2.5), torch.tensor(0.25, dtype=torch.float64)]
        self.assertEqual(means_over_workers(values), [3.0, 2.5, 0.25])

    def test_one_all_reduce_for_all_values(self):
        reduced = []

        def all_reduce(tensor):  # the other worker holds (1, 2, 3)
            reduced.append(tensor.tolist())
            tensor.add_(torch.tensor([1.0, 2.0, 3.0]))

        with mock.patch.object(common.comm, "get_world_size", return_value=2), mock.patch.object(
            common.dist, "all_reduce", side_effect=all_reduce
        ):
            means = means_over_workers([torch.tensor(5), torch.tensor(0.5), torch.tensor(-1.0)])
        self.assertEqual(reduced, [[5.0, 0.5, -1.0]])
        self.assertEqual(means, [3.0, 1.25, 1.0])


class DetectorForwardTest(unittest.TestCase):
    """Each detector at the quickstart's width: losses with and without ground truth, gradients,
    and inference within the image."""

    CONFIGS = {
        "RetinaNetVFL": "configs/VFL-Detectors/Quickstart/retinanet_R_18_narrow_shapes_cpu.py",
        "ATSS": "configs/VFL-Detectors/Quickstart/atss_R_18_narrow_shapes_cpu.py",
        "FoveaBox": "configs/VFL-Detectors/Quickstart/fovea_R_18_narrow_shapes_cpu.py",
        "RepPoints": "configs/VFL-Detectors/Quickstart/reppoints_R_18_narrow_shapes_cpu.py",
    }
    LOSSES = {
        "RetinaNetVFL": {"loss_cls", "loss_box_reg"},
        "ATSS": {"loss_cls", "loss_bbox", "loss_centerness"},
        "FoveaBox": {"loss_cls", "loss_bbox"},
        "RepPoints": {"loss_cls", "loss_pts_init", "loss_pts_refine"},
    }

    def _inputs(self, with_gt):
        sizes = [(128, 160), (96, 150)]  # different sizes: the second has padding of the batch's
        boxes = [[[10, 12, 60, 70], [40, 20, 120, 90]], [[5, 5, 30, 40]]]
        return [
            {
                "image": random_image(h, w, seed=i),
                "instances": make_instances((h, w), boxes[i] if with_gt else [], [1, 3][: len(boxes[i])] if with_gt else []),
            }
            for i, (h, w) in enumerate(sizes)
        ]

    def test_train_and_infer(self):
        for name, path in self.CONFIGS.items():
            with self.subTest(name):
                torch.manual_seed(0)
                model = instantiate(LazyConfig.load(f"{REPO_ROOT}/{path}").model)
                self.assertEqual(type(model).__name__, name)
                model.train()
                with EventStorage():
                    losses = model(self._inputs(True))
                    sum(losses.values()).backward()
                    empty = model(self._inputs(False)[1:])
                self.assertEqual(set(losses), self.LOSSES[name])
                for key, value in losses.items():
                    self.assertTrue(math.isfinite(value.item()), key)
                self.assertGreater(losses["loss_cls"].item(), 0.0)
                self.assertGreater(model.backbone.bottom_up.stem.conv1.weight.grad.abs().sum().item(), 0.0)
                for key, value in empty.items():
                    self.assertTrue(math.isfinite(value.item()), key)
                    if key != "loss_cls":
                        self.assertEqual(value.item(), 0.0, key)
                model.eval()
                model.test_score_thresh = 0.0
                with torch.no_grad():
                    out = model([{"image": random_image(96, 150, seed=5), "height": 96, "width": 150}])[0]["instances"]
                self.assertEqual(tuple(out.image_size), (96, 150))
                self.assertTrue(0 < len(out) <= 100)
                boxes = out.pred_boxes.tensor
                self.assertTrue(((boxes[:, 0] >= 0) & (boxes[:, 2] <= 150) & (boxes[:, 3] <= 96)).all())


if __name__ == "__main__":
    unittest.main()


class DecodePerLevelTest(unittest.TestCase):
    def test_topk_selection_equals_detectron2s_sort(self):
        # Detectron2's DenseDetector sorts every pair above the threshold; ours takes the top-k.
        from detectron2.modeling.box_regression import Box2BoxTransformLinear
        from detectron2.modeling.meta_arch.dense_detector import DenseDetector
        from detectron2.structures import Boxes

        from vfnet.detectors.base import VFLDenseDetector

        class Holder:
            box2box_transform = Box2BoxTransformLinear(normalize_by_size=False)
            _select_pairs = VFLDenseDetector._select_pairs

        g = torch.Generator().manual_seed(0)
        scores = torch.randperm(300 * 7, generator=g).float().div(300 * 7).view(300, 7)  # distinct
        deltas = torch.rand(300, 4, generator=g) * 20
        centres = torch.rand(300, 2, generator=g) * 100
        anchors = Boxes(torch.cat([centres - 4, centres + 4], dim=1))
        for thresh, topk in ((0.05, 100), (0.9, 1000), (0.999, 5), (1.0, 10)):
            with self.subTest(thresh=thresh, topk=topk):
                ours = VFLDenseDetector._decode_per_level_predictions(
                    Holder(), anchors, scores, deltas, thresh, topk, (120, 130)
                )
                ref = DenseDetector._decode_per_level_predictions(
                    Holder(), anchors, scores, deltas, thresh, topk, (120, 130)
                )
                self.assertEqual(len(ours), min(topk, int((scores > thresh).sum())))
                self.assertTrue(torch.equal(ours.scores, ref.scores))
                self.assertTrue(torch.equal(ours.pred_classes, ref.pred_classes))
                self.assertTrue(torch.equal(ours.pred_boxes.tensor, ref.pred_boxes.tensor))
