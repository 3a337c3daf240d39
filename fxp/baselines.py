"""A run's baseline: what a predictor that never looks at the inputs reaches on the valid split, scored with the run's
own metrics, so that it reads beside the model's number (summary.json's `baselines`: {metric: {value, by}}).

Each kind's `baseline(learn, cfg)` (the kind protocol, fxp.dispatch.Kind) picks its constant predictions from the
training split (the majority label, the training mean, the best constant tag set, a mask) and hands them to `score`,
which puts them through `learn.metrics` as fastai puts a model's predictions: thresholds, activations and the void
code of a metric apply to the baseline as they do to the model. Imported by the kinds only (it imports torch).
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from fxp.runs import lower_is_better

SURE = 20.0  # a logit that any activation (softmax, sigmoid) and any threshold reads as certain


def score(learn, batches, by: str) -> dict:
    "{metric: {value, by}}: each of the learner's metrics over (predictions, targets) batches (`by` made them)."
    from fastai.torch_core import to_detach

    metrics = list(learn.metrics)
    for m in metrics:
        m.reset()
    for pred, targ in batches:
        batch = SimpleNamespace(pred=pred, yb=(targ,), y=targ, to_detach=to_detach)  # what a metric reads of a learner
        for m in metrics:
            m.accumulate(batch)
    values = {m.name: _number(m.value) for m in metrics}
    return {name: {"value": round(v, 6), "by": by} for name, v in values.items() if v is not None}


def _number(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def stronger(*candidates: dict) -> dict:
    "Per metric, the best of several baselines' scores (`score`'s dicts)."
    out = {}
    for cand in candidates:
        for name, entry in cand.items():
            lower = lower_is_better(name)
            old = out.get(name)
            if old is None or (entry["value"] < old["value"] if lower else entry["value"] > old["value"]):
                out[name] = entry
    return out


def majority(learn, train_y, valid_y, vocab) -> dict:
    """Always the most common training label (`train_y`, `valid_y`: class indices into `vocab`), scored with the run's
    metrics on the valid split."""
    top = int(torch.bincount(torch.as_tensor(train_y).flatten().long()).argmax())
    preds = label_logits(torch.full((len(valid_y),), top), len(vocab))
    return score(learn, [(preds, torch.as_tensor(valid_y).long())], f"the majority label {str(vocab[top])!r}")


def label_logits(labels, n_classes: int):
    "Logits that predict `labels` (shape (n, ...): a class per item or pixel) with certainty, classes at dim 1."
    labels = torch.as_tensor(labels).long()
    logits = torch.full((*labels.shape[:1], n_classes, *labels.shape[1:]), -SURE)
    return logits.scatter_(1, labels.unsqueeze(1), SURE)


def tags_logits(tags, n: int):
    "Logits of `n` items that each predict exactly the tags where `tags` (a 0/1 vector) is 1."
    return (torch.as_tensor(tags).float() * 2 - 1).mul(SURE).expand(n, -1)

