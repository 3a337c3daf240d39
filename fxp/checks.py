"""Value checks a schema type cannot express, shared by the core and the kinds: each fails with one line naming the key."""
from __future__ import annotations

from omegaconf import OmegaConf

from fxp.errors import ConfigError

POLICIES = ("fit_one_cycle", "fine_tune", "fit")


def check_stages(key: str, stages) -> None:
    "A list of stages (the trainer's, or a kind's own step, e.g. task.lm_stages) that fit_stage can run."
    if not stages:
        raise ConfigError(f"{key} is empty: give at least one stage, e.g. [{{policy: fit_one_cycle}}]")
    for i, s in enumerate(stages):
        check_in(f"{key}.{i}.policy", s.policy, POLICIES)
        check_lr(f"{key}.{i}.lr", s.lr)
        if not (s.freeze is None or isinstance(s.freeze, (bool, int))):
            raise ConfigError(f"{key}.{i}.freeze={s.freeze!r} is not valid: give true (freeze the body), "
                              f"false (unfreeze) or a negative count of trainable groups (-2: freeze_to(-2))")


IMAGE_CHOICES = {"resize_method": ("crop", "pad", "squish"), "pad_mode": ("zeros", "reflection", "border")}


def check_images(task, **choices) -> None:
    "An image kind's keys (fxp.schema.Images, Split): resize_method, pad_mode and the kind's own `choices`; valid_pct."
    check_choices(task, {**choices, **IMAGE_CHOICES})
    check_fraction(task, "valid_pct")


def check_fraction(task, *keys: str) -> None:
    "Each `task.<key>` is strictly between 0 and 1 (valid_pct, a threshold)."
    for key in keys:
        if not 0 < task[key] < 1:
            raise ConfigError(f"task.{key}={task[key]} must be between 0 and 1")


def check_choices(task, choices: dict) -> None:
    "Each `task.<key>` is one of `choices[key]`, or one line naming the valid ones."
    for key, allowed in choices.items():
        check_in(f"task.{key}", task[key], allowed)


def check_in(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not valid; choose from: {', '.join(map(str, allowed))}")


def check_lr(key: str, lr) -> None:
    ok = (lr is None or lr == "find" or _is_number(lr)
          or (OmegaConf.is_list(lr) or isinstance(lr, list)) and len(lr) == 2 and all(map(_is_number, lr)))
    if not ok:
        raise ConfigError(f"{key}={lr!r} is not a learning rate: give a number (3e-3), "
                          f"a [lo, hi] pair for discriminative rates, or 'find'")


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_y_range(y_range) -> None:
    "task.y_range: [lo, hi] with lo < hi (a sigmoid squashes the outputs into it), or null."
    if y_range is not None and (len(y_range) != 2 or y_range[0] >= y_range[1]):
        raise ConfigError(f"task.y_range={list(y_range)} must be [lo, hi] with lo < hi, or null")


NEEDS = {(): "no model.arch or model.net (it builds its own network from model.kwargs)",
         ("arch",): "an architecture in model.arch", ("net",): "a network in model.net",
         ("arch", "net"): "an image architecture in model.arch or a network in model.net"}


IMAGE_MODEL = ("arch", "net"), "an image model, e.g. model=resnet34, resnet18 or small_cnn"


def check_model(cfg, takes: tuple, pick: str) -> None:
    "The model is one the task's learner takes (`takes`: model.arch, model.net, or neither); else one line saying which."
    m = cfg.model
    given = tuple(k for k in ("arch", "net") if m[k] is not None)
    text_arch = str(m.arch or "").startswith("fastai.text.")
    if not set(given) <= set(takes) or (takes and not given) or text_arch != (cfg.task.kind == "text"):
        what = f"model.arch={m.arch}" if m.arch else ("a model.net" if m.net is not None else "no architecture")
        raise ConfigError(f"a {cfg.task.kind} task needs {NEEDS[takes]}, but this model has {what}; "
                          f"pick {pick} (fxp tasks lists the models)")
