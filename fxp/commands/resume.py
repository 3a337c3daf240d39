"""`fxp resume RUN_DIR [--extend N] [OVERRIDES...]`: continue an interrupted, failed or killed run in its own folder,
with its saved config, from its last checkpoint, so that it ends as the uninterrupted run would have (same metrics.csv,
times aside); `--extend N` trains a completed run N more epochs, as a new stage recorded in its config.yaml.

Nothing to resume is one line and changes nothing: no checkpoint, a completed run without --extend, a run still
running, a diverged one, a saved config that no longer validates. Overrides may change only what leaves the results
as they are (RESUMABLE: where the data is, the device, threads, loader workers, loggers); others are refused.
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

from fxp.commands import Parser
from fxp.errors import ConfigError, FxpError, check_writable
from fxp.logfile import logging_to
from fxp.runs import CONFIG, LOG, last_checkpoint, read_overrides, read_run, read_summary
from fxp.saved import listed

RESUMABLE = ("data.path", "trainer.device", "trainer.num_threads", "trainer.num_workers", "logger", "logger.")
NOT_AGAIN = {"completed": "it completed; nothing to resume (fxp resume RUN_DIR --extend N trains N more epochs)",
             "running": "it is still running{pid}; nothing to resume",
             "diverged": "it diverged: resumed, it would diverge again at the same epoch; train it anew with a lower "
                         "trainer.lr"}


def parser() -> Parser:
    p = Parser(prog="fxp resume", description="Continue an interrupted, failed or killed run from its last "
                                              "checkpoint, in its own folder, as if it had never stopped.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (outputs/<task>/<stamp>; fxp runs lists them)")
    p.add_argument("--extend", type=int, metavar="N", help="train a completed run N more epochs (a new stage like "
                                                           "its last one; after fine_tune, its unfrozen part)")
    p.add_argument("--trust", action="store_true", help="load a checkpoint that holds more than data (fxp's own hold "
                                                        "only data): it runs any code it holds")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=f"only {listed(RESUMABLE)}")
    return p


def main(args: list[str]) -> int:
    if not args:
        raise FxpError("usage: fxp resume RUN_DIR [--extend N] [KEY=VALUE...] (fxp resume --help)")
    opts = parser().parse_intermixed_args(args)  # overrides before or after --extend N
    path = Path(opts.run_dir).expanduser().resolve()
    status = check_run(path, opts.extend)
    check_writable(path, "fxp resume")
    point = last_checkpoint(path)
    if point is None:
        raise FxpError(f"fxp resume: {path} has no checkpoint (it stopped before its first epoch ended): nothing to "
                       f"resume; train it anew with fxp train")
    cfg = saved_config(path, opts.overrides, opts.extend)
    entry = dict(time=datetime.now().isoformat(timespec="seconds"), status=status, step=point["step"],
                 stage=point["stage"], epoch=point["epoch"], extend=opts.extend, overrides=opts.overrides,
                 trust=opts.trust, note=note(path, point, opts.extend, len(cfg.trainer.stages)))
    from fxp import apps
    from fxp.writer import Run

    def reopen(cfg):
        from fxp.train import check_device

        check_device(cfg.trainer)  # before the run is reopened: a device it cannot use changes nothing
        return Run(path, cfg, read_overrides(path), read_summary(path).get("task") or path.parent.name,
                   finish=apps.finish, resume=entry)

    with logging_to(path / LOG):
        apps.execute(cfg, reopen, "train", resume=True)
    return 0


def check_run(path: Path, extend: int | None) -> str:
    "The run's status, if it is one `fxp resume` can go on with (or extend); else one line saying why not."
    if not (path / CONFIG).is_file():
        raise FxpError(f"fxp resume: {path} is not a run folder (no {CONFIG}); give one from fxp runs")
    summary = read_summary(path)
    if "suggested_lrs" in summary:
        raise FxpError(f"fxp resume: {path} is an lr-find run; nothing to resume")
    row = read_run(path, path.parent)
    status = row["status"]
    if extend is not None:
        if extend < 1:
            raise FxpError(f"fxp resume: --extend {extend}: give a number of epochs, at least 1")
        if status != "completed":
            raise FxpError(f"fxp resume: --extend trains a completed run further, and {path} is {status}: resume it "
                           f"first (fxp resume {path})")
        return status
    if status in NOT_AGAIN:
        pid = (summary.get("process") or {}).get("pid")
        reason = NOT_AGAIN[status].format(pid=f" (pid {pid})" if pid else "")
        raise FxpError(f"fxp resume: {path}: {reason}")
    return status


def saved_config(path: Path, overrides: list[str], extend: int | None):
    """The run's config as it validates now, with the overrides a resume takes (RESUMABLE: they leave the results as
    they are) and the --extend stage; else one line naming the key."""
    from fxp import config
    from fxp.saved import SavedRun

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
