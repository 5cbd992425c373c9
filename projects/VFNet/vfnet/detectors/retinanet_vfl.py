"""RetinaNet with the Varifocal Loss: Detectron2's own RetinaNet, with ``use_vfl``."""
from typing import Dict, List, Optional, Tuple

import torch
from detectron2.config import configurable
from detectron2.layers import batched_nms, cat
from detectron2.modeling import META_ARCH_REGISTRY, RetinaNet
from detectron2.structures import Boxes, ImageList, Instances, pairwise_iou
from detectron2.utils.events import get_event_storage
from fvcore.nn import giou_loss, sigmoid_focal_loss_jit, smooth_l1_loss
from torch import Tensor
from torch.nn import functional as F

from ..compiling import apply_compile_mode
from ..vfl import NORMALIZER_EPS, iou_aware_targets, varifocal_classification_loss
from .assigners import MaxIoUMatcher
from .common import MMDetBox2BoxTransform, positives_per_image_normalizer, batch_valid_flags

__all__ = ["RetinaNetVFL"]

_NORMALIZERS = ("ema", "positives_per_image")


@META_ARCH_REGISTRY.register()
class RetinaNetVFL(RetinaNet):
    """
    Detectron2's :class:`~detectron2.modeling.RetinaNet` whose classifier can learn IoU-aware
    scores with the Varifocal Loss (``use_vfl=True``), as the reference repository's RetinaNet:
    the target of a positive anchor is, at its class, the IoU of its box decoded from its predicted
    deltas with its ground truth (not clamped), 0 elsewhere; negatives and positives count as
    for the focal loss (ignored anchors do not), over the same normaliser.

    Without the four options below it is Detectron2's RetinaNet (its recipe: EMA normaliser,
    Detectron2's ``Matcher``, every anchor of the padded batch). The reference's recipe, which its
    checkpoints were trained with, is ``loss_normalizer="positives_per_image"``,
    ``ignore_padding=True``, an :class:`~vfnet.detectors.MaxIoUMatcher` as ``anchor_matcher``
    and L1 box regression (``smooth_l1_beta=0``); the configs under ``configs/VFL-Detectors``
    set them. Either way the boxes are clipped to the image before NMS, as MMDetection does; the
    yacs config builds an :class:`~vfnet.detectors.MMDetBox2BoxTransform` (box deltas clamped as
    MMDetection clamps them).
    """

    @configurable
    def __init__(
        self,
        *,
        use_vfl: bool = True,
        vfl_alpha: float = 0.75,
        vfl_gamma: float = 2.0,
        vfl_iou_weighted: bool = True,
        loss_normalizer: str = "ema",
        ignore_padding: bool = False,
        fused_ops: bool = True,
        compile_mode: Optional[str] = None,
        **kwargs,
    ):
        """
        Args:
            use_vfl: Varifocal Loss on IoU targets (True) or the focal loss on hard labels.
            vfl_alpha, vfl_gamma, vfl_iou_weighted: Varifocal Loss parameters.
            loss_normalizer: "ema" (Detectron2: a running average of the number of positives) or
                "positives_per_image" (MMDetection: each image's positives, at least 1, summed).
            ignore_padding: anchors of a location outside an image's own padded area (in a batch
                of different sizes) take no part in the losses (MMDetection's valid flags).
            fused_ops: the fused Varifocal Loss kernel (:func:`vfnet.ops.fused_varifocal_loss`).
            compile_mode: None (default) or a ``torch.compile`` mode: compile the backbone and the
                head (:func:`vfnet.compiling.compile_backbone_and_head`).
            kwargs: :class:`~detectron2.modeling.RetinaNet`'s arguments.
        """
        super().__init__(**kwargs)
        if loss_normalizer not in _NORMALIZERS:
            raise ValueError(f"RetinaNetVFL: loss_normalizer must be one of {_NORMALIZERS}, got {loss_normalizer!r}")
        self.use_vfl = use_vfl
        self.vfl_alpha = vfl_alpha
        self.vfl_gamma = vfl_gamma
        self.vfl_iou_weighted = vfl_iou_weighted
        self.loss_normalizer = loss_normalizer
        self.ignore_padding = ignore_padding
        self.fused_ops = fused_ops
        self.compile_mode = apply_compile_mode(self, compile_mode)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        r = cfg.MODEL.RETINANET
        ret["box2box_transform"] = MMDetBox2BoxTransform(weights=r.BBOX_REG_WEIGHTS)
        if r.MATCHER == "mmdet":
            low, high = r.IOU_THRESHOLDS
            ret["anchor_matcher"] = MaxIoUMatcher(pos_iou_thr=high, neg_iou_thr=low, min_pos_iou=0.0)
        elif r.MATCHER != "detectron2":
            raise ValueError(f"MODEL.RETINANET.MATCHER must be 'detectron2' or 'mmdet', got {r.MATCHER!r}")
        ret.update(
            use_vfl=r.USE_VFL,
            vfl_alpha=r.VFL_ALPHA,
            vfl_gamma=r.VFL_GAMMA,
            vfl_iou_weighted=r.VFL_IOU_WEIGHTED,
            loss_normalizer=r.LOSS_NORMALIZER,
            ignore_padding=r.IGNORE_PADDING,
            fused_ops=r.FUSED_OPS,
            compile_mode=r.COMPILE,
        )
        return ret

    # ------------------------------------------------------------------ training

    def forward_training(self, images: ImageList, features, predictions, gt_instances):
        pred_logits, pred_anchor_deltas = self._transpose_dense_predictions(predictions, [self.num_classes, 4])
        anchors = self.anchor_generator(features)
        valid = None
        if self.ignore_padding:
            valid = batch_valid_flags(features, images.image_sizes, self.anchor_generator, self.backbone.size_divisibility)
            valid = [torch.cat(v) for v in valid]
        gt_labels, gt_boxes = self.label_anchors(anchors, gt_instances, valid)
        return self.losses(anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes)

    @torch.no_grad()
    def label_anchors(
        self, anchors: List[Boxes], gt_instances: List[Instances], valid: Optional[List[Tensor]] = None
    ) -> Tuple[List[Tensor], List[Tensor]]:
        """
        As :meth:`RetinaNet.label_anchors`; with ``valid`` (per image, (R,) bool), only the valid
        anchors are matched (the matcher's per-ground-truth best IoU is taken over them) and the
        others are labelled -1 (ignored).
        """
        if valid is None:
            return super().label_anchors(anchors, gt_instances)
        anchors = Boxes.cat(anchors)
        gt_labels, matched_gt_boxes = [], []
        for valid_i, gt_i in zip(valid, gt_instances):
            labels_i = torch.full((len(anchors),), -1, dtype=torch.long, device=anchors.device)
            boxes_i = torch.zeros_like(anchors.tensor)
            valid_idx = valid_i.nonzero().squeeze(1)
            matches, match_labels = self.anchor_matcher(pairwise_iou(gt_i.gt_boxes, anchors[valid_idx]))
            if len(gt_i) > 0:
                labels_v = gt_i.gt_classes[matches]
                boxes_i[valid_idx] = gt_i.gt_boxes.tensor[matches]
            else:
                labels_v = torch.zeros_like(matches)
            labels_v[match_labels == 0] = self.num_classes
            labels_v[match_labels == -1] = -1
            labels_i[valid_idx] = labels_v
            gt_labels.append(labels_i)
            matched_gt_boxes.append(boxes_i)
        return gt_labels, matched_gt_boxes

    def losses(self, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes) -> Dict[str, Tensor]:
        """
        Args and keys as :meth:`RetinaNet.losses` ("loss_cls", "loss_box_reg").
        """
        num_images = len(gt_labels)
        gt_labels = torch.stack(gt_labels)  # (N, R)
        gt_boxes = torch.stack(gt_boxes)  # (N, R, 4)
        anchors = Boxes.cat(anchors).tensor  # (R, 4)
        logits = cat(pred_logits, dim=1)  # (N, R, C)
        deltas = cat(pred_anchor_deltas, dim=1)  # (N, R, 4)

        valid_mask = gt_labels >= 0
        pos_mask = valid_mask & (gt_labels != self.num_classes)
        num_pos_per_image = pos_mask.sum(dim=1).tolist()
        num_pos = sum(num_pos_per_image)
        get_event_storage().put_scalar("num_pos_anchors", num_pos / num_images)
        if self.loss_normalizer == "ema":
            normalizer = self._ema_update("loss_normalizer", max(num_pos, 1), 100)
        else:
            normalizer = positives_per_image_normalizer(num_pos_per_image)

        pos_images, pos_anchors = pos_mask.nonzero(as_tuple=True)
        pos_deltas = deltas[pos_images, pos_anchors].float()
        pos_gt_boxes = gt_boxes[pos_images, pos_anchors]

        if self.use_vfl:
            num_anchors = anchors.shape[0]
            flat_logits = logits.reshape(-1, self.num_classes)
            pos_pred_boxes = self.box2box_transform.apply_deltas(pos_deltas.detach(), anchors[pos_anchors])
            targets = iou_aware_targets(
                flat_logits,
                pos_images * num_anchors + pos_anchors,
                gt_labels[pos_images, pos_anchors],
                pos_pred_boxes,
                pos_gt_boxes,
            )
            valid_rows = valid_mask.reshape(-1)
            loss_cls = varifocal_classification_loss(
                flat_logits[valid_rows],
                targets[valid_rows],
                normalizer,
                alpha=self.vfl_alpha,
                gamma=self.vfl_gamma,
                iou_weighted=self.vfl_iou_weighted,
                fused=self.fused_ops,
            )
        else:
            one_hot = F.one_hot(gt_labels[valid_mask], num_classes=self.num_classes + 1)[:, :-1]
            loss_cls = sigmoid_focal_loss_jit(
                logits[valid_mask].float(),
                one_hot.float(),
                alpha=self.focal_loss_alpha,
                gamma=self.focal_loss_gamma,
                reduction="sum",
            ) / (normalizer + NORMALIZER_EPS)

        if self.box_reg_loss_type == "smooth_l1":
            gt_deltas = self.box2box_transform.get_deltas(anchors[pos_anchors], pos_gt_boxes)
            loss_box_reg = smooth_l1_loss(pos_deltas, gt_deltas, beta=self.smooth_l1_beta, reduction="sum")
        elif self.box_reg_loss_type == "giou":
            pos_pred_boxes = self.box2box_transform.apply_deltas(pos_deltas, anchors[pos_anchors])
            loss_box_reg = giou_loss(pos_pred_boxes, pos_gt_boxes, reduction="sum")
        else:
            raise ValueError(f"RetinaNetVFL: box_reg_loss_type {self.box_reg_loss_type!r} is not supported")
        if pos_deltas.numel() == 0:
            loss_box_reg = deltas.sum() * 0.0  # keep the graph connected without positives
        return {
            "loss_cls": loss_cls,
            "loss_box_reg": loss_box_reg / (normalizer + NORMALIZER_EPS),
        }

    # ------------------------------------------------------------------ inference

    def inference_single_image(
        self,
        anchors: List[Boxes],
        box_cls: List[Tensor],
        box_delta: List[Tensor],
        image_size: Tuple[int, int],
    ) -> Instances:
        """As :meth:`RetinaNet.inference_single_image`, with the boxes clipped to the image before
        NMS (MMDetection's order)."""
        pred = self._decode_multi_level_predictions(
            anchors, box_cls, box_delta, self.test_score_thresh, self.test_topk_candidates, image_size
        )
        pred.pred_boxes.clip(image_size)
        keep = batched_nms(pred.pred_boxes.tensor, pred.scores, pred.pred_classes, self.test_nms_thresh)
        return pred[keep[: self.max_detections_per_image]]
