#!/usr/bin/env python
"""
Convert an ImageNet backbone checkpoint into the initialisation a VFNet config loads.

    python tools/convert_imagenet_checkpoint.py IN.pth OUT.pth

IN.pth: torchvision's ResNet/ResNeXt (e.g. resnet50-19c8e357.pth, resnet101-5d3b4d8f.pth),
open-mmlab's ResNeXt (resnext101_32x4d-a5af3160.pth, resnext101_64x4d-ee2c6f71.pth) or MMDetection's
Res2Net (res2net101_v1d_26w_4s_mmdetv2-f0a600f9.pth). OUT.pth holds exactly the weights of
``model.backbone.bottom_up`` under their Detectron2 names; a config's ``train.init_checkpoint``
(``MODEL.WEIGHTS`` for .yaml) loads it: the backbone's keys all match, the rest of the detector
keeps its initialisation (the deformable convs' offset convs, FPN and head are reported missing,
as they should be). The classifier (fc) is dropped; anything else not understood is refused.
"""
import argparse
import os
import sys

try:
    import vfnet  # noqa: F401
except ImportError:  # running from a source checkout without `make install`
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "projects", "VFNet"))

from vfnet.mmdet_checkpoint import convert_checkpoint_file, convert_imagenet_state_dict, converted_checkpoint


def convert_backbone(state_dict, input_path: str):
    """An ImageNet state dict -> ("<family> backbone", its Detectron2 checkpoint)."""
    converted = convert_imagenet_state_dict(state_dict)
    family = "Res2Net" if any(".convs." in k for k in converted) else "ResNet/ResNeXt"
    author = f"vfnet: ImageNet {family} from {os.path.basename(input_path)}"
    return f"{family} backbone", converted_checkpoint(converted, author=author)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("input", metavar="IN.pth", help="ImageNet checkpoint (torchvision / open-mmlab layout)")
    parser.add_argument("output", metavar="OUT.pth", help="where to write the converted backbone weights")
    args = parser.parse_args(argv)
    return convert_checkpoint_file(args.input, args.output, convert_backbone)


if __name__ == "__main__":
    sys.exit(main())
