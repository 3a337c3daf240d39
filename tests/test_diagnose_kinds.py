"""`fxp diagnose` beyond supervised curves (issue 16 items 4, 11): a GAN's adversarial losses, a failed run's error,
advice that names keys that act (trainer.stages.N.epochs), and the baseline fxp computed beside the metric."""
import csv
import json

import pytest
import yaml

from conftest import run_fxp
from fxp import diagnose

OVER_FIT = dict(  # test_diagnose's over-fitting curves: best error at epoch 5, then worse
    train_loss=[1.05, 0.62, 0.41, 0.29, 0.21, 0.15, 0.11, 0.08, 0.06, 0.045, 0.035, 0.028],
    valid_loss=[0.71, 0.48, 0.39, 0.35, 0.34, 0.36, 0.39, 0.43, 0.47, 0.52, 0.56, 0.60],
    error_rate=[0.24, 0.16, 0.13, 0.115, 0.108, 0.112, 0.118, 0.121, 0.127, 0.131, 0.135, 0.138])
UNDER_FIT = dict(
    train_loss=[2.10, 1.45, 1.12, 0.93, 0.82, 0.75, 0.71, 0.69],
    valid_loss=[1.60, 1.10, 0.86, 0.72, 0.64, 0.60, 0.58, 0.57],
    error_rate=[0.52, 0.38, 0.30, 0.26, 0.23, 0.215, 0.21, 0.205])


def write_run(folder, curves, stages=(None,), monitor=("error_rate", "min"), trainer=None, kind="classification",
              **summary):
    """metrics.csv with `curves` (stage column from `stages`: each stage's epochs), config.yaml with the stages as
    trainer.stages, summary.json."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(next(iter(curves.values())))
    sizes = [s if s is not None else n for s in stages]
    stage = [i + 1 for i, k in enumerate(sizes) for _ in range(k)][:n]
    columns = dict(stage=stage, epoch=list(range(1, n + 1)), **curves, lr=[1e-3] * n, time=[1.0] * n)
    with open(folder / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        w.writerows(zip(*columns.values()))
    trainer = trainer or {"epochs": 1, "stages": [{"epochs": s} for s in stages]}
    cfg = {"task": {"kind": kind, "monitor": {"metric": monitor[0], "mode": monitor[1]}}, "trainer": trainer}
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    (folder / "summary.json").write_text(json.dumps({"status": "completed", "task": "t", "epochs": n, **summary}))
    return folder


# --- GANs: adversarial losses ----------------------------------------------------------------------------------------


def gan_curves(psnr):
    "A GAN step's curves: losses shaped like over-fitting (they are not), gen/crit losses, psnr."
    return dict(train_loss=OVER_FIT["train_loss"], valid_loss=OVER_FIT["valid_loss"],
                gen_loss=[2.0 + 0.1 * i for i in range(12)], crit_loss=[0.7 - 0.01 * i for i in range(12)], psnr=psnr)


def test_a_gan_is_not_judged_by_supervised_rules(tmp_path):
    psnr = [24.0, 24.5, 25.0, 25.2, 25.6, 25.5, 25.4, 25.3, 25.2, 25.0, 24.9, 24.8]  # "over-fits" by the rules
    d = diagnose.diagnose(write_run(tmp_path / "run", gan_curves(psnr), monitor=("psnr", "max"), kind="gan",
                                    psnr_input=23.1))
    assert d["verdict"] == "adversarial", d
    assert [f["verdict"] for f in d["findings"]] == ["adversarial"]
    assert "augmentation" not in d["advice"] and "over- and under-fitting rules do not apply" in d["advice"]
    assert "psnr 24.8 vs 23.1 for the input itself" in d["findings"][0]["evidence"]
    assert "gen_loss" in d["findings"][0]["evidence"]


def test_a_gan_below_its_input_says_so(tmp_path):
    psnr = [20.0 + 0.1 * i for i in range(12)]
    d = diagnose.diagnose(write_run(tmp_path / "run", gan_curves(psnr), monitor=("psnr", "max"), kind="gan",
                                    psnr_input=23.1))
    assert d["verdict"] == "no better than its baseline", d
    assert "for the input itself" in d["findings"][0]["evidence"]


def test_a_wgan_with_negative_losses_has_not_diverged(tmp_path):
    curves = dict(train_loss=[-0.1, -0.3, -0.6, -0.2], valid_loss=[-0.05, -0.4, -0.5, -0.3],
                  gen_loss=[0.1, 0.3, 0.5, 0.4], crit_loss=[-0.9, -0.6, -0.4, -0.3])
    run = write_run(tmp_path / "run", curves, monitor=("crit_loss", "max"), kind="gan")
    d = diagnose.diagnose(run)
    assert d["verdict"] == "adversarial", d
    diagnose.plot(run, d, run / "plots" / "diagnosis.png")


def test_a_gan_points_to_its_supervised_steps(tmp_path):
    run = write_run(tmp_path / "run", gan_curves([25.0] * 12), monitor=("psnr", "max"), kind="gan")
    write_run(run / "gen", UNDER_FIT)
    (run / "gen" / "config.yaml").unlink()  # a step folder has the run's config, one level up
    d = diagnose.diagnose(run)
    assert f"fxp diagnose {run / 'gen'}" in d["advice"]
    step = diagnose.diagnose(run / "gen")
    assert step["verdict"] == "under-fitting" and "this step's stages" in step["advice"]


# --- a failed run: its error ---------------------------------------------------------------------------------------


def test_a_failed_run_is_diagnosed_by_its_error(tmp_path):
    error = "FileNotFoundError: no images under /data/pets matching task.pat\nmore"
    run = write_run(tmp_path / "run", {k: v[:2] for k, v in UNDER_FIT.items()}, status="failed", error=error)
    d = diagnose.diagnose(run)
    assert d["verdict"] == "failed", d
    assert "FileNotFoundError: no images under /data/pets matching task.pat" in d["findings"][0]["evidence"]
    assert "more" not in d["findings"][0]["evidence"] and "train.log" in d["advice"]
    r = run_fxp("diagnose", run, cwd=tmp_path)
    assert r.returncode == 0 and "failed" in r.stdout and "FileNotFoundError: no images" in r.stdout, r


def test_a_run_failing_before_its_first_epoch(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"status": "failed", "error": "ValueError: bad"}))
    r = run_fxp("diagnose", run, cwd=tmp_path)
    assert r.returncode == 0 and "ValueError: bad" in r.stdout and "nothing to diagnose" not in r.stdout, r


def test_the_hook_sees_the_error_before_the_summary_has_it(tmp_path):
    run = write_run(tmp_path / "run", {k: v[:2] for k, v in UNDER_FIT.items()}, status="running")
    d = diagnose.diagnose(run, status="failed", summary={"error": "RuntimeError: boom"})
    assert d["verdict"] == "failed" and "RuntimeError: boom" in d["findings"][0]["evidence"]


# --- advice names keys that act ---------------------------------------------------------------------------------


def test_more_epochs_names_the_last_stage_when_stages_set_their_epochs(tmp_path):
    d = diagnose.diagnose(write_run(tmp_path / "run", UNDER_FIT, stages=(4, 4)))
    assert d["verdict"] == "under-fitting"
    assert "more trainer.stages.1.epochs, now 4" in d["advice"] and "trainer.epochs" not in d["advice"]


def test_more_epochs_is_trainer_epochs_for_one_stage_without_its_own(tmp_path):
    d = diagnose.diagnose(write_run(tmp_path / "run", UNDER_FIT, trainer={"epochs": 8, "stages": [{}]}))
    assert "more trainer.epochs, now 8" in d["advice"]


def test_fewer_epochs_names_the_stage_of_the_best_epoch(tmp_path):
    d = diagnose.diagnose(write_run(tmp_path / "run", OVER_FIT, stages=(4, 8)))
    assert (d["verdict"], d["epoch"]) == ("over-fitting", 5)
    assert "trainer.stages.1.epochs=1" in d["advice"] and "trainer.epochs" not in d["advice"]
    d = diagnose.diagnose(write_run(tmp_path / "three", OVER_FIT, stages=(6, 3, 3)))
    assert "trainer.stages.0.epochs=5, and fewer or none of the 2 later stages" in d["advice"]
    d = diagnose.diagnose(write_run(tmp_path / "one", OVER_FIT, trainer={"epochs": 12, "stages": [{}]}))
    assert "trainer.epochs=5" in d["advice"]


# --- the baseline beside the metric ----------------------------------------------------------------------------------


def test_the_diagnosis_shows_the_baseline(tmp_path):
    curves = dict(UNDER_FIT, accuracy=[0.40, 0.45, 0.50, 0.52, 0.55, 0.56, 0.57, 0.58])
    d = diagnose.diagnose(write_run(tmp_path / "run", curves, monitor=("accuracy", "max"), accuracy_majority=0.47))
    assert "accuracy 0.4 -> 0.58 (0.47 for the majority label)" in d["curves"]
    assert d["verdict"] == "under-fitting"


@pytest.mark.parametrize("last, verdict", [(0.47, "no better than its baseline"), (0.50, "under-fitting")])
def test_no_better_than_the_majority_label(tmp_path, last, verdict):
    curves = dict(UNDER_FIT, accuracy=[0.40, 0.45, 0.46, 0.46, 0.47, 0.47, 0.47, last])
    d = diagnose.diagnose(write_run(tmp_path / "run", curves, monitor=("accuracy", "max"), accuracy_majority=0.47))
    assert d["verdict"] == verdict, d
    if verdict != "under-fitting":
        assert "accuracy 0.47 vs 0.47 for the majority label" in d["findings"][0]["evidence"]
