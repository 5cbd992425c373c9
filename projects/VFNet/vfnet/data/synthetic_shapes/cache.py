"""
The synthetic shapes dataset on disk: generation of a split into its folder and COCO json
(written to temporary names, swapped in atomically), the manifest of what each split was made
with, the lock that lets one process generate while the others wait, and the cache check
(:func:`ensure_shapes_dataset`) that regenerates a split only when it is missing or stale.
"""
import contextlib
import json
import logging
import os
import shutil
import time
import zlib
from typing import Dict, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from .render import CLASS_NAMES, GENERATOR_VERSION, render_shapes_image

__all__ = ["MANIFEST", "default_root", "generate_shapes_dataset", "ensure_shapes_dataset"]

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def default_root() -> str:
    """``$VFNET_DATASETS/shapes-v1`` if VFNET_DATASETS is set, else ``~/.cache/vfnet/datasets/shapes-v1``."""
    base = os.environ.get("VFNET_DATASETS")
    if base:
        return os.path.join(os.path.expanduser(base), "shapes-v1")
    return os.path.join(os.path.expanduser("~"), ".cache", "vfnet", "datasets", "shapes-v1")


# --------------------------------------------------------------------------- writing
_DEFAULTS = dict(
    image_size=(160, 160),
    image_format="jpg",
    jpeg_quality=95,
    crowded_prob=0.15,
    min_size=9.0,
    max_size_frac=0.45,
    min_visibility=0.3,
)


def _split_params(split: str, num_images: int, seed: int, **kwargs) -> Dict:
    """The parameters that define a split, normalised (what the manifest records)."""
    unknown = set(kwargs) - set(_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown generator parameters: {sorted(unknown)}")
    p = {**_DEFAULTS, **kwargs}
    size = p["image_size"]
    h, w = (size, size) if isinstance(size, int) else size
    if p["image_format"] not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {p['image_format']!r}")
    return {
        "version": GENERATOR_VERSION,
        "split": str(split),
        "num_images": int(num_images),
        "seed": int(seed),
        "image_size": [int(h), int(w)],
        "image_format": str(p["image_format"]),
        "jpeg_quality": int(p["jpeg_quality"]),
        "crowded_prob": float(p["crowded_prob"]),
        "min_size": float(p["min_size"]),
        "max_size_frac": float(p["max_size_frac"]),
        "min_visibility": float(p["min_visibility"]),
    }


def _read_manifest(root: str) -> Dict:
    try:
        with open(os.path.join(root, MANIFEST)) as f:
            m = json.load(f)
        if isinstance(m, dict) and isinstance(m.get("splits"), dict):
            return m
    except (OSError, ValueError):
        pass
    return {"generator": "vfnet.data.synthetic_shapes", "splits": {}}


def _write_json_atomic(path: str, obj, **dump_kwargs) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, **dump_kwargs)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _set_manifest_entry(root: str, split: str, params: Optional[Dict]) -> None:
    m = _read_manifest(root)
    if params is None:
        if split not in m["splits"]:
            return
        m["splits"].pop(split)
    else:
        m["splits"][split] = params
    _write_json_atomic(os.path.join(root, MANIFEST), m, indent=1, sort_keys=True)


_HELD_LOCKS: Dict[str, int] = {}


@contextlib.contextmanager
def _lock(root: str):
    """An exclusive, re-entrant lock on `root`, so that e.g. the processes of a multi-GPU launch
    generate the dataset once (the others wait, then find it complete)."""
    os.makedirs(root, exist_ok=True)
    key = os.path.realpath(root)
    if _HELD_LOCKS.get(key, 0) > 0:
        _HELD_LOCKS[key] += 1
        try:
            yield
        finally:
            _HELD_LOCKS[key] -= 1
        return
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        fcntl = None
    with open(os.path.join(root, ".lock"), "a") as f:
        if fcntl is not None:
            fcntl.flock(f, fcntl.LOCK_EX)
        _HELD_LOCKS[key] = 1
        try:
            yield
        finally:
            _HELD_LOCKS.pop(key, None)
            if fcntl is not None:
                fcntl.flock(f, fcntl.LOCK_UN)


def generate_shapes_dataset(
    root: str,
    split: str,
    num_images: int,
    seed: int,
    image_size: Union[int, Sequence[int]] = (160, 160),
    image_format: str = "jpg",
    jpeg_quality: int = 95,
    crowded_prob: float = 0.15,
    min_size: float = 9.0,
    max_size_frac: float = 0.45,
    min_visibility: float = 0.3,
    show_progress: bool = True,
) -> str:
    """Generate split `split` into ``root/<split>/NNNNNN.<image_format>`` and ``root/<split>.json``
    (COCO instances) and record it in ``root/manifest.json``. Replaces an existing split of that name.
    `image_size` is (height, width) or an int. Returns the path of the JSON file."""
    params = _split_params(
        split, num_images, seed, image_size=image_size, image_format=image_format, jpeg_quality=jpeg_quality,
        crowded_prob=crowded_prob, min_size=min_size, max_size_frac=max_size_frac, min_visibility=min_visibility,
    )
    h, w = params["image_size"]
    os.makedirs(root, exist_ok=True)
    image_dir = os.path.join(root, split)
    json_path = os.path.join(root, f"{split}.json")
    tmp_dir = os.path.join(root, f".{split}.tmp-{os.getpid()}")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    os.makedirs(tmp_dir)

    ext = "." + image_format
    enc = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if image_format == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 6]
    split_key = zlib.crc32(split.encode("utf-8"))
    images, annotations = [], []
    start = time.perf_counter()
    logger.info(f"Generating {num_images} synthetic shapes images ({split}, seed {seed}) in {root} ...")
    try:
        from tqdm import tqdm

        it = tqdm(range(num_images), desc=f"shapes/{split}", disable=not show_progress, mininterval=1.0, leave=False)
    except ImportError:
        it = range(num_images)
    prev_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # small images: threads only cost CPU
    try:
        for i in it:
            rng = np.random.default_rng([int(seed), split_key, i])
            img, anns = render_shapes_image(
                rng, h, w, crowded_prob=crowded_prob, min_size=min_size, max_size_frac=max_size_frac,
                min_visibility=min_visibility,
            )
            file_name = f"{i:06d}{ext}"
            ok, buf = cv2.imencode(ext, img, enc)
            if not ok:
                raise RuntimeError(f"cv2 could not encode {file_name}")
            with open(os.path.join(tmp_dir, file_name), "wb") as f:
                f.write(buf.tobytes())
            images.append({"id": i + 1, "file_name": file_name, "height": h, "width": w})
            for a in anns:
                a = {"id": len(annotations) + 1, "image_id": i + 1, **a, "iscrowd": 0}
                annotations.append(a)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    finally:
        cv2.setNumThreads(prev_threads)

    coco = {
        "info": {
            "description": "VFNet synthetic shapes (vfnet.data.synthetic_shapes)",
            "version": str(GENERATOR_VERSION),
            "split": split,
            "seed": int(seed),
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": n, "supercategory": "shape"} for k, n in enumerate(CLASS_NAMES)],
    }
    # Swap into place: forget the old split first, the JSON (what marks a split complete) goes in last.
    with _lock(root):
        _set_manifest_entry(root, split, None)
        if os.path.exists(json_path):
            os.remove(json_path)
        if os.path.isdir(image_dir):
            trash = os.path.join(root, f".{split}.old-{os.getpid()}")
            os.replace(image_dir, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(tmp_dir, image_dir)
        _write_json_atomic(json_path, coco, separators=(",", ":"))
        params["num_annotations"] = len(annotations)
        _set_manifest_entry(root, split, params)
    logger.info(
        f"Wrote {len(images)} images, {len(annotations)} annotations to {image_dir} and {json_path} "
        f"in {time.perf_counter() - start:.1f} s"
    )
    return json_path


def _split_is_current(root: str, split: str, params: Dict) -> bool:
    entry = _read_manifest(root)["splits"].get(split)
    if not isinstance(entry, dict):
        return False
    if {k: v for k, v in entry.items() if k != "num_annotations"} != params:
        return False
    image_dir = os.path.join(root, split)
    if not os.path.isfile(os.path.join(root, f"{split}.json")) or not os.path.isdir(image_dir):
        return False
    ext = "." + params["image_format"]
    return sum(1 for f in os.listdir(image_dir) if f.endswith(ext)) == params["num_images"]


def _remove_stale_temporaries(root: str) -> None:
    """Remove the temporary folders that a killed generation left (those of processes no longer alive)."""
    for name in os.listdir(root):
        if not name.startswith(".") or (".tmp-" not in name and ".old-" not in name):
            continue
        try:
            pid = int(name.rsplit("-", 1)[1])
            if pid == os.getpid():
                continue
            os.kill(pid, 0)
            continue  # alive: its own
        except ProcessLookupError:
            pass
        except (ValueError, PermissionError, OSError):
            continue
        path = os.path.join(root, name)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.remove(path)


def ensure_shapes_dataset(
    root: Optional[str] = None,
    num_train: int = 3000,
    num_val: int = 300,
    seed: int = 0,
    force: bool = False,
    **kwargs,
) -> Dict[str, Tuple[str, str]]:
    """Generate the train/val splits in `root` unless they are there, complete and made with these
    parameters (and this generator version). `kwargs` go to `generate_shapes_dataset`.
    Returns {"train": (json_file, image_root), "val": (...)}."""
    root = os.path.abspath(os.path.expanduser(root or default_root()))
    show_progress = kwargs.pop("show_progress", True)
    out = {}
    with _lock(root):
        _remove_stale_temporaries(root)
        for split, n in (("train", num_train), ("val", num_val)):
            params = _split_params(split, n, seed, **kwargs)
            if force or not _split_is_current(root, split, params):
                generate_shapes_dataset(root, split, n, seed, show_progress=show_progress, **kwargs)
            out[split] = (os.path.join(root, f"{split}.json"), os.path.join(root, split))
    return out
