"""A kill loses nothing (issue 11 item 3, issue 17 items 1 and 4): `fxp train` on the default task (digits, 4 epochs)
killed with SIGKILL at seeded random moments, from before its run folder exists to its last summary.

After each kill: every JSON and CSV of the run parses, every checkpoint and model.pkl loads (written whole or not at
all), `fxp runs` lists the run as killed (or completed, when the kill came after the end), never running; then
`fxp resume` completes it with the metrics.csv of the uninterrupted run (times aside), or says in one line that there
is nothing to resume (no epoch had ended; or the run had completed).

The runs are children forked from this process, which has torch and fastai imported already: a run starts in a
blink, so the kill moments spread over the run itself instead of over interpreter start-up. They draw no plots (the
plots took 2.0 s of a 2.4 s run, 0.4 s without them); a kill's moment is drawn after an event of the run (its claim,
an epoch's checkpoint, its export), within the time the uninterrupted run took from there to the next one.
"""
import csv
import json
import os
import random
import signal
import time
from collections import Counter

import pytest
import torch
import yaml

from conftest import assert_one_line_error, forked, newest_run, run_fxp
from fxp.runs import TIMES

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not hasattr(os, "fork"), reason="forks runs from this process (POSIX only)")]

EPOCHS = 4
ARGS = (f"trainer.epochs={EPOCHS}", "trainer.plots=false")  # 0.4-0.9 s from the claim to the end (2 shared cores)
TRIALS, SEED = 12, 11


def appeared(cwd, pattern: str) -> float:
    "When a file of the run forked into `cwd` first shows (config.yaml: it claimed its folder; last.json: an epoch)."
    deadline = time.time() + 120
    while not list((cwd / "outputs").rglob(pattern)) and time.time() < deadline:
        time.sleep(0.005)
    return time.perf_counter()


def summarized(cwd) -> float:
    "When the run forked into `cwd` wrote its last summary (completed)."
    deadline = time.time() + 120
    while time.time() < deadline:
        if any(json.loads(f.read_text())["status"] == "completed" for f in (cwd / "outputs").rglob("summary.json")):
            break
        time.sleep(0.005)
    return time.perf_counter()


def checkpointed(cwd, epoch: int) -> None:
    "Until the run forked into `cwd` has saved its checkpoint of epoch `epoch` (its last.json says so)."
    deadline = time.time() + 120
    while time.time() < deadline:
        for f in (cwd / "outputs").rglob("checkpoints/last.json"):
            if json.loads(f.read_text())["epoch"] >= epoch:  # written whole (temp + rename)
                return
        time.sleep(0.005)


def curves(run) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in ("time", *TIMES)} for r in csv.DictReader(f)]


def check_files(run) -> None:
    "Every file fxp writes parses or loads whole; no temporary file looks like a finished one."
    for f in run.rglob("*.json"):
        assert isinstance(json.loads(f.read_text()), dict), f
    for f in run.rglob("*.yaml"):
        yaml.safe_load(f.read_text())
    for f in run.rglob("metrics.csv"):
        with open(f, newline="") as fh:
            rows = list(csv.reader(fh))
        assert rows and all(len(r) == len(rows[0]) for r in rows), f
        assert [int(r[1]) for r in rows[1:]] == list(range(1, len(rows))), f  # epochs in order, none twice
    for f in run.rglob("*.pth"):
        torch.load(f, map_location="cpu", weights_only=False)
    if (run / "model.pkl").is_file():
        from fastai.learner import load_learner

        load_learner(run / "model.pkl", cpu=True)


def test_killed_at_random_moments_loses_nothing_and_resumes_to_the_same_metrics(tmp_path):
    from fxp.runs import last_checkpoint, read_summary

    whole = tmp_path / "whole"  # one forked run to its end: how long it takes from its claim, and its metrics
    whole.mkdir()
    pid = forked(whole, "train", *ARGS)
    claimed = appeared(whole, "config.yaml")
    saved = appeared(whole, "checkpoints/last.json")
    trained = appeared(whole, "model.pkl")
    done = summarized(whole)
    _, status = os.waitpid(pid, 0)
    ended = time.perf_counter()
    assert os.waitstatus_to_exitcode(status) == 0, (whole / "console.txt").read_text()
    expected = curves(newest_run(whole))
    assert len(expected) == EPOCHS
    epoch_s = (trained - saved) / (EPOCHS - 1)

    rng, outcomes = random.Random(SEED), Counter()
    for i in range(TRIALS):
        cwd = tmp_path / f"trial{i}"
        cwd.mkdir()
        pid = forked(cwd, "train", *ARGS)
        moment = rng.random()
        if moment < 0.1:  # now and then before or while the folder is claimed
            time.sleep(rng.uniform(0, 0.3))
        elif moment < 0.35:  # from the claim to the first checkpoint: building, the first epoch
            appeared(cwd, "config.yaml")
            time.sleep(rng.uniform(0, saved - claimed))
        elif moment < 0.8:  # mostly while it trains: a moment into an epoch after the first (or its checkpoint)
            at = rng.uniform(1, EPOCHS)  # from the checkpoint it follows: a run faster than `whole` is still training
            checkpointed(cwd, int(at))
            time.sleep((at - int(at)) * epoch_s)
        else:  # after the export, before the last summary: the evaluation, the diagnosis, trackers, that summary
            appeared(cwd, "model.pkl")
            time.sleep(rng.uniform(0, done - trained))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        runs = [p.parent for p in (cwd / "outputs").rglob("config.yaml")]
        if not runs:
            outcomes["killed before its run folder"] += 1
            continue
        run = runs[0]
        check_files(run)
        listed = run_fxp("runs", str(cwd / "outputs"), "--json", cwd=cwd)
        assert listed.returncode == 0, listed
        status = json.loads(listed.stdout)[0]["status"]
        assert status in ("killed", "completed", "incomplete"), status  # never `running` for a dead process
        resumed = run_fxp("resume", str(run), cwd=cwd)
        if status == "completed":
            assert_one_line_error(resumed, "completed")
            outcomes["completed before the kill"] += 1
        elif last_checkpoint(run) is None:
            assert_one_line_error(resumed, "no checkpoint")
            outcomes["killed before its first checkpoint"] += 1
        else:
            assert resumed.returncode == 0, resumed
            assert read_summary(run)["status"] == "completed" and curves(run) == expected, i
            check_files(run)
            outcomes["resumed to the same metrics"] += 1
    print(f"\n{TRIALS} kills of {ended - claimed:.1f} s runs: {dict(outcomes)}")
    assert outcomes["resumed to the same metrics"] >= TRIALS // 3


# --- the status a run ends with is always written (issue 17 item 4) -------------------------------------------


def wait_for(cwd, pattern: str, p) -> None:
    deadline = time.time() + 120
    while time.time() < deadline and not list((cwd / "outputs").rglob(pattern)):
        assert p.poll() is None, p.communicate()
        time.sleep(0.01)


def test_ctrl_c_again_and_again_still_ends_the_run_interrupted(tmp_path):
    from conftest import metrics_rows, start_fxp, summary

    p = start_fxp("train", "trainer.epochs=200", "trainer.plots=false", cwd=tmp_path)  # plots: 1 CPU-s of 7
    wait_for(tmp_path, "checkpoints/last.json", p)
    for _ in range(4):
        p.send_signal(signal.SIGINT)
        time.sleep(0.03)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130 and "Traceback" not in err, err
    run = newest_run(tmp_path)
    s = summary(run)
    assert s["status"] == "interrupted" and s["epochs"] == len(metrics_rows(run)) >= 1, s
    assert "process" not in s and not list(run.rglob("*.tmp"))


def test_ctrl_c_before_the_first_epoch_ended_says_nothing_is_kept(tmp_path):
    "A forked run (the Ctrl-C path is fxp's; the console script's end is the test above's)."
    from conftest import summary

    pid = forked(tmp_path, "train", "trainer.bs=2", "trainer.epochs=1")  # an epoch of ~700 batches
    appeared(tmp_path, "summary.json")
    os.kill(pid, signal.SIGINT)
    _, status = os.waitpid(pid, 0)
    err = (tmp_path / "console.txt").read_text()
    assert os.waitstatus_to_exitcode(status) == 130, err
    assert "no checkpoint yet" in err and "is kept" not in err, err
    run = newest_run(tmp_path)
    assert summary(run)["status"] == "interrupted" and not (run / "checkpoints" / "last.pth").exists()


def test_a_full_disk_while_checkpointing_fails_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    import errno

    from conftest import metrics_rows, summary

    real, saves = torch.save, []

    def save(obj, f, *args, **kwargs):
        if str(f).endswith("last.pth.tmp"):
            saves.append(f)
            if len(saves) == 2:  # the second epoch's checkpoint: the disk fills up half-way
                with open(f, "wb") as fh:
                    fh.write(b"half a checkpoint")
                raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    r = run_fxp("train", "trainer.epochs=3", "trainer.plots=false", cwd=tmp_path)
    assert r.returncode == 1 and "No space left on device" in r.err_lines[-1], r
    run = newest_run(tmp_path)
    assert summary(run)["status"] == "failed" and not list(run.rglob("*.tmp"))
    assert torch.load(run / "checkpoints" / "last.pth", weights_only=False)["at"]["epochs"] == 1
    monkeypatch.setattr(torch, "save", real)
    r = run_fxp("resume", str(run), cwd=tmp_path)  # the epoch whose checkpoint failed is trained again
    assert r.returncode == 0, r
    assert summary(run)["status"] == "completed" and [m["epoch"] for m in metrics_rows(run)] == ["1", "2", "3"]


def test_a_full_disk_at_the_end_still_writes_the_final_status(tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    from conftest import summary
    from fxp import writer

    real = writer.write_atomic

    def write(path, data, fsync=False):
        if Path(path).name == "summary.json" and '"running"' not in data:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data, fsync)

    monkeypatch.setattr(writer, "write_atomic", write)
    r = run_fxp("train", "trainer.epochs=1", "trainer.plots=false", cwd=tmp_path)
    assert r.returncode == 0, r
    run = newest_run(tmp_path)
    assert summary(run)["status"] == "completed" and not list(run.rglob("*.tmp"))  # over the old one, in place
