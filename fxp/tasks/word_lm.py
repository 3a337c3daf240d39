"""Next-word language models on a stream of words, as fastbook ch. 12 and course-v3 lesson 7 build them on
HUMAN_NUMBERS: the lines of train.txt and valid.txt joined with ' . ', split on spaces, cut into sequences of
`seq_len` words (targets: the same words shifted by one), the sequences of a batch each going on from the same row
of the batch before (the book's `group_chunks`), so a stateful RNN carries its hidden state across batches.

Data: `data.path` with train.txt and valid.txt (fastai's URLs.HUMAN_NUMBERS layout), or, by default, fastai's
HUMAN_NUMBERS made here (the numbers 1-9,999 in English words, one a line: train 1-8,000, valid 8,001-9,999), written
into the run's data/ folder. Models (fxp.models): the book's LMModel1..7 and the lesson's GRU/LSTM (`model.net`); a
model's output is (bs, seq_len, vocab) for every next word, or (bs, vocab) for the last one only (LMModel1-3, the book's
first models), and the loss and accuracy compare it with the matching targets.
Module top stays light (the schema is read before anything heavy); torch and fastai are imported where they are used.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fxp.checks import check_model
from fxp.errors import FxpError
from fxp.schema import TaskBase, valid

FILES = ("train.txt", "valid.txt")
INPUT = "text"
SEP = "."  # the book's separator token between two lines
NO_FOLDS = "its items are one stream of words cut into sequences, with its valid words in valid.txt"


@dataclass
class Task(TaskBase):
    kind: str = "word_lm"
    # words per sequence (fastbook: 16; the lesson: 20; LMModel1-3: 3)
    seq_len: int = field(default=16, metadata=valid("[1, inf)"))


def check(cfg) -> None:
    "Rules across keys, checked before any heavy import (each key's own values: the schema's `valid`)."
    check_model(cfg, ("net",), "model=lm_gru, lm_lstm or lmmodel1..7")


# --- data -----------------------------------------------------------------------------------------------------

ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen").split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def in_words(n: int) -> str:
    "1 ≤ n ≤ 9,999 in English words as HUMAN_NUMBERS writes them, without 'and': 'eight thousand one hundred one'."
    words = []
    for unit, name in ((1000, "thousand"), (100, "hundred")):
        if n >= unit:
            words += [ONES[n // unit], name]
            n %= unit
    if n >= 20:
        words.append(TENS[n // 10])
        n %= 10
    return " ".join(words + ([ONES[n]] if n else []))


def human_numbers(dest: Path) -> Path:
    "fastai's HUMAN_NUMBERS written into `dest`: train.txt (1-8,000) and valid.txt (8,001-9,999), a number a line."
    from fxp.writer import write_atomic

    dest.mkdir(parents=True, exist_ok=True)
    for name, numbers in zip(FILES, (range(1, 8001), range(8001, 10000))):
        text = "".join(f"{in_words(n)} \n" for n in numbers)  # fastai's lines end with a space
        write_atomic(dest / name, text)
    return dest


def read_words(folder: Path) -> list[list[str]]:
    "The words of train.txt and valid.txt in `folder`: each file's lines joined with ' . ' (fastbook ch. 12)."
    from fxp.data import need_file

    out = []
    for name in FILES:
        need_file(folder / name, "data.path")
        lines = [ln.strip() for ln in (folder / name).read_text().splitlines() if ln.strip()]
        if not lines:
            raise FxpError(f"{folder / name} has no lines; fill it or set data.path= to another folder")
        out.append(f" {SEP} ".join(lines).split())
    return out


def sequences(ids, seq_len: int, bs: int):
    """(x, y): the book's non-overlapping windows of `seq_len` ids and the ids one later, reordered (group_chunks)
    so row j of each batch of `bs` goes on from row j of the batch before; the rest that fills no batch is dropped."""
    import torch

    n = (len(ids) - 1) // seq_len
    x = ids[:n * seq_len].view(n, seq_len)
    y = ids[1:n * seq_len + 1].view(n, seq_len)
    m = n // bs
    if m == 0:
        raise FxpError(f"{n} sequences of task.seq_len={seq_len} words fill no batch of trainer.bs={bs}; "
                       f"lower trainer.bs or task.seq_len")
    order = torch.arange(m * bs).view(bs, m).t().reshape(-1)  # batch i, row j: sequence i + m*j
    return x[order], y[order]


def dls(cfg, device, run_path: Path | None = None):
    "Train and valid loaders of word sequences, in stream order (no shuffle: the hidden state goes on)."
    import torch
    from fastai.data.core import DataLoaders

    from fxp.data import TensorDL, Tensors

    folder = Path(cfg.data.path) if cfg.data.path else human_numbers(Path(run_path or ".") / "data")
    train, valid = read_words(folder)
    vocab = list(dict.fromkeys(train + valid))  # in order of first use, as the book's L(tokens).unique()
    idx = {w: i for i, w in enumerate(vocab)}
    bs = cfg.trainer.bs
    loaders = []
    for words in (train, valid):
        x, y = sequences(torch.tensor([idx[w] for w in words]), cfg.task.seq_len, bs)
        loaders.append(TensorDL(Tensors(x, y, vocab=vocab), bs=bs, shuffle=False, drop_last=True, device=device))
    return DataLoaders(*loaders, device=device)


# --- learner --------------------------------------------------------------------------------------------------


def aligned(pred, targ):
    "Predictions and targets, flattened: every next word's, or the last word's only for a (bs, vocab) output."
    if pred.dim() == 2:
        return pred, targ[:, -1]
    return pred.flatten(0, 1), targ.flatten()


def next_word_loss(pred, targ):
    "Cross-entropy of the predicted next words."
    import torch.nn.functional as F

    return F.cross_entropy(*aligned(pred, targ))


def factories(cfg) -> list:
    from fastai.learner import Learner

    return [Learner]


def steps(cfg) -> list:
    "One learner; its data is generated into the run's data/ folder when data.path is not set."
    from fxp.step import Step

    return [Step("train", dls=lambda ctx: dls(cfg, ctx.device, ctx.run_path),
                 learner=lambda dls_, ctx: learner(cfg, dls_))]


def learner(cfg, dls):
    """A plain Learner on the model.net node (built with the vocab size), task.metrics seeing the targets its output
    predicts; fastai's RNN callbacks where the model needs them (a hidden state to reset, AR/TAR)."""
    from fastai.callback.rnn import ModelResetter, RNNCallback, RNNRegularizer
    from fastai.learner import Learner, Metric
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from fxp.errors import building
    from fxp.metrics import Aligned, metrics

    with building("model.net"):
        net = instantiate(cfg.model.net, vocab_sz=len(dls.vocab))
    cbs = [ModelResetter()] if hasattr(net, "reset") else []
    if hasattr(net, "alpha"):
        cbs += [RNNCallback(), RNNRegularizer(alpha=net.alpha, beta=net.beta)]
    scores = [m if isinstance(m, Metric) else Aligned(m, aligned) for m in metrics(cfg.task.metrics)]
    return Learner(dls, net, loss_func=next_word_loss, metrics=scores, cbs=cbs,
                   **OmegaConf.to_container(cfg.model.kwargs))


def evaluate(learn, cfg) -> dict:
    "Nothing beyond the metrics (the baseline is `baseline`'s)."
    return {}


def baseline(learn, cfg) -> dict:
    """The valid accuracy of always predicting the training set's most common next word (computed here: the metrics
    see the model's output aligned to its targets, which a constant has no shape for)."""
    import torch

    train_y, valid_y = (dl.dataset.tensors[1] for dl in (learn.dls.train, learn.dls.valid))
    majority = int(torch.bincount(train_y.flatten()).argmax())
    value = round(float((valid_y == majority).float().mean()), 6)
    return {"accuracy": {"value": value, "by": f"the majority word {learn.dls.vocab[majority]!r}"}}


def plots(learn, cfg, dest: Path, evaluation: dict) -> None:
    "Nothing beyond the loss curves the core draws."


def predict(learn, cfg, inputs: list[str]) -> list[dict]:
    """The most likely next word after each text (words of the vocab, separated by spaces; '.' ends a number; an
    existing .txt file is read)."""
    from fxp.data import input_text

    vocab, model = list(learn.dls.vocab), learn.model.eval()
    rows = []
    for text in inputs:
        probs = next_word(model, word_ids(input_text(text, "texts to continue"), vocab, getattr(model, "min_words", 1)))
        rows.append({"input": text, "next_word": vocab[probs.argmax().item()],
                     "probability": round(probs.max().item(), 4)})
    return rows


def word_ids(text: str, vocab: list, min_words: int) -> list[int]:
    "The vocab index of each word of `text`; else one line naming the unknown word and the vocab."
    words = text.split()
    unknown = [w for w in words if w not in vocab]
    if not words or unknown:
        raise FxpError(f"fxp predict: {text!r}: " + (f"{unknown[0]!r} is not a word of the vocabulary" if words
                       else "empty") + f"; give words of: {' '.join(vocab)}")
    if len(words) < min_words:
        raise FxpError(f"fxp predict: {text!r}: this model reads the last {min_words} words; give as many")
    return [vocab.index(w) for w in words]


def next_word(model, ids: list[int]):
    "The model's probabilities for the word after `ids`, from a fresh hidden state."
    import torch

    if hasattr(model, "reset"):
        model.reset()
    with torch.no_grad():
        out = model(torch.tensor([ids]))
    out = out[0] if isinstance(out, tuple) else out  # LMModel7: (output, raw, dropped-out activations)
    return torch.softmax(out[0, -1] if out.dim() == 3 else out[0], -1)
