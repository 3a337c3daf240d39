"""`fxp resume SWEEP_DIR` finishes a sweep (issue 23 items 1 and 2): a 3-job grid sweep on the default task, stopped
during its second job (job 1) by SIGKILL or Ctrl-C, with the basic launcher and with joblib's (its 2 workers),
ends as the uninterrupted sweep does (its jobs' metrics.csv, sweep.csv and best.json, times aside), the stopped job
resumed from its checkpoint; Ctrl-C stops the whole sweep at once, with one line saying how to go on; a resume that
would change the grid is refused in one line; `sweep.fail_fast=true` stops at the first failed job, and
`--retry-failed` runs it again in its folder, its failed attempt's train.log kept.

The joblib sweep runs through the installed command, in a session of its own (a process group, as a terminal gives a
command): the launcher starts its workers, and Ctrl-C reaches them all; what the console shows as the command ends is
tested there. The sweeps of the basic launcher (its jobs run in the sweep's process) are forked from this process, as
their signal's path is fxp's alone; the resumes run in-process.
"""
import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import assert_one_line_error, forked, fxp_command, run_fxp, subprocess_env
from fxp import sweeps
from fxp.runs import TIMES

# the CPU and 1 thread: the same floats anywhere (a joblib job is given a GPU of its pool); no plots: drawing them
# takes longer than the jobs train
GRID = ("trainer.seed=1,2,3", "trainer.epochs=2", "trainer.device=cpu", "trainer.num_threads=1", "trainer.plots=false")
JOBLIB = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")


class FailWhile:
    "A fastai callback (trainer.cbs) that fails its job while the file `flag` exists: a failure a rerun can get past."

    def __new__(cls, flag: str):
        from fastai.callback.core import Callback

        class Flaky(Callback):
            def before_fit(self):
                if os.path.exists(flag):
                    raise RuntimeError(f"flaky: {flag} exists")
        return Flaky()


def curves(run) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in ("time", *TIMES)} for r in csv.DictReader(f)]


def rows(sweep) -> list[dict]:
    with open(sweep / "sweep.csv", newline="") as f:
        return list(csv.DictReader(f))


def outcome(sweep) -> dict:
    "What a sweep ended with, times and its folder's path aside."
    best = json.loads((sweep / "best.json").read_text())
    return {"sweep.csv": [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rows(sweep)],
            "best.json": {k: v for k, v in best.items() if k != "path"},
            "metrics": {r["job"]: curves(sweep / r["job"]) for r in rows(sweep)}}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    cwd = tmp_path_factory.mktemp("uninterrupted")
    r = run_fxp("train", "-m", *GRID, f"hydra.sweep.dir={cwd / 'sweep'}", cwd=cwd)
    assert r.returncode == 0, r
    return outcome(cwd / "sweep")


def job_1_saved(sweep, running, output) -> None:
    "Until job 1 of the sweep has its first checkpoint, while `running()`; else `output()` says why not."
    deadline = time.time() + 300
    while not (sweep / "1" / "checkpoints" / "last.json").exists():
        assert running() and time.time() < deadline, output()
        time.sleep(0.01)


def stopped(tmp_path, sig, look) -> tuple[subprocess.Popen, str, object]:
    """The installed `fxp train -m GRID` with joblib's 2 workers, in a process group of its own, started with a pool of
    two GPUs (CUDA_VISIBLE_DEVICES=0,1; GRID trains on the CPU all the same), `sig` sent to the group once job 1 has its
    first checkpoint; the process, its stderr, and what `look(process)` saw just before the signal."""
    sweep = tmp_path / "sweep"
    env = {**subprocess_env(tmp_path), "CUDA_VISIBLE_DEVICES": "0,1"}
    with open(tmp_path / "out.txt", "w") as out, open(tmp_path / "err.txt", "w") as err:
        p = subprocess.Popen([*fxp_command(), "train", "-m", *GRID, *JOBLIB, f"hydra.sweep.dir={sweep}"],
                             cwd=tmp_path, stdout=out, stderr=err, env=env, start_new_session=True)
    job_1_saved(sweep, lambda: p.poll() is None, (tmp_path / "err.txt").read_text)
    seen = look(p)
    os.killpg(p.pid, sig)
    p.wait(timeout=120)
    return p, (tmp_path / "err.txt").read_text(), seen


def forked_stop(tmp_path, sig) -> tuple[int, str]:
    """`fxp train -m GRID` forked from this process (the basic launcher: its jobs run in it), `sig` sent once job 1 has
    its first checkpoint; its exit code, and its stderr."""
    pid = forked(tmp_path, "train", "-m", *GRID, f"hydra.sweep.dir={tmp_path / 'sweep'}", errors="err.txt")
    job_1_saved(tmp_path / "sweep", lambda: os.waitpid(pid, os.WNOHANG) == (0, 0),
                (tmp_path / "console.txt").read_text)
    os.kill(pid, sig)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    err = tmp_path / "err.txt"
    return code, err.read_text() if err.exists() else ""


def workers(pid: int) -> list[int]:
    "The worker processes joblib's launcher (loky) started under the process `pid`, from /proc."
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])  # the field after the state
            if parent == pid and b"LokyProcess" in (stat.parent / "cmdline").read_bytes():
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):  # a process that ended meanwhile
            pass
    return found


def resumed_to_the_end(tmp_path, uninterrupted, *resumed_jobs: str) -> None:
    "fxp resume finishes the sweep as the uninterrupted one ended, `resumed_jobs` from their checkpoints."
    sweep = tmp_path / "sweep"
    r = run_fxp("resume", str(sweep), cwd=tmp_path)
    assert r.returncode == 0, r
    assert [row["status"] for row in rows(sweep)] == ["completed"] * 3
    assert outcome(sweep) == uninterrupted
    for job in resumed_jobs:
        assert "resumed at stage 1 epoch" in (sweep / job / "train.log").read_text(), job
    assert_one_line_error(run_fxp("resume", str(sweep), cwd=tmp_path), "every job", "3 completed",
                          "nothing to resume")


@pytest.mark.slow
def test_a_sweep_killed_during_job_1_resumes_to_the_uninterrupted_result(tmp_path, uninterrupted):
    sweep = tmp_path / "sweep"
    assert forked_stop(tmp_path, signal.SIGKILL)[0] == -signal.SIGKILL
    assert sorted(d.name for d in sweep.iterdir() if d.is_dir()) == ["0", "1"]
    done = (sweep / "0" / "summary.json").read_bytes()

    changed = run_fxp("resume", str(sweep), "trainer.seed=1,2", cwd=tmp_path)  # a grid of 2 jobs, not 3
    assert_one_line_error(changed, "fxp resume", str(sweep), "trainer.seed=1,2", "it had 3 jobs, now 2")
    changed = run_fxp("resume", str(sweep), "trainer.lr=0.1", cwd=tmp_path)
    assert_one_line_error(changed, "job 0 was trainer.seed=1", "trainer.lr=0.1")
    assert sorted(d.name for d in sweep.iterdir() if d.is_dir()) == ["0", "1"]  # nothing ran

    resumed_to_the_end(tmp_path, uninterrupted, "1")
    assert (sweep / "0" / "summary.json").read_bytes() == done  # a completed job is left as it is


@pytest.mark.slow
def test_ctrl_c_stops_the_whole_sweep_at_once_and_it_resumes(tmp_path, uninterrupted):
    sweep = tmp_path / "sweep"
    code, err = forked_stop(tmp_path, signal.SIGINT)
    assert code == 130, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "interrupted at job 1" in lines[0] and f"fxp resume {sweep} continues it" in lines[0], lines[0]
    assert not (sweep / "2").exists()  # no further job started
    assert [row["status"] for row in rows(sweep)] == ["completed", "interrupted"]
    resumed_to_the_end(tmp_path, uninterrupted, "1")


@pytest.mark.slow
def test_ctrl_c_stops_a_joblib_sweep_and_it_resumes(tmp_path, uninterrupted, monkeypatch):
    """joblib runs the jobs in 2 worker processes, each job with its GPU of the pool the sweep started with (job number
    modulo the pool) and its share of the cores: what tests/test_sweeps.py's joblib test ran, merged here (the same
    sweep). Ctrl-C: the workers' running jobs end interrupted (job 0 too, unless it had ended), no further job starts,
    one line says so; the resume (its own 2 workers, the same pool) ends as the uninterrupted sweep."""
    sweep = tmp_path / "sweep"
    p, err, pool = stopped(tmp_path, signal.SIGINT, lambda p: workers(p.pid))
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert p.returncode == 130 and "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("fxp: error: interrupted") and lines[0].endswith(f"fxp resume {sweep} continues it")
    assert len(pool) == 2  # joblib's workers, both alive as job 1 trained
    assert {row["job"]: row["status"] for row in rows(sweep)}["1"] == "interrupted"
    assert not (sweep / "2").exists()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # the resume's workers start with the same pool
    resumed_to_the_end(tmp_path, uninterrupted, "1")
    for job in ("0", "1", "2"):
        resources = json.loads((sweep / job / "summary.json").read_text())["resources"]
        assert resources["CUDA_VISIBLE_DEVICES"] == str(int(job) % 2) and resources["num_threads"] >= 1, resources


@pytest.mark.slow
def test_fail_fast_stops_at_the_first_failure_and_retry_failed_reruns_it(tmp_path):
    sweep, flags = tmp_path / "sweep", [tmp_path / f"flag{i}" for i in range(2)]
    flags[0].touch()  # job 0 fails while it is there
    r = run_fxp("train", "-m", "trainer.epochs=1", "trainer.plots=false", "sweep.fail_fast=true",
                f"hydra.sweep.dir={sweep}", "+trainer.cbs.flaky._target_=test_sweep_resume.FailWhile",
                f"+trainer.cbs.flaky.flag={','.join(map(str, flags))}", cwd=tmp_path)
    assert r.returncode == 1, r
    assert [ln.startswith("fxp: error: ") for ln in r.err_lines] == [True, True], r
    assert "flaky" in r.err_lines[0]  # the job's own error, as it happened
    assert "job 0 failed and sweep.fail_fast=true" in r.err_lines[1] and "--retry-failed" in r.err_lines[1]
    assert [row["status"] for row in rows(sweep)] == ["failed"] and not (sweep / "1").exists()

    r = run_fxp("resume", str(sweep), cwd=tmp_path)  # the others run; the failed job is left as it is
    assert r.returncode == 1 and "1 of 2 jobs did not complete (1 failed)" in r.stderr, r
    assert [row["status"] for row in rows(sweep)] == ["failed", "completed"]

    flags[0].unlink()
    r = run_fxp("resume", str(sweep), "--retry-failed", cwd=tmp_path)
    assert r.returncode == 0, r
    assert [row["status"] for row in rows(sweep)] == ["completed"] * 2
    job = sweep / "0"
    assert "flaky" in (job / "train.failed-1.log").read_text()
    assert "flaky" not in (job / "train.log").read_text()
    assert float(rows(sweep)[0]["best_accuracy"]) > 0.5  # trained anew in its folder (the majority label: 0.1)


# --- without training --------------------------------------------------------------------------------------------


def test_a_changed_grid_is_named():
    old = {"sweeper": "basic", "jobs": [["trainer.seed=1"], ["trainer.seed=2"]]}
    hashed = sweeps.identity_hash
    assert sweeps.changed(hashed(old), hashed(old)) == ""
    assert sweeps.changed(hashed(old), hashed({**old, "jobs": [["trainer.seed=1"], ["trainer.seed=3"]]})) == \
        "job 1 was trainer.seed=2, now trainer.seed=3"
    assert sweeps.changed(hashed(old), hashed({**old, "jobs": old["jobs"][:1]})) == "it had 2 jobs, now 1"
    assert sweeps.changed(hashed(old), hashed({"sweeper": "optuna"})) == "its sweeper was basic, now optuna"


def test_what_cannot_be_resumed_is_one_line(fxp, tmp_path):
    old = tmp_path / "old"  # a sweep of an older fxp: its record lists its jobs, not the command
    old.mkdir()
    (old / "sweep.json").write_text(json.dumps({"jobs": 2, "job_overrides": [["trainer.seed=1"], ["trainer.seed=2"]]}))
    assert_one_line_error(fxp("resume", str(old)), "does not record the command", f"fxp resume {old}/N")
    assert_one_line_error(fxp("resume", str(old), "--extend", "2"), "--extend", "is a sweep")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("{}")
    assert_one_line_error(fxp("resume", str(run), "--retry-failed"), "--retry-failed", "no sweep folder")


def test_an_interrupt_inside_an_import_lock_callback_is_sent_again_not_lost():
    """A KeyboardInterrupt raised while a weakref callback of the import system runs is printed by Python as
    "Exception ignored" and lost (a joblib sweep's Ctrl-C once left a traceback and a job running): the handler sends
    the signal again once the callback returned, and raises anywhere else."""
    import signal as signals
    import time
    from types import SimpleNamespace

    from fxp.sweeps import raise_when_safe

    def frame(filename):
        return SimpleNamespace(f_code=SimpleNamespace(co_filename=filename))

    got = []
    old = signals.signal(signals.SIGUSR1, lambda signum, f: got.append(signum))
    try:
        raise_when_safe(frame("<frozen importlib._bootstrap>"), signals.SIGUSR1, KeyboardInterrupt)
        deadline = time.time() + 5
        while not got and time.time() < deadline:
            time.sleep(0.01)
        assert got == [signals.SIGUSR1]
        with pytest.raises(KeyboardInterrupt):
            raise_when_safe(frame(__file__), signals.SIGUSR1, KeyboardInterrupt)
    finally:
        signals.signal(signals.SIGUSR1, old)


def test_a_ctrl_c_that_a_library_turned_into_another_error_is_still_a_ctrl_c(monkeypatch):
    """A KeyboardInterrupt inside OmegaConf's ListConfig.append leaves a None item, which its clean-up then trips on:
    an AttributeError, with the interrupt only as its context. A joblib job stopped by Ctrl-C while it built its
    model.net ended `failed`, "model.net cannot be built: AttributeError: 'NoneType' object has no attribute
    '_invalidate_flags_cache'"; it is an interrupt, and ends as one."""
    from omegaconf import OmegaConf, listconfig

    from fxp.errors import building

    real, items = listconfig.ListConfig._set_item_impl, []

    def set_item(self, key, value):
        items.append(key)
        if len(items) == 2:  # the signal comes as the second item is set
            raise KeyboardInterrupt
        return real(self, key, value)

    monkeypatch.setattr(listconfig.ListConfig, "_set_item_impl", set_item)
    with pytest.raises(KeyboardInterrupt), building("model.net"):
        OmegaConf.create([16, 32, 64])
