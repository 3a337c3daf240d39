"""The Hydra apps `fxp train`, `fxp lr-find` and `fxp show`, and one job's lifecycle: validate, claim the run folder,
train, report. What runs before them, the cheap pre-check of every job's config, is fxp.precheck; the table a job
prints as it ends, fxp.reports.

Imported only by the commands that compose a config; torch and fastai load in `job`, once the config is known good.
"""
from __future__ import annotations

import signal
import sys
from functools import partial
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from fxp import config
from fxp.errors import FxpError, Pruned, describe
from fxp.precheck import check_kwargs, precheck
from fxp.reports import group_report, report
from fxp.runs import read_summary

OPTIONAL_GROUPS = ("logger",)


def hydra_command(app, help_overrides: tuple = ()):
    """A subcommand that validates the overrides cheaply, then hands argv to the `@hydra.main` app; `--help` is
    Hydra's, with `help_overrides` (the command's own name and header in it)."""
    def run(args: list[str]) -> int:
        args = [_no_option(a) for a in args]
        if "--help" in args or "-h" in args:
            args += list(help_overrides)
        config.register()
        args = precheck(args)
        sys.argv = ["fxp", *args]  # Hydra reads sys.argv (launchers too); rewritten once, here
        quiet_libraries()
        app()
        return 0
    return run


# Libraries whose INFO lines Hydra's console logging would show: alembic's "setup plugin ..." (seven lines as Optuna
# opens a study's database)
QUIET_LOGGERS = ("alembic",)


def quiet_libraries() -> None:
    "The QUIET_LOGGERS at WARNING: their INFO lines go, their warnings still show."
    import logging

    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _no_option(arg: str) -> str:
    "`logger=null` as Hydra spells it (`~logger`): an optional group with nothing chosen."
    return f"~{arg.partition('=')[0]}" if arg in (f"{g}=null" for g in OPTIONAL_GROUPS) else arg



def job(cfg, what: str) -> float:
    """One Hydra job: validate, claim the run folder, train; errors end the job with one line.

    Returns the job's best value of `task.monitor` (NaN when it did not complete): what Optuna's sweeper optimises.
    """
    from fxp import cv, distributed
    from fxp.sweeps import job_resources
    from fxp.trials import of_job
    from fxp.writer import Run

    hc = HydraConfig.get()
    if distributed.node_rank(cfg):  # another machine's share of a multi-node run: node 0's job holds the run
        return follow(cfg, hc.runtime.output_dir)
    resources = job_resources(hc)  # a local parallel job's GPU and threads, before torch starts CUDA
    trial = of_job(hc)
    if resources and cfg.trainer.num_threads is None:
        cfg.trainer.num_threads = resources["num_threads"]

    def claim(cfg, path=None, overrides=None):
        """The job's Run: in its folder, or (a seed group's member) in `path` with its own `overrides`; a
        cross-validation's folder is a `cv.Cv`, whose folds are its runs."""
        given = list(hc.overrides.task) if overrides is None else overrides
        opened = cv.Cv if cv.wanted(cfg, what) else Run
        run = opened(path or hc.runtime.output_dir, cfg, given, hc.runtime.choices.task, finish=finish)
        if resources:
            run.info["resources"] = {**resources, "num_threads": cfg.trainer.num_threads}
        if trial and path is None and not distributed.wanted(cfg):  # an Optuna trial: its job reports each epoch
            run.info["trial"] = trial  # to it (fxp.train.fit); a seed group's members do not (it is told their mean)
        return run

    if hc.mode != RunMode.MULTIRUN:
        return objective(trained(cfg, claim, what, hc))
    return sweep_job(cfg, what, claim, hc)


def trained(cfg, claim, what: str, hc, multirun: bool = False):
    "The job trained: one run (`execute`), or with trainer.seeds > 1 a seed group (`seed_group`)."
    if what == "train" and cfg.trainer.seeds > 1:
        return seed_group(cfg, claim, Path(hc.runtime.output_dir), list(hc.overrides.task), multirun)
    return execute(cfg, claim, what, multirun=multirun)


def seed_group(cfg, claim, folder: Path, overrides: list[str], multirun: bool = False):
    """trainer.seeds=N: the recipe trained N times with the seeds trainer.seed, +1, ..., into the job folder's seed0,
    seed1, ... (each a run folder, its overrides naming its seed), recorded as a group (fxp.groups: group.json first,
    then seeds.csv and seeds.json, however it ends). A seed that diverges is a result and the next one starts; one that
    fails (or Ctrl-C) ends the group there, as it would a single run. The job's result: the group."""
    from types import SimpleNamespace

    from fxp import groups

    seeds = [cfg.trainer.seed + i for i in range(cfg.trainer.seeds)]
    names = [f"seed{i}" for i in range(len(seeds))]
    given = [o for o in overrides if o.lstrip("+~").partition("=")[0] not in ("trainer.seed", "trainer.seeds")]
    groups.record(folder, "seeds", names, seeds=seeds, overrides=overrides)
    try:
        for seed, name in zip(seeds, names):
            status = member(member_config(cfg, seed), claim, folder / name, [*given, f"trainer.seed={seed}"], multirun)
            if status not in GOES_ON:
                break
    finally:
        group = groups.written(folder)
    group_report(group, folder)
    if group["status"] != "completed":
        _end(multirun, 1, f"{len(seeds) - group['n']} of {len(seeds)} seeds did not complete ({group['status']}); "
                          f"their numbers are left out of the group's: {folder}")
    went_on = all(m["status"] in GOES_ON for m in group["members"])  # else it stopped at a failure (sweep.fail_fast)
    return SimpleNamespace(path=folder, cfg=cfg, status=group["status"] if went_on else "failed")


GOES_ON = ("completed", "diverged")  # a seed group's member that ended so: the next seed starts


def member(cfg, claim, path: Path, overrides: list[str], multirun: bool) -> str | None:
    """A seed group's member trained in `path` (its own train.log), with its `overrides`; its status. A single run's
    exit on a failure or Ctrl-C passes through, a divergence's does not."""
    from fxp.logfile import logging_to
    from fxp.runs import LOG

    path.mkdir(exist_ok=True)
    try:
        with logging_to(path / LOG):
            execute(cfg, lambda c: claim(c, path, overrides), "train", multirun=multirun)
    except SystemExit:
        if read_summary(path).get("status") != "diverged":
            raise
    return read_summary(path).get("status")


def member_config(cfg, seed: int):
    "The config of a seed group's member: the group's, with its seed, as one run."
    import copy

    member = copy.deepcopy(cfg)
    member.trainer.seed, member.trainer.seeds = seed, 1
    return member


def sweep_job(cfg, what: str, claim, hc) -> float:
    """A job of a sweep: started, or (`fxp resume SWEEP_DIR`) resumed or left as it is, as fxp.sweeps.before_job
    says from its folder. A Ctrl-C or SIGTERM stops the sweep; so does a failure with sweep.fail_fast."""
    from fxp import sweeps
    from fxp.runs import read_monitor

    path, sweep_dir = Path(hc.runtime.output_dir), Path(hc.sweep.dir).absolute()
    here = sweeps.in_process(hc)
    try:
        with sweeps.signals_while_running(not here):
            action = sweeps.before_job(path, sweep_dir)
            if action == "skip":
                return float("nan")
            if action == "keep":
                print(sweeps.kept_line(path, sweep_dir), flush=True)
                return result(path, read_monitor(path).metric)
            if action == "resume":
                opened = resumed(path, sweep_dir, hc)
                run = execute(*opened, what, multirun=True, resume=True) if opened else None
            else:
                run = trained(cfg, claim, what, hc, multirun=True)
    except KeyboardInterrupt:
        return sweeps.interrupted(sweep_dir, path, here)
    if (run is None or run.status == "failed") and cfg.sweep.fail_fast:
        sweeps.failed_fast(sweep_dir, path, here)
    return objective(run)


def resumed(path: Path, sweep_dir: Path, hc):
    """(the saved config, its reopen) of an interrupted or killed job of a sweep being resumed (fxp.resume), with the
    overrides of the job a resume may take (where the data is, ...); None, its error line printed, if it cannot be."""
    from fxp import cv
    from fxp.resume import reopening, resumable
    from fxp.runs import read_run

    given = [o for o in hc.overrides.task if resumable(o.lstrip("+~").partition("=")[0])]
    try:
        opening = cv.reopening if cv.is_cv(path) else reopening
        return opening(path, read_run(path, sweep_dir)["status"], given, finish=finish)
    except FxpError as e:
        _end(True, 2, f"{e} (run folder {path})")
        return None


def execute(cfg, open_run, what: str, multirun: bool = False, **kwargs):
    """Validate `cfg`, open its run folder (`open_run(cfg)`: a new Run, or one `fxp resume` reopens), run
    `fxp.train.<what>(cfg, run, **kwargs)` in it with SIGTERM as Ctrl-C; errors end the job with one line (and its
    exit code, unless in a sweep; a Ctrl-C in a sweep goes on up, to stop it). Returns the run, None if it was never
    opened."""
    run = None
    try:
        cfg = config.validate(cfg)
        from fxp import trackers, train  # noqa: F401 (torch and fastai load here, after the config is good)

        check_kwargs(cfg)  # before the run folder is claimed (a job the precheck did not see: a sweeper's)
        trackers.check(cfg)
        with open_run(cfg) as run:
            if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:  # a sweep's process has its own (fxp.sweeps)
                signal.signal(signal.SIGTERM, _interrupt)
            fit(cfg, run, what, **kwargs)
        report(run)
    except Pruned as e:  # no error: the search stopped a trial that would not beat its others
        import logging

        logging.getLogger("fxp").info(str(e))  # train.log
        print(f"fxp: {e} (run folder {run.path})", flush=True)
    except FxpError as e:
        _end(multirun, 2, f"{e}{_where(run)}")
    except KeyboardInterrupt:
        if multirun:
            raise  # the sweep stops, and says so (fxp.sweeps.interrupted)
        _end(multirun, 130, f"interrupted; {_kept(run)}{_where(run)}")
    except Exception as e:  # a bug or an unforeseen failure (a full disk): one line here, the traceback in train.log
        _end(multirun, 1, f"{describe(e)}{_where(run)}")
    return run


def fit(cfg, run, what: str, **kwargs) -> None:
    """What a run does in its folder: `fxp.train.<what>`, over several processes where trainer.devices/nodes say so;
    a cross-validation's folder (fxp.cv.Cv): its folds, each run as this."""
    from fxp import cv, distributed, train

    if isinstance(run, cv.Cv):
        return cv.train(cfg, run, partial(fit, what="train"), **kwargs)
    many = what == "train" and distributed.wanted(cfg)  # over several processes: they train, this one waits
    (distributed.launcher if many else getattr(train, what))(cfg, run, **kwargs)


def finish(run) -> None:
    "What every run does as it ends, whatever its status: its diagnosis, then its trackers' files and status."
    from fxp import diagnose, trackers

    diagnose.finish(run)
    trackers.finish(run)


def _kept(run) -> str:
    "What an interrupted run keeps: its last checkpoint (where it stands), or none yet."
    from fxp.runs import last_checkpoint

    point = last_checkpoint(run.path) if run is not None else None
    if point is None:
        return "no checkpoint yet (no epoch had ended), so there is nothing to resume"
    where = Path(point["folder"]).relative_to(run.path).as_posix()  # a step's (lm) or a fold's (fold2) folder
    step = f"{where}'s " if where != "." else ""
    return (f"its checkpoint after {step}stage {point['stage']} epoch {point['epoch']} is kept; "
            f"go on with: fxp resume {run.path}")


def follow(cfg, path) -> float:
    """A node after the first of a multi-node run: start its ranks, which train with node 0's and write nothing (node
    0's job holds the run folder and its status). NaN: a sweeper's value is node 0's."""
    from types import SimpleNamespace

    from fxp import distributed, train

    try:
        cfg = config.validate(cfg)
        run = SimpleNamespace(path=Path(path), resume=None, info={})
        distributed.launch(cfg, run, train.check_device(cfg.trainer))
    except (FxpError, KeyboardInterrupt) as e:  # node 0's job records the run's end; this node says its own
        print(f"fxp: error: node {distributed.node_rank(cfg)}: {e or 'interrupted'}", file=sys.stderr)
    return float("nan")


def objective(run) -> float:
    return float("nan") if run is None else result(run.path, run.cfg.task.monitor.metric)


def result(path: Path, metric: str) -> float:
    "A job's best `metric`; a seed group's, the mean over its seeds once all completed (fxp.groups); else NaN."
    from fxp import groups

    if not groups.is_group(path):
        return value(read_summary(path), metric)
    group = groups.read_group(path, path.parent)
    return group["best"] if group["status"] == "completed" and group["best"] is not None else float("nan")


def value(summary: dict, metric: str) -> float:
    "A run's best `metric`; NaN unless it completed (Optuna records the trial as failed and the search goes on)."
    if summary.get("status") != "completed":
        return float("nan")
    return summary.get("best_metrics", {}).get(metric, float("nan"))


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _where(run) -> str:
    return f" (run folder {run.path}; details in train.log)" if run is not None else ""


def _end(multirun: bool, code: int, message: str) -> None:
    "Report a failed job; a sweep goes on with its other jobs, a single run exits with `code`."
    print(f"fxp: error: {message}", file=sys.stderr)
    if not multirun:
        raise SystemExit(code)



@hydra.main(config_path="pkg://fxp.conf", config_name="config", version_base="1.3")
def train_app(cfg) -> float:
    return job(cfg, "train")


@hydra.main(config_path="pkg://fxp.conf", config_name="config", version_base="1.3")
def lr_find_app(cfg) -> None:
    job(cfg, "lr_find")


LR_FIND_HELP = ("hydra.help.app_name=fxp lr-find",
                "hydra.help.header='${hydra.help.app_name}: compose a config as fxp train does (the same overrides), "
                "then run only fastai LR finder on it: plots/lr_find.png and the suggested LRs in a run folder'",
                "hydra.help.footer='Examples: fxp lr-find task=pets data.path=DIR | then fxp train task=pets "
                "trainer.lr=SUGGESTED (or trainer.lr=find)'")
train, lr_find = hydra_command(train_app), hydra_command(lr_find_app, LR_FIND_HELP)  # `fxp train`, `fxp lr-find`


@hydra.main(config_path="pkg://fxp.conf", config_name="config", version_base="1.3")
def show_app(cfg) -> None:
    job(cfg, "show")


SHOW_HELP = ("hydra.help.app_name=fxp show",
             "hydra.help.header='${hydra.help.app_name}: compose a config as fxp train does (the same overrides), then "
             "only build its data: a training batch in plots/batch.png and the DataBlock summary, in "
             "outputs/show/<task>/<stamp> (hydra.run.dir= to choose)'",
             "hydra.help.footer='Examples: fxp show task=pets data.path=DIR | fxp show task=mnist task.aug={}'")
SHOW_DIR = "hydra.run.dir=outputs/show/${hydra:runtime.choices.task}/${now:%Y-%m-%d_%H-%M-%S}_${fxp_uid:}"


def show(args: list[str]) -> int:
    "`fxp show`: a run-like folder under outputs/show/ unless hydra.run.dir= says where (nothing is trained)."
    given = any(a.lstrip("+").startswith("hydra.run.dir=") for a in args)
    return hydra_command(show_app, SHOW_HELP)(args if given else [*args, SHOW_DIR])
