#!/usr/bin/env python
"""
Plot the training curves of a Detectron2 run (its OUTPUT/metrics.json): losses, learning rate and
the evaluations' AP, AP50, AP75.

    python tools/plot_training_curves.py output/quickstart/metrics.json \
        --output output/quickstart/analysis/training_curves.png
"""
import argparse
import os
import sys

try:
    import vfnet  # noqa: F401
except ImportError:  # running from a source checkout without `make install`
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "projects", "VFNet"))

from vfnet.analysis.reports import write_training_curves


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("metrics", help="metrics.json of a training run (JSON lines)")
    parser.add_argument("--output", default=None, help="PNG to write (default: training_curves.png next to METRICS)")
    parser.add_argument("--title", default=None, help="figure title (default: the run's folder name)")
    args = parser.parse_args(argv)
    output = args.output or os.path.join(os.path.dirname(os.path.abspath(args.metrics)), "training_curves.png")
    print(f"written {write_training_curves(args.metrics, output, args.title)}")


if __name__ == "__main__":
    main()
