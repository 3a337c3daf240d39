"`fxp diagnose`: the course's rules on metrics.csv curves shaped like each case, and on real diverged/under-fit runs."
import csv
import json
import math

import pytest
import yaml

from conftest import assert_one_line_error, newest_run, summary
from fxp import diagnose
from fxp.commands import diagnose as command
from fxp.errors import FxpError

# Curves shaped like real fastai runs (fit_one_cycle on a small image set), one per case.
OVER_FIT = dict(  # valid loss turns up at epoch 5; the error rate is lowest at epoch 5 and then keeps rising
    train_loss=[1.05, 0.62, 0.41, 0.29, 0.21, 0.15, 0.11, 0.08, 0.06, 0.045, 0.035, 0.028],
    valid_loss=[0.71, 0.48, 0.39, 0.35, 0.34, 0.36, 0.39, 0.43, 0.47, 0.52, 0.56, 0.60],
    error_rate=[0.24, 0.16, 0.13, 0.115, 0.108, 0.112, 0.118, 0.121, 0.127, 0.131, 0.135, 0.138])
UNDER_FIT = dict(  # training loss above valid loss all the way, flattening out
    train_loss=[2.10, 1.45, 1.12, 0.93, 0.82, 0.75, 0.71, 0.69],
    valid_loss=[1.60, 1.10, 0.86, 0.72, 0.64, 0.60, 0.58, 0.57],
    error_rate=[0.52, 0.38, 0.30, 0.26, 0.23, 0.215, 0.21, 0.205])
EXPLODING = dict(  # fine for two epochs, then the valid loss jumps 30x and the training loss with it
    train_loss=[1.20, 0.90, 3.80, 41.0],
    valid_loss=[0.80, 0.75, 23.1, 950.0],
    error_rate=[0.30, 0.25, 0.80, 0.90])
NAN_LOSS = dict(
    train_loss=[1.20, 0.90, 0.85, float("nan")],
    valid_loss=[0.80, 0.75, 0.70, float("nan")],
    error_rate=[0.30, 0.25, 0.24, 0.90])
LESSON2_LR_TOO_HIGH = dict(  # the course's own example (lesson 2, lr=0.5): one epoch, valid loss 1e9
    train_loss=[12.220007], valid_loss=[1144188288.0], error_rate=[0.765957])
STILL_IMPROVING = dict(  # valid loss still falling fast at the end
    train_loss=[1.50, 0.90, 0.65, 0.50, 0.38],
    valid_loss=[1.20, 0.95, 0.76, 0.60, 0.47],
    error_rate=[0.40, 0.31, 0.25, 0.20, 0.16])
CONVERGED = dict(  # flattening valid loss, error rate within noise of its best at the end
    train_loss=[0.90, 0.45, 0.25, 0.15, 0.11, 0.09],
    valid_loss=[0.60, 0.35, 0.24, 0.20, 0.19, 0.185],
    error_rate=[0.18, 0.10, 0.07, 0.062, 0.060, 0.061])
NOISY_PLATEAU = dict(  # best error early on the plateau, then a few thousandths up and down: noise, not over-fitting
    train_loss=[1.10, 0.55, 0.32, 0.22, 0.17, 0.14, 0.12, 0.11, 0.10, 0.095],
    valid_loss=[0.80, 0.42, 0.30, 0.26, 0.245, 0.24, 0.238, 0.236, 0.235, 0.235],
    error_rate=[0.30, 0.15, 0.10, 0.085, 0.080, 0.083, 0.079, 0.082, 0.081, 0.083])


def make_run(folder, curves, monitor=("accuracy", "max"), status="completed", times=None, stages=None):
    """A run folder with metrics.csv holding `curves` (plus accuracy = 1 - error_rate), config.yaml and summary.json;
    `times`: the columns data_s and step_s ({name: values}), `stages`: each row's stage (else all 1)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(curves["train_loss"])
    columns = dict(stage=stages or [1] * n, epoch=list(range(1, n + 1)), **curves)
    if "error_rate" in curves:
        columns["accuracy"] = [1 - e for e in curves["error_rate"]]
    columns.update(lr=[1e-3] * n, time=[2.5] * n, **(times or {}))
    with open(folder / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        w.writerows(zip(*columns.values()))
    cfg = {"task": {"kind": "classification", "monitor": {"metric": monitor[0], "mode": monitor[1]}},
           "data": {"cache": "off"}, "trainer": {"num_workers": "auto"}}
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    (folder / "summary.json").write_text(json.dumps({"status": status, "task": "t", "epochs": n}))
    return folder


@pytest.mark.parametrize("curves, verdict, epoch", [
    (OVER_FIT, "over-fitting", 5),
    (UNDER_FIT, "under-fitting", 8),
    (EXPLODING, "diverged", 3),
    (NAN_LOSS, "diverged", 4),
    (LESSON2_LR_TOO_HIGH, "diverged", 1),
    (STILL_IMPROVING, "still improving", 5),
    (CONVERGED, "looks fine", 6),
    (NOISY_PLATEAU, "looks fine", 10),
], ids=["over-fit", "under-fit", "exploding", "nan", "lesson2-lr-too-high", "still-improving", "converged",
        "noisy-plateau"])
def test_verdict_and_epoch(tmp_path, curves, verdict, epoch):
    d = diagnose.diagnose(make_run(tmp_path / "run", curves))
    assert (d["verdict"], d["epoch"]) == (verdict, epoch), d
    assert d["findings"][0]["verdict"] == verdict
    json.loads(json.dumps(d, allow_nan=False))  # strict JSON: it goes into summary.json


def test_over_fitting_epoch_is_the_best_epoch_of_the_main_metric(tmp_path):
    d = diagnose.diagnose(make_run(tmp_path / "run", OVER_FIT))
    best_epoch = 1 + max(range(12), key=lambda i: 1 - OVER_FIT["error_rate"][i])
    assert d["metric"] == "accuracy" and d["epoch"] == best_epoch
    assert "fewer epochs" in d["advice"] and f"trainer.epochs={best_epoch}" in d["advice"]
    assert "weight decay" in d["advice"] and "dropout" in d["advice"] and "augmentation" in d["advice"]


def test_over_fitting_on_a_metric_where_lower_is_better(tmp_path):
    "A regression run monitored on mse (min): same rule, other direction."
    mse = [0.9 * v for v in OVER_FIT["valid_loss"]]
    curves = dict(train_loss=OVER_FIT["train_loss"], valid_loss=OVER_FIT["valid_loss"], mse=mse)
    d = diagnose.diagnose(make_run(tmp_path / "run", curves, monitor=("mse", "min")))
    assert (d["verdict"], d["epoch"], d["metric"]) == ("over-fitting", 5, "mse")


def test_under_fitting_also_lists_what_else_holds(tmp_path):
    "Training loss above valid loss and the valid loss still falling fast: both findings, under-fitting first."
    curves = dict(train_loss=[2.0, 1.5, 1.1, 0.8], valid_loss=[1.8, 1.3, 0.9, 0.6], error_rate=[0.5, 0.4, 0.3, 0.2])
    d = diagnose.diagnose(make_run(tmp_path / "run", curves))
    assert [f["verdict"] for f in d["findings"]] == ["under-fitting", "still improving"]
    assert "more epochs" in d["advice"] and "higher lr" in d["advice"] and "less regularisation" in d["advice"]


def test_status_diverged_without_a_bad_row_names_the_next_epoch(tmp_path):
    "The divergence guard stops before the epoch's row is written: the run diverged in the epoch after the last row."
    curves = {k: v[:2] for k, v in CONVERGED.items()}
    d = diagnose.diagnose(make_run(tmp_path / "run", curves, status="diverged"))
    assert (d["verdict"], d["epoch"]) == ("diverged", 3)
    assert "learning rate too high" in d["advice"]
    assert diagnose.diagnose(tmp_path / "run", status="completed")["verdict"] != "diverged"


def test_plot_marks_the_epoch(tmp_path):
    run = make_run(tmp_path / "run", OVER_FIT)
    d = diagnose.diagnose(run)
    diagnose.plot(run, d, run / "plots" / "diagnosis.png")
    png = (run / "plots" / "diagnosis.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_main_prints_the_report_and_writes_the_plot(tmp_path, capsys):
    run = make_run(tmp_path / "run", OVER_FIT)
    assert command.main([str(run)]) == 0
    out = capsys.readouterr().out
    assert "over-fitting at epoch 5" in out and "what to try: train fewer epochs" in out
    assert "accuracy best 0.892 at epoch 5, 0.862 at epoch 12" in out
    assert (run / "plots" / "diagnosis.png").is_file()


def test_main_json_parses(tmp_path, capsys):
    run = make_run(tmp_path / "run", EXPLODING)
    assert command.main([str(run), "--json", "--no-plot"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert (d["verdict"], d["epoch"]) == ("diverged", 3)
    assert not (run / "plots").exists()


def test_a_run_without_epochs_says_so(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"status": "failed"}))
    assert command.main([str(run)]) == 0
    assert "no epochs" in capsys.readouterr().out
    diagnose.plot(run, diagnose.diagnose(run), run / "plots" / "diagnosis.png")  # the training-end hook's call
    assert not (run / "plots").exists()


def test_not_a_run_folder_is_one_line(tmp_path):
    with pytest.raises(FxpError, match="not a run folder"):
        command.main([str(tmp_path)])


def test_cli_errors_are_one_line(fxp, tmp_path):
    assert_one_line_error(fxp("diagnose", tmp_path / "nowhere"), "not a run folder", "nowhere")
    assert_one_line_error(fxp("diagnose"), "fxp diagnose", "RUN_DIR")


@pytest.mark.slow
def test_real_run_at_a_huge_lr_is_diverged(fxp, tmp_path):
    "Digits at lr=1e3: the loss is NaN within the first epoch, the guard stops the run; diagnose says lr too high."
    r = fxp("train", "trainer.epochs=2", "trainer.lr=1e3", "trainer.plots=false")
    assert r.returncode == 2, r
    run = newest_run(tmp_path)
    assert summary(run)["status"] == "diverged"
    d = diagnose.diagnose(run)
    assert (d["verdict"], d["epoch"]) == ("diverged", 1), d
    assert "learning rate too high" in d["advice"]


@pytest.mark.slow
def test_real_short_run_at_a_tiny_lr_is_under_fitting(fxp, tmp_path):
    "Digits for two epochs at lr=1e-4 barely learns: training loss stays above valid loss, accuracy far from 0.95."
    r = fxp("train", "trainer.epochs=2", "trainer.lr=1e-4", "trainer.plots=false")
    assert r.returncode == 0, r
    run = newest_run(tmp_path)
    s = summary(run)
    assert s["final_metrics"]["accuracy"] < 0.9, s  # it really is under-trained
    r = fxp("diagnose", run)
    assert r.returncode == 0, r
    assert "under-fitting at epoch 2" in r.stdout
    d = diagnose.diagnose(run)
    assert (d["verdict"], d["epoch"]) == ("under-fitting", 2), d
    assert all(math.isfinite(f) for f in (s["final_metrics"]["train_loss"], s["final_metrics"]["valid_loss"]))


# --- issue 21 items 7 and 13: the words agree with the status --------------------------------------------------------

TWO_VALID_ITEMS = dict(  # the training loss falls every epoch; a valid split of 2 items jumps 30x at epoch 3
    train_loss=[1.20, 0.80, 0.55, 0.40], valid_loss=[0.70, 0.05, 1.60, 0.30], error_rate=[0.5, 0.0, 0.5, 0.0])


def test_a_valid_loss_that_jumps_while_training_loss_falls_is_not_diverged(tmp_path):
    "The run ends `completed`; the diagnosis blames the 2-item valid split, not the lr."
    run = make_run(tmp_path / "run", TWO_VALID_ITEMS)
    s = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**s, "items_valid": 2}))
    d = diagnose.diagnose(run)
    assert (d["verdict"], d["epoch"]) == ("valid loss unreliable", 3), d
    assert "valid split of 2 items is too small" in d["advice"] and "not too high" in d["advice"]
    assert all(f["verdict"] != "diverged" for f in d["findings"])


def test_a_killed_run_says_so_and_how_to_resume(tmp_path, capsys):
    "summary.json still says running, its process is gone: killed after its last finished epoch, and fxp resume."
    import subprocess
    import sys

    from fxp.runs import HOST

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = make_run(tmp_path / "run", STILL_IMPROVING, status="running")
    s = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**s, "process": {"pid": dead.pid, "host": HOST, "start": "1"}}))
    d = diagnose.diagnose(run)
    assert (d["verdict"], d["epoch"]) == ("killed", 5), d
    assert d["advice"] == f"resume it from its last checkpoint: fxp resume {run}"
    assert [f["verdict"] for f in d["findings"]] == ["killed", "still improving"]  # the curves so far
    assert command.main([str(run), "--no-plot"]) == 0
    assert f"{run}: killed at epoch 5" in capsys.readouterr().out


# --- issue 26 item 4: where the time goes -----------------------------------------------------------------------------

WAITING = dict(data_s=[1.9, 1.2, 1.3, 1.2, 1.25, 1.2], step_s=[0.9, 0.8, 0.8, 0.85, 0.8, 0.8])  # 60% waiting
FED = dict(data_s=[1.9, 0.08, 0.1, 0.09, 0.08, 0.1], step_s=[0.9, 0.8, 0.8, 0.85, 0.8, 0.8])  # an image cache's first
# epoch builds it: 68% waiting there, 10% after


def verdicts(d: dict) -> list[str]:
    return [f["verdict"] for f in d["findings"]]


def test_a_loop_waiting_for_its_batches_is_input_bound_with_the_keys_that_fix_it(tmp_path, capsys):
    run = make_run(tmp_path / "run", CONVERGED, times=WAITING)
    d = diagnose.diagnose(run)
    assert (d["verdict"], d["epoch"]) == ("input-bound", 6), d  # the curves look fine: the time is what to fix
    (f,) = d["findings"]
    assert f["evidence"].startswith("data is 60% of step time (6.15 s waiting for batches, 4.05 s in forward"), f
    assert "epochs 2-6" in f["evidence"]  # the first epoch's one-time costs left out
    assert "data.cache=auto; now off" in f["advice"] and "trainer.num_workers=N; now auto" in f["advice"]
    assert command.main([str(run), "--no-plot"]) == 0
    assert "input-bound at epoch 6" in capsys.readouterr().out


def test_input_bound_is_listed_with_its_fix_under_a_verdict_on_the_fit(tmp_path, capsys):
    run = make_run(tmp_path / "run", OVER_FIT, times={k: v * 2 for k, v in WAITING.items()})
    d = diagnose.diagnose(run)
    assert d["verdict"] == "over-fitting" and verdicts(d)[-1] == "input-bound", d
    assert command.main([str(run), "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "  - input-bound (epoch 12): data is 61% of step time" in out
    assert "    what to try: the model waits for its batches: decode images once (data.cache=auto; now off)" in out


@pytest.mark.parametrize("times, stages", [
    (FED, None),  # 10% after the epoch that built the cache
    (None, None),  # a run of an fxp before data_s and step_s
    (dict(data_s=[1.9, 0.1, 1.9, 0.1, 1.9, 0.1], step_s=[0.9] * 6), [1, 1, 2, 2, 3, 3]),  # each stage's first epoch
    (dict(data_s=[1.9], step_s=[0.9]), None),  # one epoch: one-time costs only
], ids=["fed", "older-run", "stage-firsts", "one-epoch"])
def test_a_fed_loop_or_one_with_nothing_to_judge_is_not_input_bound(tmp_path, times, stages):
    curves = CONVERGED if times is None or len(times["data_s"]) == 6 else LESSON2_LR_TOO_HIGH
    d = diagnose.diagnose(make_run(tmp_path / "run", curves, times=times, stages=stages))
    assert "input-bound" not in verdicts(d), d


def test_a_diverged_run_is_not_judged_on_its_time(tmp_path):
    d = diagnose.diagnose(make_run(tmp_path / "run", EXPLODING, times={k: v[:4] for k, v in WAITING.items()}))
    assert verdicts(d) == ["diverged"], d
