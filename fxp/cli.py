"""`fxp` on the command line: a thin front that routes argv[1] to a subcommand and turns errors into exit codes.

Only the stdlib, hydra, omegaconf and rich are imported here; torch and fastai load when a run starts.
"""
from __future__ import annotations

import inspect
import itertools
import json
import os
import secrets
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from fxp import __version__, config
from fxp.errors import ConfigError, FxpError

USAGE = """usage: fxp COMMAND [ARGS]

commands:
  train [OVERRIDES...]       compose the config with Hydra and train; every Hydra flag works
                             (-m multirun, --cfg job, --info, --help, hydra.run.dir=...)
  lr-find [OVERRIDES...]     only fastai's LR finder: plot and suggested LRs in a run folder
  predict RUN_DIR INPUT...   predict with a run's exported model (image files or folders, texts, CSV rows;
                             collab: --user U [--top N] or a pairs CSV); --json
  reproduce NAME | --list    run a course recipe from experiments/ and compare with the published result
  runs [DIR]                 the runs under DIR (./outputs), newest first, a sweep as one row with its best
                             job; --sort METRIC --task NAME --status S --json; fxp runs SWEEP_DIR lists its jobs
  diagnose RUN_DIR           diverged / over-fitting / under-fitting / train longer, from the run's curves,
                             with what to try; writes RUN_DIR/plots/diagnosis.png; --json
  tasks                      the task, model, trainer, logger and experiment choices, one line each
  --version                  fxp's version

examples:
  fxp train                                   # digits, a small CNN on CPU, under a minute
  fxp train task=mnist data.path=DIR trainer.epochs=3
  fxp train -m trainer.lr=1e-3,3e-3           # a sweep: one run folder per job, sweep.csv, best.json
  fxp reproduce fastbook-01-adult data.path=DIR
  fxp predict outputs/digits/<run> digit.png
"""
MAX_PRECHECKED_JOBS = 64
OPTIONAL_GROUPS = ("logger",)

# A few random characters after the timestamp: two runs started in the same second get their own folders.
OmegaConf.register_new_resolver("fxp_uid", lambda: secrets.token_hex(3), use_cache=True, replace=True)
# Optuna's direction from a task's monitor mode, so a search maximises accuracy and minimises a loss.
OmegaConf.register_new_resolver("fxp_direction", lambda mode: {"max": "maximize", "min": "minimize"}[mode],
                                replace=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"fxp {__version__}")
        return 0
    if argv[0] in ("-sc", "--shell-completion"):  # Hydra's completion script calls `fxp -sc query=bash`
        os.environ["COMP_LINE"] = os.environ.get("COMP_LINE", "").replace("fxp train ", "fxp ", 1)
        argv = ["train", *argv]
    command = COMMANDS.get(argv[0])
    if command is None:
        return fail(f"unknown command {argv[0]!r}; choose from: {', '.join(COMMANDS)} (fxp --help)")
    try:
        return command(argv[1:]) or 0
    except FxpError as e:
        return fail(str(e))
    except BrokenPipeError:  # `fxp ... | head` closed the pipe: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def fail(message: str, code: int = 2) -> int:
    print(f"fxp: error: {message}", file=sys.stderr)
    return code


# --- train / lr-find: Hydra apps -------------------------------------------------------------------------


def hydra_command(app):
    "A subcommand that validates the overrides cheaply, then hands argv to the `@hydra.main` app."
    def run(args: list[str]) -> int:
        args = [_no_option(a) for a in args]
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
        config.validate(compose(overrides))


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
    from fxp.runs import Run

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    run = None
    try:
        cfg = config.validate(cfg)
        with Run(hc.runtime.output_dir, cfg, list(hc.overrides.task), hc.runtime.choices.task) as run:
            signal.signal(signal.SIGTERM, _interrupt)
            from fxp import train  # torch and fastai load here, after the config is known to be good

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
    summary = json.loads((run.path / "summary.json").read_text())
    return summary["best_metrics"].get(run.cfg.task.monitor.metric, float("nan"))


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _where(run) -> str:
    return f" (run folder {run.path}; details in train.log)" if run is not None else ""


def _end(multirun: bool, code: int, message: str) -> None:
    "Report a failed job; a sweep goes on with its other jobs, a single run exits with `code`."
    fail(message, code)
    if not multirun:
        raise SystemExit(code)


def report(run) -> None:
    "The final metrics as a small table, and where the run folder is."
    from rich.console import Console
    from rich.table import Table

    summary = json.loads((run.path / "summary.json").read_text())
    table = Table(title=f"{summary['task']}: {summary['status']} in {summary['wall_time_s']:.1f}s")
    table.add_column("metric")
    table.add_column("final", justify="right")
    table.add_column("best", justify="right")
    for name, value in summary["final_metrics"].items():
        table.add_row(name, f"{value:.4f}", f"{summary['best_metrics'].get(name, float('nan')):.4f}")
    for key in ("lr_found", "suggested_lrs"):
        if key in summary:
            table.caption = f"{key}: {summary[key]}"
    console = Console()
    console.print(table)
    console.print(f"run folder: {run.path}", highlight=False, soft_wrap=True)


@hydra.main(config_path="pkg://fxp.conf", config_name="config", version_base="1.3")
def train_app(cfg) -> float:
    return job(cfg, "train")


@hydra.main(config_path="pkg://fxp.conf", config_name="config", version_base="1.3")
def lr_find_app(cfg) -> None:
    job(cfg, "lr_find")


# --- tasks, predict ------------------------------------------------------------------------------------------


def tasks(args: list[str]) -> int:
    "Each config group's choices with their one-line descriptions; reads YAML only."
    rows = [(f"{group}={name}", doc) for group in config.GROUPS for name, doc in config.choices(group).items()]
    width = max(len(choice) for choice, _ in rows)
    for choice, doc in rows:
        print(f"{choice:<{width}}  {doc}")
    return 0


def predict(args: list[str]) -> int:
    """fxp predict RUN_DIR [INPUT...] [--OPTION VALUE...] [--json]: the run's exported learner (CPU) predicts.

    Inputs are what the kind takes (image files or folders, texts, a CSV of rows); options go to the kind's
    `predict` as keyword arguments (collab's `--user 42 --top 10`), each checked against what it accepts.
    """
    as_json = "--json" in args
    run_dir, inputs, options = _predict_args([a for a in args if a != "--json"])
    if not (run_dir / "model.pkl").is_file():
        raise FxpError(f"no model.pkl in {run_dir}: give the folder of a completed run (see outputs/)")
    from fxp import dispatch

    cfg = OmegaConf.load(run_dir / "config.yaml")
    kind = dispatch.kind_module(cfg.task.kind)
    accepted = [p for p in inspect.signature(kind.predict).parameters if p not in ("learn", "cfg", "inputs")]
    unknown = [o for o in options if o not in accepted]
    if unknown:
        takes = ", ".join(f"--{o}" for o in accepted) or "no options"
        raise FxpError(f"fxp predict: --{unknown[0]} is not an option of {cfg.task.kind} runs (it takes {takes})")
    try:
        rows = kind.predict(_load_learner(run_dir / "model.pkl"), cfg, inputs, **options)
    except FxpError:
        raise
    except Exception as e:  # an input the kind did not foresee: one line, not a traceback
        raise FxpError(f"predicting with {run_dir} failed: {type(e).__name__}: "
                       f"{(str(e).strip().splitlines() or [''])[0]}") from e
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        _print_rows(rows)
    return 0


def _predict_args(args: list[str]) -> tuple[Path, list[str], dict[str, str]]:
    "RUN_DIR, the inputs, and `--key value` options as a dict."
    positional, options, i = [], {}, 0
    while i < len(args):
        if args[i].startswith("--") and len(args[i]) > 2:
            if i + 1 == len(args):
                raise FxpError(f"fxp predict: {args[i]} needs a value")
            options[args[i][2:].replace("-", "_")] = args[i + 1]
            i += 2
        else:
            positional.append(args[i])
            i += 1
    if len(positional) + len(options) < 2:
        raise FxpError("usage: fxp predict RUN_DIR INPUT... [--OPTION VALUE...] [--json] (inputs: what the "
                       "run's kind takes: image files or folders, texts, a CSV of rows)")
    return Path(positional[0]), positional[1:], options


def _load_learner(path: Path):
    "fastai's load_learner on the CPU; its pickle warning is moot for a run folder of one's own."
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastai.learner import load_learner

        return load_learner(path, cpu=True)


def _cell(value) -> str:
    "Table text for a value: a dict (e.g. class shares) as `key value` pairs."
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return str(value)


def _print_rows(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for key in rows[0] if rows else []:
        table.add_column(key, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(v) for v in row.values()))
    console = Console()
    if not console.is_terminal:  # piped: keep each cell (a path, a mask file) on one line for grep and scripts
        console.width = 10_000
    console.print(table)


def runs(args: list[str]) -> int:
    from fxp import runlist

    return runlist.main(args)


def diagnose(args: list[str]) -> int:
    from fxp import diagnose as rules

    return rules.main(args)


def reproduce(args: list[str]) -> int:
    from fxp import reproduce as presets

    return presets.main(args, train=hydra_command(train_app))


COMMANDS = {
    "train": hydra_command(train_app),
    "lr-find": hydra_command(lr_find_app),
    "predict": predict,
    "reproduce": reproduce,
    "runs": runs,
    "diagnose": diagnose,
    "tasks": tasks,
}
