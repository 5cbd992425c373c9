"""
The extra training augmentations of VFNet-X, as Detectron2 :class:`~detectron2.data.transforms.Augmentation`\\ s.

The reference's VFNet-X train pipeline is RandomCrop (relative range 0.75, p 0.5) -> multi-scale
keep-ratio Resize ("range" mode, 750x500 to 2100x1400) -> CutOut (5-10 holes, p 0.5) ->
RandomFlip -> Normalize -> Pad(32). Each augmentation here draws its random numbers from numpy's
global generator in the reference's order (so Detectron2's per-worker seeding applies, and a
given numpy seed gives the reference's crops, scales and holes), and computes what the
reference computes; the differences that remain are stated in each docstring.

Boxes (where an augmentation needs them) are ``(N, 4)`` float arrays of absolute XYXY pixel
coordinates, as in Detectron2's :class:`~detectron2.data.transforms.AugInput`; images are
``(H, W)`` or ``(H, W, C)`` arrays.
"""

from typing import Sequence, Tuple, Union

import numpy as np
from PIL import Image

from detectron2.data import transforms as T

__all__ = [
    "build_train_augmentations",
    "RandomCropKeepingBoxes",
    "MultiScaleKeepRatioResize",
    "CutOut",
    "CutOutTransform",
    "boxes_kept_by_crop",
    "keep_ratio_size",
]


def _check_probability(name: str, value: float) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
    return float(value)


def _check_boxes(boxes) -> np.ndarray:
    if boxes is None:
        raise ValueError(
            "this augmentation needs the image's boxes (AugInput(image, boxes=...)); "
            "Detectron2's DatasetMapper does not pass them: use vfnet.data.DatasetMapperWithBoxes"
        )
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be an (N, 4) XYXY array, got shape {boxes.shape}")
    return boxes


def boxes_kept_by_crop(boxes: np.ndarray, crop: T.CropTransform) -> np.ndarray:
    """
    Which boxes keep a positive width and height once shifted into ``crop`` and clipped to it.

    Args:
        boxes: (N, 4) XYXY absolute pixel coordinates in the uncropped image.
        crop: the crop, ``img[y0:y0 + h, x0:x0 + w]``.
    Returns:
        (N,) bool array.
    """
    boxes = _check_boxes(boxes)
    x1 = np.clip(boxes[:, 0] - crop.x0, 0, crop.w)
    x2 = np.clip(boxes[:, 2] - crop.x0, 0, crop.w)
    y1 = np.clip(boxes[:, 1] - crop.y0, 0, crop.h)
    y2 = np.clip(boxes[:, 3] - crop.y0, 0, crop.h)
    return (x2 > x1) & (y2 > y1)


class RandomCropKeepingBoxes(T.Augmentation):
    """
    With probability ``prob``, a random crop (Detectron2's :class:`RandomCrop` sizes and offsets)
    that keeps at least one box; the reference's ``RandomCrop(crop_type, crop_size, crop_p)``.

    For ``crop_type="relative_range"`` and ``crop_size=(a_h, a_w)``: ratios ``r_h ~ U[a_h, 1]``,
    ``r_w ~ U[a_w, 1]``, crop size ``(int(H * r_h + 0.5), int(W * r_w + 0.5))``, top-left offset
    uniform among the integers ``[0, H - crop_h] x [0, W - crop_w]``. Boxes are shifted and clipped
    to the crop, and those left with zero width or height are dropped, by Detectron2's
    ``DatasetMapper`` (``transform_instance_annotations`` + ``filter_empty_instances``), as the
    reference does.

    Difference from the reference: when a crop keeps no box, the reference drops the whole sample
    and its data loader draws another image; an augmentation cannot skip a sample, so here the
    crop is drawn again, up to ``max_attempts`` times, and if none keeps a box the image is left
    uncropped. Crops that are applied thus follow the reference's distribution (conditioned on
    keeping a box), but an image whose crops often lose every box stays in the batch uncropped
    where the reference would replace it by another image. An image without boxes is never
    cropped (the reference never trains on its crops either).

    ``get_transform`` needs ``boxes``: use :class:`vfnet.data.DatasetMapperWithBoxes`.
    """

    def __init__(
        self,
        crop_type: str = "relative_range",
        crop_size: Tuple[float, float] = (0.75, 0.75),
        prob: float = 0.5,
        max_attempts: int = 10,
    ):
        """
        Args:
            crop_type, crop_size: as Detectron2's :class:`RandomCrop` (``"relative_range"``,
                ``"relative"``, ``"absolute"`` or ``"absolute_range"``).
            prob: probability of cropping at all.
            max_attempts: crops drawn before giving up and not cropping; >= 1.
        """
        super().__init__()
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.crop_type = crop_type
        self.crop_size = crop_size
        self.prob = _check_probability("prob", prob)
        self.max_attempts = int(max_attempts)
        self._crop = T.RandomCrop(crop_type, crop_size)

    def get_transform(self, image, boxes):
        boxes = _check_boxes(boxes)
        # One uniform draw, as the reference's np.random.choice([True, False], p=[p, 1 - p]).
        if not self._rand_range() < self.prob:
            return T.NoOpTransform()
        if len(boxes) == 0:
            return T.NoOpTransform()
        for _ in range(self.max_attempts):
            crop = self._crop.get_transform(image)
            if boxes_kept_by_crop(boxes, crop).any():
                return crop
        return T.NoOpTransform()


def keep_ratio_size(height: int, width: int, scale: Tuple[int, int]) -> Tuple[int, int]:
    """
    mmcv's ``rescale_size`` with a ``(long, short)`` scale: the largest size of the image's aspect
    ratio whose long side is at most ``max(scale)`` and short side at most ``min(scale)``.

    The factor is ``s = min(max(scale) / max(H, W), min(scale) / min(H, W))`` and the new size
    ``(int(H * s + 0.5), int(W * s + 0.5))``. Note the ``max``/``min``: a sampled (long, short)
    pair whose "short" edge is the larger one is used the other way round, as mmcv does.

    Returns:
        (new_height, new_width)
    """
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(height * float(factor) + 0.5), int(width * float(factor) + 0.5)


def _check_pairs(name: str, pairs) -> Tuple[Tuple[int, int], ...]:
    """``pairs`` as a tuple of pairs of positive integers, or an error naming ``name``."""
    try:
        checked = tuple((int(a), int(b)) for a, b in pairs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a list of pairs of integers, got {pairs!r}") from e
    if not checked or any(a <= 0 or b <= 0 for a, b in checked) or checked != tuple(tuple(p) for p in pairs):
        raise ValueError(f"{name} must be a non-empty list of pairs of positive integers, got {pairs!r}")
    return checked


class MultiScaleKeepRatioResize(T.Augmentation):
    """
    Keep-ratio resize to a randomly chosen ``(long, short)`` scale: MMDetection's
    ``Resize(img_scale=scales, multiscale_mode=..., keep_ratio=True)``.

    - ``"range"`` (two scales): the long edge is an integer uniform in
      ``[min(longs), max(longs)]`` and, independently, the short edge an integer uniform in
      ``[min(shorts), max(shorts)]``, where ``longs``/``shorts`` are the larger/smaller numbers of
      the two pairs. VFNet-X: ``[(750, 500), (2100, 1400)]``, long in [750, 2100], short in
      [500, 1400].
    - ``"value"``: one of ``scales``, uniformly.
    - a single scale: always that one (e.g. ``[(1333, 800)]``, the 1333x800 test size).

    The image is then resized to :func:`keep_ratio_size` of the sampled scale. Unlike Detectron2's
    :class:`ResizeShortestEdge`, the long-edge bound is sampled too, and the size is rounded as
    mmcv rounds it. The pixels are resampled by Detectron2's :class:`ResizeTransform` (PIL,
    bilinear by default), where the reference uses OpenCV's bilinear resize.
    """

    def __init__(self, scales: Sequence[Tuple[int, int]], multiscale_mode: str = "range", interp=Image.BILINEAR):
        """
        Args:
            scales: ``(long, short)`` pairs of pixels (the order within a pair does not matter).
            multiscale_mode: ``"range"`` or ``"value"``; ignored with a single scale.
            interp: PIL interpolation method.
        """
        super().__init__()
        if multiscale_mode not in ("range", "value"):
            raise ValueError(f"multiscale_mode must be 'range' or 'value', got {multiscale_mode!r}")
        self.scales = _check_pairs("scales", scales)
        if multiscale_mode == "range" and len(self.scales) not in (1, 2):
            raise ValueError(f"'range' mode takes two (long, short) scales (its bounds), got {len(self.scales)}")
        self.multiscale_mode = multiscale_mode
        self.interp = interp

    def sample_scale(self) -> Tuple[int, int]:
        """A ``(long, short)`` scale, drawn as the reference draws it."""
        if len(self.scales) == 1:
            return self.scales[0]
        if self.multiscale_mode == "value":
            return self.scales[np.random.randint(len(self.scales))]
        longs = [max(s) for s in self.scales]
        shorts = [min(s) for s in self.scales]
        long_edge = np.random.randint(min(longs), max(longs) + 1)
        short_edge = np.random.randint(min(shorts), max(shorts) + 1)
        return int(long_edge), int(short_edge)

    def get_transform(self, image):
        h, w = image.shape[:2]
        new_h, new_w = keep_ratio_size(h, w, self.sample_scale())
        return T.ResizeTransform(h, w, new_h, new_w, self.interp)


class CutOutTransform(T.Transform):
    """
    Fill rectangles of the image with a constant; boxes, points and segmentation are unchanged.

    Args:
        holes: (K, 4) int array of ``x1, y1, x2, y2`` (``img[y1:y2, x1:x2] = fill_value``), already
            clipped to the image.
        fill_value: a number, or one per channel.
    """

    def __init__(self, holes: np.ndarray, fill_value: Union[float, Sequence[float]] = 0):
        super().__init__()
        holes = np.asarray(holes)
        if holes.ndim != 2 or holes.shape[1] != 4:
            raise ValueError(f"holes must be a (K, 4) array of x1, y1, x2, y2, got shape {holes.shape}")
        self.holes = holes.astype(np.int64)
        self.fill_value = fill_value

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        fill = np.asarray(self.fill_value)
        if fill.ndim == 1 and (img.ndim != 3 or img.shape[2] != fill.shape[0]):
            raise ValueError(f"fill_value has {fill.shape[0]} channels, the image has shape {img.shape}")
        out = img.copy()
        for x1, y1, x2, y2 in self.holes:
            out[y1:y2, x1:x2] = fill
        return out

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation


class CutOut(T.Augmentation):
    """
    With probability ``prob``, fill ``n`` rectangles of the image with ``fill_value``:
    MMDetection's ``CutOut(n_holes, cutout_shape, fill_in, cutout_p)``.

    ``n`` is an integer uniform in ``[n_holes[0], n_holes[1]]``; each hole has its top-left corner
    ``(x1, y1)`` uniform among the image's pixels and a ``(w, h)`` drawn uniformly from
    ``hole_sizes``, and is clipped at the right and bottom borders. The fill is in the image's own
    pixel values (before normalisation: 0 is black). Boxes are unchanged.
    """

    def __init__(
        self,
        n_holes: Union[int, Tuple[int, int]],
        hole_sizes: Sequence[Tuple[int, int]],
        prob: float = 0.5,
        fill_value: Union[float, Sequence[float]] = 0,
    ):
        """
        Args:
            n_holes: a number of holes, or the inclusive range ``(min, max)`` to draw it from.
            hole_sizes: candidate ``(width, height)`` of a hole, in pixels.
            prob: probability of applying CutOut at all.
            fill_value: the value of the filled pixels, a number or one per channel.
        """
        super().__init__()
        lo, hi = (n_holes, n_holes) if np.isscalar(n_holes) else tuple(n_holes)
        if not 0 <= lo <= hi:
            raise ValueError(f"n_holes must be a count >= 0 or a range (min, max) with 0 <= min <= max, got {n_holes}")
        self.n_holes = (int(lo), int(hi))
        self.hole_sizes = _check_pairs("hole_sizes", hole_sizes)
        self.prob = _check_probability("prob", prob)
        self.fill_value = fill_value

    def get_transform(self, image):
        if not self._rand_range() < self.prob:
            return T.NoOpTransform()
        h, w = image.shape[:2]
        n = np.random.randint(self.n_holes[0], self.n_holes[1] + 1)
        holes = np.zeros((n, 4), dtype=np.int64)
        for i in range(n):
            x1 = np.random.randint(0, w)
            y1 = np.random.randint(0, h)
            hole_w, hole_h = self.hole_sizes[np.random.randint(0, len(self.hole_sizes))]
            holes[i] = (x1, y1, min(x1 + hole_w, w), min(y1 + hole_h, h))
        return CutOutTransform(holes, self.fill_value)


def build_train_augmentations(cfg) -> list:
    """
    The training augmentations of a yacs config, in the reference's order: Detectron2's
    ``INPUT.CROP`` as :class:`RandomCropKeepingBoxes` (with ``INPUT.CROP.PROB``), then the resize
    (:class:`MultiScaleKeepRatioResize` of ``INPUT.RESIZE_SCALES`` in ``INPUT.RESIZE_SCALES_MODE``
    when given, else Detectron2's ``ResizeShortestEdge`` of ``INPUT.MIN_SIZE_TRAIN`` /
    ``MAX_SIZE_TRAIN``), :class:`CutOut` (``INPUT.CUTOUT``), then ``INPUT.RANDOM_FLIP``. With a
    crop, map the data with :class:`vfnet.data.DatasetMapperWithBoxes`.
    """
    i = cfg.INPUT
    augs = []
    if i.CROP.ENABLED:
        augs.append(RandomCropKeepingBoxes(i.CROP.TYPE, tuple(i.CROP.SIZE), prob=i.CROP.PROB))
    if i.RESIZE_SCALES:
        augs.append(MultiScaleKeepRatioResize([tuple(s) for s in i.RESIZE_SCALES], i.RESIZE_SCALES_MODE))
    else:
        augs.append(T.ResizeShortestEdge(i.MIN_SIZE_TRAIN, i.MAX_SIZE_TRAIN, i.MIN_SIZE_TRAIN_SAMPLING))
    if i.CUTOUT.ENABLED:
        augs.append(
            CutOut(tuple(i.CUTOUT.N_HOLES), [tuple(s) for s in i.CUTOUT.HOLE_SIZES], prob=i.CUTOUT.PROB,
                   fill_value=i.CUTOUT.FILL_VALUE)
        )
    if i.RANDOM_FLIP != "none":
        augs.append(T.RandomFlip(horizontal=i.RANDOM_FLIP == "horizontal", vertical=i.RANDOM_FLIP == "vertical"))
    return augs
