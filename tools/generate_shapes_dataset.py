#!/usr/bin/env python
"""
Generate the synthetic "shapes" detection dataset (vfnet.data.synthetic_shapes) and print
where it was written and what it holds.

    python tools/generate_shapes_dataset.py [--root DIR] [--num-train 3000] [--num-val 300] [--seed 0]

A split already there, complete and made with the same parameters, is kept (use --force to
redo it). The default root is $VFNET_DATASETS/shapes-v1, or ~/.cache/vfnet/datasets/shapes-v1;
`vfnet.data.register_shapes_dataset()` with the same arguments finds it there.
"""
import argparse
import json
import logging
import os
import sys
import time
from collections import Counter

try:
    import vfnet  # noqa: F401
except ImportError:  # running from a source checkout without `make install`
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "projects", "VFNet"))

from vfnet.data.synthetic_shapes import default_root, ensure_shapes_dataset


def _dir_size(path: str) -> int:
    return sum(e.stat().st_size for e in os.scandir(path) if e.is_file())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--root", default=None, help=f"output folder (default: {default_root()})")
    parser.add_argument("--num-train", type=int, default=3000, help="train images (default: 3000)")
    parser.add_argument("--num-val", type=int, default=300, help="val images (default: 300)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--force", action="store_true", help="regenerate even if up to date")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    root = os.path.abspath(os.path.expanduser(args.root or default_root()))
    start = time.perf_counter()
    paths = ensure_shapes_dataset(root, args.num_train, args.num_val, args.seed, force=args.force)
    print(f"dataset root: {root}  ({time.perf_counter() - start:.1f} s)")
    for split, (json_file, image_root) in paths.items():
        with open(json_file) as f:
            coco = json.load(f)
        names = {c["id"]: c["name"] for c in coco["categories"]}
        per_class = Counter(a["category_id"] for a in coco["annotations"])
        size_mb = (_dir_size(image_root) + os.path.getsize(json_file)) / 2**20
        print(
            f"{split}: {len(coco['images'])} images in {image_root}, {len(coco['annotations'])} annotations "
            f"in {json_file} ({size_mb:.1f} MiB)"
        )
        print("  per class: " + ", ".join(f"{names[k]} {per_class.get(k, 0)}" for k in sorted(names)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
