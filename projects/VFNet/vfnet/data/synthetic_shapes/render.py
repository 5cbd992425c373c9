"""
Drawing of the synthetic "shapes" images and their COCO annotations (see
:mod:`vfnet.data.synthetic_shapes` for what is drawn and the box convention).
"""
import math
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

__all__ = ["CLASS_NAMES", "GENERATOR_VERSION", "render_shapes_image"]

#: Version of the drawing: a dataset made by another version is regenerated.
GENERATOR_VERSION = 1
CLASS_NAMES = ("circle", "square", "triangle", "star", "pentagon", "cross")

_SHIFT = 4  # sub-pixel bits of cv2 polygon drawing
_ONE = 1 << _SHIFT




# --------------------------------------------------------------------------- geometry
def _unit_shape(cls: int, rng: np.random.Generator) -> np.ndarray:
    """Polygon (N, 2) of class `cls` around the origin, before scaling and rotation."""
    if cls == 0:  # circle / ellipse
        t = np.linspace(0.0, 2 * math.pi, 64, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t) * rng.uniform(0.7, 1.0)], 1)
    elif cls == 1:  # square / mildly rectangular
        a = rng.uniform(0.75, 1.0)
        pts = np.array([[-1, -a], [1, -a], [1, a], [-1, a]], dtype=np.float64)
    elif cls == 2:  # triangle, vertices jittered
        t = -math.pi / 2 + np.array([0.0, 2, 4]) * math.pi / 3 + rng.uniform(-0.15, 0.15, 3)
        r = rng.uniform(0.85, 1.0, 3)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], 1)
    elif cls == 3:  # 5-pointed star
        t = -math.pi / 2 + np.arange(10) * math.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.38, 0.55))
        pts = np.stack([r * np.cos(t), r * np.sin(t) * rng.uniform(0.88, 1.0)], 1)
    elif cls == 4:  # pentagon
        t = -math.pi / 2 + np.arange(5) * 2 * math.pi / 5
        pts = np.stack([np.cos(t), np.sin(t) * rng.uniform(0.88, 1.0)], 1)
    elif cls == 5:  # plus-shaped cross
        w = rng.uniform(0.2, 0.34)
        b = rng.uniform(0.85, 1.0)
        pts = np.array(
            [[w, b], [w, w], [1, w], [1, -w], [w, -w], [w, -b], [-w, -b], [-w, -w], [-1, -w], [-1, w], [-w, w], [-w, b]],
            dtype=np.float64,
        )
    else:
        raise ValueError(cls)
    return pts


def _polygon_area(pts: np.ndarray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _rotate(pts: np.ndarray, theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return pts @ np.array([[c, s], [-s, c]])


def _blob_shape(rng: np.random.Generator) -> np.ndarray:
    """An irregular smooth "potato" (clutter): radius = 1 + low-frequency noise of random phases."""
    t = np.linspace(0.0, 2 * math.pi, 48, endpoint=False)
    r = np.ones_like(t)
    for f, amp in ((1, 0.3), (2, 0.35), (3, 0.25)):
        r += rng.uniform(0.1, amp) * np.cos(f * t + rng.uniform(0, 2 * math.pi))
    r += rng.normal(0.0, 0.03, t.shape)
    r = np.clip(r, 0.25, None)
    return np.stack([r * np.cos(t), r * np.sin(t) * rng.uniform(0.3, 0.75)], 1)


def _to_cv(pts: np.ndarray, x0: int, y0: int, scale: int = 1) -> np.ndarray:
    """Continuous image coordinates (pixel i covers [i, i+1)) to cv2 fixed point (pixel centres at
    integers) in a patch at (x0, y0), `scale` times supersampled."""
    q = np.round(((pts - (x0, y0)) * scale - 0.5) * _ONE).astype(np.int32)
    return q.reshape(-1, 1, 2)


# --------------------------------------------------------------------------- rendering
def _random_fill(rng: np.random.Generator, h: int, w: int, color: np.ndarray) -> np.ndarray:
    """An (h, w, 3) float32 fill: solid, gradient, noisy or striped, around `color` (not class dependent)."""
    style = rng.choice(4, p=[0.4, 0.25, 0.2, 0.15])
    fill = np.empty((h, w, 3), np.float32)
    fill[:] = color
    if style == 0:
        return fill
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if style == 1:  # linear gradient
        ang = rng.uniform(0, 2 * math.pi)
        ramp = xx * math.cos(ang) + yy * math.sin(ang)
        ramp = (ramp - ramp.mean()) / max(float(np.ptp(ramp)), 1.0)
        fill += ramp[..., None] * rng.normal(0.0, 60.0, 3).astype(np.float32)
    elif style == 2:  # smooth + fine noise
        g = int(rng.integers(2, 6))
        low = rng.normal(0.0, 25.0, (g, g, 3)).astype(np.float32)
        fill += cv2.resize(low, (w, h), interpolation=cv2.INTER_LINEAR)
        fill += rng.normal(0.0, 8.0, (h, w, 3)).astype(np.float32)
    else:  # stripes towards a second colour
        ang = rng.uniform(0, math.pi)
        period = rng.uniform(3.0, 10.0)
        phase = np.sin((xx * math.cos(ang) + yy * math.sin(ang)) * (2 * math.pi / period))
        other = rng.uniform(0, 255, 3).astype(np.float32)
        fill += (0.5 + 0.5 * phase)[..., None] * (other - color) * rng.uniform(0.3, 0.7)
    return fill


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    c0 = rng.uniform(0, 255, 3).astype(np.float32)
    c1 = rng.uniform(0, 255, 3).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = rng.uniform(0, 2 * math.pi)
    ramp = xx * math.cos(ang) + yy * math.sin(ang)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
    img = c0 + (c1 - c0) * ramp[..., None]
    g = int(rng.integers(2, 7))
    low = rng.normal(0.0, rng.uniform(10.0, 40.0), (g, g, 3)).astype(np.float32)
    img += cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    texture = rng.choice(3, p=[0.4, 0.3, 0.3])
    if texture == 1:  # faint grating
        a2 = rng.uniform(0, math.pi)
        period = rng.uniform(4.0, 20.0)
        img += (np.sin((xx * math.cos(a2) + yy * math.sin(a2)) * (2 * math.pi / period)) * rng.uniform(5, 20))[..., None]
    elif texture == 2:  # fine-grained texture (blurred noise)
        noise = rng.normal(0.0, 1.0, (h, w)).astype(np.float32)
        noise = cv2.GaussianBlur(noise, (0, 0), rng.uniform(0.7, 2.0))
        img += (noise / max(float(noise.std()), 1e-6) * rng.uniform(6, 18))[..., None]
    return img


def _sample_color(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A uniformly random RGB colour, re-drawn (a few times) if too close to the mean colour `under` it."""
    min_contrast = rng.uniform(35.0, 90.0)
    best, best_d = None, -1.0
    for _ in range(8):
        c = rng.uniform(0, 255, 3).astype(np.float32)
        d = float(np.linalg.norm(c - under))
        if d >= min_contrast:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


_SS = 4  # supersampling of the polygon coverage (cv2's own fill, even with LINE_AA, fattens shapes by ~0.5 px)


def _inset(pts: np.ndarray, d: float) -> np.ndarray:
    """Polygon `pts` with every edge moved inwards by `d` (small against the edges)."""
    e = np.roll(pts, -1, 0) - pts  # edge i: vertex i -> i + 1
    n = np.stack([-e[:, 1], e[:, 0]], 1) / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    x, y = pts[:, 0], pts[:, 1]
    if np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)) < 0:
        n = -n  # make n point inwards
    n_prev = np.roll(n, 1, 0)  # normal of the edge ending at vertex i
    return pts + d * (n + n_prev) / np.maximum(1.0 + (n * n_prev).sum(1, keepdims=True), 0.1)


def _coverage(pts: np.ndarray, x0: int, y0: int, h: int, w: int, thickness: float = 0.0) -> np.ndarray:
    """Fraction (h, w) float32 in [0, 1] of each pixel of the patch at (x0, y0) covered by polygon `pts`
    (or, thickness > 0, by its outline of that width in px), from a 4x4 supersampled binary fill."""
    big = np.zeros((h * _SS, w * _SS), np.uint8)
    if thickness > 0:
        q = _to_cv(pts, x0, y0, _SS)
        cv2.polylines(big, [q], True, 255, max(int(round(thickness * _SS)), 1), lineType=cv2.LINE_8, shift=_SHIFT)
    else:  # cv2 fills the pixels on both ends of a span: half a sub-pixel too much on each side
        cv2.fillPoly(big, [_to_cv(_inset(pts, 0.5 / _SS), x0, y0, _SS)], 255, lineType=cv2.LINE_8, shift=_SHIFT)
    return cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) * np.float32(1.0 / 255.0)


def _draw_polygon(
    img: np.ndarray,
    pts: np.ndarray,
    rng: np.random.Generator,
    opacity: float = 1.0,
    outline: bool = False,
) -> Tuple[Optional[Tuple[int, int, int, int]], Optional[np.ndarray]]:
    """Alpha-composite polygon `pts`, with a random fill (and, `outline`, an inner outline of another
    random colour), onto float image `img`. Returns the patch (x0, y0, x1, y1) and its binary mask
    (coverage >= 0.5), or (None, None) when the polygon misses the image."""
    h, w = img.shape[:2]
    x0 = max(int(math.floor(pts[:, 0].min())), 0)
    y0 = max(int(math.floor(pts[:, 1].min())), 0)
    x1 = min(int(math.ceil(pts[:, 0].max())), w)
    y1 = min(int(math.ceil(pts[:, 1].max())), h)
    if x1 <= x0 or y1 <= y0:
        return None, None
    ph, pw = y1 - y0, x1 - x0
    alpha = _coverage(pts, x0, y0, ph, pw)
    mask = alpha >= 0.5
    patch = img[y0:y1, x0:x1]
    under = patch[mask].mean(0) if mask.any() else patch.reshape(-1, 3).mean(0)
    fill = _random_fill(rng, ph, pw, _sample_color(rng, under))
    if outline:  # drawn on the fill, so that it stays inside the shape
        size = math.sqrt(_polygon_area(pts))
        line = _coverage(pts, x0, y0, ph, pw, thickness=2.0 if size < 30 else float(rng.uniform(2.0, 4.0)))
        color = rng.uniform(0, 255, 3).astype(np.float32)
        fill += line[..., None] * (color - fill)
    alpha = alpha[..., None] * np.float32(opacity)
    patch += alpha * (fill - patch)
    return (x0, y0, x1, y1), mask


def _draw_stroke(img: np.ndarray, owner: Optional[np.ndarray], rng: np.random.Generator, h: int, w: int) -> None:
    """A straight line or a smooth curve (clutter). With `owner`, the pixels it covers become background."""
    if rng.random() < 0.5:
        p = rng.uniform([-0.1 * w, -0.1 * h], [1.1 * w, 1.1 * h], (2, 2))
    else:
        n = int(rng.integers(4, 9))
        step = rng.uniform(4.0, 16.0)
        turns = np.cumsum(rng.normal(0.0, 0.5, n)) + rng.uniform(0, 2 * math.pi)
        p = np.cumsum(np.stack([np.cos(turns), np.sin(turns)], 1) * step, 0) + rng.uniform([0, 0], [w, h])
    thickness = int(rng.integers(1, 4))
    color = tuple(float(c) for c in rng.uniform(0, 255, 3))
    q = _to_cv(p, 0, 0)
    cv2.polylines(img, [q], False, color, thickness, lineType=cv2.LINE_AA, shift=_SHIFT)
    if owner is not None:
        m = np.zeros((h, w), np.uint8)
        cv2.polylines(m, [q], False, 1, thickness, lineType=cv2.LINE_8, shift=_SHIFT)
        owner[m > 0] = -1


def render_shapes_image(
    rng: np.random.Generator,
    height: int = 160,
    width: int = 160,
    crowded_prob: float = 0.15,
    min_size: float = 9.0,
    max_size_frac: float = 0.45,
    min_visibility: float = 0.3,
) -> Tuple[np.ndarray, List[Dict]]:
    """Draw one image. Returns a (H, W, 3) uint8 image and its annotations
    (dicts of category_id (1-based), bbox [x, y, w, h], area (visible px), visibility)."""
    h, w = height, width
    img = _background(rng, h, w)

    # clutter under the objects: potato blobs, lines and curves
    for _ in range(int(rng.integers(0, 5))):
        s = math.exp(rng.uniform(math.log(6.0), math.log(0.3 * min(h, w))))
        pts = _rotate(_blob_shape(rng), rng.uniform(0, 2 * math.pi)) * (s * 0.6) + rng.uniform([0, 0], [w, h])
        _draw_polygon(img, pts, rng, opacity=float(rng.uniform(0.4, 1.0)))
    n_strokes = int(rng.integers(0, 6))
    strokes_on_top = rng.random(n_strokes) < 0.35
    for _ in range(int((~strokes_on_top).sum())):
        _draw_stroke(img, None, rng, h, w)

    # objects
    crowded = rng.random() < crowded_prob
    n_obj = int(rng.integers(12, 26)) if crowded else int(rng.integers(1, 9))
    max_size = (0.3 if crowded else max_size_frac) * min(h, w)
    sizes = np.exp(rng.uniform(math.log(min_size), math.log(max(max_size, min_size)), n_obj))
    order = np.argsort(-(np.log(sizes) + rng.normal(0.0, 0.5, n_obj)), kind="stable")  # big ones mostly behind
    classes = rng.integers(0, len(CLASS_NAMES), n_obj)
    owner = np.full((h, w), -1, np.int16)
    objects = []
    for k in order:
        cls = int(classes[k])
        unit = _unit_shape(cls, rng)
        unit = _rotate(unit, rng.uniform(0, 2 * math.pi))
        scale = sizes[k] / math.sqrt(_polygon_area(unit))
        pts = unit * scale
        r_ext = float(np.sqrt((pts**2).sum(1)).max())
        lo = np.minimum([0.5 * r_ext] * 2, [w / 2, h / 2])
        center = rng.uniform(lo, [w - lo[0], h - lo[1]])
        pts = pts + center
        patch, mask = _draw_polygon(img, pts, rng, outline=bool(rng.random() < 0.25))
        if patch is None:
            continue
        x0, y0, x1, y1 = patch
        idx = len(objects)
        owner[y0:y1, x0:x1][mask] = idx
        objects.append((cls, pts, sizes[k] ** 2))

    for _ in range(int(strokes_on_top.sum())):
        _draw_stroke(img, owner, rng, h, w)

    # sensor noise and blur
    img += rng.standard_normal((h, w, 3), dtype=np.float32) * np.float32(rng.uniform(2.0, 8.0))
    if rng.random() < 0.25:
        img = cv2.GaussianBlur(img, (3, 3), rng.uniform(0.5, 0.9))
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)

    visible = np.bincount(owner.ravel().astype(np.int64) + 1, minlength=len(objects) + 1)[1:]
    anns = []
    for idx, (cls, pts, full_area) in enumerate(objects):
        vis = float(visible[idx]) / full_area
        bx0, by0 = max(float(pts[:, 0].min()), 0.0), max(float(pts[:, 1].min()), 0.0)
        bx1, by1 = min(float(pts[:, 0].max()), float(w)), min(float(pts[:, 1].max()), float(h))
        if vis < min_visibility or visible[idx] < 8 or bx1 - bx0 < 1 or by1 - by0 < 1:
            continue
        anns.append(
            {
                "category_id": cls + 1,
                "bbox": [round(bx0, 2), round(by0, 2), round(bx1 - bx0, 2), round(by1 - by0, 2)],
                "area": float(visible[idx]),
                "visibility": round(min(vis, 1.0), 3),
            }
        )
    return img, anns
