#!/usr/bin/env python
"""
Make a parity fixture from MMDetection 2.28's own RetinaNet, ATSS, FoveaBox or RepPoints.

    $REFENV/bin/python tools/make_mmdet_dense_fixture.py --detector atss --out tests/data/mmdet_atss.pt

NEEDS THE REFERENCE ENVIRONMENT, not the project's: MMDetection 2.28.2 with mmcv 1.7.2 and the
stand-in for mmcv's compiled ops, built as ../shared/reference-env/README.md says (``$REFENV``,
outside the repository); ``--stub-dir`` (default: $VFNET_MMCV_STUB, else
../shared/reference-env next to this repository) is where ``install_mmcv_ops_stub.py`` lives.
The project itself never imports mmcv or mmdet; it only reads the fixtures this writes, with
``vfnet.mmdet_parity_detectors`` (``tools/check_mmdet_parity.py``).

What it does, per detector (focal loss, the models of MMDetection's configs at small widths):
ResNet-50 at ``--base-channels`` (pytorch style, BN in eval mode), FPN of ``--fpn-channels``
with the detector's extra levels (GroupNorm in the neck for RepPoints), the detector's head of
``--stacked-convs`` x ``--head-channels``; every weight redrawn from ``--seed`` onto a grid that
int8 codes times a power of two (or float16) hold exactly, so the stored weights are the ones
the model ran with; real-looking images normalised by mmcv as MMDetection's pipeline does and
padded to 32; ground truths redrawn until every discrete assignment decision is far from its
threshold (the margins are stored); the classifier's bias set so that each image has tens of
detections whose test decisions (score threshold, NMS IoU, top-k cut) are far from ties.
It stores the outputs of every stage: neck, head (train and eval), assignment labels, loss
normalisers, losses, detections at the default and at a small ``nms_pre``, and the losses of an
image without ground truth. The file format is documented in ``FORMAT`` below and in
``vfnet.mmdet_parity_detectors``.
"""
import argparse
import hashlib
import io
import math
import os
import sys

FORMAT = """
fx['format_version'] = 1; fx['kind'] = 'mmdet_dense_detector'
fx['meta']: detector ('retinanet'|'atss'|'fovea'|'reppoints'), model_cfg (mmdet config dict), args,
    versions, strides, featmap_sizes, mean/std/to_rgb, train_eval_head_outputs_identical,
    assign_margins (per image), test_margins (per image)
fx['state_dict'], fx['state_dict_scale']: mmdet weights; int8 codes x power-of-two scale for the
    keys in state_dict_scale, float16 otherwise (exact)
fx['inputs']: images_uint8_rgb, img [B,3,H,W] (normalised, zero-padded), img_metas, gt_bboxes,
    gt_labels (0-based)
fx['neck_outs']: 5 x [B,C,H_l,W_l]
fx['head_outputs_train']: the head's training outputs, by name (retinanet: cls_scores,
    bbox_preds; atss: + centernesses; fovea: cls_scores, bbox_preds; reppoints: cls_scores,
    pts_preds_init, pts_preds_refine)
fx['head_outputs_eval']: the eval-mode outputs where they differ (reppoints: cls_scores,
    bbox_preds = points2bbox(pts_refine)), else None
fx['targets']: per image, labels of every location in mmdet's per-image order (level, y, x,
    anchor in mmdet's anchor order); reppoints: 'init_labels' and 'labels' (refine stage);
    'normalizers': the avg_factors the losses used
fx['losses']: each loss summed over levels; fx['empty_gt']: img, img_meta, losses
fx['detections'], fx['detections_small_nms_pre'] = {'nms_pre', 'dets'}: per image boxes, scores,
    labels after NMS (rescale=False)
"""

DETECTORS = ("retinanet", "atss", "fovea", "reppoints")
MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]
STRIDES = [8, 16, 32, 64, 128]
SIZE_DIVISOR = 32
INT8_MIN_NUMEL = 1024


def _install_stub(stub_dir):
    sys.path.insert(0, stub_dir)
    import install_mmcv_ops_stub

    install_mmcv_ops_stub.install()


# ------------------------------------------------------------------ model configs


def focal_loss(alpha=0.25, gamma=2.0):
    return dict(type="FocalLoss", use_sigmoid=True, gamma=gamma, alpha=alpha, loss_weight=1.0)


def max_iou_assigner():
    return dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0, ignore_iof_thr=-1)


def model_config(a):
    """The detector's MMDetection config (its configs/<detector>/*_r50_fpn_1x_coco.py) at small widths."""
    stage_out = [a.base_channels * 4 * 2**i for i in range(4)]
    backbone = dict(
        type="ResNet",
        depth=50,
        base_channels=a.base_channels,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type="BN", requires_grad=True),
        norm_eval=True,
        style="pytorch",
        init_cfg=None,
    )
    neck = dict(type="FPN", in_channels=stage_out, out_channels=a.fpn_channels, start_level=1, num_outs=5)
    gn = dict(type="GN", num_groups=32, requires_grad=True)
    test_cfg = dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5), max_per_img=100)
    head = dict(num_classes=a.num_classes, in_channels=a.fpn_channels, stacked_convs=a.stacked_convs, feat_channels=a.head_channels)
    if a.detector == "retinanet":
        neck.update(add_extra_convs="on_input")
        head.update(
            type="RetinaHead",
            anchor_generator=dict(
                type="AnchorGenerator", octave_base_scale=4, scales_per_octave=3, ratios=[0.5, 1.0, 2.0], strides=STRIDES
            ),
            bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[1.0] * 4),
            loss_cls=focal_loss(),
            loss_bbox=dict(type="L1Loss", loss_weight=1.0),
        )
        train_cfg = dict(assigner=max_iou_assigner(), allowed_border=-1, pos_weight=-1, debug=False)
        return dict(type="RetinaNet", backbone=backbone, neck=neck, bbox_head=head, train_cfg=train_cfg, test_cfg=test_cfg)
    if a.detector == "atss":
        neck.update(add_extra_convs="on_output")
        head.update(
            type="ATSSHead",
            anchor_generator=dict(type="AnchorGenerator", ratios=[1.0], octave_base_scale=8, scales_per_octave=1, strides=STRIDES),
            bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[0.1, 0.1, 0.2, 0.2]),
            loss_cls=focal_loss(),
            loss_bbox=dict(type="GIoULoss", loss_weight=2.0),
            loss_centerness=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0),
        )
        train_cfg = dict(assigner=dict(type="ATSSAssigner", topk=9), allowed_border=-1, pos_weight=-1, debug=False)
        test_cfg["nms"] = dict(type="nms", iou_threshold=0.6)
        return dict(type="ATSS", backbone=backbone, neck=neck, bbox_head=head, train_cfg=train_cfg, test_cfg=test_cfg)
    if a.detector == "fovea":
        neck.update(add_extra_convs="on_input")
        head.update(
            type="FoveaHead",
            strides=STRIDES,
            base_edge_list=[16, 32, 64, 128, 256],
            scale_ranges=((1, 64), (32, 128), (64, 256), (128, 512), (256, 2048)),
            sigma=0.4,
            with_deform=False,
            loss_cls=focal_loss(alpha=0.4, gamma=1.5),
            loss_bbox=dict(type="SmoothL1Loss", beta=0.11, loss_weight=1.0),
        )
        del test_cfg["min_bbox_size"]
        return dict(type="FOVEA", backbone=backbone, neck=neck, bbox_head=head, train_cfg=dict(), test_cfg=test_cfg)
    if a.detector == "reppoints":
        neck.update(add_extra_convs="on_input", norm_cfg=gn)
        head.update(
            type="RepPointsHead",
            point_feat_channels=a.head_channels,
            num_points=9,
            gradient_mul=0.1,
            point_strides=STRIDES,
            point_base_scale=4,
            norm_cfg=gn,
            loss_cls=focal_loss(),
            loss_bbox_init=dict(type="SmoothL1Loss", beta=0.11, loss_weight=0.5),
            loss_bbox_refine=dict(type="SmoothL1Loss", beta=0.11, loss_weight=1.0),
            transform_method="moment",
        )
        train_cfg = dict(
            init=dict(assigner=dict(type="PointAssigner", scale=4, pos_num=1), allowed_border=-1, pos_weight=-1, debug=False),
            refine=dict(assigner=max_iou_assigner(), allowed_border=-1, pos_weight=-1, debug=False),
        )
        return dict(type="RepPointsDetector", backbone=backbone, neck=neck, bbox_head=head, train_cfg=train_cfg, test_cfg=test_cfg)
    raise ValueError(a.detector)


def classifier(head):
    return {"RetinaHead": "retina_cls", "ATSSHead": "atss_cls", "FoveaHead": "conv_cls", "RepPointsHead": "reppoints_cls_out"}[
        type(head).__name__
    ]


# ------------------------------------------------------------------ weights


def storage_grid_(t):
    """Round a float tensor in place to what the fixture stores exactly: int8 codes times a power
    of two for tensors of >= INT8_MIN_NUMEL elements, float16 otherwise."""
    import torch

    if not t.is_floating_point():
        return
    if t.numel() >= INT8_MIN_NUMEL:
        m = float(t.abs().max())
        scale = 2.0 ** (math.ceil(math.log2(m / 127.0)) if m > 0 else 0)
        t.copy_(torch.round(t / scale).clamp_(-127, 127) * scale)
    else:
        t.copy_(t.half().float())


def encode(state_dict):
    import torch

    out, scales = {}, {}
    for k, v in state_dict.items():
        v = v.detach().clone()
        if v.is_floating_point():
            if v.numel() >= INT8_MIN_NUMEL:
                m = float(v.abs().max())
                scale = 2.0 ** (math.ceil(math.log2(m / 127.0)) if m > 0 else 0)
                q = torch.round(v / scale)
                assert torch.equal(q * scale, v) and float(q.abs().max()) <= 127, k
                out[k], scales[k] = q.to(torch.int8), scale
                continue
            assert torch.equal(v.half().float(), v), k
            v = v.half()
        out[k] = v
    return out, scales


def redraw_weights(model, gen, img, cls_gain=1.0):
    """Seeded weights that keep activations O(1): convs N(0, gain^2 / fan_in), norms' scales near 1,
    Scale modules in [0.6, 1.4]; BN running statistics from the batch itself, perturbed."""
    import torch
    from mmcv.cnn import Scale
    from mmcv.ops import DeformConv2d

    head = model.bbox_head
    small_gain = {"retina_reg": 0.3, "atss_reg": 0.3, "atss_centerness": 0.5, "conv_reg": 0.3,
                  "reppoints_pts_init_out": 0.3, "reppoints_pts_refine_out": 0.2}
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, (torch.nn.Conv2d, DeformConv2d)):
                fan_in = m.weight[0].numel()
                gain = 1.0 if name.startswith("neck") else small_gain.get(name.split(".")[-1], math.sqrt(2.0))
                if name.startswith("bbox_head.") and name.split(".")[-1] == classifier(head):
                    gain = cls_gain
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * gain / math.sqrt(fan_in))
                if getattr(m, "bias", None) is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.05)
            elif isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)):
                lo, hi = (0.5, 1.0) if isinstance(m, torch.nn.BatchNorm2d) else (0.5, 1.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) * (hi - lo) + lo)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            elif isinstance(m, Scale):
                m.scale.copy_(torch.rand(m.scale.shape, generator=gen) * 0.8 + 0.6)
        if hasattr(head, "moment_transfer"):
            head.moment_transfer.copy_(torch.randn(2, generator=gen) * 0.2)
        for p in model.parameters():
            storage_grid_(p.data)
        bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        model.eval()
        for m in bns:
            m.momentum = 1.0
            m.train()
        model.backbone(img)
        for m in bns:
            m.momentum = 0.1
            m.eval()
            std = m.running_var.sqrt()
            m.running_mean.add_(torch.randn(m.running_mean.shape, generator=gen) * 0.1 * std)
            m.running_var.mul_(torch.rand(m.running_var.shape, generator=gen) * 0.5 + 0.75).clamp_(min=1e-3)
            storage_grid_(m.running_mean)
            storage_grid_(m.running_var)
            m.num_batches_tracked.zero_()


# ------------------------------------------------------------------ inputs


def make_image(rng, h, w):
    """A smooth random RGB image with fine noise (uint8, H x W x 3)."""
    import numpy as np
    import torch

    coarse = torch.from_numpy(rng.uniform(0, 255, size=(3, h // 16 + 2, w // 16 + 2)))[None].float()
    smooth = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0]
    img = smooth.permute(1, 2, 0).double().numpy() + rng.normal(0, 20, size=(h, w, 3))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def mmdet_input(img_rgb):
    """MMDetection's pipeline on an RGB image: loaded as BGR, Normalize(to_rgb=True) (mmcv's
    float32 (x - mean) / std), Pad(size_divisor=32) with zeros after normalising."""
    import mmcv
    import numpy as np

    norm = mmcv.imnormalize(np.ascontiguousarray(img_rgb[:, :, ::-1]), np.array(MEAN, np.float32), np.array(STD, np.float32), to_rgb=True)
    return mmcv.impad_to_multiple(norm, SIZE_DIVISOR, pad_val=0)


def random_boxes(rng, h, w, num_classes):
    """Six boxes of varied size and shape (a tiny one, a large one, two overlapping, a thin one)."""
    import numpy as np

    boxes = []
    bw, bh = rng.uniform(7, 10), rng.uniform(7, 10)
    x, y = rng.uniform(0.1 * w, 0.85 * w), rng.uniform(0.1 * h, 0.85 * h)
    boxes.append([x, y, x + bw, y + bh])
    bw, bh = rng.uniform(0.55, 0.8) * w, rng.uniform(0.55, 0.8) * h
    x, y = rng.uniform(0.02 * w, w - bw - 0.02 * w), rng.uniform(0.02 * h, h - bh - 0.02 * h)
    boxes.append([x, y, x + bw, y + bh])
    s = min(h, w)
    bw, bh = rng.uniform(0.22, 0.34) * s, rng.uniform(0.22, 0.34) * s
    x, y = rng.uniform(0.05 * w, w - 1.4 * bw), rng.uniform(0.05 * h, h - 1.4 * bh)
    boxes.append([x, y, x + bw, y + bh])
    dx, dy = rng.uniform(0.15, 0.3) * bw, rng.uniform(0.1, 0.25) * bh
    boxes.append([x + dx, y + dy, min(x + dx + bw * rng.uniform(0.9, 1.1), w - 0.5), min(y + dy + bh * rng.uniform(0.9, 1.1), h - 0.5)])
    bw, bh = rng.uniform(18, 40), rng.uniform(18, 40)
    x, y = rng.uniform(0, w - bw - 1), rng.uniform(0, h - bh - 1)
    boxes.append([x, y, x + bw, y + bh])
    bw, bh = rng.uniform(12, 18), rng.uniform(45, 70)
    x, y = rng.uniform(0, w - bw - 1), rng.uniform(0, h - bh - 1)
    boxes.append([x, y, x + bw, y + bh])
    return np.array(boxes, np.float32), rng.randint(0, num_classes, size=len(boxes)).astype(np.int64)


# ------------------------------------------------------------------ assignment margins (float64)


def _iou(a, b):
    import numpy as np

    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, 1e-6)


def max_iou_margins(candidates, gts):
    """How far MaxIoUAssigner's decisions are from flipping: per prediction its best IoU vs the
    0.4 / 0.5 thresholds and vs the second best ground truth (where it can be positive), and per
    ground truth the IoUs just below its best (the low-quality matches; ties, equal to 1e-12,
    are left as they are: both sides compute them with the same float32 arithmetic)."""
    import numpy as np

    iou = _iou(candidates.astype(np.float64), gts.astype(np.float64))  # (N, G)
    best = iou.max(1)
    thr_gap = float(np.min(np.abs(best[:, None] - np.array([0.4, 0.5])[None])))
    argmax_gap = math.inf
    if gts.shape[0] > 1:
        srt = np.sort(iou, 1)
        relevant = srt[:, -1] >= 0.4
        if relevant.any():
            argmax_gap = float((srt[relevant, -1] - srt[relevant, -2]).min())
    low_gap = math.inf
    for g in range(gts.shape[0]):
        col = iou[:, g]
        top = col.max()
        below = col[col < top - 1e-12]
        if below.size:
            low_gap = min(low_gap, float(top - below.max()))
    return dict(iou_thr_gap=thr_gap, argmax_gap=argmax_gap, low_quality_gap=low_gap)


def mmdet_anchors(head, featmap_sizes, pad_shape):
    import numpy as np

    anchors = head.prior_generator.grid_priors(featmap_sizes, device="cpu")
    flags = head.prior_generator.valid_flags(featmap_sizes, pad_shape[:2], device="cpu")
    return [a.numpy() for a in anchors], [f.numpy().astype(bool) for f in flags]


def atss_margins(anchors, flags, gts, topk=9):
    import numpy as np

    A, nlev = [], []
    for a, f in zip(anchors, flags):
        A.append(a[f])
        nlev.append(int(f.sum()))
    A = np.concatenate(A).astype(np.float64)
    g = gts.astype(np.float64)
    iou = _iou(A, g)
    acx, acy = (A[:, 0] + A[:, 2]) / 2, (A[:, 1] + A[:, 3]) / 2
    gcx, gcy = (g[:, 0] + g[:, 2]) / 2, (g[:, 1] + g[:, 3]) / 2
    dist = np.sqrt((acx[:, None] - gcx[None]) ** 2 + (acy[:, None] - gcy[None]) ** 2)
    topk_gap, cand, start = math.inf, [], 0
    for n in nlev:
        d = dist[start : start + n]
        order = np.argsort(d, axis=0, kind="stable")
        if n > topk:
            ds = np.take_along_axis(d, order, 0)
            topk_gap = min(topk_gap, float((ds[topk] - ds[topk - 1]).min()))
        cand.append(order[:topk] + start)
        start += n
    cand = np.concatenate(cand)
    cov = iou[cand, np.arange(len(g))]
    thr = cov.mean(0) + cov.std(0, ddof=1)
    inside = np.minimum.reduce([acx[cand] - g[:, 0], acy[cand] - g[:, 1], g[:, 2] - acx[cand], g[:, 3] - acy[cand]])
    pos = (cov >= thr) & (inside > 0.01)
    claimed = np.full(iou.shape, -np.inf)
    for k in range(len(g)):
        claimed[cand[pos[:, k], k], k] = iou[cand[pos[:, k], k], k]
    srt = np.sort(claimed, 1)
    both = np.isfinite(srt[:, -2]) if len(g) > 1 else np.zeros(len(A), bool)
    return dict(
        topk_gap=topk_gap,
        thr_gap=float(np.abs(cov - thr).min()),
        inside_gap=float(np.abs(inside - 0.01).min()),
        argmax_gap=float((srt[both, -1] - srt[both, -2]).min()) if both.any() else math.inf,
        min_pos_per_gt=int(pos.sum(0).min()),
    )


def fovea_margins(head, gts, featmap_sizes):
    """Distances of the fovea bounds to the integers that ceil/floor cut at, and of each box's
    scale to the scale-range bounds."""
    import numpy as np

    g = gts.astype(np.float64)
    scale = np.sqrt((g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1]))
    bounds = np.array(head.scale_ranges, np.float64).reshape(-1)
    range_gap = float(np.abs(scale[:, None] - bounds[None]).min())
    cut_gap = math.inf
    for stride in head.strides:
        b = g / stride
        hw, hh = 0.5 * (b[:, 2] - b[:, 0]), 0.5 * (b[:, 3] - b[:, 1])
        for v in (b[:, 0] + 0.6 * hw - 0.5, b[:, 0] + 1.4 * hw - 0.5, b[:, 1] + 0.6 * hh - 0.5, b[:, 1] + 1.4 * hh - 0.5):
            cut_gap = min(cut_gap, float(np.abs(v - np.round(v)).min()))
    return dict(scale_range_gap=range_gap, fovea_cut_gap=cut_gap)


def point_assigner_margins(points, point_strides, gts, scale=4):
    """PointAssigner: distance of each box's level value to an integer, gap between its nearest
    and second nearest point, and between competing boxes' distances."""
    import numpy as np

    g = gts.astype(np.float64)
    wh = np.clip(g[:, 2:] - g[:, :2], 1e-6, None)
    lvl_f = (np.log2(wh[:, 0] / scale) + np.log2(wh[:, 1] / scale)) / 2
    levels = np.log2(point_strides).astype(int)
    lvl = np.clip(np.trunc(lvl_f).astype(int), levels.min(), levels.max())
    frac_gap = float(np.abs(lvl_f - np.round(lvl_f)).min())
    nearest_gap, compete_gap = math.inf, math.inf
    best = {}
    for k in range(len(g)):
        on = np.nonzero(levels == lvl[k])[0]
        d = np.linalg.norm((points[on] - (g[k, :2] + g[k, 2:]) / 2) / wh[k], axis=1)
        order = np.argsort(d)
        nearest_gap = min(nearest_gap, float(d[order[1]] - d[order[0]]))
        p = on[order[0]]
        if p in best:
            compete_gap = min(compete_gap, abs(best[p] - float(d[order[0]])))
        best[p] = min(best.get(p, math.inf), float(d[order[0]]))
    return dict(level_gap=frac_gap, nearest_gap=nearest_gap, compete_gap=compete_gap)


def margins_ok(m, detector):
    """Margins wide enough for a float32 re-implementation: the anchors are bit-identical (same
    arithmetic), so RetinaNet's and ATSS's IoUs are too; RepPoints' second stage matches boxes
    from predicted points, which may differ in the last bits."""
    if detector == "retinanet":
        return m["iou_thr_gap"] > 1e-6 and m["argmax_gap"] > 1e-6  # near-ties of the low-quality rule: same bits
    if detector == "reppoints_refine":
        return m["iou_thr_gap"] > 2e-5 and m["argmax_gap"] > 2e-5 and m["low_quality_gap"] > 2e-5
    if detector == "atss":
        return (m["topk_gap"] > 0.01 and m["thr_gap"] > 1e-4 and m["inside_gap"] > 0.01 and m["argmax_gap"] > 1e-4
                and m["min_pos_per_gt"] > 0)
    if detector == "fovea":
        return m["scale_range_gap"] > 0.01 and m["fovea_cut_gap"] > 1e-4
    if detector == "reppoints_init":
        return m["level_gap"] > 1e-4 and m["nearest_gap"] > 1e-4 and m["compete_gap"] > 1e-4
    raise ValueError(detector)


# ------------------------------------------------------------------ test-time margins


def test_margins(head, outs, metas, cfg):
    """Per image: min |score - score_thr| in logit units, NMS IoU gap, top-k cut gap."""
    import torch
    from mmdet.core.bbox.iou_calculators import bbox_overlaps

    cls_scores = outs[0]
    thr, lthr = cfg.score_thr, math.log(cfg.score_thr / (1 - cfg.score_thr))
    dets = head.get_bboxes(*outs, img_metas=metas, cfg=cfg, rescale=False)
    pre = head.get_bboxes(*outs, img_metas=metas, cfg=cfg, rescale=False, with_nms=False)
    result = []
    for i, ((db, dl), (boxes, scores, labels)) in enumerate(zip(dets, pre)):
        logits = torch.cat([c[i].reshape(-1) for c in cls_scores])
        topk_gap = math.inf
        for c in cls_scores:
            s = c[i].reshape(-1).sigmoid()
            s = s[s > thr].sort(descending=True)[0]
            if s.numel() > cfg.nms_pre:
                topk_gap = min(topk_gap, float(s[cfg.nms_pre - 1] - s[cfg.nms_pre]))
        iou_gap = math.inf
        for c in dl.unique():
            ov = bbox_overlaps(db[dl == c][:, :4], boxes[labels == c])
            ov = ov[(ov > 1e-9) & (ov < 1 - 1e-6)]
            if ov.numel():
                iou_gap = min(iou_gap, float((ov - cfg.nms.iou_threshold).abs().min()))
        result.append(
            dict(
                num_dets=int(dl.numel()),
                num_pre_nms=int(scores.numel()),
                logit_thr_gap=float((logits - lthr).abs().min()),
                nms_iou_gap=iou_gap,
                nms_pre_topk_gap=topk_gap,
            )
        )
    return result


def small_nms_pre(cls_scores, num_images, score_thr, candidates=range(3, 13)):
    """A small ``nms_pre`` that cuts some levels, chosen where the scores at the cut are farthest
    apart; returns (nms_pre, smallest score gap at its cuts)."""
    import torch

    sorted_scores = []
    for i in range(num_images):
        for c in cls_scores:
            s = c[i].reshape(-1).sigmoid()
            sorted_scores.append(s[s > score_thr].sort(descending=True)[0])

    def gap(n):
        gaps = [float(s[n - 1] - s[n]) for s in sorted_scores if s.numel() > n]
        return min(gaps) if gaps else -1.0

    best = max(candidates, key=gap)
    return best, gap(best)


def head_outputs_with_bias(head, feats, bias):
    import torch

    conv = getattr(head, classifier(head))
    with torch.no_grad():
        conv.bias.copy_(bias)
        return head(feats)


def calibrate_bias(model, gen, img, metas, target):
    """Classifier bias b + N(0, 0.3) per class: b by bisection so that images have about
    ``target`` detections (and fewer than 100), then the b nearby with the widest test margins."""
    import numpy as np
    import torch

    head = model.bbox_head
    model.eval()
    with torch.no_grad():
        feats = model.extract_feat(img)
    conv = getattr(head, classifier(head))
    delta = torch.randn(conv.bias.shape, generator=gen) * 0.3

    def bias_for(b):
        v = delta + b
        storage_grid_(v)
        return v

    def evaluate(b):
        return test_margins(head, head_outputs_with_bias(head, feats, bias_for(b)), metas, head.test_cfg)

    lo, hi = -30.0, 10.0
    for _ in range(24):
        mid = 0.5 * (lo + hi)
        counts = [r["num_dets"] for r in evaluate(mid)]
        if np.mean(counts) > target or max(counts) >= 100:
            hi = mid
        else:
            lo = mid
    best = None
    for b in np.linspace(lo - 0.6, lo + 0.6, 49):
        r = evaluate(float(b))
        counts = [x["num_dets"] for x in r]
        if min(counts) < 0.4 * target or max(counts) > 99:
            continue
        score = min(min(x["logit_thr_gap"] / 0.01, x["nms_iou_gap"] / 2e-3, x["nms_pre_topk_gap"] / 1e-4) for x in r)
        if best is None or score > best[0]:
            best = (score, float(b))
    b = best[1] if best else lo
    with torch.no_grad():
        conv.bias.copy_(bias_for(b))
    return b


# ------------------------------------------------------------------ targets


def record_targets(a, head, outs, gts_b, gts_l, metas):
    """The assignment labels of every location (mmdet's per-image order) and the normalisers."""
    import torch

    featmap_sizes = [o.shape[-2:] for o in outs[0]]
    if a.detector in ("retinanet", "atss"):
        anchors, valid = head.get_anchors(featmap_sizes, metas, device="cpu")
        t = head.get_targets(anchors, valid, gts_b, metas, gt_labels_list=gts_l, label_channels=head.cls_out_channels)
        if a.detector == "atss":
            t = t[1:]
        labels_list, num_total_pos = t[0], t[4]
        labels = torch.cat(labels_list, dim=1)
        return dict(labels=list(labels), normalizers=dict(num_total_pos=float(num_total_pos)))
    if a.detector == "fovea":
        points = head.prior_generator.grid_priors(featmap_sizes, dtype=torch.float32, device="cpu")
        flat_labels, _ = head.get_targets(gts_b, gts_l, featmap_sizes, points)
        n = len(metas)
        per_level = torch.split(flat_labels, [n * h * w for h, w in featmap_sizes])
        labels = [torch.cat([lv.view(n, -1)[i] for lv in per_level]) for i in range(n)]
        num_pos = int(((flat_labels >= 0) & (flat_labels < head.num_classes)).sum())
        return dict(labels=labels, normalizers=dict(num_pos=num_pos, cls_avg_factor=num_pos + n))
    # reppoints: both stages, as RepPointsHead.loss computes them
    centers, valid = head.get_points(featmap_sizes, metas, "cpu")
    init = head.get_targets(centers, valid, gts_b, metas, gt_labels_list=gts_l, stage="init", label_channels=head.cls_out_channels)
    _, valid = head.get_points(featmap_sizes, metas, "cpu")
    boxes = reppoints_refine_candidates(head, outs, featmap_sizes, metas)
    refine = head.get_targets(boxes, valid, gts_b, metas, gt_labels_list=gts_l, stage="refine", label_channels=head.cls_out_channels)
    return dict(
        init_labels=list(torch.cat(init[0], dim=1)),
        labels=list(torch.cat(refine[0], dim=1)),
        normalizers=dict(num_total_pos_init=float(init[5]), num_total_pos_refine=float(refine[5])),
    )


def reppoints_refine_candidates(head, outs, featmap_sizes, metas):
    """Per image, per level, the boxes of the initial points (detached), in pixels: what
    RepPoints' second stage assigns ground truth to."""
    import torch

    pts_init = outs[1]
    centers, _ = head.get_points(featmap_sizes, metas, "cpu")
    boxes = []
    for i, center in enumerate(centers):
        per_level = []
        for lvl in range(len(pts_init)):
            shift = head.points2bbox(pts_init[lvl].detach()) * head.point_strides[lvl]
            per_level.append(torch.cat([center[lvl][:, :2], center[lvl][:, :2]], 1) + shift[i].permute(1, 2, 0).reshape(-1, 4))
        boxes.append(per_level)
    return boxes


# ------------------------------------------------------------------ main


def to_plain(x):
    import numpy as np
    import torch

    if isinstance(x, torch.Tensor):
        return x.detach().cpu().clone()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, dict):
        return {k: to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_plain(v) for v in x]
    return x


def parse_size(s):
    h, w = s.lower().split("x")
    return int(h), int(w)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0], epilog=FORMAT, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detector", required=True, choices=DETECTORS)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--base-channels", type=int, default=8, help="ResNet-50 stem width (64 in the real model)")
    ap.add_argument("--fpn-channels", type=int, default=32)
    ap.add_argument("--head-channels", type=int, default=32)
    ap.add_argument("--stacked-convs", type=int, default=2)
    ap.add_argument("--num-classes", type=int, default=6)
    ap.add_argument("--img-sizes", default="150x212,136x196", help="HxW of the batch's images")
    ap.add_argument("--empty-gt-size", default="100x140")
    ap.add_argument("--target-dets", type=float, default=40.0)
    ap.add_argument("--cls-gain", type=float, default=0.5, help="gain of the classifier's weights")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--stub-dir", default=os.environ.get("VFNET_MMCV_STUB", os.path.join(here, "..", "..", "shared", "reference-env")))
    a = ap.parse_args()

    _install_stub(os.path.abspath(a.stub_dir))
    import logging

    logging.getLogger("mmcv").setLevel(logging.ERROR)
    import mmcv
    import mmdet
    import numpy as np
    import torch
    from mmdet.models import build_detector

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.RandomState(a.seed)
    gen = torch.Generator().manual_seed(a.seed)

    cfg = model_config(a)
    model = build_detector(mmcv.ConfigDict(cfg))
    model.init_weights()
    head = model.bbox_head
    if a.detector == "reppoints":
        # RepPointsHead.get_points calls prior_generator.valid_flags without a device, whose
        # default is 'cuda': on a CPU-only machine, make the default the CPU (nothing else changes)
        valid_flags_on = head.prior_generator.valid_flags
        head.prior_generator.valid_flags = lambda sizes, pad_shape, device="cpu": valid_flags_on(sizes, pad_shape, device)

    sizes = [parse_size(s) for s in a.img_sizes.split(",")]
    raw, padded, metas = [], [], []
    for h, w in sizes:
        img = make_image(rng, h, w)
        pad = mmdet_input(img)
        raw.append(img)
        padded.append(pad)
        metas.append(dict(ori_shape=(h, w, 3), img_shape=(h, w, 3), pad_shape=pad.shape, scale_factor=np.ones(4, np.float32), flip=False, flip_direction=None))
    bh, bw = max(p.shape[0] for p in padded), max(p.shape[1] for p in padded)
    batch = torch.zeros(len(padded), 3, bh, bw)
    for i, p in enumerate(padded):
        batch[i, :, : p.shape[0], : p.shape[1]] = torch.from_numpy(p.transpose(2, 0, 1))
    for m in metas:
        m["batch_input_shape"] = (bh, bw)

    redraw_weights(model, gen, batch, a.cls_gain)
    bias_base = calibrate_bias(model, gen, batch, metas, a.target_dets)

    model.train()
    with torch.no_grad():
        feats = model.extract_feat(batch)
        outs = head(feats)
    featmap_sizes = [tuple(o.shape[-2:]) for o in outs[0]]

    # ground truths far from every assignment threshold
    if a.detector == "reppoints":
        refine_candidates = reppoints_refine_candidates(head, outs, featmap_sizes, metas)
    gts_b, gts_l, assign_margins = [], [], []
    for i, (h, w) in enumerate(sizes):
        for attempt in range(2000):
            boxes, labels = random_boxes(rng, h, w, a.num_classes)
            if a.detector == "retinanet":
                anchors, flags = mmdet_anchors(head, featmap_sizes, metas[i]["pad_shape"])
                m = max_iou_margins(np.concatenate(anchors)[np.concatenate(flags)], boxes)
                ok = margins_ok(m, "retinanet")
            elif a.detector == "atss":
                anchors, flags = mmdet_anchors(head, featmap_sizes, metas[i]["pad_shape"])
                m = atss_margins(anchors, flags, boxes)
                ok = margins_ok(m, "atss")
            elif a.detector == "fovea":
                m = fovea_margins(head, boxes, featmap_sizes)
                ok = margins_ok(m, "fovea")
            else:
                centers, valid = head.get_points(featmap_sizes, [metas[i]], "cpu")
                pts = torch.cat(centers[0]).numpy()
                v = torch.cat(valid[0]).numpy().astype(bool)
                m_init = point_assigner_margins(pts[v, :2], pts[v, 2], boxes)
                cand = torch.cat(refine_candidates[i]).detach().numpy()[v]
                m = dict(init=m_init, refine=max_iou_margins(cand, boxes))
                ok = margins_ok(m_init, "reppoints_init") and margins_ok(m["refine"], "reppoints_refine")
            if ok:
                break
        else:
            raise RuntimeError(f"no ground truth far enough from the assignment thresholds for image {i}: last {m}")
        m["gt_redraws"] = attempt
        assign_margins.append(m)
        gts_b.append(torch.from_numpy(boxes))
        gts_l.append(torch.from_numpy(labels))

    targets = record_targets(a, head, outs, gts_b, gts_l, metas)
    losses = model.forward_train(batch, [dict(m) for m in metas], [b.clone() for b in gts_b], [l.clone() for l in gts_l])
    losses = {k: float(sum(v) if isinstance(v, (list, tuple)) else v) for k, v in losses.items()}

    eh, ew = parse_size(a.empty_gt_size)
    e_img = make_image(rng, eh, ew)
    e_pad = mmdet_input(e_img)
    e_batch = torch.from_numpy(e_pad.transpose(2, 0, 1).copy())[None]
    e_meta = dict(ori_shape=(eh, ew, 3), img_shape=(eh, ew, 3), pad_shape=e_pad.shape, scale_factor=np.ones(4, np.float32),
                  flip=False, flip_direction=None, batch_input_shape=tuple(e_batch.shape[-2:]))
    e_losses = model.forward_train(e_batch, [dict(e_meta)], [torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.long)])
    e_losses = {k: float(sum(v) if isinstance(v, (list, tuple)) else v) for k, v in e_losses.items()}

    model.eval()
    with torch.no_grad():
        feats_e = model.extract_feat(batch)
        outs_e = head(feats_e)
        dets = head.get_bboxes(*outs_e, img_metas=metas, rescale=False)
        margins = test_margins(head, outs_e, metas, head.test_cfg)
        small, small_gap = small_nms_pre(outs_e[0], len(metas), head.test_cfg.score_thr)
        small_cfg = mmcv.ConfigDict(dict(head.test_cfg, nms_pre=small))
        dets_small = head.get_bboxes(*outs_e, img_metas=metas, cfg=small_cfg, rescale=False)
    identical = all(torch.equal(x, y) for x, y in zip(outs_e[0], outs[0])) and len(outs_e) == len(outs)
    names = {"retinanet": ("cls_scores", "bbox_preds"), "atss": ("cls_scores", "bbox_preds", "centernesses"),
             "fovea": ("cls_scores", "bbox_preds"), "reppoints": ("cls_scores", "pts_preds_init", "pts_preds_refine")}[a.detector]

    state_dict, scales = encode(model.state_dict())
    fixture = dict(
        format_version=1,
        kind="mmdet_dense_detector",
        meta=dict(
            detector=a.detector,
            description=f"MMDetection {mmdet.__version__} {cfg['type']} on seeded weights (tools/make_mmdet_dense_fixture.py)",
            model_cfg=cfg,
            args={k: v for k, v in vars(a).items() if k not in ("out", "stub_dir")},
            versions=dict(mmdet=mmdet.__version__, mmcv=mmcv.__version__, torch=torch.__version__, numpy=np.__version__),
            strides=STRIDES,
            featmap_sizes=[list(s) for s in featmap_sizes],
            mean=MEAN, std=STD, to_rgb=True, size_divisor=SIZE_DIVISOR,
            cls_bias_base=bias_base,
            train_eval_head_outputs_identical=identical,
            assign_margins=assign_margins,
            test_margins=margins,
        ),
        state_dict=state_dict,
        state_dict_scale=scales,
        inputs=dict(images_uint8_rgb=[torch.from_numpy(x.copy()) for x in raw], img=batch, img_metas=metas, gt_bboxes=gts_b, gt_labels=gts_l),
        neck_outs=list(feats),
        head_outputs_train={n: list(o) for n, o in zip(names, outs)},
        head_outputs_eval=None if identical else dict(cls_scores=list(outs_e[0]), bbox_preds=list(outs_e[1])),
        targets=targets,
        losses=losses,
        empty_gt=dict(image_uint8_rgb=torch.from_numpy(e_img.copy()), img=e_batch, img_meta=e_meta, losses=e_losses),
        detections=[dict(boxes=d[:, :4], scores=d[:, 4], labels=l) for d, l in dets],
        detections_small_nms_pre=dict(nms_pre=small, topk_cut_score_gap=small_gap, dets=[dict(boxes=d[:, :4], scores=d[:, 4], labels=l) for d, l in dets_small]),
    )
    fixture = to_plain(fixture)
    buf = io.BytesIO()
    torch.save(fixture, buf)  # through a buffer: the same content gives the same bytes anywhere
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "wb") as f:
        f.write(buf.getvalue())
    print(f"wrote {a.out}: {len(buf.getvalue()) / 1e6:.2f} MB, sha256 {hashlib.sha256(buf.getvalue()).hexdigest()}")
    print("losses", losses, "empty-gt losses", e_losses)
    print("detections per image", [int(l.numel()) for _, l in dets], "small nms_pre", small, [int(l.numel()) for _, l in dets_small])
    print("assignment margins", assign_margins)
    print("test margins", margins)


if __name__ == "__main__":
    main()
