"""Single-label image classification end to end, on real data: digits (the embedded default), MNIST class
folders (with the majority-label baseline and the figures its plots draw), images listed in a CSV, Oxford pets by
filename regex; then `fxp predict` and `fxp lr-find`.

Each run is kept tiny (a few epochs); the floors were measured on a 2-core CPU with a margin below what the run
reached (noted at each test).
"""
import json

import pytest

from conftest import Figures, metrics_rows, mnist_subset, need_data, newest_run, run_fxp, subprocess_env, summary

pytestmark = pytest.mark.slow


def trained(cwd, *overrides):
    "Train with `overrides` in `cwd`; the completed run folder."
    r = run_fxp("train", *overrides, cwd=cwd)
    assert r.returncode == 0, r
    run = newest_run(cwd)
    assert summary(run)["status"] == "completed"
    return run


def final(run, metric="accuracy") -> float:
    return summary(run)["final_metrics"][metric]


def test_default_run_is_digits_and_reaches_95_percent(tmp_path):
    "`fxp train` with no arguments: digits, small CNN, CPU, well under a minute (reached 0.97-0.98 in ~6 s)."
    run = trained(tmp_path)
    s = summary(run)
    assert s["task"] == "digits" and s["overrides"] == [] and s["device"] == "cpu"
    assert final(run) >= 0.95
    assert s["wall_time_s"] < 60
    assert len(metrics_rows(run)) == 5  # trainer=default: 5 epochs


@pytest.fixture(scope="module")
def mnist_figures(tmp_path_factory):
    """MNIST 3s and 7s from class folders as they lie (709 train, 699 valid): the run and the figures it drew
    (conftest.Figures); reached 0.974, 0.974, 0.976 after 2 epochs (seeds 42, 1, 2)."""
    with pytest.MonkeyPatch.context() as mp:
        figures = Figures(mp)
        run = trained(tmp_path_factory.mktemp("mnist"), "task=mnist", f"data.path={need_data('mnist_tiny')}",
                      "trainer.epochs=2")
    return run, figures.seen


@pytest.fixture(scope="module")
def mnist_run(mnist_figures):
    return mnist_figures[0]


def test_mnist_folders_reach_95_percent(mnist_run):
    from fxp import saved

    assert saved.load(mnist_run / "model.pkl").input_size == (28, 28)  # task.size=null: predict resizes to it
    s = summary(mnist_run)
    assert final(mnist_run) >= 0.95
    assert (s["items_train"], s["items_valid"]) == (709, 699)  # train/ and valid/ folders, as in the data set
    for png in ("loss_curves", "confusion_matrix", "top_losses"):
        assert (mnist_run / "plots" / f"{png}.png").is_file()


def test_folders_summary_has_the_majority_baseline_and_readable_plots(mnist_figures):
    "The majority-label baseline of image classification; top_losses.png's panels named, the matrix's classes."
    from test_image_data import open_png, ticks, titles

    run, figures = mnist_figures
    root = need_data("mnist_tiny")
    counts = {split: {c: len(list((root / split / c).glob("*.png"))) for c in ("3", "7")}
              for split in ("train", "valid")}
    majority = max(counts["train"], key=counts["train"].get)  # 7 (363 of 709)
    s = summary(run)
    expected = counts["valid"][majority] / sum(counts["valid"].values())
    assert s["baselines"]["accuracy"]["value"] == pytest.approx(expected, abs=1e-6)
    assert s["final_metrics"]["accuracy"] > s["baselines"]["accuracy"]["value"] + 0.2
    for png in ("confusion_matrix", "top_losses"):
        open_png(run / "plots" / f"{png}.png")
    names = titles(figures["top_losses.png"])
    assert len(names) == 9 and all(t.split("\n")[0].endswith(".png") and "pred" in t and "true" in t for t in names), \
        names
    assert ticks(figures["confusion_matrix.png"]) == ["3", "7"]


def test_mnist_images_from_labels_csv(tmp_path, data):
    """Every other row of mnist_tiny's labels.csv (name,label; names like train/3/7463.png, relative to data.path), 20%
    random split: reached 0.936, 0.936, 0.936 over seeds 42, 1, 2 in half the time of all 1408 rows (0.964)."""
    import pandas as pd

    root = data("mnist_tiny")
    pd.read_csv(root / "labels.csv").iloc[::2].to_csv(tmp_path / "half.csv", index=False)
    run = trained(tmp_path, "task=csv_images", f"data.path={root}", f"task.csv={tmp_path / 'half.csv'}",
                  "model=small_cnn", "trainer=default", "task.size=28", "task.aug=null", "trainer.epochs=2",
                  "trainer.plots=false")
    s = summary(run)
    assert s["items_train"] + s["items_valid"] == 704 and 0.15 < s["items_valid"] / 704 < 0.25
    assert final(run) >= 0.90


def test_pets_breeds_by_filename_regex_beat_chance(tmp_path, data):
    """3 breeds, 60 photos, small CNN from scratch at 32 px, no plots: chance is 1/3 (reached 8/12, 8/12, 7/12 = 0.583,
    best valid loss 0.84, 0.87, 0.96 over seeds 42, 1, 2; at 64 px 7/12 each)."""
    run = trained(tmp_path, "task=pets", f"data.path={data('oxford-iiit-pet')}", "model=small_cnn", "trainer=default",
                  "task.size=32", "trainer.bs=8", "trainer.epochs=15", "trainer.lr=3e-3", "trainer.plots=false")
    s = summary(run)
    assert (s["items_train"], s["items_valid"]) == (48, 12)
    assert final(run) >= 0.5
    assert s["best_metrics"]["valid_loss"] < 1.0986  # below the cross-entropy of a uniform guess, ln 3


def test_csv_with_an_is_valid_column_and_pad_resize(tmp_path):
    "The split comes from the CSV's boolean column (not valid_pct); images padded to a square size."
    root = mnist_subset(tmp_path / "tiny", n=8)
    rows = [f"{f.relative_to(root)},{f.parent.name},{f.parts[-3] == 'valid'}" for f in sorted(root.rglob("*.png"))]
    (root / "list.csv").write_text("name,label,is_valid\n" + "\n".join(rows) + "\n")
    run = trained(tmp_path, "task=csv_images", f"data.path={root}", "task.csv=list.csv", "task.valid_col=is_valid",
                  "task.resize_method=pad", "task.pad_mode=zeros", "task.size=32", "task.aug=null",
                  "model=small_cnn", "trainer=default", "trainer.bs=4", "trainer.epochs=1", "trainer.plots=false")
    s = summary(run)
    assert (s["items_train"], s["items_valid"]) == (16, 16)


def test_small_validation_set_completes(tmp_path):
    root = mnist_subset(tmp_path / "tiny", n=8, splits=("train",))
    mnist_subset(root, n=2, splits=("valid",))  # 4 validation images
    r = run_fxp("train", "task=mnist", f"data.path={root}", "trainer.bs=4", "trainer.epochs=1", cwd=tmp_path)
    assert r.returncode == 0, r
    run = newest_run(tmp_path)
    assert summary(run)["status"] == "completed" and (run / "plots" / "top_losses.png").is_file()


# --- fxp predict --------------------------------------------------------------------------------------------


def known_digits(n: int = 2) -> list:
    "n validation images of each of mnist_tiny's classes, with their labels."
    root = need_data("mnist_tiny") / "valid"
    return [(f, cls) for cls in ("3", "7") for f in sorted((root / cls).glob("*.png"))[:n]]


def test_predict_prints_the_label(mnist_run, tmp_path):
    images = known_digits(1)
    env = {**subprocess_env(tmp_path), "COLUMNS": "400"}  # a wide table: one line per row, whatever the path
    r = run_fxp("predict", mnist_run, *(f for f, _ in images), cwd=tmp_path, env=env)
    assert r.returncode == 0, r
    rows = [ln for ln in r.stdout.splitlines() if ".png" in ln]
    assert len(rows) == len(images)
    for (f, label), row in zip(images, rows):
        cells = [c.strip() for c in row.strip("│┃| ").split("│")]
        assert cells[0] == str(f) and cells[1] == label, row
        assert 0.5 < float(cells[2]) <= 1


def test_predict_json(mnist_run, tmp_path):
    images = known_digits(3)
    test_dir = need_data("mnist_tiny") / "test"
    r = run_fxp("predict", mnist_run, *(f for f, _ in images), test_dir, "--json", cwd=tmp_path)
    assert r.returncode == 0, r
    rows = json.loads(r.stdout)
    assert len(rows) == len(images) + len(list(test_dir.glob("*.png")))
    for row in rows:
        assert {"label", "probability"} <= set(row)
        assert row["label"] in ("3", "7") and 0.5 <= row["probability"] <= 1
    assert [row["label"] for row in rows[:len(images)]] == [label for _, label in images]


# --- fxp lr-find --------------------------------------------------------------------------------------------


def test_lr_find_writes_its_plot_and_suggestions(tmp_path):
    r = run_fxp("lr-find", "trainer.bs=32", cwd=tmp_path)
    assert r.returncode == 0, r
    run = newest_run(tmp_path)
    png = run / "plots" / "lr_find.png"
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    s = summary(run)
    assert s["status"] == "completed"
    lrs = s["suggested_lrs"]
    assert {"valley", "slide", "steep", "minimum"} <= set(lrs)
    assert all(1e-7 < v < 10 for v in lrs.values()), lrs
    assert not (run / "model.pkl").exists()  # the LR finder trains nothing to keep


def test_predict_on_digits_images(digits_run, tmp_path):
    "The default task predicts image files too: scikit-learn digits written as 32x32 PNGs, one per class."
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    files = []
    for label in range(10):
        i = int(np.flatnonzero(d.target == label)[-1])
        img = Image.fromarray((d.images[i] * 255 / 16).astype(np.uint8)).resize((32, 32), Image.NEAREST)
        img.save(tmp_path / f"digit{label}.png")
        files.append(tmp_path / f"digit{label}.png")
    r = run_fxp("predict", digits_run, *files, "--json", cwd=tmp_path)
    assert r.returncode == 0, r
    labels = [row["label"] for row in json.loads(r.stdout)]
    assert sum(got == str(want) for want, got in enumerate(labels)) >= 8, labels
