"""Run folders are data, not code (issue 30 items 3, 6 and 9): a model.pkl that is not the file fxp wrote is refused
before it is unpickled, checkpoints and --experimental-rerun files are read without running what they hold, damaged
and read-only folders are one line, and a kill's temporary files go when the run ends or resumes.

No training here but in the one slow test: the runs are copies of tests/fixtures/exported (their pickles.json
records each model.pkl's SHA-256, as fxp writes it today), with summary, metrics and checkpoint files written by the
test where a command needs them.
"""
from __future__ import annotations

import builtins
import errno
import json
import os
import pickle
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import assert_one_line_error, copy_exported, run_fxp, summary

MNIST, DIGITS = "classification", "classification-digits"  # fxp clean takes image files: the mnist_tiny run


class Marker:
    "A pickle that, loaded, creates the file `path`: what a hostile run folder would do with any code it likes."

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return builtins.exec, (f"open({self.path!r}, 'w').close()",)


def plant(file: Path, marker: Path) -> None:
    "`file` replaced by a marker pickle, saved as torch saves (fastai's load_learner and checkpoints are torch.load)."
    import torch

    torch.save(Marker(marker), file)


@pytest.fixture
def runs(tmp_path) -> Path:
    return copy_exported(tmp_path, MNIST, DIGITS)


def commands(runs: Path) -> dict:
    "Each command that loads a run's model.pkl, on the run it takes."
    digits, mnist = runs / DIGITS, runs / MNIST
    return {"predict": ["predict", digits, digits / "digit3.png"], "serve": ["serve", digits], "val": ["val", digits],
            "export": ["export", digits, "--format", "torchscript"], "clean": ["clean", mnist]}


LOADERS = ("predict", "serve", "val", "export", "clean")


def run_of(args: list) -> Path:
    return Path(args[1])


# --- item 3: a replaced model.pkl or checkpoint is refused, not run --------------------------------------------------


@pytest.mark.parametrize("command", LOADERS)
def test_a_replaced_model_pkl_is_refused_and_not_run(runs, tmp_path, command):
    args, marker = commands(runs)[command], tmp_path / "MARKER"
    plant(run_of(args) / "model.pkl", marker)
    r = run_fxp(*args, cwd=tmp_path)
    assert not marker.exists(), "the pickle ran"
    assert_one_line_error(r, "model.pkl", "pickles.json", "--trust")


def test_trust_loads_it_anyway(runs, tmp_path):
    "--trust is the way out the message names: the file is loaded (and here, being no learner, runs and fails)."
    digits, marker = runs / DIGITS, tmp_path / "MARKER"
    plant(digits / "model.pkl", marker)
    r = run_fxp("predict", digits, digits / "digit3.png", "--trust", cwd=tmp_path)
    assert marker.exists()
    assert_one_line_error(r, "cannot be loaded", "model.pkl")


def test_the_fixture_runs_load_with_their_record(runs, tmp_path):
    digits = runs / DIGITS
    r = run_fxp("predict", digits, digits / "digit3.png", "--json", cwd=tmp_path)
    assert r.returncode == 0 and r.stderr == "", r
    assert json.loads(r.stdout)[0]["label"] == "3"


def test_a_run_without_a_record_loads_with_one_warning_line(runs, tmp_path):
    "Runs from an fxp that recorded no hashes: loaded, with one line saying it is unchecked."
    digits = runs / DIGITS
    (digits / "pickles.json").unlink()
    r = run_fxp("predict", digits, digits / "digit3.png", "--json", cwd=tmp_path)
    assert r.returncode == 0, r
    assert r.err_lines == [f"fxp: warning: {digits} has no pickles.json (an older fxp's run): model.pkl is loaded "
                           f"unchecked; load only runs you trust"]
    assert json.loads(r.stdout)[0]["label"] == "3"


def test_write_pickle_records_the_file_at_every_moment(tmp_path, monkeypatch):
    """The record accepts the new file from before it takes the name (a kill between the two leaves either file
    accepted), and only the new one once it has."""
    from fxp import writer

    file = tmp_path / "model.pkl"
    writer.write_pickle(file, lambda tmp: tmp.write_bytes(b"old"))
    old = writer.sha256(file)
    assert json.loads((tmp_path / "pickles.json").read_text()) == {"model.pkl": [old]}
    seen = []
    replace = os.replace

    def watch(src, dst):
        if Path(dst) == file:
            seen.append(json.loads((tmp_path / "pickles.json").read_text())["model.pkl"])
        replace(src, dst)

    monkeypatch.setattr(writer.os, "replace", watch)
    writer.write_pickle(file, lambda tmp: tmp.write_bytes(b"new"))
    new = writer.sha256(file)
    assert seen == [[new, old]]
    assert json.loads((tmp_path / "pickles.json").read_text()) == {"model.pkl": [new]}


def resumable(run: Path, status: str = "interrupted") -> Path:
    "The digits run as a run stopped after its first epoch: its summary, metrics.csv and checkpoint record."
    (run / "summary.json").write_text(json.dumps({"status": status, "task": "digits", "epochs": 1}))
    (run / "metrics.csv").write_text("stage,epoch,train_loss,valid_loss,accuracy,error_rate,lr,time\n"
                                     "1,1,1.1,0.57,0.92,0.08,9e-05,2.7\n")
    (run / "checkpoints").mkdir()
    (run / "checkpoints/last.json").write_text(json.dumps({"step": "train", "stage": 1, "epoch": 1, "epochs": 1,
                                                           "time": 1.0}))
    return run


def test_resume_refuses_a_checkpoint_that_holds_code(runs, tmp_path):
    run, marker = resumable(runs / DIGITS), tmp_path / "MARKER"
    plant(run / "checkpoints/last.pth", marker)
    r = run_fxp("resume", run, cwd=tmp_path)
    assert not marker.exists(), "the pickle ran"
    assert r.returncode == 2, r
    assert "last.pth holds more than a checkpoint's data (exec)" in r.stderr and "--trust" in r.stderr, r
    assert "Traceback" not in r.stderr, r
    run_fxp("resume", run, "--trust", cwd=tmp_path)  # the way out the message names: loaded as any pickle
    assert marker.exists()


@pytest.mark.slow  # trains digits for an epoch
def test_a_trained_run_records_its_model_and_refuses_a_replaced_one(digits_run, tmp_path):
    "The refusal holds for the runs fxp writes now: train records model.pkl's hash; the checkpoints load as data."
    import torch

    from fxp.callbacks import checkpoint_types
    from fxp.writer import sha256

    assert json.loads((digits_run / "pickles.json").read_text()) == {"model.pkl": [sha256(digits_run / "model.pkl")]}
    with torch.serialization.safe_globals(checkpoint_types()):
        for name in ("last.pth", "best.pth"):
            torch.load(digits_run / "checkpoints" / name, weights_only=True)
    run, marker = tmp_path / "run", tmp_path / "MARKER"
    shutil.copytree(digits_run, run)
    plant(run / "model.pkl", marker)
    assert_one_line_error(run_fxp("val", run, cwd=tmp_path), "pickles.json", "--trust")
    assert not marker.exists()


# --- --experimental-rerun reads only a config -----------------------------------------------------------------------


def hydra_config_pickle(path: Path) -> Path:
    "A config.pickle as Hydra's PickleJobInfoCallback writes it: the composed config with its hydra node."
    from hydra import compose, initialize_config_dir

    from fxp import config

    config.register()
    with initialize_config_dir(str(config.conf_dir()), version_base=None):
        cfg = compose("config", return_hydra_config=True)
    path.write_bytes(pickle.dumps(cfg, protocol=4))
    return path


def test_rerun_checks_a_real_config_pickle_without_refusing_it(tmp_path):
    from fxp.precheck import _check_rerun

    _check_rerun(hydra_config_pickle(tmp_path / "config.pickle"))  # no error: it holds only a config


def test_rerun_refuses_a_pickle_that_holds_code_without_running_it(tmp_path):
    bad, marker = tmp_path / "config.pickle", tmp_path / "MARKER"
    bad.write_bytes(pickle.dumps(Marker(marker)))
    r = run_fxp("train", "--experimental-rerun", bad, cwd=tmp_path)
    assert not marker.exists(), "the pickle ran"
    assert_one_line_error(r, "--experimental-rerun", "builtins.exec", "could run any code")


def test_rerun_does_not_import_a_main_module(tmp_path):
    "A pickle naming fxp.__main__ (importing it runs fxp) is refused before the import."
    bad = tmp_path / "config.pickle"
    bad.write_bytes(b"cfxp.__main__\nmain\n.")  # protocol 0: the global fxp.__main__.main
    r = run_fxp("train", "--experimental-rerun", bad, cwd=tmp_path)
    assert_one_line_error(r, "--experimental-rerun", "fxp.__main__.main")


@pytest.mark.parametrize("content, says", [({"a": 1}, "a dict, not a job's config"),
                                           ([1, 2], "a list, not a job's config")])
def test_rerun_of_a_pickle_that_is_not_a_hydra_config_is_one_line(tmp_path, content, says):
    file = tmp_path / "config.pickle"
    file.write_bytes(pickle.dumps(content))
    assert_one_line_error(run_fxp("train", "--experimental-rerun", file, cwd=tmp_path), "not a config.pickle", says)


# --- item 6: damaged and read-only run folders are one line ---------------------------------------------------------


@pytest.mark.parametrize("command", LOADERS)
def test_a_truncated_model_pkl_is_one_line(runs, tmp_path, command):
    "Recorded: refused as not the file fxp wrote; without a record (an older run): it cannot be loaded."
    args = commands(runs)[command]
    model = run_of(args) / "model.pkl"
    model.write_bytes(model.read_bytes()[:5000])
    assert_one_line_error(run_fxp(*args, cwd=tmp_path), "model.pkl", "replaced or damaged")
    (run_of(args) / "pickles.json").unlink()
    r = run_fxp(*args, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r
    assert r.err_lines[0].startswith("fxp: warning:") and len(r.err_lines) == 2, r
    assert "model.pkl cannot be loaded" in r.err_lines[1] and "damaged" in r.err_lines[1], r


@pytest.fixture
def read_only(tmp_path, monkeypatch):
    """`read_only(folder)` → the folder seen read-only: its permissions taken away (not as root, who ignores them), a
    read-only bind mount as root, or, where no mount can be made, every write under it refused in this process with
    EROFS (the commands run in-process)."""
    mounts = []

    def make(folder: Path) -> Path:
        if os.geteuid() != 0:
            for p in [folder, *folder.rglob("*")]:
                p.chmod(p.stat().st_mode & ~0o222)
            return folder
        view = tmp_path / f"ro-{folder.name}"
        view.mkdir()
        if subprocess.run(["mount", "--bind", "-o", "ro", folder, view], capture_output=True).returncode == 0:
            mounts.append(view)
            return view
        refuse_writes(monkeypatch, folder)
        return folder

    yield make
    for view in mounts:
        subprocess.run(["umount", view], check=True)


def refuse_writes(monkeypatch, folder: Path) -> None:
    "Opening a file for writing, or making a folder, under `folder` raises EROFS in this process."
    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def inside(path) -> bool:
        return isinstance(path, (str, os.PathLike)) and Path(os.path.abspath(path)).is_relative_to(folder)

    def refuse(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    def fake_open(file, mode="r", *args, **kwargs):
        return refuse(file) if inside(file) and set(mode) & set("wax+") else real_open(file, mode, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):
        return refuse(path) if inside(path) and flags & writes else real_os_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        return refuse(path) if inside(path) else real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


def test_read_only_run_folders_are_one_line(runs, tmp_path, read_only):
    "The commands that write into a run folder say so before any work, naming the folder."
    resumable(runs / DIGITS, status="completed")
    digits, mnist = read_only(runs / DIGITS), read_only(runs / MNIST)
    before = sorted(p.name for p in digits.iterdir())
    for args in (["val", digits], ["export", digits, "--format", "torchscript"], ["clean", mnist],
                 ["resume", digits, "--extend", "1"], ["diagnose", digits], ["report", digits]):
        r = run_fxp(*args, cwd=tmp_path)
        line = assert_one_line_error(r, "cannot write", str(args[1]))
        assert os.strerror(errno.EROFS) in line or os.strerror(errno.EACCES) in line, line
    assert "--no-plot" in run_fxp("diagnose", digits, cwd=tmp_path).stderr
    assert sorted(p.name for p in digits.iterdir()) == before


# --- item 9: a kill's temporary files go when the run ends or resumes -----------------------------------------------


def open_run(path: Path, resume: dict | None = None):
    from omegaconf import OmegaConf

    from fxp.writer import Run

    cfg = OmegaConf.create({"task": {"monitor": {"metric": "accuracy", "mode": "max"}}, "trainer": {"seed": 1}})
    return Run(path, cfg, [], "digits", resume=resume)


STRAYS = ("summary.json.tmp", "checkpoints/last.pth.tmp", "lm/checkpoints/last.pth.tmp", "plots/loss_curves.png.tmp")


def stray(run: Path) -> list[Path]:
    (run / "lm").mkdir(exist_ok=True)
    (run / "lm/metrics.csv").write_text("stage,epoch\n")  # a step's folder (text's language model)
    files = [run / name for name in STRAYS]
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("torn")
    return files


def test_a_resumed_run_drops_the_temporary_files_a_kill_left(tmp_path):
    run = tmp_path / "run"
    with open_run(run):
        pass
    files = stray(run)
    with open_run(run, resume={"note": "resumed"}):
        assert not any(f.exists() for f in files)
    assert summary(run)["status"] == "completed"


def test_a_run_ends_without_temporary_files(tmp_path):
    run = tmp_path / "run"
    with open_run(run):
        files = stray(run)  # left by an earlier process of the run (killed, then resumed)
        keep = run / "eval" / "x.tmp"  # another command's folder: not the run's to clean
        keep.parent.mkdir()
        keep.write_text("")
    assert not any(f.exists() for f in files) and keep.exists()


def test_a_text_runs_vocab_is_read_as_words_only(tmp_path):
    "task.encoder=ANOTHER_RUN reads its lm/vocab.pkl: a list of words loads, a pickle that holds code is refused."
    from fxp.errors import FxpError
    from fxp.tasks.text import read_vocab

    (tmp_path / "vocab.pkl").write_bytes(pickle.dumps(["xxunk", "xxpad", "the", "movie"]))
    assert read_vocab(tmp_path) == ["xxunk", "xxpad", "the", "movie"]
    marker = tmp_path / "MARKER"
    (tmp_path / "vocab.pkl").write_bytes(pickle.dumps(["the", Marker(marker)]))
    with pytest.raises(FxpError, match="names builtins.exec"):
        read_vocab(tmp_path)
    assert not marker.exists(), "the pickle ran"
