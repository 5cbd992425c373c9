"""VFNet, the detector: labelling, losses and decoding around :class:`VFNetHead`."""
from collections import OrderedDict
from typing import Dict, List, Tuple

import torch
from detectron2.config import configurable, instantiate
from detectron2.layers import batched_nms, cat
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.box_regression import Box2BoxTransformLinear
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.structures.boxes import matched_pairwise_iou
from detectron2.utils.events import get_event_storage
from fvcore.nn import giou_loss, sigmoid_focal_loss
from torch import Tensor

from .assigners import ATSSAssigner, FCOSAssigner, LabelAssigner
from .builders import point_generator
from .detectors.base import VFLDenseDetector
from .detectors.common import batch_valid_flags, means_over_workers
from .head import VFNetHead
from .layers import disable_fused_deformable_convs
from .losses import varifocal_loss
from .ops import fused_varifocal_loss
from .nms import batched_soft_nms
from .vfl import NORMALIZER_EPS

__all__ = ["VFNet"]


@META_ARCH_REGISTRY.register()
class VFNet(VFLDenseDetector):
    """
    VarifocalNet (Zhang et al., CVPR 2021): a dense detector that ranks its boxes by an IoU-aware
    classification score trained with the Varifocal Loss, and refines each box with features
    sampled at the box's star-shaped key points.

    In training it returns ``{"loss_cls", "loss_bbox_init", "loss_bbox_refine"}``; in inference the
    standard ``[{"instances": Instances}]`` with ``pred_boxes``, ``scores`` and ``pred_classes``.
    """

    @configurable
    def __init__(
        self,
        *,
        head: VFNetHead,
        anchor_generator: DefaultAnchorGenerator,
        assigner: LabelAssigner,
        loss_cls_weight: float = 1.0,
        loss_bbox_init_weight: float = 1.5,
        loss_bbox_refine_weight: float = 2.0,
        test_topk_mode: str = "pairs",
        test_nms_type: str = "nms",
        soft_nms_method: str = "linear",
        soft_nms_sigma: float = 0.5,
        soft_nms_min_score: float = 1e-3,
        fused_ops: bool = True,
        **kwargs,
    ):
        """
        Args:
            head: the :class:`VFNetHead`.
            anchor_generator: one square anchor per location; its centres are the points the
                boxes are measured from (offset 0 for ATSS, 0.5 for the FCOS assigner) and its
                boxes (side 8 x stride) are the anchors ATSS matches.
            assigner: a :class:`~vfnet.assigners.LabelAssigner`: :class:`ATSSAssigner` or
                :class:`FCOSAssigner`.
            loss_cls_weight, loss_bbox_init_weight, loss_bbox_refine_weight: loss weights.
            test_topk_mode: "pairs" (threshold, then the top (point, class) pairs: MMDetection
                >= 2.18 and the fixtures) or "points" (the top points by best class score,
                then threshold: the original VarifocalNet repository).
            test_nms_type: "nms" or "soft_nms"; class-wise either way.
            soft_nms_method, soft_nms_sigma, soft_nms_min_score: Soft-NMS parameters.
            fused_ops: compute the Varifocal Loss with the fused kernel
                :func:`vfnet.ops.fused_varifocal_loss` (default: one pass each way, no temporaries of
                the logits' size) or with the eager :func:`vfnet.losses.varifocal_loss` (the
                reference). False also turns every deformable conv of the detector (the head's
                star convs, the DCNv2 convs of the backbone, neck and head) to its torchvision
                path; True leaves each as it was built (their own ``use_fused_op``, on by
                default). The yacs config sets it from ``MODEL.VFNET.FUSED_OPS``.
            kwargs: :class:`~vfnet.detectors.base.VFLDenseDetector`'s other arguments:
                ``backbone`` (whose ``head_in_features`` outputs feed the head: ResNet+FPN
                P3-P7), ``head_in_features`` (default: all, by stride), ``num_classes``,
                ``use_vfl`` (the Varifocal Loss on IoU targets, or the focal loss on hard
                labels), ``vfl_alpha``, ``vfl_gamma``, ``vfl_iou_weighted``,
                ``focal_loss_alpha``, ``focal_loss_gamma``, ``test_score_thresh`` (keep (point,
                class) pairs scoring above it), ``test_topk_candidates`` (per level, before NMS),
                ``test_nms_thresh``, ``max_detections_per_image``, ``pixel_mean``, ``pixel_std``
                and ``input_format`` (channel order of the inputs: "RGB" for the reference's
                weights).
        """
        super().__init__(head=head, fused_ops=fused_ops, **kwargs)
        if anchor_generator.num_cell_anchors != [1] * len(anchor_generator.num_cell_anchors):
            raise ValueError("VFNet: the anchor generator must place exactly one anchor per location")
        if not isinstance(assigner, LabelAssigner):
            raise TypeError(f"VFNet: the assigner must be a vfnet.assigners.LabelAssigner, got {type(assigner).__name__}")
        self._check_strides(head, anchor_generator, assigner)
        if test_topk_mode not in ("pairs", "points"):
            raise ValueError(f"VFNet: test_topk_mode must be 'pairs' or 'points', got {test_topk_mode!r}")
        if test_nms_type not in ("nms", "soft_nms"):
            raise ValueError(f"VFNet: test_nms_type must be 'nms' or 'soft_nms', got {test_nms_type!r}")
        self.anchor_generator = anchor_generator
        self._anchor_cache: "OrderedDict[tuple, List[Boxes]]" = OrderedDict()
        self.assigner = assigner
        self.loss_cls_weight = loss_cls_weight
        self.loss_bbox_init_weight = loss_bbox_init_weight
        self.loss_bbox_refine_weight = loss_bbox_refine_weight
        self.test_topk_mode = test_topk_mode
        self.test_nms_type = test_nms_type
        self.soft_nms_method = soft_nms_method
        self.soft_nms_sigma = soft_nms_sigma
        self.soft_nms_min_score = soft_nms_min_score
        # The head predicts distances (l, t, r, b) in pixels from each anchor's centre.
        self.box2box_transform = Box2BoxTransformLinear(normalize_by_size=False)
        if not fused_ops:
            disable_fused_deformable_convs(self)

    def _check_strides(self, head, anchor_generator, assigner) -> None:
        """The head, the anchor generator (the points) and the backbone outputs it reads (and a
        stride-bound assigner) must describe the same levels, else points and features misalign."""
        shapes = self.backbone.output_shape()
        missing = [f for f in self.head_in_features if f not in shapes]
        if missing:
            raise ValueError(f"VFNet: head_in_features {missing} are not outputs of the backbone ({sorted(shapes)})")
        strides = {
            f"backbone outputs {list(self.head_in_features)}": [int(shapes[f].stride) for f in self.head_in_features],
            "head": [int(s) for s in head.strides],
            "anchor generator": [int(s) for s in anchor_generator.strides],
        }
        if assigner.strides is not None:
            strides["assigner"] = [int(s) for s in assigner.strides]
        if len({tuple(v) for v in strides.values()}) > 1:
            raise ValueError("VFNet: the levels' strides disagree: " + ", ".join(f"{k} {v}" for k, v in strides.items()))

    @classmethod
    def from_config(cls, cfg):
        v = cfg.MODEL.VFNET
        backbone, feature_shapes = cls.backbone_and_feature_shapes(cfg, "VFNET")
        strides = [s.stride for s in feature_shapes]
        if v.USE_ATSS:
            assigner = ATSSAssigner(topk=v.ATSS_TOPK)
        else:
            assigner = FCOSAssigner(
                strides,
                regress_ranges=[tuple(r) for r in v.REGRESS_RANGES],
                center_sampling=v.CENTER_SAMPLING,
                center_sample_radius=v.CENTER_SAMPLE_RADIUS,
            )
        return {
            **cls.shared_options_from_config(cfg, v),
            "backbone": backbone,
            "head": VFNetHead(cfg, feature_shapes),
            "anchor_generator": instantiate(
                point_generator(strides, anchor_scale=v.ANCHOR_SCALE, offset=0.0 if v.USE_ATSS else 0.5)
            ),
            "assigner": assigner,
            "loss_cls_weight": v.LOSS_CLS_WEIGHT,
            "loss_bbox_init_weight": v.LOSS_BBOX_INIT_WEIGHT,
            "loss_bbox_refine_weight": v.LOSS_BBOX_REFINE_WEIGHT,
            "test_topk_mode": v.TOPK_CANDIDATES_MODE,
            "test_nms_type": v.NMS_TYPE,
            "soft_nms_method": v.SOFT_NMS_METHOD,
            "soft_nms_sigma": v.SOFT_NMS_SIGMA,
            "soft_nms_min_score": v.SOFT_NMS_MIN_SCORE,
        }

    # ------------------------------------------------------------------ training

    def forward_training(
        self,
        images: ImageList,
        features: List[Tensor],
        predictions: Tuple[List[Tensor], List[Tensor], List[Tensor]],
        gt_instances: List[Instances],
    ) -> Dict[str, Tensor]:
        logits, boxes_init, boxes_refine = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4, 4]
        )
        anchors = self.grid_anchors(features)
        valid = self.valid_points(features, images)
        gt_labels, gt_boxes = self.label_points(anchors, valid, gt_instances)
        return self.losses(anchors, valid, logits, boxes_init, boxes_refine, gt_labels, gt_boxes)

    ANCHOR_CACHE_SIZE = 16

    def grid_anchors(self, features: List[Tensor]) -> List[Boxes]:
        """
        ``self.anchor_generator(features)``, kept for the last :attr:`ANCHOR_CACHE_SIZE` feature
        sizes (per device and dtype): at a fixed input size (a predictor, evaluation, a benchmark)
        they are built once instead of in some 75 small ops per call, each a kernel launch on a
        GPU. The returned anchors are shared between calls: read them, do not modify them in place.
        Not cached while tracing (export), where the anchors follow the input's size.
        """
        if torch.jit.is_tracing():
            return self.anchor_generator(features)
        cell_anchors = next(self.anchor_generator.buffers(), None)
        key = (
            tuple(tuple(f.shape[-2:]) for f in features),
            features[0].device,
            None if cell_anchors is None else cell_anchors.dtype,
        )
        anchors = self._anchor_cache.get(key)
        if anchors is None:
            anchors = self.anchor_generator(features)
            self._anchor_cache[key] = anchors
            while len(self._anchor_cache) > self.ANCHOR_CACHE_SIZE:
                self._anchor_cache.popitem(last=False)
        else:
            self._anchor_cache.move_to_end(key)
        return anchors

    def valid_points(self, features: List[Tensor], images: ImageList) -> List[List[Tensor]]:
        """
        Which points lie inside each image's own padded area (its size rounded up to the
        backbone's size divisibility), like the reference's anchor validity flags.

        Returns:
            per image, per level, a bool tensor (H_l * W_l,) in row-major order.
        """
        return batch_valid_flags(features, images.image_sizes, self.anchor_generator, self.backbone.size_divisibility)

    @torch.no_grad()
    def label_points(
        self, anchors: List[Boxes], valid: List[List[Tensor]], gt_instances: List[Instances]
    ) -> Tuple[List[Tensor], List[Tensor]]:
        """
        Returns:
            gt_labels: per image (P,) int64 class of each point, ``num_classes`` for background.
            gt_boxes: per image (P, 4) XYXY ground truth of each point (zeros for background).
        """
        return self.assigner.label_images(anchors, valid, gt_instances, self.num_classes)

    def losses(
        self,
        anchors: List[Boxes],
        valid: List[List[Tensor]],
        logits: List[Tensor],
        boxes_init: List[Tensor],
        boxes_refine: List[Tensor],
        gt_labels: List[Tensor],
        gt_boxes: List[Tensor],
    ) -> Dict[str, Tensor]:
        """
        Args:
            anchors: per level, (P_l, 4) anchors whose centres are the points.
            valid: per image, per level, (P_l,) validity of the points.
            logits: per level (N, P_l, C) classification logits.
            boxes_init, boxes_refine: per level (N, P_l, 4) predicted (l, t, r, b) in pixels.
            gt_labels, gt_boxes: per image, from :meth:`label_points`.
        """
        num_images = len(gt_labels)
        gt_labels = torch.stack(gt_labels)  # (N, P)
        gt_boxes = torch.stack(gt_boxes)  # (N, P, 4)
        logits = cat(logits, dim=1)  # (N, P, C)
        boxes_init = cat(boxes_init, dim=1)
        boxes_refine = cat(boxes_refine, dim=1)
        anchors = Boxes.cat(anchors).tensor  # (P, 4)

        pos_mask = (gt_labels >= 0) & (gt_labels != self.num_classes)
        pos_images, pos_points = pos_mask.nonzero(as_tuple=True)
        num_pos = pos_images.numel()
        get_event_storage().put_scalar("num_pos_points", num_pos / num_images)
        pos_anchors = anchors[pos_points]
        pos_targets = gt_boxes[pos_images, pos_points]
        pos_init = self.box2box_transform.apply_deltas(boxes_init[pos_images, pos_points], pos_anchors)
        pos_refine = self.box2box_transform.apply_deltas(boxes_refine[pos_images, pos_points], pos_anchors)

        # Both GIoU losses in one call, and every normaliser in one all-reduce: each of these
        # waits for the device (fvcore's giou_loss 7 times).
        weighted_giou, iou = self._iou_weighted_giou(
            torch.cat([pos_init, pos_refine]), torch.cat([pos_targets, pos_targets])
        )
        iou_init, iou_refine = iou[:num_pos], iou[num_pos:]
        pos_normalizer, init_normalizer, refine_normalizer = (
            max(v, 1.0) for v in means_over_workers([pos_mask.sum(), iou_init.sum(), iou_refine.sum()])
        )
        loss_bbox_init = weighted_giou[:num_pos].sum() / (init_normalizer + NORMALIZER_EPS)
        loss_bbox_refine = weighted_giou[num_pos:].sum() / (refine_normalizer + NORMALIZER_EPS)

        if self.use_vfl:
            cls_targets = torch.zeros_like(logits, dtype=torch.float32)
            cls_targets[pos_images, pos_points, gt_labels[pos_images, pos_points]] = iou_refine
            vfl = fused_varifocal_loss if self.fused_ops else varifocal_loss
            loss_cls = vfl(
                logits.float(),
                cls_targets,
                alpha=self.vfl_alpha,
                gamma=self.vfl_gamma,
                iou_weighted=self.vfl_iou_weighted,
                reduction="sum",
            )
        else:
            one_hot = torch.zeros_like(logits, dtype=torch.float32)
            one_hot[pos_images, pos_points, gt_labels[pos_images, pos_points]] = 1.0
            loss_per_point = sigmoid_focal_loss(
                logits.float(), one_hot, alpha=self.focal_loss_alpha, gamma=self.focal_loss_gamma, reduction="none"
            )
            if self.assigner.assigns_padding:
                loss_cls = loss_per_point.sum()
            else:
                weights = torch.stack([cat(v) for v in valid]).to(loss_per_point.dtype)  # (N, P)
                loss_cls = (loss_per_point * weights[..., None]).sum()

        return {
            "loss_cls": self.loss_cls_weight * loss_cls / (pos_normalizer + NORMALIZER_EPS),
            "loss_bbox_init": self.loss_bbox_init_weight * loss_bbox_init,
            "loss_bbox_refine": self.loss_bbox_refine_weight * loss_bbox_refine,
        }

    @staticmethod
    def _iou_weighted_giou(pred: Tensor, target: Tensor) -> Tuple[Tensor, Tensor]:
        """
        GIoU losses of (K, 4) predicted vs target XYXY boxes, each weighted by its detached IoU
        (clamped >= 1e-6). The loss of a set of boxes is the sum of its weighted losses over the
        sum of its weights, averaged over workers and at least 1.

        Returns:
            (weighted, iou): (K,) weighted losses and (K,) IoUs.
        """
        iou = matched_pairwise_iou(Boxes(pred.detach()), Boxes(target)).clamp(min=1e-6)
        return giou_loss(pred, target, reduction="none") * iou, iou

    # ------------------------------------------------------------------ inference

    def forward_inference(
        self,
        images: ImageList,
        features: List[Tensor],
        predictions: Tuple[List[Tensor], List[Tensor], List[Tensor]],
    ) -> List[Instances]:
        return [self.select_detections(c) for c in self.decode_candidates(images, features, predictions)]

    def predict_candidates(self, batched_inputs: List[Dict[str, Tensor]]) -> List[Instances]:
        """
        Inference up to, not including, the NMS: per image, the candidates of
        :meth:`decode_candidates` in the coordinates of the model's input image (after the data
        loader's resize), which is ``instances.image_size``. Used by test-time augmentation and
        the ranking analysis (:mod:`vfnet.analysis`).
        """
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        features = [features[f] for f in self.head_in_features]
        return self.decode_candidates(images, features, self.head(features))

    def decode_candidates(
        self,
        images: ImageList,
        features: List[Tensor],
        predictions: Tuple[List[Tensor], List[Tensor], List[Tensor]],
    ) -> List[Instances]:
        """
        Per image, the (point, class) candidates before NMS: ``pred_boxes`` (refined boxes, clipped
        to the image), ``scores`` and ``pred_classes``, selected level by level with the score
        threshold and top-k of ``test_topk_mode``.
        """
        logits, _, boxes_refine = predictions  # the initial boxes are not used here
        logits, boxes_refine = self._transpose_dense_predictions([logits, boxes_refine], [self.num_classes, 4])
        anchors = self.grid_anchors(features)
        results = []
        for img_idx, image_size in enumerate(images.image_sizes):
            scores_per_image = [x[img_idx].sigmoid() for x in logits]
            boxes_per_image = [x[img_idx] for x in boxes_refine]
            results.append(self.candidates_single_image(anchors, scores_per_image, boxes_per_image, image_size))
        return results

    def candidates_single_image(
        self,
        anchors: List[Boxes],
        scores: List[Tensor],
        ltrb: List[Tensor],
        image_size: Tuple[int, int],
    ) -> Instances:
        """
        The candidates of one image before NMS.

        Args:
            anchors: per level (P_l,) anchors; their centres are the points.
            scores: per level (P_l, C) class scores in [0, 1].
            ltrb: per level (P_l, 4) refined distances (l, t, r, b) in pixels.
            image_size: (height, width) of the image before padding; boxes are clipped to it.
        """
        topk = self.test_topk_candidates
        selected = []  # per level: deltas, anchors, scores, classes of the candidates
        for anchors_l, scores_l, ltrb_l in zip(anchors, scores, ltrb):
            if self.test_topk_mode == "pairs" or not 0 < topk < len(anchors_l):
                # Detectron2 keeps min(top-k, count) pairs. Every pair above the threshold when
                # top-k <= 0, or in "points" mode when top-k does not select among the points
                # (the original repository then keeps all of them).
                pairs_topk = topk if self.test_topk_mode == "pairs" and topk > 0 else scores_l.numel()
                point_idx, class_idx, cand_scores = self._select_pairs(scores_l, self.test_score_thresh, pairs_topk)
            else:
                point_idx, class_idx, cand_scores = self._top_points_candidates(scores_l)
            selected.append((ltrb_l[point_idx], anchors_l.tensor[point_idx], cand_scores, class_idx))
        # Decoded and clipped once for all levels (the same numbers as level by level, in fewer
        # calls; Boxes.clip's finiteness check waits for the device).
        deltas, anchor_boxes, cand_scores, classes = (torch.cat(parts) for parts in zip(*selected))
        boxes = Boxes(self.box2box_transform.apply_deltas(deltas, anchor_boxes))
        boxes.clip(image_size)
        return Instances(image_size, pred_boxes=boxes, scores=cand_scores, pred_classes=classes)

    def select_detections(self, candidates: Instances) -> Instances:
        """
        The detections among ``candidates`` (``pred_boxes``, ``scores``, ``pred_classes``): the
        class-wise NMS (or Soft-NMS) of the model, then the ``max_detections_per_image`` best.
        """
        boxes, scores_all, classes = candidates.pred_boxes.tensor, candidates.scores, candidates.pred_classes
        if self.test_nms_type == "soft_nms":
            keep, scores_all_kept = batched_soft_nms(
                boxes,
                scores_all,
                classes,
                iou_threshold=self.test_nms_thresh,
                sigma=self.soft_nms_sigma,
                min_score=self.soft_nms_min_score,
                method=self.soft_nms_method,
            )
            keep = keep[: self.max_detections_per_image]
            scores_kept = scores_all_kept[: self.max_detections_per_image]
        else:
            keep = batched_nms(boxes, scores_all, classes, self.test_nms_thresh)[: self.max_detections_per_image]
            scores_kept = scores_all[keep]

        result = Instances(candidates.image_size)
        result.pred_boxes = Boxes(boxes[keep])
        result.scores = scores_kept
        result.pred_classes = classes[keep]
        return result

    def _top_points_candidates(self, scores: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """
        The "points" mode of the original VarifocalNet repository: the ``test_topk_candidates``
        (< P) points of best class score, then their (point, class) pairs above the score threshold.

        Args:
            scores: (P, C) scores of one level.
        Returns:
            (point index, class index, score) of the candidates.
        """
        point_order = scores.max(dim=1).values.topk(self.test_topk_candidates).indices
        point_idx, class_idx = (scores[point_order] > self.test_score_thresh).nonzero(as_tuple=True)
        point_idx = point_order[point_idx]
        return point_idx, class_idx, scores[point_idx, class_idx]
