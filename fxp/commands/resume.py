"""`fxp resume RUN_DIR [--extend N] [OVERRIDES...]`: continue an interrupted, failed or killed run in its own folder,
with its saved config, from its last checkpoint, so that it ends as the uninterrupted run would have (same metrics.csv,
times aside); `--extend N` trains a completed run N more epochs, as a new stage recorded in its config.yaml.
`fxp resume SWEEP_DIR [--retry-failed]` finishes a sweep (fxp.sweeps: each job goes on, is started or left alone), and
`fxp resume CV_DIR` a cross-validation (fxp.cv: each fold likewise, on the same folds).

Nothing to resume is one line and changes nothing: no checkpoint, a completed run without --extend, a run still
running, a diverged one, a saved config that no longer validates. Overrides may change only what leaves the results
as they are (fxp.resume.RESUMABLE: where the data is, the device, threads, loader workers, loggers); others are refused.
"""
from __future__ import annotations

from pathlib import Path

from fxp import cv, sweeps
from fxp.commands import Parser
from fxp.errors import FxpError, check_writable
from fxp.logfile import logging_to
from fxp.resume import RESUMABLE, reopening
from fxp.runs import CONFIG, LOG, is_sweep, read_run, read_summary
from fxp.saved import listed

NOT_AGAIN = {"completed": "it completed; nothing to resume (fxp resume RUN_DIR --extend N trains N more epochs)",
             "running": "it is still running{pid}; nothing to resume",
             "diverged": "it diverged: resumed, it would diverge again at the same epoch; train it anew with a lower "
                         "trainer.lr"}


def parser() -> Parser:
    p = Parser(prog="fxp resume", description="Continue an interrupted, failed or killed run from its last "
                                              "checkpoint, in its own folder, as if it had never stopped; or finish "
                                              "a sweep or a cross-validation stopped part way.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (outputs/<task>/<stamp>; fxp runs lists them), "
                                                      "a sweep folder or a cross-validation's (<task>/cv/<stamp>)")
    p.add_argument("--extend", type=int, metavar="N", help="train a completed run N more epochs (a new stage like "
                                                           "its last one; after fine_tune, its unfrozen part)")
    p.add_argument("--trust", action="store_true", help="load a checkpoint that holds more than data (fxp's own hold "
                                                        "only data): it runs any code it holds")
    p.add_argument("--retry-failed", action="store_true", help="a sweep: also rerun its failed jobs, each in its "
                                                                "folder (the failed attempt's train.log kept)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=f"only {listed(RESUMABLE)}")
    return p


def main(args: list[str]) -> int:
    if not args:
        raise FxpError("usage: fxp resume RUN_DIR|SWEEP_DIR [--extend N] [--retry-failed] [KEY=VALUE...] "
                       "(fxp resume --help)")
    opts = parser().parse_intermixed_args(args)  # overrides before or after --extend N
    path = Path(opts.run_dir).expanduser().resolve()
    if path.is_dir() and is_sweep(path) and not (path / CONFIG).is_file():
        return resume_sweep(path, opts)
    if path.is_dir() and cv.is_cv(path):
        return resume_cv(path, opts)
    if opts.retry_failed:
        raise FxpError(f"fxp resume: --retry-failed reruns a sweep's failed jobs, and {path} is no sweep folder "
                       f"(a failed run resumes without it: fxp resume {path})")
    status = check_run(path, opts.extend)
    check_writable(path, "fxp resume")
    from fxp import apps

    cfg, reopen = reopening(path, status, opts.overrides, opts.extend, opts.trust, finish=apps.finish)
    with logging_to(path / LOG):
        apps.execute(cfg, reopen, "train", resume=True)
    return 0


def resume_sweep(path: Path, opts) -> int:
    "The sweep `fxp train -m` started into `path`, launched again in resume mode (fxp.sweeps.resuming)."
    if opts.extend is not None:
        raise FxpError(f"fxp resume: --extend trains one completed run further, and {path} is a sweep; extend one of "
                       f"its jobs: fxp resume {path}/N --extend {opts.extend}")
    check_writable(path, "fxp resume")
    args = sweeps.relaunch(path, opts.overrides, opts.retry_failed)
    from fxp import apps

    with sweeps.resuming(path):
        return apps.train(args)


CV_NOT_AGAIN = {"completed": "every fold completed; nothing to resume",
               "running": "it is still running{pid}; nothing to resume",
               "diverged": "a fold diverged: resumed, it would diverge again at the same epoch; cross-validate anew "
                           "with a lower trainer.lr"}


def resume_cv(path: Path, opts) -> int:
    "A cross-validation stopped part way (fxp.cv): its folds finished, on the folds it drew."
    for flag, given in (("--extend", opts.extend is not None), ("--retry-failed", opts.retry_failed)):
        if given:
            raise FxpError(f"fxp resume: {flag} is for a run or a sweep, and {path} is a cross-validation: fxp resume "
                           f"{path} finishes its folds (a failed one too)")
    status = read_run(path, path.parent)["status"]
    if status in CV_NOT_AGAIN:
        pid = (read_summary(path).get("process") or {}).get("pid")
        raise FxpError(f"fxp resume: {path}: {CV_NOT_AGAIN[status].format(pid=f' (pid {pid})' if pid else '')}")
    check_writable(path, "fxp resume")
    from fxp import apps

    cfg, reopen = cv.reopening(path, status, opts.overrides, finish=apps.finish)
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

