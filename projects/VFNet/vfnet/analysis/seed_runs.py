"""
Results of the same configurations trained with several seeds: collected from the runs'
``eval_metrics.json`` (what ``tools/train_net.py`` writes after its evaluation), summarised per
configuration (each seed, mean, worst, best) and compared in pairs (e.g. a detector's focal-loss
run against its Varifocal-Loss run of the same seed).

A run is a folder ``NAME_seedS`` (``S`` an integer) holding ``eval_metrics.json``; folders of
another name are an error, not skipped, so that a table never quietly leaves a run out.
"""
import json
import math
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

__all__ = [
    "SeedValues",
    "collect_seed_runs",
    "summarize_seed_runs",
    "paired_differences",
    "suffix_pairs",
    "seed_runs_markdown",
]

_RUN_NAME = re.compile(r"^(?P<name>.+)_seed(?P<seed>\d+)$")
METRICS_FILE = "eval_metrics.json"


@dataclass(frozen=True)
class SeedValues:
    """A number over seeds: one configuration's metric, or the difference of two configurations'."""

    name: str
    values: Dict[int, float]  # seed -> value

    @property
    def mean(self) -> float:
        return sum(self.values.values()) / len(self.values)

    @property
    def worst(self) -> float:
        return min(self.values.values())

    @property
    def best(self) -> float:
        return max(self.values.values())


def collect_seed_runs(root: str, metric: str = "bbox/AP") -> Dict[str, Dict[int, float]]:
    """
    Read ``root/NAME_seedS/eval_metrics.json`` for every run folder under ``root``.

    Args:
        root: folder of run folders (e.g. ``output/vfl_table``).
        metric: ``TASK/KEY`` in the metrics file, e.g. ``bbox/AP`` or ``bbox/AP50``.

    Returns:
        {NAME: {S: value}}. Folders without a metrics file (runs not finished) are left out;
        a folder whose name is not ``NAME_seedS``, or a metrics file without ``metric``, or
        a non-finite value, raises ``ValueError``.
    """
    task, _, key = metric.partition("/")
    if not key:
        raise ValueError(f"metric must be 'TASK/KEY' (e.g. 'bbox/AP'), got {metric!r}")
    if not os.path.isdir(root):
        raise ValueError(f"{root!r} is not a folder of runs")
    runs: Dict[str, Dict[int, float]] = {}
    for entry in sorted(os.listdir(root)):
        path = os.path.join(root, entry, METRICS_FILE)
        if not os.path.isfile(path):
            continue
        match = _RUN_NAME.match(entry)
        if match is None:
            raise ValueError(f"run folder {os.path.join(root, entry)!r} is not named NAME_seedS")
        with open(path) as f:
            results = json.load(f)
        try:
            value = float(results[task][key])
        except KeyError:
            raise ValueError(f"{path} has no {metric!r} (tasks: {sorted(results)})") from None
        if not math.isfinite(value):
            raise ValueError(f"{path}: {metric} is {value}")
        runs.setdefault(match["name"], {})[int(match["seed"])] = value
    return runs


def summarize_seed_runs(runs: Dict[str, Dict[int, float]]) -> List[SeedValues]:
    """One :class:`SeedValues` per configuration of :func:`collect_seed_runs`' result, sorted by name."""
    return [SeedValues(name, dict(sorted(values.items()))) for name, values in sorted(runs.items())]


def suffix_pairs(runs: Dict[str, Dict[int, float]], before_suffix: str, after_suffix: str) -> List[Tuple[str, str]]:
    """
    The pairs (``X{before_suffix}``, ``X{after_suffix}``) among the configurations of ``runs``
    (e.g. ``_FL``/``_VFL``: every detector's focal-loss run and its Varifocal-Loss twin). A
    ``X{before_suffix}`` without its twin is paired with the missing name, which
    :func:`paired_differences` then reports.
    """
    if not before_suffix or not after_suffix or before_suffix == after_suffix:
        raise ValueError(f"two different, non-empty suffixes are needed, got {before_suffix!r} and {after_suffix!r}")
    return [
        (name, name[: -len(before_suffix)] + after_suffix) for name in sorted(runs) if name.endswith(before_suffix)
    ]


def paired_differences(
    runs: Dict[str, Dict[int, float]], pairs: Sequence[Tuple[str, str]]
) -> Tuple[List[SeedValues], List[str]]:
    """
    Per-seed differences ``after - before`` of each (before, after) pair of configurations,
    over the seeds both ran, as :class:`SeedValues` named "before -> after".

    Returns:
        (differences in the order of ``pairs``, notes): a note for each configuration that has no
        runs and each seed only one of the two has, so that the caller prints what was not compared.
    """
    differences, notes = [], []
    for before_name, after_name in pairs:
        missing = [n for n in (before_name, after_name) if n not in runs]
        if missing:
            notes.append(f"{before_name} -> {after_name}: no runs of {', '.join(missing)}")
            continue
        before, after = runs[before_name], runs[after_name]
        for seed in sorted(set(before) ^ set(after)):
            only_in = before_name if seed in before else after_name
            notes.append(f"{before_name} -> {after_name}: seed {seed} only in {only_in}")
        common = sorted(set(before) & set(after))
        if common:
            differences.append(
                SeedValues(f"{before_name} -> {after_name}", {s: after[s] - before[s] for s in common})
            )
    return differences, notes


def seed_runs_markdown(
    summaries: Sequence[SeedValues], differences: Sequence[SeedValues] = (), metric: str = "bbox/AP"
) -> str:
    """Markdown tables: each configuration's values per seed, mean, worst and best; then the
    differences of pairs per seed, mean and worst."""
    lines = [
        f"| run | seeds | {metric} per seed | mean | worst | best |",
        "|---|---|---|---|---|---|",
    ]
    for s in summaries:
        per_seed = ", ".join(f"{v:.1f}" for v in s.values.values())
        lines.append(f"| {s.name} | {_seed_list(s)} | {per_seed} | {s.mean:.1f} | {s.worst:.1f} | {s.best:.1f} |")
    if differences:
        lines += ["", "| pair | seeds | difference per seed | mean | worst |", "|---|---|---|---|---|"]
        for d in differences:
            per_seed = ", ".join(f"{v:+.1f}" for v in d.values.values())
            lines.append(f"| {d.name} | {_seed_list(d)} | {per_seed} | {d.mean:+.1f} | {d.worst:+.1f} |")
    return "\n".join(lines)


def _seed_list(v: SeedValues) -> str:
    return ", ".join(str(seed) for seed in v.values)
