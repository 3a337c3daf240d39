"""The Hydra apps `fxp train` and `fxp lr-find`, and what runs before and around them: the cheap precheck of every
job's config (a sweep expanded), and one job: validate, claim the run folder, train, report.

Imported only by the commands that compose a config; torch and fastai load in `job`, once the config is known good.
"""
from __future__ import annotations

import itertools
import signal
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from fxp import config
from fxp.commands import console, number
from fxp.errors import ConfigError, FxpError
from fxp.runs import baselines, read_config, read_summary

MAX_PRECHECKED_JOBS = 64
OPTIONAL_GROUPS = ("logger",)


def hydra_command(app, help_overrides: tuple = ()):
    """A subcommand that validates the overrides cheaply, then hands argv to the `@hydra.main` app; `--help` is
    Hydra's, with `help_overrides` (the command's own name and header in it)."""
    def run(args: list[str]) -> int:
        args = [_no_option(a) for a in args]
        if "--help" in args or "-h" in args:
            args += list(help_overrides)
        config.register()
        precheck(args)
        sys.argv = ["fxp", *args]  # Hydra reads sys.argv (launchers too); rewritten once, here
        app()
        return 0
    return run


def _no_option(arg: str) -> str:
    "`logger=null` as Hydra spells it (`~logger`): an optional group with nothing chosen."
    return f"~{arg.partition('=')[0]}" if arg in (f"{g}=null" for g in OPTIONAL_GROUPS) else arg


def precheck(args: list[str]) -> None:
    "Compose every job's config (a sweep expanded) and validate it, so bad input fails in one line."
    from hydra._internal.utils import get_args_parser

    parsed = get_args_parser().parse_args(args)
    if parsed.help or parsed.hydra_help or parsed.info or parsed.shell_completion:
        return
    for overrides in jobs(parsed.overrides, parsed.multirun)[:MAX_PRECHECKED_JOBS]:
        cfg = config.validate(compose(overrides))
        if cfg.model.kwargs:  # checked against fastai's functions: only then is fastai imported here
            check_kwargs(cfg)


def check_kwargs(cfg) -> None:
    "Each `model.kwargs` key is an argument of the kind's learner factories (imports fastai, as fxp.train does)."
    from fxp import dispatch, train  # noqa: F401  (train: fastai imported with its import-time warnings silenced)

    dispatch.check_kwargs(dispatch.kind_module(cfg.task.kind), cfg)


def jobs(overrides: list[str], multirun: bool) -> list[list[str]]:
    "The override list of each job; sweeps that are not plain lists (Optuna ranges) are left to their sweeper."
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser, parsed = OverridesParser.create(), []
    for o in overrides:
        try:
            parsed += parser.parse_overrides([o])
        except OverrideParseException as e:
            raise ConfigError(f"cannot parse the override {o!r}: {str(e).splitlines()[0]}; quote values with "
                              f"brackets or commas for the shell, e.g. 'trainer.lr=[1e-5,1e-3]'") from None
    check_choices([o.input_line for o in parsed if o.key_or_group in ("hydra/launcher", "hydra/sweeper")])
    parsed = [o for o in parsed if not o.key_or_group.startswith("hydra")]
    options = []
    for o in parsed:
        if not o.is_sweep_override():
            options.append([o.input_line])
        elif multirun and o.is_discrete_sweep():
            options.append([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()])
        elif not multirun:
            raise ConfigError(f"{o.input_line} is a sweep: add -m to run one job per value")
    return [list(combo) for combo in itertools.product(*options)]


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    check_choices(overrides)
    config.register()
    try:
        with initialize_config_module("fxp.conf", version_base="1.3"):
            return hydra_compose("config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(config.one_line(e)) from None


def check_choices(overrides: list[str]) -> None:
    "An unknown group option named with its valid ones (Hydra's message spans many lines)."
    for o in overrides:
        group, _, value = o.lstrip("+").partition("=")
        for v in _options(value) if group in config.GROUPS else []:
            if v not in config.choices(group):
                raise ConfigError(f"unknown {group} {v!r}; choose from: {', '.join(config.choices(group))}")
        if group in ("hydra/launcher", "hydra/sweeper") and value not in plugin_choices(group):
            raise ConfigError(f"unknown {group} {value!r}; choose from: {', '.join(plugin_choices(group))}")


def _options(value: str) -> list[str]:
    "The options a group override picks: one, several (`[a,b]`), or none (`null`)."
    if value == "null":
        return []
    if value.startswith("[") and value.endswith("]"):
        return [v.strip() for v in value[1:-1].split(",") if v.strip()]
    return [value]


def plugin_choices(group: str) -> list[str]:
    "Hydra's options for a launcher/sweeper group: its plugins' configs and the ones fxp ships."
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_module("fxp.conf", version_base="1.3"):
        return GlobalHydra.instance().config_loader().get_group_options(group)


def job(cfg, what: str) -> float:
    """One Hydra job: validate, claim the run folder, train; errors end the job with one line.

    Returns the job's best value of `task.monitor` (NaN when it did not complete): what Optuna's sweeper optimises.
    """
    from fxp import diagnose
    from fxp.runs import Run

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    run = None
    try:
        cfg = config.validate(cfg)
        from fxp import train  # torch and fastai load here, after the config is known to be good

        check_kwargs(cfg)  # before the run folder is claimed (a job the precheck did not see: a sweeper's)
        with Run(hc.runtime.output_dir, cfg, list(hc.overrides.task), hc.runtime.choices.task,
                 finish=diagnose.finish) as run:
            signal.signal(signal.SIGTERM, _interrupt)
            getattr(train, what)(cfg, run)
        report(run)
    except FxpError as e:
        _end(multirun, 2, f"{e}{_where(run)}")
    except KeyboardInterrupt:
        _end(multirun, 130, f"interrupted; the last checkpoint is kept{_where(run)}")
    except Exception as e:  # a bug or an unforeseen failure: one line here, the traceback in train.log
        first_line = (str(e).strip().splitlines() or [""])[0]
        _end(multirun, 1, f"{type(e).__name__}: {first_line}{_where(run)}")
    return objective(run)


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


def report(run) -> None:
    """The final metrics as a small table, each beside its baseline where fxp computes one (a step's metrics too,
    e.g. the language model's perplexity), which epoch model.pkl holds, and where the run folder is. An lr-find run:
    its suggested learning rates."""
    from rich.table import Table

    summary = read_summary(run.path)
    what = "lr-find " if "suggested_lrs" in summary else ""
    table = Table(title=f"{summary['task']}: {what}{summary['status']} in {summary['wall_time_s']:.1f}s")
    if what:
        table.add_column("suggestion")
        table.add_column("lr", justify="right")
        for name, lr in summary["suggested_lrs"].items():
            table.add_row(name, number(lr))
        notes = ["plot: plots/lr_find.png; train at one: fxp train trainer.lr=LR (trainer.lr=find: the valley)"]
    else:
        rows = metric_rows(summary)
        for col in ("metric", "final", "best", *(["baseline"] if any(r[3] for r in rows) else [])):
            table.add_column(col, justify="left" if col == "metric" else "right")
        for name, final, best, baseline in rows:
            table.add_row(name, number(final), number(best), *([baseline] if len(table.columns) == 4 else []))
        notes = [model_line(summary, read_config(run.path)),
                 f"lr_found: {summary['lr_found']}" if "lr_found" in summary else ""]
    out = console()
    out.print(table)
    for line in [*filter(None, notes), f"run folder: {run.path}"]:
        out.print(line, highlight=False, soft_wrap=True)


def metric_rows(summary: dict) -> list[tuple]:
    "(name, final, best, baseline text) for the run's metrics, then each step's (`lm perplexity`), losses aside."
    rows = []
    for step, part in [(None, summary), *((k, v) for k, v in summary.items()
                                          if isinstance(v, dict) and "final_metrics" in v)]:
        base = baselines(part)
        for name, final in part["final_metrics"].items():
            if step is not None and "loss" in name:
                continue
            value, who = base.get(name, (None, None))
            rows.append((f"{step} {name}" if step else name, final, part.get("best_metrics", {}).get(name),
                         f"{number(value)} ({who})" if value is not None else ""))
    return rows


def model_line(summary: dict, cfg: dict) -> str:
    "Which epoch model.pkl holds: the best by the monitored metric (trainer.save_best), else the last."
    epoch, epochs = summary.get("model_epoch"), summary.get("epochs")
    if not epoch:
        return ""
    trainer, monitor = cfg.get("trainer") or {}, (cfg.get("task") or {}).get("monitor") or {}
    if trainer.get("save_best") and monitor.get("metric"):
        return f"model.pkl: epoch {epoch} of {epochs}, the best {monitor['metric']}"
    return f"model.pkl: epoch {epoch} of {epochs}, the last"


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
