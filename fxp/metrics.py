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
