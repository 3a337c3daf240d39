"""Image regression end to end on targets derived from real data: the Oxford-IIIT pet photos and their trimaps.

No keypoint set is available offline, so each pet (cropped to its trimap's pet box) is pasted at a random size and
place on a grey 64 px canvas: the point is the centroid of its pet pixels (a biwi-style CSV of file, x, y) and the
scalar is the share of pet pixels in the canvas. Floors are the valid MSE of predicting the training mean, computed
here from the same split: a pipeline that mixes up images and targets cannot beat it.
Runs are tiny (small CNN from scratch, 8 epochs): about 10-20 s each on a free 2-core CPU.
"""
import json

import numpy as np
import pandas as pd
import pytest

from conftest import assert_one_line_error, metrics_rows, need_data, newest_run, run_fxp, summary

TINY = ("model=small_cnn", "trainer=default", "task.size=64", "trainer.bs=16", "task.aug=null")
PX = 64


def pet_canvases(dest, k: int = 4, seed: int = 0) -> pd.DataFrame:
    "k canvases per pet photo; points.csv rows: file, x, y (pixels of the pet-pixel centroid), pet_share."
    from PIL import Image

    src, rng, rows = need_data("oxford-iiit-pet"), np.random.default_rng(seed), []
    (dest / "images").mkdir(parents=True)
    for f in sorted((src / "images").glob("*.jpg")):
        im, tri = Image.open(f).convert("RGB"), Image.open(src / "annotations" / "trimaps" / f"{f.stem}.png")
        box = Image.fromarray((np.asarray(tri) == 1).astype(np.uint8)).getbbox()  # trimap 1 = pet
        im, tri = im.crop(box), tri.crop(box)
        for j in range(k):
            r = int(rng.integers(20, 57)) / max(im.size)
            w, h = max(1, round(im.width * r)), max(1, round(im.height * r))
            left, top = int(rng.integers(0, PX - w + 1)), int(rng.integers(0, PX - h + 1))
            canvas = Image.new("RGB", (PX, PX), (128, 128, 128))
            canvas.paste(im.resize((w, h)), (left, top))
            ys, xs = (np.asarray(tri.resize((w, h), Image.NEAREST)) == 1).nonzero()
            canvas.save(dest / "images" / f"{f.stem}_{j}.png")
            rows.append((f"images/{f.stem}_{j}.png", left + xs.mean() + 0.5, top + ys.mean() + 0.5, len(xs) / PX ** 2))
    df = pd.DataFrame(rows, columns=["file", "x", "y", "pet_share"])
    df.to_csv(dest / "points.csv", index=False)
    return df


def mean_baseline(df: pd.DataFrame, cols: list, scale: float = 1.0) -> float:
    "Valid MSE of predicting the train mean, with the task's split (valid_pct 0.2, seed 42); values divided by scale."
    from fastai.data.transforms import RandomSplitter

    train, valid = RandomSplitter(0.2, seed=42)(df)
    y = df[cols].to_numpy() / scale
    return float(((y[valid] - y[train].mean(0)) ** 2).mean())


@pytest.fixture(scope="module")
def canvases(tmp_path_factory):
    root = tmp_path_factory.mktemp("pets_regression")
    return root, pet_canvases(root)


@pytest.fixture(scope="module")
def point_run(canvases):
    root, _ = canvases
    r = run_fxp("train", "task=biwi", f"data.path={root}", "task.labels=points.csv", "task.folder=null", *TINY,
                "task.size=32", "trainer.lr=3e-3", "trainer.epochs=8", cwd=root)  # 32 px: the CNN sees the borders
    assert r.returncode == 0, r
    return newest_run(root)


@pytest.mark.slow
def test_points_beat_the_mean_and_plot(point_run, canvases):
    "The centroid in [-1, 1] coordinates: clearly below the train-mean baseline (reached ~0.51 of it)."
    _, df = canvases
    s = summary(point_run)
    assert s["status"] == "completed" and (s["items_train"], s["items_valid"]) == (192, 48)
    base = mean_baseline(df.assign(x=df.x / PX * 2 - 1, y=df.y / PX * 2 - 1), ["x", "y"])
    assert s["baselines"]["mse"]["value"] == pytest.approx(base, rel=1e-3)  # the kind's own baseline agrees
    assert s["best_metrics"]["mse"] < 0.75 * base, (s["best_metrics"], base)
    assert list(metrics_rows(point_run)[0]) == ["stage", "epoch", "train_loss", "valid_loss", "mse", "mae", "lr",
                                                "time", "data_s", "step_s"]
    assert (point_run / "plots" / "predicted_points.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_predict_prints_x_y_in_pixels(point_run, canvases, tmp_path):
    root, df = canvases
    files = [root / f for f in df.file[:6]]  # 64 px canvases, the model saw them at 32 px
    r = run_fxp("predict", point_run, *files, "--json", cwd=tmp_path)
    assert r.returncode == 0, r
    rows = json.loads(r.stdout)
    assert [row["input"] for row in rows] == [str(f) for f in files]
    for row in rows:
        assert set(row) == {"input", "x", "y"} and 0 <= row["x"] <= PX and 0 <= row["y"] <= PX
    r = run_fxp("predict", point_run, files[0], cwd=tmp_path)
    assert r.returncode == 0 and f"{rows[0]['x']}" in r.stdout, r


@pytest.mark.slow
def test_csv_regression_pet_share(canvases):
    "One scalar (share of pet pixels): clearly below the train-mean baseline (reached ~0.36 of it), mse/mae/rmse."
    root, df = canvases
    r = run_fxp("train", "task=csv_regression", f"data.path={root}", "task.labels=points.csv",
                "task.y_cols=[pet_share]", *TINY, "trainer.epochs=6", cwd=root)
    assert r.returncode == 0, r
    run = newest_run(root)
    s, base = summary(run), mean_baseline(df, ["pet_share"])
    assert s["best_metrics"]["mse"] < 0.6 * base, (s["best_metrics"], base)
    assert list(metrics_rows(run)[0]) == ["stage", "epoch", "train_loss", "valid_loss", "mse", "mae", "rmse", "lr",
                                          "time", "data_s", "step_s"]
    assert s["final_metrics"]["rmse"] == pytest.approx(s["final_metrics"]["mse"] ** 0.5, rel=1e-3)
    r = run_fxp("predict", run, root / df.file[0], "--json", cwd=root)
    assert r.returncode == 0, r
    (row,) = json.loads(r.stdout)
    assert set(row) == {"input", "pet_share"} and -1 < row["pet_share"] < 2


def test_a_point_outside_its_image_is_one_line(tmp_path):
    src = need_data("oxford-iiit-pet") / "images"
    names = sorted(p.name for p in src.glob("*.jpg"))[:6]
    df = pd.DataFrame({"file": names, "x": 10.0, "y": 10.0})
    df.loc[3, "x"] = 5000.0
    df.to_csv(tmp_path / "points.csv", index=False)
    r = run_fxp("train", "task=biwi", f"data.path={src.parent}", f"task.labels={tmp_path / 'points.csv'}",
                "task.folder=images", *TINY, cwd=tmp_path)
    assert_one_line_error(r, "points.csv", names[3], "outside")


def test_log_target_needs_positive_values(tmp_path):
    src = need_data("oxford-iiit-pet") / "images"
    names = sorted(p.name for p in src.glob("*.jpg"))[:6]
    pd.DataFrame({"file": names, "v": [1.0, 2.0, 0.0, 3.0, 4.0, 5.0]}).to_csv(tmp_path / "v.csv", index=False)
    r = run_fxp("train", "task=csv_regression", f"data.path={src.parent}", f"task.labels={tmp_path / 'v.csv'}",
                "task.folder=images", "task.log_target=true", *TINY, cwd=tmp_path)
    assert_one_line_error(r, "log_target", "v.csv")
