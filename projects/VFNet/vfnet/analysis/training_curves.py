"""
Training curves from Detectron2's ``metrics.json``: JSON lines written by its ``JSONWriter``,
each ``{"iteration": i, <scalar name>: value, ...}`` (losses, ``lr``, timings, and evaluation
results such as ``bbox/AP`` in the line of the iteration they were computed at).
"""
import json
import re
from typing import Dict, List, Sequence, Tuple

__all__ = ["load_metrics", "metric_series", "loss_keys", "ap_keys"]


def load_metrics(path: str) -> List[Dict]:
    """The records of a ``metrics.json``, in file order; a line that is not a JSON object with an
    ``iteration`` raises an error naming the file and line."""
    records = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{number}: not a JSON line ({e.msg})") from e
            if not isinstance(record, dict) or "iteration" not in record:
                raise ValueError(f"{path}:{number}: expected an object with an 'iteration', got {line.strip()[:80]!r}")
            records.append(record)
    return records


def metric_series(records: Sequence[Dict], key: str) -> Tuple[List[int], List[float]]:
    """
    ``(iterations, values)`` of one scalar, sorted by iteration. When an iteration appears more
    than once (a run resumed from an earlier checkpoint writes its iterations again), the value
    written last is kept.
    """
    values = {}
    for record in records:
        if key in record:
            values[int(record["iteration"])] = float(record[key])
    iterations = sorted(values)
    return iterations, [values[i] for i in iterations]


def loss_keys(records: Sequence[Dict]) -> List[str]:
    """The loss scalars (``total_loss`` and ``loss_*``), ``total_loss`` first."""
    keys = sorted({k for r in records for k in r if k.startswith("loss_")})
    if any("total_loss" in r for r in records):
        keys.insert(0, "total_loss")
    return keys


_AP_KEY = re.compile(r"(^|/)AP(50|75)?$")


def ap_keys(records: Sequence[Dict]) -> List[str]:
    """The overall AP, AP50 and AP75 scalars of the evaluations (e.g. ``bbox/AP``, ``swa_bbox/AP50``)."""
    return sorted({k for r in records for k in r if _AP_KEY.search(k)})
