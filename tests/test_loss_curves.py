"""plots/loss_curves.png (issue 16 item 10): one panel per scale, so a language model's accuracy (0.06) and
perplexity (300) are not drawn on one axis, and a GAN's gen_loss and crit_loss are drawn at all."""
import csv

import pytest

from fxp import plots


def write_metrics(folder, stages, **curves):
    folder.mkdir(parents=True, exist_ok=True)
    n = len(next(iter(curves.values())))
    stage = [i + 1 for i, k in enumerate(stages) for _ in range(k)]
    with open(folder / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["stage", "epoch", *curves, "lr", "time"])
        for i in range(n):
            w.writerow([stage[i], i + 1, *(c[i] for c in curves.values()), 1e-3, 1.0])
    return folder


CASES = {
    "language model": (dict(train_loss=[5.2, 4.6, 4.3], valid_loss=[5.0, 4.7, 4.5], accuracy=[0.03, 0.05, 0.06],
                            perplexity=[410.0, 330.0, 300.0]),
                       [["train_loss", "valid_loss"], ["accuracy"], ["perplexity"]]),
    "classifier": (dict(train_loss=[1.2, 0.6, 0.3], valid_loss=[0.3, 0.2, 0.1], accuracy=[0.9, 0.95, 0.97],
                        error_rate=[0.1, 0.05, 0.03]),
                   [["train_loss", "valid_loss"], ["accuracy", "error_rate"]]),
    "gan": (dict(train_loss=[3.1, 2.9, 3.3], valid_loss=[2.8, 3.0, 3.2], gen_loss=[2.0, 2.3, 2.6],
                 crit_loss=[0.7, 0.69, 0.66], psnr=[24.1, 24.5, 24.9]),
            [["train_loss", "valid_loss"], ["gen_loss"], ["crit_loss"], ["psnr"]]),
    "regression": (dict(train_loss=[9.0, 1.0, 0.5], valid_loss=[8.0, 2.0, float("nan")], mse=[8.0, 2.0, 0.4],
                        mae=[2.0, 1.0, 0.5]),
                   [["train_loss", "valid_loss"], ["mse"], ["mae"]]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_one_panel_per_scale(tmp_path, case):
    curves, panels = CASES[case]
    run = write_metrics(tmp_path / "run", [1, 2], **curves)
    assert plots.curve_panels(plots.read_metrics(run)) == panels
    plots.loss_curves(run)
    png = (run / "plots" / "loss_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_panel_is_drawn(tmp_path, monkeypatch):
    "The language model's accuracy and perplexity each on an axis of its own."
    curves, _ = CASES["language model"]
    run = write_metrics(tmp_path / "run", [3], **curves)
    drawn = []
    real_save = plots.save

    def spy(fig, dest):
        drawn.extend([sorted(line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_"))
                      for ax in fig.axes if ax.get_visible()])
        real_save(fig, dest)

    monkeypatch.setattr(plots, "save", spy)
    plots.loss_curves(run)
    assert drawn == [["train_loss", "valid_loss"], ["accuracy"], ["perplexity"]]
