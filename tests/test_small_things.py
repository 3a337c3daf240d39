"""Issue 16 item 12's small things: the override error a regex gets names Hydra's quoting (and that quoting
works); a wide label CSV (the 68-landmark faces) no longer makes pandas warn "DataFrame is highly fragmented"."""
import warnings

import pandas as pd
import pytest

from conftest import assert_one_line_error, run_fxp
from fxp import config
from fxp.data import read_table


def test_a_regex_override_error_shows_hydra_quoting(tmp_path):
    r = run_fxp("train", "task=pets", r"task.pat=^(.+)_\d+$", cwd=tmp_path)
    line = assert_one_line_error(r, "task.pat")
    assert r"""'task.pat="^(.+)_\d+$"'""" in line
    assert "trainer.lr=[1e-5,1e-3]" not in line  # brackets would not help a regex


def test_the_suggested_quoting_parses(tmp_path):
    suggestion = config.quoted(r"task.pat=^(.+)_\d+$")
    assert suggestion == r"""'task.pat="^(.+)_\d+$"'"""
    r = run_fxp("train", "task=pets", suggestion[1:-1], "--cfg", "job", cwd=tmp_path)  # as the shell passes it
    assert r.returncode == 0, r
    assert r"pat: ^(.+)_\d+$" in r.stdout


def test_a_wide_label_table_is_not_fragmented(tmp_path):
    "pandas 3 reads a block per column; the table reader consolidates, so kinds can add columns without a warning."
    cols = [f"part_{i}_{a}" for i in range(68) for a in "xy"]
    path = tmp_path / "face_landmarks.csv"
    path.write_text("image_name," + ",".join(cols) + "\n" + "".join(
        f"{n}.jpg," + ",".join(str(float(j)) for j in range(len(cols))) + "\n" for n in range(5)))
    df = read_table(path, "task.labels")
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.PerformanceWarning)
        df.assign(_file=[str(i) for i in range(5)], _y=list(range(5)))


@pytest.mark.slow
def test_a_points_run_on_the_faces_prints_no_pandas_warning(tmp_path, data):
    faces = data("faces")
    y_cols = "[" + ",".join(f"part_{i}_{a}" for i in range(68) for a in "xy") + "]"
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        r = run_fxp("train", "task=biwi", f"data.path={faces}", "task.labels=face_landmarks.csv", "task.folder=null",
                    f"task.y_cols={y_cols}", "task.points_outside=clip", "model=small_cnn", "model.pretrained=false",
                    "trainer.epochs=1", "task.size=32", "trainer.bs=8", cwd=tmp_path)
    assert r.returncode == 0, r
    assert "fragmented" not in r.stderr + r.stdout
    assert not [w for w in seen if issubclass(w.category, pd.errors.PerformanceWarning)]


def test_the_tiny_awd_lstm_says_what_it_takes(tmp_path):
    "Its description no longer promises a minute for the whole recipe; the quick command its YAML gives composes."
    from fxp import config

    doc = config.choices("model")["awd_lstm_tiny"]
    assert "about a minute" not in doc and "~20 min" in doc
    text = (config.conf_dir() / "model" / "awd_lstm_tiny.yaml").read_text()
    lines = [ln.lstrip("# ").strip() for ln in text.splitlines() if ln.startswith("#")]
    start = next(i for i, ln in enumerate(lines) if ln.startswith("fxp train task=imdb"))
    command = " ".join(lines[start:start + 2]).split()[2:]
    args = [a.strip("'") for a in command]
    r = run_fxp("train", *args, "data.path=.", "--cfg", "job", cwd=tmp_path)
    assert r.returncode == 0, r
    assert "max_vocab: 2000" in r.stdout
