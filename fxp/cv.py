"""A k-fold cross-validation (`trainer.folds=K`): K runs of the recipe in fold0..fold{K-1} of a cv folder
(`<task>/cv/<stamp>`, or a sweep's job folder), each validating on one fold of the items, and the folder's own files:
group.json (fxp.groups: kind cv and its members), folds.json (which fold each item is in: fxp.folds draws it as the
first fold's data is built, every later fold and a resume read it), cv.csv (a row per completed fold: fold, n_valid,
its final metrics) and cv.json (each metric's mean, std and n over the folds, and the baselines').

The cv folder is a run folder too (`Cv`, a fxp.writer.Run): claimed, locked and given a status as any run, its
config.yaml the command's config and its summary's metrics its folds' means; so a sweep of cross-validations picks its
best job by the mean, and an Optuna search optimises it. Its training (`train`) is its folds, one after the other, each
a normal run folder (its config: the command's with `trainer.fold=i` and `data.folds_file`). `fxp resume CV_DIR`, and
a sweep resumed, go on: a completed fold is left as it is, an interrupted or killed one resumes from its checkpoint
(fxp.resume), one never started or stopped before its first checkpoint starts, on the same folds.

Light imports at module level: `fxp resume` loads it before it knows what it resumes.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path

from fxp import groups
from fxp.errors import FxpError
from fxp.folds import FOLDS
from fxp.runs import LOG, csv_text, is_run, last_checkpoint, read_overrides, read_run, read_summary
from fxp.writer import Run, write_atomic

CV_CSV, CV_JSON = "cv.csv", "cv.json"
log = logging.getLogger("fxp")


def wanted(cfg, what: str) -> bool:
    "Whether the command is a cross-validation: `fxp train` with trainer.folds and no one fold."
    return what == "train" and cfg.trainer.folds is not None and cfg.trainer.fold is None


def is_cv(path: Path) -> bool:
    return (groups.read(path) or {}).get("kind") == "cv"


def members(k: int) -> list[str]:
    return [f"fold{i}" for i in range(k)]


def summaries(path: Path, k: int) -> list[dict]:
    "Each fold's summary.json ({} for a fold not started)."
    return [read_summary(Path(path) / m) for m in members(k)]


def completed(path: Path, k: int) -> list[tuple[int, dict]]:
    return [(i, s) for i, s in enumerate(summaries(path, k)) if s.get("status") == "completed"]


class Cv(Run):
    """A cv folder as a run: its metrics the means of its completed folds'. `finish`: what each fold's run does as it
    ends (the diagnosis, trackers: fxp.apps.finish); the cv folder itself has no curves to diagnose."""

    def __init__(self, path: Path, cfg, overrides: list[str], task: str, finish=None, resume=None):
        super().__init__(path, cfg, overrides, task, resume=resume)
        self.fold_finish = finish
        self.info["folds"] = cfg.trainer.folds

    def results(self) -> tuple[dict, dict, int]:
        k = self.cfg.trainer.folds
        done = [s for _, s in completed(self.path, k)]
        epochs = sum(s.get("epochs") or 0 for s in summaries(self.path, k))
        final, best = (means([s.get(key) or {} for s in done]) for key in ("final_metrics", "best_metrics"))
        return final, best, epochs


def means(metrics: list[dict]) -> dict:
    "{metric: mean} over the folds' metric dicts."
    return {name: e["mean"] for name, e in groups.summarize(metrics).items() if e["mean"] is not None}


def train(cfg, group: Cv, fit, resume: bool = False) -> None:
    """The folds of the cross-validation in `group`'s folder, one after the other; `fit(cfg, run, resume=...)` trains a
    fold's run as any run is trained (fxp.apps). After each: its line, cv.csv, cv.json and the cv's summary. A fold
    that fails stops the cross-validation (its error, naming the fold, is the cv's)."""
    from fxp.logfile import logging_to

    k = cfg.trainer.folds
    groups.record(group.path, "cv", members(k))
    file = Path(cfg.data.folds_file or group.path / FOLDS)
    if resume:
        say(group.resume["note"])
    for i in range(k):
        run = fold_run(cfg, group, i, file, resume)
        if run is None:
            continue
        say(f"fold {i} of {k}: {run.path}")
        try:
            with run, logging_to(run.path / LOG):
                fit(run.cfg, run, resume=run.resume is not None)
        except FxpError as e:
            raise type(e)(f"fold {i}: {e}") from e
        say(fold_line(run.path, i, k, cfg.task.monitor.metric))
        record(group.path, k, cfg.task.monitor)
        group.write_summary()


def fold_run(cfg, group: Cv, i: int, file: Path, resume: bool) -> Run | None:
    """Fold i's run, to train: new, or (resume) reopened at its checkpoint; None if it completed (left as it is). A
    fold a resume finds stopped before its first checkpoint is started again, its folder set aside first."""
    path = group.path / f"fold{i}"
    if resume and is_run(path):
        status = read_run(path, group.path)["status"]
        if status == "completed":
            return None
        if last_checkpoint(path) is not None:
            from fxp.resume import reopening

            fold_cfg, reopen = reopening(path, status, group.resume["overrides"], finish=group.fold_finish)
            return reopen(fold_cfg)
        from fxp.sweeps import set_aside

        set_aside(path, status)
    fold_cfg = of_fold(cfg, i, file)
    overrides = [*group.overrides, f"trainer.fold={i}", f"data.folds_file={file}"]
    return Run(path, fold_cfg, overrides, group.task, finish=group.fold_finish)


def of_fold(cfg, i: int, file: Path):
    "The config of fold i: the cross-validation's, validating on fold i of the folds recorded in `file`."
    from omegaconf import OmegaConf

    from fxp import config

    out = OmegaConf.create(OmegaConf.to_container(cfg))
    out.trainer.fold, out.data.folds_file = i, str(file)
    return config.validate(out)


def fold_line(path: Path, i: int, k: int, metric: str) -> str:
    "e.g. `fold 2 of 5: completed in 8.1s, 6512 valid items, accuracy 0.8311`"
    s = read_summary(path)
    value = (s.get("final_metrics") or {}).get(metric)
    shown = f", {metric} {value:.4g}" if isinstance(value, (int, float)) else ""
    return (f"fold {i} of {k}: {s.get('status')} in {s.get('wall_time_s') or 0:.1f}s, {s.get('items_valid')} valid "
            f"items{shown}")


def record(path: Path, k: int, monitor) -> None:
    """cv.csv (a row per completed fold: fold, n_valid, its final metrics) and cv.json (each final and best metric's
    mean, std and n over the completed folds, and the baselines'), each written whole."""
    done = completed(path, k)
    if not done:
        return
    rows = [{"fold": i, "n_valid": s.get("items_valid"), **(s.get("final_metrics") or {})} for i, s in done]
    write_atomic(path / CV_CSV, csv_text(rows))
    out = dict(folds=k, completed=len(done), monitor=dict(metric=monitor.metric, mode=monitor.mode),
               metrics=groups.summarize([s.get("final_metrics") or {} for _, s in done]),
               best_metrics=groups.summarize([s.get("best_metrics") or {} for _, s in done]),
               baselines=baselines([s for _, s in done]))
    write_atomic(path / CV_JSON, json.dumps(out, indent=2))


def baselines(folds: list[dict]) -> dict:
    """Each baseline's mean, std and n over the folds, and who reaches it ({metric: {mean, std, n, value, by}}; value,
    the mean, is what fxp.runs.baselines reads)."""
    each = [s.get("baselines") if isinstance(s.get("baselines"), dict) else {} for s in folds]
    spread = groups.summarize([{m: e.get("value") for m, e in b.items() if isinstance(e, dict)} for b in each])
    return {m: {**e, "value": e["mean"], "by": next((b[m].get("by") for b in each if m in b), None)}
            for m, e in spread.items()}


def reopening(path: Path, status: str, overrides=(), finish=None):
    """The cross-validation's config to go on with, and `reopen(cfg)`: its folder opened again (`fxp resume CV_DIR`, a
    sweep's cv job resumed); `overrides`: those a resume takes (fxp.resume.RESUMABLE), passed on to its folds."""
    from fxp.resume import saved_config

    cfg = saved_config(path, list(overrides), None)
    k = cfg.trainer.folds
    note = f"cross-validation resumed: {len(completed(path, k))} of {k} folds completed"
    entry = dict(time=datetime.now().isoformat(timespec="seconds"), status=status, overrides=list(overrides),
                 note=note)

    def reopen(cfg):
        task = read_summary(path).get("task") or path.parent.parent.name
        return Cv(path, cfg, read_overrides(path), task, finish=finish, resume=entry)
    return cfg, reopen


def say(line: str) -> None:
    "A line on the console and in train.log."
    log.info(line)
    print(line, flush=True)
