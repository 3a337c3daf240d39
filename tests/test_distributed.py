"""`trainer.devices=2` on CPU (gloo): two processes train one run through torchrun's launcher. One run, two launches:
rank 1 fails in epoch 2 (the run ends failed, one line, no hang), then `fxp resume` finishes it over two processes."""
import csv
import json
import time

import pytest

from conftest import REPO, run_fxp, subprocess_env

pytestmark = pytest.mark.slow
pytest.importorskip("accelerate", reason="pip install 'fxp[dist]'")
PLUGINS = REPO / "tests" / "fixtures" / "plugins"
DDP = ("trainer.devices=2", "trainer.device=cpu", "trainer.epochs=2",
       "+trainer.cbs.fail._target_=ddp_fail.FailOnRank")


@pytest.fixture(scope="module")
def ddp(tmp_path_factory, monkeypatch_module):
    "The failed run (its result, how long it took), then its resume."
    tmp = tmp_path_factory.mktemp("ddp")
    monkeypatch_module.syspath_prepend(str(PLUGINS))
    env = {**subprocess_env(tmp), "PYTHONPATH": str(PLUGINS), "FXP_TEST_FAIL": "1"}
    t0 = time.time()
    failed = run_fxp("train", *DDP, "hydra.run.dir=run", cwd=tmp, env=env)
    took = time.time() - t0
    failed_summary = json.loads((tmp / "run" / "summary.json").read_text())
    env.pop("FXP_TEST_FAIL")
    resumed = run_fxp("resume", "run", cwd=tmp, env=env)
    return dict(failed=failed, took=took, failed_summary=failed_summary, resumed=resumed, path=tmp / "run")


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_a_failing_rank_ends_the_run_failed_in_one_line(ddp):
    r, summary = ddp["failed"], ddp["failed_summary"]
    errors = [line for line in r.stderr.splitlines() if line.startswith("fxp: error:")]
    assert r.returncode != 0 and len(errors) == 1, r.stderr
    assert "rank 1 of 2" in errors[0] and "test failure on rank 1" in errors[0]
    assert summary["status"] == "failed" and "rank 1 of 2" in summary["error"]
    assert ddp["took"] < 120  # the launcher stopped rank 0 (blocked in a collective) instead of waiting on it
    assert "test failure on rank 1" in (ddp["path"] / "train.log").read_text()  # the rank's traceback


def test_the_resumed_run_completes_over_two_processes(ddp):
    r, path = ddp["resumed"], ddp["path"]
    assert r.returncode == 0, r.stderr
    summary = json.loads((path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["world_size"] == 2 and summary["global_bs"] == 128
    rows = list(csv.DictReader(open(path / "metrics.csv")))
    assert [int(row["epoch"]) for row in rows] == [1, 2]  # rank 0 alone wrote it: one row per epoch
    assert float(rows[-1]["accuracy"]) > 0.8  # a broken data-parallel run (unsynced ranks) does not get there
    assert (path / "model.pkl").is_file() and (path / "checkpoints" / "best.pth").is_file()
    assert (path / "plots" / "confusion_matrix.png").is_file()


@pytest.mark.filterwarnings("ignore:load_learner")
def test_validation_metrics_cover_the_whole_valid_set(ddp):
    "metrics.csv's accuracy for the epoch model.pkl holds is the model's over all 360 valid digits, not a shard."
    import torch
    from fastai.learner import load_learner
    from omegaconf import OmegaConf

    from fxp import config
    from fxp.schema import Config
    from fxp.tasks.classification import dls

    path = ddp["path"]
    config.register()
    cfg = config.validate(OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(path / "config.yaml")))
    valid = dls(cfg, torch.device("cpu")).valid_ds
    x, y = valid.tensors
    model = load_learner(path / "model.pkl").model.eval()
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    epoch = json.loads((path / "summary.json").read_text())["model_epoch"]
    row = list(csv.DictReader(open(path / "metrics.csv")))[epoch - 1]
    assert len(y) == 360 and float(row["accuracy"]) == pytest.approx(accuracy, abs=1e-6)


def test_a_rank_after_the_first_writes_nothing_into_the_run_folder(tmp_path, monkeypatch):
    """Rank 0 alone writes the run folder: rank 1 building the same run (no epoch: it would load rank 0's best.pth)
    draws no plots/batch.png, which raced rank 0's for the same file (one rename then failed, FileNotFoundError)."""
    from fxp import train
    from fxp.rank import RankRun
    from test_folds import composed

    cfg = composed("trainer.epochs=0")
    monkeypatch.setenv("RANK", "1")
    train.trained(cfg, RankRun(tmp_path, cfg))
    assert not list(tmp_path.rglob("*"))
