"""
Pieces the four dense detectors share: the extra FPN levels of MMDetection's necks, which
locations take part in training (MMDetection's valid flags), MMDetection's normaliser, worker
averages, and the test-time selection and NMS that MMDetection >= 2.18 applies.
"""
import math
from typing import List, Sequence, Tuple

import torch
import torch.distributed as dist
from detectron2.config import configurable
from detectron2.layers import Conv2d, batched_nms, get_norm
from detectron2.modeling.anchor_generator import ANCHOR_GENERATOR_REGISTRY, BufferList, DefaultAnchorGenerator
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.structures import Boxes, Instances
from detectron2.utils import comm
from fvcore.nn import weight_init
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "MMDetAnchorGenerator",
    "MMDetBox2BoxTransform",
    "ExtraLevels",
    "valid_flags",
    "batch_valid_flags",
    "mean_over_workers",
    "means_over_workers",
    "positives_per_image_normalizer",
    "select_topk_candidates",
    "classwise_nms",
]


@ANCHOR_GENERATOR_REGISTRY.register()
class MMDetAnchorGenerator(DefaultAnchorGenerator):
    """
    The anchors of MMDetection's ``AnchorGenerator``: on a level of stride s, for each ratio r
    (height / width) and scale k of ``octave_base_scale * 2**(i / scales_per_octave)``, a box of
    width s * k / sqrt(r) and height s * k * sqrt(r) centred on (x + center_offset * s, y +
    center_offset * s) for x, y on the grid of step s from 0.

    These are the boxes of ``DefaultAnchorGenerator(sizes=[[s * k for k]], aspect_ratios=r,
    offset=center_offset)``, but computed with MMDetection's float32 arithmetic (so that they are
    bit for bit the same and assignments tie as they do there) and in MMDetection's order of the
    anchors of a location (ratio-major: ratio index * number of scales + scale index), so that
    the per-anchor channels of a converted MMDetection head line up with them.

    yacs: ``MODEL.ANCHOR_GENERATOR.NAME: "MMDetAnchorGenerator"`` with ``ASPECT_RATIOS[0]`` as the
    ratios and ``OCTAVE_BASE_SCALE``, ``SCALES_PER_OCTAVE``, ``CENTER_OFFSET``.
    """

    @configurable
    def __init__(
        self,
        *,
        strides: Sequence[int],
        ratios: Sequence[float] = (0.5, 1.0, 2.0),
        octave_base_scale: float = 4,
        scales_per_octave: int = 3,
        center_offset: float = 0.0,
    ):
        # read by _calculate_anchors, which DefaultAnchorGenerator.__init__ calls
        self.ratios = [float(r) for r in ratios]
        self.scales = [octave_base_scale * 2 ** (i / scales_per_octave) for i in range(scales_per_octave)]
        self.center_offset = float(center_offset)
        sizes = [[s * k for k in self.scales] for s in strides]
        super().__init__(sizes=sizes, aspect_ratios=[self.ratios] * len(strides), strides=list(strides), offset=0.0)

    @classmethod
    def from_config(cls, cfg, input_shape):
        g = cfg.MODEL.ANCHOR_GENERATOR
        return {
            "strides": [s.stride for s in input_shape],
            "ratios": g.ASPECT_RATIOS[0],
            "octave_base_scale": g.OCTAVE_BASE_SCALE,
            "scales_per_octave": g.SCALES_PER_OCTAVE,
            "center_offset": g.CENTER_OFFSET,
        }

    def _calculate_anchors(self, sizes, aspect_ratios):
        return BufferList([self.mmdet_cell_anchors(stride) for stride in self.strides])

    def mmdet_cell_anchors(self, stride: int) -> Tensor:
        """(len(ratios) * len(scales), 4) XYXY anchors of one location at the origin."""
        ratios = torch.tensor(self.ratios, dtype=torch.float32)
        scales = torch.tensor(self.scales, dtype=torch.float32)
        h_ratios = torch.sqrt(ratios)
        w_ratios = 1 / h_ratios
        ws = (stride * w_ratios[:, None] * scales[None, :]).view(-1)
        hs = (stride * h_ratios[:, None] * scales[None, :]).view(-1)
        center = self.center_offset * stride
        return torch.stack([center - 0.5 * ws, center - 0.5 * hs, center + 0.5 * ws, center + 0.5 * hs], dim=-1)


class MMDetBox2BoxTransform(Box2BoxTransform):
    """
    Detectron2's :class:`Box2BoxTransform` (deltas divided by ``weights``, i.e. MMDetection's
    ``target_stds`` = 1 / weights) whose log-scale deltas dw, dh are clamped from below as well
    as from above, to [-scale_clamp, scale_clamp], as MMDetection's ``delta2bbox`` does
    (Detectron2 clamps only from above, so that a box shrunk more than 62x comes out smaller).
    """

    def apply_deltas(self, deltas: Tensor, boxes: Tensor) -> Tensor:
        _, _, ww, wh = self.weights
        dw = deltas[:, 2::4].clamp(min=-self.scale_clamp * ww)
        dh = deltas[:, 3::4].clamp(min=-self.scale_clamp * wh)
        deltas = torch.stack([deltas[:, 0::4], deltas[:, 1::4], dw, dh], dim=2).reshape(deltas.shape)
        return super().apply_deltas(deltas, boxes)


class ExtraLevels(nn.Module):
    """
    The two extra pyramid levels P6, P7 of an FPN, as a Detectron2 FPN ``top_block``:
    P6 = 3x3/2 conv on ``in_feature``, P7 = 3x3/2 conv on P6 (on ReLU(P6) with ``relu_before_p7``).

    MMDetection's RetinaNet, FoveaBox and RepPoints take P6 from C5 (``in_feature="res5"``,
    ``add_extra_convs='on_input'``) without the ReLU; Detectron2's ``LastLevelP6P7`` always has
    it. ``norm="GN"`` gives both convs a GroupNorm (and no bias), as RepPoints' GN neck.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        in_feature: str = "res5",
        relu_before_p7: bool = False,
        norm: str = "",
    ):
        super().__init__()
        self.num_levels = 2
        self.in_feature = in_feature
        self.relu_before_p7 = relu_before_p7
        self.p6 = Conv2d(
            in_channels, out_channels, 3, stride=2, padding=1, bias=not norm, norm=get_norm(norm, out_channels)
        )
        self.p7 = Conv2d(
            out_channels, out_channels, 3, stride=2, padding=1, bias=not norm, norm=get_norm(norm, out_channels)
        )
        for conv in (self.p6, self.p7):
            weight_init.c2_xavier_fill(conv)

    def forward(self, x: Tensor) -> List[Tensor]:
        p6 = self.p6(x)
        p7 = self.p7(F.relu(p6) if self.relu_before_p7 else p6)
        return [p6, p7]


def valid_flags(
    feature_sizes: Sequence[Tuple[int, int]],
    strides: Sequence[int],
    image_sizes: Sequence[Tuple[int, int]],
    size_divisibility: int,
    num_anchors: int = 1,
    device=None,
) -> List[List[Tensor]]:
    """
    MMDetection's valid flags: which locations lie inside each image's own padded area (its size
    rounded up to ``size_divisibility``), not the padded batch's.

    Args:
        feature_sizes: (H_l, W_l) of each level.
        strides: stride of each level in pixels.
        image_sizes: (height, width) of each image before padding.
        size_divisibility: what the images are padded to a multiple of (the backbone's).
        num_anchors: anchors per location (the flags repeat for each, anchor index fastest).
    Returns:
        per image, per level, a bool tensor (H_l * W_l * num_anchors,) in Detectron2's (y, x,
        anchor) order.
    """
    divisor = max(int(size_divisibility), 1)
    flags = []
    for height, width in image_sizes:
        pad_h = int(math.ceil(height / divisor)) * divisor
        pad_w = int(math.ceil(width / divisor)) * divisor
        per_level = []
        for (h, w), stride in zip(feature_sizes, strides):
            # A rectangle of rows and columns: filled by slicing (a few ops, each a kernel on a GPU).
            cells = torch.zeros((h, w), dtype=torch.bool, device=device)
            cells[: math.ceil(pad_h / stride), : math.ceil(pad_w / stride)] = True
            cells = cells.reshape(-1)
            per_level.append(cells if num_anchors == 1 else cells.repeat_interleave(num_anchors))
        flags.append(per_level)
    return flags


def batch_valid_flags(features: Sequence[Tensor], image_sizes: Sequence[Tuple[int, int]], anchor_generator, size_divisibility: int) -> List[List[Tensor]]:
    """
    :func:`valid_flags` of a batch: the levels' sizes from the (N, C, H_l, W_l) ``features``, the
    strides and anchors per location (the same on every level) from ``anchor_generator``.

    Returns:
        per image, per level, a bool tensor (H_l * W_l * anchors per location,).
    """
    return valid_flags(
        [f.shape[-2:] for f in features],
        anchor_generator.strides,
        image_sizes,
        size_divisibility,
        num_anchors=anchor_generator.num_cell_anchors[0],
        device=features[0].device,
    )


def mean_over_workers(value: Tensor) -> Tensor:
    """Average a tensor over all workers; called on every rank, whatever its data."""
    if comm.get_world_size() > 1:
        value = value.clone()
        dist.all_reduce(value)
        value = value / comm.get_world_size()
    return value


def means_over_workers(values: Sequence[Tensor]) -> List[float]:
    """The means over all workers of scalar tensors (float32), in one all-reduce and one wait for
    the device; called on every rank, whatever its data."""
    return mean_over_workers(torch.stack([v.float() for v in values])).tolist()


def positives_per_image_normalizer(num_pos_per_image: Sequence[int]) -> float:
    """MMDetection's ``num_total_pos`` of anchor heads: the positives of each image, counted as
    at least 1, summed over the images of this worker."""
    return float(sum(max(int(n), 1) for n in num_pos_per_image))


def select_topk_candidates(scores: Tensor, score_thresh: float, topk: int) -> Tuple[Tensor, Tensor, Tensor]:
    """
    The test-time candidates of one level, as MMDetection >= 2.18 (``filter_scores_and_topk``)
    and Detectron2's ``DenseDetector`` pick them: the (location, class) pairs scoring above
    ``score_thresh``, then the ``topk`` best of those (all if ``topk`` <= 0).

    Args:
        scores: (P, C) scores in [0, 1].
    Returns:
        (location index, class index, score) of the candidates, by descending score.
    """
    keep = scores > score_thresh
    cand_scores = scores[keep]
    candidates = keep.nonzero()
    cand_scores, order = cand_scores.sort(descending=True)
    if topk > 0:
        order, cand_scores = order[:topk], cand_scores[:topk]
    candidates = candidates[order]
    return candidates[:, 0], candidates[:, 1], cand_scores


def classwise_nms(
    boxes: Tensor,
    scores: Tensor,
    classes: Tensor,
    image_size: Tuple[int, int],
    nms_thresh: float,
    max_detections: int,
) -> Instances:
    """
    Class-wise NMS (suppress IoU > ``nms_thresh``), then the ``max_detections`` best.

    Args:
        boxes: (K, 4) XYXY pixels, already clipped as the detector wants them.
        scores, classes: (K,) scores and int64 classes.
        image_size: (height, width) of the result.
    Returns:
        Instances with ``pred_boxes``, ``scores``, ``pred_classes``, by descending score.
    """
    keep = batched_nms(boxes, scores, classes, nms_thresh)[:max_detections]
    result = Instances(image_size)
    result.pred_boxes = Boxes(boxes[keep])
    result.scores = scores[keep]
    result.pred_classes = classes[keep]
    return result
