"""The Hydra apps `fxp train`, `fxp lr-find` and `fxp show`, and one job's lifecycle: validate, claim the run folder,
train, report. What runs before them, the cheap pre-check of every job's config, is fxp.precheck; the table a job
prints as it ends, fxp.reports.

Imported only by the commands that compose a config; torch and fastai load in `job`, once the config is known good.
"""
from __future__ import annotations

import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from fxp import config
from fxp.errors import FxpError, describe
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
    from fxp import distributed
    from fxp.sweeps import job_resources
    from fxp.writer import Run

    hc = HydraConfig.get()
    if distributed.node_rank(cfg):  # another machine's share of a multi-node run: node 0's job holds the run
        return follow(cfg, hc.runtime.output_dir)
    resources = job_resources(hc)  # a local parallel job's GPU and threads, before torch starts CUDA
    if resources and cfg.trainer.num_threads is None:
        cfg.trainer.num_threads = resources["num_threads"]

    def claim(cfg):
        run = Run(hc.runtime.output_dir, cfg, list(hc.overrides.task), hc.runtime.choices.task, finish=finish)
        if resources:
            run.info["resources"] = {**resources, "num_threads": cfg.trainer.num_threads}
        return run

    return objective(execute(cfg, claim, what, multirun=hc.mode == RunMode.MULTIRUN))


def execute(cfg, open_run, what: str, multirun: bool = False, **kwargs):
    """Validate `cfg`, open its run folder (`open_run(cfg)`: a new Run, or one `fxp resume` reopens), run
    `fxp.train.<what>(cfg, run, **kwargs)` in it with SIGTERM as Ctrl-C; errors end the job with one line (and its
    exit code, unless in a sweep). Returns the run, None if it was never opened."""
    run = None
    try:
        cfg = config.validate(cfg)
        from fxp import distributed, trackers, train  # torch and fastai load here, after the config is good

        check_kwargs(cfg)  # before the run folder is claimed (a job the precheck did not see: a sweeper's)
        trackers.check(cfg)
        with open_run(cfg) as run:
            signal.signal(signal.SIGTERM, _interrupt)
            many = what == "train" and distributed.wanted(cfg)  # over several processes: they train, this one waits
            (distributed.launcher if many else getattr(train, what))(cfg, run, **kwargs)
        report(run)
    except FxpError as e:
        _end(multirun, 2, f"{e}{_where(run)}")
    except KeyboardInterrupt:
        _end(multirun, 130, f"interrupted; {_kept(run)}{_where(run)}")
    except Exception as e:  # a bug or an unforeseen failure (a full disk): one line here, the traceback in train.log
        _end(multirun, 1, f"{describe(e)}{_where(run)}")
    return run


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
    step = f"step {point['step']} " if point["folder"] != str(run.path) else ""
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
    if run is None or run.status != "completed":
        return float("nan")  # Optuna records the trial as failed and the search goes on
    return read_summary(run.path)["best_metrics"].get(run.cfg.task.monitor.metric, float("nan"))


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
