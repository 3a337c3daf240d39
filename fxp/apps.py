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
from fxp.reports import report
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

    def claim(cfg):
        opened = cv.Cv if cv.wanted(cfg, what) else Run  # a cross-validation's folder: its folds are its runs
        run = opened(hc.runtime.output_dir, cfg, list(hc.overrides.task), hc.runtime.choices.task, finish=finish)
        if resources:
            run.info["resources"] = {**resources, "num_threads": cfg.trainer.num_threads}
        if trial and not distributed.wanted(cfg):  # an Optuna trial: its job reports each epoch to it (fxp.train.fit)
            run.info["trial"] = trial
        return run

    if hc.mode != RunMode.MULTIRUN:
        return objective(execute(cfg, claim, what))
    return sweep_job(cfg, what, claim, hc)


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
                return value(read_summary(path), read_monitor(path).metric)
            opened = resumed(path, sweep_dir, hc) if action == "resume" else (cfg, claim)
            run = execute(*opened, what, multirun=True, resume=action == "resume") if opened else None
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
    return float("nan") if run is None else value(read_summary(run.path), run.cfg.task.monitor.metric)


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
