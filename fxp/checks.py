"""Value checks a schema type cannot express, shared by the core and the kinds: each fails with one line naming the
key."""
from __future__ import annotations

import functools
import math
import typing
from dataclasses import fields, is_dataclass, replace

from omegaconf import OmegaConf

from fxp.errors import ConfigError
from fxp.schema import (
    MAX_LR,
    OPT_HYPERS,
    POLICIES,  # noqa: F401  (the stage policies, for the kinds and tests)
    Valid,
)


def check_values(cfg) -> None:
    """Every value of `cfg` (typed and resolved) that its schema field declares a `Valid` for (fxp.schema): ranges,
    list lengths, integers, choices; one line naming the first bad key. Schema nodes anywhere are checked (a kind's
    own stage lists too); untyped ones (model.kwargs, logger) are not."""
    for key, value, v in declared(cfg):
        if value is not None:
            check_value(key, value, v)


SCALARS = {bool: "true or false", int: "an integer", float: "a number"}
DECODE = "; an interpolation gives text: ${oc.decode:...} around it reads it"  # ${oc.decode:${oc.env:BS}}: a number


def check_types(plain: dict, schema, key: str = "") -> None:
    """Each value of `plain` (the config resolved, before the schemas type it) has its field's type, strictly: typing it
    would take `2` or 'yes' for true and '2026' (what `${now:%Y}` gives) for 2026. One line naming the first bad key."""
    hints = _hints(schema)
    for name, value in plain.items():
        if name in hints:
            _check_type(f"{key}.{name}" if key else name, value, hints[name])


def _check_type(key: str, value, hint) -> None:
    "`value` of `key` is of type `hint` (a scalar, a schema node, a list of them; None where Optional)."
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if value is None and type(None) in typing.get_args(hint):
        return
    hint = args[0] if typing.get_origin(hint) is typing.Union and len(args) == 1 else hint
    if is_dataclass(hint) and isinstance(value, dict):
        check_types(value, hint, key)
    elif typing.get_origin(hint) is list and isinstance(value, list):
        for i, item in enumerate(value):
            _check_type(f"{key}.{i}", item, typing.get_args(hint)[0])
    elif hint in SCALARS and not _is_a(value, hint):
        what = "text" if isinstance(value, str) else "true or false" if isinstance(value, bool) else "a number"
        hint_text = DECODE if what == "text" else ""
        raise ConfigError(f"{key}={_shown(value)!r} is {what}, not {SCALARS[hint]}{hint_text}")


def _is_a(value, scalar: type) -> bool:
    if scalar is bool:
        return isinstance(value, bool)
    return _is_number(value) and (scalar is float or isinstance(value, int))


@functools.cache
def _hints(schema) -> dict:
    "{field: type} of a schema class, its inherited fields included."
    return typing.get_type_hints(schema) if is_dataclass(schema) else {}


def check_no_ops(cfg, overrides) -> None:
    """A key of the command line that changes nothing is an error: `trainer.epochs` (or `trainer.lr`) when every stage
    of `cfg` sets its own (the stage fields declared `default_from` it). One line naming the keys that act."""
    given = {o.lstrip("+").partition("=")[0]: o.partition("=")[2] for o in overrides if "=" in o[1:]}
    acting = {}
    for key, value, v in declared(cfg):
        if v.default_from:
            acting.setdefault(v.default_from, []).append((key, value))
    for key, stages in acting.items():
        if key in given and all(value is not None for _, value in stages):
            own = ", ".join(f"{k}={_shown(value)}" for k, value in stages)
            raise ConfigError(f"{key}={given[key]} changes nothing: every stage sets its own ({own}); "
                              f"set those instead, e.g. {stages[0][0]}={given[key]}")


def declared(node, key: str = ""):
    "(key, value, Valid) for each value under `node` whose schema field declares a `Valid` (fxp.schema), at any depth."
    if OmegaConf.is_list(node):
        for i, item in enumerate(node):
            if OmegaConf.is_config(item):
                yield from declared(item, f"{key}.{i}")
        return
    spec = declared_values(OmegaConf.get_type(node))
    for name in node:
        value, full = node[name], f"{key}.{name}" if key else str(name)
        if name in spec:
            yield full, value, spec[name]
        if OmegaConf.is_config(value):
            yield from declared(value, full)


def _shown(value):
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


@functools.cache
def declared_values(schema) -> dict:
    """{field: Valid} of a schema class; a field a subclass re-declares (another default) keeps its base's declaration.
    An int field takes integers only (`whole`), as its type says."""
    if not is_dataclass(schema):
        return {}
    out = {}
    for klass in reversed(schema.__mro__):
        for f in fields(klass) if is_dataclass(klass) else ():
            if "valid" in f.metadata:
                whole = str(f.type) in ("int", "Optional[int]")
                out[f.name] = replace(f.metadata["valid"], whole=True) if whole else f.metadata["valid"]
    return out


def check_value(key: str, value, v: Valid) -> None:
    "`value` of `key` as `v` declares it, or one line saying what the key takes."
    if v.choices and not v.interval and _is_list(value):  # a list of words (task.procs): each one of the choices
        for i, x in enumerate(value):
            check_in(f"{key}.{i}", x, v.choices)
        return
    if v.choices and (value in v.choices or not v.interval):
        return check_in(key, value, v.choices)
    if not v.interval:
        return
    if _is_list(value):
        ok = v.items is not None and len(value) == v.items and all(_in(x, v) for x in value)
    else:
        ok = v.scalar and _in(value, v)
    if not ok:
        words = "".join(f" or {c}" for c in v.choices)  # num_workers: a number or auto
        raise ConfigError(f"{key}={_shown(value)!r} is not valid: give {_takes(v)}{words}"
                          + (f" ({v.why})" if v.why else ""))


def _is_list(value) -> bool:
    return OmegaConf.is_list(value) or isinstance(value, list)


def _in(x, v: Valid) -> bool:
    "`x` is a number (an integer where `v.whole`) inside `v.interval`."
    if not _is_number(x) or (v.whole and not isinstance(x, int)):
        return False
    lo, hi, lo_open, hi_open = _bounds(v.interval)
    return (lo < x if lo_open else lo <= x) and (x < hi if hi_open else x <= hi)


@functools.cache
def _bounds(interval: str) -> tuple:
    "'[1, inf)' → (1.0, inf, False, True)."
    lo, hi = (float(b.strip()) for b in interval[1:-1].split(","))
    return lo, hi, interval[0] == "(", interval[-1] == ")"


def _takes(v: Valid) -> str:
    "What a field takes, in words: 'an integer ≥ 2', 'a list of 3 numbers in [0, 1)', 'a number in (0, 1]'."
    lo, hi, lo_open, hi_open = _bounds(v.interval)
    where = (f"{'>' if lo_open else '≥'} {lo:g}" if math.isinf(hi) else f"in {v.interval}")
    one = f"{'an integer' if v.whole else 'a number'} {where}"
    many = f"a list of {v.items} {'integers' if v.whole else 'numbers'} {where}"
    return many if v.items and not v.scalar else f"{one} or {many}" if v.items else one


def frozen_random_body(cfg, stages) -> str | None:
    """The first of `stages` (those that start from the model's weights) freezes the body of an architecture that
    has no pretrained weights (model.pretrained=false): only the head of a random network would learn. A warning."""
    m = cfg.model
    if m.arch is None or m.pretrained or not stages:
        return None
    s, key = stages[0], f"{stages._get_full_key(None)}.0"
    if s.policy == "fine_tune" and s.freeze_epochs:
        what, fix = f"policy fine_tune first trains {s.freeze_epochs} epoch(s) frozen", f"{key}.policy=fit_one_cycle"
    elif s.freeze is True or (not isinstance(s.freeze, bool) and isinstance(s.freeze, int) and s.freeze < 0):
        what, fix = f"freeze: {str(s.freeze).lower()}", f"{key}.freeze=null"
    else:
        return None
    return (f"model.pretrained=false, yet {key} trains with the body frozen ({what}): only the head of a random "
            f"network learns there; train it whole ({fix}, or trainer=default), or use pretrained weights")


# trainer keys that only some kinds' inputs take: a kind lists those it takes in its module's TECHNIQUES
TECHNIQUES = {"mixup": "it mixes pairs of images and their labels", "cutmix": "it pastes a patch of one image into "
              "another and mixes their labels", "tta": "it averages predictions over augmented copies of each image"}


def check_techniques(cfg, taken: dict) -> None:
    """The techniques the trainer turns on are ones the kind's inputs take (`taken`: each kind's TECHNIQUES), mixup and
    cutmix not both, and the optimizer's hyper-parameters are ones it has; else one line naming the key."""
    tr = cfg.trainer
    for key, why in TECHNIQUES.items():
        if tr[key] and key not in taken[cfg.task.kind]:
            takers = [k for k, keys in taken.items() if key in keys]
            value = str(tr[key]).lower() if isinstance(tr[key], bool) else tr[key]
            raise ConfigError(f"trainer.{key}={value}: a {cfg.task.kind} task cannot use it ({why}); "
                              f"{', '.join(takers)} tasks can")
    if tr.mixup and tr.cutmix:
        raise ConfigError(f"trainer.mixup={tr.mixup} and trainer.cutmix={tr.cutmix}: a batch is mixed one way at a "
                          f"time; set one of them to 0")
    for key in ("mom", "sqr_mom", "eps"):
        if tr[key] is not None and key not in OPT_HYPERS[tr.opt]:
            raise ConfigError(f"trainer.{key}={tr[key]}: trainer.opt={tr.opt} has no {key} (it takes "
                              f"{', '.join(OPT_HYPERS[tr.opt])}); remove it or pick another trainer.opt")


def check_folds(cfg, refused: dict) -> None:
    """trainer.folds for a kind that takes it (`refused`: each kind's NO_FOLDS, why it does not), trainer.fold one of
    its folds, data.group_col and data.folds_file only with folds; else one line naming the key."""
    tr, data = cfg.trainer, cfg.data
    if tr.folds is not None and refused[cfg.task.kind]:
        takers = [k for k, why in refused.items() if not why]
        raise ConfigError(f"trainer.folds={tr.folds}: a {cfg.task.kind} task cannot be cross-validated "
                          f"({refused[cfg.task.kind]}); {', '.join(takers)} tasks can")
    if tr.fold is not None and tr.folds is None:
        raise ConfigError(f"trainer.fold={tr.fold} needs trainer.folds=K (the number of folds the items are cut into)")
    if tr.fold is not None and tr.fold >= tr.folds:
        raise ConfigError(f"trainer.fold={tr.fold} is not a fold of trainer.folds={tr.folds}: give one of "
                          f"0..{tr.folds - 1}")
    for key in ("group_col", "folds_file"):
        if data[key] is not None and tr.folds is None:
            raise ConfigError(f"data.{key}={data[key]} is for a cross-validation: set trainer.folds=K too (or drop "
                              f"data.{key})")


def mom_cycled(cfg) -> str | None:
    """trainer.mom where every stage is one-cycle, which sets the momentum from trainer.moms (it only switches momentum
    on for sgd and rmsprop, which have none by default). A warning."""
    tr = cfg.trainer
    if tr.mom is None or tr.opt in ("sgd", "rmsprop") or any(s.policy == "fit" for s in tr.stages):
        return None
    return (f"trainer.mom={tr.mom} changes nothing: every stage is one-cycle, whose momentum follows trainer.moms "
            f"({list(tr.moms)}); set trainer.moms=[...] instead (trainer.mom acts in fit stages)")


def tta_unaugmented(cfg) -> str | None:
    """trainer.tta on images that nothing random transforms in training (no task.aug, no random crop to task.size): the
    augmented copies equal the image, so tta_<metric> is the plain metric. A warning."""
    task = cfg.task  # an image kind's (fxp.schema.Images): the kinds that take tta (their TECHNIQUES)
    if not cfg.trainer.tta or task.aug is not None or task.size and task.resize_method == "crop":
        return None
    return ("trainer.tta=true, but the task augments nothing (task.aug is null, no random crop): TTA's copies equal "
            "the images and tta_<metric> the plain metric; add augmentation (e.g. task.aug.max_rotate=10)")


def check_targets(cfg) -> None:
    """What the run builds from the config has the form it needs (whether it imports is known when it is built):
    model.arch a dotted path; model.net (or null), each trainer.cbs entry and each logger (or null) a `_target_`
    node."""
    arch = cfg.model.arch
    if arch is not None and not (isinstance(arch, str) and "." in arch.strip(".")):
        raise ConfigError(f"model.arch={_shown(arch)!r} is not the dotted path of an architecture "
                          f"(e.g. torchvision.models.resnet34)")
    nodes = [("model.net", cfg.model.net, True), *((f"trainer.cbs.{k}", v, False) for k, v in cfg.trainer.cbs.items()),
             *((f"logger.{k}", v, True) for k, v in (cfg.logger or {}).items())]
    for key, node, may_be_null in nodes:
        if not (node is None and may_be_null or OmegaConf.is_dict(node) and "_target_" in node):
            raise ConfigError(f"{key}={_shown(node)!r} is not a node with a _target_ "
                              f"(e.g. {{_target_: package.module.Name, arg: value}})")


def check_metrics(key: str, metrics) -> None:
    "Each metric is a name (a fastai metric, looked up when the run starts) or a node with a `_target_`."
    for i, m in enumerate(metrics):
        if not (isinstance(m, str) and m.strip() or OmegaConf.is_dict(m) and "_target_" in m):
            raise ConfigError(f"{key}.{i}={_shown(m)!r} is not a metric: give a fastai metric's name (accuracy, "
                              f"error_rate, ...) or a node with a _target_ (e.g. {{_target_: fastai.metrics.F1Score}})")


def check_stages(key: str, stages) -> None:
    "A list of stages (the trainer's, or a kind's own step, e.g. task.lm_stages) that fit_stage can run."
    if not stages:
        raise ConfigError(f"{key} is empty: give at least one stage, e.g. [{{policy: fit_one_cycle}}]")
    for i, s in enumerate(stages):
        check_lr(f"{key}.{i}.lr", s.lr)
        if not (s.freeze is None or isinstance(s.freeze, bool) or isinstance(s.freeze, int) and s.freeze < 0):
            raise ConfigError(f"{key}.{i}.freeze={_shown(s.freeze)!r} is not valid: give true (freeze the body), "
                              f"false (unfreeze) or a negative count of trainable groups (-2: freeze_to(-2))")


def check_auto_bs(tr) -> None:
    "trainer.bs=auto trains in one process: each process of a DDP run would probe a size of its own."
    world = tr.devices * tr.nodes
    if tr.bs == "auto" and world > 1:
        raise ConfigError(f"trainer.bs=auto probes one process's memory, but this run has {world} processes "
                          f"(trainer.devices × trainer.nodes) that must share one size; give trainer.bs=N (each "
                          f"process's batch)")


def check_in(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not valid; choose from: {', '.join(map(str, allowed))}")


def check_lr(key: str, lr) -> None:
    "A learning rate: a positive number, a [lo, hi] pair of them (discriminative rates), 'find', or None (inherited)."
    ok = (lr is None or lr == "find" or _is_rate(lr)
          or (OmegaConf.is_list(lr) or isinstance(lr, list)) and len(lr) == 2 and all(map(_is_rate, lr)))
    if not ok:
        raise ConfigError(f"{key}={_shown(lr)!r} is not a learning rate: give a positive number up to {MAX_LR:g} "
                          f"(3e-3), a [lo, hi] pair for discriminative rates, or 'find'")


def _is_rate(x) -> bool:
    return _is_number(x) and 0 < x <= MAX_LR


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_init(m) -> None:
    "model.init re-initialises a model trained from scratch: not one loaded with pretrained weights."
    if m.init != "default" and m.pretrained:
        raise ConfigError(f"model.init={m.init} re-initialises the model, but model.pretrained=true loads weights it "
                          f"would overwrite; set model.pretrained=false (from scratch) or model.init=default")


def check_y_range(y_range) -> None:
    "task.y_range: [lo, hi] with lo < hi (a sigmoid squashes the outputs into it), or null."
    if y_range is not None and (len(y_range) != 2 or y_range[0] >= y_range[1]):
        raise ConfigError(f"task.y_range={list(y_range)} must be [lo, hi] with lo < hi, or null")


NEEDS = {(): "no model.arch or model.net (it builds its own network from model.kwargs)",
         ("arch",): "an architecture in model.arch", ("net",): "a network in model.net",
         ("arch", "net"): "an image architecture in model.arch or a network in model.net"}


IMAGE_MODEL = ("arch", "net"), "an image model, e.g. model=resnet34, resnet18 or small_cnn"


def check_model(cfg, takes: tuple, pick: str, text: bool = False) -> None:
    """The model is one the task's learner takes (`takes`: model.arch, model.net, or neither; a fastai text
    architecture where `text`, else none); else one line saying which."""
    m = cfg.model
    given = tuple(k for k in ("arch", "net") if m[k] is not None)
    text_arch = str(m.arch or "").startswith("fastai.text.")
    if not set(given) <= set(takes) or (takes and not given) or text_arch != text:
        what = f"model.arch={m.arch}" if m.arch else ("a model.net" if m.net is not None else "no architecture")
        raise ConfigError(f"a {cfg.task.kind} task needs {NEEDS[takes]}, but this model has {what}; "
                          f"pick {pick} (fxp tasks lists the models)")
