import math
import unittest

import torch

from vfnet import varifocal_loss


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


class VarifocalLossTest(unittest.TestCase):
    def test_positive_is_bce_weighted_by_target(self):
        # p = 0.5, q = 0.6: -q * (q log p + (1 - q) log(1 - p)) = 0.6 * log 2
        loss = varifocal_loss(torch.tensor([0.0]), torch.tensor([0.6]), reduction="none")
        self.assertAlmostEqual(loss.item(), 0.6 * math.log(2.0), places=6)

    def test_positive_unweighted(self):
        loss = varifocal_loss(torch.tensor([0.0]), torch.tensor([0.6]), iou_weighted=False, reduction="none")
        self.assertAlmostEqual(loss.item(), math.log(2.0), places=6)

    def test_negative_is_focal(self):
        for logit in (-3.0, 0.0, 2.0):
            p = _sigmoid(logit)
            expected = -0.75 * p**2 * math.log(1 - p)
            loss = varifocal_loss(torch.tensor([logit]), torch.tensor([0.0]), reduction="none")
            self.assertAlmostEqual(loss.item(), expected, places=6)

    def test_alpha_gamma(self):
        p = _sigmoid(1.5)
        expected = -0.25 * p**3 * math.log(1 - p)
        loss = varifocal_loss(torch.tensor([1.5]), torch.tensor([0.0]), alpha=0.25, gamma=3.0, reduction="none")
        self.assertAlmostEqual(loss.item(), expected, places=6)

    def test_general_positive(self):
        logit, q = -0.7, 0.83
        p = _sigmoid(logit)
        expected = -q * (q * math.log(p) + (1 - q) * math.log(1 - p))
        loss = varifocal_loss(torch.tensor([logit]), torch.tensor([q]), reduction="none")
        self.assertAlmostEqual(loss.item(), expected, places=6)

    def test_positives_are_not_down_weighted_by_p(self):
        # A positive with the target as prediction still has a non-zero BCE (entropy), unlike focal loss.
        q = 0.9
        logit = math.log(q / (1 - q))
        loss = varifocal_loss(torch.tensor([logit]), torch.tensor([q]), reduction="none").item()
        self.assertAlmostEqual(loss, -q * (q * math.log(q) + (1 - q) * math.log(1 - q)), places=5)

    def test_reductions(self):
        logits = torch.tensor([[0.0, 2.0], [-1.0, 0.5]])
        targets = torch.tensor([[0.6, 0.0], [0.0, 0.3]])
        none = varifocal_loss(logits, targets, reduction="none")
        self.assertEqual(none.shape, (2, 2))
        self.assertAlmostEqual(varifocal_loss(logits, targets, reduction="sum").item(), none.sum().item(), places=6)
        self.assertAlmostEqual(varifocal_loss(logits, targets, reduction="mean").item(), none.mean().item(), places=6)
        self.assertEqual(varifocal_loss(torch.zeros(0, 3), torch.zeros(0, 3), reduction="mean").item(), 0.0)
        # element by element against the formula (positive: -q(q log p + (1-q) log(1-p)); negative:
        # -0.75 p^2 log(1-p)), so that a loss reduced before the weighting cannot pass
        expected = []
        for logit, q in zip(logits.flatten().tolist(), targets.flatten().tolist()):
            p = _sigmoid(logit)
            if q > 0:
                expected.append(-q * (q * math.log(p) + (1 - q) * math.log(1 - p)))
            else:
                expected.append(-0.75 * p**2 * math.log(1 - p))
        torch.testing.assert_close(none.flatten(), torch.tensor(expected), rtol=1e-6, atol=1e-7)
        one = varifocal_loss(torch.tensor([0.0]), torch.tensor([0.6]), reduction="mean")
        self.assertAlmostEqual(one.item(), 0.6 * math.log(2.0), places=6)  # the mean of one element is itself

    def test_gradients(self):
        logits = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
        targets = torch.tensor([[0.0, 0.7, 0.0], [0.0, 0.0, 0.0], [0.2, 0.0, 0.0], [0.0, 0.0, 0.95]], dtype=torch.float64)
        self.assertTrue(torch.autograd.gradcheck(lambda x: varifocal_loss(x, targets), (logits,)))

    def test_bad_input(self):
        with self.assertRaisesRegex(ValueError, "same shape"):
            varifocal_loss(torch.zeros(2, 3), torch.zeros(2, 4))
        with self.assertRaisesRegex(ValueError, "unknown reduction"):
            varifocal_loss(torch.zeros(2), torch.zeros(2), reduction="max")


if __name__ == "__main__":
    unittest.main()
