"""k-fold cross-validation (`trainer.folds`): the folds as drawn (a pure function: disjoint, covering, stratified,
grouped, the same whatever the listing order), the kinds' splits through fxp.folds.splitter, the refusals, and real
short cross-validations on a sample of the shared adult set: five fold folders, cv.csv, cv.json, group.json, valid sets
that cover every row once and keep each class's share; a cross-validation stopped in fold 2 finished by fxp resume on
the same folds; a sweep of cross-validations with the joblib launcher, its jobs compared by their means."""
import csv
import inspect
import json
import os
import signal
from collections import Counter
from pathlib import Path

import pytest

from conftest import assert_one_line_error, forked, mnist_subset, need_data, run_fxp
from fxp import cv, dispatch, folds
from fxp.errors import FxpError
from fxp.runs import read_run
from test_kill import appeared
from test_resume import interrupt_after

ROWS = 600  # of the shared adult sample: 5 folds train on 480 rows each, about 120 of them >=50k
K = 5


def adult_sample(dest: Path, n: int = ROWS) -> Path:
    "The first `n` rows of the shared adult sample, as a data folder for task=adult."
    lines = (need_data("adult_sample") / "adult.csv").read_text().splitlines(keepends=True)
    dest.mkdir(parents=True)
    (dest / "adult.csv").write_text("".join(lines[:n + 1]))
    return dest


def cv_folder(cwd: Path) -> Path:
    found = sorted((cwd / "outputs").glob("*/cv/*"))
    assert len(found) == 1, found
    return found[0]


def fold_of(assigned: dict, k: int) -> list[set]:
    return [{key for key, f in assigned.items() if f == i} for i in range(k)]


# --- the draw, a pure function -------------------------------------------------------------------------------------


def test_folds_cover_every_item_once_and_keep_each_class_share():
    keys = [f"img{i}.png" for i in range(103)]
    labels = ["a"] * 61 + ["b"] * 30 + ["c"] * 12
    drawn = folds.draw(keys, 4, seed=42, labels=labels)
    parts = fold_of(drawn, 4)
    assert set().union(*parts) == set(keys) and sum(map(len, parts)) == len(keys)
    label = dict(zip(keys, labels))
    for part in parts:
        counts = Counter(label[k] for k in part)
        for c, n in Counter(labels).items():
            assert abs(counts[c] - n / 4) <= 1, (c, counts)


def test_the_draw_depends_on_the_items_and_seed_not_their_order():
    keys, labels = [str(i) for i in range(50)], [i % 3 for i in range(50)]
    drawn = folds.draw(keys, 5, seed=1, labels=labels)
    assert folds.draw(keys[::-1], 5, seed=1, labels=labels[::-1]) == drawn
    assert folds.draw(keys, 5, seed=2, labels=labels) != drawn


def test_a_group_stays_in_one_fold():
    keys = [str(i) for i in range(60)]
    groups = [f"patient{i // 4}" for i in range(60)]
    for labels in (None, [i % 2 for i in range(60)]):
        drawn = folds.draw(keys, 3, seed=0, labels=labels, groups=groups)
        by_group = {}
        for key, g in zip(keys, groups):
            by_group.setdefault(g, set()).add(drawn[key])
        assert all(len(f) == 1 for f in by_group.values()), by_group


def test_multilabel_folds_spread_each_common_tag():
    tags = [["clear", "primary"]] * 40 + [["cloudy"]] * 20 + [["haze", "primary", "water"]] * 10
    keys = [str(i) for i in range(len(tags))]
    parts = fold_of(folds.draw(keys, 5, seed=0, labels=tags), 5)
    for part in parts:
        seen = Counter(t for k in part for t in tags[int(k)])
        assert seen["cloudy"] == 4 and seen["water"] == 2, seen  # each stratum split evenly


@pytest.mark.parametrize("call, mentions", [
    (lambda: folds.draw([str(i) for i in range(3)], 5, 0), ["trainer.folds=5", "3 items"]),
    (lambda: folds.draw([str(i) for i in range(20)], 5, 0, labels=["a"] * 17 + ["b"] * 3),
     ["trainer.folds=5", "class 'b' has 3 items", "lower trainer.folds to 3"]),
    (lambda: folds.draw([str(i) for i in range(20)], 3, 0, groups=["x", "y"] * 10),
     ["2 groups", "data.group_col"]),
    (lambda: folds.check_batches({str(i): i % 2 for i in range(20)}, 2, 16), ["fold 0 leaves 10 items", "bs=16"]),
])
def test_folds_that_cannot_be_drawn_are_one_line(call, mentions):
    with pytest.raises(FxpError) as e:
        call()
    assert "\n" not in str(e.value) and all(m in str(e.value) for m in mentions), str(e.value)


def fold_cfg(file, fold: int, k: int = 3, seed: int = 42, bs: int = 2):
    from omegaconf import OmegaConf

    return OmegaConf.create({"trainer": {"folds": k, "fold": fold, "seed": seed, "bs": bs},
                             "data": {"folds_file": str(file), "group_col": None, "path": None}})


def test_the_folds_are_recorded_once_and_read_back_by_every_fold(tmp_path):
    items, file = list(range(30)), tmp_path / "cv" / "folds.json"
    valid = [folds.FoldSplitter(fold_cfg(file, i))(items)[1] for i in range(3)]
    assert sorted(sum(valid, [])) == items
    record = json.loads(file.read_text())
    assert record["folds"] == 3 and record["sizes"] == [10, 10, 10] and len(record["items"]) == 30
    # another seed reads the recorded folds: a resume or a rerun validates on the same items
    assert folds.FoldSplitter(fold_cfg(file, 1, seed=7))(items)[1] == valid[1]
    for cfg, items_now, mentions in ((fold_cfg(file, 0, k=4), items, ["records 3 folds", "trainer.folds=4"]),
                                     (fold_cfg(file, 0), items[:-1] + [99], ["the data changed", "99"])):
        with pytest.raises(FxpError) as e:
            folds.FoldSplitter(cfg)(items_now)
        assert all(m in str(e.value) for m in mentions), str(e.value)


# --- the config ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, mentions", [
    (["trainer.folds=1"], ["trainer.folds"]),
    (["trainer.fold=1"], ["trainer.fold=1 needs trainer.folds"]),
    (["trainer.folds=3", "trainer.fold=3"], ["trainer.fold=3", "0..2"]),
    (["data.group_col=patient"], ["data.group_col=patient", "trainer.folds"]),
    (["task=superres", "trainer.folds=3"], ["trainer.folds=3", "gan", "cannot be cross-validated"]),
])
def test_folds_the_config_refuses_are_one_line(fxp, args, mentions):
    assert_one_line_error(fxp("train", *args), *mentions)


@pytest.mark.parametrize("args, mentions", [
    (["trainer.folds=200"], ["fold 0: trainer.folds=200: class", "fewer than the folds", "lower trainer.folds to"]),
    (["trainer.folds=5", "trainer.bs=1500"], ["fold 0 leaves 1437 items to train on", "trainer.bs=1500"]),
])
def test_folds_the_data_cannot_fill_are_one_line_before_any_epoch(fxp, tmp_path, args, mentions):
    "The digits (10 classes of about 180): refused as the first fold's data is read, nothing trained."
    assert_one_line_error(fxp("train", *args), *mentions)
    assert not list(tmp_path.rglob("metrics.csv"))


@pytest.mark.parametrize("kind", dispatch.kinds())
def test_each_kind_splits_through_the_folds_or_says_why_not(kind):
    "A kind without NO_FOLDS hands its items to fxp.folds.splitter, the one point a fold becomes the valid split."
    module = dispatch.kind_module(kind)
    assert (dispatch.declared(module, "NO_FOLDS") is None) == ("folds.splitter(" in inspect.getsource(module))


# --- the kinds' items as folds ---------------------------------------------------------------------------------------


def composed(*overrides: str):
    from hydra import compose, initialize_config_module

    from fxp import config

    with initialize_config_module("fxp.conf", version_base="1.3"):
        return config.validate(compose("config", overrides=list(overrides)))


def valid_items(kind: str, *overrides: str, k: int) -> list[list]:
    "Each fold's valid items as the kind's data builds them (files, or table rows)."
    import torch

    out = []
    for i in range(k):
        dls = dispatch.kind_module(kind).dls(composed(*overrides, f"trainer.folds={k}", f"trainer.fold={i}"),
                                             torch.device("cpu"))
        items = dls.valid_ds.items
        out.append(list(items.index) if hasattr(items, "iloc") else list(map(str, items)))
    return out


def assert_partition(parts: list[list], n: int) -> None:
    assert sum(map(len, parts)) == n and len(set().union(*map(set, parts))) == n, [len(p) for p in parts]


def test_image_folders_fold_their_train_and_valid_images_together(tmp_path):
    "Class folders: the train/ and valid/ images pooled, each fold a stratified share of both classes."
    root = mnist_subset(tmp_path / "mnist", n=10)
    parts = valid_items("classification", "task=mnist", f"data.path={root}", "trainer.bs=4", k=4)
    assert_partition(parts, 40)
    for part in parts:
        assert Counter(Path(f).parent.name for f in part) == {"3": 5, "7": 5}


def test_collab_folds_by_rating_rows_and_a_group_col_keeps_a_users_ratings_together(tmp_path):
    import pandas as pd

    root = need_data("movie_lens_sample")
    assert_partition(valid_items("collab", "task=movielens_sample", f"data.path={root}", k=3), 6031)
    parts = valid_items("collab", "task=movielens_sample", f"data.path={root}", "data.group_col=userId", k=3)
    assert_partition(parts, 6031)
    fold = {row: i for i, part in enumerate(parts) for row in part}
    user = pd.read_csv(root / "ratings.csv")["userId"]
    assert all(len({fold[r] for r in rows}) == 1 for rows in user.groupby(user).groups.values())


def test_text_folds_its_labelled_texts_by_label():
    from fxp.tasks import text

    root = need_data("imdb_sample")
    valid = [text.texts(composed("task=imdb", f"data.path={root}", "trainer.folds=3", f"trainer.fold={i}"))
             for i in range(3)]
    parts = [list(df.index[df.is_valid]) for df in valid]
    assert_partition(parts, len(valid[0]))
    share = valid[0].label.value_counts() / 3
    for df, part in zip(valid, parts):
        counts = df.label[part].value_counts()
        assert all(abs(counts[c] - share[c]) <= 1 for c in share.index), counts.to_dict()


# --- a real cross-validation (adult) --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adult_cv(tmp_path_factory) -> Path:
    """`fxp train task=adult trainer.folds=5` on 600 rows of the shared sample, one epoch a fold, no plots (the report
    draws the folds' curves from their metrics.csv)."""
    cwd = tmp_path_factory.mktemp("adult_cv")
    root = adult_sample(cwd / "adult")
    r = run_fxp("train", "task=adult", f"data.path={root}", f"trainer.folds={K}", "trainer.epochs=1",
                "trainer.plots=false", cwd=cwd)
    assert r.returncode == 0, r
    assert f"adult: {K}-fold cross-validation, completed" in r.stdout, r
    return cv_folder(cwd)


@pytest.mark.slow
def test_a_cross_validation_writes_its_folds_and_their_mean(adult_cv):
    assert [p.name for p in sorted(adult_cv.glob("fold?"))] == cv.members(K)
    assert json.loads((adult_cv / "group.json").read_text()) == {"kind": "cv", "members": cv.members(K)}
    with open(adult_cv / "cv.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["fold"] for r in rows] == [str(i) for i in range(K)]
    assert sum(int(r["n_valid"]) for r in rows) == ROWS
    accuracy = [float(r["accuracy"]) for r in rows]
    result = json.loads((adult_cv / "cv.json").read_text())
    assert result["metrics"]["accuracy"]["n"] == K
    assert result["metrics"]["accuracy"]["mean"] == pytest.approx(sum(accuracy) / K)
    assert result["baselines"]["accuracy"]["by"].startswith("the majority label")
    summary = json.loads((adult_cv / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["final_metrics"]["accuracy"] == pytest.approx(
        result["metrics"]["accuracy"]["mean"])


@pytest.mark.slow
def test_the_valid_sets_are_disjoint_cover_every_row_and_are_stratified(adult_cv):
    "Each fold's valid rows as its own saved config rebuilds them (the kind's split, not folds.json read back)."
    import pandas as pd
    import torch

    from fxp.saved import SavedRun
    from fxp.tasks import tabular

    salary = pd.read_csv(adult_cv.parents[3] / "adult" / "adult.csv", skipinitialspace=True)["salary"]
    share = salary.value_counts() / K
    parts = []
    for i in range(K):
        cfg = SavedRun(adult_cv / f"fold{i}", "test").config()
        valid = tabular.dls(cfg, torch.device("cpu")).valid_ds.items
        parts.append(list(valid.index))
        assert len(valid) == json.loads((adult_cv / f"fold{i}" / "summary.json").read_text())["items_valid"]
        counts = salary[valid.index].value_counts()
        assert all(abs(counts[c] - share[c]) <= 1 for c in share.index), (i, counts.to_dict(), share.to_dict())
    assert_partition(parts, ROWS)


@pytest.mark.slow
def test_runs_and_report_show_a_cross_validation(adult_cv):
    r = run_fxp("runs", str(adult_cv.parent), "--json", cwd=adult_cv.parent)
    assert r.returncode == 0, r
    (row,) = json.loads(r.stdout)
    assert row["status"] == "completed" and row["best"] == pytest.approx(
        json.loads((adult_cv / "cv.json").read_text())["best_metrics"]["accuracy"]["mean"])
    r = run_fxp("report", str(adult_cv), cwd=adult_cv.parent)
    assert r.returncode == 0, r
    page = (adult_cv / "report.html").read_text()
    assert "mean ± std over the 5 completed folds" in page and "fold4" in page and "<h2>Curves: " in page


def stopped_in_fold_2(cwd: Path, stop: str, *args: str) -> Path:
    """The cv folder of `fxp train ARGS` (3 folds of 2 epochs) stopped during fold 2: by Ctrl-C after its first epoch
    (in this process), or by SIGKILL once its first checkpoint is there (a forked child, as tests/test_kill.py)."""
    if stop == "ctrl-c":
        with interrupt_after(5):  # fold0: 2 epochs, fold1: 2, fold2: its first
            r = run_fxp("train", *args, cwd=cwd)
        assert r.returncode == 130, r
        assert f"after fold2's stage 1 epoch 1 is kept; go on with: fxp resume {cv_folder(cwd)}" in r.err_lines[-1], r
        return cv_folder(cwd)
    pid = forked(cwd, "train", *args)
    appeared(cwd, "fold2/checkpoints/last.json")
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return cv_folder(cwd)


@pytest.mark.slow
@pytest.mark.parametrize("stop, status", [("ctrl-c", "interrupted"), ("kill", "killed")])
def test_a_cross_validation_stopped_in_fold_2_is_finished_by_resume_on_the_same_folds(tmp_path, stop, status):
    root = adult_sample(tmp_path / "adult", 300)
    folder = stopped_in_fold_2(tmp_path, stop, "task=adult", f"data.path={root}", "trainer.folds=3", "trainer.epochs=2",
                               "trainer.plots=false")
    assert [read_run(folder / f, folder)["status"] for f in cv.members(3)] == ["completed", "completed", status]
    assert read_run(folder, folder.parent)["status"] == status
    drawn = (folder / "folds.json").read_bytes()
    before = {f: (folder / f / "metrics.csv").read_text() for f in ("fold0", "fold1")}

    r = run_fxp("resume", str(folder), cwd=tmp_path)
    assert r.returncode == 0, r
    assert "cross-validation resumed: 2 of 3 folds completed" in r.stdout, r
    assert (folder / "folds.json").read_bytes() == drawn
    summaries = [json.loads((folder / f"fold{i}" / "summary.json").read_text()) for i in range(3)]
    assert [s["status"] for s in summaries] == ["completed"] * 3
    assert all((folder / f / "metrics.csv").read_text() == text for f, text in before.items())
    assert [x["status"] for x in summaries[2]["resumes"]] == [status] and summaries[2]["epochs"] == 2
    assert "resumes" not in summaries[0] and "resumes" not in summaries[1]
    assert json.loads((folder / "cv.json").read_text())["metrics"]["accuracy"]["n"] == 3
    assert json.loads((folder / "summary.json").read_text())["status"] == "completed"


@pytest.mark.slow
def test_a_sweep_of_cross_validations_with_joblib_compares_their_means(tmp_path):
    """joblib runs each job in a worker process it starts (loky's: a fresh interpreter each): each job a cv folder,
    sweep.csv its mean. The sweep itself runs in this process (its start is not what is tested); its workers are
    stopped after it, as the command's exit would stop them."""
    from joblib.externals.loky import get_reusable_executor

    root = adult_sample(tmp_path / "adult", 200)
    sweep = tmp_path / "sweep"
    try:
        r = run_fxp("train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "task=adult",
                    f"data.path={root}", "trainer.folds=2", "trainer.epochs=1", "trainer.lr=1e-3,1e-2",
                    "trainer.plots=false", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    finally:
        get_reusable_executor().shutdown(wait=True)  # workers started with this test's environment and folder
    assert r.returncode == 0, r
    with open(sweep / "sweep.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["status"] for row in rows] == ["completed", "completed"]
    for row in rows:
        job = sweep / row["job"]
        assert cv.is_cv(job) and [p.name for p in sorted(job.glob("fold?"))] == ["fold0", "fold1"]
        best = [json.loads((job / f / "summary.json").read_text())["best_metrics"]["accuracy"] for f in cv.members(2)]
        assert float(row["best_accuracy"]) == pytest.approx(sum(best) / 2)
    best = json.loads((sweep / "best.json").read_text())
    assert best["value"] == pytest.approx(max(float(row["best_accuracy"]) for row in rows))
