"""The run folder a `fxp train` leaves: its files, summary.json, metrics.csv, plots; never overwritten; seeded.

Every test here trains (digits, one or two epochs), so all are marked slow.
"""
import math
import os
import re
import subprocess

import pytest
import yaml

from conftest import (
    assert_one_line_error,
    forked,
    metrics_rows,
    mnist_subset,
    newest_run,
    run_dirs,
    run_fxp,
    start_fxp,
    summary,
)
from fxp.runs import TIMES

pytestmark = pytest.mark.slow

METRICS_COLUMNS = ["stage", "epoch", "train_loss", "valid_loss", "accuracy", "error_rate", "lr", "time", "data_s",
                   "step_s"]
SUMMARY_KEYS = {"status", "final_metrics", "best_metrics", "epochs", "wall_time_s", "items_per_s", "seed",
                "device", "versions", "git_commit", "task", "overrides"}


def files_of(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# --- what one completed run leaves --------------------------------------------------------------------------


def test_run_folder_is_outputs_task_timestamp_hex(digits_run):
    assert digits_run.parent.name == "digits" and digits_run.parent.parent.name == "outputs"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_[0-9a-f]{6}", digits_run.name), digits_run.name


def test_run_folder_files(digits_run):
    for name in ("config.yaml", "overrides.yaml", "metrics.csv", "summary.json", "train.log", "model.pkl",
                 "plots/loss_curves.png", "plots/confusion_matrix.png", "plots/top_losses.png"):
        f = digits_run / name
        assert f.is_file() and f.stat().st_size > 0, f"{name} missing or empty"
    for png in (digits_run / "plots").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    for ckpt in ("last.pth", "best.pth"):  # save_best is on by default
        assert (digits_run / "checkpoints" / ckpt).is_file(), ckpt


def test_plots_false_draws_nothing_and_trains_the_same(digits_run, seeded_run):
    "trainer.plots=false: no PNG, the same metrics as the same run with its plots, its diagnosis still in the summary."
    run, _ = seeded_run
    assert not list(run.rglob("*.png")) and list(digits_run.rglob("*.png"))
    curves = [[{k: v for k, v in row.items() if k not in ("time", *TIMES)} for row in metrics_rows(folder)]
              for folder in (digits_run, run)]
    assert curves[0] == curves[1] and len(curves[0]) == 2
    assert summary(run)["diagnosis"]["verdict"] == summary(digits_run)["diagnosis"]["verdict"]


def test_config_yaml_is_the_composed_resolved_config(digits_run):
    cfg = yaml.safe_load((digits_run / "config.yaml").read_text())
    assert set(cfg) >= {"task", "data", "model", "trainer"}
    assert cfg["trainer"]["epochs"] == 2 and cfg["task"]["source"] == "digits"
    assert "${" not in (digits_run / "config.yaml").read_text()


def test_overrides_yaml_is_the_command_line(digits_run):
    assert yaml.safe_load((digits_run / "overrides.yaml").read_text()) == ["trainer.epochs=2"]


def test_metrics_csv_has_a_row_per_epoch(digits_run):
    lines = (digits_run / "metrics.csv").read_text().splitlines()
    assert lines[0].split(",") == METRICS_COLUMNS
    rows = metrics_rows(digits_run)
    assert [(int(r["stage"]), int(r["epoch"])) for r in rows] == [(1, 1), (1, 2)]
    for r in rows:
        for col in METRICS_COLUMNS[2:]:
            assert math.isfinite(float(r[col])), (col, r[col])
        assert 0 <= float(r["accuracy"]) <= 1
        assert math.isclose(float(r["accuracy"]) + float(r["error_rate"]), 1, abs_tol=1e-5)
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])  # it learns


def test_summary_json(digits_run):
    s = summary(digits_run)
    assert SUMMARY_KEYS <= set(s), SUMMARY_KEYS - set(s)
    assert s["status"] == "completed" and s["task"] == "digits" and s["epochs"] == 2
    assert s["overrides"] == ["trainer.epochs=2"] and s["seed"] == 42 and s["device"] == "cpu"
    last = metrics_rows(digits_run)[-1]
    assert set(s["final_metrics"]) == {"train_loss", "valid_loss", "accuracy", "error_rate"}
    for k, v in s["final_metrics"].items():
        assert math.isclose(v, float(last[k]), rel_tol=1e-6)
    rows = metrics_rows(digits_run)
    assert math.isclose(s["best_metrics"]["accuracy"], max(float(r["accuracy"]) for r in rows), rel_tol=1e-6)
    assert math.isclose(s["best_metrics"]["valid_loss"], min(float(r["valid_loss"]) for r in rows), rel_tol=1e-6)
    assert 0 < s["wall_time_s"] < 600 and s["items_per_s"] > 0
    for pkg in ("python", "fxp", "fastai", "torch", "hydra-core"):
        assert s["versions"][pkg], pkg
    assert s["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", s["git_commit"])


def test_train_log_has_the_epoch_lines(digits_run):
    log = (digits_run / "train.log").read_text()
    assert "epoch 1" in log and "epoch 2" in log and "Traceback" not in log


def test_items_per_s_is_training_throughput(digits_run):
    "Items per second of training alone: at least items per (train + valid) second of each epoch."
    s, rows = summary(digits_run), metrics_rows(digits_run)
    items = s["items_train"] // 64 * 64 * len(rows)  # bs 64, drop_last
    assert s["items_per_s"] >= 0.95 * items / sum(float(r["time"]) for r in rows)


# --- runs that are started for these tests ------------------------------------------------------------------


@pytest.fixture(scope="module")
def seeded_run(tmp_path_factory):
    """The same command as digits_run without its plots (trainer.plots=false), from a fresh git repository (for
    git_commit): the same seed, and plots or none, train the same."""
    cwd = tmp_path_factory.mktemp("seeded")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=cwd, check=True)
    (cwd / "experiment.txt").write_text("x\n")
    subprocess.run([*git, "add", "experiment.txt"], cwd=cwd, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=cwd, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True).stdout.strip()
    r = run_fxp("train", "trainer.epochs=2", "trainer.plots=false", cwd=cwd)
    assert r.returncode == 0, r
    return newest_run(cwd), head


def numbers(run):
    "metrics.csv without its time columns."
    return [{k: v for k, v in r.items() if k not in ("time", *TIMES)} for r in metrics_rows(run)]


def test_same_seed_gives_identical_metrics(digits_run, seeded_run):
    run, _ = seeded_run
    assert numbers(run) == numbers(digits_run)
    assert summary(run)["final_metrics"] == summary(digits_run)["final_metrics"]


def test_git_commit_is_the_working_directorys_head(seeded_run):
    run, head = seeded_run
    assert summary(run)["git_commit"] == head


def test_multirun_writes_a_folder_per_job(digits_sweep):
    jobs = digits_sweep
    assert len(jobs) == 2 and jobs[0].parent == jobs[1].parent
    assert jobs[0].parent.parent.parent.name == "outputs"
    assert sorted(summary(j)["seed"] for j in jobs) == [1, 2]
    for j in jobs:
        assert summary(j)["status"] == "completed"
        assert (j / "model.pkl").is_file() and len(metrics_rows(j)) == 1
    overrides = sorted(yaml.safe_load((j / "overrides.yaml").read_text()) for j in jobs)
    assert overrides == [["trainer.seed=1", "trainer.epochs=1"], ["trainer.seed=2", "trainer.epochs=1"]]


def test_different_seeds_give_different_losses(digits_sweep):
    a, b = digits_sweep
    assert numbers(a) != numbers(b)


def test_two_runs_started_together_get_their_own_folders(tmp_path):
    "Two processes claim their folders at once (forked from this one, torch imported: they start the same instant)."
    pids = {s: forked(tmp_path, "train", "trainer.epochs=1", "trainer.plots=false", f"trainer.seed={s}",
                      console=f"console{s}.txt")
            for s in (1, 2)}
    for s, pid in pids.items():
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, (tmp_path / f"console{s}.txt").read_text()
    runs = run_dirs(tmp_path)
    assert len(runs) == 2 and runs[0] != runs[1]
    assert sorted(summary(r)["seed"] for r in runs) == [1, 2]


def test_an_existing_run_folder_is_never_overwritten(tmp_path):
    pinned = tmp_path / "pinned"
    r = run_fxp("train", "trainer.epochs=1", "trainer.plots=false", f"hydra.run.dir={pinned}", cwd=tmp_path)
    assert r.returncode == 0, r
    before = files_of(pinned)
    again = run_fxp("train", "trainer.epochs=2", "trainer.seed=5", f"hydra.run.dir={pinned}", cwd=tmp_path)
    assert_one_line_error(again, str(pinned), "hydra.run.dir")
    assert files_of(pinned) == before
    assert summary(pinned)["status"] == "completed" and summary(pinned)["seed"] == 42


@pytest.fixture(scope="module")
def lr_found_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("lr_found")
    r = run_fxp("train", "trainer.epochs=1", "trainer.lr=find", "trainer.plots=false", cwd=cwd)
    assert r.returncode == 0, r
    return newest_run(cwd)


def test_lr_find_as_lr_records_the_suggestion(lr_found_run):
    s = summary(lr_found_run)
    assert s["status"] == "completed" and len(s["lr_found"]) == 1 and 1e-7 < s["lr_found"][0] < 10


def test_items_per_s_with_lr_find(lr_found_run):
    s, rows = summary(lr_found_run), metrics_rows(lr_found_run)
    items = s["items_train"] // 64 * 64 * len(rows)
    assert s["items_per_s"] >= 0.95 * items / sum(float(r["time"]) for r in rows)



def test_stages_run_in_order_and_number_epochs_across_stages(tmp_path):
    r = run_fxp("train", "trainer.stages=[{policy:fit_one_cycle,epochs:2},{policy:fit,epochs:1,lr:1e-4}]",
                "trainer.plots=false", cwd=tmp_path)
    assert r.returncode == 0, r
    run = newest_run(tmp_path)
    rows = metrics_rows(run)
    assert [(int(r["stage"]), int(r["epoch"])) for r in rows] == [(1, 1), (1, 2), (2, 3)]
    assert math.isclose(float(rows[2]["lr"]), 1e-4, rel_tol=1e-6)  # `fit` keeps the stage's lr constant
    assert summary(run)["epochs"] == 3


def test_sigterm_ends_the_run_as_interrupted_keeping_the_last_checkpoint(tmp_path):
    import signal
    import time

    # a real process: the signal is what is tested; no plots (1 CPU-s of 7, the batch's drawn before the first epoch)
    p = start_fxp("train", "trainer.epochs=200", "trainer.plots=false", cwd=tmp_path)
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None and not list((tmp_path / "outputs").rglob("last.pth")):
        time.sleep(0.01)  # until an epoch is saved
    assert p.poll() is None, p.communicate()
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    run = newest_run(tmp_path)
    s = summary(run)
    assert s["status"] == "interrupted" and 1 <= s["epochs"] < 200
    assert (run / "checkpoints" / "last.pth").is_file()
    assert "Traceback" in (run / "train.log").read_text() or "KeyboardInterrupt" in (run / "train.log").read_text()


def test_early_stopping_stops_when_the_monitor_stops_improving(tmp_path):
    "min_delta larger than any possible gain: the first epoch sets the best, the second does not beat it."
    r = run_fxp("train", "trainer.epochs=20", "trainer.early_stopping.patience=1",
                "trainer.early_stopping.min_delta=10", "trainer.plots=false", cwd=tmp_path)
    assert r.returncode == 0, r
    run = newest_run(tmp_path)
    assert len(metrics_rows(run)) == 2 and summary(run)["status"] == "completed"


def test_zero_epochs_completes(tmp_path):
    r = run_fxp("train", "trainer.epochs=0", cwd=tmp_path)
    assert r.returncode == 0, r
    s = summary(newest_run(tmp_path))
    assert s["status"] == "completed" and s["epochs"] == 0


def test_config_yaml_records_data_path_absolute(tmp_path):
    mnist_subset(tmp_path / "tiny", n=4)
    r = run_fxp("train", "task=mnist", "data.path=tiny", "trainer.bs=4", "trainer.epochs=1", "trainer.plots=false",
                cwd=tmp_path)
    assert r.returncode == 0, r
    cfg = yaml.safe_load((newest_run(tmp_path) / "config.yaml").read_text())
    assert cfg["data"]["path"] == str(tmp_path / "tiny")


@pytest.mark.gpu
def test_gpu_bf16_channels_last(tmp_path):
    r = run_fxp("train", "trainer.device=cuda", "trainer.precision=bf16", "trainer.channels_last=true", cwd=tmp_path)
    assert r.returncode == 0, r
    s = summary(newest_run(tmp_path))
    assert s["status"] == "completed" and s["device"].startswith("cuda")
    assert s["final_metrics"]["accuracy"] >= 0.9
