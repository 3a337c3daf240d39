"""`fxp check`: the pre-flight through the real training path, the data doctor (files, classes, tables, texts, pairs),
--overfit, the doctor's warnings before `fxp train`'s first epoch; and every registered kind passing it on a cut
copy of its shared sample. In-process, on tiny data in tmp_path."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import AUDIO_TINY, assert_one_line_error, fsdd_subset, mnist_subset, need_data, run_fxp
from fxp import dispatch


def check_dir(cwd: Path) -> Path:
    "The one check folder under cwd/outputs/check/<task>/."
    found = list((cwd / "outputs" / "check").glob("*/*/check.json"))
    assert len(found) == 1, found
    return found[0].parent


def written(cwd: Path) -> dict:
    return json.loads((check_dir(cwd) / "check.json").read_text())


def pieces(out: dict) -> dict:
    return {p["piece"]: p for p in out["pieces"]}


def test_check_runs_each_piece_and_writes_only_its_folder(tmp_path):
    data = mnist_subset(tmp_path / "mnist", n=12)
    r = run_fxp("check", "task=mnist", f"data.path={data}", "trainer.bs=8", "--min-per-class=2", "trainer.plots=false",
                cwd=tmp_path)
    assert r.returncode == 0, r
    out = written(tmp_path)
    ran = pieces(out)
    for piece in ("data (train)", "data doctor (train)", "learner (train)", "train batch (train)",
                  "valid batch (train)", "export", "reload", "predict 2 items"):
        assert ran[piece]["ok"] is True, (piece, out["pieces"])
    assert ran["predict 2 items"]["detail"] == "output (2, 2)"
    assert out["counts"]["train"]["classes"] == {"train": {"3": 12, "7": 12}, "valid": {"3": 12, "7": 12}}
    assert out["passed"] and (check_dir(tmp_path) / "report.txt").read_text().count("ok ") >= 8
    assert not (tmp_path / "outputs" / "mnist").exists()  # no run folder: fxp runs lists none
    assert "passed" in r.stdout


def bad_copy(tmp_path: Path) -> Path:
    "mnist_subset with a train PNG copied into valid, a zero-byte PNG, and a class of one (new) image."
    from PIL import Image

    data = mnist_subset(tmp_path / "bad", n=12)
    shutil.copy(sorted((data / "train" / "3").glob("*.png"))[0], data / "valid" / "7" / "copied.png")
    (data / "train" / "7" / "empty.png").write_bytes(b"")
    (data / "train" / "5").mkdir()
    Image.new("L", (28, 28), 128).save(data / "train" / "5" / "one.png")
    return data


def test_the_doctor_names_a_copy_across_splits_an_empty_file_and_a_class_of_one(tmp_path):
    from PIL import Image

    data = bad_copy(tmp_path)
    Image.new("L", (280, 28), 200).save(data / "train" / "3" / "wide.png")  # 10:1 among 1:1 digits: a warning
    r = run_fxp("check", "--data", "task=mnist", f"data.path={data}", "task.size=28", "--min-per-class=5", cwd=tmp_path)
    assert r.returncode == 1, r
    assert "Traceback" not in r.stdout + r.stderr
    for path in ("valid/7/copied.png", "train/7/empty.png", "train/5/one.png"):
        assert path in r.stdout, (path, r.stdout)
    assert len(r.err_lines) == 1 and r.err_lines[0].startswith("fxp: check failed at the data doctor"), r
    levels = [f["level"] for f in written(tmp_path)["findings"]]
    assert levels.count("error") == 3, written(tmp_path)["findings"]
    wide = next(f for f in written(tmp_path)["findings"] if "median size" in f["what"])
    assert wide["level"] == "warning" and wide["items"] == ["train/3/wide.png (280x28)"], wide
    assert "learner (train)" not in pieces(written(tmp_path))  # --data builds no model


def test_train_warns_before_the_first_epoch_and_trainer_check_false_is_quiet(tmp_path):
    data = bad_copy(tmp_path)
    args = ("train", "task=mnist", f"data.path={data}", "data.skip_bad=true", "trainer.epochs=0", "trainer.bs=8",
            "trainer.plots=false")
    r = run_fxp(*args, cwd=tmp_path)
    warned = [line for line in r.err_lines if line.startswith("fxp: warning: data:")]
    assert any("valid/7/copied.png" in w for w in warned) and any("empty.png" in w for w in warned), r
    quiet = run_fxp(*args, "trainer.check=false", cwd=tmp_path)
    assert not [line for line in quiet.err_lines if "warning: data:" in line], quiet


@pytest.mark.parametrize("lr, passes", [("1e-2", True), ("1e-9", False)])
def test_overfit_passes_for_the_recipe_and_fails_for_a_tiny_lr(tmp_path, lr, passes):
    data = mnist_subset(tmp_path / "mnist", n=8)
    r = run_fxp("check", "--overfit", "--steps=20", "task=mnist", f"data.path={data}", "trainer.bs=16",
                f"trainer.lr={lr}", "--min-per-class=2", "trainer.plots=false", cwd=tmp_path)
    overfit = written(tmp_path)["overfit"] if passes else pieces(written(tmp_path))["overfit (train)"]
    if passes:
        assert r.returncode == 0, r
        assert overfit["last_loss"] <= 0.1 * overfit["first_loss"], overfit
    else:
        assert r.returncode == 1, r
        assert len(r.err_lines) == 1 and "overfit (train)" in r.err_lines[0] and "fell 0%" in r.err_lines[0], r
        assert "OverfitFailed" in (check_dir(tmp_path) / "check.log").read_text()  # the details, not on the console


def test_the_doctor_on_a_table_finds_the_leak_the_constant_and_the_missing_column(tmp_path):
    src = need_data("adult_sample") / "adult.csv"
    df = pd.read_csv(src).head(600)
    df["age"] = df["age"].astype(float)
    df.loc[:100, "age"] = None  # 17% missing
    df["fnlwgt"] = 1  # constant
    df["education-num"] = (df["salary"] == ">=50k").astype(int) * 10  # a column that is the target
    (tmp_path / "adult").mkdir()
    df.to_csv(tmp_path / "adult" / "adult.csv", index=False)
    r = run_fxp("check", "--data", "task=adult", f"data.path={tmp_path / 'adult'}", cwd=tmp_path)
    assert r.returncode == 1, r
    found = {f["what"]: f for f in written(tmp_path)["findings"]}
    leak = next(f for w, f in found.items() if "alone predict" in w)
    assert leak["items"] == ["education-num"] and leak["level"] == "error", found
    assert next(f for w, f in found.items() if "constant" in w)["items"] == ["fnlwgt"], found
    assert any(i.startswith("age (1") for i in next(f for w, f in found.items() if "missing" in w)["items"]), found


def test_the_doctor_on_pairs_names_users_only_in_valid(tmp_path):
    df = pd.read_csv(need_data("movie_lens_sample") / "ratings.csv")
    new = list(range(999_001, 999_021))  # 20 users of one rating each: about half land in valid only
    df = pd.concat([df, pd.DataFrame({"userId": new, "movieId": df.movieId[:20], "rating": 3.0, "timestamp": 0})])
    (tmp_path / "ml").mkdir()
    df.to_csv(tmp_path / "ml" / "ratings.csv", index=False)
    r = run_fxp("check", "--data", "task=movielens_sample", f"data.path={tmp_path / 'ml'}", "task.valid_pct=0.5",
                cwd=tmp_path)
    assert r.returncode == 0, r  # cold start is worth knowing, not an error
    users = [f for f in written(tmp_path)["findings"] if "only in valid" in f["what"] and "users" in f["what"]]
    assert users and set(int(u) for u in users[0]["items"]) <= set(new) and users[0]["count"] >= 3, users


@pytest.mark.slow  # the text kind's two steps, tokenizing: about 6 s
def test_the_doctor_on_texts_names_a_review_in_both_splits(tmp_path):
    df = pd.read_csv(need_data("imdb_sample") / "texts.csv").head(40)
    copy = df[~df.is_valid].iloc[:1].assign(is_valid=True)
    (tmp_path / "imdb").mkdir()
    pd.concat([df, copy]).to_csv(tmp_path / "imdb" / "texts.csv", index=False)
    r = run_fxp("check", "task=imdb", f"data.path={tmp_path / 'imdb'}", *TINY_TEXT, "trainer.plots=false",
                cwd=tmp_path)  # the classifier's
    # split is the second step's: --data sees the first (the language model's random split)
    found = [f for f in written(tmp_path)["findings"] if "also in train" in f["what"]]
    assert r.returncode == 1 and found and found[0]["count"] == 1, (r, written(tmp_path)["findings"])


TINY_TEXT = ("model=awd_lstm_tiny", "model.pretrained=false", "model.kwargs.config.emb_sz=16",
             "model.kwargs.config.n_hid=16", "task.max_vocab=500", "task.lm_seq_len=16", "task.seq_len=16",
             "trainer.bs=4", "task.drop_mult=0.3")


def _mnist(tmp: Path) -> tuple:
    return "task=mnist", f"data.path={mnist_subset(tmp / 'mnist', n=8)}", "trainer.bs=8"


def _planet(tmp: Path) -> tuple:
    src = need_data("planet_sample")
    dest = tmp / "planet"
    rows = pd.read_csv(src / "labels.csv").head(24)
    (dest / "train").mkdir(parents=True)
    for name in rows.iloc[:, 0]:
        for f in (src / "train").glob(f"{name}.*"):
            shutil.copy(f, dest / "train" / f.name)
    rows.to_csv(dest / "labels.csv", index=False)
    return ("task=planet", f"data.path={dest}", "model=small_cnn", "trainer=default", "task.size=32", "trainer.bs=4")


def _camvid(tmp: Path) -> tuple:
    return ("task=camvid", f"data.path={need_data('camvid_tiny')}", "model=unet_small", "model.pretrained=false",
            "task.size=[32,32]", "trainer=default", "trainer.bs=4")


def _faces(tmp: Path) -> tuple:
    return ("task=biwi", f"data.path={need_data('faces')}", "task.labels=face_landmarks.csv", "task.folder=null",
            "task.y_cols=[part_30_x,part_30_y]", "model=small_cnn", "trainer=default", "task.size=32", "trainer.bs=4",
            "task.aug=null")


def _wgan(tmp: Path) -> tuple:
    return ("task=wgan", f"data.path={mnist_subset(tmp / 'mnist', n=8, splits=('train',))}", "task.folder=train",
            "task.size=32", "model.net.n_features=8", "model.net.n_extra_layers=0", "trainer.bs=8", "task.n_crit=1")


def _imdb(tmp: Path) -> tuple:
    (tmp / "imdb").mkdir()
    df = pd.read_csv(need_data("imdb_sample") / "texts.csv")
    pd.concat([df[~df.is_valid].head(24), df[df.is_valid].head(12)]).to_csv(tmp / "imdb" / "texts.csv", index=False)
    return ("task=imdb", f"data.path={tmp / 'imdb'}", *TINY_TEXT)


def _adult(tmp: Path) -> tuple:
    (tmp / "adult").mkdir()
    pd.read_csv(need_data("adult_sample") / "adult.csv").head(400).to_csv(tmp / "adult" / "adult.csv", index=False)
    return "task=adult", f"data.path={tmp / 'adult'}", "model.kwargs.layers=[8]", "trainer.bs=16"


def _movielens(tmp: Path) -> tuple:
    return ("task=movielens_sample", f"data.path={need_data('movie_lens_sample')}", "model.kwargs.n_factors=4",
            "trainer.bs=64")


def _human_numbers(tmp: Path) -> tuple:
    return "task=human_numbers", "trainer.bs=8"


def _fsdd(tmp: Path) -> tuple:
    return ("task=fsdd", f"data.path={fsdd_subset(tmp / 'fsdd', per_class=3)}", *AUDIO_TINY, "trainer.bs=8")


# each kind's shared sample, cut small: the overrides of `fxp check` for it (a new kind adds its line here)
SAMPLES = {"classification": _mnist, "multilabel": _planet, "segmentation": _camvid, "regression": _faces,
           "gan": _wgan, "text": _imdb, "tabular": _adult, "collab": _movielens, "word_lm": _human_numbers,
           "audio": _fsdd}


# a check that trains for seconds is for the full suite only: text's steps through a language model and a classifier
# (3 CPU-s: it tokenizes twice and draws both steps' batches)
SLOW_CHECKS = {"text"}


@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.slow) if k in SLOW_CHECKS else k
                                  for k in dispatch.kinds()])
def test_every_kind_passes_fxp_check_on_its_sample(tmp_path, kind):
    assert kind in SAMPLES, f"kind {kind!r} has no sample in tests/test_check.py SAMPLES: add its task and data"
    r = run_fxp("check", *SAMPLES[kind](tmp_path), "--min-per-class=1", "trainer.plots=false", cwd=tmp_path)
    out = written(tmp_path)
    assert r.returncode == 0, (r, [p for p in out["pieces"] if not p["ok"]], out["findings"])
    ran = pieces(out)
    steps = [p[len("data ("):-1] for p in ran if p.startswith("data (")]
    assert steps and all(f"train batch ({s})" in ran and f"valid batch ({s})" in ran for s in steps), out["pieces"]
    assert ran["predict 2 items"]["ok"], out["pieces"]
    if kind == "text":  # a stepped kind: each step through the path (the language model, then the classifier)
        assert len(steps) == 2, steps


def test_bad_input_is_one_line_before_anything_loads(tmp_path):
    assert_one_line_error(run_fxp("check", "trainer.bs=0", cwd=tmp_path), "trainer.bs")
    assert_one_line_error(run_fxp("check", "--fall=2", cwd=tmp_path), "--fall")
    assert not (tmp_path / "outputs").exists()
