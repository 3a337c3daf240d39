"""`fxp val`: a saved run's learner evaluated on labelled data without retraining, through its own pipeline.

No training here: the runs are the exported learners of tests/fixtures/exported (an mnist_tiny small CNN and an adult
tabular model, one epoch each), copied once per module; their configs point at /absent, as for a run folder moved to
another machine, so every command names the data with data.path=.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import assert_one_line_error, copy_exported, mnist_subset, need_data, run_fxp


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return copy_exported(tmp_path_factory.mktemp("val"), "classification", "tabular", "text", "segmentation",
                         "multilabel")


def evals(run: Path) -> list[Path]:
    return sorted((run / "eval").iterdir()) if (run / "eval").is_dir() else []


@pytest.mark.slow
def test_val_on_the_valid_split_writes_metrics_and_plots(runs, tmp_path):
    "The valid split of 100 mnist_tiny images of each class and split."
    mnist, run = mnist_subset(tmp_path / "mnist", n=100), runs / "classification"
    r = run_fxp("val", run, f"data.path={mnist}", cwd=runs)
    assert r.returncode == 0, r
    assert "accuracy" in r.stdout and "written to" in r.stdout
    (dest,) = evals(run)
    result = json.loads((dest / "metrics.json").read_text())
    assert result["split"] == "valid" and result["items"] == len(list((mnist / "valid").rglob("*.png")))
    # the fixture's model reaches 0.955 here; a vocabulary or scaling that is not the run's gives about 0.5 or less
    assert result["metrics"]["accuracy"] >= 0.9
    assert result["metrics"]["error_rate"] == pytest.approx(1 - result["metrics"]["accuracy"])
    assert 0.4 < result["baselines"]["accuracy"]["value"] < 0.6
    assert (dest / "confusion_matrix.png").stat().st_size > 1000 and (dest / "top_losses.png").is_file()
    per_class = result["evaluation"]["per_class"]  # recall weighted by support is the accuracy
    assert set(per_class) == {"3", "7"} and sum(c["support"] for c in per_class.values()) == result["items"]
    assert sum(c["recall"] * c["support"] for c in per_class.values()) / result["items"] == pytest.approx(
        result["metrics"]["accuracy"], abs=1e-5)
    assert all(0.8 < c["precision"] <= 1 for c in per_class.values())
    assert (dest / "per_class.csv").read_text().splitlines()[0] == "class,precision,recall,support"


@pytest.mark.slow
def test_val_on_new_data_in_the_same_layout_and_its_test_split(runs, tmp_path):
    """New folders of 3s and 7s: the valid split (8 + 8 images), then every image of them (--split test); each
    evaluation in a folder of its own, the earlier ones left as they were."""
    new, run = mnist_subset(tmp_path / "new", n=8), runs / "classification"
    before = {d: (d / "metrics.json").read_bytes() for d in evals(run)}
    for split, items in (("valid", 16), ("test", 32)):
        r = run_fxp("val", run, f"data.path={new}", "--split", split, "--json", cwd=runs)
        assert r.returncode == 0, r
        result = json.loads(r.stdout)
        assert result["items"] == items and result["data"] == str(new.resolve())
        assert result["metrics"]["accuracy"] >= 0.8
    assert len(evals(run)) == len(before) + 2
    assert all((d / "metrics.json").read_bytes() == text for d, text in before.items())


def test_a_class_the_run_never_learnt_is_one_line(runs, tmp_path):
    new = mnist_subset(tmp_path / "new", n=4)
    for split in ("train", "valid"):
        shutil.copytree(new / split / "3", new / split / "5")
    r = run_fxp("val", runs / "classification", f"data.path={new}", cwd=runs)
    assert_one_line_error(r, "'5'", "never learnt", "3, 7")


@pytest.mark.slow
def test_val_of_a_tabular_run_uses_the_runs_own_procs(runs, tmp_path):
    """The adult model on the valid rows of the shared file's first 3000 (a fifth, split as the run split its data:
    accuracy 0.823, 0.824 on the whole file), and on 600 rows as a new CSV (their own statistics differ)."""
    run, lines = runs / "tabular", (need_data("adult_sample") / "adult.csv").read_text().splitlines()
    for name, rows in (("first3000", 3000), ("first600", 600)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "adult.csv").write_text("\n".join(lines[:rows + 1]) + "\n")
    r = run_fxp("val", run, f"data.path={tmp_path / 'first3000'}", "--json", cwd=runs)
    assert r.returncode == 0, r
    result = json.loads(r.stdout)
    assert result["items"] == 600 and result["metrics"]["accuracy"] >= 0.8  # majority: 0.753
    importance = result["evaluation"]["feature_importance"]
    assert len(importance) == 9 and max(importance.values()) > 0.01
    assert (Path(json.loads(r.stdout)["run"]) / "eval").is_dir()
    r = run_fxp("val", run, f"data.path={tmp_path / 'first600'}", "--split", "test", "--json", cwd=runs)
    assert r.returncode == 0, r
    assert json.loads(r.stdout)["items"] == 600 and json.loads(r.stdout)["metrics"]["accuracy"] >= 0.75


@pytest.mark.parametrize("args, mentions", [
    (["text"], ["text runs train in steps", "takes audio, classification, collab, multilabel", "tabular"]),
    (["classification", "model.arch=resnet18"], ["model.arch=resnet18", "data.*"]),
    (["classification"], ["data.path=/absent", "fxp val"]),
    (["nowhere"], ["no model.pkl"]),
    (["classification", "--split", "train"], ["--split", "valid"]),
])
def test_what_val_cannot_do_is_one_line(runs, args, mentions):
    r = run_fxp("val", runs / args[0], *args[1:], cwd=runs)
    assert_one_line_error(r, *mentions)


def test_val_without_a_run_asks_for_it_and_not_for_overrides(tmp_path):
    r = run_fxp("val", cwd=tmp_path)
    assert_one_line_error(r, "RUN_DIR")
    assert "KEY=VALUE" not in r.stderr


@pytest.mark.slow
def test_val_of_a_fresh_run_gives_back_the_metrics_of_its_model_epoch(digits_run):
    "The default digits run on its own valid split: exactly what metrics.csv recorded for the epoch model.pkl holds."
    r = run_fxp("val", digits_run, "--json", cwd=digits_run.parent)
    assert r.returncode == 0, r
    result = json.loads(r.stdout)
    assert result["items"] == 360 and set(result["trained"]) == {"valid_loss", "accuracy", "error_rate"}
    assert result["metrics"] == pytest.approx(result["trained"], abs=1e-5)


# --- new data is read where it is, not where the training data was ---------------------------------------------------


def camvid_copy(dest: Path, code: int, n: int = 6, prefix: str = "") -> Path:
    """The first `n` images of camvid_tiny with every mask set to `code`, each file named `prefix` + its name: data
    in the training layout whose labels differ from the training folder's."""
    from PIL import Image

    src = need_data("camvid_tiny")
    (dest / "images").mkdir(parents=True)
    (dest / "labels").mkdir()
    shutil.copy(src / "codes.txt", dest)
    for f in sorted((src / "images").iterdir())[:n]:
        shutil.copy(f, dest / "images" / f"{prefix}{f.name}")
        with Image.open(src / "labels" / f"{f.stem}_P.png") as m:
            Image.new("L", m.size, code).save(dest / "labels" / f"{prefix}{f.stem}_P.png")
    return dest


def predicted_shares(run: Path, files: list[Path]):
    "The share of the pixels of `files` that the run's model predicts as each code, at the size it predicts at."
    import torch

    from fxp import saved

    learn = saved.open_run(run, "fxp val").learner(torch.device("cpu"))
    probs, _ = learn.get_preds(dl=learn.dls.test_dl(files))
    return torch.bincount(probs.argmax(1).flatten(), minlength=probs.shape[1]).float() / probs.argmax(1).numel()


@pytest.fixture(scope="module")
def camvid_shares(runs):
    "What the segmentation run predicts on the first 6 images of camvid_tiny: the share of their pixels of each code."
    return predicted_shares(runs / "segmentation", sorted((need_data("camvid_tiny") / "images").iterdir())[:6])


@pytest.mark.slow
@pytest.mark.parametrize("prefix, code", [("", 0), ("", None), ("new_", None)])
def test_segmentation_val_reads_the_masks_of_the_data_it_is_given(runs, camvid_shares, tmp_path, prefix, code):
    """Every mask of the copy is one code, so its accuracy is the share of pixels predicted as that code; the run's
    exported label function pointed at the training folder's masks (same names: their accuracy, 0.42; new names:
    FileNotFoundError). Code 0 (Animal), as the issue found it: this model predicts none, so its accuracy is 0, which a
    pipeline reading no mask at all reaches too; hence also the code the model predicts most (None)."""
    run, shares = runs / "segmentation", camvid_shares
    code = int(shares.argmax()) if code is None else code
    new = camvid_copy(tmp_path / "one_code", code, prefix=prefix)
    r = run_fxp("val", run, f"data.path={new}", "--split", "test", "--json", cwd=runs)
    assert r.returncode == 0, r
    result = json.loads(r.stdout)
    share = float(shares[code])
    assert result["items"] == 6 and result["metrics"]["acc_camvid"] == pytest.approx(share, abs=1e-6)
    # the code's pixels are all of them, so its IoU is the share predicted as it, and its Dice 2·share / (1 + share)
    per_class, name = result["evaluation"]["per_class"], (new / "codes.txt").read_text().split()[code]
    assert per_class[name]["iou"] == pytest.approx(share, abs=1e-5)
    assert per_class[name]["dice"] == pytest.approx(2 * share / (1 + share), abs=1e-5)
    assert all(v["iou"] in (0, None) for c, v in per_class.items() if c != name) and "Void" not in per_class
    (dest,) = [d for d in evals(run) if json.loads((d / "metrics.json").read_text())["data"] == str(new)]
    assert (dest / "per_class.csv").read_text().splitlines()[0] == "class,iou,dice,support"


@pytest.mark.slow
def test_multilabel_val_reads_the_images_its_csv_names_in_the_data_given(runs, tmp_path):
    """A planet CSV naming renamed copies of 8 chips: read from the new folder (the run's reader took the names
    relative to the training folder, where they are not)."""
    src, new, run = need_data("planet_sample"), tmp_path / "planet", runs / "multilabel"
    (new / "train").mkdir(parents=True)
    rows = (src / "labels.csv").read_text().splitlines()
    out = [rows[0]]
    for row in rows[1:9]:
        name, tags = row.split(",", 1)
        shutil.copy(src / "train" / f"{name}.jpg", new / "train" / f"copy_{name}.jpg")
        out.append(f"copy_{name},{tags}")
    (new / "labels.csv").write_text("\n".join(out) + "\n")
    r = run_fxp("val", run, f"data.path={new}", "--split", "test", "--json", cwd=runs)
    assert r.returncode == 0, r
    result = json.loads(r.stdout)
    assert result["items"] == 8
    tags = [t for row in out[1:] for t in row.split(",", 1)[1].split()]
    per_class = result["evaluation"]["per_class"]
    assert {c: v["support"] for c, v in per_class.items() if v["support"]} == {t: tags.count(t) for t in set(tags)}
    assert per_class["primary"]["recall"] > 0.5  # the tag of nearly every chip


def test_a_folder_run_scored_on_a_csv_listing_its_images(runs, tmp_path):
    """What fxp predict advises for a CSV of labelled images: the mnist folder run on a CSV of 32 images, whose labels
    pandas reads as numbers (7) where the run's classes are the folder names ('7')."""
    new, run = mnist_subset(tmp_path / "new", n=8), runs / "classification"
    files = sorted(new.rglob("*.png"))
    (new / "labels.csv").write_text("name,label\n" + "".join(f"{f.relative_to(new)},{f.parent.name}\n" for f in files))
    r = run_fxp("val", run, f"data.path={new}", "task.source=csv", "task.csv=labels.csv", "--split", "test", "--json",
                cwd=runs)
    assert r.returncode == 0, r
    result = json.loads(r.stdout)
    assert result["items"] == 32 and result["metrics"]["accuracy"] >= 0.8
    assert set(result["evaluation"]["per_class"]) == {"3", "7"}
