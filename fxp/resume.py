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
from fxp.runs import last_checkpoint, read_overrides, read_summary
from fxp.saved import SavedRun, taken

RESUMABLE = ("data.path", "trainer.device", "trainer.num_threads", "trainer.num_workers", "logger", "logger.")


def resumable(key: str) -> bool:
    "Whether an override of `key` leaves a run's results as they are (a resume may take it)."
    return taken(key, RESUMABLE)


def reopening(path: Path, status: str, overrides=(), extend: int | None = None, trust: bool = False, finish=None):
    """The run's config to go on with, and `reopen(cfg)`: the run opened again in its folder at its last checkpoint
    (`finish` as fxp.writer.Run takes it). One line if it has no checkpoint."""
    point = last_checkpoint(path)
    if point is None:
        raise FxpError(f"fxp resume: {path} has no checkpoint (it stopped before its first epoch ended): nothing to "
                       f"resume; train it anew with fxp train")
    cfg = saved_config(path, list(overrides), extend)
    entry = dict(time=datetime.now().isoformat(timespec="seconds"), status=status, step=point["step"],
                 stage=point["stage"], epoch=point["epoch"], extend=extend, overrides=list(overrides), trust=trust,
                 note=note(path, point, extend, len(cfg.trainer.stages)))

    def reopen(cfg):
        from fxp.train import check_device
        from fxp.writer import Run

        check_device(cfg.trainer)  # before the run is reopened: a device it cannot use changes nothing
        return Run(path, cfg, read_overrides(path), read_summary(path).get("task") or path.parent.name,
                   finish=finish, resume=entry)
    return cfg, reopen


def saved_config(path: Path, overrides: list[str], extend: int | None):
    """The run's config as it validates now, with the overrides a resume takes (RESUMABLE: they leave the results as
    they are) and the --extend stage; else one line naming the key."""
    from fxp import config

    cfg = SavedRun(path, "fxp resume").config(overrides, RESUMABLE)
    if extend is None:
        return cfg
    cfg.trainer.stages.append(extension(cfg.trainer.stages[-1], extend))
    try:
        return config.validate(cfg)
    except ConfigError as e:
        raise ConfigError(f"fxp resume: --extend {extend}: {e}") from None


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
