"""
The Varifocal-Loss variants of RetinaNet, ATSS, FoveaBox and RepPoints, and the raw VFNet of the
ablation, on small cases computed here in float64 NumPy the way the reference's code computes
them (hyz-xmaster/VarifocalNet, mmdet/models/dense_heads/{anchor_head,atss_vgfl_head,fovea_head,
reppoints_head,vfnet_raw_head}.py with ``use_vfl=True``). MMDetection 2.28 has no VFL variants,
so these are their parity checks; the focal-loss variants are checked against MMDetection's own
detectors in test_mmdet_parity_detectors.py.
"""
import math
import unittest

import numpy as np
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.meta_arch.retinanet import RetinaNetHead
from detectron2.structures import Boxes
from detectron2.utils.events import EventStorage
from torch import nn

from vfnet import ATSSAssigner, VFNetHead
from vfnet.detectors import (
    ATSS,
    ATSSHead,
    FoveaAssigner,
    FoveaBox,
    FoveaHead,
    MaxIoUMatcher,
    MMDetAnchorGenerator,
    PointAssigner,
    RepPoints,
    RepPointsHead,
    RetinaNetVFL,
)
from vfnet.detectors.vfnet_ablation import VFNetAblationHead
from vfnet.host_calls import HostCallCounter
from vfnet_test_utils import STRIDES, make_instances, random_image, small_vfnet

NORM = dict(pixel_mean=[0.0, 0.0, 0.0], pixel_std=[1.0, 1.0, 1.0])


_PREVIOUS_THREADS = []


def setUpModule():
    # small models: one thread is as fast, and much steadier on a shared, loaded machine
    _PREVIOUS_THREADS.append(torch.get_num_threads())
    torch.set_num_threads(1)


def tearDownModule():
    torch.set_num_threads(_PREVIOUS_THREADS.pop())


# ---------------------------------------------------------------- the reference's arithmetic, float64


def np_vfl(logits, q, alpha=0.75, gamma=2.0):
    """mmdet/models/losses/varifocal_loss.py (iou_weighted), elementwise."""
    p = 1.0 / (1.0 + np.exp(-logits))
    weight = q * (q > 0) + alpha * np.abs(p - q) ** gamma * (q <= 0)
    return -(q * np.log(p) + (1 - q) * np.log(1 - p)) * weight


def np_focal(logits, onehot, alpha=0.25, gamma=2.0):
    p = 1.0 / (1.0 + np.exp(-logits))
    pt = (1 - p) * onehot + p * (1 - onehot)
    weight = (alpha * onehot + (1 - alpha) * (1 - onehot)) * pt**gamma
    return -(onehot * np.log(p) + (1 - onehot) * np.log(1 - p)) * weight


def np_iou(a, b):
    lt = np.maximum(a[:, :2], b[:, :2])
    rb = np.minimum(a[:, 2:], b[:, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[:, 0] * wh[:, 1]
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return inter / np.maximum(union, 1e-6)


def np_giou_loss(a, b):
    lt = np.maximum(a[:, :2], b[:, :2])
    rb = np.minimum(a[:, 2:], b[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=1)
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    enclose = (np.maximum(a[:, 2:], b[:, 2:]) - np.minimum(a[:, :2], b[:, :2])).prod(axis=1)
    return 1 - (inter / union - (enclose - union) / enclose)


def np_delta2bbox(anchors, deltas, stds):
    """DeltaXYWHBBoxCoder.decode (means 0), mmdet/core/bbox/coder/delta_xywh_bbox_coder.py."""
    d = deltas * np.asarray(stds)
    max_ratio = abs(math.log(16 / 1000))
    dw, dh = np.clip(d[:, 2], -max_ratio, max_ratio), np.clip(d[:, 3], -max_ratio, max_ratio)
    px, py = (anchors[:, 0] + anchors[:, 2]) * 0.5, (anchors[:, 1] + anchors[:, 3]) * 0.5
    pw, ph = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    gw, gh = pw * np.exp(dw), ph * np.exp(dh)
    gx, gy = px + pw * d[:, 0], py + ph * d[:, 1]
    return np.stack([gx - gw * 0.5, gy - gh * 0.5, gx + gw * 0.5, gy + gh * 0.5], axis=1)


def np_bbox2delta(anchors, gt):
    px, py = (anchors[:, 0] + anchors[:, 2]) * 0.5, (anchors[:, 1] + anchors[:, 3]) * 0.5
    pw, ph = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    gx, gy = (gt[:, 0] + gt[:, 2]) * 0.5, (gt[:, 1] + gt[:, 3]) * 0.5
    gw, gh = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    return np.stack([(gx - px) / pw, (gy - py) / ph, np.log(gw / pw), np.log(gh / ph)], axis=1)


def np_smooth_l1(x, y, beta):
    d = np.abs(x - y)
    return np.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta)


class _OneLevelBackbone(Backbone):
    """A stand-in backbone: the losses under test take the head's outputs directly."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 1)

    def forward(self, x):
        return {"p3": self.conv(x)}

    def output_shape(self):
        return {"p3": ShapeSpec(channels=32, stride=8)}


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- RetinaNet


class RetinaNetVFLTest(unittest.TestCase):
    """anchor_head.py loss_single, use_vfl: IoU of the decoded predicted deltas with the decoded
    targets (no clamp) at the positive's class; VFL weighted by label_weights (ignored and invalid
    anchors 0) over num_total_pos = sum over images of max(positives, 1)."""

    anchors = torch.tensor(
        [[0.0, 0.0, 32.0, 32.0], [8.0, 0.0, 40.0, 32.0], [0.0, 8.0, 32.0, 40.0], [16.0, 16.0, 48.0, 48.0], [40.0, 40.0, 72.0, 72.0]]
    )
    labels = [torch.tensor([1, 3, -1, 0, 3]), torch.tensor([3, 3, 2, 3, -1])]
    gt = [
        torch.tensor([[2.0, 1.0, 30.0, 35.0], [0, 0, 0, 0], [0, 0, 0, 0], [20.0, 14.0, 50.0, 44.0], [0, 0, 0, 0]]),
        torch.tensor([[0, 0, 0, 0], [0, 0, 0, 0], [1.0, 10.0, 28.0, 44.0], [0, 0, 0, 0], [0, 0, 0, 0]]),
    ]

    def _model(self, use_vfl):
        return RetinaNetVFL(
            backbone=_OneLevelBackbone(),
            head=RetinaNetHead(input_shape=[ShapeSpec(channels=32)], num_classes=3, num_anchors=1, conv_dims=[8]),
            head_in_features=["p3"],
            anchor_generator=DefaultAnchorGenerator(sizes=[[32]], aspect_ratios=[1.0], strides=[8], offset=0.0),
            box2box_transform=Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0)),
            anchor_matcher=MaxIoUMatcher(),
            num_classes=3,
            smooth_l1_beta=0.0,
            use_vfl=use_vfl,
            loss_normalizer="positives_per_image",
            ignore_padding=True,
            **NORM,
        )

    def _inputs(self):
        logits = torch.randn(2, 5, 3, generator=_gen(1))
        deltas = torch.randn(2, 5, 4, generator=_gen(2)) * 0.2
        return logits, deltas

    def _losses(self, use_vfl, logits, deltas):
        with EventStorage():
            return self._model(use_vfl).losses([Boxes(self.anchors)], [logits], self.labels, [deltas], self.gt)

    def test_vfl_as_the_reference(self):
        logits, deltas = self._inputs()
        losses = self._losses(True, logits, deltas)
        a, lg, dl = self.anchors.double().numpy(), logits.double().numpy(), deltas.double().numpy()
        total_cls, total_box, normalizer = 0.0, 0.0, 0
        for i in range(2):
            labels = self.labels[i].numpy()
            gt = self.gt[i].double().numpy()
            pos = (labels >= 0) & (labels < 3)
            normalizer += max(int(pos.sum()), 1)
            q = np.zeros((5, 3))
            ious = np_iou(np_delta2bbox(a, dl[i], (1, 1, 1, 1))[pos], gt[pos])
            q[np.nonzero(pos)[0], labels[pos]] = ious
            weights = (labels >= 0).astype(float)  # ignored anchors: label weight 0
            total_cls += (np_vfl(lg[i], q) * weights[:, None]).sum()
            total_box += np.abs(dl[i][pos] - np_bbox2delta(a[pos], gt[pos])).sum()
        self.assertEqual(normalizer, 3)
        self.assertAlmostEqual(losses["loss_cls"].item(), total_cls / normalizer, places=5)
        self.assertAlmostEqual(losses["loss_box_reg"].item(), total_box / normalizer, places=5)

    def test_use_vfl_switches_only_the_classification_loss(self):
        logits, deltas = self._inputs()
        vfl, fl = self._losses(True, logits, deltas), self._losses(False, logits, deltas)
        self.assertAlmostEqual(vfl["loss_box_reg"].item(), fl["loss_box_reg"].item(), places=6)
        expected = 0.0
        for i in range(2):
            labels = self.labels[i].numpy()
            onehot = np.zeros((5, 3))
            pos = (labels >= 0) & (labels < 3)
            onehot[np.nonzero(pos)[0], labels[pos]] = 1.0
            expected += (np_focal(logits[i].double().numpy(), onehot) * (labels >= 0)[:, None]).sum()
        self.assertAlmostEqual(fl["loss_cls"].item(), expected / 3, places=5)
        self.assertNotAlmostEqual(vfl["loss_cls"].item(), fl["loss_cls"].item(), places=3)


# ---------------------------------------------------------------- ATSS


class ATSSVFLTest(unittest.TestCase):
    """atss_vgfl_head.py loss_single, use_vfl: IoU (clamped >= 1e-6) of the decoded deltas (stds
    0.1, 0.1, 0.2, 0.2) with the targets; VFL over *every* anchor (no label weights, invalid ones
    included) over num_total_samples; GIoU and centerness as with the focal loss."""

    anchors = torch.tensor([[-32.0, -32.0, 32.0, 32.0], [-24.0, -32.0, 40.0, 32.0], [-32.0, -24.0, 32.0, 40.0], [-16.0, -16.0, 48.0, 48.0]])
    labels = [torch.tensor([2, 3, 0, 3]), torch.tensor([3, 3, 3, 3])]
    gt = [torch.tensor([[-20.0, -10.0, 30.0, 25.0], [0, 0, 0, 0], [-5.0, -2.0, 20.0, 36.0], [0, 0, 0, 0]]), torch.zeros(4, 4)]
    valid = [[torch.tensor([True, True, True, True])], [torch.tensor([True, True, False, True])]]

    def _model(self, use_vfl):
        return ATSS(
            backbone=_OneLevelBackbone(),
            head=ATSSHead(input_shape=[ShapeSpec(channels=32, stride=8)], num_classes=3, feat_channels=32, stacked_convs=1),
            head_in_features=["p3"],
            anchor_generator=MMDetAnchorGenerator(strides=[8], ratios=[1.0], octave_base_scale=8, scales_per_octave=1),
            box2box_transform=Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0)),
            assigner=ATSSAssigner(topk=9),
            num_classes=3,
            use_vfl=use_vfl,
            **NORM,
        )

    def _losses(self, use_vfl, logits, deltas, centerness):
        with EventStorage():
            return self._model(use_vfl).losses(
                [Boxes(self.anchors)], self.valid, [logits], [deltas], [centerness], self.labels, self.gt
            )

    def _inputs(self):
        deltas = torch.randn(2, 4, 4, generator=_gen(4)) * 0.5
        deltas[0, 2] = torch.tensor([20.0, 20.0, 0.0, 0.0])  # a positive whose box misses its ground truth
        return torch.randn(2, 4, 3, generator=_gen(3)), deltas, torch.randn(2, 4, 1, generator=_gen(5))

    def test_vfl_as_the_reference(self):
        logits, deltas, centerness = self._inputs()
        losses = self._losses(True, logits, deltas, centerness)
        a = self.anchors.double().numpy()
        labels, gt = self.labels[0].numpy(), self.gt[0].double().numpy()
        pos = labels < 3
        normalizer = 2 + 1  # max(2, 1) + max(0, 1)
        boxes = np_delta2bbox(a[pos], deltas[0].double().numpy()[pos], (0.1, 0.1, 0.2, 0.2))
        q = np.zeros((2, 4, 3))
        iou = np_iou(boxes, gt[pos])
        self.assertEqual(iou[1], 0.0)
        q[0, np.nonzero(pos)[0], labels[pos]] = np.clip(iou, 1e-6, None)  # clamped: still a positive
        expected_cls = np_vfl(logits.double().numpy(), q).sum() / normalizer  # every anchor, invalid ones too
        self.assertAlmostEqual(losses["loss_cls"].item(), expected_cls, places=5)
        # centerness targets from the anchor centres, GIoU weighted by them over their sum
        cx, cy = (a[pos, 0] + a[pos, 2]) / 2, (a[pos, 1] + a[pos, 3]) / 2
        l, t, r, b = cx - gt[pos, 0], cy - gt[pos, 1], gt[pos, 2] - cx, gt[pos, 3] - cy
        c = np.sqrt(np.minimum(l, r) / np.maximum(l, r) * np.minimum(t, b) / np.maximum(t, b))
        expected_bbox = 2.0 * (np_giou_loss(boxes, gt[pos]) * c).sum() / max(c.sum(), 1.0)
        self.assertAlmostEqual(losses["loss_bbox"].item(), expected_bbox, places=5)
        ctr = centerness[0, pos, 0].double().numpy()
        bce = -(c * np.log(1 / (1 + np.exp(-ctr))) + (1 - c) * np.log(1 - 1 / (1 + np.exp(-ctr))))
        self.assertAlmostEqual(losses["loss_centerness"].item(), bce.sum() / normalizer, places=5)

    def test_invalid_anchors_count_for_vfl_only(self):
        logits, deltas, centerness = self._inputs()
        changed = logits.clone()
        changed[1, 2] += 3.0  # the invalid anchor of image 1
        vfl_a, vfl_b = self._losses(True, logits, deltas, centerness), self._losses(True, changed, deltas, centerness)
        fl_a, fl_b = self._losses(False, logits, deltas, centerness), self._losses(False, changed, deltas, centerness)
        self.assertNotAlmostEqual(vfl_a["loss_cls"].item(), vfl_b["loss_cls"].item(), places=4)
        self.assertEqual(fl_a["loss_cls"].item(), fl_b["loss_cls"].item())
        self.assertAlmostEqual(vfl_a["loss_bbox"].item(), fl_a["loss_bbox"].item(), places=6)
        self.assertAlmostEqual(vfl_a["loss_centerness"].item(), fl_a["loss_centerness"].item(), places=6)


# ---------------------------------------------------------------- FoveaBox


class FoveaBoxVFLTest(unittest.TestCase):
    """fovea_head.py loss, use_vfl: IoU (clamped >= 1e-6) of the decoded predicted boxes, clamped
    to the *first* image's [0, w - 1] x [0, h - 1], with the ground truth; VFL over every location
    of every image over (positives + images)."""

    points = torch.tensor([[4.0, 4.0], [12.0, 4.0], [28.0, 36.0], [60.0, 20.0]])
    image_sizes = [(40, 30), (80, 100)]

    def _model(self, use_vfl):
        return FoveaBox(
            backbone=_OneLevelBackbone(),
            head=FoveaHead(input_shape=[ShapeSpec(channels=32, stride=8)], num_classes=3, feat_channels=8, stacked_convs=1),
            head_in_features=["p3"],
            point_generator=DefaultAnchorGenerator(sizes=[[8]], aspect_ratios=[1.0], strides=[8], offset=0.5),
            assigner=FoveaAssigner(scale_ranges=[(1, 64)]),
            base_edges=[16],
            num_classes=3,
            use_vfl=use_vfl,
            **NORM,
        )

    def test_vfl_as_the_reference(self):
        logits = torch.randn(2, 4, 3, generator=_gen(6))
        dist = torch.randn(2, 4, 4, generator=_gen(7)) * 0.3
        gts = [make_instances((40, 30), [[1.0, 0.5, 20.0, 14.0]], [2]), make_instances((80, 100), [[40.0, 10.0, 90.0, 30.0]], [1])]
        matched = [torch.tensor([0, 0, -1, -1]), torch.tensor([-1, -1, -1, 0])]
        with EventStorage():
            losses = self._model(True).losses([self.points], [logits], [dist], matched, gts, self.image_sizes)
        p, d = self.points.double().numpy(), dist.double().numpy()
        h0, w0 = self.image_sizes[0]
        q = np.zeros((2, 4, 3))
        box_loss, num_pos = 0.0, 0
        for i, (m, inst) in enumerate(zip(matched, gts)):
            for k in np.nonzero(m.numpy() >= 0)[0]:
                e = np.exp(d[i, k]) * 16
                # clamped to the first image's size, for every image (the reference's img_metas[0])
                pred = np.array([[np.clip(p[k, 0] - e[0], 0, w0 - 1), np.clip(p[k, 1] - e[1], 0, h0 - 1),
                                  np.clip(p[k, 0] + e[2], 0, w0 - 1), np.clip(p[k, 1] + e[3], 0, h0 - 1)]])
                g = inst.gt_boxes.tensor.double().numpy()[m[k]][None]
                q[i, k, inst.gt_classes[m[k]]] = max(np_iou(pred, g)[0], 1e-6)
                target = np.log(np.clip(np.array([p[k, 0] - g[0, 0], p[k, 1] - g[0, 1], g[0, 2] - p[k, 0], g[0, 3] - p[k, 1]]) / 16, 1 / 16, 16))
                box_loss += np_smooth_l1(d[i, k], target, 0.11).sum()
                num_pos += 1
        self.assertEqual(num_pos, 3)
        self.assertLess(q[1, 3, 1], 0.2)  # image 1's box is cut at the first image's width
        self.assertAlmostEqual(losses["loss_cls"].item(), np_vfl(logits.double().numpy(), q).sum() / (num_pos + 2), places=5)
        self.assertAlmostEqual(losses["loss_bbox"].item(), box_loss / num_pos, places=5)
        with EventStorage():
            fl = self._model(False).losses([self.points], [logits], [dist], matched, gts, self.image_sizes)
        self.assertAlmostEqual(fl["loss_bbox"].item(), losses["loss_bbox"].item(), places=6)
        onehot = (q > 0).astype(float)
        expected_fl = np_focal(logits.double().numpy(), onehot, alpha=0.4, gamma=1.5).sum() / (num_pos + 2)
        self.assertAlmostEqual(fl["loss_cls"].item(), expected_fl, places=5)


# ---------------------------------------------------------------- RepPoints


class RepPointsVFLTest(unittest.TestCase):
    """reppoints_head.py loss_single, use_vfl: IoU (not clamped) of the refined points' boxes with
    the refinement targets at the positives' classes; VFL weighted by the refinement stage's
    label weights over num_total_samples_refine; the point losses as with the focal loss."""

    def _model(self, use_vfl=True, fused_ops=True):
        return RepPoints(
            backbone=_OneLevelBackbone(),
            head=RepPointsHead(input_shape=[ShapeSpec(channels=32, stride=8)], num_classes=3, feat_channels=32, point_feat_channels=8, stacked_convs=1),
            head_in_features=["p3"],
            point_generator=DefaultAnchorGenerator(sizes=[[8]], aspect_ratios=[1.0], strides=[8], offset=0.0),
            init_assigner=PointAssigner(),
            refine_matcher=MaxIoUMatcher(),
            num_classes=3,
            use_vfl=use_vfl,
            fused_ops=fused_ops,
            **NORM,
        )

    def test_deform_conv_fused_path_is_dcnv1(self):
        # The fused DCNv2 kernel with a mask of ones against torchvision's DCNv1: on the CPU in
        # float32 the same output to the bit, the gradients within float rounding.
        from vfnet.detectors.reppoints import DeformConv2d
        from vfnet.ops import HAS_C_EXTENSION

        if not HAS_C_EXTENSION:
            self.skipTest("vfnet._C is not built")
        g = _gen(9)
        conv = DeformConv2d(6, 5, 3)
        x = torch.randn(2, 6, 7, 9, generator=g, requires_grad=True)
        offset = (torch.randn(2, 18, 7, 9, generator=g) * 2).requires_grad_()
        outs, grads = [], []
        for fused in (True, False):
            conv.use_fused_op = fused
            out = conv(x, offset)
            outs.append(out)
            grads.append(torch.autograd.grad(out, (x, offset, conv.weight), torch.ones_like(out)))
        self.assertTrue(torch.equal(outs[0], outs[1]))
        for name, a, b in zip(("x", "offset", "weight"), *grads):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            conv.use_fused_op = True
            self.assertEqual(conv(x, offset).dtype, torch.bfloat16)  # as a conv under autocast
            conv.use_fused_op = False
            self.assertEqual(conv(x, offset).dtype, torch.float32)  # torchvision has no bfloat16 CPU path
        self.assertIn("use_fused_op=False", repr(conv))

    def test_fused_ops_false_reaches_the_deform_convs(self):
        for fused in (True, False):
            model = self._model(fused_ops=fused)
            flags = [model.head.cls_dconv.use_fused_op, model.head.pts_refine_dconv.use_fused_op]
            self.assertEqual(flags, [fused, fused])

    def test_label_points_wait_for_the_device_per_image_not_per_ground_truth(self):
        # image 0: its valid locations, the ground truths' levels, one level's points; image 1
        # (no ground truth): its valid locations. The refinement's matcher fills by masks.
        points = torch.tensor([[4.0, 4.0], [12.0, 4.0], [20.0, 4.0], [8.0, 8.0], [24.0, 8.0]])
        strides = torch.tensor([8, 8, 8, 16, 16])
        valid = [torch.ones(5, dtype=torch.bool), torch.tensor([True, True, False, True, True])]
        candidates = torch.rand(2, 5, 4, generator=_gen(3)) * 10 + torch.tensor([0.0, 0.0, 20.0, 20.0])
        gts = [make_instances((64, 64), [[2.0, 3.0, 25.0, 28.0], [5.0, 1.0, 30.0, 22.0]], [1, 2]), make_instances((64, 64), [], [])]
        with HostCallCounter() as calls:
            init_matched, refine_matched, refine_labels = self._model().label_points(points, strides, valid, candidates, gts)
        self.assertEqual(calls.waits, ["nonzero", "tolist", "nonzero", "nonzero"])
        self.assertEqual([m.tolist() for m in init_matched], [[-1, 0, 1, -1, -1], [-1] * 5])
        self.assertEqual([m.tolist() for m in refine_matched], [[1, 1, 0, 0, 0], [-1] * 5])
        # classes of the positives, 3 (background) for the negatives, -1 for invalid locations
        self.assertEqual([m.tolist() for m in refine_labels], [[2, 2, 1, 1, 1], [3, 3, -1, 3, 3]])

    def test_vfl_as_the_reference(self):
        g = _gen(8)
        logits = torch.randn(2, 5, 3, generator=g)
        boxes_init = torch.rand(2, 5, 4, generator=g) * 10 + torch.tensor([0.0, 0.0, 20.0, 20.0])
        boxes_refine = boxes_init + torch.randn(2, 5, 4, generator=g)
        boxes_refine[1, 4] = torch.tensor([100.0, 100.0, 110.0, 110.0])  # a positive that misses its box: target 0
        strides = torch.tensor([8.0, 8.0, 8.0, 16.0, 16.0])
        valid = [torch.ones(5, dtype=torch.bool), torch.tensor([True, True, True, True, True])]
        gts = [make_instances((64, 64), [[2.0, 3.0, 25.0, 28.0], [5.0, 1.0, 30.0, 22.0]], [1, 2]), make_instances((64, 64), [[0.0, 4.0, 27.0, 31.0]], [0])]
        init_matched = [torch.tensor([0, -1, -1, 1, -1]), torch.tensor([-1, -1, -1, -1, -1])]
        refine_matched = [torch.tensor([0, 1, -1, -1, -1]), torch.tensor([-1, -1, 0, -1, 0])]
        refine_labels = [torch.tensor([1, 2, 3, -1, 3]), torch.tensor([3, -1, 0, 3, 0])]
        with EventStorage():
            losses = self._model(True).losses(
                logits, boxes_init, boxes_refine, strides, valid, init_matched, refine_matched, refine_labels, gts
            )
        q = np.zeros((2, 5, 3))
        weights = np.zeros((2, 5))
        loss_init, loss_refine = 0.0, 0.0
        for i in range(2):
            gt = gts[i].gt_boxes.tensor.double().numpy()
            weights[i] = (refine_labels[i].numpy() >= 0)
            for k in np.nonzero(refine_matched[i].numpy() >= 0)[0]:
                pred = boxes_refine[i, k].double().numpy()[None]
                q[i, k, refine_labels[i][k]] = np_iou(pred, gt[refine_matched[i][k]][None])[0]
                s = 4 * strides[k].item()
                loss_refine += np_smooth_l1(pred[0] / s, gt[refine_matched[i][k]] / s, 0.11).sum()
            for k in np.nonzero(init_matched[i].numpy() >= 0)[0]:
                s = 4 * strides[k].item()
                loss_init += np_smooth_l1(boxes_init[i, k].double().numpy() / s, gt[init_matched[i][k]] / s, 0.11).sum()
        self.assertEqual(q[1, 4, 0], 0.0)  # not clamped: the VFL treats it as a negative
        norm_refine = 2 + 2  # image 0: 2 positives, image 1: 2
        norm_init = 2 + 1  # image 0: 2, image 1: max(0, 1)
        expected_cls = (np_vfl(logits.double().numpy(), q) * weights[..., None]).sum() / norm_refine
        self.assertAlmostEqual(losses["loss_cls"].item(), expected_cls, places=5)
        self.assertAlmostEqual(losses["loss_pts_init"].item(), 0.5 * loss_init / norm_init, places=5)
        self.assertAlmostEqual(losses["loss_pts_refine"].item(), loss_refine / norm_refine, places=5)


# ---------------------------------------------------------------- the ablation heads


class VFNetAblationTest(unittest.TestCase):
    def _heads(self, star_features):
        torch.manual_seed(0)
        shapes = [ShapeSpec(channels=32, stride=s) for s in STRIDES]
        head = VFNetAblationHead(input_shape=shapes, num_classes=4, star_features=star_features, feat_channels=32, stacked_convs=2, fused_ops=False)
        vfnet_head = VFNetHead(input_shape=shapes, num_classes=4, feat_channels=32, stacked_convs=2, fused_ops=False)
        features = [torch.randn(2, 32, math.ceil(96 / s), math.ceil(128 / s), generator=_gen(s)) for s in STRIDES]
        return head, vfnet_head, features

    def test_star_head_is_vfnet_without_refinement(self):
        head, vfnet_head, features = self._heads(star_features=True)
        for name in ("cls_subnet", "bbox_subnet", "bbox_init_conv", "bbox_init_pred", "bbox_init_scales", "cls_dconv", "cls_score"):
            getattr(vfnet_head, name).load_state_dict(getattr(head, name).state_dict())
        with torch.no_grad():
            logits, boxes, same = head(features)
            v_logits, v_init, _ = vfnet_head(features)
        self.assertIs(boxes, same)
        for a, b in zip(logits, v_logits):
            torch.testing.assert_close(a, b)
        for a, b in zip(boxes, v_init):
            torch.testing.assert_close(a, b)

    def test_raw_head_classifies_from_a_plain_conv(self):
        head, _, features = self._heads(star_features=False)
        self.assertFalse(hasattr(head, "cls_dconv"))
        with torch.no_grad():
            logits, _, _ = head(features)
            x = features[1]
            for layer in head.cls_subnet:
                x = layer(x)
            expected = head.cls_score(torch.relu(head.cls_conv.norm(torch.nn.functional.conv2d(x, head.cls_conv.weight, head.cls_conv.bias, padding=1))))
        torch.testing.assert_close(logits[1], expected)

    def test_raw_vfnet_losses_as_the_reference(self):
        """vfnet_raw_head.py loss with use_vfl: one IoU-weighted GIoU (weight 2) of the boxes,
        VFL targets their IoUs (clamped >= 1e-6), over the positives."""
        model = small_vfnet(num_classes=4, loss_bbox_init_weight=0.0, loss_bbox_refine_weight=2.0)
        model.head = VFNetAblationHead(
            input_shape=[ShapeSpec(channels=32, stride=s) for s in STRIDES], num_classes=4, feat_channels=32, stacked_convs=2,
            bbox_norm_type="stride",
        )
        images = model.preprocess_image([{"image": random_image(160, 192, seed=3), "instances": make_instances((160, 192), [[10, 12, 60, 70], [40, 20, 120, 90]], [1, 3])}])
        gt = [make_instances((160, 192), [[10, 12, 60, 70], [40, 20, 120, 90]], [1, 3])]
        with EventStorage(), torch.no_grad():
            features = model.backbone(images.tensor)
            features = [features[f] for f in model.head_in_features]
            predictions = model.head(features)
            losses = model.forward_training(images, features, predictions, gt)
            anchors = model.anchor_generator(features)
            labels, boxes = model.label_points(anchors, model.valid_points(features, images), gt)
        points = Boxes.cat(anchors).get_centers().double().numpy()
        logits = torch.cat([p.permute(0, 2, 3, 1).reshape(1, -1, 4) for p in predictions[0]], 1)[0].double().numpy()
        ltrb = torch.cat([p.permute(0, 2, 3, 1).reshape(1, -1, 4) for p in predictions[1]], 1)[0].double().numpy()
        labels, boxes = labels[0].numpy(), boxes[0].double().numpy()
        pos = labels < 4
        self.assertGreater(pos.sum(), 0)
        pred = np.stack([points[pos, 0] - ltrb[pos, 0], points[pos, 1] - ltrb[pos, 1], points[pos, 0] + ltrb[pos, 2], points[pos, 1] + ltrb[pos, 3]], 1)
        iou = np.clip(np_iou(pred, boxes[pos]), 1e-6, None)
        expected_bbox = 2.0 * (np_giou_loss(pred, boxes[pos]) * iou).sum() / max(iou.sum(), 1.0)
        q = np.zeros_like(logits)
        q[np.nonzero(pos)[0], labels[pos]] = iou
        self.assertEqual(losses["loss_bbox_init"].item(), 0.0)
        self.assertAlmostEqual(losses["loss_bbox_refine"].item(), expected_bbox, places=4)
        self.assertAlmostEqual(losses["loss_cls"].item(), np_vfl(logits, q).sum() / max(pos.sum(), 1), places=4)


if __name__ == "__main__":
    unittest.main()
