"""One owner per value: the schema (fxp/schema.py, each kind's `Task`) owns the generic defaults, and a YAML holds
only what its recipe changes. Each shipped YAML is read as written (not composed) and every key whose value is the
one it would get anyway is flagged: in conf/task, conf/trainer and conf/model the schema default of the node the key
sets (a derived task: its parent task's value); in experiments/ the value its task, model and trainer already give.

A list replaces the default list whole, so a stage list is not compared with the default stages item by item: only
keys inside a stage equal to `Stage`'s defaults are flagged. A preset's `reproduce` block is a record of a published
result (its metric and direction spelled out), not a recipe, and is not checked.
"""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, ListConfig, OmegaConf

from fxp import config, dispatch
from fxp.schema import Data, Model, Trainer

CONF, EXPERIMENTS = config.conf_dir(), config.experiments_dir()
YAMLS = [CONF / g / f"{n}.yaml" for g in ("task", "trainer", "model") for n in config.choices(g)]
PRESETS = [EXPERIMENTS / f"{n}.yaml" for n in config.choices("experiment")]


def composed(*overrides: str) -> DictConfig:
    "The composed (not validated) config, as tests/test_config.py composes it."
    with initialize_config_module("fxp.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


def _hints(tp) -> dict:
    return typing.get_type_hints(tp) if dataclasses.is_dataclass(tp) else {}


def _unwrap(tp):
    "Optional[X] → X."
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) is typing.Union and len(args) == 1 else tp


def _item_type(tp):
    "The dataclass of a `List[dataclass]` field, else None."
    tp = _unwrap(tp)
    args = typing.get_args(tp)
    return args[0] if typing.get_origin(tp) is list and args and dataclasses.is_dataclass(args[0]) else None


def _plain(node):
    return OmegaConf.to_container(node, resolve=False) if isinstance(node, (DictConfig, ListConfig)) else node


def _same(value, base, tp) -> bool:
    "Would `value`, written over `base`, leave it as it is? A dict merges into its node, a list replaces it."
    try:
        if isinstance(value, dict):
            return isinstance(base, DictConfig) and _plain(OmegaConf.merge(base, value)) == _plain(base)
        item = _item_type(tp)
        if item and isinstance(value, list) and isinstance(base, ListConfig) and len(value) == len(base):
            return all(isinstance(v, dict) and _plain(OmegaConf.merge(OmegaConf.structured(item), v)) == _plain(b)
                       for v, b in zip(value, base))
        return value == _plain(base)
    except Exception:  # a wrong type or key: composing reports it (tests/test_config.py)
        return False


def restated(yaml: dict, base: DictConfig, tp, prefix: str = "") -> list[str]:
    "Dotted keys of `yaml` whose values `base` (a node typed by the dataclass `tp`) already has."
    found, hints = [], _hints(tp)
    for key, value in yaml.items():
        if key not in base:
            continue  # not a key of the node: composing rejects it
        b, ftp = base[key], hints.get(key)
        inner, item = _unwrap(ftp), _item_type(ftp)
        if _same(value, b, ftp):
            found.append(prefix + key)
        elif isinstance(value, dict) and dataclasses.is_dataclass(inner):
            node = b if isinstance(b, DictConfig) else OmegaConf.structured(inner)  # None: the node's own defaults
            found += restated(value, node, inner, f"{prefix}{key}.")
        elif item and isinstance(value, list):  # the list replaces the default: each item against its defaults
            found += [k for i, v in enumerate(value) if isinstance(v, dict)
                      for k in restated(v, OmegaConf.structured(item), item, f"{prefix}{key}[{i}].")]
    return found


def _parent_tasks(defaults: list) -> list[str]:
    "Task YAMLs a task derives from (defaults entries naming another task, not the kind or a group override)."
    return [d for d in defaults if isinstance(d, str) and not d.startswith("/") and d != "_self_"]


def _schema_base(path: Path, defaults: list):
    "The node a group YAML writes over, and its dataclass."
    group = path.parent.name
    if group == "trainer":
        return OmegaConf.structured(Trainer), Trainer
    if group == "model":
        return OmegaConf.structured(Model), Model
    parents = _parent_tasks(defaults)
    if parents:
        base = composed(f"task={parents[-1]}").task
        return base, dispatch.kind_module(base.kind).Task
    kind = next(d["/kind@_here_"] for d in defaults if isinstance(d, dict) and "/kind@_here_" in d)
    task = dispatch.kind_module(kind).Task
    return OmegaConf.structured(task), task


def _rel(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


@pytest.mark.parametrize("path", YAMLS, ids=[f"{p.parent.name}/{p.stem}" for p in YAMLS])
def test_group_yamls_do_not_restate_schema_defaults(path):
    yaml = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    base, tp = _schema_base(path, yaml.pop("defaults", []))
    keys = restated(yaml, base, tp)
    assert not keys, "\n".join(f"conf/{_rel(path)}: {k}={_value(yaml, k)} equals the schema default; delete it"
                               for k in keys)


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_presets_do_not_restate_what_their_groups_give(path):
    yaml = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    picks = [f"{k.split('/')[-1]}={v}" for d in yaml.get("defaults", []) if isinstance(d, dict) for k, v in d.items()]
    base = composed(*picks)  # the preset's groups without its own keys
    types = {"task": dispatch.kind_module(base.task.kind).Task, "model": Model, "trainer": Trainer, "data": Data}
    keys = [k for group, tp in types.items() if isinstance(yaml.get(group), dict)
            for k in restated(yaml[group], base[group], tp, f"{group}.")]
    given = " ".join(picks) or "the default groups"
    assert not keys, "\n".join(f"experiments/{path.name}: {k}={_value(yaml, k)} equals what {given} already give "
                               f"(the schema default or a group YAML's value); delete it" for k in keys)


def _value(yaml: dict, dotted: str):
    "The value at a dotted key with [i] list indices, for the message."
    node = yaml
    for part in dotted.replace("[", ".").replace("]", "").split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node
