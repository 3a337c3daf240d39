"""Text classification with ULMFiT (lesson 3 / fastbook ch. 10): an AWD-LSTM language model fine-tuned on every
text, then a classifier on its encoder, trained with gradual unfreezing (the trainer's stages).

Texts come from a CSV (`text_col`, `label_col`, `valid_col` or `valid_pct`; rows without a label feed the language
model only) or from folders in fastai's IMDB layout (`train/<label>/*.txt`, `test/<label>/*.txt`, `unsup/*.txt`).
Step 1 writes into the run's `lm/` folder: metrics.csv, checkpoints/, encoder.pth, vocab.pkl, samples.txt (a few
generated continuations) and plots/. Step 2, the classifier, is the run itself: metrics.csv, model.pkl and plots/
at the top level, so `fxp runs`, sweeps and `fxp predict` treat it as any run. `task.encoder=RUN_DIR` (an earlier
run or its lm/ folder) skips step 1 and trains a classifier on that encoder and vocab.
Module top stays light (the schema is read before anything heavy); fastai is imported where it is used.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from fxp.checks import check_model, check_stages
from fxp.errors import ConfigError, FxpError
from fxp.schema import Monitor, Smoothed, Split, Stage, TaskBase, valid

SOURCES = ("csv", "folders")
INPUT = "text"
# what the fields take (fxp.schema.valid), named here: the Task's own `valid` field hides `valid` in its body
POSITIVE, NON_NEGATIVE, FRACTION = valid("[1, inf)"), valid("[0, inf)"), valid("(0, 1)")
POSITIVE_REAL = valid("(0, inf)")
ENCODER, VOCAB = "encoder.pth", "vocab.pkl"


@dataclass
class Task(Split, Smoothed, TaskBase):
    kind: str = "text"
    source: str = field(default="csv", metadata=valid(choices=SOURCES))
    csv: str = "texts.csv"  # csv: the file, relative to data.path
    text_col: str = "text"
    label_col: str = "label"  # rows with an empty label feed the language model only
    valid_col: Optional[str] = "is_valid"  # csv: boolean column marking valid rows; null: valid_pct
    train: str = "train"  # folders: <train>/<label>/*.txt and <valid>/<label>/*.txt
    valid: str = "test"
    unlabelled: List[str] = field(default_factory=lambda: ["unsup"])  # folders of texts for the language model only
    max_vocab: int = field(default=60000, metadata=POSITIVE)  # the language model's vocab, which the classifier reuses
    min_freq: int = field(default=3, metadata=NON_NEGATIVE)
    seq_len: int = field(default=72, metadata=POSITIVE)  # classifier: tokens per forward chunk
    # classifier: gradients flow through the last max_len tokens of each text
    max_len: int = field(default=1440, metadata=POSITIVE)
    drop_mult: float = field(default=0.5, metadata=NON_NEGATIVE)  # classifier: scales every AWD-LSTM dropout
    encoder: Optional[str] = None  # a previous run (or its lm/ folder): skip the language model, use its encoder
    lm_seq_len: int = field(default=80, metadata=POSITIVE)
    lm_drop_mult: float = field(default=0.3, metadata=NON_NEGATIVE)
    # the language model's own random split over all texts
    lm_valid_pct: float = field(default=0.1, metadata=FRACTION)
    lm_stages: List[Stage] = field(default_factory=lambda: [Stage(epochs=1, lr=2e-2, freeze=True),
                                                            Stage(epochs=10, lr=2e-3, freeze=False)])
    lm_monitor: Monitor = field(default_factory=lambda: Monitor("perplexity", "min"))
    prompts: List[str] = field(default_factory=lambda: ["I liked this movie because"])  # lm/samples.txt
    n_samples: int = field(default=2, metadata=NON_NEGATIVE)  # continuations per prompt
    n_words: int = field(default=40, metadata=POSITIVE)
    temperature: float = field(default=0.75, metadata=POSITIVE_REAL)


def check(cfg) -> None:
    "Rules across keys, checked before any heavy import (each key's own values: the schema's `valid`)."
    task = cfg.task
    check_stages("task.lm_stages", task.lm_stages)
    check_model(cfg, ("arch",), "model=awd_lstm or awd_lstm_tiny", text=True)
    if task.encoder is not None:
        encoder_dir(task.encoder)


def encoder_dir(where: str) -> Path:
    "The folder holding encoder.pth and vocab.pkl: `where` itself or its lm/ subfolder (a whole run)."
    path = Path(where).expanduser().resolve()
    for d in (path, path / "lm"):
        if (d / ENCODER).is_file() and (d / VOCAB).is_file():
            return d
    raise ConfigError(f"task.encoder={where}: no {ENCODER} and {VOCAB} in {path} or {path / 'lm'}; give the folder "
                      f"of a completed text run (or its lm/ folder), or drop task.encoder to train the language model")


# --- data -----------------------------------------------------------------------------------------------------


def texts(cfg):
    "Every text as a DataFrame of text, label (None: language model only) and is_valid."
    from fxp.data import data_path

    root = data_path(cfg)
    df = _csv_texts(cfg.task, root) if cfg.task.source == "csv" else _folder_texts(cfg.task, root)
    df["is_valid"] = _valid(cfg, df)
    labels = df.label[df.label.notna() & ~df.is_valid].unique()
    if len(labels) < 2:
        t = cfg.task
        found = f"a single class ({labels[0]!r})" if len(labels) else "no labels"
        where = (f"task.label_col={t.label_col!r} of {t.csv}" if t.source == "csv"
                 else f"the class folders under {root / t.train}")
        raise FxpError(f"{where}: the training texts have {found}; a classifier needs at least two classes")
    return df


def _valid(cfg, df):
    "The labelled texts that validate the classifier: as the source marks them, or a cross-validation's fold."
    import numpy as np

    from fxp import folds

    labelled = np.flatnonzero(df.label.notna().to_numpy())
    _, valid = folds.splitter(cfg, _marked, labels=lambda rows: list(rows.label))(df.iloc[labelled])
    out = np.zeros(len(df), dtype=bool)
    out[labelled[list(valid)]] = True
    return out


def _marked(rows):
    "The rows' own split: their is_valid."
    import numpy as np

    return np.flatnonzero(~rows.is_valid.to_numpy()), np.flatnonzero(rows.is_valid.to_numpy())


def _csv_texts(t, root: Path):
    import pandas as pd

    from fxp.data import read_table

    df = read_table(root / t.csv, "task.csv", {f"task.{k}": t[k] for k in ("text_col", "label_col", "valid_col")})
    label = df[t.label_col].map(lambda v: None if pd.isna(v) else str(v))
    out = pd.DataFrame({"text": df[t.text_col].fillna("").astype(str), "label": label})
    out["is_valid"] = _as_bool(df[t.valid_col]) if t.valid_col else _random_valid(out.label.notna(), t)
    return out


def _as_bool(col):
    "A valid column as booleans, whether pandas read True/False, 0/1 or strings."
    if col.dtype == bool:
        return col
    return col.astype(str).str.strip().str.lower().isin(("true", "1", "yes"))


def _random_valid(labelled, t):
    "valid_pct of the labelled rows, drawn as fastai's RandomSplitter draws them."
    import numpy as np

    from fxp.data import splitter

    idx = np.flatnonzero(labelled.to_numpy())
    _, valid = splitter(t)(idx)
    out = np.zeros(len(labelled), dtype=bool)
    out[idx[list(valid)]] = True
    return out


def _folder_texts(t, root: Path):
    "fastai's IMDB layout: <train|valid>/<label>/*.txt, and unlabelled folders of *.txt."
    import pandas as pd
    from fastai.data.transforms import get_text_files

    labelled = get_text_files(root, folders=[t.train, t.valid])
    labelled = [f for f in labelled if f.parent.parent.name in (t.train, t.valid)]
    if not labelled:
        raise FxpError(f"no texts in {root}/{t.train}/<label>/*.txt or {root}/{t.valid}/<label>/*.txt; set "
                       f"task.train= and task.valid= to the folder names, or use task.source=csv")
    extra = list(get_text_files(root, folders=list(t.unlabelled))) if t.unlabelled else []
    files = labelled + extra
    return pd.DataFrame({"text": [f.read_text(encoding="utf-8", errors="replace") for f in files],
                         "label": [f.parent.name for f in labelled] + [None] * len(extra),
                         "is_valid": [f.parent.parent.name == t.valid for f in labelled] + [False] * len(extra)})


def tokenized(df):
    """Every text of `df` tokenized by fastai's tokenize_df, as a TextBlock's Tokenizer tokenizes a DataFrame on its
    setup: columns label, is_valid, text (the tokens), text_length. Done once for both steps (the costliest part of
    reading a corpus: about 3 CPU-s for the 1,000 reviews of imdb_sample)."""
    from fastai.text.core import tokenize_df

    return tokenize_df(df, "text")[0]


def tokenizer(tokens):
    """fastai's Tokenizer for the `tokens` of tokenized, holding the counts and lengths its setup would find there
    (its setup itself, which would tokenize them again, is skipped: tokenized_already)."""
    from collections import Counter

    from fastai.text.core import Tokenizer

    tok = Tokenizer.from_df("text")
    tok.counter = Counter(w for text in tokens.text for w in text)  # as tokenize_df counts: the vocab's order
    tok.lengths = tokens.text_length.values
    return tok


@contextmanager
def tokenized_already(tok):
    """`tok` skips its setup while loaders over tokens are made, then is fastai's own again: what predict and an
    export use is unchanged."""
    tok.setups = lambda dsets: None
    try:
        yield
    finally:
        del tok.setups


def lm_dls(cfg, df, tokens, device):
    """A language model's loaders over every text of `df` (labelled or not; `tokens()` gives them tokenized), split at
    random. fastai's LMDataLoader reads each batch's bs slices of lm_seq_len+1 tokens from the texts, numericalizing
    a text whenever a slice of it is read unless the text is in its LRU cache (2 texts by default: the bs streams
    evict each other's, about a fifth of an epoch's time); the cache holds every text one batch can touch."""
    from fastai.data.block import DataBlock
    from fastai.data.transforms import ColReader, RandomSplitter
    from fastai.text.data import TextBlock

    t = cfg.task
    if cfg.model.pretrained:
        pretrained_files(cfg.model)  # before tokenizing: offline, fail at once
    tokens = tokens()
    tok = tokenizer(tokens)
    block = DataBlock(blocks=TextBlock(tok, is_lm=True, seq_len=t.lm_seq_len, min_freq=t.min_freq,
                                       max_vocab=t.max_vocab),
                      get_x=ColReader("text"), splitter=RandomSplitter(t.lm_valid_pct, seed=t.split_seed))
    return text_dls(block, tok, df, tokens, cfg, device, "check task.lm_valid_pct",
                    cache=cfg.trainer.bs * (t.lm_seq_len + 1), **block.dls_kwargs)


def clf_dls(cfg, df, tokens, vocab, device):
    "The classifier's loaders over the labelled texts, numericalized with the language model's vocab."
    from fastai.data.block import CategoryBlock, DataBlock
    from fastai.data.transforms import ColReader, ColSplitter
    from fastai.text.data import TextBlock

    labelled = tokens[tokens.label.notna()].reset_index(drop=True)
    tok = tokenizer(labelled)
    block = DataBlock(blocks=(TextBlock(tok, vocab=vocab, seq_len=cfg.task.seq_len), CategoryBlock),
                      get_x=ColReader("text"), get_y=ColReader("label"), splitter=ColSplitter("is_valid"))
    return text_dls(block, tok, df[df.label.notna()].reset_index(drop=True), labelled, cfg, device,
                    "check task.valid_col (or task.valid_pct), or the train/valid folders", **block.dls_kwargs)


def text_dls(block, tok, df, tokens, cfg, device, fix: str, **kwargs):
    """fxp.data.dataloaders of `block` over the `tokens` of the texts in `df`, its Tokenizer `tok` not tokenizing
    them again; its source (what fxp show summarizes, from text to batch) is `df`."""
    from fxp.data import dataloaders

    with tokenized_already(tok):
        out = dataloaders(block, tokens, cfg, device, fix, **kwargs)
    out.source = df
    return out


def read_vocab(folder: Path) -> list:
    """The language model's vocab.pkl (a list of words), read as plain data: one that names any class or function is
    refused, not run (task.encoder may name another run's folder, and unpickling runs whatever a pickle holds)."""
    import pickle

    class Words(pickle.Unpickler):
        def find_class(self, module, name):
            raise FxpError(f"{folder / VOCAB} is not the list of words fxp writes (it names {module}.{name}, and "
                           f"unpickling it could run any code); give the folder of a text run you trust")

    with open(folder / VOCAB, "rb") as f:
        return Words(f).load()


# --- learners -------------------------------------------------------------------------------------------------


def _arch(m):
    "The fastai text architecture named by model.arch (AWD_LSTM)."
    from fastai.text.models.core import _model_meta
    from hydra.utils import get_object

    arch = get_object(m.arch) if m.arch else None
    if arch not in _model_meta:
        raise FxpError(f"model.arch={m.arch} is not a fastai text architecture; use model=awd_lstm (see fxp tasks)")
    return arch


def _config(m, arch, step: str) -> dict:
    "fastai's AWD-LSTM config for `step` (lm or clas) with model.kwargs.config's sizes and dropouts on top."
    from fastai.text.models.core import _model_meta
    from omegaconf import OmegaConf

    return {**_model_meta[arch][f"config_{step}"], **OmegaConf.to_container(m.kwargs).get("config", {})}


def pretrained_files(m) -> Path:
    "fastai's WikiText-103 weights for model.arch, downloaded once into its cache."
    from fastai.data.external import untar_data
    from fastai.text.models.core import _model_meta

    from fxp.models import pretrained_weights

    with pretrained_weights(m):
        return untar_data(_model_meta[_arch(m)]["url"], c_key="model")


def lm_learner(cfg, dls):
    "fastai's language_model_learner: accuracy and perplexity; WikiText-103 weights when model.pretrained."
    from fastai.metrics import Perplexity, accuracy
    from fastai.text.learner import language_model_learner

    from fxp.models import pretrained_weights

    m, arch = cfg.model, _arch(cfg.model)
    with pretrained_weights(m):
        return language_model_learner(dls, arch, config=_config(m, arch, "lm"), drop_mult=cfg.task.lm_drop_mult,
                                      pretrained=m.pretrained, metrics=[accuracy, Perplexity()])


def clf_learner(cfg, dls, encoder: Path):
    """fastai's text_classifier_learner (other model.kwargs go to it) on the language model's `encoder`, frozen; with
    label smoothing (task.label_smoothing) its loss is fastai's label-smoothing cross-entropy."""
    from fastai.losses import LabelSmoothingCrossEntropyFlat
    from fastai.text.learner import text_classifier_learner
    from omegaconf import OmegaConf

    from fxp.metrics import metrics

    t, m, arch = cfg.task, cfg.model, _arch(cfg.model)
    kwargs = {k: v for k, v in OmegaConf.to_container(m.kwargs).items() if k != "config"}
    if t.label_smoothing:
        kwargs["loss_func"] = LabelSmoothingCrossEntropyFlat(eps=t.label_smoothing)
    learn = text_classifier_learner(dls, arch, seq_len=t.seq_len, config=_config(m, arch, "clas"),
                                    drop_mult=t.drop_mult, max_len=t.max_len, pretrained=False,
                                    metrics=metrics(t.metrics), **kwargs)
    load_encoder(learn, encoder)
    return learn


def load_encoder(learn, file: Path) -> None:
    "fastai's TextLearner.load_encoder for a file anywhere (not only under the learner's model_dir)."
    import torch
    from fastai.text.learner import clean_raw_keys
    from fastai.torch_core import get_model

    wgts = torch.load(file, map_location=learn.dls.device, weights_only=True)
    try:
        get_model(learn.model)[0].module.load_state_dict(clean_raw_keys(wgts))
    except RuntimeError as e:
        raise FxpError(f"the encoder {file} does not fit this model ({str(e).splitlines()[-1].strip()}); train "
                       f"the classifier with the model= of the run that made it") from None
    learn.freeze()


def factories(cfg) -> list:
    "model.kwargs go to the classifier (`config` holds the AWD-LSTM's sizes and dropouts for both learners)."
    from fastai.text.learner import text_classifier_learner

    return [text_classifier_learner]


# --- the two steps --------------------------------------------------------------------------------------------


def steps(cfg) -> list:
    "The language model into lm/ (unless task.encoder names one), then the classifier on its encoder: the run itself."
    from functools import cache

    from fxp.step import Step

    t = cfg.task
    all_texts = cache(lambda: texts(cfg))  # read once, for both steps
    all_tokens = cache(lambda: tokenized(all_texts()))  # tokenized once, for both steps

    def encoder_folder(ctx) -> Path:
        return encoder_dir(t.encoder) if t.encoder else ctx.done["lm"].path

    classifier = Step(
        "classifier", about="classifier on " + (f"the encoder in {encoder_dir(t.encoder)}" if t.encoder
                                                else "the language model's encoder"),
        dls=lambda ctx: clf_dls(cfg, all_texts(), all_tokens(), read_vocab(encoder_folder(ctx)), ctx.device),
        learner=lambda dls, ctx: clf_learner(cfg, dls, encoder_folder(ctx) / ENCODER),
        after=lambda learn, ctx: {"encoder": str(encoder_folder(ctx) / ENCODER)}, fresh=False)
    if t.encoder:
        return [classifier]
    lm = Step("lm", folder="lm", stages=t.lm_stages, monitor=t.lm_monitor, about="language model on every text, in lm/",
              dls=lambda ctx: lm_dls(cfg, all_texts(), all_tokens, ctx.device),
              learner=lambda dls, ctx: lm_learner(cfg, dls),
              after=lambda learn, ctx: save_language_model(learn, t, ctx.path, len(all_texts())))
    return [lm, classifier]


def save_language_model(learn, t, folder: Path, n_texts: int) -> dict:
    """The encoder and vocab the classifier reads, a few generated samples, and the step's summary fields; each file
    written whole (a kill leaves none half-written for a classifier to read)."""
    import pickle

    from fxp.writer import write_atomic

    save_encoder(learn, folder / ENCODER)
    write_atomic(folder / VOCAB, pickle.dumps(learn.dls.vocab))  # plain data, read back as such (read_vocab)
    write_samples(learn, t, folder / "samples.txt")
    unigram = {"value": unigram_perplexity(learn.dls), "by": "unigram frequencies"}
    return dict(texts=n_texts, vocab=len(learn.dls.vocab), baselines={"perplexity": unigram})


def save_encoder(learn, dest: Path) -> None:
    "The LM's encoder weights as fastai's `save_encoder` writes them (which writes in place, so not through it)."
    import torch
    from fastai.torch_core import get_model

    from fxp.writer import write_atomic

    encoder = get_model(learn.model)[0]
    write_atomic(dest, lambda tmp: torch.save(getattr(encoder, "module", encoder).state_dict(), tmp))


def unigram_perplexity(dls) -> float:
    "Valid perplexity of predicting every token by its training frequency: what a context-blind LM reaches."
    import torch

    def tokens(ds):
        return torch.cat([ds[i][0] for i in range(len(ds))])

    counts = torch.bincount(tokens(dls.train_ds), minlength=len(dls.vocab)).double() + 1  # add-one: no zero
    return round(float(torch.exp(-(counts / counts.sum()).log()[tokens(dls.valid_ds)].mean())), 3)


def write_samples(learn, t, dest: Path) -> None:
    "`n_samples` continuations of each prompt, `n_words` long (fastbook's check that the LM learnt English)."
    from fxp.writer import write_atomic

    lines = [learn.predict(p, t.n_words, temperature=t.temperature, no_bar=True)
             for p in t.prompts for _ in range(t.n_samples)]
    write_atomic(dest, "".join(f"{line}\n\n" for line in lines))


# --- plots, predict -------------------------------------------------------------------------------------------


def evaluate(learn, cfg) -> dict:
    "Nothing beyond the metrics (the baseline is `baseline`'s)."
    return {}


def baseline(learn, cfg) -> dict:
    "Always the most common training label, scored with the run's metrics on the valid split."
    from fxp.baselines import majority

    vocab = [str(c) for c in learn.dls.vocab[1]]
    train, valid = ([vocab.index(str(y)) for y in ds.items.label] for ds in (learn.dls.train_ds, learn.dls.valid_ds))
    return majority(learn, train, valid, vocab)


def plots(learn, cfg, dest: Path, evaluation: dict) -> None:
    "The confusion matrix."
    from fxp.plots import confusion_matrix

    confusion_matrix(learn, dest / "confusion_matrix.png")


def predict(learn, cfg, inputs: list[str]) -> list[dict]:
    "Label and class probabilities of each text (an existing .txt file is read)."
    from fxp.data import input_text

    texts_ = [input_text(i) for i in inputs]
    probs, _ = learn.get_preds(dl=learn.dls.test_dl(texts_))
    vocab = [str(c) for c in learn.dls.vocab[1]]
    return [{"input": i, "label": vocab[p.argmax().item()],
             "probabilities": {c: round(float(v), 4) for c, v in zip(vocab, p)}} for i, p in zip(inputs, probs)]


# --- explain: word-level occlusion ------------------------------------------------------------------------------------

OCCLUDED = 32  # occluded copies of a text through the model at once


def explain(learn, cfg, inputs: list[str], dest: Path, target: str | None = None) -> list[dict]:
    """Word-level occlusion of each text (or .txt file): how much the probability of the predicted class (or `target`)
    drops when a word is replaced by the unknown token; an HTML page per text with each word highlighted by it (green:
    the word supports the class, red: it speaks against it)."""
    from fxp.data import free_path, input_text
    from fxp.heatmaps import class_index

    if not inputs:
        raise FxpError("fxp explain: give the texts to explain (quoted, or .txt files): a text run's validation texts "
                       "are not rebuilt from its folder")
    vocab, rows, used = [str(c) for c in learn.dls.vocab[1]], [], set()
    for i, text in enumerate(inputs):
        ids = learn.dls.test_dl([input_text(text, "texts to explain")]).one_batch()[0][0].cpu()
        probs = _text_probs(learn.model, ids[None])[0]
        c = class_index(vocab, target) if target is not None else int(probs.argmax())
        words, drops = _occluded(learn, ids, c, float(probs[c]))
        name = Path(text).stem if Path(text).suffix == ".txt" else f"text_{i + 1}"
        file = free_path(dest / f"{name}.html", used)
        _write_words(file, words, drops, f"{name}: {vocab[c]} p={float(probs[c]):.2f}")
        top = [w for w, d in sorted(zip(words, drops), key=lambda wd: -wd[1]) if d > 0][:5]
        rows.append({"input": name, "label": vocab[c], "probability": round(float(probs[c]), 4),
                     "words for it": " ".join(top), "page": file.name})
    return rows


def _text_probs(model, ids):
    "Class probabilities of token id rows `ids` (the model's state reset first: each row is a text of its own)."
    import torch

    model.eval().cpu().reset()
    with torch.no_grad():
        return torch.softmax(model(ids)[0], 1)


def _occluded(learn, ids, c: int, p: float) -> tuple[list[str], list[float]]:
    """The text's words (fastai's xxmaj/xxup marks applied) and, for each, the drop of class `c`'s probability from `p`
    with that word's token replaced by xxunk."""
    import torch
    from fastai.text.core import UNK

    itos = learn.dls.vocab[0]
    tokens = [itos[int(t)] for t in ids]
    at = [j for j, t in enumerate(tokens) if not t.startswith("xx") or t == UNK]
    copies = ids.repeat(len(at), 1)
    copies[torch.arange(len(at)), at] = itos.index(UNK)
    probs = torch.cat([_text_probs(learn.model, b) for b in copies.split(OCCLUDED)]) if at else torch.empty(0, c + 1)
    return [_shown(tokens, j) for j in at], [p - float(q) for q in probs[:, c]]


def _shown(tokens: list[str], j: int) -> str:
    "Token j as written: capitalised after xxmaj, upper case after xxup."
    mark = tokens[j - 1] if j else ""
    return tokens[j].capitalize() if mark == "xxmaj" else tokens[j].upper() if mark == "xxup" else tokens[j]


def _write_words(dest: Path, words: list[str], drops: list[float], title: str) -> None:
    "A self-contained HTML page of the words, each on a background as strong as its drop (its value as a tooltip)."
    from fxp.reports import esc, page
    from fxp.writer import write_atomic

    top = max([abs(d) for d in drops] + [1e-8])
    spans = [f'<span title="{d:+.4f}" style="background:rgba({"0,160,0" if d > 0 else "220,0,0"},'
             f'{abs(d) / top:.2f})">{esc(w)}</span>' for w, d in zip(words, drops)]
    note = ("<p>Each word's background: how much the probability drops when the word is replaced by the unknown "
            "token (green: it supports the class; red: it speaks against it; hover for the value).</p>")
    write_atomic(dest, page(f"fxp explain: {title}", [note, f"<p style='line-height:2'>{' '.join(spans)}</p>"]))
