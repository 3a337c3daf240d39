"""fxp's own Optuna search (hydra_plugins/fxp_optuna_sweeper, fxp.trials): the search space read from Hydra's override
syntax, bad sampler/pruner/direction names in one line, the study kept in the sweep folder with every trial's value
per epoch, pruned trials with their own status, and a search killed mid-trial that `fxp resume SWEEP_DIR` finishes."""
import csv
import json
import os
import signal
import time
from contextlib import contextmanager

import pytest

from conftest import assert_one_line_error, forked, metrics_rows, run_fxp


def sweep_rows(sweep_dir):
    with open(sweep_dir / "sweep.csv", newline="") as f:
        return list(csv.DictReader(f))


def load(sweep_dir):
    import optuna

    from fxp.trials import storage

    url = f"sqlite:///{sweep_dir / 'study.db'}"
    (name,) = optuna.get_all_study_names(storage(url))
    return optuna.load_study(study_name=name, storage=storage(url))


def test_the_search_space_is_hydras_sweep_syntax():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from fxp.trials import grid, search

    space, fixed = search({"trainer.lr": "tag(log, interval(1e-4, 1e-1))", "trainer.epochs": "range(1, 5)"},
                          ["trainer.bs=choice(32,64)", "trainer.wd=interval(0.0, 0.1)", "trainer.seed=3",
                           "trainer.epochs=range(2, 8, 2)"])
    assert space["trainer.lr"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert space["trainer.bs"] == CategoricalDistribution(["32", "64"])
    assert space["trainer.wd"] == FloatDistribution(0.0, 0.1)
    assert space["trainer.epochs"] == IntDistribution(2, 6, step=2)  # the command's wins; stop excluded, as Hydra's
    assert fixed == ["trainer.seed=3"]
    with pytest.raises(Exception, match="sampler=grid.*trainer.lr is an interval"):
        grid(space)
    assert grid({k: space[k] for k in ("trainer.bs", "trainer.epochs")}) == {"trainer.bs": ["32", "64"],
                                                                          "trainer.epochs": [2, 4, 6]}


@pytest.mark.parametrize("override, mention", [
    ("hydra.sweeper.pruner=medain", "medain"),
    ("hydra.sweeper.sampler=tpee", "tpee"),
    ("hydra.sweeper.direction=[maximize,minimize]", "multi-objective"),
    ("hydra.sweeper.sampler=grid", "trainer.lr is an interval"),
])
def test_a_search_it_cannot_run_is_one_line(fxp, tmp_path, override, mention):
    sweep = tmp_path / "sweep"
    r = fxp("train", "-m", "hydra/sweeper=optuna_search", override, f"hydra.sweep.dir={sweep}")
    assert_one_line_error(r, mention)
    assert not (sweep / "0").exists()  # refused before any trial ran


@pytest.mark.slow
def test_a_pruned_search_keeps_its_study_in_the_sweep_folder(fxp, tmp_path):
    """Median pruning after one completed trial: the seeded search's poor trials are pruned after their first epoch,
    with status `pruned` (not a failure: exit 0); study.db lists every trial with its value at each epoch. Trials 0
    and 1 complete (accuracy 0.82 and 0.96), trial 2 is pruned (0.19 after its first epoch)."""
    sweep = tmp_path / "sweep"
    r = fxp("train", "-m", "hydra/sweeper=optuna_search", "hydra.sweeper.n_trials=3", "trainer.epochs=choice(2)",
            "hydra.sweeper.pruner=median", "hydra.sweeper.startup_trials=1", "trainer.plots=false",
            f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stderr
    assert f"optuna.load_study(study_name='digits-sweep', storage='sqlite:///{sweep}/study.db')" in r.stdout
    rows, study = sweep_rows(sweep), load(sweep)
    states = {"COMPLETE": "completed", "PRUNED": "pruned"}
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert [row["status"] for row in rows] == [states[t.state.name] for t in study.trials]
    assert {"completed", "pruned"} <= {row["status"] for row in rows}, rows
    for t, row in zip(study.trials, rows):
        assert sorted(t.intermediate_values) == list(range(1, int(row["epochs"]) + 1))
        assert t.intermediate_values[int(row["epochs"])] == pytest.approx(float(row["final_accuracy"]))
        assert json.loads((sweep / row["job"] / "summary.json").read_text())["trial"]["trial"] == t.number
    pruned = [row for row in rows if row["status"] == "pruned"]
    assert all(row["epochs"] == "1" for row in pruned)  # stopped after its first epoch, its checkpoint kept
    assert all((sweep / row["job"] / "checkpoints" / "last.pth").is_file() for row in pruned)
    assert f"{len(pruned)} pruned" in r.stdout and "did not complete" not in r.stderr
    assert study.best_value == pytest.approx(max(float(row["best_accuracy"]) for row in rows))
    report = fxp("report", str(sweep))
    assert report.returncode == 0, report.stderr
    html = (sweep / "report.html").read_text()
    for title in ("Optimization history", "Parameter importances", "Value of each trial per epoch"):
        assert f"<h3>{title}</h3>" in html
    runs = fxp("runs", str(sweep), "--status", "pruned", "--json")
    assert {j["run"] for j in json.loads(runs.stdout)} >= {row["job"] for row in pruned}


@contextmanager
def killed_after(k: int):
    "SIGKILL to the process that writes the k-th epoch checkpoint, as soon as it is written (a fork started inside)."
    from fxp import callbacks

    save, seen = callbacks.LastCheckpoint.after_epoch, []

    def after_epoch(self):
        save(self)
        seen.append(1)
        if len(seen) == k:
            os.kill(os.getpid(), signal.SIGKILL)

    callbacks.LastCheckpoint.after_epoch = after_epoch
    try:
        yield
    finally:
        callbacks.LastCheckpoint.after_epoch = save


def ended(pid: int, timeout: float = 240) -> int:
    "The wait status of the child `pid` once it ends; killed if it has not within `timeout` seconds (a hang)."
    deadline = time.time() + timeout
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"the search did not end within {timeout} s")


@pytest.mark.slow
def test_a_search_killed_in_a_trial_goes_on_from_its_checkpoint(tmp_path):
    """SIGKILL as trial 1's first checkpoint is written, before its epoch is reported to the study (the kill's worst
    moment); `fxp resume SWEEP_DIR` resumes trial 1 from its checkpoint, reporting the epoch the kill kept from the
    study, then asks trial 2: three trials numbered 0..2, all completed, none asked twice, each with its value at every
    epoch. The search runs in a fork of this process (a process to kill; its interpreter's start is not tested)."""
    sweep = tmp_path / "sweep"
    with killed_after(3):  # trial 0: epochs 1 and 2; trial 1: its first
        pid = forked(tmp_path, "train", "-m", "hydra/sweeper=optuna_search", "hydra.sweeper.n_trials=3",
                     "trainer.epochs=choice(2)", "trainer.plots=false", f"hydra.sweep.dir={sweep}")
    status = ended(pid)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (tmp_path / "console.txt").read_text()
    assert [t.state.name for t in load(sweep).trials] == ["COMPLETE", "RUNNING"]
    r = run_fxp("resume", sweep, cwd=tmp_path)
    assert r.returncode == 0, r
    study = load(sweep)
    assert [(t.number, t.state.name) for t in study.trials] == [(0, "COMPLETE"), (1, "COMPLETE"), (2, "COMPLETE")]
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 3  # the resumed seed asked nothing again
    assert "resumed at stage 1 epoch 1\n" in (sweep / "1" / "train.log").read_text()
    rows = sweep_rows(sweep)
    assert [(row["job"], row["status"], row["epochs"]) for row in rows] == [("0", "completed", "2"),
                                                                           ("1", "completed", "2"),
                                                                           ("2", "completed", "2")]
    for t in study.trials:
        curve = {int(row["epoch"]): float(row["accuracy"]) for row in metrics_rows(sweep / str(t.number))}
        assert t.intermediate_values == pytest.approx(curve), t.number


def test_a_resume_that_changes_the_search_is_refused_naming_what(tmp_path, capsys):
    "sweep.json records the search's identity; a resume with another space (or sampler, or seed) is one line."
    from omegaconf import open_dict

    from fxp.precheck import compose
    from fxp.sweeps import check_identity, record

    base = ["hydra/sweeper=optuna_search", "hydra.sweeper.n_trials=5"]
    record(tmp_path, compose(base, hydra=True))
    check_identity(tmp_path, compose([*base, "hydra.sweeper.n_trials=8", "data.path=/elsewhere"], hydra=True))
    wider = compose(base, hydra=True)
    with open_dict(wider):
        wider.hydra.sweeper.params["trainer.wd"] = "interval(0.0, 0.2)"
    for changed, named in [(wider, "space"), (compose([*base, "hydra.sweeper.sampler=random"], hydra=True), "sampler"),
                           (compose([*base, "hydra.sweeper.seed=7"], hydra=True), "seed")]:
        with pytest.raises(SystemExit) as e:
            check_identity(tmp_path, changed)
        line = capsys.readouterr().err.strip()
        assert e.value.code == 2 and "\n" not in line and f"its {named} was" in line, line
