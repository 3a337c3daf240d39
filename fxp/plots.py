"Plots every run gets, written as PNGs under the run's plots/ folder."
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # runs write files; never open a window
import matplotlib.pyplot as plt

from fxp.runs import NOT_METRICS, read_metrics


def loss_curves(run_dir: Path) -> None:
    "Train and valid loss per epoch, and each metric, with stage boundaries marked."
    rows = read_metrics(run_dir)
    if not rows:
        return
    epochs = [r["epoch"] for r in rows]
    metrics = [k for k in rows[0] if k not in NOT_METRICS and "loss" not in k]
    fig, axs = plt.subplots(1, 1 + bool(metrics), figsize=(6 * (1 + bool(metrics)), 4), squeeze=False)
    for name in ("train_loss", "valid_loss"):
        axs[0, 0].plot(epochs, [r[name] for r in rows], marker="o", label=name)
    for name in metrics:
        axs[0, 1].plot(epochs, [r[name] for r in rows], marker="o", label=name)
    for ax in axs.flat:
        for a, b in zip(rows, rows[1:]):
            if a["stage"] != b["stage"]:
                ax.axvline(a["epoch"] + 0.5, color="grey", linestyle=":")
        ax.set_xlabel("epoch")
        ax.legend()
    save(fig, Path(run_dir) / "plots" / "loss_curves.png")


def save(fig, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(dest, dpi=80)
    plt.close(fig)


def save_current(dest: Path) -> None:
    "Save the figure a fastai plotting method just drew."
    save(plt.gcf(), dest)


def displayable(im):
    "An image tensor (CHW or HW, any range) as imshow takes it: HWC (HW for one channel), min-max scaled to [0, 1]."
    im = im.float().cpu()
    im = (im - im.min()) / (im.max() - im.min() + 1e-8)
    return im.permute(1, 2, 0).squeeze(-1) if im.ndim == 3 else im


def confusion_matrix(learn, dest: Path):
    "fastai's confusion matrix of the validation set, saved to `dest`; returns the interpretation (top losses)."
    from fastai.interpret import ClassificationInterpretation

    interp = ClassificationInterpretation.from_learner(learn)
    interp.plot_confusion_matrix(figsize=(6, 6))
    save_current(dest)
    return interp
