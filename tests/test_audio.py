"""The audio kind: decoding and bad files (one line naming the file), crop/pad and windows, spectrograms, SpecAugment;
then one small fsdd run (tests/conftest.py's fsdd_run) read by predict, val, export and show."""
from __future__ import annotations

import json
import wave

import numpy as np
import pytest
import torch

from conftest import AUDIO_TINY, assert_one_line_error, fsdd_subset, need_data, run_fxp, summary
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
    (lambda p: write_wav(p, []), "empty audio file"),
    (lambda p: p.write_text("not a sound at all\n"), "unreadable audio file"),
])
def test_bad_files_are_one_line_naming_the_file(tmp_path, make, says):
    f = tmp_path / "clip.wav"
    make(f)
    with pytest.raises(FxpError) as e:
        audio.decode(f, 8000)
    assert says in str(e.value) and str(f) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.slow  # librosa's first import (numba) takes seconds
def test_stereo_44k_is_mono_at_the_task_rate(tmp_path):
    t = np.arange(4410) / 44100
    left = np.sin(2 * np.pi * 440 * t)
    f = write_wav(tmp_path / "s.wav", np.stack([left, -left], 1).ravel(), rate=44100, channels=2)
    w = audio.decode(f, 8000)
    assert w.ndim == 1 and abs(len(w) - 800) <= 1 and np.abs(w).max() < 1e-3  # the channels cancel out


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
def test_bad_file_in_the_listing_stops_before_training(fxp, tmp_path):
    bad = tmp_path / "fake.wav"
    bad.write_text("hello")
    data = fsdd_subset(tmp_path / "data", per_class=2, extra=((bad, "one"),))
    r = fxp("train", "task=fsdd", f"data.path={data}", "trainer.epochs=1", *AUDIO_TINY)
    assert_one_line_error(r, str(bad), "unreadable audio file")
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
