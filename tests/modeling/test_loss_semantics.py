"""
The detector's losses and gradient paths, each against an independent computation from the head's
raw outputs (torchvision's box ops, fvcore's focal loss, the SPEC's formulas): the classification
loss with the focal-loss option, the loss weights, the GIoU normaliser's floor at 1, and where the
gradients of the initial box come from (the star offsets at ``gradient_mul`` strength; never the
refinement, which sees the initial box detached).
"""
import unittest
from unittest import mock

import torch
from detectron2.utils.events import EventStorage
from fvcore.nn import sigmoid_focal_loss
from torchvision.ops import box_iou, generalized_box_iou_loss

from vfnet import FCOSAssigner
from vfnet_test_utils import STRIDES, make_instances, random_image, small_vfnet

EPS = torch.finfo(torch.float32).eps


def _inputs(boxes=((20, 30, 120, 150), (100, 40, 240, 190)), classes=(1, 3)):
    """Two images of different sizes (the second pads to a smaller area than the batch: some points
    lie outside it), the second with its boxes halved."""
    sizes = [(200, 250), (110, 140)]
    inputs = []
    for i, (h, w) in enumerate(sizes):
        scale = 1.0 if i == 0 else 0.5
        image_boxes = [[c * scale for c in box] for box in boxes]
        inputs.append({"image": random_image(h, w, seed=i), "instances": make_instances((h, w), image_boxes, list(classes))})
    return inputs


def _raw(model, inputs):
    """The head's outputs, flattened independently of the model's code: (N, P, C) logits and
    (N, P, 4) initial / refined (l, t, r, b), level by level, row-major (as the anchors)."""
    images = model.preprocess_image(inputs)
    features = model.backbone(images.tensor)
    features = [features[f] for f in model.head_in_features]
    logits, boxes_init, boxes_refine = model.head(features)

    def flat(maps):
        return torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, m.shape[1]) for m in maps], dim=1)

    return images, features, (logits, boxes_init, boxes_refine), flat(logits), flat(boxes_init), flat(boxes_refine)


def _losses(model, inputs):
    model.train()
    images, features, predictions, logits, init, refine = _raw(model, inputs)
    gts = [x["instances"] for x in inputs]
    with EventStorage() as storage:
        losses = model.forward_training(images, features, predictions, gts)
        num_pos_points = storage.history("num_pos_points").latest()
    anchors = model.anchor_generator(features)
    valid = model.valid_points(features, images)
    labels, targets = model.label_points(anchors, valid, gts)
    points = torch.cat([a.get_centers() for a in anchors])  # (P, 2)
    return losses, dict(
        logits=logits, init=init, refine=refine, labels=torch.stack(labels), targets=torch.stack(targets),
        valid=torch.stack([torch.cat(v) for v in valid]), points=points, num_pos_points=num_pos_points,
    )


def _decode(points, ltrb):
    return torch.cat([points - ltrb[:, :2], points + ltrb[:, 2:]], dim=1)


def _expected_vfl(r, alpha=0.75, gamma=2.0, iou_weighted=True):
    """The classification loss by SPEC section 3, from the raw outputs: IoU targets of the refined boxes."""
    num_classes = r["logits"].shape[-1]
    pos_img, pos_pt = (r["labels"] < num_classes).nonzero(as_tuple=True)
    refined = _decode(r["points"][pos_pt], r["refine"][pos_img, pos_pt])
    iou = box_iou(refined, r["targets"][pos_img, pos_pt]).diagonal().clamp(min=1e-6)
    q = torch.zeros_like(r["logits"])
    q[pos_img, pos_pt, r["labels"][pos_img, pos_pt]] = iou
    p = r["logits"].sigmoid()
    # q > 0: -q (q log p + (1 - q) log(1 - p)) (without the IoU weighting: -(q log p + (1 - q) log(1 - p)));
    # q = 0: -alpha p^gamma log(1 - p); normalised by the number of positives, at least 1
    bce = -(q * torch.log(p) + (1 - q) * torch.log1p(-p))
    vfl = torch.where(q > 0, q * bce if iou_weighted else bce, -alpha * p.pow(gamma) * torch.log1p(-p))
    return vfl.sum() / (max(len(pos_pt), 1) + EPS)


class ClassificationLossTest(unittest.TestCase):
    def test_focal_loss_option_is_fvcore_focal_loss_on_assigned_labels(self):
        for assigner, weighted_by_validity in ((None, True), (FCOSAssigner(STRIDES), False)):
            with self.subTest(assigner=type(assigner).__name__):
                model = small_vfnet(use_vfl=False, assigner=assigner, focal_loss_alpha=0.3, focal_loss_gamma=1.5)
                with torch.no_grad():
                    losses, r = _losses(model, _inputs())
                num_classes = r["logits"].shape[-1]
                positive = r["labels"] < num_classes
                one_hot = torch.zeros_like(r["logits"])
                one_hot[positive] = torch.nn.functional.one_hot(r["labels"][positive], num_classes).float()
                per_point = sigmoid_focal_loss(r["logits"], one_hot, alpha=0.3, gamma=1.5, reduction="none").sum(-1)
                # ATSS: like the reference's label_weights, only points inside each image's padded area
                weight = r["valid"].float() if weighted_by_validity else torch.ones_like(per_point)
                self.assertLess(weight.sum().item(), weight.numel()) if weighted_by_validity else None
                expected = (per_point * weight).sum() / (max(positive.sum().item(), 1) + EPS)
                self.assertGreater(positive.sum().item(), 0)
                torch.testing.assert_close(losses["loss_cls"], expected, rtol=1e-5, atol=0)

    def test_varifocal_loss_targets_are_the_refined_boxes_iou(self):
        model = small_vfnet()
        with torch.no_grad():
            losses, r = _losses(model, _inputs())
        torch.testing.assert_close(losses["loss_cls"], _expected_vfl(r), rtol=1e-4, atol=0)

    def test_class_zero_is_a_positive_and_positives_are_counted_per_image(self):
        with torch.no_grad():
            losses, r = _losses(small_vfnet(), _inputs(classes=(0, 3)))
        positive = r["labels"] < r["logits"].shape[-1]
        self.assertGreater((r["labels"] == 0).sum().item(), 0)
        self.assertEqual(r["num_pos_points"], positive.sum().item() / 2)  # the mean over the 2 images
        torch.testing.assert_close(losses["loss_cls"], _expected_vfl(r), rtol=1e-4, atol=0)

    def test_varifocal_options_reach_the_loss_fused_or_not(self):
        options = dict(vfl_alpha=0.5, vfl_gamma=1.5, vfl_iou_weighted=False)
        for fused_ops in (True, False):
            with self.subTest(fused_ops=fused_ops), torch.no_grad():
                losses, r = _losses(small_vfnet(fused_ops=fused_ops, **options), _inputs())
                expected = _expected_vfl(r, alpha=0.5, gamma=1.5, iou_weighted=False)
                torch.testing.assert_close(losses["loss_cls"], expected, rtol=1e-4, atol=0)

    def test_fused_ops_pick_the_kernel(self):
        from vfnet import meta_arch

        for fused_ops in (True, False):
            with mock.patch.object(meta_arch, "fused_varifocal_loss", wraps=meta_arch.fused_varifocal_loss) as fused, \
                    mock.patch.object(meta_arch, "varifocal_loss", wraps=meta_arch.varifocal_loss) as eager, \
                    torch.no_grad():
                _losses(small_vfnet(fused_ops=fused_ops), _inputs())
            self.assertEqual((fused.call_count, eager.call_count), (1, 0) if fused_ops else (0, 1))

    def test_without_positives_the_normaliser_is_one(self):
        with torch.no_grad():
            losses, r = _losses(small_vfnet(), _inputs(boxes=(), classes=()))
        self.assertEqual(r["num_pos_points"], 0)
        p = r["logits"].sigmoid()
        expected = (-0.75 * p.pow(2) * torch.log1p(-p)).sum() / (1 + EPS)
        torch.testing.assert_close(losses["loss_cls"], expected, rtol=1e-4, atol=0)

    def test_bfloat16_logits_give_the_float32_loss(self):
        # under autocast the logits may come in bfloat16: the targets stay float32 (IoUs not rounded)
        for use_vfl in (True, False):
            model = small_vfnet(use_vfl=use_vfl)
            model.train()
            inputs = _inputs()
            with torch.no_grad(), EventStorage():
                images, features, predictions, *_ = _raw(model, inputs)
                logits, init, refine = model._transpose_dense_predictions(predictions, [model.num_classes, 4, 4])
                anchors = model.anchor_generator(features)
                valid = model.valid_points(features, images)
                labels, targets = model.label_points(anchors, valid, [x["instances"] for x in inputs])
                low = [x.bfloat16() for x in logits]
                bf16 = model.losses(anchors, valid, low, init, refine, labels, targets)
                fp32 = model.losses(anchors, valid, [x.float() for x in low], init, refine, labels, targets)
            self.assertEqual(bf16["loss_cls"].item(), fp32["loss_cls"].item(), f"use_vfl={use_vfl}")

    def test_loss_weights_scale_their_losses(self):
        weights = dict(loss_cls_weight=3.0, loss_bbox_init_weight=0.5, loss_bbox_refine_weight=7.0)
        with torch.no_grad():
            base, _ = _losses(small_vfnet(), _inputs())
            scaled, _ = _losses(small_vfnet(**weights), _inputs())
        for name, weight in (("loss_cls", 3.0), ("loss_bbox_init", 0.5 / 1.5), ("loss_bbox_refine", 7.0 / 2.0)):
            torch.testing.assert_close(scaled[name], base[name] * weight, rtol=1e-6, atol=0, msg=name)


class BoxLossTest(unittest.TestCase):
    def _expected(self, r, key, loss_weight):
        num_classes = r["logits"].shape[-1]
        pos_img, pos_pt = (r["labels"] < num_classes).nonzero(as_tuple=True)
        pred = _decode(r["points"][pos_pt], r[key][pos_img, pos_pt])
        target = r["targets"][pos_img, pos_pt]
        iou = box_iou(pred, target).diagonal().clamp(min=1e-6)
        normaliser = max(iou.sum().item(), 1.0)  # at least 1 (SPEC section 3)
        giou = generalized_box_iou_loss(pred, target, reduction="none")
        return loss_weight * (giou * iou).sum() / (normaliser + EPS), iou.sum().item()

    def test_iou_weighted_giou_losses(self):
        with torch.no_grad():
            losses, r = _losses(small_vfnet(), _inputs())
        for name, key, weight in (("loss_bbox_init", "init", 1.5), ("loss_bbox_refine", "refine", 2.0)):
            expected, _ = self._expected(r, key, weight)
            torch.testing.assert_close(losses[name], expected, rtol=1e-5, atol=0, msg=name)

    def test_normaliser_floor_at_one(self):
        # One small box: the initial boxes (exp(0) * 64 px a side) overlap it very little, so the
        # IoU weights sum to well below 1 and the normaliser is 1, not their sum.
        inputs = _inputs(boxes=((60, 60, 70, 70),), classes=(2,))
        with torch.no_grad():
            losses, r = _losses(small_vfnet(), inputs)
        expected, iou_sum = self._expected(r, "init", 1.5)
        self.assertLess(iou_sum, 0.5)
        torch.testing.assert_close(losses["loss_bbox_init"], expected, rtol=1e-5, atol=0)


class GradientPathTest(unittest.TestCase):
    def _grad_of_init_pred(self, gradient_mul, loss_of):
        model = small_vfnet()
        model.head.gradient_mul = gradient_mul
        model.train()
        _, _, predictions, logits, init, refine = _raw(model, _inputs())
        loss_of(logits, init, refine).backward()
        return model.head.bbox_init_pred.weight.grad.clone()

    def test_star_offsets_pass_gradient_mul_of_the_gradient(self):
        # The classification branch depends on the initial box only through the star offsets.
        def cls_only(logits, init, refine):
            return logits.sigmoid().sum()

        g1 = self._grad_of_init_pred(0.1, cls_only)
        g2 = self._grad_of_init_pred(0.2, cls_only)
        g0 = self._grad_of_init_pred(0.0, cls_only)
        self.assertGreater(g1.abs().sum().item(), 0.0)
        # (the forward value (1 - g) * b + g * b rounds slightly differently for each g)
        torch.testing.assert_close(g2, 2 * g1, rtol=1e-3, atol=1e-5 * g1.abs().max().item())
        self.assertEqual(g0.abs().sum().item(), 0.0)

    def test_refinement_sees_the_initial_box_detached(self):
        # With no gradient through the star offsets, the refined box gives the initial box none:
        # refined = factors * initial.detach().
        def refine_only(logits, init, refine):
            return refine.sum()

        self.assertEqual(self._grad_of_init_pred(0.0, refine_only).abs().sum().item(), 0.0)
        self.assertGreater(self._grad_of_init_pred(0.1, refine_only).abs().sum().item(), 0.0)

    def test_initial_box_loss_reaches_its_conv(self):
        def init_only(logits, init, refine):
            return init.sum()

        self.assertGreater(self._grad_of_init_pred(0.0, init_only).abs().sum().item(), 0.0)


if __name__ == "__main__":
    unittest.main()
