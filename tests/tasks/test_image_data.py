"""Data the image kinds accept and what they show, on real sets fxp had not seen (issue 16 items 5, 6, 7, 10, 11).

- Oxford-IIIT Pet trimaps (JPEG photos, PNG masks, pixel values 1 pet / 2 background / 3 border) train with the
  segmentation kind as they lie (task=pets_trimaps: task.label_ext, task.codes as a list); the floor is the valid
  share of the most frequent non-border class (always predicting background scores it).
- dlib face landmarks a few pixels off the frame (faces/): task.points_outside=error|clip|drop.
- `fxp predict RUN labels.csv` on an image run says what the kind takes.
- The plots: a legend of the codes in masks.png, predicted_points.png sized to the images with their file names
  (figures are caught as fxp.plots.save writes them, conftest.Figures), every PNG an image kind writes opens.
- The majority-label baseline of image classification (summary.json's `baselines`).
The runs those tests share read the same figures here: MNIST folders' (baseline, top losses, confusion matrix) in
test_classification.py, planet's top losses in test_multilabel.py.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from PIL import Image

from conftest import Figures, assert_one_line_error, need_data, newest_run, run_fxp, summary
from fxp import config
from fxp.errors import ConfigError, FxpError

SEG_TINY = ["model=unet_small", "model.pretrained=false", "trainer=default", "trainer.bs=8", "task.size=64"]


def composed(*overrides):
    with initialize_config_module("fxp.conf", version_base="1.3"):
        return config.validate(compose("config", overrides=list(overrides)))


def legend(fig) -> list[str]:
    "The texts of the figure-level legends."
    return [t.get_text() for lg in fig.legends for t in lg.get_texts()]


def titles(fig) -> list[str]:
    "The titles of the visible axes."
    return [ax.get_title() for ax in fig.axes if ax.get_visible()]


def ticks(fig) -> list[str]:
    "The y tick labels of the first axes."
    return [t.get_text() for t in fig.axes[0].get_yticklabels()]


def open_png(path: Path) -> tuple[int, int]:
    "The size of a PNG that opens whole (not only its magic bytes)."
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG"
        return im.size


# --- item 5: masks with another extension than their images (Oxford-IIIT Pet trimaps) ---------------------------


def pets_valid_floor(root: Path) -> float:
    "The valid share of the most frequent non-border class, with the kind's split (valid_pct 0.2, seed 42)."
    from fastai.data.transforms import RandomSplitter

    from fxp.data import image_files

    files = image_files(root / "images")
    _, valid = RandomSplitter(0.2, seed=42)(files)
    counts = sum(np.bincount(np.asarray(Image.open(root / "annotations" / "trimaps" / f"{files[i].stem}.png")).ravel(),
                             minlength=4) for i in valid)
    counts[3] = 0  # border: left out of pixel_accuracy (task.void)
    return counts.max() / counts.sum()


@pytest.fixture(scope="module")
def trimaps_run(tmp_path_factory):
    """8 epochs of a small U-Net from scratch at 24 px, batches of 4, on the 60 pets as they lie: pixel_accuracy
    0.818, 0.805, 0.806, 0.816, 0.828 (seeds 42, 1, 2, 3, 4) against the majority class's 0.646 + 0.1 and the kind's
    baseline (each pixel's most common training class) 0.773, in about 4 CPU-s (at 32 px 0.800, 0.797, 0.806 in 5;
    15 epochs of 8 at 64 px took 19 and reached 0.777)."""
    cwd, root = tmp_path_factory.mktemp("trimaps"), need_data("oxford-iiit-pet")
    with pytest.MonkeyPatch.context() as mp:
        figures = Figures(mp)
        r = run_fxp("train", "task=pets_trimaps", f"data.path={root}", *SEG_TINY[:3], "task.size=24", "trainer.bs=4",
                    "trainer.epochs=8", "trainer.lr=3e-3", cwd=cwd)
    assert r.returncode == 0, r
    return newest_run(cwd), root, figures.seen


@pytest.mark.slow
def test_pet_trimaps_train_with_the_segmentation_kind(trimaps_run):
    run, root, _ = trimaps_run
    s = summary(run)
    assert s["status"] == "completed" and (s["items_train"], s["items_valid"]) == (48, 12)
    floor = pets_valid_floor(root)
    assert 0.5 < floor < 0.75  # background
    assert s["final_metrics"]["pixel_accuracy"] > floor + 0.1, (s["final_metrics"], floor)
    # above where pets tend to lie too (a mask misaligned with its photo could teach that much)
    assert s["final_metrics"]["pixel_accuracy"] > s["baselines"]["pixel_accuracy"]["value"], s


def test_trimaps_load_as_jpeg_photos_with_png_masks():
    from fxp.tasks import segmentation

    cfg = composed("task=pets_trimaps", f"data.path={need_data('oxford-iiit-pet')}", *SEG_TINY)
    dls = segmentation.dls(cfg, "cpu")
    assert list(segmentation._codes(dls)) == ["unused", "pet", "background", "border"]
    x, y = dls.one_batch()
    assert x.shape == (8, 3, 64, 64) and y.shape == (8, 64, 64)
    assert set(y.unique().tolist()) <= {1, 2, 3}
    f = dls.valid_ds.items[0]
    assert f.suffix == ".jpg" and segmentation.LabelFile(f.parent.parent / "annotations/trimaps", "", "png")(f) \
        == f.parent.parent / "annotations" / "trimaps" / f"{f.stem}.png"


def test_masks_of_another_extension_name_the_key(tmp_path):
    "Without task.label_ext the mask path takes the image's suffix: the line says which extension is there."
    r = run_fxp("train", "task=pets_trimaps", f"data.path={need_data('oxford-iiit-pet')}", "task.label_ext=null",
                *SEG_TINY, cwd=tmp_path)
    assert_one_line_error(r, "no mask for", ".png is there", "task.label_ext=.png")


def test_old_label_files_unpickle_with_the_image_suffix():
    "A LabelFile pickled before task.label_ext (no `ext` attribute) keeps giving labels/x_P<image suffix>."
    from fxp.tasks.segmentation import LabelFile

    old = LabelFile.__new__(LabelFile)
    old.__dict__.update(folder=Path("labels"), suffix="_P")
    assert old(Path("images/a.png")) == Path("labels/a_P.png")


@pytest.mark.parametrize("codes, mentions", [
    ("[]", ["task.codes=[]", "name each class"]),
    ("[pet,'']", ["task.codes="]),
])
def test_bad_codes_lists(codes, mentions):
    with pytest.raises(ConfigError) as e:
        composed("task=pets_trimaps", f"task.codes={codes}")
    assert all(m in str(e.value) for m in mentions), e.value


def test_a_codes_list_too_short_for_the_masks_names_the_key(tmp_path):
    from fxp.tasks import segmentation

    cfg = composed("task=pets_trimaps", f"data.path={need_data('oxford-iiit-pet')}", "task.codes=[a,b,c]",
                   "task.void=null", *SEG_TINY)
    with pytest.raises(FxpError, match=r"has value 3 but task.codes lists only 3 codes .*name them all in task.codes"):
        segmentation.dls(cfg, "cpu")


@pytest.mark.slow
def test_masks_png_has_a_legend_of_the_codes_it_shows(trimaps_run):
    run, _, figures = trimaps_run
    open_png(run / "plots" / "masks.png")
    texts, names = legend(figures["masks.png"]), titles(figures["masks.png"])
    assert "background" in texts and "border (void)" in texts and set(texts) <= {"unused", "pet", "background",
                                                                                     "border (void)"}
    assert sum(t == "true mask" for t in names) == 4 and any(t.endswith(".jpg") for t in names)


# --- item 6: points outside their image (dlib landmarks a few pixels off the frame) --------------------------------

LANDMARKS = "[" + ",".join(map(str, range(1, 137))) + "]"  # part_0_x .. part_67_y
OFF_FRAME = {"137341995_e7c48e9a75.jpg", "1383023626_8a49e4879a.jpg", "529447797_0f9d2fb756.jpg"}
FACES_TINY = ["task=biwi", "task.labels=face_landmarks.csv", "task.folder=null", f"task.y_cols={LANDMARKS}",
              "model=small_cnn", "trainer=default", "task.size=64", "trainer.bs=16"]


def face_items(*overrides):
    from fxp.data import data_path
    from fxp.tasks import regression

    cfg = composed(f"data.path={need_data('faces')}", *FACES_TINY, *overrides)
    return regression._items(cfg.task, data_path(cfg), False)


def test_points_outside_are_an_error_by_default_naming_the_choice(tmp_path):
    r = run_fxp("train", f"data.path={need_data('faces')}", *FACES_TINY, cwd=tmp_path)
    line = assert_one_line_error(r, "face_landmarks.csv", "outside", "(3 rows in all)", "task.points_outside=clip",
                                 "drop")
    assert any(name in line for name in OFF_FRAME), line


def test_points_outside_clipped_onto_the_border(capsys):
    from PIL import Image

    df, files, ys, _ = face_items("task.points_outside=clip")
    assert len(files) == 56 and "3 of 56 rows" in capsys.readouterr().out
    for f, y in zip(files, ys):
        w, h = Image.open(f).size
        pts = y.reshape(-1, 2)
        assert (pts >= 0).all() and (pts[:, 0] <= w).all() and (pts[:, 1] <= h).all(), f
    i = [f.name for f in files].index("137341995_e7c48e9a75.jpg")
    assert ys[i].reshape(-1, 2).min() == 0  # x = -4 clipped to the left edge


def test_points_outside_drop_their_rows(capsys):
    df, files, ys, _ = face_items("task.points_outside=drop")
    assert len(files) == len(df) == len(ys) == 53 and not OFF_FRAME & {f.name for f in files}
    out = capsys.readouterr().out
    assert "dropped (task.points_outside=drop)" in out and all(name in out for name in OFF_FRAME)


def test_points_outside_takes_error_clip_or_drop():
    with pytest.raises(ConfigError, match="task.points_outside='ignore' is not valid; choose from: error, clip, drop"):
        composed("task=biwi", "task.points_outside=ignore")


# --- item 10: predicted_points.png sized to the images, titled with their file names -------------------------------


@pytest.fixture(scope="module")
def faces_run(tmp_path_factory):
    "68 landmarks (off-frame ones clipped) on the 56 faces: a small CNN, one epoch (what is read is the plot)."
    return run_seeing_figures(tmp_path_factory.mktemp("faces"), f"data.path={need_data('faces')}", *FACES_TINY,
                              "task.points_outside=clip", "trainer.epochs=1")


def run_seeing_figures(cwd, *overrides):
    "A completed `fxp train` run in `cwd`, and the figures it drew (`Figures`)."
    with pytest.MonkeyPatch.context() as mp:
        figures = Figures(mp)
        r = run_fxp("train", *overrides, cwd=cwd)
    assert r.returncode == 0, r
    return newest_run(cwd), figures.seen


@pytest.mark.slow
def test_faces_with_points_clipped_train_and_plot_nine_named_panels(faces_run):
    run, figures = faces_run
    s = summary(run)
    assert s["status"] == "completed" and s["items_train"] + s["items_valid"] == 56
    open_png(run / "plots" / "predicted_points.png")
    fig = figures["predicted_points.png"]
    assert legend(fig) == ["true", "predicted"] and len(titles(fig)) == 9
    assert all(t.split("\n")[0].endswith(".jpg") and "mse" in t for t in titles(fig)), titles(fig)


@pytest.mark.slow
def test_predicted_points_grid_fits_two_valid_images(tmp_path):
    "10 faces, 2 of them valid: two panels (not a 3x3 grid of 7 blank ones), each named."
    import pandas as pd

    root = need_data("faces")
    df = pd.read_csv(root / "face_landmarks.csv")
    df[~df.image_name.isin(OFF_FRAME)].head(10).iloc[:, :3].to_csv(tmp_path / "ten.csv", index=False)
    with pytest.MonkeyPatch.context() as mp:
        figures = Figures(mp)
        r = run_fxp("train", "task=biwi", f"data.path={root}", f"task.labels={tmp_path / 'ten.csv'}",
                    "task.folder=null", *FACES_TINY[4:], "trainer.bs=4", "trainer.epochs=1", cwd=tmp_path)
    assert r.returncode == 0, r
    valid = {Path(f).name for f in df.image_name.head(10)}
    names = titles(figures.seen["predicted_points.png"])
    assert len(names) == 2 and all(t.split("\n")[0] in valid for t in names), names
    assert open_png(newest_run(tmp_path) / "plots" / "predicted_points.png")[0] < 600  # two panels wide, not three


# --- item 7: `fxp predict RUN labels.csv` on an image run -----------------------------------------------------------


def test_predict_on_a_labelled_csv_says_what_an_image_run_takes(digits_run, tmp_path):
    csv = need_data("mnist_tiny") / "labels.csv"  # 1408 rows naming train/3/7463.png, ... beside it
    r = run_fxp("predict", digits_run, csv, cwd=tmp_path)
    line = assert_one_line_error(r, "labels.csv is a CSV file, not an image", "lists 1408 image files",
                                 "takes image files or folders", "does not score labels",
                                 f"fxp val RUN_DIR data.path={csv.parent} task.source=csv task.csv=labels.csv")
    assert "skip_bad" not in line and "corrupt" not in line and "train" not in line.split("RUN_DIR")[1], line


def test_predict_on_a_corrupt_image_names_no_train_time_key(digits_run, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    r = run_fxp("predict", digits_run, bad, cwd=tmp_path)
    line = assert_one_line_error(r, "unreadable or corrupt image", "broken.png", "image files or folders")
    assert "skip_bad" not in line, line


# --- item 11: the majority-label baseline of image classification ---------------------------------------------------


def test_digits_summary_has_the_majority_baseline(digits_run):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    y = load_digits().target
    train, valid = train_test_split(range(len(y)), test_size=0.2, random_state=42, stratify=y)  # the task's split
    majority = np.bincount(y[train]).argmax()
    base = summary(digits_run)["baselines"]
    assert base["accuracy"]["value"] == pytest.approx((y[valid] == majority).mean(), abs=1e-6)
    assert base["error_rate"]["value"] == pytest.approx(1 - base["accuracy"]["value"], abs=1e-6)


# --- item 10: the other plots of the image kinds -------------------------------------------------------------------


@pytest.mark.slow
def test_digits_confusion_matrix_has_every_class(digits_figures):
    "The in-memory digits' vocab is a plain list, which fastai's interpretation took for [vocabs]: a 1x1 matrix of 9."
    run, figures = digits_figures
    assert ticks(figures["confusion_matrix.png"]) == [str(d) for d in range(10)]
    open_png(run / "plots" / "confusion_matrix.png")


@pytest.mark.slow
def test_predicted_vs_true_names_the_log_scale_on_both_axes(tmp_path):
    with pytest.MonkeyPatch.context() as mp:
        figures = Figures(mp)
        r = run_fxp("train", "task=csv_regression", f"data.path={need_data('driving_sim_sample')}",
                    "task.labels=driving_log.csv", "task.y_cols=[speed]", "task.log_target=true", "model=small_cnn",
                    "trainer=default", "task.size=32", "trainer.bs=16", "trainer.epochs=1", cwd=tmp_path)
    assert r.returncode == 0, r
    open_png(newest_run(tmp_path) / "plots" / "predicted_vs_true.png")
    (ax,) = figures.seen["predicted_vs_true.png"].axes
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("true speed (log)", "predicted speed (log)")
    assert ax.get_title().startswith("valid speed: mse ") and ax.get_xlim() == ax.get_ylim()
