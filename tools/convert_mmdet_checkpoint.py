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

try:
    import vfnet  # noqa: F401
except ImportError:  # running from a source checkout without `make install`
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "projects", "VFNet"))

from vfnet.mmdet_checkpoint import convert_checkpoint_file
from vfnet.mmdet_checkpoint_detectors import converted_mmdet_checkpoint


def convert_detector(state_dict, input_path: str):
    """An MMDetection state dict -> ("<detector> checkpoint", its Detectron2 checkpoint)."""
    detector, converted = converted_mmdet_checkpoint(state_dict)
    return f"{detector} checkpoint", converted


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("input", metavar="IN.pth", help="MMDetection checkpoint")
    parser.add_argument("output", metavar="OUT.pth", help="where to write the converted checkpoint")
    args = parser.parse_args(argv)
    return convert_checkpoint_file(args.input, args.output, convert_detector)


if __name__ == "__main__":
    sys.exit(main())
