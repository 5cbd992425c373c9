#!/usr/bin/env python
"""
Summarise runs of the same configurations with several seeds: each run folder NAME_seedS of ROOT
holds the eval_metrics.json that tools/train_net.py writes; prints, as Markdown, every
configuration's metric per seed with its mean, worst and best, then the per-seed differences of
the pairs asked for.

    # the README's Varifocal Loss table: every detector's FL run against its VFL run, and the
    # ablation's steps
    python tools/summarize_runs.py output/vfl_table --suffix-pair _FL _VFL \
        --pair ablation_vfnet_raw_FL ablation_vfnet_raw_VFL \
        --pair ablation_vfnet_raw_VFL ablation_vfnet_star_VFL \
        --pair ablation_vfnet_star_VFL ablation_vfnet_VFL
"""
import argparse
import os
import sys

try:
    import vfnet  # noqa: F401
except ImportError:  # running from a source checkout without `make install`
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "projects", "VFNet"))

from vfnet.analysis.seed_runs import (
    collect_seed_runs,
    paired_differences,
    seed_runs_markdown,
    suffix_pairs,
    summarize_seed_runs,
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("root", help="folder of run folders NAME_seedS, each with eval_metrics.json")
    parser.add_argument("--metric", default="bbox/AP", help="TASK/KEY of eval_metrics.json (default bbox/AP)")
    parser.add_argument(
        "--suffix-pair",
        nargs=2,
        metavar=("BEFORE", "AFTER"),
        action="append",
        default=[],
        help="compare every NAME+BEFORE with NAME+AFTER (e.g. _FL _VFL); repeatable",
    )
    parser.add_argument(
        "--pair", nargs=2, metavar=("BEFORE", "AFTER"), action="append", default=[], help="compare two runs; repeatable"
    )
    args = parser.parse_args(argv)

    runs = collect_seed_runs(args.root, args.metric)
    if not runs:
        print(f"no finished runs (NAME_seedS/eval_metrics.json) under {args.root}", file=sys.stderr)
        return 1
    pairs = [pair for before, after in args.suffix_pair for pair in suffix_pairs(runs, before, after)]
    pairs += [tuple(p) for p in args.pair]
    pairs = list(dict.fromkeys(pairs))  # a pair asked for twice is compared once
    differences, notes = paired_differences(runs, pairs)
    print(seed_runs_markdown(summarize_seed_runs(runs), differences, args.metric))
    for note in notes:
        print(f"not compared: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
