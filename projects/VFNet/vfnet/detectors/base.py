"""
The base of the dense detectors trained with the Varifocal Loss (VFNet, ATSS, FoveaBox,
RepPoints): the options they share, how their yacs node sets them, and their two
classification losses (VFL on IoU targets, focal loss on hard labels).
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone, build_backbone
from detectron2.modeling.meta_arch.dense_detector import DenseDetector
from detectron2.structures import Boxes, Instances
from fvcore.nn import sigmoid_focal_loss
from torch import Tensor, nn

from ..compiling import apply_compile_mode
from ..layers import disable_fused_deformable_convs
from ..vfl import NORMALIZER_EPS, iou_aware_targets, varifocal_classification_loss

__all__ = ["VFLDenseDetector"]


class VFLDenseDetector(DenseDetector):
    """
    A :class:`DenseDetector` with the options every VFL detector has: the number of classes
    (which must be the head's), the Varifocal Loss or the focal loss for the classifier, the
    test-time selection and NMS, and the fused kernels. Subclasses take their own arguments in
    keyword-only ``@configurable`` constructors and pass these on as ``**kwargs`` (with their
    own defaults where the reference's differ).
    """

    def __init__(
        self,
        *,
        backbone: Backbone,
        head: nn.Module,
        head_in_features: Optional[List[str]] = None,
        num_classes: int,
        use_vfl: bool = True,
        vfl_alpha: float = 0.75,
        vfl_gamma: float = 2.0,
        vfl_iou_weighted: bool = True,
        focal_loss_alpha: float = 0.25,
        focal_loss_gamma: float = 2.0,
        test_score_thresh: float = 0.05,
        test_topk_candidates: int = 1000,
        test_nms_thresh: float = 0.6,
        max_detections_per_image: int = 100,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        input_format: str = "RGB",
        fused_ops: bool = True,
        compile_mode: Optional[str] = None,
    ):
        """
        Args:
            backbone, head, head_in_features, pixel_mean, pixel_std: as :class:`DenseDetector`;
                the head has a ``num_classes`` attribute.
            num_classes: number of foreground classes.
            use_vfl, vfl_alpha, vfl_gamma, vfl_iou_weighted: the Varifocal Loss on IoU targets
                (True) or the focal loss on hard labels (``focal_loss_alpha``, ``focal_loss_gamma``).
            test_score_thresh, test_topk_candidates, test_nms_thresh, max_detections_per_image:
                inference (per level: score threshold, then the top-k candidates; class-wise NMS).
            input_format: channel order of the input images.
            fused_ops: the fused kernels of ``vfnet._C``: the Varifocal Loss
                (:func:`vfnet.ops.fused_varifocal_loss`) and the deformable convs (RepPoints').
                False: the eager loss and torchvision's ``deform_conv2d`` everywhere.
            compile_mode: None (default) or a ``torch.compile`` mode ("default",
                "reduce-overhead", ...): compile the backbone and the head
                (:func:`vfnet.compiling.compile_backbone_and_head`).
        """
        super().__init__(backbone, head, head_in_features, pixel_mean=pixel_mean, pixel_std=pixel_std)
        if head.num_classes != num_classes:
            raise ValueError(f"{type(self).__name__}: head predicts {head.num_classes} classes but num_classes={num_classes}")
        self.num_classes = num_classes
        self.use_vfl = use_vfl
        self.vfl_alpha = vfl_alpha
        self.vfl_gamma = vfl_gamma
        self.vfl_iou_weighted = vfl_iou_weighted
        self.focal_loss_alpha = focal_loss_alpha
        self.focal_loss_gamma = focal_loss_gamma
        self.test_score_thresh = test_score_thresh
        self.test_topk_candidates = test_topk_candidates
        self.test_nms_thresh = test_nms_thresh
        self.max_detections_per_image = max_detections_per_image
        self.input_format = input_format
        self.fused_ops = fused_ops
        if not fused_ops:
            disable_fused_deformable_convs(self)
        self.compile_mode = apply_compile_mode(self, compile_mode)

    @staticmethod
    def backbone_and_feature_shapes(cfg, node_name: str) -> Tuple[Backbone, List[ShapeSpec]]:
        """The backbone of ``cfg`` and the shapes of the outputs ``cfg.MODEL.<node_name>.IN_FEATURES``
        names, in that order; a name the backbone does not output is an error."""
        in_features = cfg.MODEL[node_name].IN_FEATURES
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        missing = [f for f in in_features if f not in shapes]
        if missing:
            raise ValueError(
                f"MODEL.{node_name}.IN_FEATURES names {missing}, which the backbone does not output ({sorted(shapes)})"
            )
        return backbone, [shapes[f] for f in in_features]

    @staticmethod
    def shared_options_from_config(cfg, node) -> Dict[str, Any]:
        """The constructor arguments of :class:`VFLDenseDetector` but the backbone and head,
        from the detector's yacs node ``node`` (``cfg.MODEL.<name>``) and ``cfg``."""
        return {
            "head_in_features": list(node.IN_FEATURES),
            "num_classes": node.NUM_CLASSES,
            "use_vfl": node.USE_VFL,
            "vfl_alpha": node.VFL_ALPHA,
            "vfl_gamma": node.VFL_GAMMA,
            "vfl_iou_weighted": node.VFL_IOU_WEIGHTED,
            "focal_loss_alpha": node.FOCAL_LOSS_ALPHA,
            "focal_loss_gamma": node.FOCAL_LOSS_GAMMA,
            "test_score_thresh": node.SCORE_THRESH_TEST,
            "test_topk_candidates": node.TOPK_CANDIDATES_TEST,
            "test_nms_thresh": node.NMS_THRESH_TEST,
            "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "input_format": cfg.INPUT.FORMAT,
            "fused_ops": node.FUSED_OPS,
            "compile_mode": node.COMPILE,
        }

    def iou_aware_classification_loss(
        self,
        logits: Tensor,
        pos_rows: Tensor,
        pos_classes: Tensor,
        pos_pred_boxes: Tensor,
        pos_gt_boxes: Tensor,
        normalizer: float,
        *,
        weights: Optional[Tensor] = None,
        min_iou: Optional[float] = None,
    ) -> Tensor:
        """
        The Varifocal Loss of (R, C) ``logits`` whose targets are, at each positive's row and
        class, the IoU of its (K, 4) predicted box with its (K, 4) ground truth (clamped >=
        ``min_iou`` if given; see :func:`vfnet.vfl.iou_aware_targets`), 0 elsewhere; summed with
        the optional (R,) row ``weights``, over ``normalizer``. A 0-d float32 tensor.
        """
        targets = iou_aware_targets(logits, pos_rows, pos_classes, pos_pred_boxes, pos_gt_boxes, min_iou=min_iou)
        return varifocal_classification_loss(
            logits,
            targets,
            normalizer,
            weights=weights,
            alpha=self.vfl_alpha,
            gamma=self.vfl_gamma,
            iou_weighted=self.vfl_iou_weighted,
            fused=self.fused_ops,
        )

    def _select_pairs(
        self, pred_scores: Tensor, score_thresh: float, topk_candidates: int
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """
        Detectron2's candidates of one level, as indices: the (point, class) pairs of (P, C)
        ``pred_scores`` above ``score_thresh``, the ``topk_candidates`` best of them in descending
        order. Returns their (K,) point indices, class indices and scores. Detectron2 sorts every
        pair above the threshold to take the best (80 ms for a million pairs on one CPU thread);
        ``topk`` selects them (2 ms): the same pairs in the same order, unless scores tie. While
        tracing (export) the sort runs, as in Detectron2: ``topk`` would freeze its ``k``.
        """
        pairs = torch.nonzero(pred_scores > score_thresh)  # (K, 2): point, class
        # Gathered by the pairs rather than by the mask, which would wait for the device again.
        scores = pred_scores[pairs[:, 0], pairs[:, 1]]
        count = pairs.shape[0]
        if torch.jit.is_tracing():
            # The count is a tensor while tracing on recent torch: clamped, as Detectron2 does.
            num = torch.clamp(count, max=topk_candidates) if isinstance(count, Tensor) else min(count, topk_candidates)
            scores, order = scores.sort(descending=True)
            scores, order = scores[:num], order[:num]
        else:
            scores, order = scores.topk(min(topk_candidates, count))
        point_idx, class_idx = pairs[order].unbind(dim=1)
        return point_idx, class_idx, scores

    def _decode_per_level_predictions(
        self,
        anchors: Boxes,
        pred_scores: Tensor,
        pred_deltas: Tensor,
        score_thresh: float,
        topk_candidates: int,
        image_size: Tuple[int, int],
    ) -> Instances:
        """Detectron2's candidates of one level (:meth:`_select_pairs`), their (P, 4)
        ``pred_deltas`` decoded from ``anchors``."""
        point_idx, class_idx, scores = self._select_pairs(pred_scores, score_thresh, topk_candidates)
        boxes = self.box2box_transform.apply_deltas(pred_deltas[point_idx], anchors.tensor[point_idx])
        return Instances(image_size, pred_boxes=Boxes(boxes), scores=scores, pred_classes=class_idx)

    def hard_label_classification_loss(
        self,
        logits: Tensor,
        pos_rows: Tensor,
        pos_classes: Tensor,
        normalizer: float,
        *,
        weights: Optional[Tensor] = None,
    ) -> Tensor:
        """
        The sigmoid focal loss (``focal_loss_alpha``, ``focal_loss_gamma``) of (R, C) ``logits``
        whose targets are 1 at each positive's (K,) row and class, 0 elsewhere; summed with the
        optional (R,) float32 row ``weights``, over ``normalizer`` (+ eps). A 0-d float32 tensor.
        """
        one_hot = torch.zeros_like(logits, dtype=torch.float32)
        one_hot[pos_rows, pos_classes] = 1.0
        loss = sigmoid_focal_loss(
            logits.float(), one_hot, alpha=self.focal_loss_alpha, gamma=self.focal_loss_gamma, reduction="none"
        )
        if weights is not None:
            loss = loss * weights[:, None]
        return loss.sum() / (normalizer + NORMALIZER_EPS)
