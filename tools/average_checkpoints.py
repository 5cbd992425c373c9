#!/usr/bin/env python
"""
Average the weights of several checkpoints (offline SWA, the reference's swa/get_swa_model.py).

    python tools/average_checkpoints.py output/swa/model_0007329.pth output/swa/model_0014659.pth \\
        output/swa/model_final.pth -o output/swa_average.pth

Floating-point tensors are averaged (in float64, then cast back); integer tensors (e.g.
``num_batches_tracked``) are taken from the last checkpoint. The checkpoints must hold the same
tensors (names, shapes, dtypes); a mismatch is reported with the file and tensor names. OUT.pth
holds only the averaged weights and loads with ``DetectionCheckpointer`` / ``train.init_checkpoint``.
"""

import argparse
import os
import sys

import torch

try:
    import vfnet  # noqa: F401
except ImportError:  # running from a source checkout without `make install`
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "projects", "VFNet"))

from vfnet.swa import CheckpointMismatchError, average_checkpoints


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.strip().splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("checkpoints", nargs="+", metavar="CKPT", help="Detectron2 checkpoints (.pth)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.pth", help="where to write the average")
    args = parser.parse_args(argv)

    try:
        averaged = average_checkpoints(args.checkpoints)
    except (OSError, CheckpointMismatchError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    torch.save(averaged, args.output)
    print(f"wrote {args.output}: the average of {len(args.checkpoints)} checkpoints, {len(averaged['model'])} tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
