"""Exported learners keep loading: a `model.pkl` written by fxp before the refactor (commit 702e85e, one per kind in
tests/fixtures/exported/, see its README) still predicts through `fxp predict`.

A pickle names the classes and functions it holds by module and qualified name. Every fxp name each fixture's
pickle references is listed in ALLOWED and must still import from there: a class that moves keeps a one-line
re-export under its old name. A fresh export may only reference listed names, so a new pickled name is added to
the list deliberately (and then kept importable).
"""
from __future__ import annotations

import importlib
import json
import pickletools
import shutil
import zipfile
from pathlib import Path

import pytest

from conftest import run_fxp

FIXTURES = Path(__file__).parent / "fixtures" / "exported"

# fixture folder → the fxp names its model.pkl references ("module:qualname"), exactly
ALLOWED = {
    "classification": {"fxp.learner:CrossEntropyLossPlain", "fxp.learner:FxpLearner"},
    "classification-digits": {"fxp.data:TensorDL", "fxp.data:Tensors", "fxp.learner:CrossEntropyLossPlain",
                              "fxp.learner:FxpLearner"},
    "multilabel": {"fxp.learner:FxpLearner"},
    "segmentation": {"fxp.learner:CrossEntropyLossPlain", "fxp.learner:FxpLearner", "fxp.tasks.gan:small_encoder",
                     "fxp.tasks.segmentation:LabelFile", "fxp.vision:PixelAccuracy"},
    "regression": {"fxp.learner:FxpLearner", "fxp.tasks.regression:_get_file", "fxp.tasks.regression:_get_y"},
    "text": set(),  # fastai's TextLearner, transforms and model only
    "tabular": set(),  # fastai's TabularLearner
    "collab": {"fxp.learner:FxpLearner"},
    "gan": {"fxp.learner:FxpLearner", "fxp.tasks.gan:PSNR", "fxp.tasks.gan:SourceOf", "fxp.tasks.gan:small_encoder"},
    "gan-wgan": {"fxp.tasks.gan:CriticLoss"},
}
ALL_ALLOWED = sorted(set().union(*ALLOWED.values()))

STRINGS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}


def pickled_globals(pkl: Path) -> set[tuple[str, str]]:
    """(module, qualname) of every GLOBAL / STACK_GLOBAL in the pickle of a torch.save archive. STACK_GLOBAL takes
    the two strings pushed before it, each pushed as itself or fetched from the memo."""
    with zipfile.ZipFile(pkl) as z:
        data = z.read(next(n for n in z.namelist() if n == "data.pkl" or n.endswith("/data.pkl")))
    memo, pushed, found = {}, [], set()
    top = None  # the string on top of the stack, or None when the top is something else
    for op, arg, _ in pickletools.genops(data):
        name = op.name
        if name in STRINGS:
            top = arg.decode("latin-1") if isinstance(arg, bytes) else arg
            pushed.append(top)
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            top = memo.get(int(arg))
            pushed.append(top)
        elif name in ("BINPUT", "LONG_BINPUT", "PUT"):  # memoize the top of the stack, which stays
            memo[int(arg)] = top
        elif name == "MEMOIZE":
            memo[len(memo)] = top
        elif name == "GLOBAL":
            found.add(tuple(arg.split(" ", 1)))
            top = None
        elif name == "STACK_GLOBAL":
            module, qualname = pushed[-2], pushed[-1]
            assert isinstance(module, str) and isinstance(qualname, str), f"STACK_GLOBAL without strings in {pkl}"
            found.add((module, qualname))
            top = None
        else:
            top = None
    return found


def fxp_names(pkl: Path) -> set[str]:
    return {f"{m}:{q}" for m, q in pickled_globals(pkl) if m == "fxp" or m.startswith("fxp.")}


def resolve(name: str):
    "What unpickling `module:qualname` does: import the module, then getattr along the qualified name."
    module, _, qualname = name.partition(":")
    obj = importlib.import_module(module)
    for attr in qualname.split("."):
        obj = getattr(obj, attr)
    return obj


def fixture(name: str) -> Path:
    folder = FIXTURES / name
    for f in ("model.pkl", "config.yaml"):
        if not (folder / f).is_file():
            pytest.skip(f"fixture {folder / f} is missing (tests/fixtures/exported/README.md says how it was made)")
    return folder


# --- the pickled names ----------------------------------------------------------------------------------------


def test_the_scanner_reads_stack_global_and_the_memo(tmp_path):
    "Protocol 4 pickles use STACK_GLOBAL, the second `collections` string a memo fetch; torch writes protocol 2."
    import collections
    import pathlib

    import torch

    torch.save([collections.OrderedDict, collections.Counter, pathlib.PurePosixPath, collections.OrderedDict],
               tmp_path / "p4.pkl", pickle_protocol=4)
    torch.save([collections.OrderedDict, pathlib.PurePosixPath], tmp_path / "p2.pkl")
    expected = {("collections", "OrderedDict"), ("collections", "Counter"), ("pathlib", "PurePosixPath")}
    assert pickled_globals(tmp_path / "p4.pkl") == expected
    assert pickled_globals(tmp_path / "p2.pkl") == expected - {("collections", "Counter")}


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_old_export_references_exactly_its_allowed_names(name):
    assert fxp_names(fixture(name) / "model.pkl") == ALLOWED[name]


@pytest.mark.parametrize("name", ALL_ALLOWED)
def test_allowed_name_still_imports(name):
    "A moved class or function keeps a re-export under this name, or old model.pkl files stop loading."
    assert resolve(name) is not None


@pytest.mark.slow
def test_fresh_export_references_only_allowed_names(tmp_path):
    "Today's default run: every fxp name its model.pkl references is in ALLOWED (add a new one there on purpose)."
    r = run_fxp("train", "trainer.epochs=1", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert r.returncode == 0, r
    names = fxp_names(tmp_path / "run" / "model.pkl")
    assert names, "the default run's model.pkl references no fxp name at all: is the scanner still right?"
    assert names <= set(ALL_ALLOWED), f"not in ALLOWED: {sorted(names - set(ALL_ALLOWED))}"


# --- fxp predict on each old export -------------------------------------------------------------------------------


def predictions(run: Path) -> Path:
    "Where predict writes files: predictions/ in the working directory (the run's parent here)."
    return run.parent.resolve() / "predictions"


def _classification(rows, run, labels=("3", "7")):
    assert [row["label"] for row in rows] == list(labels)  # what fxp at 702e85e predicted
    assert all(0.5 < row["probability"] <= 1 for row in rows)


def _multilabel(rows, run):
    assert len(rows) == 2
    for row in rows:
        tags, probs = row["tags"].split(), row["probabilities"]
        assert tags and len(tags) == len(probs) == len(set(tags))
        assert probs == sorted(probs, reverse=True) and all(0.2 < p <= 1 for p in probs)  # task.thresh 0.2


def _segmentation(rows, run):
    from PIL import Image

    (row,) = rows
    mask = Path(row["mask"])
    assert mask.is_file() and mask.parent == predictions(run)
    with Image.open(mask) as m, Image.open(row["input"]) as im:
        assert m.size == im.size
    shares = row["shares"]
    assert shares and sum(shares.values()) == pytest.approx(1, abs=1e-3) and all(0 < v <= 1 for v in shares.values())
    assert set(shares) <= CAMVID_CODES


CAMVID_CODES = {"Animal", "Archway", "Bicyclist", "Bridge", "Building", "Car", "CartLuggagePram", "Child",
                "Column_Pole", "Fence", "LaneMkgsDriv", "LaneMkgsNonDriv", "Misc_Text", "MotorcycleScooter",
                "OtherMoving", "ParkingBlock", "Pedestrian", "Road", "RoadShoulder", "Sidewalk", "SignSymbol", "Sky",
                "SUVPickupTruck", "TrafficCone", "TrafficLight", "Train", "Tree", "Truck_Bus", "Tunnel",
                "VegetationMisc", "Void", "Wall"}


def _regression(rows, run):
    (row,) = rows
    assert 0 <= row["x"] <= 258 and 0 <= row["y"] <= 250  # the nose tip, in the 258x250 photo's pixels


def _text(rows, run):
    assert [row["input"] for row in rows] == [TEXT, str(run / "review.txt")]
    for row in rows:
        probs = row["probabilities"]
        assert set(probs) == {"negative", "positive"} and row["label"] == max(probs, key=probs.get)
        assert sum(probs.values()) == pytest.approx(1, abs=1e-3)


def _tabular(rows, run):
    import pandas as pd

    assert [row["row"] for row in rows] == [1, 2, 3]
    assert all(row["salary_pred"] in ("<50k", ">=50k") and 0.5 <= row["probability"] <= 1 for row in rows)
    out = pd.read_csv(predictions(run) / "rows_predictions.csv")
    assert list(out.salary_pred) == [row["salary_pred"] for row in rows]


def _collab_pairs(rows, run):
    assert [(row["userId"], row["movieId"]) for row in rows] == [("15", "356"), ("73", "1270")]
    assert all(0 < row["prediction"] < 5.5 for row in rows)  # task.y_range [0, 5.5]


def _collab_user(rows, run):
    assert [row["rank"] for row in rows] == [1, 2, 3]
    preds = [row["prediction"] for row in rows]
    assert preds == sorted(preds, reverse=True) and all(0 < p < 5.5 for p in preds)


def _gan(rows, run):
    from PIL import Image

    (row,) = rows
    assert row["size"] == "500x376"  # the 250x188 photo enlarged by task.scale 2
    with Image.open(row["output"]) as im:
        assert im.size == (500, 376) and Path(row["output"]).parent == predictions(run)


TEXT = "I hated it, a boring waste of time."
# case id → (fixture folder, predict arguments after RUN_DIR (file names are in the fixture folder), check)
PREDICT = {
    "classification": ("classification", ["3.png", "7.png"], _classification),
    "classification-digits": ("classification-digits", ["digit3.png", "digit7.png"], _classification),
    "multilabel": ("multilabel", ["train_1876.jpg", "train_3473.jpg"], _multilabel),
    "segmentation": ("segmentation", ["0001TP_006750.png"], _segmentation),
    "regression": ("regression", ["10comm-decarlo.jpg"], _regression),
    "text": ("text", [TEXT, "review.txt"], _text),
    "tabular": ("tabular", ["rows.csv"], _tabular),
    "collab-pairs": ("collab", ["pairs.csv"], _collab_pairs),
    "collab-user": ("collab", ["--user", "299", "--top", "3"], _collab_user),
    "gan": ("gan", ["Abyssinian_56.jpg"], _gan),
}


def predict(run: Path, args: list[str], capsys) -> tuple[int, str, str]:
    "`fxp predict RUN ARGS... --json` in this process (inputs that name a file in the run folder get its path)."
    from fxp.cli import main

    inputs = [str(run / a) if (run / a).is_file() else a for a in args]
    code = main(["predict", str(run), *inputs, "--json"])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("case", sorted(PREDICT))
def test_old_export_predicts(case, tmp_path, monkeypatch, capsys):
    "The model.pkl fxp wrote at 702e85e loads in today's `fxp predict` and gives the rows that kind gives."
    name, args, check = PREDICT[case]
    run = tmp_path / name
    shutil.copytree(fixture(name), run)
    monkeypatch.chdir(tmp_path)  # predictions/ lands here
    code, out, err = predict(run, args, capsys)
    assert code == 0, err
    rows = json.loads(out)
    assert rows and all(isinstance(row, dict) for row in rows)
    check(rows, run)


def test_old_wgan_export_loads_and_generates(tmp_path, monkeypatch, capsys):
    """A WGAN run has nothing to predict on (one line says where its samples are), but its model.pkl loads as
    fxp predict loads it and its generator still turns noise into images of the trained size."""
    import torch
    from fastai.learner import load_learner

    run = tmp_path / "gan-wgan"
    shutil.copytree(fixture("gan-wgan"), run)
    monkeypatch.chdir(tmp_path)
    code, out, err = predict(run, ["any.png"], capsys)
    assert code == 2 and "samples" in err and "failed" not in err, err
    learn = load_learner(run / "model.pkl", cpu=True)
    with torch.no_grad():
        fake = learn.model.generator.eval()(torch.randn(2, 100))  # task.noise_size 100
    assert fake.shape == (2, 3, 32, 32) and torch.isfinite(fake).all()
