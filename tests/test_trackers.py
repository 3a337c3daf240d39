"""Trackers (`logger=[tensorboard,mlflow,wandb]`), each read back with its own library's reader: TensorBoard's
EventAccumulator, MLflow's client, W&B's offline run file (its records, parsed with W&B's protobuf). One 2-job
sweep with all three, one job then extended with `fxp resume`, is shared by the tests."""
from __future__ import annotations

import json
import struct

import pytest

from conftest import assert_one_line_error, metrics_rows, run_fxp


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    "Two 1-epoch jobs logging to all three trackers; job 1 then extended by an epoch with fxp resume."
    for package in ("tensorboard", "mlflow", "wandb"):
        pytest.importorskip(package, reason="pip install -e '.[trackers]'")
    cwd = tmp_path_factory.mktemp("trackers")
    r = run_fxp("train", "-m", "trainer.seed=1,2", "trainer.epochs=1", "logger=[tensorboard,mlflow,wandb]", cwd=cwd)
    assert r.returncode == 0, r
    jobs = sorted(cwd.glob("outputs/multirun/*/[0-9]"))
    ids_before = json.loads((jobs[1] / "trackers.json").read_text())
    r = run_fxp("resume", jobs[1], "--extend", "1", cwd=cwd)
    assert r.returncode == 0, r
    assert json.loads((jobs[1] / "trackers.json").read_text()) == ids_before  # the same tracker runs go on
    return cwd, jobs


@pytest.mark.slow
def test_metrics_csv_is_written_besides(sweep):
    _, jobs = sweep
    assert [len(metrics_rows(j)) for j in jobs] == [1, 2]


@pytest.mark.slow
def test_tensorboard_events_hold_each_epoch(sweep):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for job in sweep[1]:
        events = EventAccumulator(str(job / "tensorboard"))
        events.Reload()
        rows = metrics_rows(job)
        assert {"train_loss", "valid_loss", "accuracy", "lr"} <= set(events.Tags()["scalars"])
        for name in ("train_loss", "valid_loss", "accuracy", "lr"):
            logged = [(s.step, s.value) for s in events.Scalars(name)]
            assert logged == [(int(r["epoch"]), pytest.approx(float(r[name]), rel=1e-5)) for r in rows], name


def mlflow_client(job):
    from mlflow import MlflowClient

    saved = json.loads((job / "trackers.json").read_text())["mlflow"]
    return MlflowClient(tracking_uri=saved["tracking_uri"]), saved["run_id"]


@pytest.mark.slow
def test_mlflow_runs_a_child_per_job_under_the_sweeps_parent(sweep):
    cwd, jobs = sweep
    client, _ = mlflow_client(jobs[0])
    parent = json.loads((jobs[0].parent / "trackers.json").read_text())["mlflow"]["run_id"]
    experiment = client.get_experiment_by_name("digits")  # named after the task
    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(c.info.run_id for c in children) == sorted(mlflow_client(j)[1] for j in jobs)
    assert str(cwd / "outputs") in client.get_run(parent).info.artifact_uri  # the local store under outputs/
    assert client.get_run(parent).info.status == "FINISHED"
    best = max(float(r["accuracy"]) for j in jobs for r in metrics_rows(j))
    assert client.get_metric_history(parent, "best_accuracy")[-1].value == pytest.approx(best)


@pytest.mark.slow
def test_mlflow_run_has_params_metrics_per_epoch_and_artifacts(sweep):
    for seed, job in enumerate(sweep[1], 1):
        client, run_id = mlflow_client(job)
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.params["trainer.seed"] == str(seed) and run.data.params["task.kind"] == "classification"
        rows = metrics_rows(job)
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "accuracy"))
        assert history == [(int(r["epoch"]), pytest.approx(float(r["accuracy"]))) for r in rows]  # resumed: 1, 2
        files = {f.path for folder in (None, "plots") for f in client.list_artifacts(run_id, folder)}
        assert {"config.yaml", "summary.json", "model.pkl", "plots/loss_curves.png"} <= files


def wandb_records(job) -> list:
    """The records of a run's offline W&B files (a LevelDB-style log of W&B's protobuf records), oldest file first."""
    from wandb.proto import wandb_internal_pb2 as pb

    out = []
    for f in sorted(job.glob("wandb/offline-run-*/run-*.wandb")):
        data, pos, part = f.read_bytes(), 7, b""  # 7: the file's header (":W&B", magic, version)
        assert data[:4] == b":W&B"
        while pos + 7 <= len(data):
            if 32768 - pos % 32768 < 7:  # a block's tail too short for a record header: padding
                pos += 32768 - pos % 32768
                continue
            length, kind = struct.unpack("<HB", data[pos + 4:pos + 7])
            part, pos = part + data[pos + 7:pos + 7 + length], pos + 7 + length
            if kind in (1, 4) and part:  # a whole record, or the last piece of one
                record = pb.Record()
                record.ParseFromString(part)
                out.append(record)
                part = b""
    return out


@pytest.mark.slow
def test_wandb_offline_run_files_hold_each_epoch(sweep):
    for job in sweep[1]:
        saved = json.loads((job / "trackers.json").read_text())["wandb"]
        records = wandb_records(job)
        runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        assert {r.run_id for r in runs} == {saved["id"]} and runs[0].project == "digits"
        assert runs[0].run_group == job.parent.name  # the sweep's jobs: one group
        history = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item} for r in records
                   if r.WhichOneof("record_type") == "history"]
        assert [(h["epoch"], h["accuracy"]) for h in history] == [
            (int(r["epoch"]), pytest.approx(float(r["accuracy"]))) for r in metrics_rows(job)]


def test_a_missing_tracker_package_is_one_line_with_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "mlflow", None)  # as if not installed
    r = run_fxp("train", "trainer.epochs=1", "logger=[csv,mlflow]", cwd=tmp_path)
    assert_one_line_error(r, "logger mlflow needs the mlflow package", "pip install 'fxp[trackers]'")
    assert not list(tmp_path.rglob("config.yaml"))  # refused before the run folder was claimed


def test_wandb_online_without_credentials_is_refused_never_prompted(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="pip install -e '.[trackers]'")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    r = run_fxp("train", "trainer.epochs=1", "logger=wandb", "logger.wandb.mode=online", cwd=tmp_path)
    assert_one_line_error(r, "logger.wandb.mode=online needs W&B credentials", "logger.wandb.mode=offline")
