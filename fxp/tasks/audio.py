"""Audio classification through log-mel spectrograms: class folders or a CSV listing (fsdd), single- or multi-label.

Each file is decoded once (soundfile), mixed down to mono, resampled to `task.sample_rate` (soxr) and centred in a
window of twice `task.duration`; its log-mel spectrogram (librosa's filter bank on torch's STFT) goes into the
decode-once cache under a key of the files (path, size, mtime, a hash of their ends) and the spectrogram settings. A
batch is a `task.duration` window of those matrices, one channel: random in training (a random crop of a long clip,
a random place for a short one), centred in validation and prediction; SpecAugment-style masks and a gain run on the
batch's device. The network starts with the spectrograms' normalisation (per clip or the training set's statistics),
so an exported model needs only the spectrogram settings that model.json records.
Module top stays light (the schema is read before anything heavy); torch and fastai are imported where they are used.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from fxp.checks import IMAGE_MODEL, check_model
from fxp.errors import ConfigError, FxpError
from fxp.schema import Listed, TaskBase, valid

SOURCES = ("folders", "csv")
SCALES = ("log", "db")
NORMS = ("clip", "dataset")
INPUT = "audio"
AUDIO = (".wav", ".flac", ".ogg", ".aiff", ".aif")  # what soundfile decodes (libsndfile)
FLOOR = 1e-6  # added to mel power before the log (scale=log); dB: 10·log10(max(power, 1e-10))
VERSION = 1  # of the cache entries this module writes


@dataclass
class SpecAug:
    "SpecAugment-style augmentation of training batches: masks of up to N mel bins / frames, a random gain."
    freq_mask: int = field(default=8, metadata=valid("[0, inf)", whole=True))  # widest frequency mask (mel bins)
    time_mask: int = field(default=8, metadata=valid("[0, inf)", whole=True))  # widest time mask (frames)
    masks: int = field(default=2, metadata=valid("[0, 16]", whole=True))  # masks of each kind per clip
    gain_db: float = field(default=6.0, metadata=valid("[0, 60]"))  # a random gain in ±gain_db


@dataclass
class Task(Listed, TaskBase):
    "Sound files in class folders (source=folders) or listed in a CSV (fxp.schema.Listed: fn_col, folder, valid_col)."
    kind: str = "audio"
    source: str = field(default="folders", metadata=valid(choices=SOURCES))
    csv: str = "labels.csv"  # csv: the file, relative to data.path
    label_col: Any = 1  # csv: label column (name or position)
    label_delim: Optional[str] = None  # set: a multi-label task, each cell's labels separated by it
    thresh: float = field(default=0.5, metadata=valid("(0, 1)"))  # multi-label: a tag is predicted above it
    beta: float = field(default=2.0, metadata=valid("(0, inf)"))  # multi-label: F-beta's beta
    sample_rate: int = field(default=16000, metadata=valid("[1000, 192000]", whole=True))
    duration: float = field(default=1.0, metadata=valid("(0, 60]"))  # seconds each clip is cropped or padded to
    n_fft: int = field(default=512, metadata=valid("[16, 16384]", whole=True))
    hop_length: int = field(default=128, metadata=valid("[1, 16384]", whole=True))
    n_mels: int = field(default=64, metadata=valid("[8, 512]", whole=True))
    scale: str = field(default="log", metadata=valid(choices=SCALES))  # log: ln(power + 1e-6); db: decibels
    normalize: str = field(default="clip", metadata=valid(choices=NORMS))  # per clip, or the training set's mean/std
    aug: Optional[SpecAug] = field(default_factory=SpecAug)  # null: no augmentation


def check(cfg) -> None:
    "Rules across keys, checked before any heavy import (each key's own values: the schema's `valid`)."
    t = cfg.task
    check_model(cfg, *IMAGE_MODEL)
    if t.n_fft > t.sample_rate * t.duration:
        raise ConfigError(f"task.n_fft={t.n_fft} is longer than a clip (task.duration={t.duration} s at "
                          f"task.sample_rate={t.sample_rate}: {int(t.sample_rate * t.duration)} samples); lower n_fft")
    if t.n_mels > t.n_fft // 2 + 1:
        raise ConfigError(f"task.n_mels={t.n_mels}: an STFT of n_fft={t.n_fft} has {t.n_fft // 2 + 1} frequency bins; "
                          f"lower n_mels or raise n_fft")


def settings(t) -> dict:
    "What a spectrogram depends on: model.json's recipe, the cache key's settings, and what predict recomputes with."
    return {"sample_rate": int(t.sample_rate), "duration": float(t.duration), "n_fft": int(t.n_fft),
            "hop_length": int(t.hop_length), "n_mels": int(t.n_mels), "scale": str(t.scale), "window": "hann",
            "center": True, "power": 2.0, "mel": "librosa.filters.mel (slaney)", "placed_in": 2.0}


def frames(s: dict, seconds: float) -> int:
    "STFT frames (center=True) of `seconds` of audio."
    return int(round(seconds * s["sample_rate"])) // s["hop_length"] + 1


# --- decoding and spectrograms (pure functions: tests/test_audio.py) -------------------------------------------------


def decode(path, sample_rate: int):
    "The file as a mono float32 waveform at `sample_rate`; one line naming it if it is not readable audio or is empty."
    import numpy as np
    import soundfile

    if Path(path).stat().st_size == 0:  # libsndfile would call it a format it does not know
        raise FxpError(f"empty audio file: {path} is 0 bytes; remove it or set data.skip_bad=true")
    try:
        wave, sr = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile: unknown format, truncated header, not audio at all
        raise FxpError(f"unreadable audio file: {path} ({_first(e)}); remove it, convert it to wav/flac/ogg, or set "
                       f"data.skip_bad=true") from None
    if wave.size == 0:
        raise FxpError(f"empty audio file: {path} has no samples; remove it or set data.skip_bad=true")
    wave = wave.mean(1)  # mono mixdown
    if sr != sample_rate:
        try:
            wave = resample(wave, sr, sample_rate)
        except Exception as e:
            raise FxpError(f"cannot resample {path} from {sr} Hz to task.sample_rate={sample_rate} ({_first(e)}); "
                           f"set task.sample_rate= to a rate it converts to") from None
    return np.ascontiguousarray(wave, dtype=np.float32)


def resample(wave, sr: int, sample_rate: int):
    """librosa.resample's default, soxr's high quality cut or zero-padded to ceil(samples * ratio), called directly:
    importing librosa's resampler compiles its numba code on a fresh install (12 s before the first clip)."""
    import numpy as np
    import soxr

    n = int(np.ceil(len(wave) * sample_rate / sr))
    out = soxr.resample(wave, sr, sample_rate, quality="HQ")[:n]
    return np.pad(out, (0, n - len(out)))


def _first(e) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def placed(wave, n: int):
    "`wave` centred in `n` samples: zeros both sides of a shorter clip, the middle of a longer one; and its length."
    import numpy as np

    if len(wave) >= n:
        start = (len(wave) - n) // 2
        return wave[start:start + n], n
    out = np.zeros(n, dtype=np.float32)
    start = (n - len(wave)) // 2
    out[start:start + len(wave)] = wave
    return out, len(wave)


def mel_filters(s: dict):
    import librosa
    import torch

    return torch.from_numpy(librosa.filters.mel(sr=s["sample_rate"], n_fft=s["n_fft"], n_mels=s["n_mels"]))


def spectrograms(waves, s: dict, fb=None):
    "Log-mel spectrograms [N, n_mels, frames] of equal-length waveforms [N, samples] (torch's STFT, librosa's bank)."
    import torch

    x = torch.as_tensor(waves, dtype=torch.float32)
    window = torch.hann_window(s["n_fft"])
    spec = torch.stft(x, s["n_fft"], s["hop_length"], window=window, center=True, pad_mode="constant",
                      return_complex=True).abs().pow(2)
    mel = (mel_filters(s) if fb is None else fb) @ spec
    return torch.log(mel + FLOOR) if s["scale"] == "log" else 10 * torch.log10(mel.clamp(min=1e-10))


def clip_spectrogram(path, s: dict, fb=None):
    """What the model sees of a file, as prediction and validation make it: the centre `duration` window of the
    spectrogram of the clip placed in twice that; [1, n_mels, frames]."""
    spec, _ = cached_item(path, s, fb)
    return centre(spec, s)


def cached_item(path, s: dict, fb=None):
    "The spectrogram [n_mels, frames of 2 × duration] of the file placed in the cache's window, and its frames."
    wave, n = placed(decode(path, s["sample_rate"]), int(round(s["placed_in"] * s["duration"] * s["sample_rate"])))
    return spectrograms(wave[None], s, fb)[0], min(n // s["hop_length"] + 1, frames(s, s["placed_in"] * s["duration"]))


def starts(lengths, s: dict, u):
    """The first frame of each clip's window: `u` in [0, 1] sweeps it over the clip (a random crop of a long clip, a
    random place for a short one); u = 0.5 is the centre of the cached window for every clip."""
    import torch

    total, w = frames(s, s["placed_in"] * s["duration"]), frames(s, s["duration"])
    lengths = torch.as_tensor(lengths).float()
    first = (total - lengths) / 2  # where the clip starts in the cached window
    return (first + (lengths - w) * u).floor().long().clamp(0, total - w)  # u = 0.5: `centre`'s frame


def windows(specs, lengths, u, s: dict):
    "The `duration` windows [N, 1, n_mels, frames] of cached spectrograms [N, n_mels, total] at `starts`."
    import torch

    w = frames(s, s["duration"])
    idx = starts(lengths, s, u).unsqueeze(1) + torch.arange(w)
    return torch.gather(specs, 2, idx[:, None, :].expand(-1, specs.shape[1], -1).to(specs.device)).unsqueeze(1)


def centre(spec, s: dict):
    "The centre `duration` window of one cached spectrogram, [1, n_mels, frames]."
    total, w = spec.shape[-1], frames(s, s["duration"])
    start = (total - w) // 2
    return spec[None, :, start:start + w]


# --- items, labels, splits --------------------------------------------------------------------------------------------


def audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO and p.is_file())


def items(cfg) -> tuple[list[Path], list, list[bool] | None]:
    "Each item's file, its label(s) and, if the source marks it, whether it is a validation item."
    from fxp.data import data_path

    t, root = cfg.task, data_path(cfg)
    return _folders(t, root) if t.source == "folders" else _csv(t, root)


def _folders(t, root: Path):
    folder = root / (t.folder or "")
    files = [f for f in audio_files(folder) if f.parent != folder]
    if not files:
        raise FxpError(f"no sound files ({', '.join(AUDIO)}) in class folders under {folder}/<class>/; set data.path= "
                       f"or task.folder=, or use task.source=csv")
    labels = [f.parent.name if t.label_delim is None else f.parent.name.split(t.label_delim) for f in files]
    return files, labels, None


def _csv(t, root: Path):
    from fxp.data import col_name, need_labels, read_listing

    df = read_listing(root / t.csv, t, "task.csv", {"task.label_col": t.label_col})
    need_labels(df, t.label_col, t.fn_col, root / t.csv, "task.label_col")
    files = [root / (t.folder or "") / f"{name}{t.suff}" for name in df[col_name(df, t.fn_col)]]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise FxpError(f"{len(missing)} sound files listed in {t.csv} are missing, e.g. {missing[0]}; check "
                       f"data.path=, task.folder= and task.suff=")
    cells = [str(v) for v in df[col_name(df, t.label_col)]]
    labels = cells if t.label_delim is None else [[w for w in c.split(t.label_delim) if w] for c in cells]
    is_valid = [_true(v) for v in df[t.valid_col]] if t.valid_col else None
    return files, labels, is_valid


def _true(v) -> bool:
    return str(v).strip().lower() in ("true", "1", "yes", "valid")


def split(n: int, t, is_valid) -> list[bool]:
    "Whether each of `n` items is a validation item: the listing's column, else a random `valid_pct` (split_seed)."
    import numpy as np

    if is_valid is not None:
        return list(is_valid)
    rng = np.random.default_rng(t.split_seed)
    chosen = set(rng.permutation(n)[:max(1, int(round(n * t.valid_pct)))].tolist())
    return [i in chosen for i in range(n)]


def _valid(cfg, files: list, labels: list, own):
    "Which of `files` validate: `own` (the task's split of them), or a cross-validation's fold (stratified by label)."
    import numpy as np

    from fxp import folds

    marked = folds.splitter(cfg, lambda _: (np.flatnonzero(~own), np.flatnonzero(own)), labels=lambda _: labels)
    _, valid = marked(files)
    out = np.zeros(len(files), dtype=bool)
    out[list(valid)] = True
    return out


# --- the decode-once cache --------------------------------------------------------------------------------------------


def cached(files: list[Path], s: dict, cfg) -> tuple:
    """The spectrograms [N, n_mels, total] and clip lengths (frames) of `files`, and the files that are not readable
    audio (skipped with data.skip_bad, else the first is one line, before training). From the cache when its entry
    for these files and settings is there; built once otherwise (data.cache=off: computed, not stored)."""
    import hashlib
    import json

    from fxp import cachedir
    from fxp.imcache import item_key

    folder = cachedir.root(cfg.data.cache)
    keys = [item_key([str], f, cfg.data.cache_verify) for f in files]
    key = hashlib.sha256(f"audio{VERSION}|{json.dumps(s, sort_keys=True)}|{chr(10).join(keys)}".encode()).hexdigest()
    entry = folder / key[:24] if folder else None
    out = _load(entry, len(files)) if entry else None
    if out is None:
        out = _build(files, s, cfg.data.skip_bad)
        if entry:
            _store(entry, out, files)
    return out


def _build(files, s: dict, skip_bad: bool) -> tuple:
    "Decode and transform every file (threads: soundfile and the STFT release the GIL); bad files named or skipped."
    import sys
    import time
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    t0, fb = time.perf_counter(), mel_filters(s)

    def one(f):
        try:
            spec, n = cached_item(f, s, fb)
            return spec.numpy().astype(np.float32), n
        except FxpError as e:
            return str(e), 0

    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(one, files))
    bad = [(str(f), r[0]) for f, r in zip(files, done) if isinstance(r[0], str)]
    if bad and not skip_bad:
        more = f" ({len(bad) - 1} more bad files)" if len(bad) > 1 else ""
        raise FxpError(bad[0][1] + more)
    good = [r for r in done if not isinstance(r[0], str)]
    if not good:
        raise FxpError(f"none of the {len(files)} sound files is readable audio, e.g. {bad[0][0]}")
    specs = np.stack([r[0] for r in good])
    lengths = np.array([r[1] if not isinstance(r[0], str) else -1 for r in done], dtype=np.int64)
    # a note on stderr: stdout carries the command's result (`fxp val --json`, `fxp predict --json`)
    print(f"audio cache: {len(good)} spectrograms computed in {time.perf_counter() - t0:.1f} s", file=sys.stderr,
          flush=True)
    return specs, lengths, [b for b, _ in bad]


def _store(entry: Path, out: tuple, files) -> None:
    "The entry written whole: a temp folder renamed into place (`fxp cache ls` lists it; meta.json as imcache's)."
    import json
    import os
    import shutil
    import sys
    import time
    import zlib

    import numpy as np

    from fxp.cachedir import META
    from fxp.writer import write_atomic

    specs, lengths, bad = out
    tmp = entry.with_name(f"{entry.name}.tmp-{os.getpid()}")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        arrays = []
        for name, a in (("0.npy", specs), ("1.npy", lengths)):
            write_atomic(tmp / name, lambda p, a=a: np.save(open(p, "wb"), a))
            arrays.append({"file": name, "crc": zlib.crc32((tmp / name).read_bytes())})
        meta = {"version": VERSION, "split": "all", "n": len(files), "source": os.path.commonpath(map(str, files)),
                "created": time.time(), "arrays": arrays, "bad": bad}
        write_atomic(tmp / META, json.dumps(meta))
        shutil.rmtree(entry, ignore_errors=True)
        tmp.rename(entry)
    except OSError as e:  # a read-only or full cache folder: the run goes on without storing
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"audio cache: not stored in {entry.parent} ({e.strerror})", file=sys.stderr, flush=True)


def _load(entry: Path, n: int):
    "The entry's arrays if it is complete and its checksums hold, else None (then it is rebuilt)."
    import json
    import zlib

    import numpy as np

    from fxp.cachedir import META

    try:
        meta = json.loads((entry / META).read_text())
        if meta["version"] != VERSION or meta["n"] != n:
            return None
        if any(zlib.crc32((entry / a["file"]).read_bytes()) != a["crc"] for a in meta["arrays"]):
            return None
        specs, lengths = (np.load(entry / a["file"]) for a in meta["arrays"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return specs, lengths, meta.get("bad", [])


# --- loaders ----------------------------------------------------------------------------------------------------------


def dls(cfg, device):
    "Train/valid loaders of spectrogram windows, the labels encoded by the training split's vocabulary."
    from functools import partial

    import numpy as np
    import torch
    from fastai.data.core import DataLoaders

    from fxp.data import WindowDL, Windows

    t, s = cfg.task, settings(cfg.task)
    files, labels, is_valid = items(cfg)
    specs, lengths, bad = cached(files, s, cfg)
    keep, labels, curated, key = _curated(files, labels, lengths >= 0, cfg)
    files = [f for f, k in zip(files, keep) if k]
    valid_mask = _valid(cfg, files, labels, np.array(split(len(keep), t, is_valid))[keep])
    vocab = sorted({y for ys in labels for y in (ys if t.label_delim is not None else [ys])})
    y = _encode(labels, vocab, t.label_delim is not None)
    _check_split(valid_mask, labels, t)
    x, n = torch.from_numpy(specs[keep]), torch.from_numpy(lengths[keep])
    stats = (x[~torch.from_numpy(valid_mask)].mean().item(), x[~torch.from_numpy(valid_mask)].std().item())
    sets = [Windows(x[m], n[m], y[m], vocab=vocab, meta={"settings": s, "stats": stats,
                                                       "files": [str(f) for f, v in zip(files, m) if v]})
            for m in (torch.from_numpy(~valid_mask), torch.from_numpy(valid_mask))]
    cut = partial(windows, s=s)
    aug = None if t.aug is None else partial(spec_augment, aug=dict(t.aug))
    train = WindowDL(sets[0], cut=cut, augment=aug, bs=cfg.trainer.bs, shuffle=True, drop_last=True, device=device)
    valid = WindowDL(sets[1], cut=cut, bs=cfg.trainer.bs * 2, device=device)
    out = DataLoaders(train, valid, device=device)
    out.skipped, out.curated, out.item_key = bad, curated, key  # summary.json; fxp clean names items by key
    return out


def _curated(files, labels, readable, cfg) -> tuple:
    """Which files the run keeps (readable ones less those fxp clean's data.exclude list drops), their labels
    (data.relabel's where it sets one), what summary.json records of the lists, and how the lists name a file."""
    import numpy as np

    from fxp.data import curate, data_path, item_key

    key = item_key(data_path(cfg))
    readable = [f for f, ok in zip(files, readable) if ok]
    kept, get_y, info = curate(readable, dict(zip(files, labels)).__getitem__, cfg.data, key)
    kept = set(kept)
    return np.array([f in kept for f in files]), [get_y(f) for f in files if f in kept], info, key


def not_cleanable(cfg) -> str | None:
    "Why fxp clean cannot list the run's clips (None: it can; its lists name each sound file)."
    if cfg.task.label_delim is not None:
        return "fxp clean lists single-label runs' items, and this audio run is multi-label (task.label_delim)"
    return None


def clean_items(learn, dls) -> list:
    """fxp clean's view of the clips: per split, a loader of their centre windows (no augmentation, as validation sees
    them), each clip's name in the lists (its file), its picture (the spectrogram, low frequencies at the bottom)."""
    from functools import partial

    return [(split, learn.dls.valid.new(dl.dataset), [dls.item_key(f) for f in dl.dataset.meta["files"]],
             partial(_picture, dl.dataset)) for split, dl in (("train", dls.train), ("valid", dls.valid))]


def _picture(ds, i: int):
    import torch

    s = ds.meta["settings"]
    return windows(ds.tensors[0][i:i + 1], ds.tensors[1][i:i + 1], torch.full((1,), 0.5), s)[0].flip(-2)


def _encode(labels, vocab, multi: bool):
    import torch

    index = {v: i for i, v in enumerate(vocab)}
    if not multi:
        return torch.tensor([index[y] for y in labels])
    y = torch.zeros(len(labels), len(vocab))
    for i, ys in enumerate(labels):
        y[i, [index[v] for v in ys]] = 1
    return y


def _check_split(valid_mask, labels, t) -> None:
    "Both splits have items, and every validation label is a training one (the model learns only those)."
    if valid_mask.all() or not valid_mask.any():
        raise FxpError(f"the {'train' if valid_mask.all() else 'valid'} split is empty ({len(labels)} items); check "
                       f"task.valid_pct or task.valid_col")
    seen = {y for ys, v in zip(labels, valid_mask) if not v for y in (ys if isinstance(ys, list) else [ys])}
    for ys, v in zip(labels, valid_mask):
        for y in (ys if isinstance(ys, list) else [ys]) if v else ():
            if y not in seen:
                raise FxpError(f"class '{y}' is in the validation split but not in the training one; add training "
                               f"clips of it, or change task.valid_col / task.split_seed")


def spec_augment(x, aug: dict):
    "Per clip: `masks` frequency and time masks (up to freq_mask bins, time_mask frames) set to its mean; a gain."
    import torch

    x = x.clone()
    n, _, m, w = x.shape
    fill = x.mean(dim=(1, 2, 3), keepdim=True)
    for size, dim, length in ((aug["freq_mask"], 2, m), (aug["time_mask"], 3, w)):
        for _ in range(aug["masks"] if size else 0):
            width = torch.randint(0, size + 1, (n, 1, 1, 1), device=x.device)
            start = (torch.rand(n, 1, 1, 1, device=x.device) * (length - width).clamp(min=1)).long()
            pos = torch.arange(length, device=x.device).view(*([1] * dim), length, *([1] * (3 - dim)))
            x = torch.where((pos >= start) & (pos < start + width), fill, x)
    if aug["gain_db"]:
        db = (torch.rand(n, 1, 1, 1, device=x.device) * 2 - 1) * aug["gain_db"]
        x = x + db * (x.new_tensor(0.1 * 2.302585) if x.min() < -20 else x.new_tensor(1.0))  # dB scale adds dB
    return x


# --- the learner ------------------------------------------------------------------------------------------------------


def factories(cfg) -> list:
    from fxp import vision

    return vision.factories(cfg)


def learner(cfg, dls):
    """An image learner on one-channel spectrograms (model.net, e.g. audio_cnn; or model.arch with n_in=1), its
    network starting with the normalisation; softmax cross-entropy, or BCE at task.thresh for multi-label."""
    from fastai.losses import BCEWithLogitsLossFlat
    from torch import nn

    from fxp import vision
    from fxp.learner import CrossEntropyLossPlain
    from fxp.models import Standardize

    t = cfg.task
    loss = BCEWithLogitsLossFlat(thresh=t.thresh) if t.label_delim is not None else CrossEntropyLossPlain()
    learn = vision.learner(cfg, dls, n_out=len(dls.vocab), loss_func=loss)
    norm = Standardize(t.normalize == "clip", *dls.train.dataset.meta["stats"])
    if cfg.model.arch is None:
        learn.model = nn.Sequential(norm, learn.model)
    else:  # vision_learner's body and head: the norm goes in the body, so the splitter's groups stay
        learn.model[0] = nn.Sequential(norm, learn.model[0])
    return learn


def evaluate(learn, cfg) -> dict:
    "Each class's precision and recall (single-label), or the best threshold by F-beta (multi-label)."
    if cfg.task.label_delim is not None:
        from fxp.tasks import multilabel

        return multilabel.evaluate(learn, cfg)
    from fxp.tasks import classification

    return classification.evaluate(learn, cfg)


def baseline(learn, cfg) -> dict:
    "The majority label (single-label), or the best constant tag set (multi-label), with the run's metrics."
    y = [dl.dataset.tensors[2] for dl in (learn.dls.train, learn.dls.valid)]
    if cfg.task.label_delim is None:
        from fxp.baselines import majority

        return majority(learn, y[0], y[1], learn.dls.vocab)
    import torch

    from fxp.baselines import score, stronger, tags_logits

    half = (y[0].mean(0) > 0.5).float()
    top = torch.zeros_like(half).index_fill_(0, y[0].sum(0).argmax().view(1), 1)
    return stronger(*(score(learn, [(tags_logits(tags, len(y[1])), y[1])], f"always the tags {_tags(tags, learn)!r}")
                      for tags in (half, top)))


def _tags(mask, learn) -> str:
    return " ".join(str(learn.dls.vocab[j]) for j in mask.nonzero().flatten().tolist()) or "(none)"


def plots(learn, cfg, dest: Path, evaluation: dict) -> None:
    "Confusion matrix (single-label) and the validation clips with the highest loss, as spectrograms."
    import torch
    import torch.nn.functional as F

    from fxp.plots import confusion_matrix, image_grid

    multi = cfg.task.label_delim is not None
    if not multi:
        confusion_matrix(learn, dest / "confusion_matrix.png")
    x, probs, targs = learn.get_preds(dl=learn.dls.valid, with_input=True)
    if multi:
        losses = F.binary_cross_entropy(probs.float(), targs.float(), reduction="none").mean(1)
    else:
        losses = F.nll_loss(torch.log(probs.clamp(min=1e-12)), targs.long(), reduction="none")
    idx = losses.argsort(descending=True)[:9].tolist()
    files, vocab, th = learn.dls.valid.dataset.meta["files"], learn.dls.vocab, cfg.task.thresh
    titles = []
    for i in idx:
        pred = _tags(probs[i] > th, learn) if multi else str(vocab[probs[i].argmax()])
        true = _tags(targs[i] > 0.5, learn) if multi else str(vocab[int(targs[i])])
        titles.append(f"{Path(files[i]).name if files else i}\npred {pred} / true {true}\nloss {losses[i]:.2f}")
    image_grid([x[i].flip(-2) for i in idx], titles, dest / "top_losses.png")  # low frequencies at the bottom


def predict(learn, cfg, inputs: list[str], top: str = "0") -> list[dict]:
    """Each sound file's label and probability (or every sound file in a folder); `--top N`: the N likeliest classes;
    multi-label runs: the tags above task.thresh with their probabilities."""
    import torch

    s = learn.dls.valid.dataset.meta["settings"]
    files = input_audio(inputs)
    fb = mel_filters(s)
    x = torch.stack([clip_spectrogram(f, s, fb) for f in files])
    with torch.no_grad():
        out = learn.model.eval().cpu()(x)
    multi = isinstance(learn.loss_func, _bce())
    probs = torch.sigmoid(out) if multi else torch.softmax(out, 1)
    vocab, rows = learn.dls.vocab, []
    for f, p in zip(files, probs):
        if multi:
            keep = [j for j in p.argsort(descending=True).tolist() if p[j] > cfg.task.thresh]
            rows.append({"input": str(f), "tags": " ".join(str(vocab[j]) for j in keep),
                         "probabilities": [round(float(p[j]), 4) for j in keep]})
            continue
        row = {"input": str(f), "label": str(vocab[p.argmax().item()]), "probability": round(p.max().item(), 4)}
        if int(top):
            row["probabilities"] = {str(vocab[j]): round(float(p[j]), 4) for j in p.argsort(descending=True)[:int(top)]}
        rows.append(row)
    return rows


def explain(learn, cfg, inputs: list[str], dest: Path, method: str | None = None, target: str | None = None,
            layer: str | None = None) -> list[dict]:
    """Heatmaps (fxp.heatmaps: CAM or Grad-CAM) over the spectrograms of sound files, or of validation clips and top
    losses: the predicted class, each tag over task.thresh (multi-label), or `target`."""
    import torch

    from fxp import heatmaps

    if inputs:
        s, files = learn.dls.valid.dataset.meta["settings"], input_audio(inputs)
        fb = mel_filters(s)
        items = heatmaps.input_items([f.stem for f in files], torch.stack([clip_spectrogram(f, s, fb) for f in files]))
    else:
        files = learn.dls.valid.dataset.meta["files"]
        items = heatmaps.valid_items(learn, lambda idx: [files[i] if files else "" for i in idx])
    thresh = cfg.task.thresh if cfg.task.label_delim is not None else None
    return heatmaps.explain(learn, items, dest, method, target, layer, thresh, flip=True)  # low frequencies down


def _bce():
    from fastai.losses import BCEWithLogitsLossFlat

    return BCEWithLogitsLossFlat


def input_audio(inputs: list[str]) -> list[Path]:
    "The sound files to predict on: files as given, folders expanded; each must exist."
    files = [f for p in map(Path, inputs) for f in (audio_files(p) if p.is_dir() else [p])]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise FxpError(f"input not found: {missing[0]}")
    if not files:
        raise FxpError(f"no sound files ({', '.join(AUDIO)}) in {', '.join(inputs)}")
    return files
