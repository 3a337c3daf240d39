"task.metrics → fastai metrics, for every kind (without the vision imports)."
from __future__ import annotations

from fastai import metrics as fastai_metrics
from hydra.utils import instantiate

from fxp.errors import FxpError, building


def metrics(names) -> list:
    "fastai metrics from names (`accuracy`) or `_target_` nodes (`top_k_accuracy` with its `k`)."
    out = []
    for i, m in enumerate(names):
        if not isinstance(m, str):
            with building(f"task.metrics.{i}"):
                out.append(instantiate(m))
            continue
        fn = getattr(fastai_metrics, m, None)
        if not callable(fn):
            raise FxpError(f"task.metrics: {m!r} is not a fastai metric (e.g. accuracy, error_rate, "
                           f"top_k_accuracy, accuracy_multi, F1Score)")
        out.append(fn() if isinstance(fn, type) else fn)
    return out


class Aligned(fastai_metrics.AvgMetric):
    "A functional metric (accuracy) on predictions and targets as `align` pairs them, where their shapes differ."

    def __init__(self, func, align):
        super().__init__(func)
        self.align = align

    def accumulate(self, learn):
        bs = fastai_metrics.find_bs(learn.yb)
        self.total += learn.to_detach(self.func(*self.align(learn.pred, *learn.yb))) * bs
        self.count += bs


# --- per-class numbers (fxp val's per_class.csv, summary.json, the report) -------------------------------------------

PER_CLASS = ("precision", "recall", "iou", "dice", "support")


def per_class(names, tp, fp, fn, columns=PER_CLASS) -> dict:
    """{class: {column: value}} from each class's true positives, false positives and false negatives: precision,
    recall, IoU (Jaccard) and Dice (F1); support, its true items (or pixels). A ratio with nothing to divide (a class
    neither present nor predicted) is None, not 0: there was nothing to get wrong."""
    tp, fp, fn = ([int(v) for v in x] for x in (tp, fp, fn))
    ratio = lambda a, b: round(a / b, 6) if b else None  # noqa: E731
    values = {"precision": lambda t, p, n: ratio(t, t + p), "recall": lambda t, p, n: ratio(t, t + n),
              "iou": lambda t, p, n: ratio(t, t + p + n), "dice": lambda t, p, n: ratio(2 * t, 2 * t + p + n),
              "support": lambda t, p, n: t + n}
    return {str(name): {c: values[c](t, p, n) for c in columns} for name, t, p, n in zip(names, tp, fp, fn)}


def confusion_counts(cm):
    "Each class's true positives, false positives and false negatives in a confusion matrix (rows: true classes)."
    tp = cm.diagonal()
    return tp, cm.sum(0) - tp, cm.sum(1) - tp
