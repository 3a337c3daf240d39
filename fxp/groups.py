"""Runs that differ only in seed or fold, read as one result: each metric's mean, standard deviation and count.

A group is a folder whose members are run folders (`fold0..`, `seed0..`), with `group.json` naming its kind
(`cv` or `seeds`) and members; a sweep's jobs whose overrides differ only in a MEMBER_KEYS key (a sweep over
trainer.seed) are a group too, found from their overrides (`grouped`). A group's numbers are its completed members'
(n counts them), and it is a candidate for a sweep's best only once every member completed (`best`): a recipe is
judged by its mean, not by a lucky seed. Light imports only (the stdlib and fxp.runs): `fxp runs` groups runs
without torch.
"""
from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from pathlib import Path

from fxp.runs import (
    NOT_STARTED,
    baselines,
    best_job,
    csv_text,
    is_run,
    iso,
    not_started_row,
    read_jobs,
    read_run,
    read_summary,
    started,
    sweep_jobs,
)

GROUP = "group.json"
KINDS = ("cv", "seeds")
NOUNS = {"cv": "folds", "seeds": "seeds"}  # what a group's members are: `[3 seeds]`
MEMBER_KEYS = ("trainer.seed",)  # what runs may differ in and still be one group (a sweep over trainer.seed)


def spread(values: list[float]) -> dict:
    "{mean, std, n} of the finite values; std is the sample one (n-1), 0.0 for a single value."
    vals = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not vals:
        return dict(mean=None, std=None, n=0)
    return dict(mean=statistics.fmean(vals), std=statistics.stdev(vals) if len(vals) > 1 else 0.0, n=len(vals))


def summarize(members: list[dict]) -> dict[str, dict]:
    "{metric: spread} over the members' metric dicts ({metric: value}), for the metrics every member has (in order)."
    names = [name for name in (members[0] if members else {}) if all(name in m for m in members)]
    return {name: spread([m[name] for m in members]) for name in names}


def cell(entry: dict, digits: int = 3) -> str:
    "`0.972 ± 0.004 (n=3)`: how a table shows a metric's spread; '' if no member had it."
    if not entry or entry.get("mean") is None:
        return ""
    return f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f} (n={entry['n']})"


def record(folder: Path, kind: str, members: list[str], **extra) -> dict:
    """The group's record, written whole as `folder`'s group.json and returned: its kind, its members' folder names
    (relative to it) and anything the kind adds."""
    from fxp.writer import write_atomic

    if kind not in KINDS:
        raise ValueError(f"group kind {kind!r} is not one of {', '.join(KINDS)}")
    out = dict(kind=kind, members=list(members), **extra)
    write_atomic(Path(folder) / GROUP, json.dumps(out, indent=2))
    return out


def read(folder: Path) -> dict | None:
    "group.json of `folder`, or None when the folder is no group (or its record is unreadable)."
    try:
        group = json.loads((Path(folder) / GROUP).read_text())
    except (OSError, ValueError):
        return None
    return group if isinstance(group, dict) and group.get("kind") in KINDS else None


def is_group(folder: Path) -> bool:
    return read(folder) is not None


def files(kind: str) -> tuple[str, str]:
    "A group folder's own files: `<kind>.csv` (a row per member) and `<kind>.json` (each metric's mean, std and n)."
    return f"{kind}.csv", f"{kind}.json"


# --- groups as rows (fxp runs, compare, report, sweep.csv and best.json) -------------------------------------------


def read_group(path: Path, root: Path) -> dict:
    """A group folder as one row (`run` relative to root), its members' rows (fxp.runs.read_run) under `members`: a
    member group.json lists that has no run folder yet is `not started`."""
    path = Path(path)
    group, run = read(path) or {}, path.relative_to(root).as_posix()
    names = [str(m) for m in group.get("members") or []]
    rows = [read_run(path / m, root) if is_run(path / m) else not_started_row(f"{run}/{m}".removeprefix("./"), [])
            for m in names]
    return group_row(run, rows, group.get("kind", "seeds"), group.get("overrides"), iso(started(path)))


def row(path: Path, root: Path) -> dict:
    "A run or group folder as a row."
    return read_group(path, root) if is_group(path) else read_run(path, root)


def group_row(run: str, rows: list[dict], kind: str, overrides: list[str] | None = None, begun: str = "") -> dict:
    """The fields of a run's row (fxp.runs.read_run) for a group of `rows`: final and best are the completed members'
    means, `spread` each metric's {mean, std, n}; `members` the rows themselves, `n` how many completed."""
    done = [r for r in rows if r["status"] == "completed"]
    started_rows = [r for r in rows if r["status"] != NOT_STARTED] or rows
    first = started_rows[0] if started_rows else not_started_row(run, [])  # a record listing no member
    final, best = summarize([r["final_metrics"] for r in done]), summarize([r["best_metrics"] for r in done])
    return dict(run=run, kind="group", group=kind, task=", ".join(dict.fromkeys(r["task"] for r in started_rows)),
                overrides=list(overrides) if isinstance(overrides, list) else joined([r["overrides"] for r in rows]),
                metric=first["metric"], mode=first["mode"], final=final.get(first["metric"], {}).get("mean"),
                best=best.get(first["metric"], {}).get("mean"),
                baseline=spread([r["baseline"] for r in started_rows])["mean"], baseline_of=first["baseline_of"],
                model_epoch=None, seed=None, epochs=first["epochs"],
                wall_time_s=round(sum(r["wall_time_s"] or 0 for r in rows), 3), status=status(rows),
                error=next((r["error"] for r in rows if r["error"]), None), suggested_lrs=None,
                started=begun or min((r["started"] for r in started_rows if r["started"]), default=""),
                final_metrics={k: v["mean"] for k, v in final.items()},
                best_metrics={k: v["mean"] for k, v in best.items()}, n=len(done), spread=dict(final=final, best=best),
                members=rows, job_status=dict(Counter(r["status"] for r in rows)))


def status(rows: list[dict]) -> str:
    "The rows' common status, else the count of each, most first, those not started last (`3 completed, 1 failed`)."
    counts = Counter(r["status"] for r in rows)
    if len(counts) == 1:
        return next(iter(counts))
    ordered = sorted(counts.most_common(), key=lambda c: c[0] == NOT_STARTED)
    return ", ".join(f"{n} {s}" for s, n in ordered) or "empty"


def joined(overrides: list[list[str]]) -> list[str]:
    "Each override key once: `k=v` where all the lists agree, `k=a,b,c` for what they vary (a sweep's, a group's)."
    values: dict[str, list[str]] = {}
    for listed in overrides:
        for o in listed:
            key, _, value = o.partition("=")
            values.setdefault(key, [])
            if value not in values[key]:
                values[key].append(value)
    return [f"{k}={','.join(v)}" for k, v in values.items()]


def together(items: list, overrides_of) -> list[list]:
    """`items` in clusters, each where its first item was: those whose overrides (`overrides_of(item)`) differ only in
    MEMBER_KEYS are one cluster; items alike in every override (the same seed too) stay apart."""
    clusters: dict[tuple, list] = {}
    for i, item in enumerate(items):
        key = tuple(sorted(o for o in overrides_of(item) if _key(o) not in MEMBER_KEYS))
        clusters.setdefault(key, []).append((i, item))
    out = []
    for cluster in clusters.values():
        varied = len({tuple(sorted(overrides_of(item))) for _, item in cluster}) > 1
        out += [cluster] if varied else [[pair] for pair in cluster]
    return [[item for _, item in c] for c in sorted(out, key=lambda c: c[0][0])]


def _key(override: str) -> str:
    return override.lstrip("+~").partition("=")[0]


def grouped(rows: list[dict]) -> list[dict]:
    """`rows` with the runs among them that differ only in MEMBER_KEYS as one group row each (its `run` their ids
    joined, `0,2,4`), in the place of the first of them."""
    clusters = {id(c[0]): c for c in together([r for r in rows if r["kind"] == "run"], lambda r: r["overrides"])}
    inside = {id(r) for c in clusters.values() if len(c) > 1 for r in c}
    out = []
    for r in rows:
        cluster = clusters.get(id(r), [r])
        if len(cluster) > 1:
            out.append(group_row(",".join(m["run"] for m in cluster), cluster, "seeds"))
        elif id(r) not in inside:
            out.append(r)
    return out


def expanded(rows: list[dict]) -> list[dict]:
    "`rows` with each group row replaced by its members' rows."
    return [m for r in rows for m in (r["members"] if r["kind"] == "group" else [r])]


def best(rows: list[dict]) -> dict | None:
    """The best row by the monitor metric (fxp.runs.best_job) once the runs that differ only in seed are grouped: a
    group by its completed members' mean, and only once every member completed."""
    return best_job(grouped(rows))


def jobs(sweep_dir: Path, planned: bool = True) -> list[dict]:
    """A sweep's jobs as rows (fxp.runs.sweep_jobs; `planned`: those its record lists and it never started too), a
    job that is a group folder (a sweep with trainer.seeds) as its group row."""
    sweep_dir = Path(sweep_dir)
    rows = sweep_jobs(sweep_dir) if planned else read_jobs(sweep_dir)
    return [read_group(sweep_dir / r["run"], sweep_dir) if is_group(sweep_dir / r["run"]) else r for r in rows]


# --- a group folder's own files ------------------------------------------------------------------------------------


def written(folder: Path) -> dict:
    """`<kind>.csv` (a row per member: its seed, status, final and best metrics) and `<kind>.json` (each metric's
    mean, std and n, final and best, and the members' baselines as summary.json holds them) written whole into the
    group folder, from its members' folders; returns the group's row."""
    from fxp.writer import write_atomic

    folder = Path(folder)
    group = read_group(folder, folder)
    table, summary = files(group["group"])
    write_atomic(folder / table, csv_text([member_csv_row(r) for r in group["members"]]))
    write_atomic(folder / summary, json.dumps(summary_of(group, folder), indent=2))
    return group


def member_csv_row(member: dict) -> dict:
    return {"member": member["run"], "seed": member["seed"], "status": member["status"],
            **{f"final_{k}": v for k, v in member["final_metrics"].items()},
            **{f"best_{k}": v for k, v in member["best_metrics"].items()},
            "epochs": member["epochs"], "wall_time_s": member["wall_time_s"]}


def summary_of(group: dict, folder: Path) -> dict:
    "What `<kind>.json` holds."
    done = [read_summary(folder / m["run"]) for m in group["members"] if m["status"] == "completed"]
    base = {k: dict(value=value, by=who) for k, (value, who) in mean_baselines(done).items()}
    return dict(kind=group["group"], status=group["status"], members=len(group["members"]), n=group["n"],
                monitor=dict(metric=group["metric"], mode=group["mode"]), final_metrics=group["spread"]["final"],
                best_metrics=group["spread"]["best"], baselines=base)


def mean_baselines(summaries: list[dict]) -> dict:
    """{metric: (value, who)} for the metrics every summary has a baseline of (fxp.runs.baselines): their mean (a cv
    group's folds each have their own; a seed group's members share theirs)."""
    each = [baselines(s) for s in summaries]
    common = [k for k in (each[0] if each else {}) if all(k in b for b in each)]
    return {k: (spread([b[k][0] for b in each])["mean"], each[0][k][1]) for k in common}
