"""The training recipe across stages: each stage starts where the last one ended, the best epoch is tracked over
the whole run, and model.pkl holds the epoch the summary reports."""
from __future__ import annotations

import json

import pytest
import torch
from fastai.learner import Learner, load_learner

from conftest import metrics_rows, newest_run, run_fxp

# Stage 1 learns; stage 2's constant, too-high rate makes the model worse, so the run's best is in stage 1.
TWO_STAGES = "trainer.stages=[{epochs:3},{policy:fit,epochs:2,lr:0.05}]"


@pytest.fixture(scope="module")
def two_stage_run(tmp_path_factory):
    "A two-stage digits run, with every Learner.load call recorded."
    cwd, loads = tmp_path_factory.mktemp("stages"), []
    load = Learner.load
    Learner.load = lambda self, name, *a, **k: (loads.append(name), load(self, name, *a, **k))[1]
    try:
        r = run_fxp("train", TWO_STAGES, cwd=cwd)
    finally:
        Learner.load = load
    assert r.returncode == 0, r
    return newest_run(cwd), loads


@pytest.mark.slow
def test_best_epoch_of_the_whole_run_is_the_model(two_stage_run):
    run, _ = two_stage_run
    rows = metrics_rows(run)
    best = max(rows, key=lambda r: float(r["accuracy"]))
    assert best["stage"] == "1" and float(rows[-1]["accuracy"]) < float(best["accuracy"])  # the recipe's premise
    summary = json.loads((run / "summary.json").read_text())
    assert summary["model_epoch"] == int(best["epoch"])
    assert summary["best_metrics"]["accuracy"] == pytest.approx(float(best["accuracy"]))
    exported = load_learner(run / "model.pkl", cpu=True).model.state_dict()
    saved = torch.load(run / "checkpoints" / "best.pth", map_location="cpu", weights_only=False)
    assert exported.keys() == saved.keys()
    assert all(torch.equal(exported[k], saved[k]) for k in saved)


@pytest.mark.slow
def test_stage_two_starts_where_stage_one_ended(two_stage_run):
    "The best checkpoint is loaded once, after the last stage: never between stages."
    _, loads = two_stage_run
    assert loads == ["best"]
