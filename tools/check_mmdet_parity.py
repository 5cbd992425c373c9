#!/usr/bin/env python
"""
Check this project's VFNet (and its RetinaNet, ATSS, FoveaBox, RepPoints) against outputs of the
reference implementation (MMDetection).

    python tools/check_mmdet_parity.py FIXTURE.pt [FIXTURE.pt ...]

For each fixture (VFNet's, from ../shared/reference-env/make_vfnet_fixture.py, or a dense
detector's, from tools/make_mmdet_dense_fixture.py, which also compares assignment labels):
builds the model its ``meta`` describes, converts and loads its weights, feeds
its inputs, and prints one JSON object of the largest differences per quantity (head outputs,
losses, the no-ground-truth image's losses, detections at the default and at a small
``nms_pre``). Exits 0 only when every fixture is within tolerance:
head outputs 1e-4 absolute, losses 1e-4 relative, detections the same count and labels with
boxes within 1e-3 px and scores within 1e-5.
"""
import argparse
import json
import sys
import warnings

try:
    import vfnet  # noqa: F401
except ImportError:  # running from a source checkout without `make install`
    import os

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "projects", "VFNet"))

from vfnet.mmdet_parity import TOLERANCES, check_fixture, load_fixture
from vfnet.mmdet_parity_detectors import FIXTURE_KIND as DENSE_FIXTURE_KIND
from vfnet.mmdet_parity_detectors import check_dense_fixture


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("fixtures", nargs="+", metavar="FIXTURE.pt", help="reference fixture file(s)")
    parser.add_argument("--indent", type=int, default=None, help="pretty-print the JSON")
    args = parser.parse_args(argv)

    all_ok = True
    for path in args.fixtures:
        try:
            fixture = load_fixture(path)
        except (OSError, ValueError, RuntimeError) as e:
            print(json.dumps({"fixture": path, "error": str(e), "ok": False}))
            all_ok = False
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            if fixture.get("kind") == DENSE_FIXTURE_KIND:  # RetinaNet / ATSS / FoveaBox / RepPoints
                report = check_dense_fixture(fixture)
            else:
                report = check_fixture(fixture)
        report = {"fixture": path, "tolerances": TOLERANCES, **report}
        print(json.dumps(report, indent=args.indent))
        all_ok &= report["ok"]
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
