"""FoveaBox (Kong et al., TIP 2020) as MMDetection's ``FoveaHead`` computes it, with ``use_vfl``."""
from typing import Dict, List, Sequence, Tuple

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, cat
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.structures import ImageList, Instances
from detectron2.utils.events import get_event_storage
from fvcore.nn import smooth_l1_loss
from torch import Tensor, nn

from ..head_parts import conv_tower, init_dense_head, input_channels
from ..vfl import NORMALIZER_EPS
from .assigners import FoveaAssigner
from .base import VFLDenseDetector
from .common import classwise_nms, select_topk_candidates

__all__ = ["FoveaBox", "FoveaHead", "fovea_decode"]


class FoveaHead(nn.Module):
    """FoveaBox's head (``with_deform=False``): a classification and a regression tower of 3x3
    convs + ReLU (with bias, no norm by default), then class logits and 4 log-distances."""

    @configurable
    def __init__(
        self,
        *,
        input_shape: List[ShapeSpec],
        num_classes: int,
        feat_channels: int = 256,
        stacked_convs: int = 4,
        norm: str = "",
        prior_prob: float = 0.01,
    ):
        super().__init__()
        in_channels = input_channels(input_shape, "FoveaHead")
        self.num_classes = num_classes
        self.cls_subnet = conv_tower(in_channels, feat_channels, stacked_convs, norm)
        self.bbox_subnet = conv_tower(in_channels, feat_channels, stacked_convs, norm)
        self.cls_score = nn.Conv2d(feat_channels, num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(feat_channels, 4, 3, padding=1)
        init_dense_head(self, self.cls_score, prior_prob)

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]):
        f = cfg.MODEL.FOVEA
        return {
            "input_shape": input_shape,
            "num_classes": f.NUM_CLASSES,
            "feat_channels": f.FEAT_CHANNELS,
            "stacked_convs": f.NUM_CONVS,
            "norm": f.NORM,
            "prior_prob": f.PRIOR_PROB,
        }

    def forward(self, features: List[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        """
        Returns:
            per level, logits (N, K, H_l, W_l) and box log-distances (N, 4, H_l, W_l): the box
            of location (x, y) is x - e^l * b, y - e^t * b, x + e^r * b, y + e^b * b for the
            level's base edge b.
        """
        logits, boxes = [], []
        for x in features:
            logits.append(self.cls_score(self.cls_subnet(x)))
            boxes.append(self.bbox_pred(self.bbox_subnet(x)))
        return logits, boxes


def fovea_decode(points: Tensor, log_distances: Tensor, base_edge, max_shape: Tuple[int, int]) -> Tensor:
    """
    FoveaBox's boxes: (K, 2) points and (K, 4) predicted log-distances in units of ``base_edge``
    (a number, or (K,) per point) -> (K, 4) XYXY, each coordinate clamped to [0, width - 1] /
    [0, height - 1] of ``max_shape`` (height, width), as MMDetection's ``FoveaHead`` does.
    """
    if torch.is_tensor(base_edge):
        base_edge = base_edge[:, None]
    d = log_distances.exp() * base_edge
    x, y = points[:, 0], points[:, 1]
    height, width = max_shape
    return torch.stack(
        [
            (x - d[:, 0]).clamp(min=0, max=width - 1),
            (y - d[:, 1]).clamp(min=0, max=height - 1),
            (x + d[:, 2]).clamp(min=0, max=width - 1),
            (y + d[:, 3]).clamp(min=0, max=height - 1),
        ],
        dim=-1,
    )


@META_ARCH_REGISTRY.register()
class FoveaBox(VFLDenseDetector):
    """
    FoveaBox as MMDetection's ``FoveaHead`` trains and tests it: a ground truth is learnt on the
    levels whose scale range holds its scale, at the cells of its fovea (:class:`FoveaAssigner`);
    focal loss (alpha 0.4, gamma 1.5) over every location of the batch over (positives + images);
    smooth-L1 (beta 0.11) of the log-distances (each distance / the level's base edge, clamped to
    [1/16, 16]) over the positives.

    ``use_vfl=True`` (the reference's ``FoveaHead(use_vfl=True)``): the classifier learns, at each
    positive's class, the IoU of its decoded box with its ground truth (clamped >= 1e-6) with the
    Varifocal Loss over the same locations and normaliser. As in the reference, the boxes it
    decodes for these targets are clamped to the *first* image's size.

    Training returns ``{"loss_cls", "loss_bbox"}``.
    """

    @configurable
    def __init__(
        self,
        *,
        point_generator: DefaultAnchorGenerator,
        assigner: FoveaAssigner,
        base_edges: Sequence[float] = (16, 32, 64, 128, 256),
        focal_loss_alpha: float = 0.4,
        focal_loss_gamma: float = 1.5,
        smooth_l1_beta: float = 0.11,
        loss_bbox_weight: float = 1.0,
        test_nms_thresh: float = 0.5,
        **kwargs,
    ):
        """
        Args:
            point_generator: one anchor per location whose centres are the points, at the cell
                centres ((x + 0.5) * s, (y + 0.5) * s): ``DefaultAnchorGenerator(sizes=[[s]],
                aspect_ratios=[1.0], strides, offset=0.5)``.
            assigner: :class:`FoveaAssigner` (its scale ranges, one per level).
            base_edges: per level, the edge the predicted distances are in units of.
            focal_loss_alpha, focal_loss_gamma: the focal loss of ``use_vfl=False``.
            smooth_l1_beta, loss_bbox_weight: the box loss.
            test_nms_thresh: IoU threshold of the class-wise NMS.
            kwargs: :class:`VFLDenseDetector`'s other arguments (backbone, the :class:`FoveaHead`,
                head_in_features, num_classes, the VFL options, inference, input normalisation).
        """
        super().__init__(
            focal_loss_alpha=focal_loss_alpha, focal_loss_gamma=focal_loss_gamma, test_nms_thresh=test_nms_thresh, **kwargs
        )
        num_levels = len(point_generator.strides)
        if not (len(base_edges) == len(assigner.scale_ranges) == num_levels):
            raise ValueError(
                f"FoveaBox: {num_levels} levels, {len(base_edges)} base edges, {len(assigner.scale_ranges)} scale ranges"
            )
        if point_generator.num_cell_anchors != [1] * num_levels:
            raise ValueError("FoveaBox: the point generator must place one point per location")
        self.point_generator = point_generator
        self.assigner = assigner
        self.base_edges = [float(b) for b in base_edges]
        self.smooth_l1_beta = smooth_l1_beta
        self.loss_bbox_weight = loss_bbox_weight

    @classmethod
    def from_config(cls, cfg):
        f = cfg.MODEL.FOVEA
        backbone, feature_shapes = cls.backbone_and_feature_shapes(cfg, "FOVEA")
        strides = [s.stride for s in feature_shapes]
        return {
            **cls.shared_options_from_config(cfg, f),
            "backbone": backbone,
            "head": FoveaHead(cfg, feature_shapes),
            "point_generator": DefaultAnchorGenerator(sizes=[[s] for s in strides], aspect_ratios=[1.0], strides=strides, offset=0.5),
            "assigner": FoveaAssigner(scale_ranges=[tuple(r) for r in f.SCALE_RANGES], sigma=f.SIGMA),
            "base_edges": list(f.BASE_EDGES),
            "smooth_l1_beta": f.SMOOTH_L1_BETA,
            "loss_bbox_weight": f.LOSS_BBOX_WEIGHT,
        }

    def _points(self, features: List[Tensor]) -> List[Tensor]:
        return [anchors.get_centers() for anchors in self.point_generator(features)]

    # ------------------------------------------------------------------ training

    def forward_training(self, images: ImageList, features, predictions, gt_instances: List[Instances]):
        logits, log_distances = self._transpose_dense_predictions(predictions, [self.num_classes, 4])
        points = self._points(features)
        feature_sizes = [tuple(f.shape[-2:]) for f in features]
        matched = [self.assigner(feature_sizes, self.point_generator.strides, inst.gt_boxes.tensor) for inst in gt_instances]
        return self.losses(points, logits, log_distances, matched, gt_instances, images.image_sizes)

    def losses(
        self,
        points: List[Tensor],
        logits: List[Tensor],
        log_distances: List[Tensor],
        matched: List[Tensor],
        gt_instances: List[Instances],
        image_sizes: List[Tuple[int, int]],
    ) -> Dict[str, Tensor]:
        """
        Args:
            points: per level (P_l, 2).
            logits, log_distances: per level (N, P_l, K), (N, P_l, 4).
            matched: per image (P,) index of the assigned ground truth, -1 for none.
            gt_instances: the ground truth.
            image_sizes: (height, width) per image; the first one clamps the boxes of the VFL
                targets, as in the reference.
        """
        num_images = len(matched)
        level_sizes = [len(p) for p in points]
        base_edges = torch.cat([points[0].new_full((n,), b) for n, b in zip(level_sizes, self.base_edges)])
        points = cat(points)
        logits = cat(logits, dim=1)  # (N, P, K)
        log_distances = cat(log_distances, dim=1).float()

        labels = torch.full((num_images, len(points)), self.num_classes, dtype=torch.long, device=logits.device)
        gt_boxes = torch.zeros((num_images, len(points), 4), device=logits.device)
        for i, (m, inst) in enumerate(zip(matched, gt_instances)):
            fg = m >= 0
            labels[i, fg] = inst.gt_classes[m[fg]]
            gt_boxes[i, fg] = inst.gt_boxes.tensor[m[fg]]
        pos_images, pos_points = (labels != self.num_classes).nonzero(as_tuple=True)
        num_pos = len(pos_points)
        get_event_storage().put_scalar("num_pos_points", num_pos / num_images)
        cls_normalizer = num_pos + num_images

        pos_xy = points[pos_points]
        pos_gt = gt_boxes[pos_images, pos_points]
        pos_base = base_edges[pos_points][:, None]
        target_distances = torch.stack(
            [pos_xy[:, 0] - pos_gt[:, 0], pos_xy[:, 1] - pos_gt[:, 1], pos_gt[:, 2] - pos_xy[:, 0], pos_gt[:, 3] - pos_xy[:, 1]],
            dim=1,
        )
        targets = torch.log((target_distances / pos_base).clamp(min=1.0 / 16, max=16.0))
        pred = log_distances[pos_images, pos_points]
        if num_pos > 0:
            loss_bbox = smooth_l1_loss(pred, targets, beta=self.smooth_l1_beta, reduction="sum") / (num_pos + NORMALIZER_EPS)
        else:
            loss_bbox = log_distances.sum() * 0.0

        flat_logits = logits.reshape(-1, self.num_classes)
        pos_rows = pos_images * len(points) + pos_points
        pos_classes = labels[pos_images, pos_points]
        if self.use_vfl:
            pred_boxes = fovea_decode(pos_xy, pred.detach(), pos_base[:, 0], image_sizes[0])
            loss_cls = self.iou_aware_classification_loss(
                flat_logits, pos_rows, pos_classes, pred_boxes, pos_gt, cls_normalizer, min_iou=1e-6
            )
        else:
            loss_cls = self.hard_label_classification_loss(flat_logits, pos_rows, pos_classes, cls_normalizer)
        return {"loss_cls": loss_cls, "loss_bbox": self.loss_bbox_weight * loss_bbox}

    # ------------------------------------------------------------------ inference

    def forward_inference(self, images: ImageList, features: List[Tensor], predictions) -> List[Instances]:
        logits, log_distances = self._transpose_dense_predictions(predictions, [self.num_classes, 4])
        points = self._points(features)
        results = []
        for img_idx, image_size in enumerate(images.image_sizes):
            all_boxes, all_scores, all_classes = [], [], []
            for points_l, logits_l, dist_l, base_edge in zip(points, logits, log_distances, self.base_edges):
                idx, classes, scores = select_topk_candidates(
                    logits_l[img_idx].sigmoid(), self.test_score_thresh, self.test_topk_candidates
                )
                all_boxes.append(fovea_decode(points_l[idx], dist_l[img_idx][idx].float(), base_edge, image_size))
                all_scores.append(scores)
                all_classes.append(classes)
            results.append(
                classwise_nms(
                    cat(all_boxes), cat(all_scores), cat(all_classes), image_size, self.test_nms_thresh, self.max_detections_per_image
                )
            )
        return results
