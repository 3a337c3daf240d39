"""A sweep's folder and exit status (issue 17 items 3 and 6): a sweep claims a new or empty folder (a rerun into an
existing sweep folder, or two sweeps at once into one, is refused in one line, the first sweep's files untouched);
a sweep whose jobs did not all complete runs every job, then exits 1 saying how many did not."""
import csv
import os

import pytest

from conftest import assert_one_line_error, forked
from fxp import sweeps

QUICK = ("trainer.epochs=1", "trainer.plots=false")  # the jobs' files and statuses are tested, not their plots


def rows(sweep_dir):
    with open(sweep_dir / "sweep.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # trains (a sweep or a run)
def test_a_sweep_with_a_failed_job_runs_the_rest_and_exits_1(fxp, tmp_path):
    sweep = tmp_path / "sweep"
    r = fxp("train", "-m", *QUICK, "trainer.bs=100000,16", f"hydra.sweep.dir={sweep}")
    assert r.returncode == 1, r
    assert [row["status"] for row in rows(sweep)] == ["failed", "completed"]  # the sweep went on after job 0
    assert "sweep of 2 jobs: 1 failed, 1 completed" in r.stdout
    last = r.err_lines[-1]
    assert last.startswith("fxp: error: 1 of 2 jobs did not complete (1 failed)") and f"fxp runs {sweep}" in last


@pytest.mark.slow  # trains (a sweep or a run)
def test_a_sweep_of_completed_jobs_exits_0_and_a_rerun_into_its_folder_is_refused_and_keeps_it(fxp, tmp_path):
    """An empty folder can be a sweep's folder; a sweep whose jobs completed exits 0; a second sweep into that folder
    is refused, the first one's files untouched (three tests once, each with a sweep of its own: merged here)."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    r = fxp("train", "-m", *QUICK, "trainer.seed=1,2", f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r
    assert [row["status"] for row in rows(sweep)] == ["completed", "completed"]
    before = {p.relative_to(sweep): p.stat().st_mtime_ns for p in sweep.rglob("*")}
    r = fxp("train", "-m", *QUICK, "trainer.seed=3,4", f"hydra.sweep.dir={sweep}")
    assert_one_line_error(r, str(sweep), "already holds", "hydra.sweep.dir", "fxp resume")
    assert {p.relative_to(sweep): p.stat().st_mtime_ns for p in sweep.rglob("*")} == before
    assert "sweep of" not in r.stdout  # no summary of the old sweep's results


def test_the_claim_is_exclusive(tmp_path, capsys):
    sweeps.claim(tmp_path / "s")
    with pytest.raises(SystemExit) as e:
        sweeps.claim(tmp_path / "s")  # the folder holds nothing but the first sweep's claim
    assert e.value.code == 2 and "another sweep's claim" in capsys.readouterr().err


@pytest.mark.slow
def test_two_sweeps_started_at_once_into_one_folder(tmp_path):
    """Two processes (forked from this one, torch imported: they start the same instant): one sweep gets the folder,
    the other is refused; no job of either vanishes."""
    sweep = tmp_path / "sweep"
    pids = [forked(tmp_path, "train", "-m", *QUICK, f"trainer.seed={a},{b}", f"hydra.sweep.dir={sweep}",
                   console=f"console{a}.txt") for a, b in ((1, 2), (3, 4))]
    results = [(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), (tmp_path / f"console{a}.txt").read_text())
               for pid, a in zip(pids, (1, 3))]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    winner = next(out for code, out in results if code == 0)
    refused = next(out for code, out in results if code == 2)
    assert "already holds" in refused and "Traceback" not in refused
    assert [row["status"] for row in rows(sweep)] == ["completed", "completed"]
    assert "sweep of 2 jobs: 2 completed" in winner
