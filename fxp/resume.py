"""A run reopened where its last checkpoint stands: its saved config (with the overrides a resume may take, and an
`--extend` stage) and the `Run` that goes on in its folder. `fxp resume RUN_DIR` uses it, and so does a sweep's job
that `fxp resume SWEEP_DIR` finds interrupted or killed (fxp.sweeps).

Overrides may change only what leaves the results as they are (RESUMABLE: where the data is, the device, threads,
loader workers, loggers); others are refused. Light imports at module level (the config's are in the functions).
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

from fxp.errors import ConfigError, FxpError
from fxp.runs import CONFIG, last_checkpoint, read_overrides, read_summary

RESUMABLE = ("data.path", "trainer.device", "trainer.num_threads", "trainer.num_workers", "logger")


def resumable(key: str) -> bool:
    "Whether an override of `key` leaves a run's results as they are (a resume may take it)."
    return key in RESUMABLE or key.startswith("logger.")


def reopening(path: Path, status: str, overrides=(), extend: int | None = None, trust: bool = False, finish=None):
    """The run's config to go on with, and `reopen(cfg)`: the run opened again in its folder at its last checkpoint
    (`finish` as fxp.runs.Run takes it). One line if it has no checkpoint."""
    point = last_checkpoint(path)
    if point is None:
        raise FxpError(f"fxp resume: {path} has no checkpoint (it stopped before its first epoch ended): nothing to "
                       f"resume; train it anew with fxp train")
    cfg = saved_config(path, list(overrides), extend)
    entry = dict(time=datetime.now().isoformat(timespec="seconds"), status=status, step=point["step"],
                 stage=point["stage"], epoch=point["epoch"], extend=extend, overrides=list(overrides), trust=trust,
                 note=note(path, point, extend, len(cfg.trainer.stages)))

    def reopen(cfg):
        from fxp.runs import Run
        from fxp.train import check_device

        check_device(cfg.trainer)  # before the run is reopened: a device it cannot use changes nothing
        return Run(path, cfg, read_overrides(path), read_summary(path).get("task") or path.parent.name,
                   finish=finish, resume=entry)
    return cfg, reopen


def saved_config(path: Path, overrides: list[str], extend: int | None):
    """The run's config.yaml, validated as it is now (else one line: it no longer validates, naming the key), then
    with the overrides a resume may take and the --extend stage, validated again (else one line naming the key)."""
    from omegaconf import OmegaConf

    from fxp import config
    from fxp.schema import Config

    config.register()
    try:
        saved = OmegaConf.load(path / CONFIG)
    except Exception as e:  # unreadable or not YAML
        raise FxpError(f"fxp resume: {path / CONFIG} cannot be read ({type(e).__name__}); nothing to resume") from None
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(Config), saved)
        config.validate(cfg)
    except Exception as e:  # a ConfigError, or OmegaConf's (the key and what is wrong)
        msg = str(e) if isinstance(e, ConfigError) else config.one_line(e)
        fix = f"if the data moved: fxp resume {path} data.path=NEW" if "data.path" in msg else "train it anew"
        raise ConfigError(f"fxp resume: {path / CONFIG} no longer validates: {msg}; nothing resumed ({fix})") from None
    try:
        cfg = apply(cfg, overrides)
        if extend is not None:
            cfg.trainer.stages.append(extension(cfg.trainer.stages[-1], extend))
        return config.validate(cfg)
    except ConfigError as e:
        raise ConfigError(str(e) if str(e).startswith("fxp resume:") else f"fxp resume: {e}") from None
    except Exception as e:
        raise ConfigError(f"fxp resume: {config.one_line(e)}") from None


def apply(cfg, overrides: list[str]):
    "The overrides a resume takes (RESUMABLE keys only: they leave the results as they are)."
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    for o in overrides:
        try:
            parsed = OverridesParser.create().parse_overrides([o])[0]
        except Exception as e:
            raise ConfigError(f"fxp resume: cannot parse the override {o!r} ({str(e).splitlines()[0]})") from None
        key = parsed.key_or_group
        if not key:
            raise ConfigError(f"fxp resume: the override {o!r} names no key: write KEY=VALUE")
        if not resumable(key):
            raise ConfigError(f"fxp resume: {key} would change what the run computes, so a resume cannot take it; "
                              f"it takes only {', '.join(RESUMABLE)} (train anew to change {key})")
        if key == "logger":
            cfg.logger = loggers(parsed.value())
        else:
            OmegaConf.update(cfg, key, parsed.value(), merge=True)
    return cfg


def loggers(value):
    "`logger=NAME`, `logger=[A,B]` or `logger=null` as `fxp train` composes it: the chosen YAMLs merged."
    from omegaconf import OmegaConf

    from fxp import config

    names = [] if value is None else [value] if isinstance(value, str) else list(value)
    choices = config.choices("logger")
    out = OmegaConf.create({})
    for name in names:
        if name not in choices:
            raise ConfigError(f"fxp resume: unknown logger {name!r}; choose from: {', '.join(choices)}")
        out = OmegaConf.merge(out, OmegaConf.load(config.conf_dir() / "logger" / f"{name}.yaml"))
    return out


def extension(last, n: int):
    """The stage --extend adds: the last stage again for `n` epochs at the size it left (its policy, lr, freezing); a
    fine_tune stage without its frozen epochs, so the `n` epochs are its unfrozen part."""
    from omegaconf import OmegaConf

    from fxp.schema import Stage

    stage = {**OmegaConf.to_container(last), "epochs": n, "size": None}
    if stage["policy"] == "fine_tune":
        stage["freeze_epochs"] = 0
    return OmegaConf.structured(Stage(**stage))


def note(path: Path, point: dict, extend: int | None, n_stages: int) -> str:
    "The line train.log and the console get as the run goes on."
    if extend is not None:
        return f"extended by {extend} epochs: stage {n_stages}, after stage {point['stage']} epoch {point['epoch']}"
    step = f"step {point['step']} " if point["folder"] != str(path) else ""
    return f"resumed at {step}stage {point['stage']} epoch {point['epoch']}"
