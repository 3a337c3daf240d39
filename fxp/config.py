"""The config tree and validation, before anything heavy is imported: the packaged groups and presets, listed from
their YAML without parsing it; `register`, which tells Hydra and OmegaConf about the schemas (fxp.schema), each kind's
task schema, the presets and fxp's resolvers; and `validate`, which types `cfg.task` by its kind.

Importing this module does no work: Hydra, OmegaConf and the kinds load when a config is composed or validated.
"""
from __future__ import annotations

import difflib
import functools
import os
import secrets
from importlib.util import find_spec
from pathlib import Path

from fxp.errors import ConfigError
from fxp.schema import DEVICES, PRECISIONS  # noqa: F401  (declared with the trainer's fields)

GROUPS = ("task", "model", "trainer", "logger", "experiment")
NODE_GROUP = "node"  # `+node=task.aug`: a schema node that is null by default, made with its schema's defaults


@functools.cache
def group_folder(seeds, folds, fold) -> str:
    "The folder a group of runs goes under: `seeds/`, `cv/`, or '' for one run."
    if int(seeds) > 1:
        return "seeds/"
    return "cv/" if folds is not None and fold is None else ""


@functools.cache  # the store and the resolvers outlive a compose: a second call would redo them (half a compose's time)
def register() -> None:
    """What fxp's configs need from Hydra's ConfigStore and OmegaConf, once per process, before the first compose.

    The root schema; each kind's task schema as `kind/<name>`, which task YAMLs take as their base; the presets of
    experiments/ as the group `experiment` (`+experiment=NAME`); the resolvers `fxp_uid`, `fxp_direction` and
    `fxp_group`. Called by the package of the config tree (`pkg://fxp.conf`), which Hydra imports when it first reads
    it: so any compose, a launcher's worker process included, finds them.
    """
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from fxp import dispatch
    from fxp.schema import Config

    # A few random characters after the timestamp: two runs started in the same second get their own folders.
    OmegaConf.register_new_resolver("fxp_uid", lambda: secrets.token_hex(3), use_cache=True, replace=True)
    # A group of runs lands in <task>/seeds/<stamp> (a seed group: trainer.seeds > 1, fxp.apps) or <task>/cv/<stamp>
    # (a cross-validation: trainer.folds without trainer.fold, fxp.cv); hydra.run.dir in conf/config.yaml.
    OmegaConf.register_new_resolver("fxp_group", group_folder, replace=True)
    # Optuna's direction from a task's monitor mode, so a search maximises accuracy and minimises a loss.
    OmegaConf.register_new_resolver("fxp_direction", lambda mode: {"max": "maximize", "min": "minimize"}[mode],
                                    replace=True)
    cs = ConfigStore.instance()
    cs.store(name="fxp_schema", node=Config)
    for kind in dispatch.kinds():
        cs.store(group="kind", name=kind, node=dispatch.kind_module(kind).Task)
    for path in sorted(experiments_dir().glob("*.yaml")):
        cs.store(group="experiment", name=path.stem, node=OmegaConf.load(path), package="_global_")
    for path in null_nodes():
        node = {}
        for part in reversed(path.split(".")):
            node = {part: node}
        cs.store(group=NODE_GROUP, name=path, node=node, package="_global_")
    plugins_visible()
    quicker_composes()


def quicker_composes() -> None:
    """Two costs of Hydra's compose that fxp's configs make large, removed (a compose 77 -> 46 ms): the store copied
    (`share_the_store`), and the YAML parsed again (`parse_once`), every time."""
    from hydra._internal.sources_registry import SourcesRegistry
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    share_the_store(ConfigStore)
    Plugins.instance()  # the scan runs the plugin modules again: the `pkg://` source is the class it registered then
    parse_once(SourcesRegistry.instance().resolve("pkg"))


def share_the_store(store_class) -> None:
    """Hydra deep-copies its config repository on every compose, and the ConfigStore with it: with fxp's schemas and
    20 presets stored, a quarter of a compose (20 of 77 ms). The store is one per process, and loading a config from it
    returns a copy of the node, so a compose never changes it: the copy can be the store itself. (Hydra's main branch
    stopped keeping the store on the copied source, facebookresearch/hydra#2928; 1.3.2 still copies it.)"""
    if "__deepcopy__" not in vars(store_class):
        store_class.__deepcopy__ = lambda store, memo: store


def parse_once(source_class) -> None:
    """Hydra parses every YAML file of a packaged config tree (`pkg://`: fxp's, Hydra's own) on every compose, and
    `fxp train` composes three times (fxp's check, then Hydra twice: for the mode, for the job); parsing, with the
    interpolations through OmegaConf's grammar, was a fifth of a compose. Each file version (path, mtime, size) is
    parsed once per process, and each compose gets its own copy (Hydra changes what it loads)."""
    import copy
    import dataclasses

    read, parsed = source_class._read_config, {}

    @functools.wraps(read)
    def once(source, res):
        try:
            st = os.stat(res)
        except (TypeError, OSError):  # a zipped package's file: no version on disk to key on
            return read(source, res)
        key = (str(res), st.st_mtime_ns, st.st_size)
        if key not in parsed:
            parsed[key] = read(source, res)
        found = parsed[key]
        return dataclasses.replace(found, config=copy.deepcopy(found.config), header=dict(found.header))

    source_class._read_config = once


def plugins_visible() -> None:
    """fxp's Hydra plugins (hydra_plugins/fxp_ray_launcher) in the folders Hydra scans for plugins: an editable install
    (pip install -e) maps them through an import hook, which the scan (pkgutil) does not walk."""
    import hydra_plugins
    import hydra_plugins.fxp_ray_launcher as ours

    folder = str(Path(ours.__file__).parent.parent)
    if folder not in list(hydra_plugins.__path__):
        hydra_plugins.__path__.append(folder)


@functools.cache
def null_nodes() -> tuple[str, ...]:
    """The keys whose schema is a dataclass and whose default is null (`task.aug`, `reproduce`), in the root schema
    and every kind's task: `+node=KEY` makes one from its schema, so that keys inside it can be set."""
    from fxp import dispatch
    from fxp.schema import Config

    paths = _null_nodes(Config, "")
    for kind in dispatch.kinds():
        paths += [p for p in _null_nodes(dispatch.kind_module(kind).Task, "task.") if p not in paths]
    return tuple(paths)


def _null_nodes(schema, prefix: str) -> list[str]:
    import typing
    from dataclasses import fields, is_dataclass

    hints, out = typing.get_type_hints(schema), []
    for f in fields(schema):
        args = typing.get_args(hints[f.name])
        inner = [a for a in args if a is not type(None)]
        if type(None) in args and len(inner) == 1 and is_dataclass(inner[0]):
            out.append(f"{prefix}{f.name}")
        elif is_dataclass(hints[f.name]):
            out += _null_nodes(hints[f.name], f"{prefix}{f.name}.")
    return out


def conf_dir() -> Path:
    "The packaged config tree, found without importing its package (which registers the schemas)."
    return _package_dir("fxp.conf")


def experiments_dir() -> Path:
    "The packaged experiment presets (the repo's experiments/ folder)."
    return _package_dir("fxp.experiments")


def _package_dir(name: str) -> Path:
    return Path(find_spec(name).submodule_search_locations[0])


def choices(group: str) -> dict[str, str]:
    "Options of a config group with their one-line descriptions (the YAML's first comment), without imports."
    folder = experiments_dir() if group == "experiment" else conf_dir() / group
    return {p.stem: _first_comment(p) for p in sorted(folder.glob("*.yaml"), key=lambda p: p.stem)}  # Hydra's order


def _first_comment(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def validate(cfg, overrides=()):
    """A new config, typed by the schemas (`cfg.task` by its kind) and checked before anything heavy is imported; else
    ConfigError with one line naming the key. Checked: interpolations resolve; no key the schemas lack, however it was
    added (`+`, `++`), and none they need removed (`~data`); the values fxp.schema declares (ranges, list lengths,
    choices) in every schema node; learning rates and stages; the kind's own checks; data.path. `overrides` (the
    command line's) may not set a key that changes nothing (`trainer.epochs` when every stage sets its epochs)."""
    from omegaconf import OmegaConf

    from fxp import dispatch
    from fxp.checks import (
        check_folds,
        check_init,
        check_metrics,
        check_no_ops,
        check_targets,
        check_techniques,
        check_types,
        check_values,
    )
    from fxp.schema import Config

    plain = _resolved(cfg)
    kind = dispatch.kind_module(plain["task"].get("kind"))
    typed = _typed(plain, kind.Task)
    given = _as_given(cfg, overrides)
    check_types(given, Config)
    check_types(given["task"], kind.Task, "task")
    check_values(typed)
    check_metrics("task.metrics", typed.task.metrics)
    check_targets(typed)
    _check_trainer(typed.trainer)
    check_init(typed.model)
    check_techniques(typed, {k: dispatch.declared(dispatch.kind_module(k), "TECHNIQUES") for k in dispatch.kinds()})
    check_folds(typed, {k: dispatch.declared(dispatch.kind_module(k), "NO_FOLDS") for k in dispatch.kinds()})
    out = OmegaConf.create(OmegaConf.to_container(cfg))
    out.task = _typed_task(OmegaConf.to_container(cfg.task), kind.Task)  # as composed: interpolations kept
    kind.check(out)  # after the trainer's checks: a kind may rely on them, and sees the model too
    check_no_ops(typed, overrides)
    if cfg.data.path:
        path = Path(cfg.data.path).expanduser().resolve()
        if not path.exists():
            raise ConfigError(f"data.path={cfg.data.path} does not exist (looked for {path}); "
                              f"point data.path= at a local copy of the dataset")
        out.data.path = str(path)  # config.yaml records where the data was, whatever the working directory
    elif out.task.local:
        out.data.path = str(found_locally(out.task.local))  # recorded as a given data.path is
    for key in ("exclude", "relabel"):  # fxp clean's lists, recorded as data.path is
        if cfg.data[key]:
            out.data[key] = str(_clean_list(f"data.{key}", cfg.data[key], out))
    return out


SHARED_DATA = "../shared/data"  # task.local without $FXP_DATA: beside the working directory (a clone's root)


def local_copy(name: str) -> Path:
    "Where task.local=NAME is: $FXP_DATA/NAME when FXP_DATA is set, else ../shared/data/NAME."
    return (Path(os.environ.get("FXP_DATA") or SHARED_DATA) / name).expanduser().resolve()


def found_locally(name: str) -> Path:
    "task.local's folder, if it is there; else one line saying where it was looked for and how to point at it."
    path = local_copy(name)
    if path.is_dir():
        return path
    where = "$FXP_DATA" if os.environ.get("FXP_DATA") else f"{SHARED_DATA} (from the working directory; FXP_DATA unset)"
    raise ConfigError(f"data set {name!r} not found: looked for {path}, in {where}; set data.path= to a copy of it, "
                      f"or FXP_DATA= to the folder holding {name}/")


def _clean_list(key: str, file: str, cfg) -> Path:
    "An existing CSV for a config whose items fxp clean lists (the kind's `not_cleanable`); else one line."
    from fxp import dispatch

    path = Path(file).expanduser().resolve()
    why = dispatch.not_cleanable(cfg)
    if why:
        raise ConfigError(f"{key}: this task takes no fxp clean list: {why}")
    if not path.is_file():
        raise ConfigError(f"{key}={file} is not a file (looked for {path}); give the CSV fxp clean wrote "
                          f"(RUN/clean/top_losses.csv)")
    return path


def cautions(cfg) -> list[str]:
    "What a valid config does that is likely not what was meant, one line each (the command line prints them)."
    from fxp import dispatch
    from fxp.checks import frozen_random_body, mom_cycled, tta_unaugmented

    first = dispatch.steps(dispatch.kind_module(cfg.task.kind), cfg)[0]  # the step that starts from model's weights
    stages = cfg.trainer.stages if first.stages is None else first.stages
    lines = [frozen_random_body(cfg, stages), mom_cycled(cfg), tta_unaugmented(cfg)]
    return [line for line in lines if line]


def _as_given(cfg, overrides) -> dict:
    """The config's values as given, before the schemas type them, resolved: the composed config untyped (so an
    interpolation gives what the run will read, `${now:%Y}` text) with the command line's values as Hydra parsed them
    (composing typed `trainer.scale_lr=2` as true)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    given = OmegaConf.create(OmegaConf.to_container(cfg))
    for o in OverridesParser.create().parse_overrides(list(overrides)):
        key = o.key_or_group
        if o.is_delete() or o.is_sweep_override() or key in (*GROUPS, NODE_GROUP) or key.split(".")[0] == "hydra":
            continue  # a group's choice, a removal, a sweep (the sweeper's), Hydra's own keys: no value of the config
        OmegaConf.update(given, key, o.value(), merge=False, force_add=True)
    return _resolved(given)


def _resolved(cfg) -> dict:
    "The config as plain containers with its interpolations resolved; a task and every part a run needs present."
    from dataclasses import MISSING, fields

    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from fxp.schema import Config

    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:  # ${oc.env:NOPE}, ${nope}, or a value of the wrong type once resolved
        raise ConfigError(one_line(e)) from None
    if not isinstance(plain.get("task"), dict):
        raise ConfigError(f"no task: pick one with task=NAME; choose from: {', '.join(choices('task'))}")
    for f in fields(Config):
        if f.name not in plain and f.default is MISSING and f.default_factory():
            raise ConfigError(f"~{f.name} removed {f.name}, which every run needs; set its keys instead "
                              f"(fxp train --cfg job shows them)")
    return plain


@functools.cache
def schema_node(schema):
    """The OmegaConf node of a dataclass schema, made once (a sixth of the time of validating a config): only ever the
    first config of `OmegaConf.merge`, which merges into a copy of it."""
    from omegaconf import OmegaConf

    return OmegaConf.structured(schema)


def _typed(plain: dict, task_schema):
    "`plain` merged into the root schema and `task` into its kind's: a key they lack fails, however it was added."
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from fxp.schema import Config

    try:
        typed = OmegaConf.merge(schema_node(Config), {k: v for k, v in plain.items() if k != "task"})
    except OmegaConfBaseException as e:
        raise ConfigError(one_line(e)) from None
    typed.task = _typed_task(plain["task"], task_schema)
    return typed


def _typed_task(task: dict, schema):
    "A fresh merge into the kind's schema: `+task.key=...` force-adds keys to the typed node, the merge rejects them."
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.merge(schema_node(schema), task)
    except OmegaConfBaseException as e:
        raise ConfigError(one_line(e, prefix="task.")) from None


def _check_trainer(t) -> None:
    """What fxp.schema's declarations cannot say: the learning rate's forms, a non-empty list of stages, bs=auto's
    one process, a seed group's last seed within numpy's range and not of cross-validations."""
    from fxp.checks import check_auto_bs, check_lr, check_stages
    from fxp.schema import MAX_SEED

    check_lr("trainer.lr", t.lr)
    check_stages("trainer.stages", t.stages)
    check_auto_bs(t)
    if t.seeds > 1 and t.folds is not None:
        raise ConfigError(f"trainer.seeds={t.seeds} with trainer.folds={t.folds}: a seed group of cross-validations is "
                          "not supported yet; give one of them (or sweep trainer.seed over a cross-validation: -m)")
    if t.seed + t.seeds - 1 > MAX_SEED:
        raise ConfigError(f"trainer.seeds={t.seeds}: its seeds {t.seed}..{t.seed + t.seeds - 1} pass numpy's largest, "
                          f"{MAX_SEED}; lower trainer.seed")


def parse_override(override: str):
    """`KEY=VALUE` as Hydra reads it (its Override: key, value, sweep), for every command that takes overrides (fxp
    train's precheck, the commands on a saved run); else one line: the same for all of them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        parsed = OverridesParser.create().parse_overrides([override])[0]
    except OverrideParseException as e:
        raise ConfigError(f"cannot parse the override {override} ({str(e).splitlines()[0]}); a value with characters "
                          f"Hydra reads as syntax (a regex's ( ) $ \\, brackets, braces, commas, spaces) goes in "
                          f"Hydra's quotes inside the shell's: {quoted(override)}") from None
    if not parsed.key_or_group:
        raise ConfigError(f"the override {override!r} names no key: write KEY=VALUE (fxp train --cfg job shows the "
                          f"keys)")
    return parsed


def quoted(override: str) -> str:
    """`KEY=VALUE` as the shell must pass it for Hydra to read VALUE as a plain string: `'task.pat="^(.+)_\\d+$"'`
    (Hydra's double quotes, or single ones if the value has a double quote, inside the shell's)."""
    key, _, value = override.partition("=")
    q = "'" if '"' in value else '"'
    inner = f"{key}={q}{value}{q}"
    return f"'{inner}'" if "'" not in inner else '"' + inner.replace("\\", "\\\\").replace('"', '\\"') + '"'


def one_line(e: Exception, prefix: str = "") -> str:
    "Hydra/OmegaConf's multi-line errors as one line naming the key (under `prefix`), and the valid keys."
    cause = e.__cause__ or e
    text = str(e) if cause is e else f"{e}\n{cause}"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("    ")]
    msg = "; ".join(ln.rstrip(".") for ln in lines if not ln.startswith("To append"))
    key = getattr(cause, "full_key", None)
    if key and f"{prefix}{key}" not in msg:
        msg = f"{prefix}{key}: {msg}"
    schema = getattr(cause, "object_type", None)
    if "not in" in msg and hasattr(schema, "__dataclass_fields__"):
        name = str(key or "").rpartition(".")[2]
        msg += _other_kinds(schema, name)
        close = difflib.get_close_matches(name, schema.__dataclass_fields__, n=1)
        msg += f"; did you mean {close[0]}" if close else ""
        msg += f"; valid keys: {', '.join(schema.__dataclass_fields__)}"
    elif "not in" in msg:
        msg += "; `fxp train --cfg job` shows every key"
    return msg


def _other_kinds(schema, name: str) -> str:
    "For a key a kind's task lacks: the kinds whose task has it (`task.label_smoothing` on a tabular task)."
    from fxp import dispatch

    fields = schema.__dataclass_fields__
    if "kind" not in fields or not name:
        return ""
    having = [k for k in dispatch.kinds() if name in dispatch.kind_module(k).Task.__dataclass_fields__]
    return f" (a {fields['kind'].default} task has no {name}; {', '.join(having)} tasks do)" if having else ""
