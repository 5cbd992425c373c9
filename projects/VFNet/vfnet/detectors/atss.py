"""ATSS (Zhang et al., CVPR 2020) as MMDetection's ``ATSSHead`` computes it, with ``use_vfl``."""
from typing import Dict, List, Tuple

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, cat
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.events import get_event_storage
from fvcore.nn import giou_loss
from torch import Tensor, nn
from torch.nn import functional as F

from ..assigners import ATSSAssigner
from ..head_parts import conv_tower, init_dense_head, input_channels
from ..layers import Scale
from ..vfl import NORMALIZER_EPS
from .base import VFLDenseDetector
from .common import MMDetAnchorGenerator, MMDetBox2BoxTransform, classwise_nms, mean_over_workers, positives_per_image_normalizer, select_topk_candidates, batch_valid_flags

__all__ = ["ATSS", "ATSSHead", "atss_centerness"]


class ATSSHead(nn.Module):
    """
    The head of ATSS: a classification and a regression tower (convs + GroupNorm + ReLU); per
    anchor, class logits, box deltas (times a learnable per-level scale) and a centerness logit
    from the regression tower.
    """

    @configurable
    def __init__(
        self,
        *,
        input_shape: List[ShapeSpec],
        num_classes: int,
        num_anchors: int = 1,
        feat_channels: int = 256,
        stacked_convs: int = 4,
        norm: str = "GN",
        prior_prob: float = 0.01,
    ):
        super().__init__()
        in_channels = input_channels(input_shape, "ATSSHead")
        self.num_classes = num_classes
        self.cls_subnet = conv_tower(in_channels, feat_channels, stacked_convs, norm)
        self.bbox_subnet = conv_tower(in_channels, feat_channels, stacked_convs, norm)
        self.cls_score = nn.Conv2d(feat_channels, num_anchors * num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(feat_channels, num_anchors * 4, 3, padding=1)
        self.centerness = nn.Conv2d(feat_channels, num_anchors, 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in input_shape)
        init_dense_head(self, self.cls_score, prior_prob)

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]):
        a = cfg.MODEL.ATSS
        return {
            "input_shape": input_shape,
            "num_classes": a.NUM_CLASSES,
            "feat_channels": a.FEAT_CHANNELS,
            "stacked_convs": a.NUM_CONVS,
            "norm": a.NORM,
            "prior_prob": a.PRIOR_PROB,
        }

    def forward(self, features: List[Tensor]) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
        """
        Args:
            features: per level (N, C, H_l, W_l), finest first.
        Returns:
            logits (N, A*K, H_l, W_l), box deltas (N, A*4, H_l, W_l) in float32, centerness
            logits (N, A, H_l, W_l), per level.
        """
        if len(features) != len(self.scales):
            raise ValueError(f"ATSSHead: got {len(features)} feature levels, built for {len(self.scales)}")
        logits, deltas, centerness = [], [], []
        for level, x in enumerate(features):
            cls_feat, reg_feat = self.cls_subnet(x), self.bbox_subnet(x)
            logits.append(self.cls_score(cls_feat))
            deltas.append(self.scales[level](self.bbox_pred(reg_feat)).float())
            centerness.append(self.centerness(reg_feat))
        return logits, deltas, centerness


def atss_centerness(centers: Tensor, gt_boxes: Tensor) -> Tensor:
    """FCOS centerness of (K, 2) anchor centres in their (K, 4) XYXY ground truths:
    sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)) -> (K,)."""
    left = centers[:, 0] - gt_boxes[:, 0]
    top = centers[:, 1] - gt_boxes[:, 1]
    right = gt_boxes[:, 2] - centers[:, 0]
    bottom = gt_boxes[:, 3] - centers[:, 1]
    left_right = torch.stack([left, right], dim=1)
    top_bottom = torch.stack([top, bottom], dim=1)
    return torch.sqrt(
        (left_right.min(dim=-1)[0] / left_right.max(dim=-1)[0]) * (top_bottom.min(dim=-1)[0] / top_bottom.max(dim=-1)[0])
    )


@META_ARCH_REGISTRY.register()
class ATSS(VFLDenseDetector):
    """
    ATSS as MMDetection's ``ATSSHead`` trains and tests it: anchors assigned by
    :class:`~vfnet.assigners.ATSSAssigner`; focal loss on the valid anchors over the positives
    per image (at least 1 each, averaged over workers); GIoU loss of the decoded boxes weighted
    by their centerness targets over the sum of those (weight 2); centerness BCE over the
    positives; at test, the class score times the centerness ranks the boxes.

    ``use_vfl=True`` (the reference's ``ATSSVGFLHead``): the classifier learns, at each positive's
    class, the IoU of its decoded box with its ground truth (clamped >= 1e-6) with the Varifocal
    Loss, summed over every anchor (the reference gives it no weights) over the same normaliser;
    the centerness branch and its loss stay.

    Training returns ``{"loss_cls", "loss_bbox", "loss_centerness"}``.
    """

    @configurable
    def __init__(
        self,
        *,
        head: ATSSHead,
        anchor_generator: DefaultAnchorGenerator,
        box2box_transform: Box2BoxTransform,
        assigner: ATSSAssigner,
        loss_bbox_weight: float = 2.0,
        loss_centerness_weight: float = 1.0,
        **kwargs,
    ):
        """
        Args:
            head: the :class:`ATSSHead`.
            anchor_generator: the anchors (MMDetection's: one square of side 8 x stride per
                location, centred on (x * s, y * s)); their number per location must match the
                head's.
            box2box_transform: anchor deltas to boxes (weights (10, 10, 5, 5): the reference's
                target stds (0.1, 0.1, 0.2, 0.2)).
            assigner: :class:`~vfnet.assigners.ATSSAssigner`.
            loss_bbox_weight, loss_centerness_weight: loss weights.
            kwargs: :class:`VFLDenseDetector`'s arguments (backbone, head_in_features,
                num_classes, the VFL and focal loss options, inference (per level: score
                threshold then top-k (anchor, class) pairs; class-wise NMS), input normalisation).
        """
        super().__init__(head=head, **kwargs)
        if len(set(anchor_generator.num_cell_anchors)) != 1 or head.centerness.out_channels != anchor_generator.num_cell_anchors[0]:
            raise ValueError(
                f"ATSS: the head predicts {head.centerness.out_channels} anchors per location, the anchor "
                f"generator places {anchor_generator.num_cell_anchors}"
            )
        self.anchor_generator = anchor_generator
        self.box2box_transform = box2box_transform
        self.assigner = assigner
        self.loss_bbox_weight = loss_bbox_weight
        self.loss_centerness_weight = loss_centerness_weight

    @classmethod
    def from_config(cls, cfg):
        a = cfg.MODEL.ATSS
        backbone, feature_shapes = cls.backbone_and_feature_shapes(cfg, "ATSS")
        return {
            **cls.shared_options_from_config(cfg, a),
            "backbone": backbone,
            "head": ATSSHead(cfg, feature_shapes),
            "anchor_generator": MMDetAnchorGenerator(
                strides=[s.stride for s in feature_shapes], ratios=[1.0], octave_base_scale=a.ANCHOR_SCALE, scales_per_octave=1
            ),
            "box2box_transform": MMDetBox2BoxTransform(weights=a.BBOX_REG_WEIGHTS),
            "assigner": ATSSAssigner(topk=a.TOPK),
            "loss_bbox_weight": a.LOSS_BBOX_WEIGHT,
            "loss_centerness_weight": a.LOSS_CENTERNESS_WEIGHT,
        }

    # ------------------------------------------------------------------ training

    def forward_training(self, images: ImageList, features, predictions, gt_instances: List[Instances]):
        logits, deltas, centerness = self._transpose_dense_predictions(predictions, [self.num_classes, 4, 1])
        anchors = self.anchor_generator(features)
        valid = batch_valid_flags(features, images.image_sizes, self.anchor_generator, self.backbone.size_divisibility)
        gt_labels, gt_boxes = self.label_anchors(anchors, valid, gt_instances)
        return self.losses(anchors, valid, logits, deltas, centerness, gt_labels, gt_boxes)

    @torch.no_grad()
    def label_anchors(
        self, anchors: List[Boxes], valid: List[List[Tensor]], gt_instances: List[Instances]
    ) -> Tuple[List[Tensor], List[Tensor]]:
        """
        Returns:
            gt_labels: per image (R,) class of each anchor, ``num_classes`` for background.
            gt_boxes: per image (R, 4) XYXY ground truth of each anchor (zeros for background).
        """
        return self.assigner.label_images(anchors, valid, gt_instances, self.num_classes)

    def losses(
        self,
        anchors: List[Boxes],
        valid: List[List[Tensor]],
        logits: List[Tensor],
        deltas: List[Tensor],
        centerness: List[Tensor],
        gt_labels: List[Tensor],
        gt_boxes: List[Tensor],
    ) -> Dict[str, Tensor]:
        """
        Args:
            anchors: per level (R_l, 4) anchors.
            valid: per image, per level, (R_l,) validity.
            logits, deltas, centerness: per level (N, R_l, K), (N, R_l, 4), (N, R_l, 1).
            gt_labels, gt_boxes: per image, from :meth:`label_anchors`.
        """
        num_images = len(gt_labels)
        gt_labels = torch.stack(gt_labels)  # (N, R)
        gt_boxes = torch.stack(gt_boxes)  # (N, R, 4)
        anchors = Boxes.cat(anchors)
        centers = anchors.get_centers()
        anchors = anchors.tensor
        logits = cat(logits, dim=1)
        deltas = cat(deltas, dim=1)
        centerness = cat(centerness, dim=1)[..., 0]

        pos_mask = gt_labels != self.num_classes
        num_pos_per_image = pos_mask.sum(dim=1).tolist()
        get_event_storage().put_scalar("num_pos_anchors", sum(num_pos_per_image) / num_images)
        normalizer = positives_per_image_normalizer(num_pos_per_image)
        normalizer = max(mean_over_workers(torch.tensor(normalizer, device=logits.device)).item(), 1.0)

        pos_images, pos_anchors = pos_mask.nonzero(as_tuple=True)
        pos_boxes = self.box2box_transform.apply_deltas(deltas[pos_images, pos_anchors], anchors[pos_anchors])
        pos_targets = gt_boxes[pos_images, pos_anchors]
        centerness_targets = atss_centerness(centers[pos_anchors], pos_targets)

        # GIoU weighted by the centerness targets, over their sum (averaged over workers, >= 1)
        centerness_sum = max(mean_over_workers(centerness_targets.sum()).item(), 1.0)
        if len(pos_anchors) > 0:
            loss_bbox = (giou_loss(pos_boxes, pos_targets, reduction="none") * centerness_targets).sum()
            loss_bbox = loss_bbox / (1.0 + NORMALIZER_EPS) / centerness_sum
            loss_centerness = F.binary_cross_entropy_with_logits(
                centerness[pos_images, pos_anchors].float(), centerness_targets, reduction="sum"
            ) / (normalizer + NORMALIZER_EPS)
        else:
            loss_bbox = deltas.sum() * 0.0
            loss_centerness = centerness.sum() * 0.0

        flat_logits = logits.reshape(-1, self.num_classes)
        pos_rows = pos_images * anchors.shape[0] + pos_anchors
        pos_classes = gt_labels[pos_images, pos_anchors]
        if self.use_vfl:
            loss_cls = self.iou_aware_classification_loss(
                flat_logits, pos_rows, pos_classes, pos_boxes, pos_targets, normalizer, min_iou=1e-6
            )
        else:
            weights = torch.stack([cat(v) for v in valid]).to(torch.float32).reshape(-1)  # (N * R,)
            loss_cls = self.hard_label_classification_loss(flat_logits, pos_rows, pos_classes, normalizer, weights=weights)
        return {
            "loss_cls": loss_cls,
            "loss_bbox": self.loss_bbox_weight * loss_bbox,
            "loss_centerness": self.loss_centerness_weight * loss_centerness,
        }

    # ------------------------------------------------------------------ inference

    def forward_inference(self, images: ImageList, features: List[Tensor], predictions) -> List[Instances]:
        logits, deltas, centerness = self._transpose_dense_predictions(predictions, [self.num_classes, 4, 1])
        anchors = self.anchor_generator(features)
        results = []
        for img_idx, image_size in enumerate(images.image_sizes):
            all_boxes, all_scores, all_classes = [], [], []
            for anchors_l, logits_l, deltas_l, centerness_l in zip(anchors, logits, deltas, centerness):
                idx, classes, scores = select_topk_candidates(
                    logits_l[img_idx].sigmoid(), self.test_score_thresh, self.test_topk_candidates
                )
                boxes = Boxes(self.box2box_transform.apply_deltas(deltas_l[img_idx][idx], anchors_l.tensor[idx]))
                boxes.clip(image_size)
                all_boxes.append(boxes.tensor)
                all_scores.append(scores * centerness_l[img_idx][idx, 0].sigmoid())
                all_classes.append(classes)
            results.append(
                classwise_nms(
                    cat(all_boxes),
                    cat(all_scores),
                    cat(all_classes),
                    image_size,
                    self.test_nms_thresh,
                    self.max_detections_per_image,
                )
            )
        return results
