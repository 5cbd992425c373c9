#!/usr/bin/env python
"""
Convert an MMDetection 2.x checkpoint for Detectron2: VFNet (any row of the reference's model zoo,
VFNet-X), or RetinaNet, ATSS, FoveaBox, RepPoints (ResNet + FPN; the reference's "VFL on other
detectors" checkpoints, focal loss or VFL). The architecture is recognised from the head's keys.

    python tools/convert_mmdet_checkpoint.py IN.pth OUT.pth

OUT.pth loads with ``DetectionCheckpointer(model).load(OUT.pth)`` (or ``MODEL.WEIGHTS`` /
``train.init_checkpoint``) into the matching config under ``configs/`` with no missing or
unexpected keys: ResNet/ResNeXt/Res2Net backbones with or without DCNv2, FPN or PAFPN-X necks,
VFNetHead. A checkpoint of another architecture (other detector, head, neck or backbone) is refused
with a message naming what was not understood.
"""
import argparse
import os
import sys

import torch

try:
    import vfnet  # noqa: F401
except ImportError:  # running from a source checkout without `make install`
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "projects", "VFNet"))

from vfnet.mmdet_checkpoint import UnsupportedCheckpointError, extract_state_dict, summarize
from vfnet.mmdet_checkpoint_detectors import converted_mmdet_checkpoint


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("input", metavar="IN.pth", help="MMDetection checkpoint")
    parser.add_argument("output", metavar="OUT.pth", help="where to write the converted checkpoint")
    args = parser.parse_args(argv)

    try:
        checkpoint = torch.load(args.input, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError) as e:
        print(f"error: cannot read {args.input}: {e}", file=sys.stderr)
        return 2
    try:
        detector, converted = converted_mmdet_checkpoint(extract_state_dict(checkpoint))
    except UnsupportedCheckpointError as e:
        print(f"error: {args.input} cannot be converted: {e}", file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    torch.save(converted, args.output)
    tensors, params = summarize(converted["model"])
    print(f"wrote {args.output}: {detector} checkpoint, {tensors} tensors, {params / 1e6:.2f}M values")
    return 0


if __name__ == "__main__":
    sys.exit(main())
