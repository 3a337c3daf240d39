"""The audio kind: decoding and bad files (one line naming the file), crop/pad and windows, spectrograms, SpecAugment;
then one small fsdd run (tests/conftest.py's fsdd_run) read by predict, val, export and show."""
from __future__ import annotations

import csv
import json
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import (
    AUDIO_SWEEP,
    AUDIO_TINY,
    assert_one_line_error,
    fsdd_subset,
    metrics_rows,
    need_data,
    run_fxp,
    summary,
)
from fxp.errors import FxpError
from fxp.tasks import audio

S = {"sample_rate": 8000, "duration": 0.5, "n_fft": 256, "hop_length": 64, "n_mels": 32, "scale": "log",
     "placed_in": 2.0}


def write_wav(path, samples, rate=8000, channels=1):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.asarray(samples) * 3000).astype("<i2").tobytes())
    return path


@pytest.mark.parametrize("make, says", [
    (lambda p: p.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt "), "unreadable audio file"),  # cut short in its header
    (lambda p: write_wav(p, []), "empty audio file"),  # a header, no samples
    (lambda p: p.write_bytes(b""), "empty audio file"),  # 0 bytes
    (lambda p: p.write_text("not a sound at all\n"), "unreadable audio file"),
])
def test_bad_files_are_one_line_naming_the_file(tmp_path, make, says):
    f = tmp_path / "clip.wav"
    make(f)
    with pytest.raises(FxpError) as e:
        audio.decode(f, 8000)
    assert says in str(e.value) and str(f) in str(e.value) and "\n" not in str(e.value)


def test_stereo_44k_is_mono_at_the_task_rate(tmp_path):
    t = np.arange(4410) / 44100
    left = np.sin(2 * np.pi * 440 * t)
    f = write_wav(tmp_path / "s.wav", np.stack([left, -left], 1).ravel(), rate=44100, channels=2)
    w = audio.decode(f, 8000)
    assert w.ndim == 1 and abs(len(w) - 800) <= 1 and np.abs(w).max() < 1e-3  # the channels cancel out


def test_a_tone_resampled_is_the_same_tone_at_the_task_rate(tmp_path):
    "librosa.resample's length (ceil of samples x ratio) and a 440 Hz tone still 440 Hz, away from the clip's edges."
    tone = lambda rate, n: np.sin(2 * np.pi * 440 * np.arange(n) / rate).astype(np.float32)  # noqa: E731
    w = audio.decode(write_wav(tmp_path / "t.wav", tone(44100, 4411), rate=44100), 8000)
    assert len(w) == 801 and w.dtype == np.float32  # ceil(4411 * 8000 / 44100) = ceil(800.18)
    assert np.abs(w * 32768 / 3000 - tone(8000, 801))[100:-100].max() < 0.01  # write_wav's 16-bit scale


def test_crop_and_pad_centre_the_clip():
    out, n = audio.placed(np.ones(10, np.float32), 20)
    assert n == 10 and out[:5].sum() == 0 and out[5:15].sum() == 10 and out[15:].sum() == 0
    out, n = audio.placed(np.arange(30, dtype=np.float32), 20)
    assert n == 20 and out[0] == 5 and out[-1] == 24


def test_a_clip_shorter_than_n_fft_is_padded(tmp_path):
    f = write_wav(tmp_path / "short.wav", np.random.default_rng(0).normal(0, 0.3, 100))  # 100 < n_fft samples
    x = audio.clip_spectrogram(f, S)
    assert x.shape == (1, 32, audio.frames(S, 0.5)) and torch.isfinite(x).all()


def test_windows_random_in_training_centred_otherwise():
    total, w = audio.frames(S, 1.0), audio.frames(S, 0.5)
    specs = torch.arange(total).float().expand(3, 32, total).clone()
    lengths = torch.tensor([10, total, w])
    centre = audio.windows(specs, lengths, torch.full((3,), 0.5), s=S)
    assert centre.shape == (3, 1, 32, w) and (centre[:, 0, 0, 0] == (total - w) // 2).all()
    starts = {int(audio.starts(lengths[1:2], S, torch.rand(1))) for _ in range(50)}
    assert len(starts) > 5 and min(starts) >= 0 and max(starts) <= total - w


def test_spec_augment_masks_and_gain():
    x = torch.randn(4, 1, 32, 40)
    y = audio.spec_augment(x, {"freq_mask": 8, "time_mask": 8, "masks": 2, "gain_db": 0.0})
    assert y.shape == x.shape and (y != x).any() and not (y == x).all()
    assert not torch.equal(audio.spec_augment(x, {"freq_mask": 0, "time_mask": 0, "masks": 2, "gain_db": 6.0}), x)


@pytest.mark.slow
@pytest.mark.parametrize("make, says", [
    (lambda p: p.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt "), "unreadable audio file"),  # a corrupt wav
    (lambda p: p.write_bytes(b""), "empty audio file"),  # an empty wav
    (lambda p: p.write_text("hello"), "unreadable audio file"),  # a text file renamed .wav
])
def test_bad_file_in_the_listing_stops_before_training(fxp, tmp_path, make, says):
    bad = tmp_path / "fake.wav"
    make(bad)
    data = fsdd_subset(tmp_path / "data", per_class=2, extra=((bad, "one"),))
    r = fxp("train", "task=fsdd", f"data.path={data}", "trainer.epochs=1", *AUDIO_TINY)
    assert_one_line_error(r, str(bad), says)
    assert "epoch" not in r.stdout


@pytest.mark.slow
def test_fsdd_run_learns_and_predicts_seven(fsdd_run, tmp_path):
    s = summary(fsdd_run)
    assert s["best_metrics"]["accuracy"] >= 0.5, s  # 10 classes: a broken pipeline stays near the baseline's 0.1
    seven = need_data("fsdd") / "recordings" / "7_theo_0.wav"
    r = run_fxp("predict", fsdd_run, seven, "--json", cwd=tmp_path)
    assert r.returncode == 0, r
    row = json.loads(r.stdout)[0]
    assert row["label"] in ("seven", "one", "two", "three", "four", "five", "six", "eight", "nine", "zero")
    assert 0 < row["probability"] <= 1
    assert (fsdd_run / "plots" / "confusion_matrix.png").is_file() and (fsdd_run / "plots" / "top_losses.png").is_file()


@pytest.mark.slow
def test_fsdd_run_exports_onnx_with_its_spectrogram_settings(fsdd_run, tmp_path):
    r = run_fxp("export", fsdd_run, "--format", "onnx", cwd=tmp_path)
    assert r.returncode == 0, r
    meta = json.loads((fsdd_run / "export" / "onnx" / "model.json").read_text())
    assert meta["parity"]["passed"] and meta["preprocessing"]["sample_rate"] == 8000
    import onnxruntime

    x = audio.clip_spectrogram(need_data("fsdd") / "recordings" / "7_theo_0.wav", meta["preprocessing"])[None]
    out = onnxruntime.InferenceSession(str(fsdd_run / "export" / "onnx" / "model.onnx")).run(None, {"spectrogram":
                                                                                                     x.numpy()})[0]
    r = run_fxp("predict", fsdd_run, need_data("fsdd") / "recordings" / "7_theo_0.wav", "--json", cwd=tmp_path)
    assert meta["classes"][int(out.argmax())] == json.loads(r.stdout)[0]["label"]


@pytest.mark.slow
def test_fsdd_run_val_gives_back_the_metrics_of_its_model_epoch(fsdd_run, tmp_path):
    "`fxp val` on an audio run: its own valid split through the saved spectrogram pipeline, as metrics.csv recorded."
    r = run_fxp("val", fsdd_run, "--json", cwd=tmp_path)
    assert r.returncode == 0, r
    result = json.loads(r.stdout)
    assert result["items"] == 40  # fsdd_subset: 12 clips of each digit, a third of them valid
    assert result["metrics"] == pytest.approx(result["trained"], abs=1e-4)
    per_class = result["evaluation"]["per_class"]
    assert len(per_class) == 10 and sum(c["support"] for c in per_class.values()) == 40
    dest = max((fsdd_run / "eval").iterdir())
    assert (dest / "confusion_matrix.png").stat().st_size > 1000 and (dest / "top_losses.png").is_file()


# --- fxp clean on an audio run: spectrograms on the contact sheet, a player for each clip on the page -----------------


@pytest.mark.slow
def test_clean_lists_an_audio_runs_clips_with_spectrograms_and_a_player_each(fsdd_run, tmp_path):
    import soundfile
    from PIL import Image

    from browser import page
    from fxp.data import CLEAN_COLS

    r = run_fxp("clean", fsdd_run, "--top", "5", cwd=tmp_path)
    assert r.returncode == 0, r
    rows = list(csv.DictReader(open(fsdd_run / "clean" / "top_losses.csv")))
    assert tuple(rows[0]) == CLEAN_COLS and len(rows) == 5
    losses = [float(row["loss"]) for row in rows]
    assert losses == sorted(losses, reverse=True) and losses[0] > 0.1
    assert all(row["file"].endswith(".wav") and Path(row["file"]).is_file() for row in rows)  # absolute: fsdd_subset
    with Image.open(fsdd_run / "clean" / "top_losses.png") as im:
        assert im.width > 1000  # five spectrograms side by side
    html = (fsdd_run / "clean" / "top_losses.html").read_text()
    assert html.count("<audio controls") == 5 and "<img" not in html
    with page() as tab:  # the page plays the files themselves: each player knows its clip's length
        tab.goto((fsdd_run / "clean" / "top_losses.html").as_uri())
        tab.wait_for_load_state("load")
        durations = tab.evaluate("""() => Promise.all([...document.querySelectorAll('audio')].map(a =>
            new Promise(done => { a.onloadedmetadata = () => done(a.duration); a.onerror = () => done(-1);
                                  a.preload = 'metadata'; a.load(); })))""")
    assert durations == pytest.approx([soundfile.info(row["file"]).duration for row in rows], abs=0.01)


@pytest.mark.slow  # librosa's first import, the clips decoded
def test_the_lists_leave_out_and_relabel_audio_clips_and_a_multi_label_run_takes_none(tmp_path):
    "data.exclude and data.relabel on an audio run: fxp clean's CSV, matched by file, before the loaders are built."
    from hydra import compose, initialize_config_module

    from fxp import config

    data = fsdd_subset(tmp_path / "data", per_class=2)
    files = list(csv.DictReader(open(data / "labels.csv")))
    marked = tmp_path / "marked.csv"
    marked.write_text(f"file,action\n{files[0]['fname']},delete\n{files[1]['fname']},relabel:nine\n")
    with initialize_config_module("fxp.conf", version_base="1.3"):
        cfg = config.validate(compose("config", overrides=[
            "task=fsdd", f"data.path={data}", *AUDIO_TINY, "data.cache=off", f"data.exclude={marked}",
            f"data.relabel={marked}"]))
        with pytest.raises(Exception) as refused:
            config.validate(compose("config", overrides=["task=fsdd_tags", f"data.path={data}",
                                                         f"data.exclude={marked}"]))
    dls = audio.dls(cfg, torch.device("cpu"))
    kept = [f for dl in (dls.train, dls.valid) for f in dl.dataset.meta["files"]]
    assert len(kept) == len(files) - 1 and files[0]["fname"] not in kept
    assert dls.curated["excluded"] == 1 and dls.curated["relabelled"] == 1
    ds = next(dl.dataset for dl in (dls.train, dls.valid) if files[1]["fname"] in dl.dataset.meta["files"])
    assert dls.vocab[int(ds.tensors[2][ds.meta["files"].index(files[1]["fname"])])] == "nine"
    assert "multi-label" in str(refused.value) and "data.exclude" in str(refused.value)


# --- sweeps, trackers and resume on audio runs (tests/conftest.py's fsdd_sweep: 2 jobs of 2 epochs on 60 clips) -------


@pytest.mark.slow
def test_a_sweep_of_audio_runs_writes_a_row_per_job_and_points_at_the_best(fsdd_sweep):
    _, jobs = fsdd_sweep
    rows = list(csv.DictReader(open(jobs[0].parent / "sweep.csv")))
    assert [(row["job"], row["status"]) for row in rows] == [("0", "completed"), ("1", "completed")]
    assert "trainer.lr=0.003" in rows[0]["overrides"] and "trainer.lr=0.01" in rows[1]["overrides"]
    best = json.loads((jobs[0].parent / "best.json").read_text())
    assert best["metric"] == "accuracy" and best["value"] == max(float(row["best_accuracy"]) for row in rows)
    assert all(summary(job)["items_train"] == 40 and summary(job)["items_valid"] == 20 for job in jobs)


@pytest.mark.slow
def test_tensorboard_holds_each_epoch_of_an_audio_run(fsdd_sweep):
    pytest.importorskip("tensorboard", reason="pip install -e '.[trackers]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for job in fsdd_sweep[1]:
        events = EventAccumulator(str(job / "tensorboard"))
        events.Reload()
        rows = metrics_rows(job)
        for name in ("train_loss", "valid_loss", "accuracy"):
            logged = [(s.step, s.value) for s in events.Scalars(name)]
            assert logged == [(int(r["epoch"]), pytest.approx(float(r[name]), rel=1e-5)) for r in rows], name


@pytest.mark.slow
def test_an_interrupted_audio_run_resumes_to_the_curves_of_the_run_never_stopped(fsdd_sweep, tmp_path):
    "Stopped after its first epoch (Ctrl-C as the checkpoint is written), resumed: the sweep's first job's curves."
    from test_resume import curves, interrupt_after

    data, jobs = fsdd_sweep
    with interrupt_after(1):
        r = run_fxp("train", *AUDIO_SWEEP, f"data.path={data}", "trainer.lr=3e-3", cwd=tmp_path)
    assert r.returncode == 130 and "fxp resume" in r.err_lines[-1], r
    run = next(tmp_path.glob("outputs/fsdd/*"))
    assert summary(run)["status"] == "interrupted" and len(metrics_rows(run)) == 1
    r = run_fxp("resume", run, cwd=tmp_path)
    assert r.returncode == 0 and "resumed at stage 1 epoch 1" in r.stdout, r
    assert summary(run)["status"] == "completed" and curves(run) == curves(jobs[0])
