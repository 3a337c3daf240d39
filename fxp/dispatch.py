"""`task.kind` → the module under `fxp/tasks/` that knows that kind, checked against the kind protocol.

A kind is a module, not a class: it provides the functions of `Kind` below, imports fastai inside them (so listing
and validating configs stay light), and never re-implements what the core does (seeding, callbacks, stages,
export). Most kinds train one learner: they give `dls` and `learner`, and the core makes the one default step.
A kind that trains in steps (ULMFiT's language model then classifier; a GAN's generator, critic, then GAN)
gives `steps(cfg)` instead: a list of `fxp.step.Step`s that the core runs in one loop (`fxp.train.run_steps`).
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType
from typing import Protocol

from fxp import tasks
from fxp.errors import ConfigError
from fxp.step import Step


class Kind(Protocol):
    "What `fxp/tasks/<kind>.py` provides. `check` sees the whole config (cfg.task typed by `Task`)."
    Task: type  # the task schema: a dataclass extending fxp.schema.TaskBase

    def check(self, cfg) -> None: ...  # values a schema type cannot express; raise ConfigError with one line

    def factories(self, cfg) -> list: ...  # the fastai functions `model.kwargs` go to (checked against them)

    def evaluate(self, learn, cfg) -> dict: ...  # numbers for summary.json (thresholds, importance, ...)

    def baseline(self, learn, cfg) -> dict: ...  # {metric: {value, by}}: an input-blind predictor's valid score

    def plots(self, learn, cfg, dest, evaluation) -> None: ...  # PNGs under dest (plots/), from evaluate's numbers

    def predict(self, learn, cfg, inputs) -> list: ...  # rows (dicts) for `fxp predict`; options as kwargs

    # and, optionally, the members of OPTIONAL and OPTIONAL_FUNCTIONS below (what it takes, what it declares)


INPUTS = ("image", "text", "table", "pairs", "audio")


def _names(x) -> bool:
    return isinstance(x, tuple) and all(isinstance(n, str) and n for n in x)


def _techniques(x) -> bool:
    from fxp.checks import TECHNIQUES

    return _names(x) and set(x) <= set(TECHNIQUES)


# What a kind may declare beyond its functions: name -> (default, the check, what it must be). Optional, and checked
# when the kind is loaded, like the functions; the core and the commands read them through `declared`, never guess.
OPTIONAL = {
    # what `fxp predict`/`fxp serve` take and `fxp export` exports: image files, texts, a table's rows, (user, item)
    # pairs, sound files; None: none of these (serve and export refuse the run, predict passes its inputs as given)
    "INPUT": (None, lambda x: x is None or x in INPUTS, f"one of {', '.join(INPUTS)}"),
    # the trainer keys that only some kinds' inputs take (fxp.checks.TECHNIQUES: mixup, cutmix, tta) this kind does
    "TECHNIQUES": ((), _techniques, "a tuple of fxp.checks.TECHNIQUES' keys (mixup, cutmix, tta)"),
    # fastai callbacks of its learner whose state goes on from epoch to epoch ({class name: (attribute, ...)}), which a
    # checkpoint carries for fxp resume (fxp's own callbacks say so in their `carried`)
    "CARRIED": ({}, lambda x: isinstance(x, dict) and all(isinstance(k, str) and _names(v) for k, v in x.items()),
                "a dict of callback class names to tuples of attribute names"),
    # metrics.csv columns of losses that pull against each other (a GAN's generator and critic): fxp diagnose does not
    # judge such curves by the over-/under-fitting rules
    "ADVERSARIAL": ((), _names, "a tuple of metrics.csv column names"),
    # why this kind's runs cannot be cross-validated (trainer.folds); None: it splits its items through
    # fxp.folds.splitter, which gives a run of a cross-validation its fold as the valid split
    "NO_FOLDS": (None, lambda x: x is None or isinstance(x, str) and bool(x), "None or a sentence saying why"),
}
# Optional functions: `not_cleanable(cfg) -> str | None`, why `fxp clean` cannot list this config's items (None: it can,
# and data.exclude/data.relabel take its lists back); a kind without it takes no fxp clean lists.
# `explain(learn, cfg, inputs, dest, **options) -> list[dict]`: fxp explain's files in `dest` (heatmaps, highlighted
# words, feature importance) and its rows, for `inputs` or, where none are given, the labelled validation split the
# learner's loaders hold; options (method, target, layer) are its keyword arguments. A kind without it is not explained.
# `clean_items(learn, dls) -> [(split, loader, names, picture)]`: the items fxp clean scores, where they are not image
# files a test_dl reads (fxp.commands.clean): per split a labelled loader with the validation transforms, each item's
# name in the lists, and `picture(i)` drawing item i for the contact sheet.
OPTIONAL_FUNCTIONS = {"not_cleanable": ("cfg",), "explain": ("learn", "cfg", "inputs", "dest"),
                      "clean_items": ("learn", "dls")}
# Either `steps(cfg) -> list[Step]`, or the two functions of the one default step.
STEPS = ("steps",)
ONE_STEP = (("dls", ("cfg", "device")), ("learner", ("cfg", "dls")))


def kinds() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(tasks.__path__) if not m.name.startswith("_"))


_checked: dict[str, ModuleType] = {}


def kind_module(kind: str) -> ModuleType:
    "The module of `kind`, checked once against the protocol."
    if kind not in _checked:
        if kind not in kinds():
            raise ConfigError(f"task.kind={kind!r} is not a known kind; choose from: {', '.join(kinds())}")
        _checked[kind] = check_protocol(importlib.import_module(f"fxp.tasks.{kind}"))
    return _checked[kind]


def check_protocol(module: ModuleType) -> ModuleType:
    "`module` if it provides every function of the protocol with the right parameters; else one line saying what lacks."
    wanted = [(name, _params(fn)) for name, fn in vars(Kind).items()
              if inspect.isfunction(fn) and not name.startswith("_")]
    wanted += [(name, ("cfg",)) for name in STEPS] if hasattr(module, "steps") else list(ONE_STEP)
    problems = [] if inspect.isclass(getattr(module, "Task", None)) else ["a Task schema class"]
    wanted += [(name, params) for name, params in OPTIONAL_FUNCTIONS.items() if hasattr(module, name)]
    problems += [f"{name} as {what} (not {getattr(module, name)!r})" for name, (_, ok, what) in OPTIONAL.items()
                 if hasattr(module, name) and not ok(getattr(module, name))]
    for name, params in wanted:
        fn = getattr(module, name, None)
        if not callable(fn):
            problems.append(f"{name}({', '.join(params)})")
        elif _params(fn)[:len(params)] != params:
            problems.append(f"{name}({', '.join(params)}), not {name}({', '.join(_params(fn))})")
    if problems:
        raise ConfigError(f"{module.__name__} is not a complete task kind: it needs {'; '.join(problems)} "
                          f"(the protocol is fxp.dispatch.Kind)")
    return module


def declared(kind: ModuleType, name: str):
    "What `kind` declares as `name` (a member of OPTIONAL), else that member's default."
    return getattr(kind, name, OPTIONAL[name][0])


def not_cleanable(cfg) -> str | None:
    "Why `fxp clean` cannot list the items of a run of `cfg` (the kind's `not_cleanable`), None if it can."
    kind = kind_module(cfg.task.kind)
    if not hasattr(kind, "not_cleanable"):
        takers = [k for k in kinds() if hasattr(kind_module(k), "not_cleanable")]
        return f"fxp clean lists the items of {' and '.join(takers)} runs, not of {cfg.task.kind} runs"
    return kind.not_cleanable(cfg)


def _params(fn) -> tuple:
    return tuple(p for p in inspect.signature(fn).parameters if p != "self")


def steps(kind: ModuleType, cfg) -> list[Step]:
    "The kind's training steps; a one-learner kind's single step."
    if hasattr(kind, "steps"):
        return kind.steps(cfg)
    return [Step("train", dls=lambda ctx: kind.dls(cfg, ctx.device), learner=lambda dls, ctx: kind.learner(cfg, dls))]


NOT_KWARGS = {"self", "dls", "arch", "model", "encoder", "n_out", "kwargs"}  # what the kind itself passes
OWNED = {"metrics": "metrics are the task's: set task.metrics",
         "y_range": "the output range is the task's: set task.y_range"}


def check_kwargs(kind: ModuleType, cfg) -> None:
    "Each `model.kwargs` key is a parameter of one of the kind's learner factories (fastai imported by now)."
    factories = kind.factories(cfg)
    accepted = {p for f in factories for p in inspect.signature(f).parameters} - NOT_KWARGS
    for key in cfg.model.kwargs:
        if key in OWNED:
            raise ConfigError(f"model.kwargs.{key}: {OWNED[key]}")
        if key not in accepted:
            names = " or ".join(f.__name__ for f in factories) or "this task's learner"
            raise ConfigError(f"model.kwargs.{key} is not an argument of {names}; "
                              f"choose from: {', '.join(sorted(accepted)) or 'none (remove model.kwargs)'}")
