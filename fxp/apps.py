"""The Hydra apps `fxp train` and `fxp lr-find`, and what runs before and around them: the cheap precheck of every
job's config (a sweep expanded), and one job: validate, claim the run folder, train, report.

Imported only by the commands that compose a config; torch and fastai load in `job`, once the config is known good.
"""
from __future__ import annotations

import importlib.util
import itertools
import pickle
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from fxp import config
from fxp.commands import console, number
from fxp.errors import ConfigError, FxpError, describe
from fxp.runs import baselines, not_beaten, read_config, read_summary

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


def precheck(args: list[str]) -> list[str]:
    """Check the flags and the `hydra.*` overrides, compose every job's config (a sweep expanded) and validate it, so
    bad input fails in one line; then print, once each, what a valid config does that is likely not meant (warnings).

    Returns `args`, with `+node=PATH` before the first key set under a node that is null in the composed config
    (`task.aug.max_rotate=5` where the task's `aug` is null): Hydra cannot set a key inside null, so the node is first
    made from its schema (config.NODE_GROUP), and the key then set in it. `--help`, `--hydra-help` and `--info`
    compose the first job only (Hydra shows it, nothing runs); completion is Hydra's alone."""
    parsed = parse_args(args)
    check_modes(parsed)
    if parsed.shell_completion:
        return args
    showing = parsed.help or parsed.hydra_help or parsed.info
    sweep = next((o for o in parsed.overrides if showing and _is_sweep(o)), None)
    if sweep:
        raise ConfigError(f"{sweep} is a sweep, and --help, --hydra-help and --info show one config: give one value")
    check_flags(parsed)
    check_hydra_overrides(parsed.overrides, parsed.multirun, writes=not showing)
    nodes, cautions = [], []
    for overrides in jobs(parsed.overrides, parsed.multirun or showing)[:1 if showing else MAX_PRECHECKED_JOBS]:
        try:
            composed = compose(overrides)
        except NullNode:
            overrides = with_nodes(overrides)
            nodes += [o for o in overrides if o.startswith(f"+{config.NODE_GROUP}=") and o not in nodes]
            composed = compose(overrides)
        _check_package(composed, parsed.package)
        if showing:
            break
        cfg = config.validate(composed, overrides)
        if cfg.model.kwargs:  # checked against fastai's functions: only then is fastai imported here
            check_kwargs(cfg)
        cautions += config.cautions(cfg)
    for line in dict.fromkeys(cautions):
        print(f"fxp: warning: {line}", file=sys.stderr)
    return _insert_nodes(args, nodes)


def _check_package(cfg, package: str | None) -> None:
    "`--cfg job --package KEY` shows a part of the config that is there."
    from omegaconf import OmegaConf

    if package and package != "_global_" and OmegaConf.select(cfg, package, default=None) is None:
        raise ConfigError(f"--package {package}: no such key in the config (fxp train --cfg job shows them)")


def parse_args(args: list[str]):
    "Hydra's flags and overrides; a flag it does not know (or a bad value of one) is one line, not argparse's usage."
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()

    def error(message: str):
        raise ConfigError(f"{message}; fxp train takes key=value overrides and Hydra's flags (fxp train --help)")

    parser.error = error
    return parser.parse_args(args)


def check_modes(parsed) -> None:
    "One of Hydra's modes at a time (its own error is a traceback)."
    modes = [f for f, on in (("--cfg", parsed.cfg), ("-m", parsed.multirun), ("--run", parsed.run),
                             ("--info", parsed.info), ("--shell-completion", parsed.shell_completion)) if on]
    if len(modes) > 1:
        raise ConfigError(f"{' and '.join(modes)} cannot go together: give one of them")


def check_flags(parsed) -> None:
    "The files and folders Hydra's flags name exist (Hydra's own errors span many lines)."
    for flag, folder in (("--config-dir", parsed.config_dir), ("--config-path", parsed.config_path)):
        if folder and not folder.startswith("pkg://") and not Path(folder).is_dir():
            raise ConfigError(f"{flag}={folder}: no such folder")
    if parsed.config_name:
        where = [Path(parsed.config_dir or parsed.config_path or config.conf_dir())]
        name = parsed.config_name.removesuffix(".yaml")
        if not any((w / f"{name}.yaml").is_file() for w in where if not str(w).startswith("pkg://")):
            raise ConfigError(f"--config-name={parsed.config_name}: no {name}.yaml in {where[0]}; fxp's config is "
                              f"'config' (its groups are chosen with overrides: fxp tasks lists them)")
    if parsed.experimental_rerun is not None:
        _check_rerun(Path(parsed.experimental_rerun))


def _check_rerun(path) -> None:
    """`--experimental-rerun FILE`: a config.pickle that Hydra wrote (its PickleJobInfoCallback), read here with only
    the classes such a file holds (RerunUnpickler), so that a pickle holding anything else is refused before Hydra
    unpickles it; and a job's config (a DictConfig with its `hydra` node), which Hydra reads as it reruns."""
    from omegaconf import DictConfig, OmegaConf

    if not path.is_file():
        raise ConfigError(f"--experimental-rerun {path}: no such file (give the config.pickle of a Hydra run)")
    try:
        with open(path, "rb") as f:
            cfg = RerunUnpickler(f).load()
        ok = isinstance(cfg, DictConfig) and OmegaConf.select(cfg, "hydra.job_logging") is not None
        what = "" if ok else f"a {type(cfg).__name__}, not a job's config with its hydra node"
    except RefusedGlobal as e:
        what = f"it names {e}, which no config holds, and unpickling it could run any code; it was not read"
    except Exception as e:  # any other unpickling failure means the same: not a file Hydra wrote
        what = type(e).__name__
    if what:
        raise ConfigError(f"--experimental-rerun {path}: not a config.pickle Hydra wrote ({what})")


class RefusedGlobal(Exception):
    "A config.pickle names something that is not part of a config (a function, a class that acts as it is made)."


class RerunUnpickler(pickle.Unpickler):
    """Only what a composed config is made of: plain data, OmegaConf's nodes and containers, and the dataclasses and
    enums of the schemas (Hydra's, fxp's, a Hydra plugin's), none of which runs code as it is made. A module outside
    these is not even imported."""
    PLAIN = {"builtins": {"dict", "list", "tuple", "set", "frozenset", "str", "int", "float", "bool", "bytes"},
             "collections": {"defaultdict", "OrderedDict"}, "pathlib": {"PosixPath", "WindowsPath"},
             "typing": {"Any", "Dict", "List", "Tuple", "Optional", "Union"}}
    SCHEMAS = ("omegaconf", "hydra", "hydra_plugins", "fxp")

    def find_class(self, module: str, name: str):
        if name in self.PLAIN.get(module, ()):
            return super().find_class(module, name)
        parts = module.split(".")
        if parts[0] in self.SCHEMAS and "__main__" not in parts:  # importing a __main__ would run its command
            found = super().find_class(module, name)
            if isinstance(found, type) and (parts[0] == "omegaconf" or self._schema(found)):
                return found
        raise RefusedGlobal(f"{module}.{name}")

    @staticmethod
    def _schema(cls: type) -> bool:
        import dataclasses
        import enum

        return dataclasses.is_dataclass(cls) or issubclass(cls, enum.Enum)


def check_hydra_overrides(overrides: list[str], multirun: bool, writes: bool = True) -> None:
    """`hydra.*` keys exist (composed with Hydra's own config: an unknown one is one line), and, when the command
    `writes`, the folder the run (or sweep) is written under can be: no regular file on its path, and writable."""
    hydra_keys = [o for o in overrides if o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    if hydra_keys:
        compose([o for o in hydra_keys if not _is_sweep(o)], hydra=True)
    which = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    given = [o.partition("=")[2] for o in hydra_keys if o.lstrip("+").partition("=")[0] == which]
    if writes:
        check_output_folder(given[-1] if given else "outputs", which)
    if writes and given and not multirun and "${" not in given[-1]:  # refused before Hydra writes its train.log
        from fxp.runs import check_claimable

        check_claimable(Path(given[-1] or ".").expanduser().absolute())


def _is_sweep(override: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_overrides([override])[0].is_sweep_override()
    except Exception:  # not valid grammar: composing it says so
        return False


def check_output_folder(folder: str, key: str) -> None:
    "The run folder's fixed part (before the first `${`) has no regular file on its path, and can be written in."
    import os

    path = Path(folder.split("${")[0] or ".").expanduser().absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"cannot make the run folder under {path}: {existing} is a file, not a folder; "
                          f"set {key}= to a folder path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write in {existing} (read-only): run fxp from a folder you can write to, "
                          f"or set {key}= to one")


def with_nodes(overrides: list[str]) -> list[str]:
    """`overrides` with `+node=PATH` before the first key set under PATH, for each schema node PATH (config.null_nodes)
    that is null once the other overrides apply; a null node without a schema is one line saying to set it whole."""
    deep = [o for o in overrides if _key(o).count(".") >= 2 and not o.startswith("~")]
    base = compose([o for o in overrides if o not in deep])
    out, made, absent = [], set(), object()
    for o in overrides:
        parts = _key(o).split(".") if o in deep else []
        for path in (".".join(parts[:i]) for i in range(2, len(parts))):
            if path in made or _select(base, path, absent) is not None:
                continue
            if path not in config.null_nodes():
                raise ConfigError(f"cannot set {_key(o)}: {path} is null in this config; set {path} whole first "
                                  f"(e.g. '{path}={{...}}')")
            out.append(f"+{config.NODE_GROUP}={path}")
            made.add(path)
        out.append(o)
    return out


def _select(cfg, path: str, default):
    "`cfg`'s value at `path` (`default` if absent); one that does not resolve (`task.aug=${nope}`) is one line."
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.select(cfg, path, default=default)
    except OmegaConfBaseException as e:
        raise ConfigError(config.one_line(e)) from None


def _key(override: str) -> str:
    return override.lstrip("+~").partition("=")[0]


def _insert_nodes(args: list[str], nodes: list[str]) -> list[str]:
    "Each `+node=PATH` in `args`, before the first override of a key under PATH."
    args = list(args)
    for node in nodes:
        path = node.partition("=")[2]
        at = next((i for i, a in enumerate(args) if _key(a).startswith(f"{path}.")), len(args))
        args.insert(at, node)
    return args


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
            raise ConfigError(f"cannot parse the override {o} ({str(e).splitlines()[0]}); a value with characters "
                              f"Hydra reads as syntax (a regex's ( ) $ \\, brackets, braces, commas, spaces) goes in "
                              f"Hydra's quotes inside the shell's: {quoted(o)}") from None
        if not parsed[-1].key_or_group:
            raise ConfigError(f"the override {o!r} names no key: write KEY=VALUE (fxp train --cfg job shows the keys)")
    check_choices([o.input_line for o in parsed if o.key_or_group in ("hydra/launcher", "hydra/sweeper")])
    parsed = [o for o in parsed if not is_hydra_key(o.key_or_group)]
    options = []
    for o in parsed:
        if not o.is_sweep_override():
            options.append([o.input_line])
        elif multirun and o.is_discrete_sweep():
            options.append([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()])
        elif not multirun:
            raise ConfigError(f"{o.input_line} is a sweep: add -m to run one job per value")
    return [list(combo) for combo in itertools.product(*options)]


def is_hydra_key(key: str) -> bool:
    "Hydra's own key or group (`hydra.run.dir`, `hydra/launcher`), not one that only begins alike (`hydraa.x`)."
    return key == "hydra" or key.startswith(("hydra.", "hydra/"))


def quoted(override: str) -> str:
    """`KEY=VALUE` as the shell must pass it for Hydra to read VALUE as a plain string: `'task.pat="^(.+)_\\d+$"'`
    (Hydra's double quotes, or single ones if the value has a double quote, inside the shell's)."""
    key, _, value = override.partition("=")
    q = "'" if '"' in value else '"'
    inner = f"{key}={q}{value}{q}"
    return f"'{inner}'" if "'" not in inner else '"' + inner.replace("\\", "\\\\").replace('"', '\\"') + '"'


class NullNode(ConfigError):
    "A key set inside a node that is null in the composed config (precheck first makes the node: with_nodes)."


def compose(overrides: list[str], hydra: bool = False):
    "The config `overrides` compose to (with Hydra's own under `hydra` if asked); any failure is one line."
    from hydra import compose as hydra_compose, initialize_config_module

    check_choices(overrides)
    config.register()
    try:
        with initialize_config_module("fxp.conf", version_base="1.3"):
            return hydra_compose("config", overrides=overrides, return_hydra_config=hydra)
    except AssertionError as e:  # OmegaConf.update inside a null node
        if "Unexpected type for root" not in str(e):
            raise ConfigError(f"cannot apply the overrides {' '.join(overrides)}: {config.one_line(e)}") from None
        raise NullNode(f"a key is set inside a node that is null in this config ({' '.join(overrides)}); "
                       f"set the node whole first") from None
    except Exception as e:  # Hydra's and OmegaConf's errors, and what bad input gets past them (`=5`: a ValueError)
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
        if group == "hydra/launcher" and value in RAY_LAUNCHERS and importlib.util.find_spec("ray") is None:
            raise ConfigError(f"hydra/launcher={value} runs the jobs on Ray, which is not installed: "
                              f"pip install 'fxp[ray]'")


RAY_LAUNCHERS = ("ray", "ray_cluster")  # fxp's launcher plugin over Ray (hydra_plugins/fxp_ray_launcher)


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
    from fxp import distributed
    from fxp.runs import Run
    from fxp.sweeps import job_resources

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
    from fxp.resume import reopening, resumable
    from fxp.runs import read_run

    given = [o for o in hc.overrides.task if resumable(o.lstrip("+~").partition("=")[0])]
    try:
        return reopening(path, read_run(path, sweep_dir)["status"], given, finish=finish)
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
        from fxp import trackers, train  # torch and fastai load here, after the config is known to be good

        check_kwargs(cfg)  # before the run folder is claimed (a job the precheck did not see: a sweeper's)
        trackers.check(cfg)
        with open_run(cfg) as run:
            if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:  # a sweep's process has its own (fxp.sweeps)
                signal.signal(signal.SIGTERM, _interrupt)
            getattr(train, what)(cfg, run, **kwargs)
        report(run)
    except FxpError as e:
        _end(multirun, 2, f"{e}{_where(run)}")
    except KeyboardInterrupt:
        if multirun:
            raise  # the sweep stops, and says so (fxp.sweeps.interrupted)
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


def report(run) -> None:
    """The final metrics as a small table, each beside its baseline where fxp computes one (a step's metrics too,
    e.g. the language model's perplexity), which epoch model.pkl holds, and where the run folder is. An lr-find run:
    its suggested learning rates."""
    from rich.cells import cell_len
    from rich.table import Table

    summary = read_summary(run.path)
    if "shown" in summary:  # fxp show: the summary is printed already; where the batch is
        console().print(f"{summary['task']}: {summary['items_train']} training and {summary['items_valid']} valid "
                        f"items; a training batch: {run.path / summary['shown']}", highlight=False, soft_wrap=True)
        return
    what = "lr-find " if "suggested_lrs" in summary else ""
    title = f"{summary['task']}: {what}{summary['status']} in {summary['wall_time_s']:.1f}s"
    table = Table(title=title, min_width=cell_len(title))  # rich wraps a title to its table's width: one line
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
        tta = ", ".join(f"{k[4:]} {number(v)}" for k, v in summary.items() if k.startswith("tta_"))
        notes = [*not_beaten(summary.get("final_metrics", {}), baselines(summary)),
                 model_line(summary, read_config(run.path)),
                 f"lr_found: {summary['lr_found']}" if "lr_found" in summary else "",
                 f"model.pkl with test-time augmentation: {tta}" if tta else ""]
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
