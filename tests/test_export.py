"""`fxp export`: ONNX and TorchScript files with model.json, and the parity check against the learner.

The exported learners of tests/fixtures/exported (mnist_tiny small CNN, adult tabular; no training here). Beyond the
parity check fxp reports, each ONNX file is run here in onnxruntime on inputs made from model.json alone (numpy and
PIL, no fastai): it must give fxp predict's answers.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import assert_one_line_error, copy_exported, need_data, run_fxp

ort = pytest.importorskip("onnxruntime", reason="pip install -e '.[export]'")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return copy_exported(tmp_path_factory.mktemp("export"), "classification", "tabular", "text")


@pytest.fixture(scope="module")
def mnist_onnx(runs) -> dict:
    r = run_fxp("export", runs / "classification", "--format", "onnx", f"data.path={need_data('mnist_tiny')}",
                cwd=runs)
    assert r.returncode == 0, r
    assert "parity on 32 validation items: max_abs_diff" in r.stdout and "passed" in r.stdout
    return json.loads((runs / "classification" / "export" / "onnx" / "model.json").read_text())


def predicted(run: Path, *inputs: str) -> list[dict]:
    r = run_fxp("predict", run, *inputs, "--json", cwd=run.parent)
    assert r.returncode == 0, r
    return json.loads(r.stdout)


@pytest.mark.slow
def test_onnx_image_model_passes_parity_and_describes_its_input(mnist_onnx):
    meta = mnist_onnx
    assert meta["parity"]["max_abs_diff"] < 1e-4 and meta["parity"]["argmax_agreement"] == 1.0
    assert meta["parity"]["items"] == 32 and meta["parity"]["passed"]
    assert meta["classes"] == ["3", "7"] and meta["channels"] == 1 and meta["input_size"] == [28, 28]
    assert meta["inputs"] == [{"name": "image", "shape": [None, 1, 28, 28], "dtype": "float32"}]
    assert meta["preprocessing"]["scale"] == pytest.approx(1 / 255) and meta["output"]["holds"] == "class probabilities"


@pytest.mark.slow
def test_the_onnx_file_predicts_from_model_json_alone(runs, mnist_onnx):
    "PIL + numpy per model.json, onnxruntime: the labels and probabilities fxp predict gives."
    import numpy as np
    from PIL import Image

    run, meta = runs / "classification", mnist_onnx
    pre = meta["preprocessing"]
    files = [run / "3.png", run / "7.png"]
    x = np.stack([np.asarray(Image.open(f).convert("L"), dtype=np.float32)[None] * pre["scale"] for f in files])
    session = ort.InferenceSession(str(run / "export" / "onnx" / meta["file"]))
    probs = session.run(None, {"image": x})[0]
    expected = predicted(run, *map(str, files))
    assert [meta["classes"][i] for i in probs.argmax(1)] == [row["label"] for row in expected] == ["3", "7"]
    assert probs.max(1) == pytest.approx([row["probability"] for row in expected], abs=1e-3)


@pytest.mark.slow
def test_onnx_tabular_model_from_model_json_alone(runs):
    "Rows encoded by model.json's categories, fill values and statistics: fxp predict's salary predictions."
    import numpy as np
    import pandas as pd

    run = runs / "tabular"
    r = run_fxp("export", run, "--format", "onnx", f"data.path={need_data('adult_sample')}", cwd=runs)
    assert r.returncode == 0, r
    meta = json.loads((run / "export" / "onnx" / "model.json").read_text())
    assert meta["parity"]["passed"] and meta["parity"]["argmax_agreement"] == 1.0
    assert meta["classes"] == ["<50k", ">=50k"] and meta["target"] == "salary"
    rows = pd.read_csv(run / "rows.csv", skipinitialspace=True)
    pre, (cat, cont) = meta["preprocessing"], meta["inputs"]
    x_cat = np.array([[_code(pre, c, row) for c in cat["columns"]] for _, row in rows.iterrows()], dtype=np.int64)
    x_cont = np.array([[(_filled(pre, c, row[c]) - pre["normalize"][c]["mean"]) / pre["normalize"][c]["std"]
                        for c in cont["columns"]] for _, row in rows.iterrows()], dtype=np.float32)
    session = ort.InferenceSession(str(run / "export" / "onnx" / "model.onnx"))
    probs = session.run(None, {"x_cat": x_cat, "x_cont": x_cont})[0]
    expected = predicted(run, str(run / "rows.csv"))
    assert [meta["classes"][i] for i in probs.argmax(1)] == [row["salary_pred"] for row in expected]
    assert probs.max(1) == pytest.approx([row["probability"] for row in expected], abs=1e-3)


def _code(pre, col, row) -> int:
    "A categorical cell's index in model.json's categories; a `<col>_na` flag: was <col> missing."
    import numpy as np

    if col.endswith("_na") and col[:-3] in pre["fill_missing"]:
        return pre["categories"][col].index(str(bool(np.isnan(row[col[:-3]]))))
    vocab = pre["categories"][col]
    return vocab.index(str(row[col])) if str(row[col]) in vocab else 0


def _filled(pre, col, value) -> float:
    import numpy as np

    return pre["fill_missing"][col] if np.isnan(value) and col in pre["fill_missing"] else float(value)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_torchscript_export_loads_without_fastai_and_passes(runs):
    import torch

    run = runs / "classification"
    r = run_fxp("export", run, "--format", "torchscript", "--items", "8", f"data.path={need_data('mnist_tiny')}",
                cwd=runs)
    assert r.returncode == 0, r
    meta = json.loads((run / "export" / "torchscript" / "model.json").read_text())
    assert meta["file"] == "model.pt" and meta["parity"]["items"] == 8 and meta["parity"]["passed"]
    probs = torch.jit.load(str(run / "export" / "torchscript" / "model.pt"))(torch.zeros(3, 1, 28, 28))
    assert probs.shape == (3, 2) and torch.allclose(probs.sum(1), torch.ones(3))


@pytest.mark.slow
def test_each_format_keeps_its_own_model_json(runs, mnist_onnx):
    "An ONNX export, then a TorchScript one: each model.json beside its file, the ONNX one as it was written."
    r = run_fxp("export", runs / "classification", "--format", "torchscript", "--items", "4",
                f"data.path={need_data('mnist_tiny')}", cwd=runs)
    assert r.returncode == 0, r
    export = runs / "classification" / "export"
    assert json.loads((export / "onnx" / "model.json").read_text()) == mnist_onnx
    assert (export / "onnx" / "model.onnx").is_file() and (export / "torchscript" / "model.pt").is_file()
    assert json.loads((export / "torchscript" / "model.json").read_text())["format"] == "torchscript"


@pytest.mark.slow
def test_an_export_stopped_midway_leaves_the_previous_pair(tmp_path, monkeypatch):
    """Stopped after the model file is written and before model.json (Ctrl-C, or a kill): the earlier export stays
    whole, with no half-written folder beside it."""
    from fxp import exporting

    run = copy_exported(tmp_path, "classification") / "classification"
    args = ("export", run, "--format", "torchscript", "--items", "4", f"data.path={need_data('mnist_tiny')}")
    assert run_fxp(*args, cwd=tmp_path).returncode == 0
    before = {f.name: f.read_bytes() for f in (run / "export" / "torchscript").iterdir()}

    def stopped(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(exporting, "parity", stopped)
    assert run_fxp(*args, cwd=tmp_path).returncode == 130
    assert {f.name: f.read_bytes() for f in (run / "export" / "torchscript").iterdir()} == before
    assert sorted(f.name for f in (run / "export").iterdir()) == ["torchscript"]


def test_a_multilabel_export_records_its_thresholds(tmp_path):
    "task.thresh (0.2 in the run's config: what the learner decodes at) and the run's best_thresh (summary.json)."
    run = copy_exported(tmp_path, "multilabel") / "multilabel"
    (run / "summary.json").write_text(json.dumps({"status": "completed", "best_thresh": 0.23}))
    r = run_fxp("export", run, "--format", "torchscript", "--items", "4", f"data.path={need_data('planet_sample')}",
                cwd=tmp_path)
    assert r.returncode == 0, r
    output = json.loads((run / "export" / "torchscript" / "model.json").read_text())["output"]
    assert output["activation"] == "sigmoid" and output["best_thresh"] == 0.23
    assert output["thresh"] == pytest.approx(0.2)


def test_a_kind_that_cannot_export_says_so(runs):
    r = run_fxp("export", runs / "text", "--format", "onnx", cwd=runs)
    assert_one_line_error(r, "text runs", "cannot be exported")


def test_a_model_that_takes_another_input_says_what_it_takes(tmp_path):
    "What a model takes is its kind's declaration (INPUT): collab's (user, item) pairs, which fxp export does not take."
    run = copy_exported(tmp_path, "collab") / "collab"
    r = run_fxp("export", run, "--format", "torchscript", cwd=tmp_path)
    assert_one_line_error(r, "a collab run's model takes pairs", "image or table")
    assert not (run / "export").exists()


def test_missing_onnx_packages_is_one_line_with_the_install(runs, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    r = run_fxp("export", runs / "classification", "--format", "onnx", cwd=runs)
    assert_one_line_error(r, "onnxruntime", "pip install 'fxp[export]'")


def test_export_without_a_run_asks_for_it_and_not_for_overrides(tmp_path):
    r = run_fxp("export", "--format", "onnx", cwd=tmp_path)
    assert_one_line_error(r, "RUN_DIR")
    assert "KEY=VALUE" not in r.stderr
