"""Cleaning data from the top losses (lesson 2): `fxp clean RUN` lists the items the model gets most wrong, and the
next run leaves out (data.exclude) or relabels (data.relabel) the ones marked, never touching the files. One tiny
mnist run (160 images of mnist_tiny) is shared by the module."""
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from PIL import Image

from conftest import assert_one_line_error, copy_exported, mnist_subset, newest_run, run_fxp, summary
from fxp.data import CLEAN_COLS, curate, item_key


def listing(folder) -> dict:
    "Every file under `folder` with its size and modification time: what a run must not change."
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def mnist(tmp_path_factory) -> Path:
    "40 mnist_tiny images of each class and split: the data the module's runs read and clean."
    return mnist_subset(tmp_path_factory.mktemp("mnist"), n=40)


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory, mnist):
    """One epoch at bs=8 (10 steps): the worst item's loss 1.04-1.32 at trainer.seed=42, 1, 2, the median 0.26-0.32,
    the 12 lowest 0.09-0.17 or less (a listing of the best items is caught by the floor of 0.5)."""
    cwd = tmp_path_factory.mktemp("clean")
    r = run_fxp("train", "task=mnist", f"data.path={mnist}", "trainer.epochs=1", "trainer.bs=8", cwd=cwd)
    assert r.returncode == 0, r
    return newest_run(cwd)


@pytest.fixture(scope="module")
def cleaned(mnist_run):
    r = run_fxp("clean", mnist_run, "--top", "12", cwd=mnist_run.parent)
    assert r.returncode == 0, r
    return pd.read_csv(mnist_run / "clean" / "top_losses.csv", dtype=str, keep_default_na=False)


@pytest.mark.slow  # trains (a sweep or a run)
def test_clean_lists_the_top_losses_with_an_empty_action(mnist, mnist_run, cleaned):
    assert tuple(cleaned.columns) == CLEAN_COLS and len(cleaned) == 12
    losses = cleaned.loss.astype(float)
    assert list(losses) == sorted(losses, reverse=True) and losses.iloc[0] > 0.5  # the worst first
    assert set(cleaned.split) <= {"train", "valid"} and (cleaned.action == "").all()
    assert all((mnist / f).is_file() for f in cleaned.file)  # paths under data.path
    assert ((cleaned.label != cleaned.predicted) | (cleaned.probability.astype(float) < 0.9)).all()
    with Image.open(mnist_run / "clean" / "top_losses.png") as im:
        assert im.width > 1000  # five columns of images
    page = (mnist_run / "clean" / "top_losses.html").read_text()  # each image file beside its row
    assert page.count("<img") == 12 and (mnist / cleaned.file[0]).as_uri() in page
    assert (mnist_run / "plots" / "batch.png").is_file()  # every run draws its batch


@pytest.mark.slow  # trains (a sweep or a run)
def test_marked_items_are_left_out_or_relabelled_by_key(mnist, cleaned, tmp_path):
    from fastai.data.transforms import parent_label

    root = mnist
    marked = cleaned.copy()
    other = {"3": "7", "7": "3"}[Path(cleaned.file[1]).parent.name]  # a class of the data (another is refused)
    marked.loc[0, "action"], marked.loc[1, "action"], marked.loc[2, "action"] = "delete", f"relabel:{other}", "keep"
    marked.to_csv(tmp_path / "marked.csv", index=False)
    files = [root / f for f in cleaned.file]
    files += [f for c in ("3", "7") for f in sorted((root / "valid" / c).glob("*.png"))[:1] if f not in files]
    data = SimpleNamespace(exclude=str(tmp_path / "marked.csv"), relabel=str(tmp_path / "marked.csv"))
    items, get_y, info = curate(files, parent_label, data, item_key(root))
    assert items == files[1:] and info["excluded"] == 1 and info["relabelled"] == 1
    assert get_y(files[1]) == other and get_y(files[2]) == files[2].parent.name
    unmarked = SimpleNamespace(exclude=str(tmp_path / "all.csv"), relabel=None)
    cleaned.to_csv(tmp_path / "all.csv", index=False)
    listed = files[:len(cleaned)]
    assert curate(listed, parent_label, unmarked, item_key(root))[0] == []  # no action set: every listed item


@pytest.mark.slow
def test_the_next_run_trains_on_fewer_items_and_the_files_stay(mnist, mnist_run, cleaned, tmp_path):
    before = listing(mnist)
    r = run_fxp("train", "task=mnist", f"data.path={mnist}", "trainer.epochs=1", "trainer.bs=8", "trainer.plots=false",
                f"data.exclude={mnist_run / 'clean' / 'top_losses.csv'}", cwd=tmp_path)
    assert r.returncode == 0, r
    s, old = summary(newest_run(tmp_path)), summary(mnist_run)
    assert s["excluded"] == 12 and s["items_train"] + s["items_valid"] == old["items_train"] + old["items_valid"] - 12
    assert listing(mnist) == before


@pytest.mark.parametrize("action,says", [("remove", "'remove' is not keep, delete or relabel:LABEL"),
                                         ("keep", "no row of the file is marked delete")])
@pytest.mark.slow  # trains (a sweep or a run)
def test_a_bad_list_is_one_line(mnist, cleaned, tmp_path, action, says):
    bad = cleaned.assign(action=action)
    bad.to_csv(tmp_path / "bad.csv", index=False)
    r = run_fxp("train", "task=mnist", f"data.path={mnist}", f"data.exclude={tmp_path / 'bad.csv'}", cwd=tmp_path)
    assert_one_line_error(r, says)


@pytest.mark.slow  # trains (a sweep or a run)
def test_a_list_of_other_data_and_other_kinds_are_one_line(mnist, cleaned, tmp_path):
    cleaned.assign(file="elsewhere/" + cleaned.file).to_csv(tmp_path / "other.csv", index=False)
    r = run_fxp("train", "task=mnist", f"data.path={mnist}", f"data.exclude={tmp_path / 'other.csv'}", cwd=tmp_path)
    assert_one_line_error(r, "none of its 12 files is an item of this data")
    assert_one_line_error(run_fxp("train", f"data.relabel={tmp_path / 'other.csv'}", cwd=tmp_path), "digits")
    assert_one_line_error(run_fxp("clean", tmp_path, cwd=tmp_path), "no model.pkl")


@pytest.mark.parametrize("run, says", [
    ("classification-digits", "the digits are in memory, not image files"),
    ("tabular", "fxp clean lists the items of audio and classification runs, not of tabular")])
def test_the_kind_says_whether_a_run_can_be_cleaned(tmp_path, run, says):
    "fxp clean asks the run's kind (its not_cleanable), before it loads the model; a kind without one takes no lists."
    r = run_fxp("clean", copy_exported(tmp_path, run) / run, cwd=tmp_path)
    assert_one_line_error(r, "cannot be cleaned", says)
    assert not (tmp_path / run / "clean").exists()


@pytest.mark.parametrize("overrides, says", [([], "the digits are in memory, not image files (task.source=digits)"),
                                             (["task=adult"], "not of tabular runs")])
def test_a_list_for_a_run_that_cannot_take_it_is_one_line(tmp_path, overrides, says):
    (tmp_path / "list.csv").write_text(",".join(CLEAN_COLS) + "\n")
    r = run_fxp("train", *overrides, f"data.exclude={tmp_path / 'list.csv'}", cwd=tmp_path)
    assert_one_line_error(r, "data.exclude: this task takes no fxp clean list", says)
