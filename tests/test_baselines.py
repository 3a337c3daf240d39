"""Baselines (issue 21 item 3): what a predictor that never looks at the inputs reaches, each kind's `baseline`
recorded in summary.json's `baselines` and shown beside the metric wherever it is shown; `fxp diagnose` says when a
run does not beat it.

The kinds' baselines are checked on the ready runs of tests/fixtures/exported (their learners over the shared data, as
`fxp val` evaluates them), each against the same predictor computed here from the labels alone. The tables are
checked on run folders written here as fxp writes them.
"""
from __future__ import annotations

import csv
import html
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import copy_exported, need_data
from fxp import reports
from fxp.commands import compare, report, runs as runlist
from fxp.diagnose import diagnose


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return copy_exported(tmp_path_factory.mktemp("baselines"), "multilabel", "segmentation", "tabular")


def evaluated(run, data) -> dict:
    "`fxp val RUN data.path=DATA`'s result (in this process): the run's learner on the data's valid split."
    from fxp import saved
    from fxp.commands import val

    opened = saved.open_run(run, "fxp val")
    return val.evaluate(opened, opened.config([f"data.path={data}"]), "valid")[0]


def random_split(n: int, pct: float = 0.2, seed: int = 42):
    from fastai.data.transforms import RandomSplitter

    return RandomSplitter(pct, seed=seed)(range(n))


# --- each kind's baseline, against the same predictor computed from the labels ----------------------------------


def f_beta(pred: np.ndarray, true: np.ndarray, beta: float = 2.0) -> float:
    "Sample-averaged F-beta of 0/1 rows (a row with no true and no predicted tag scores 0, as sklearn)."
    tp, denom = (pred * true).sum(1), beta ** 2 * true.sum(1) + pred.sum(1)
    return float(np.where(denom > 0, (1 + beta ** 2) * tp / np.maximum(denom, 1e-12), 0).mean())


@pytest.mark.slow  # loads the planet sample through the run's learner (~10 s)
def test_multilabel_baseline_is_the_best_constant_tag_set_and_diagnose_says_the_run_loses_to_it(runs, capsys):
    """planet_sample: of the k most frequent training tags, the set with the best training F2 (scored on the valid
    split), and the tags of over half the training images for accuracy_multi. The fixture's one-epoch model is below
    both: its final table and fxp diagnose say so."""
    data, run = need_data("planet_sample"), runs / "multilabel"
    df = pd.read_csv(data / "labels.csv")
    vocab = sorted({t for s in df.tags for t in s.split()})
    y = np.array([[t in s.split() for t in vocab] for s in df.tags], dtype=float)
    train, valid = (y[list(i)] for i in random_split(len(df)))
    counts = train.sum(0)
    order = sorted(range(len(vocab)), key=lambda j: (-counts[j], j))
    sets = [np.isin(range(len(vocab)), order[:k]).astype(float) for k in range(1, len(vocab) + 1)]
    best = max(sets, key=lambda s: f_beta(np.broadcast_to(s, train.shape), train))
    half = (train.mean(0) > 0.5).astype(float)
    expected = {"fbeta": max(f_beta(np.broadcast_to(s, valid.shape), valid) for s in (best, half)),
                "accuracy_multi": max(float((s == valid).mean()) for s in (best, half))}

    result = evaluated(run, data)
    base = result["baselines"]
    for name, value in expected.items():
        assert base[name]["value"] == pytest.approx(value, abs=1e-4), (name, base)
    assert 0.6 < base["fbeta"]["value"] < 0.8 and "always the tags" in base["fbeta"]["by"]
    assert result["metrics"]["fbeta"] < base["fbeta"]["value"]  # the fixture model loses to it

    fbeta = result["metrics"]["fbeta"]
    write_run(run, {"valid_loss": [0.6, 0.47], "accuracy_multi": [0.15, 0.19], "fbeta": [0.45, fbeta]}, task="planet",
              baselines=base)
    d = diagnose(run)
    assert d["verdict"] == "no better than its baseline", d
    assert f"fbeta {fbeta:.4g} vs {base['fbeta']['value']:.4g} for always the tags" in d["findings"][0]["evidence"]
    reports.report(type("R", (), {"path": run})())
    assert f"fbeta {fbeta:.4g} does not beat its baseline" in capsys.readouterr().out


@pytest.mark.slow  # loads camvid_tiny through the run's learner (~5 s)
def test_segmentation_baseline_is_the_per_pixel_mode_or_the_majority_class(runs):
    """camvid_tiny at 48x64 (the fixture's size): the better of every pixel the majority class and each pixel its most
    common training class, Void left out of both (as acc_camvid leaves it out)."""
    from PIL import Image

    from fxp.data import image_files

    data, run = need_data("camvid_tiny"), runs / "segmentation"
    codes = (data / "codes.txt").read_text().split()
    void = codes.index("Void")
    files = image_files(data / "images")  # the order the kind splits
    masks = np.stack([np.array(Image.open(data / "labels" / f"{f.stem}_P{f.suffix}").resize((64, 48), Image.NEAREST))
                      for f in files])
    train, valid = (masks[list(i)] for i in random_split(len(files)))
    counts = np.stack([(train == c).sum(0) for c in range(len(codes))]).astype(float)
    counts[void] = -1
    keep = valid != void

    def accuracy(pred):
        return float((np.broadcast_to(pred, valid.shape) == valid)[keep].mean())

    majority, mode = int(counts.sum((1, 2)).argmax()), counts.argmax(0)
    expected = max(accuracy(np.full(valid.shape[1:], majority)), accuracy(mode))

    base = evaluated(run, data)["baselines"]["acc_camvid"]
    assert base["value"] == pytest.approx(expected, abs=1e-5)
    assert base["by"] in (f"every pixel {codes[majority]!r}", "each pixel's most common training class")


@pytest.mark.slow  # processes the adult file through the run's learner (~5 s)
def test_tabular_baseline_is_the_majority_label(runs):
    data, run = need_data("adult_sample"), runs / "tabular"
    df = pd.read_csv(data / "adult.csv", skipinitialspace=True)
    train, valid = (df.salary.iloc[list(i)] for i in random_split(len(df)))
    majority = train.mode()[0]
    base = evaluated(run, data)["baselines"]["accuracy"]
    assert base == {"value": pytest.approx(float((valid == majority).mean()), abs=1e-6),
                    "by": f"the majority label {majority!r}"}


# --- the baseline beside the metric: final table, fxp runs, fxp compare, the report ------------------------------


def write_run(folder, curves: dict, task: str = "planet", metric: str = "fbeta", **summary):
    "metrics.csv with `curves`, a config.yaml monitoring `metric` (kept if there), summary.json as a run ends."
    folder.mkdir(parents=True, exist_ok=True)
    n = len(next(iter(curves.values())))
    columns = dict(stage=[1] * n, epoch=list(range(1, n + 1)), train_loss=[0.9 - 0.1 * i for i in range(n)], **curves,
                   lr=[1e-3] * n, time=[1.0] * n)
    with open(folder / "metrics.csv", "w", newline="") as f:
        csv.writer(f).writerows([list(columns), *zip(*columns.values())])
    if not (folder / "config.yaml").is_file():
        cfg = {"task": {"kind": "multilabel", "monitor": {"metric": metric, "mode": "max"}}, "trainer": {"seed": 1}}
        (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    final = {k: v[-1] for k, v in columns.items() if k not in ("stage", "epoch", "lr", "time")}
    (folder / "summary.json").write_text(json.dumps(dict(status="completed", task=task, overrides=[], epochs=n,
                                                         wall_time_s=2.0, final_metrics=final, best_metrics=final,
                                                         **summary)))
    return folder


KINDS = {  # a kind's task, main metric, its final value and the baseline its `baseline` records
    "multilabel": ("planet", "fbeta", 0.694, {"fbeta": {"value": 0.715, "by": "always the tags 'clear primary'"}}),
    "segmentation": ("pets_trimaps", "pixel_accuracy", 0.631,
                     {"pixel_accuracy": {"value": 0.64, "by": "every pixel 'background'"}}),
    "tabular": ("adult", "accuracy", 0.765, {"accuracy": {"value": 0.775, "by": "the majority label '<50k'"}}),
}


@pytest.mark.parametrize("kind", KINDS)
def test_final_table_runs_and_report_show_the_baseline(tmp_path, capsys, kind):
    "The issue's three runs that lost to a trivial predictor on unseen data: each table shows it, and says so."
    task, metric, value, base = KINDS[kind]
    by = base[metric]["by"]
    run = write_run(tmp_path / "outputs" / task / "2026-01-01_10-00-00_aaaaaa", {"valid_loss": [0.7, 0.6],
                    metric: [value - 0.05, value]}, task=task, metric=metric, baselines=base)
    reports.report(type("R", (), {"path": run})())
    out = capsys.readouterr().out
    row = next(ln for ln in out.splitlines() if f"│ {metric} " in ln)
    assert f"{base[metric]['value']:.4g} ({by})" in row
    assert f"{metric} {value:.4g} does not beat its baseline, {base[metric]['value']:.4g} for {by}" in out

    assert runlist.main([str(tmp_path / "outputs"), "--wide"]) == 0  # every cell whole, a row per line
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "aaaaaa" in ln)
    assert f"({base[metric]['value']:.4g} for {by})" in line

    assert report.main([str(run)]) == 0
    page = (run / "report.html").read_text()
    assert html.escape(f"{base[metric]['value']:.4g} ({by})") in page


def test_compare_shows_each_runs_baseline_and_warns_once_when_the_tasks_differ(tmp_path, capsys):
    a = write_run(tmp_path / "a", {"valid_loss": [0.7, 0.6], "fbeta": [0.6, 0.694]}, baselines=KINDS["multilabel"][3])
    b = write_run(tmp_path / "b", {"valid_loss": [0.7, 0.5], "fbeta": [0.6, 0.73]}, baselines=KINDS["multilabel"][3])
    assert compare.main([str(a), str(b)]) == 0
    out, err = capsys.readouterr()
    rows = [ln for ln in out.splitlines() if "0.715 (always the tags 'clear primary')" in ln]
    assert len(rows) == 2 and "0.694" in rows[0] and "0.73" in rows[1]
    assert err == ""
    c = write_run(tmp_path / "c", {"valid_loss": [0.7, 0.5], "accuracy": [0.6, 0.8]}, task="adult", metric="accuracy")
    assert compare.main([str(a), str(c)]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "different tasks (planet, adult)" in err


def test_diagnose_calls_a_multilabel_run_below_its_constant_tag_set_so(tmp_path):
    "planet on unseen data: F2 0.694 against 0.715 for always the most frequent tags."
    run = write_run(tmp_path / "run", {"valid_loss": [0.3, 0.25], "fbeta": [0.62, 0.694]},
                    baselines=KINDS["multilabel"][3])
    d = diagnose(run)
    assert d["verdict"] == "no better than its baseline", d
    assert d["findings"][0]["evidence"] == "fbeta 0.694 vs 0.715 for always the tags 'clear primary'"
    assert "(0.715 for always the tags 'clear primary')" in d["curves"]
