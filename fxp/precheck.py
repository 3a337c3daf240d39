"""The cheap pre-check of `fxp train`, `fxp lr-find` and `fxp show`, before Hydra runs anything: Hydra's flags and
`hydra.*` overrides, and every job's config (a sweep expanded) composed and validated, so bad input fails in one line
and no run folder is made. torch and fastai are not imported here (but for `model.kwargs`, checked against fastai).
"""
from __future__ import annotations

import importlib.util
import itertools
import pickle
import sys
from pathlib import Path

from fxp import config
from fxp.errors import ConfigError

MAX_PRECHECKED_JOBS = 64


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
    from omegaconf.errors import OmegaConfBaseException

    if not package or package == "_global_":
        return
    try:
        found = OmegaConf.select(cfg, package, default=None) is not None
    except OmegaConfBaseException:  # not a key's spelling at all (`model.net.channels.0=16`)
        found = False
    if not found:
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
        from fxp.writer import check_claimable

        check_claimable(Path(given[-1] or ".").expanduser().absolute())


def _is_sweep(override: str) -> bool:
    try:
        return config.parse_override(override).is_sweep_override()
    except ConfigError:  # not valid grammar: composing it says so
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
    parsed = [config.parse_override(o) for o in overrides]
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
