"task.metrics → fastai metrics, for every kind (without the vision imports), and fxp's own (rmse, fbeta, psnr, ssim)."
from __future__ import annotations

from fastai import metrics as fastai_metrics
from fastai.learner import Metric
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


# --- fxp's own metrics, under the names YAML gives (task.metrics' _target_s) and metrics.csv records ----------


def rmse():
    "fastai's rmse, recorded as `rmse` (fastai names it after its `_rmse` function)."
    from fastai.metrics import AccumMetric, _rmse

    return AccumMetric(_rmse, name="rmse")


def exp_rmspe():
    "fastai's exp_rmspe, recorded as `exp_rmspe` (fastai names it after its `_exp_rmspe` function)."
    from fastai.metrics import AccumMetric, _exp_rmspe

    return AccumMetric(_exp_rmspe, name="exp_rmspe")


def fbeta(beta: float = 2.0, thresh: float = 0.5, average: str = "samples"):
    "fastai's FBetaMulti, recorded as `fbeta` (fastai would name it after sklearn's `fbeta_score`)."
    from fastai.metrics import ActivationType, skm_to_fastai
    from sklearn.metrics import fbeta_score

    return skm_to_fastai(fbeta_score, thresh=thresh, activation=ActivationType.Sigmoid, flatten=False,
                         beta=beta, average=average, zero_division=0, name="fbeta")


class PixelAccuracy(Metric):
    "Share of pixels predicted right, over the pixels whose target is not `ignore` (lesson 3's acc_camvid)."

    def __init__(self, ignore: int | None = None, name: str = "pixel_accuracy"):
        self.ignore, self._name = ignore, name

    def reset(self):
        self.correct = self.total = 0

    def accumulate(self, learn):
        pred, targ = learn.pred.argmax(dim=1), learn.y
        keep = targ != self.ignore if self.ignore is not None else targ >= 0
        self.correct += (pred[keep] == targ[keep]).sum().item()
        self.total += keep.sum().item()

    @property
    def value(self):
        return self.correct / self.total if self.total else None

    @property
    def name(self):
        return self._name


class PSNR:
    "psnr: the PSNR (dB) of each image in pixel space, the loaders' Normalize undone."

    __name__ = "psnr"

    def __init__(self, norm):
        self.norm = norm

    def __call__(self, pred, targ):
        mean, std = self.norm.mean.to(pred.device), self.norm.std.to(pred.device)
        return self.score((pred * std + mean).clamp(0, 1), (targ * std + mean).clamp(0, 1)).mean()

    @staticmethod
    def score(pred, targ):
        return psnr(pred, targ)


class SSIM(PSNR):
    "ssim: the structural similarity of each image in pixel space, the loaders' Normalize undone."

    __name__ = "ssim"

    @staticmethod
    def score(pred, targ):
        return ssim(pred, targ)


def psnr(pred, targ):
    "Peak signal-to-noise ratio in dB of each image of a batch, pixels in [0, 1]."
    import torch

    mse = ((pred - targ) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return -10 * torch.log10(mse)


def ssim(pred, targ, window: int = 11, sigma: float = 1.5):
    """Structural similarity of each image of a batch (n, c, h, w), pixels in [0, 1]: Wang et al. 2004's gaussian
    window (11 px, sigma 1.5; smaller for smaller images), K1 0.01, K2 0.03, averaged over the positions where the
    window fits and over the channels, as skimage's structural_similarity(gaussian_weights=True, data_range=1)."""
    import torch
    import torch.nn.functional as F

    pred, targ = pred.double(), targ.double()  # float32 variances of flat regions cancel to noise, which C2 magnifies
    c, size = pred.shape[1], min(window, *pred.shape[-2:])
    g = torch.exp(-((torch.arange(size, device=pred.device, dtype=pred.dtype) - (size - 1) / 2) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(c, 1, size, size)

    def local(x):  # the window's weighted mean at each position, per channel
        return F.conv2d(x, kernel, groups=c)

    mu_p, mu_t = local(pred), local(targ)
    var_p, var_t = local(pred * pred) - mu_p**2, local(targ * targ) - mu_t**2
    cov = local(pred * targ) - mu_p * mu_t
    c1, c2 = 0.01**2, 0.03**2
    s = (2 * mu_p * mu_t + c1) * (2 * cov + c2) / ((mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2))
    return s.flatten(1).mean(1).float()
