"""Sweeps end to end on the default digits task: a job per combination, sweep.csv kept per job, the best job,
failed jobs recorded while the sweep goes on, and the shipped launcher and sweeper configs (joblib, submitit_local,
Optuna). One epoch per job; the basic launcher runs its jobs in one process (here the test's: in-process); the
submitit launcher starts a process for each job (the sweep's own process is this one). The joblib launcher's sweep
(its workers, each job's GPU of the pool) is tests/test_sweep_resume.py's, which stops it with Ctrl-C and resumes it.
"""
import csv
import json
import math
import os

import pytest

from conftest import assert_one_line_error

pytestmark = pytest.mark.slow


def sweep_rows(sweep_dir):
    with open(sweep_dir / "sweep.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_a_grid_sweep_writes_a_row_per_job_and_points_at_the_best(fxp, tmp_path):
    sweep = tmp_path / "sweep"
    r = fxp("train", "-m", "trainer.stages.0.lr=1e-3,1e-2", "trainer.bs=16,100000", "trainer.epochs=1",
            "trainer.plots=false", f"hydra.sweep.dir={sweep}")
    assert r.returncode == 1 and "2 of 4 jobs did not complete (2 failed)" in r.stderr, r.stderr  # it went on
    rows = sweep_rows(sweep)
    assert [row["job"] for row in rows] == ["0", "1", "2", "3"]
    assert [row["status"] for row in rows] == ["completed", "failed", "completed", "failed"]  # bs > the data
    assert "trainer.stages.0.lr=0.01 trainer.bs=16" in rows[2]["overrides"]
    for row in rows:
        assert json.loads((sweep / row["job"] / "summary.json").read_text())["status"] == row["status"]
    completed = [row for row in rows if row["status"] == "completed"]
    best = json.loads((sweep / "best.json").read_text())
    top = max(completed, key=lambda row: float(row["best_accuracy"]))
    assert (best["job"], best["metric"], best["mode"]) == (top["job"], "accuracy", "max")
    assert best["value"] == pytest.approx(float(top["best_accuracy"]))
    assert f"sweep of 4 jobs: 2 completed, 2 failed; best job {top['job']}" in r.stdout


def test_submitit_local_launcher(fxp, tmp_path):
    """submitit starts a process for the job (its id the process's, its output and result in .submitit/ID/), which
    trains in it; the sweep's process is this one. One job: the process a job costs (imports: 6 CPU-s) is what this
    takes; jobs of one sweep in several processes at once are the joblib test's."""
    sweep = tmp_path / "sweep"
    r = fxp("train", "-m", "hydra/launcher=submitit_local", "trainer.seed=1", "trainer.epochs=1", "trainer.plots=false",
            f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stderr
    assert [row["status"] for row in sweep_rows(sweep)] == ["completed"]
    assert (sweep / "best.json").is_file()
    [result] = (sweep / ".submitit").glob("*/*_0_result.pkl")
    assert result.parent.name.isdigit() and int(result.parent.name) != os.getpid()
    assert f"run folder: {sweep / '0'}" in (result.parent / f"{result.parent.name}_0_log.out").read_text()


def test_optuna_search_maximises_the_monitored_metric(fxp, tmp_path):
    sweep = tmp_path / "sweep"
    r = fxp("train", "-m", "hydra/sweeper=optuna_search", "hydra.sweeper.n_trials=3",
            "trainer.epochs=choice(1)", "trainer.plots=false", f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stderr
    rows = sweep_rows(sweep)
    assert len(rows) == 3 and {row["status"] for row in rows} == {"completed"}
    lrs = {float(row["overrides"].split("trainer.lr=")[1].split()[0]) for row in rows}
    assert len(lrs) == 3 and all(1e-4 <= lr <= 1e-1 for lr in lrs)  # sampled from the shipped search space
    results = (sweep / "optimization_results.yaml").read_text()
    best_value = float(results.split("best_value:")[1].split()[0])
    assert best_value == pytest.approx(max(float(row["best_accuracy"]) for row in rows))  # direction: maximize
    assert not math.isnan(best_value)


@pytest.mark.parametrize("override, group", [("hydra/launcher=jobli", "hydra/launcher"),
                                             ("hydra/sweeper=optun", "hydra/sweeper")])
def test_unknown_launcher_or_sweeper_is_one_line(fxp, override, group):
    r = fxp("train", "-m", override, "trainer.epochs=1")
    line = assert_one_line_error(r, group)
    assert ("joblib" in line) if "launcher" in group else ("optuna_search" in line)
