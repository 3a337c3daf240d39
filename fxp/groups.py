"""Runs that differ only in seed or fold, read as one result: each metric's mean, standard deviation and count.

A group is a folder whose members are run folders (`fold0..`, `seed0..`), with `group.json` naming its kind
(`cv` or `seeds`) and members. Light imports only (the stdlib): `fxp runs` groups runs without torch.
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

GROUP = "group.json"
KINDS = ("cv", "seeds")


def spread(values: list[float]) -> dict:
    "{mean, std, n} of the finite values; std is the sample one (n-1), 0.0 for a single value."
    vals = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not vals:
        return dict(mean=None, std=None, n=0)
    return dict(mean=statistics.fmean(vals), std=statistics.stdev(vals) if len(vals) > 1 else 0.0, n=len(vals))


def summarize(members: list[dict]) -> dict[str, dict]:
    "{metric: spread} over the members' metric dicts ({metric: value}), for the metrics every member has."
    names = set.intersection(*(set(m) for m in members)) if members else set()
    return {name: spread([m[name] for m in members]) for name in sorted(names)}


def cell(entry: dict, digits: int = 3) -> str:
    "`0.972 ± 0.004 (n=3)`: how a table shows a metric's spread; '' if no member had it."
    if not entry or entry.get("mean") is None:
        return ""
    return f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f} (n={entry['n']})"


def record(folder: Path, kind: str, members: list[str], **extra) -> dict:
    "The group's record: its kind, its members' folder names (relative to it) and anything the kind adds."
    if kind not in KINDS:
        raise ValueError(f"group kind {kind!r} is not one of {', '.join(KINDS)}")
    return dict(kind=kind, members=list(members), **extra)


def read(folder: Path) -> dict | None:
    "group.json of `folder`, or None when the folder is no group (or its record is unreadable)."
    try:
        group = json.loads((Path(folder) / GROUP).read_text())
    except (OSError, ValueError):
        return None
    return group if isinstance(group, dict) and group.get("kind") in KINDS else None


def is_group(folder: Path) -> bool:
    return read(folder) is not None
