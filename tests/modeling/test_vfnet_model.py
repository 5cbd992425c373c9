"""The whole detector on CPU: training with and without ground truth, inference, decoding."""
import math
import unittest

import torch
from detectron2.config import get_cfg, instantiate
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from vfnet import ATSSAssigner, FCOSAssigner, VFNet, add_vfnet_config, batched_soft_nms
from vfnet.assigners import LabelAssigner
from vfnet.builders import point_generator
from vfnet.host_calls import HostCallCounter
from vfnet_test_utils import STRIDES, make_instances, random_image, small_vfnet


def _anchors(points, side=64.0):
    """Square anchors of ``side`` pixels centred on the (x, y) ``points``."""
    xy = torch.tensor(points, dtype=torch.float32)
    return Boxes(torch.cat((xy - side / 2, xy + side / 2), dim=1))


def _batch(with_gt=True):
    # Sizes that are not multiples of 32 exercise the per-image padded area.
    sizes = [(200, 250), (200, 249)]
    inputs = []
    for i, (h, w) in enumerate(sizes):
        boxes, classes = ([[20, 30, 120, 150], [100, 40, 240, 190]], [1, 3]) if with_gt else ([], [])
        inputs.append({"image": random_image(h, w, seed=i), "instances": make_instances((h, w), boxes, classes)})
    return inputs


class VFNetTrainingTest(unittest.TestCase):
    def _train_step(self, model, inputs):
        model.train()
        with EventStorage():
            losses = model(inputs)
            total = sum(losses.values())
            total.backward()
        return losses

    def test_losses_and_gradients(self):
        model = small_vfnet()
        losses = self._train_step(model, _batch())
        self.assertEqual(set(losses), {"loss_cls", "loss_bbox_init", "loss_bbox_refine"})
        for name, value in losses.items():
            self.assertTrue(math.isfinite(value.item()), name)
            self.assertGreater(value.item(), 0.0, name)
        # GIoU losses lie in [0, 2] per box before their weights (1.5, 2.0).
        self.assertLessEqual(losses["loss_bbox_init"].item(), 1.5 * 2)
        self.assertLessEqual(losses["loss_bbox_refine"].item(), 2.0 * 2)
        head = model.head
        for name in ("cls_score", "bbox_init_pred", "bbox_refine_pred", "cls_dconv", "bbox_refine_dconv"):
            grad = getattr(head, name).weight.grad
            self.assertIsNotNone(grad, name)
            self.assertGreater(grad.abs().sum().item(), 0.0, name)
        self.assertGreater(model.backbone.bottom_up.stem.conv1.weight.grad.abs().sum().item(), 0.0)

    def test_image_without_ground_truth(self):
        model = small_vfnet()
        losses = self._train_step(model, _batch(with_gt=False))
        self.assertEqual(losses["loss_bbox_init"].item(), 0.0)
        self.assertEqual(losses["loss_bbox_refine"].item(), 0.0)
        self.assertTrue(math.isfinite(losses["loss_cls"].item()))
        self.assertGreater(losses["loss_cls"].item(), 0.0)
        self.assertTrue(losses["loss_bbox_init"].requires_grad)
        self.assertGreater(model.head.cls_score.weight.grad.abs().sum().item(), 0.0)

    def test_mixed_batch_and_dcn_and_fcos_assigner(self):
        inputs = _batch()
        inputs[1]["instances"] = make_instances((200, 249), [], [])
        model = small_vfnet(dcn_on_last_conv=True, assigner=FCOSAssigner(STRIDES, center_sampling=True))
        losses = self._train_step(model, inputs)
        self.assertTrue(all(math.isfinite(v.item()) for v in losses.values()))
        self.assertGreater(model.head.cls_subnet[-1].conv_offset.weight.grad.abs().sum().item(), 0.0)

    def test_focal_loss_option(self):
        model = small_vfnet(use_vfl=False)
        losses = self._train_step(model, _batch())
        self.assertTrue(all(math.isfinite(v.item()) for v in losses.values()))

    def test_forward_and_losses_wait_for_the_device_13_times(self):
        # On a GPU each waits for the queued kernels: the assignment twice per image, the
        # positives once, fvcore's giou_loss 7 times for both box losses, every normaliser once.
        model = small_vfnet()
        model.train()
        inputs = _batch()
        with EventStorage():
            model(inputs)  # the anchors of these sizes are cached by the first call
            with HostCallCounter() as calls:
                model(inputs)
        self.assertEqual(
            calls.waits, ["nonzero", "tolist"] * 2 + ["nonzero", "__bool__", "__bool__"] + ["index by mask"] * 5 + ["tolist"]
        )

    def test_positives_are_counted(self):
        model = small_vfnet()
        model.train()
        with EventStorage() as storage:
            model(_batch())
            num_pos = storage.history("num_pos_points").latest()
        self.assertGreater(num_pos, 0)


class VFNetContractsTest(unittest.TestCase):
    def _parts(self):
        model = small_vfnet()
        return dict(
            backbone=model.backbone,
            head=model.head,
            head_in_features=["p3", "p4", "p5", "p6", "p7"],
            anchor_generator=model.anchor_generator,
            assigner=model.assigner,
            num_classes=5,
            pixel_mean=[0.0, 0.0, 0.0],
            pixel_std=[1.0, 1.0, 1.0],
        )

    def test_strides_of_head_and_anchor_generator_must_agree(self):
        parts = self._parts()
        parts["anchor_generator"] = instantiate(point_generator([8, 16, 32, 64, 64]))
        with self.assertRaisesRegex(ValueError, r"^VFNet: the levels' strides disagree: backbone outputs \['p3', .*\] "
                                                r"\[8, 16, 32, 64, 128\], head \[8, 16, 32, 64, 128\], anchor generator \[8, 16, 32, 64, 64\]$"):
            VFNet(**parts)

    def test_strides_of_the_backbone_outputs_must_agree(self):
        parts = self._parts()
        parts["head_in_features"] = ["p2", "p4", "p5", "p6", "p7"]
        with self.assertRaisesRegex(ValueError, r"\['p2'\] are not outputs of the backbone"):
            VFNet(**parts)
        parts["head_in_features"] = ["p4", "p3", "p5", "p6", "p7"]
        with self.assertRaisesRegex(ValueError, r"backbone outputs \['p4', 'p3', .*\] \[16, 8, 32, 64, 128\], head \[8, 16"):
            VFNet(**parts)

    def test_strides_of_a_stride_bound_assigner_must_agree(self):
        parts = self._parts()
        parts["assigner"] = FCOSAssigner([8, 16, 32, 64], regress_ranges=[(-1, 64), (64, 128), (128, 256), (256, 1e8)])
        with self.assertRaisesRegex(ValueError, r"assigner \[8, 16, 32, 64\]"):
            VFNet(**parts)
        parts["assigner"] = FCOSAssigner(STRIDES)
        VFNet(**parts)

    def test_assigner_must_declare_the_interface(self):
        parts = self._parts()
        parts["assigner"] = lambda anchors, valid, gt_boxes: None
        with self.assertRaisesRegex(TypeError, "LabelAssigner"):
            VFNet(**parts)

        class Undeclared(LabelAssigner):
            def __call__(self, anchors_per_level, valid_per_level, gt_boxes):
                return None

        with self.assertRaisesRegex(TypeError, "assigns_padding"):
            Undeclared()
        self.assertFalse(ATSSAssigner().assigns_padding)
        self.assertTrue(FCOSAssigner(STRIDES).assigns_padding)


class VFNetInferenceTest(unittest.TestCase):
    def test_outputs_in_original_resolution(self):
        model = small_vfnet(test_score_thresh=0.0)
        model.eval()
        inputs = [{"image": random_image(200, 250), "height": 400, "width": 500}]
        with torch.no_grad():
            (out,) = model(inputs)
        inst = out["instances"]
        self.assertEqual(inst.image_size, (400, 500))
        self.assertEqual(len(inst), 100)  # score 0 keeps everything; capped by max_detections_per_image
        boxes = inst.pred_boxes.tensor
        self.assertTrue((boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 500).all())
        self.assertTrue((boxes[:, 1] >= 0).all() and (boxes[:, 3] <= 400).all())
        self.assertTrue((inst.scores[:-1] >= inst.scores[1:]).all())
        self.assertTrue(((inst.pred_classes >= 0) & (inst.pred_classes < 5)).all())

    def test_decode_and_clip(self):
        model = small_vfnet(test_score_thresh=0.5, test_nms_thresh=0.6, max_detections_per_image=10)
        anchors = [_anchors([[10.0, 20.0], [30.0, 40.0]])]
        scores = [torch.tensor([[0.9, 0.1], [0.2, 0.7]])]
        ltrb = [torch.tensor([[5.0, 30.0, 100.0, 2.0], [1.0, 2.0, 3.0, 4.0]])]
        inst = model.select_detections(model.candidates_single_image(anchors, scores, ltrb, (50, 60)))
        # (10 - 5, 20 - 30, 10 + 100, 20 + 2) clipped to width 60 / height 50.
        self.assertEqual(inst.pred_boxes.tensor.tolist(), [[5.0, 0.0, 60.0, 22.0], [29.0, 38.0, 33.0, 44.0]])
        self.assertEqual(inst.pred_classes.tolist(), [0, 1])
        self.assertEqual(inst.scores.tolist(), [0.8999999761581421, 0.699999988079071])

    @staticmethod
    def _candidate_pairs(model, scores):
        """(point, class) of the candidates of one level whose point i is at x = 100 i."""
        anchors = [_anchors([[100.0 * i, 50.0] for i in range(len(scores))])]
        inst = model.candidates_single_image(anchors, [scores], [torch.zeros(len(scores), 4)], (1000, 1000))
        points = (inst.pred_boxes.tensor[:, 0] / 100).round().long()
        return list(zip(points.tolist(), inst.pred_classes.tolist()))

    def test_topk_modes(self):
        # Point 0 has the best single score but point 1 has two classes above threshold.
        scores = torch.tensor([[0.95, 0.0], [0.9, 0.8], [0.3, 0.6]])
        pairs = small_vfnet(test_topk_candidates=2, test_topk_mode="pairs", test_score_thresh=0.05)
        points_mode = small_vfnet(test_topk_candidates=2, test_topk_mode="points", test_score_thresh=0.05)
        self.assertEqual(self._candidate_pairs(pairs, scores), [(0, 0), (1, 0)])
        self.assertEqual(sorted(self._candidate_pairs(points_mode, scores)), [(0, 0), (1, 0), (1, 1)])

    def test_points_mode_thresholds_the_pairs_of_the_top_points(self):
        # The original repository: the top-2 points by best score (0: 0.95, 1: 0.6; point 3's 0.55
        # misses the cut), then their pairs strictly above 0.5 (mmdet's multiclass_nms: score > thr):
        # (0, 1) = 0.3 and (1, 1) = 0.5 fall out.
        scores = torch.tensor([[0.95, 0.3], [0.6, 0.5], [0.4, 0.2], [0.55, 0.1]])
        model = small_vfnet(test_topk_candidates=2, test_topk_mode="points", test_score_thresh=0.5)
        self.assertEqual(sorted(self._candidate_pairs(model, scores)), [(0, 0), (1, 0)])
        # "pairs" mode thresholds first, then keeps the top-2 pairs: point 3 gets in.
        model = small_vfnet(test_topk_candidates=2, test_topk_mode="pairs", test_score_thresh=0.5)
        self.assertEqual(self._candidate_pairs(model, scores), [(0, 0), (1, 0)])
        model = small_vfnet(test_topk_candidates=3, test_topk_mode="pairs", test_score_thresh=0.5)
        self.assertEqual(self._candidate_pairs(model, scores), [(0, 0), (1, 0), (3, 0)])

    def test_topk_of_zero_or_more_than_there_are_keeps_every_pair_above_the_threshold(self):
        scores = torch.tensor([[0.95, 0.0], [0.9, 0.8], [0.3, 0.6]])
        expected = [(0, 0), (1, 0), (1, 1), (2, 1), (2, 0)]  # by descending score
        for mode, topks in (("pairs", (0, -1, 6)), ("points", (0, -1, 3))):
            for topk in topks:
                model = small_vfnet(test_topk_candidates=topk, test_topk_mode=mode, test_score_thresh=0.05)
                self.assertEqual(self._candidate_pairs(model, scores), expected, (mode, topk))

    def test_topk_of_one(self):
        scores = torch.tensor([[0.95, 0.0], [0.9, 0.8], [0.3, 0.6]])
        for mode in ("pairs", "points"):  # the best pair; the best point's pairs above the threshold
            model = small_vfnet(test_topk_candidates=1, test_topk_mode=mode, test_score_thresh=0.05)
            self.assertEqual(self._candidate_pairs(model, scores), [(0, 0)], mode)

    def test_points_mode_candidates_carry_their_scores_and_image_size(self):
        scores = torch.tensor([[0.95, 0.3], [0.6, 0.5], [0.4, 0.2], [0.55, 0.1]])
        model = small_vfnet(test_topk_candidates=2, test_topk_mode="points", test_score_thresh=0.25)
        anchors = [_anchors([[100.0 * i, 50.0] for i in range(4)])]
        inst = model.candidates_single_image(anchors, [scores], [torch.zeros(4, 4)], (1000, 900))
        self.assertEqual(inst.image_size, (1000, 900))
        points = (inst.pred_boxes.tensor[:, 0] / 100).round().long().tolist()
        found = sorted(zip(points, inst.pred_classes.tolist(), inst.scores.tolist()))
        # points 0 and 1 (best scores 0.95, 0.6), their pairs above 0.25, each with its own score
        expected = [(p, c, scores[p, c].item()) for p, c in ((0, 0), (0, 1), (1, 0), (1, 1))]
        self.assertEqual(found, expected)

    def test_predict_candidates_are_what_the_nms_gets(self):
        model = small_vfnet(test_score_thresh=0.0)
        model.eval()
        inputs = [{"image": random_image(128, 160)}, {"image": random_image(96, 120, seed=1)}]
        with torch.no_grad():
            candidates = model.predict_candidates(inputs)
            outputs = model(inputs)
        self.assertEqual([c.image_size for c in candidates], [(128, 160), (96, 120)])
        for cand, out in zip(candidates, outputs):
            detections, inst = model.select_detections(cand), out["instances"]
            self.assertGreater(len(inst), 10)
            self.assertTrue(torch.equal(detections.pred_boxes.tensor, inst.pred_boxes.tensor))
            self.assertTrue(torch.equal(detections.scores, inst.scores))
            self.assertTrue(torch.equal(detections.pred_classes, inst.pred_classes))

    def test_classwise_nms(self):
        model = small_vfnet(test_score_thresh=0.05, test_nms_thresh=0.6)
        anchors = [_anchors([[50.0, 50.0], [51.0, 50.0]])]
        ltrb = [torch.full((2, 4), 20.0)]
        def detect(scores):
            return model.select_detections(model.candidates_single_image(anchors, [scores], ltrb, (100, 100)))

        same_class = detect(torch.tensor([[0.9, 0.0], [0.8, 0.0]]))
        other_class = detect(torch.tensor([[0.9, 0.0], [0.0, 0.8]]))
        self.assertEqual(len(same_class), 1)
        self.assertEqual(len(other_class), 2)

    def test_candidates_wait_for_the_device_once_per_level_and_once_to_clip(self):
        # On a GPU every such call waits for the queued kernels: the pairs above the threshold of
        # each level (their count sets the shapes), then Boxes.clip's finiteness check, once.
        g = torch.Generator().manual_seed(0)
        anchors = [_anchors([[float(4 * i), float(3 * i)] for i in range(n)]) for n in (40, 20, 10)]
        scores = [torch.rand(len(a), 5, generator=g) for a in anchors]
        ltrb = [torch.rand(len(a), 4, generator=g) * 50 for a in anchors]
        model = small_vfnet(test_score_thresh=0.3, test_topk_candidates=8)
        with HostCallCounter() as calls:
            inst = model.candidates_single_image(anchors, scores, ltrb, (60, 50))
        self.assertEqual(calls.waits, ["nonzero"] * 3 + ["__bool__"])
        self.assertEqual(len(inst), 24)
        self.assertTrue((inst.pred_boxes.tensor[:, 2] <= 50).all() and (inst.pred_boxes.tensor[:, 3] <= 60).all())

    def test_grid_anchors_are_built_once_per_feature_size(self):
        model = small_vfnet()
        calls = []
        build = model.anchor_generator.forward
        model.anchor_generator.forward = lambda features: calls.append(len(features)) or build(features)

        def features(h, w):
            return [torch.zeros(1, 2, h // s, w // s) for s in STRIDES]

        first = model.grid_anchors(features(64, 96))
        self.assertIs(model.grid_anchors(features(64, 96)), first)
        self.assertEqual(len(calls), 1)
        for ours, ref in zip(first, build(features(64, 96))):
            self.assertTrue(torch.equal(ours.tensor, ref.tensor))
        # the least recently used size goes first
        sizes = [(32 * (i + 1), 128) for i in range(model.ANCHOR_CACHE_SIZE)]
        for h, w in sizes:
            model.grid_anchors(features(h, w))
        self.assertEqual(len(calls), 1 + model.ANCHOR_CACHE_SIZE)
        self.assertIsNot(model.grid_anchors(features(64, 96)), first)  # evicted, built again
        model.grid_anchors(features(*sizes[-1]))  # still there
        self.assertEqual(len(calls), 2 + model.ANCHOR_CACHE_SIZE)

    def test_box_decoding_is_distances_from_the_anchor_centre_in_pixels(self):
        model = small_vfnet()
        anchor = _anchors([[8.0, 16.0]], side=64.0).tensor  # not normalised by its size
        boxes = model.box2box_transform.apply_deltas(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), anchor)
        self.assertEqual(boxes.tolist(), [[7.0, 14.0, 11.0, 20.0]])


class HeadBoxScaleTest(unittest.TestCase):
    """The initial box is exp(scale x logit) times the level's stride ("stride") or its reg_denom."""

    def _boxes(self, bbox_norm_type):
        from detectron2.layers import ShapeSpec

        from vfnet import VFNetHead

        head = VFNetHead(
            input_shape=[ShapeSpec(channels=32, stride=s) for s in (8, 16)],
            num_classes=3,
            feat_channels=32,
            stacked_convs=1,
            bbox_norm_type=bbox_norm_type,
            reg_denoms=(64, 128),
        )
        with torch.no_grad():  # constant logits (0.1, 0.2, -0.3, 0.5) at every point of every level
            head.bbox_init_pred.weight.zero_()
            head.bbox_init_pred.bias.copy_(torch.tensor([0.1, 0.2, -0.3, 0.5]))
            head.bbox_init_scales[1].scale.fill_(2.0)
            head.bbox_refine_pred.weight.zero_()  # refinement factors exp(0, 0.1, 0.2, 0.3)
            head.bbox_refine_pred.bias.copy_(torch.tensor([0.0, 0.1, 0.2, 0.3]))
        generator = torch.Generator().manual_seed(0)
        features = [torch.randn(1, 32, 6, 5, generator=generator), torch.randn(1, 32, 3, 3, generator=generator)]
        _, boxes_init, boxes_refine = head(features)
        return boxes_init, boxes_refine

    def test_stride_and_reg_denom_normalisation(self):
        logits = (0.1, 0.2, -0.3, 0.5)
        for norm_type, normalizers in (("stride", (8.0, 16.0)), ("reg_denom", (64.0, 128.0))):
            boxes_init, boxes_refine = self._boxes(norm_type)
            for level, (scale, normalizer) in enumerate(zip((1.0, 2.0), normalizers)):
                expected = torch.tensor([math.exp(scale * x) * normalizer for x in logits])
                refined = expected * torch.tensor([math.exp(x) for x in (0.0, 0.1, 0.2, 0.3)])
                shape = boxes_init[level].shape
                with self.subTest(norm_type=norm_type, level=level):
                    torch.testing.assert_close(boxes_init[level], expected[None, :, None, None].expand(shape))
                    torch.testing.assert_close(boxes_refine[level], refined[None, :, None, None].expand(shape))


def soft_nms_one_box_at_a_time(boxes, scores, labels, iou_threshold, sigma, min_score, method):
    """Soft-NMS as the plain loop: the global best live box, its class's decays, again."""
    from torchvision.ops import box_iou

    from vfnet.nms import soft_nms_decay

    ious = box_iou(boxes.float(), boxes.float()) * (labels[:, None] == labels[None, :])
    current, alive = scores.float().clone(), scores.float() >= min_score
    keep, kept = [], []
    for _ in range(len(boxes)):
        masked = torch.where(alive, current, torch.full_like(current, -1.0))
        best_score, best = masked.max(dim=0)
        if best_score < 0:
            break
        keep.append(int(best))
        kept.append(float(best_score))
        alive[best] = False
        current = current * soft_nms_decay(ious[best], method, iou_threshold, sigma)
        alive &= current >= min_score
    return torch.tensor(keep, dtype=torch.long), torch.tensor(kept, dtype=torch.float32)


class SoftNMSTest(unittest.TestCase):
    def test_linear_decay(self):
        boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 8.0], [20.0, 20.0, 30.0, 30.0]])
        scores = torch.tensor([0.9, 0.8, 0.5])
        labels = torch.zeros(3, dtype=torch.long)
        keep, new_scores = batched_soft_nms(boxes, scores, labels, iou_threshold=0.5)
        # IoU(0, 1) = 0.8 > 0.5: score 0.8 * (1 - 0.8) = 0.16, ranked after the disjoint box.
        self.assertEqual(keep.tolist(), [0, 2, 1])
        torch.testing.assert_close(new_scores, torch.tensor([0.9, 0.5, 0.16]))
        keep, _ = batched_soft_nms(boxes, scores, torch.tensor([0, 1, 0]), iou_threshold=0.5)
        self.assertEqual(keep.tolist(), [0, 1, 2])  # other class: untouched

    def test_gaussian_and_min_score(self):
        boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
        keep, new_scores = batched_soft_nms(
            boxes, torch.tensor([0.9, 0.8]), torch.zeros(2, dtype=torch.long), method="gaussian", sigma=0.5
        )
        torch.testing.assert_close(new_scores, torch.tensor([0.9, 0.8 * math.exp(-2.0)]))
        keep, _ = batched_soft_nms(
            boxes, torch.tensor([0.9, 0.8]), torch.zeros(2, dtype=torch.long), method="linear", iou_threshold=0.5
        )
        self.assertEqual(keep.tolist(), [0])  # 0.8 * (1 - 1) = 0 < min_score

    def test_iou_at_the_threshold_is_decayed_as_mmcv(self):
        # mmcv's soft_nms (the reference's VFNet-X) decays when IoU >= threshold: IoU 65/100 = 0.65
        boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 6.5]])
        scores, labels = torch.tensor([0.9, 0.8]), torch.zeros(2, dtype=torch.long)
        for method, expected in (("linear", 0.8 * (1 - 0.65)), ("naive", None)):
            keep, new_scores = batched_soft_nms(boxes, scores, labels, iou_threshold=0.65, method=method)
            if expected is None:
                self.assertEqual(keep.tolist(), [0])  # naive: zeroed, then below min_score
            else:
                self.assertEqual(keep.tolist(), [0, 1])
                torch.testing.assert_close(new_scores, torch.tensor([0.9, expected]))
        # just below the threshold: untouched
        keep, new_scores = batched_soft_nms(boxes, scores, labels, iou_threshold=0.651)
        torch.testing.assert_close(new_scores, scores)

    def test_same_as_one_box_at_a_time(self):
        # Against the plain loop (the previous implementation): keep the global best box, decay,
        # repeat. Crowded boxes of few and many classes, with tied scores.
        g = torch.Generator().manual_seed(0)
        for num, classes, method, threshold, min_score in (
            (300, 3, "linear", 0.3, 1e-3),
            (400, 40, "gaussian", 0.5, 0.05),
            (200, 1, "naive", 0.5, 1e-3),
            (250, 7, "linear", 0.65, 0.0),
        ):
            xy = torch.rand(num, 2, generator=g) * 60
            boxes = torch.cat([xy, xy + 5 + torch.rand(num, 2, generator=g) * 30], dim=1)
            scores = (torch.rand(num, generator=g) * 20).round() / 20  # many ties
            labels = torch.randint(classes, (num,), generator=g) * 3 + 1  # sparse class ids
            with self.subTest(num=num, classes=classes, method=method):
                keep, new_scores = batched_soft_nms(boxes, scores, labels, threshold, 0.5, min_score, method)
                keep_ref, scores_ref = soft_nms_one_box_at_a_time(boxes, scores, labels, threshold, 0.5, min_score, method)
                self.assertGreater(len(keep_ref), num // 4)
                self.assertEqual(keep.tolist(), keep_ref.tolist())
                self.assertTrue(torch.equal(new_scores, scores_ref))
        # float16 scores come back as float16
        keep, s16 = batched_soft_nms(boxes, scores.half(), labels)
        self.assertEqual(s16.dtype, torch.float16)

    def test_decay_factors(self):
        from vfnet.nms import soft_nms_decay

        o = torch.tensor([0.0, 0.5, 0.65, 0.9])
        torch.testing.assert_close(soft_nms_decay(o, "linear", 0.65, 0.5), torch.tensor([1.0, 1.0, 0.35, 0.1]))
        torch.testing.assert_close(soft_nms_decay(o, "naive", 0.65, 0.5), torch.tensor([1.0, 1.0, 0.0, 0.0]))
        torch.testing.assert_close(soft_nms_decay(o, "gaussian", 0.65, 0.5), torch.exp(-(o**2) / 0.5))

    def test_empty_and_bad_method(self):
        keep, s = batched_soft_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long))
        self.assertEqual(len(keep), 0)
        with self.assertRaisesRegex(ValueError, "unknown method"):
            batched_soft_nms(torch.zeros(1, 4), torch.zeros(1), torch.zeros(1, dtype=torch.long), method="x")

    def test_model_passes_its_soft_nms_parameters(self):
        # two boxes of one class, IoU 50 / 100 = 0.5, scores 0.9 and 0.8
        candidates = Instances(
            (100, 100),
            pred_boxes=Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0]])),
            scores=torch.tensor([0.9, 0.8]),
            pred_classes=torch.zeros(2, dtype=torch.long),
        )
        for options, expected in (
            (dict(test_nms_thresh=0.4), [0.9, 0.8 * (1 - 0.5)]),  # linear, IoU >= 0.4
            (dict(test_nms_thresh=0.4, soft_nms_min_score=0.45), [0.9]),  # 0.4 < min_score: gone
            (dict(test_nms_thresh=0.4, soft_nms_method="gaussian", soft_nms_sigma=0.25), [0.9, 0.8 * math.exp(-0.25 / 0.25)]),
        ):
            with self.subTest(**options):
                model = small_vfnet(test_nms_type="soft_nms", **options)
                torch.testing.assert_close(model.select_detections(candidates).scores, torch.tensor(expected))

    def test_model_with_soft_nms(self):
        model = small_vfnet(test_nms_type="soft_nms", test_nms_thresh=0.65, test_score_thresh=0.0)
        model.eval()
        with torch.no_grad():
            (out,) = model([{"image": random_image(128, 160)}])
        self.assertEqual(len(out["instances"]), 100)


def _yacs_vfnet_cfg():
    cfg = get_cfg()
    add_vfnet_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "VFNet"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = "build_vfnet_resnet_fpn_backbone"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    return cfg


class YacsConfigTest(unittest.TestCase):
    def test_build_from_cfgnode(self):
        cfg = _yacs_vfnet_cfg()
        cfg.MODEL.RESNETS.DEPTH = 18
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
        cfg.MODEL.FPN.OUT_CHANNELS = 64
        cfg.MODEL.VFNET.FEAT_CHANNELS = 64
        cfg.MODEL.VFNET.NUM_CLASSES = 7
        cfg.MODEL.VFNET.USE_ATSS = False
        model = build_model(cfg)
        self.assertIsInstance(model, VFNet)
        self.assertIsInstance(model.assigner, FCOSAssigner)
        self.assertEqual(model.anchor_generator.offset, 0.5)
        self.assertEqual(model.head.cls_score.out_channels, 7)
        self.assertEqual(model.head.box_normalizers, [64.0, 128.0, 256.0, 512.0, 1024.0])
        model.train()
        with EventStorage():
            losses = model([{"image": random_image(96, 128), "instances": make_instances((96, 128), [[10, 10, 60, 70]], [2])}])
        self.assertTrue(all(math.isfinite(v.item()) for v in losses.values()))

    def test_assigner_and_points_from_cfgnode(self):
        # three levels (not the 5 defaults), non-default assigner settings: each reaches the model
        for use_atss in (True, False):
            cfg = _yacs_vfnet_cfg()
            cfg.MODEL.RESNETS.DEPTH = 18
            cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
            cfg.MODEL.FPN.OUT_CHANNELS = 32
            cfg.MODEL.VFNET.FEAT_CHANNELS = 32
            cfg.MODEL.VFNET.IN_FEATURES = ["p3", "p4", "p5"]
            cfg.MODEL.VFNET.REG_DENOMS = [64, 128, 256]
            cfg.MODEL.VFNET.USE_ATSS = use_atss
            cfg.MODEL.VFNET.ATSS_TOPK = 7
            cfg.MODEL.VFNET.ANCHOR_SCALE = 6
            cfg.MODEL.VFNET.REGRESS_RANGES = [[-1, 50], [50, 100], [100, 100000]]
            cfg.MODEL.VFNET.CENTER_SAMPLING = True
            cfg.MODEL.VFNET.CENTER_SAMPLE_RADIUS = 2.0
            with self.subTest(use_atss=use_atss):
                model = build_model(cfg)
                generator = model.anchor_generator
                self.assertEqual(list(generator.strides), [8, 16, 32])
                # one square anchor of ANCHOR_SCALE x stride per point; points at (j, i) x stride (ATSS),
                # or at the cell centres, + stride / 2 (FCOS)
                self.assertEqual([a.tolist() for a in generator.cell_anchors], [[[-24.0, -24.0, 24.0, 24.0]],
                                 [[-48.0, -48.0, 48.0, 48.0]], [[-96.0, -96.0, 96.0, 96.0]]])
                self.assertEqual(generator.offset, 0.0 if use_atss else 0.5)
                if use_atss:
                    self.assertIsInstance(model.assigner, ATSSAssigner)
                    self.assertEqual(model.assigner.topk, 7)
                else:
                    self.assertIsInstance(model.assigner, FCOSAssigner)
                    self.assertEqual(model.assigner.strides, [8, 16, 32])
                    self.assertEqual(model.assigner.regress_ranges, [(-1.0, 50.0), (50.0, 100.0), (100.0, 100000.0)])
                    self.assertIs(model.assigner.center_sampling, True)
                    self.assertEqual(model.assigner.center_sample_radius, 2.0)

    def test_bad_in_features(self):
        cfg = _yacs_vfnet_cfg()
        cfg.MODEL.VFNET.IN_FEATURES = ["p2", "p3"]
        with self.assertRaisesRegex(ValueError, "p2"):
            build_model(cfg)


if __name__ == "__main__":
    unittest.main()
