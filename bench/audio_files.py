"""CPU benchmark of audio FILES: `fxp train task=fsdd` beside a raw PyTorch loop on the same clips, decoded once.

The Free Spoken Digit Dataset of shared/data (2,000 8 kHz wavs; the listing's is_valid split: 1,800 train, 200 valid),
fxp.models.audio_cnn, the fsdd preset's spectrograms (log-mel, n_fft 256, hop 128, 64 mels, 1 s windows), EPOCHS
epochs at bs 64 and lr 1e-2 (the trainer's defaults), in one process:

  raw   the files decoded once by hand (soundfile, each clip centred in 2 s of zeros, torch's STFT, librosa's mel
        filter bank, ln(power + 1e-6)), then a hand-written loop doing the work fxp does per batch: a random 1 s
        window in training (the centre one in validation), two frequency and two time masks of up to 8 bins/frames
        and a ±6 dB gain, per-clip standardisation as the network's first step, AdamW + OneCycleLR as fastai's
        fit_one_cycle, a validation pass per epoch
  fxp   `fxp train task=fsdd` in-process with data.cache=off, so that every round decodes the files again (the
        decode-once step it times and prints: "audio cache: N spectrograms computed in X s")

Training seconds: the fit only (raw) or the sum of metrics.csv's epoch times (fxp). Decode seconds: raw's decode
loop; fxp's printed build time. Each way runs a warm-up round (not counted) then ROUNDS timed ones, interleaved;
the minimum is shown. Other processes on a shared 2-core box distort every figure: the load average is printed.

Run:  .venv/bin/python bench/audio_files.py [EPOCHS]   (EPOCHS defaults to 3; BENCH_THREADS=1 on a busy box)
The last lines are `fxp/raw=<ratio>` for training seconds and `fxp/raw (decode + train)=<ratio>`.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
import torch  # noqa: E402

# BENCH_THREADS=1 on a shared box: torch's threads spin-wait when other processes hold the cores
THREADS = int(os.environ.get("BENCH_THREADS") or os.cpu_count() or 1)
torch.set_num_threads(THREADS)

import librosa  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import soundfile  # noqa: E402
from torch import nn  # noqa: E402

import fxp.config  # noqa: E402
import fxp.train  # noqa: E402
from fxp.models import audio_cnn  # noqa: E402
from fxp.runs import read_metrics  # noqa: E402
from fxp.writer import Run  # noqa: E402

DATA = Path(os.environ.get("FXP_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
ROOT = DATA / "fsdd"
SEED, ROUNDS, BS, LR = 42, 2, 64, 1e-2
SR, N_FFT, HOP, N_MELS, SECONDS = 8000, 256, 128, 64, 1.0
MASK, N_MASKS, GAIN_DB = 8, 2, 6.0
MOMS, WD, EPS, SQR_MOM, PCT_START, DIV, DIV_FINAL = (0.95, 0.85, 0.95), 0.01, 1e-5, 0.99, 0.25, 25.0, 1e5
WINDOW = int(SECONDS * SR) // HOP + 1  # STFT frames (center=True) of one window
TOTAL = int(2 * SECONDS * SR) // HOP + 1  # frames of the 2 s each clip is centred in


# ---------------------------------------------------------------- raw PyTorch


def raw_decode(files: list[Path]) -> tuple[torch.Tensor, torch.Tensor]:
    "Every file's log-mel spectrogram [N, n_mels, TOTAL] of the clip centred in 2 s, and each clip's length in frames."
    fb = torch.from_numpy(librosa.filters.mel(sr=SR, n_fft=N_FFT, n_mels=N_MELS))
    window = torch.hann_window(N_FFT)
    specs, lengths = [], []
    for f in files:
        wave, sr = soundfile.read(str(f), dtype="float32", always_2d=True)
        wave = wave.mean(1)
        assert sr == SR, f"{f}: {sr} Hz"
        wave = wave[max(0, (len(wave) - 2 * SR) // 2):][:2 * SR]
        placed = np.zeros(2 * SR, dtype=np.float32)
        start = (2 * SR - len(wave)) // 2
        placed[start:start + len(wave)] = wave
        power = torch.stft(torch.from_numpy(placed), N_FFT, HOP, window=window, center=True, pad_mode="constant",
                           return_complex=True).abs().pow(2)
        specs.append(torch.log(fb @ power + 1e-6))
        lengths.append(min(len(wave) // HOP + 1, TOTAL))
    return torch.stack(specs), torch.tensor(lengths)


def raw_windows(specs, lengths, train: bool):
    "A random 1 s window of each clip (training) or its centre one, [N, 1, n_mels, WINDOW]."
    u = torch.rand(len(specs)) if train else torch.full((len(specs),), 0.5)
    first = (TOTAL - lengths.float()) / 2
    start = (first + (lengths.float() - WINDOW) * u).floor().long().clamp(0, TOTAL - WINDOW)
    idx = (start[:, None] + torch.arange(WINDOW))[:, None, :].expand(-1, N_MELS, -1)
    return torch.gather(specs, 2, idx).unsqueeze(1)


def raw_augment(x):
    "Two frequency and two time masks (filled with the clip's mean) and a random gain, per clip."
    n, _, m, w = x.shape
    fill = x.mean(dim=(1, 2, 3), keepdim=True)
    for length, view in ((m, (1, 1, m, 1)), (w, (1, 1, 1, w))):
        for _ in range(N_MASKS):
            width = torch.randint(0, MASK + 1, (n, 1, 1, 1))
            start = (torch.rand(n, 1, 1, 1) * (length - width).clamp(min=1)).long()
            pos = torch.arange(length).view(view)
            x = torch.where((pos >= start) & (pos < start + width), fill, x)
    return x + (torch.rand(n, 1, 1, 1) * 2 - 1) * GAIN_DB * 0.2302585  # dB → ln of power


class PerClip(nn.Module):
    def forward(self, x):
        return (x - x.mean(dim=(1, 2, 3), keepdim=True)) / (x.std(dim=(1, 2, 3), keepdim=True) + 1e-5)


def raw_fit(data, n_out: int, epochs: int) -> float:
    xt, nt, yt, xv, nv, yv = data
    torch.manual_seed(SEED)
    model = nn.Sequential(PerClip(), audio_cnn(n_out=n_out))
    params = list(model.parameters())
    groups = [dict(params=[p for p in params if p.ndim > 1], weight_decay=WD),
              dict(params=[p for p in params if p.ndim <= 1], weight_decay=0.0)]
    opt = torch.optim.AdamW(groups, lr=LR, betas=(MOMS[0], SQR_MOM), eps=EPS)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=LR, total_steps=epochs * (len(xt) // BS), pct_start=PCT_START, anneal_strategy="cos",
        base_momentum=MOMS[1], max_momentum=MOMS[0], div_factor=DIV, final_div_factor=DIV_FINAL / DIV)
    g = torch.Generator().manual_seed(SEED)
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        idx = torch.randperm(len(xt), generator=g)
        for i in range(0, len(idx) - BS + 1, BS):
            b = idx[i:i + BS]
            xb = raw_augment(raw_windows(xt[b], nt[b], train=True))
            nn.functional.cross_entropy(model(xb), yt[b]).backward()
            opt.step()
            opt.zero_grad()
            sched.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(xv), 2 * BS):
                out = model(raw_windows(xv[i:i + 2 * BS], nv[i:i + 2 * BS], train=False))
                nn.functional.cross_entropy(out, yv[i:i + 2 * BS])
                correct += (out.argmax(1) == yv[i:i + 2 * BS]).sum().item()
    raw_fit.accuracy = correct / len(xv)
    return time.perf_counter() - t0


# ---------------------------------------------------------------- fxp


def fxp_fit(tmp: Path, tag: str, epochs: int) -> tuple[float, float, float]:
    "One in-process `fxp train task=fsdd`: its epochs' seconds, its printed decode seconds and its last accuracy."
    from hydra import compose, initialize_config_module

    overrides = ["task=fsdd", f"data.path={ROOT}", "data.cache=off", f"trainer.epochs={epochs}", f"trainer.bs={BS}",
                 f"trainer.lr={LR}"]
    with initialize_config_module("fxp.conf", version_base="1.3"):
        cfg = fxp.config.validate(compose("config", overrides=overrides))
    out = io.StringIO()
    with Run(tmp / tag, cfg, overrides=overrides, task=cfg.task.kind) as run, contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(out):
        fxp.train.train(cfg, run)
    rows = read_metrics(run.path)
    decode_s = float(re.search(r"spectrograms computed in ([\d.]+) s", out.getvalue()).group(1))
    return sum(r["time"] for r in rows), decode_s, float(rows[-1]["accuracy"])


# ---------------------------------------------------------------- report


def main(epochs: int) -> None:
    df = pd.read_csv(ROOT / "labels.csv")
    vocab = sorted(df.digit.unique())
    valid = df.is_valid.astype(str).str.lower().eq("true").to_numpy()
    files = [ROOT / f for f in df.fname]
    y = torch.tensor([vocab.index(d) for d in df.digit])
    times = {"raw": [], "fxp": []}
    decodes = {"raw": [], "fxp": []}
    acc = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(ROUNDS + 1):  # round 0: warm-up; interleaved, so machine load hits both ways alike
            t0 = time.perf_counter()
            specs, lengths = raw_decode(files)
            decodes["raw"].append(time.perf_counter() - t0)
            t, v = torch.from_numpy(~valid), torch.from_numpy(valid)
            times["raw"].append(raw_fit((specs[t], lengths[t], y[t], specs[v], lengths[v], y[v]), len(vocab), epochs))
            acc["raw"] = raw_fit.accuracy
            train_s, decode_s, acc["fxp"] = fxp_fit(Path(tmp), f"r{r}", epochs)
            times["fxp"].append(train_s)
            decodes["fxp"].append(decode_s)
    best = {w: min(t[1:]) for w, t in times.items()}
    dec = {w: min(d[1:]) for w, d in decodes.items()}
    print(f"\nfsdd wavs, audio_cnn: {int((~valid).sum())} train / {int(valid.sum())} valid clips, {epochs} epochs, "
          f"bs {BS}, {THREADS} threads, load average {os.getloadavg()[0]:.2f}")
    print(f"{'way':<5}{'decode s':>9}{'train s':>9}{'accuracy':>10}   train s of all rounds, 1st = warm-up")
    for w in times:
        print(f"{w:<5}{dec[w]:>9.2f}{best[w]:>9.2f}{acc[w]:>10.3f}   " + " ".join(f"{t:.2f}" for t in times[w]))
    print(f"fxp/raw (decode + train)={(dec['fxp'] + best['fxp']) / (dec['raw'] + best['raw']):.2f}")
    print(f"fxp/raw={best['fxp'] / best['raw']:.2f}", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if sys.argv[1:] else 3)
