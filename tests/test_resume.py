"""`fxp resume`: a run stopped after any epoch goes on in its own folder and ends with the metrics.csv of the run that
was never stopped (times aside); --extend; the refusals that change nothing; overrides a resume may take.

A stop is made in this process: KeyboardInterrupt right after the k-th checkpoint is written (what Ctrl-C, SIGTERM or
a kill between two epochs leave); tests/test_kill.py kills real processes at random moments. Digits on CPU, seeded.
"""
import json
import os
import shutil
from contextlib import contextmanager

import pytest
import yaml

from conftest import (
    assert_one_line_error,
    copy_exported,
    metrics_rows,
    need_data,
    newest_run,
    run_fxp,
    subprocess_env,
    summary,
)
from fxp.runs import TIMES

# fit_one_cycle, fastai's fine_tune (a frozen fit, then an unfrozen one) and fit: 2 + (1 + 2) + 1 = 6 epochs
# (no plots: what is compared is metrics.csv; drawing them costs these small runs as much as their training)
RECIPE = ("trainer.stages=[{epochs:2},{policy:fine_tune,epochs:2,lr:1e-3},{policy:fit,epochs:1,lr:1e-4}]",
          "trainer.plots=false")
# (stage, epoch within it) after each of the 6 epochs
PLACES = [(1, 1), (1, 2), (2, 1), (2, 2), (2, 3), (3, 1)]


@contextmanager
def interrupt_after(k: int, step: str | None = None):
    "Ctrl-C right after the k-th checkpoint (of `step`, if given) is written in this process."
    from fxp import callbacks

    save, seen = callbacks.LastCheckpoint.after_epoch, []

    def after_epoch(self):
        save(self)
        if step is None or self.step == step:
            seen.append(1)
            if len(seen) == k:
                raise KeyboardInterrupt

    callbacks.LastCheckpoint.after_epoch = after_epoch
    try:
        yield
    finally:
        callbacks.LastCheckpoint.after_epoch = save


def curves(run, sub: str = "") -> list[dict]:
    "metrics.csv without its time columns."
    return [{k: v for k, v in r.items() if k not in ("time", *TIMES)} for r in metrics_rows(run / sub)]


def stopped(cwd, k: int, *args, step=None):
    "A run of `args` in `cwd` stopped after its k-th checkpoint: its folder."
    with interrupt_after(k, step):
        r = run_fxp("train", *args, cwd=cwd)
    assert r.returncode == 130, r
    assert "fxp resume" in r.err_lines[-1] and "is kept" in r.err_lines[-1], r
    return newest_run(cwd)


def resume(run, *args):
    r = run_fxp("resume", str(run), *args, cwd=run.parent)
    assert r.returncode == 0, r
    return r


def snapshot(folder) -> dict:
    "Every file of a folder with its bytes: to show that a refused resume changed nothing."
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("reference")
    r = run_fxp("train", *RECIPE, cwd=cwd)
    assert r.returncode == 0, r
    return newest_run(cwd)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    "A 3-epoch digits run without plots stopped after its first epoch (copy it before changing it)."
    return stopped(tmp_path_factory.mktemp("interrupted"), 1, "trainer.epochs=3", "trainer.plots=false")


@pytest.fixture
def stopped_copy(interrupted, tmp_path):
    dest = tmp_path / "outputs" / "digits" / interrupted.name
    shutil.copytree(interrupted, dest)
    return dest


# --- the same metrics as the run never stopped ---------------------------------------------------------------


def ends_as_the_reference(run, reference, resumed):
    "The resumed run: completed with the uninterrupted run's metrics, each resume recorded at its (stage, epoch)."
    assert curves(run) == curves(reference)
    s = summary(run)
    assert s["status"] == "completed" and s["epochs"] == 6 and s["model_epoch"] == summary(reference)["model_epoch"]
    assert [(x["status"], x["stage"], x["epoch"]) for x in s["resumes"]] == [("interrupted", *at) for at in resumed]
    log = (run / "train.log").read_text()
    assert all(f"resumed at stage {stage} epoch {epoch}" in log for stage, epoch in resumed)
    assert (run / "model.pkl").is_file() and not list(run.rglob("*.tmp"))


# after epochs 2 and 4: test_stopped_twice_records_each_resume
@pytest.mark.slow
@pytest.mark.parametrize("k", [1, 3, 5])
def test_resumed_after_any_epoch_ends_as_the_uninterrupted_run(reference, tmp_path, k):
    run = stopped(tmp_path, k, *RECIPE)
    assert summary(run)["status"] == "interrupted" and len(metrics_rows(run)) == k
    r = resume(run)
    stage, epoch = PLACES[k - 1]
    assert f"resumed at stage {stage} epoch {epoch}" in r.stdout
    ends_as_the_reference(run, reference, [PLACES[k - 1]])


@pytest.mark.slow
def test_stopped_twice_records_each_resume(reference, tmp_path):
    "Stopped after epoch 2 (the end of a stage), then its resume after epoch 4 (inside fine_tune's unfrozen fit)."
    run = stopped(tmp_path, 2, *RECIPE)
    with interrupt_after(2):
        r = run_fxp("resume", str(run), cwd=tmp_path)
    assert r.returncode == 130, r
    assert f"resumed at stage {PLACES[1][0]} epoch {PLACES[1][1]}" in r.stdout
    assert len(metrics_rows(run)) == 4 and summary(run)["status"] == "interrupted"
    r = resume(run)
    assert f"resumed at stage {PLACES[3][0]} epoch {PLACES[3][1]}" in r.stdout
    ends_as_the_reference(run, reference, [PLACES[1], PLACES[3]])


@pytest.mark.slow
def test_extend_trains_a_completed_run_further_as_a_new_stage(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    r = run_fxp("train", "trainer.epochs=2", "trainer.plots=false", cwd=tmp_path / "a")  # metrics.csv is compared
    assert r.returncode == 0, r
    run = newest_run(tmp_path / "a")
    r = resume(run, "--extend", "2")
    assert "extended by 2 epochs: stage 2" in r.stdout
    r = run_fxp("train", "trainer.stages=[{epochs:2},{epochs:2}]", "trainer.plots=false", cwd=tmp_path / "b")
    assert r.returncode == 0, r
    assert curves(run) == curves(newest_run(tmp_path / "b"))  # as if the stage had been in the recipe
    s = summary(run)
    assert s["status"] == "completed" and s["epochs"] == 4 and s["resumes"][0]["extend"] == 2
    assert [st["epochs"] for st in yaml.safe_load((run / "config.yaml").read_text())["trainer"]["stages"]] == [None, 2]
    before = snapshot(run)
    assert_one_line_error(run_fxp("resume", str(run), cwd=tmp_path), "completed", "--extend")
    assert snapshot(run) == before


@pytest.mark.slow
def test_resume_takes_overrides_that_keep_the_results(stopped_copy):
    resume(stopped_copy, "trainer.num_workers=0", "trainer.num_threads=1", "logger=csv", "trainer.device=cpu")
    s = summary(stopped_copy)
    assert s["status"] == "completed" and len(metrics_rows(stopped_copy)) == 3
    assert s["resumes"][0]["overrides"] == ["trainer.num_workers=0", "trainer.num_threads=1", "logger=csv",
                                            "trainer.device=cpu"]


# --- nothing to resume: one line, nothing changed ------------------------------------------------------------


def set_summary(run, **fields):
    s = summary(run)
    s.update(fields)
    (run / "summary.json").write_text(json.dumps(s))


@pytest.mark.slow
@pytest.mark.parametrize("case, mentions", [
    ("no checkpoint", ["no checkpoint"]),
    ("completed", ["completed", "--extend"]),
    ("diverged", ["diverged"]),
    ("running", ["still running", f"pid {os.getpid()}"]),
    ("config", ["no longer validates", "trainer.foo"]),
    ("override", ["trainer.lr", "trainer.num_workers"]),
    ("extend", ["--extend", "interrupted"]),
    ("not a run", ["not a run folder"]),
])
def test_nothing_to_resume_is_one_line_and_changes_nothing(stopped_copy, case, mentions):
    from fxp.runs import HOST, _proc_start

    run, args = stopped_copy, []
    if case == "no checkpoint":
        shutil.rmtree(run / "checkpoints")
    elif case in ("completed", "diverged"):
        set_summary(run, status=case)
    elif case == "running":
        set_summary(run, status="running", process=dict(pid=os.getpid(), host=HOST, start=_proc_start(os.getpid())))
    elif case == "config":
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        cfg["trainer"]["foo"] = 1
        (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    elif case == "override":
        args = ["trainer.lr=0.1"]
    elif case == "extend":
        args = ["--extend", "2"]
    elif case == "not a run":
        (run / "config.yaml").unlink()
    before = snapshot(run)
    assert_one_line_error(run_fxp("resume", str(run), *args, cwd=run.parent), *mentions)
    assert snapshot(run) == before


def test_a_run_whose_data_moved_resumes_with_the_data_path_its_error_names(tmp_path):
    """The refusal says `fxp resume RUN data.path=NEW`, and that override is then taken: the saved config is checked
    with the resume's overrides applied, not before them (it refused again, naming the old path)."""
    from fxp.errors import ConfigError
    from fxp.resume import saved_config

    run = copy_exported(tmp_path, "classification") / "classification"  # trained on data now gone: /absent/...
    with pytest.raises(ConfigError, match="data.path=NEW"):
        saved_config(run, [], None)
    data = need_data("mnist_tiny")
    assert saved_config(run, [f"data.path={data}"], None).data.path == str(data)


# --- a run folder is claimed only if new or empty (issue 17 item 2) -------------------------------------------


@pytest.mark.parametrize("what", ["a file", "a sweep", "a run without its config.yaml", "the current folder"])
def test_a_folder_that_is_not_empty_is_refused_and_nothing_written(tmp_path, what):
    folder = tmp_path / "here"
    folder.mkdir()
    if what == "a file":
        (folder / "notes.txt").write_text("mine")
    elif what == "a sweep":
        (folder / "multirun.yaml").write_text("hydra: {}\n")
        (folder / "0").mkdir()
    else:
        for name in ("metrics.csv", "summary.json", "model.pkl"):
            (folder / name).write_text("x")
    before = snapshot(folder)
    where = "hydra.run.dir=" if what == "the current folder" else f"hydra.run.dir={folder}"
    r = run_fxp("train", "trainer.epochs=1", where, cwd=folder)
    assert_one_line_error(r, "not empty")
    assert snapshot(folder) == before and not (folder / "train.log").exists()


def test_run_claims_only_new_or_empty_folders(tmp_path):
    from omegaconf import OmegaConf

    from fxp.errors import FxpError
    from fxp.writer import Run

    cfg = OmegaConf.create({"task": {"monitor": {"metric": "accuracy", "mode": "max"}}, "trainer": {"seed": 1}})
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "metrics.csv").write_text("stage,epoch\n1,1\n")
    with pytest.raises(FxpError, match="not empty"):
        Run(tmp_path / "old", cfg, [], "digits").__enter__()
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == ["metrics.csv"]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "train.log").touch()  # Hydra's, opened before the job
    with Run(tmp_path / "empty", cfg, [], "digits") as run:
        assert summary(run.path)["process"]["pid"] == os.getpid()
    assert summary(tmp_path / "empty")["status"] == "completed" and "process" not in summary(tmp_path / "empty")


# --- status: killed, never running for a dead process ----------------------------------------------------------


def test_a_dead_process_shows_as_killed(tmp_path):
    import subprocess
    import sys
    import time

    from fxp.runs import HEARTBEAT_S, HOST, _proc_start, read_run

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    cases = {"dead": dict(pid=int(dead.stdout), host=HOST),
             "alive": dict(pid=os.getpid(), host=HOST, start=_proc_start(os.getpid())),
             "reused pid": dict(pid=os.getpid(), host=HOST, start="1"),
             "elsewhere, silent": dict(pid=1, host="another-host", heartbeat_s=HEARTBEAT_S),
             "elsewhere, beating": dict(pid=1, host="another-host", heartbeat_s=HEARTBEAT_S)}
    status = {}
    for name, process in cases.items():
        run = tmp_path / name
        run.mkdir()
        (run / "config.yaml").write_text("task: {monitor: {metric: accuracy, mode: max}}\n")
        (run / "summary.json").write_text(json.dumps(dict(status="running", process=process)))
        if name == "elsewhere, silent":
            past = time.time() - 11 * HEARTBEAT_S
            for f in run.iterdir():
                os.utime(f, (past, past))
        status[name] = read_run(run, tmp_path)["status"]
    assert status == {"dead": "killed", "alive": "running", "reused pid": "killed", "elsewhere, silent": "killed",
                      "elsewhere, beating": "running"}


# --- fxp reproduce --from certifies completed runs only (issue 17 item 5) ---------------------------------------


@pytest.mark.parametrize("status, code", [("completed", 0), ("interrupted", 1), ("failed", 1)])
def test_reproduce_from_certifies_only_a_completed_run(tmp_path, status, code):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({
        "task": {"monitor": {"metric": "accuracy", "mode": "max"}},
        "reproduce": {"metric": "accuracy", "published": 0.9, "mode": "max", "tolerance": 0.01, "source": "s"}}))
    (run / "summary.json").write_text(json.dumps(dict(status=status, final_metrics={"accuracy": 0.95},
                                                      wall_time_s=3.0)))
    r = run_fxp("reproduce", "--from", str(run), cwd=tmp_path)
    assert r.returncode == code, r
    assert ("above the published value by more than the tolerance" in r.stdout) == (code == 0)
    assert (f"not completed ({status})" in r.stdout) == (code == 1)


# --- a kind that trains in steps resumes inside the step it was in ------------------------------------------------

# the smallest AWD-LSTM that takes both steps' stages (what is resumed is state, not what it learns); no plots
TEXT = ("task=imdb", "model=awd_lstm_tiny", "model.kwargs.config.emb_sz=16", "model.kwargs.config.n_hid=16",
        "task.max_vocab=500", "task.lm_seq_len=48", "task.seq_len=48", "trainer.bs=32", "task.n_words=12",
        "task.prompts=[I liked this movie because]", "task.max_len=240", "trainer.plots=false",
        "task.lm_stages=[{epochs:1,lr:2e-2,freeze:true},{epochs:1,lr:5e-3,freeze:false}]",
        "trainer.stages=[{epochs:1,lr:1e-2,freeze:true},{epochs:2,lr:[1e-3,5e-3],freeze:false}]")


def text_run(cwd, *args):
    "fxp (a text run) in `cwd`: no network, no WikiText weights (none needed)."
    return run_fxp(*args, cwd=cwd, env={**subprocess_env(cwd), "FASTAI_HOME": str(cwd / ".fastai")})


@pytest.fixture(scope="module")
def imdb_quarter(tmp_path_factory, data):
    "Every tenth review of imdb_sample (both labels in both splits): resuming is about state, not about how much text."
    import pandas as pd

    folder = tmp_path_factory.mktemp("imdb_quarter")
    pd.read_csv(data("imdb_sample") / "texts.csv").iloc[::10].to_csv(folder / "texts.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def text_reference(tmp_path_factory, imdb_quarter):
    ref = tmp_path_factory.mktemp("text_ref")
    r = text_run(ref, "train", f"data.path={imdb_quarter}", *TEXT)
    assert r.returncode == 0, r
    return newest_run(ref)


@pytest.mark.slow
def test_text_resumes_inside_the_step_it_was_in(text_reference, tmp_path, imdb_quarter):
    """Stopped in the language model: it goes on there; stopped again in the classifier: the language model is not
    trained again. One run stopped twice (as test_stopped_twice_records_each_resume), so each step is resumed once."""
    with interrupt_after(1, "lm"):
        r = text_run(tmp_path, "train", f"data.path={imdb_quarter}", *TEXT)
    assert r.returncode == 130, r
    run = newest_run(tmp_path)
    with interrupt_after(2, "classifier"):
        r = text_run(tmp_path, "resume", str(run))
    assert r.returncode == 130, r
    assert "resumed at step lm stage 1 epoch 1" in r.stdout
    lm_rows = (run / "lm" / "metrics.csv").read_bytes()
    r = text_run(tmp_path, "resume", str(run))
    assert r.returncode == 0, r
    assert "resumed at stage 2 epoch 1" in r.stdout
    reference = text_reference
    assert curves(run, "lm") == curves(reference, "lm") and curves(run) == curves(reference)
    assert (run / "lm" / "samples.txt").read_text() == (reference / "lm" / "samples.txt").read_text()
    assert (run / "lm" / "metrics.csv").read_bytes() == lm_rows  # its times too: not one LM epoch ran again
    lm, lm_ref = summary(run)["lm"], summary(reference)["lm"]
    assert summary(run)["status"] == "completed"
    assert [lm[k] for k in ("final_metrics", "best_metrics", "model_epoch", "vocab")] == [
        lm_ref[k] for k in ("final_metrics", "best_metrics", "model_epoch", "vocab")]
    assert [(x["step"], x["stage"], x["epoch"]) for x in summary(run)["resumes"]] == [("lm", 1, 1),
                                                                                       ("classifier", 2, 1)]
