"""vfnet.vfl: IoU-aware targets and the Varifocal classification loss, against closed forms."""
import math
import unittest

import torch

from vfnet.host_calls import HostCallCounter
from vfnet.vfl import NORMALIZER_EPS, aligned_iou, iou_aware_targets, varifocal_classification_loss


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def _vfl(logit, q, alpha=0.75, gamma=2.0):
    p = _sigmoid(logit)
    if q > 0:
        return -q * (q * math.log(p) + (1 - q) * math.log(1 - p))
    return -alpha * p**gamma * math.log(1 - p)


class AlignedIouTest(unittest.TestCase):
    def test_closed_forms(self):
        a = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 4.0, 4.0]])
        b = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [10.0, 10.0, 12.0, 12.0]])
        # identical; half overlap: 50 / 150; disjoint
        torch.testing.assert_close(aligned_iou(a, b), torch.tensor([1.0, 1.0 / 3.0, 0.0]))

    def test_bad_shapes(self):
        with self.assertRaisesRegex(ValueError, "two \\(K, 4\\) box tensors"):
            aligned_iou(torch.zeros(2, 4), torch.zeros(3, 4))


class IouAwareTargetsTest(unittest.TestCase):
    def test_targets_at_positive_rows_and_classes(self):
        logits = torch.zeros(5, 3)
        pred = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]], requires_grad=True)
        target = torch.tensor([[5.0, 0.0, 15.0, 10.0], [0.0, 0.0, 10.0, 20.0]])
        t = iou_aware_targets(logits, torch.tensor([1, 4]), torch.tensor([2, 0]), pred, target)
        expected = torch.zeros(5, 3)
        expected[1, 2] = 1.0 / 3.0
        expected[4, 0] = 0.5
        torch.testing.assert_close(t, expected)
        self.assertFalse(t.requires_grad)  # no gradient through the targets

    def test_min_iou_clamps_disjoint_boxes(self):
        logits = torch.zeros(2, 2)
        pred = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
        target = torch.tensor([[5.0, 5.0, 6.0, 6.0]])
        self.assertEqual(iou_aware_targets(logits, torch.tensor([0]), torch.tensor([1]), pred, target)[0, 1].item(), 0.0)
        clamped = iou_aware_targets(logits, torch.tensor([0]), torch.tensor([1]), pred, target, min_iou=1e-6)
        self.assertAlmostEqual(clamped[0, 1].item(), 1e-6, places=12)

    def test_checks_the_classes_with_one_wait_for_the_device(self):
        pred = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0]])
        with HostCallCounter() as calls:
            iou_aware_targets(torch.zeros(3, 4), torch.tensor([0, 2]), torch.tensor([3, 0]), pred, pred + 0.5)
        self.assertEqual(calls.waits, ["tolist"])

    def test_no_positives(self):
        t = iou_aware_targets(torch.zeros(4, 2), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), torch.zeros(0, 4), torch.zeros(0, 4))
        self.assertEqual(t.shape, (4, 2))
        self.assertEqual(t.abs().sum().item(), 0.0)

    def test_errors_name_the_problem(self):
        with self.assertRaisesRegex(ValueError, "positive classes must lie in"):
            iou_aware_targets(torch.zeros(2, 2), torch.tensor([0]), torch.tensor([2]), torch.zeros(1, 4), torch.zeros(1, 4))
        with self.assertRaisesRegex(ValueError, "positive classes must lie in"):
            iou_aware_targets(torch.zeros(2, 2), torch.tensor([0]), torch.tensor([-1]), torch.zeros(1, 4), torch.zeros(1, 4))
        with self.assertRaisesRegex(ValueError, "1 positive rows"):
            iou_aware_targets(torch.zeros(2, 2), torch.tensor([0]), torch.tensor([0]), torch.zeros(2, 4), torch.zeros(1, 4))
        with self.assertRaisesRegex(ValueError, "must be \\(R, C\\)"):
            iou_aware_targets(torch.zeros(2, 2, 2), torch.tensor([0]), torch.tensor([0]), torch.zeros(1, 4), torch.zeros(1, 4))


class VarifocalClassificationLossTest(unittest.TestCase):
    logits = torch.tensor([[0.3, -1.2], [2.0, -0.4], [-3.0, 0.8]])
    targets = torch.tensor([[0.6, 0.0], [0.0, 0.0], [0.0, 0.9]])

    def _expected(self, weights=(1.0, 1.0, 1.0)):
        return sum(
            w * _vfl(self.logits[i, j].item(), self.targets[i, j].item())
            for i, w in enumerate(weights)
            for j in range(2)
        )

    def test_sum_over_normalizer(self):
        for fused in (True, False):
            loss = varifocal_classification_loss(self.logits, self.targets, 4.0, fused=fused)
            self.assertAlmostEqual(loss.item(), self._expected() / (4.0 + NORMALIZER_EPS), places=6)

    def test_row_weights(self):
        weights = torch.tensor([1.0, 0.0, 1.0])
        for fused in (True, False):
            loss = varifocal_classification_loss(self.logits, self.targets, 2.0, weights=weights, fused=fused)
            self.assertAlmostEqual(loss.item(), self._expected((1.0, 0.0, 1.0)) / 2.0, places=6)

    def test_gradient_reaches_logits(self):
        logits = self.logits.clone().requires_grad_()
        varifocal_classification_loss(logits, self.targets, 1.0).backward()
        self.assertTrue(torch.all(logits.grad != 0))

    def test_bad_weights(self):
        with self.assertRaisesRegex(ValueError, "weights must be \\(3,\\)"):
            varifocal_classification_loss(self.logits, self.targets, 1.0, weights=torch.ones(2))


if __name__ == "__main__":
    unittest.main()


class ReadmeExampleTest(unittest.TestCase):
    """The README's "VFL in your own detector" example, as it is written there."""

    def test_example(self):
        from detectron2.modeling.box_regression import Box2BoxTransform

        torch.manual_seed(0)
        box2box = Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0))
        logits = torch.randn(6, 3, requires_grad=True)  # 6 anchors x 3 classes
        anchors = torch.tensor([[0.0, 0.0, 32.0, 32.0]]).repeat(6, 1)
        deltas = torch.randn(6, 4) * 0.1  # the predicted deltas
        labels = torch.tensor([1, 3, 3, 0, 3, 3])  # matched class, 3 = background
        gt_boxes = torch.tensor([[2.0, 2.0, 30.0, 34.0]]).repeat(6, 1)

        pos = (labels < 3).nonzero().squeeze(1)
        pred_boxes = box2box.apply_deltas(deltas[pos].detach(), anchors[pos])  # decoded, XYXY
        targets = iou_aware_targets(logits, pos, labels[pos], pred_boxes, gt_boxes[pos])
        loss_cls = varifocal_classification_loss(logits, targets, normalizer=max(len(pos), 1))
        loss_cls.backward()

        self.assertEqual(targets.nonzero().tolist(), [[0, 1], [3, 0]])
        expected = aligned_iou(pred_boxes, gt_boxes[pos])
        torch.testing.assert_close(targets[[0, 3], [1, 0]], expected)
        manual = sum(_vfl(logits[i, j].item(), targets[i, j].item()) for i in range(6) for j in range(3)) / 2
        self.assertAlmostEqual(loss_cls.item(), manual, places=5)
        self.assertIsNotNone(logits.grad)
