"""What a run's curves say, with the rules of the fastai course (lesson 2), and what to try: `fxp diagnose RUN_DIR`
(fxp.commands.diagnose) and every run as it ends (`finish`, into summary.json and plots/diagnosis.png).

The rules, checked on metrics.csv (a row per epoch), most serious first:
- diverged: a loss is NaN/inf, the valid loss jumps above EXPLODE times its lowest so far (at the first epoch:
  EXPLODE times the training loss), or the run stopped as `diverged` -> the learning rate is too high;
- over-fitting: the main metric (task.monitor; else error_rate, else valid_loss) reached its best and then got
  clearly worse: at least MIN_EPOCHS_AFTER_BEST epochs after the best, the last two worse than the best by more
  than NOISE of the metric's range over the run -> fewer epochs, more augmentation, weight decay, dropout;
- under-fitting: training loss above valid loss at every epoch -> more epochs or a higher lr, less regularisation;
- still improving: the last epoch's valid loss drop is at least STEEP times the run's average drop per epoch ->
  train longer.
Several may hold; the first in that order is the verdict, all are listed (a diverged run's curves say nothing
more, so divergence is listed alone).
"""
from __future__ import annotations

import math
from pathlib import Path

from fxp.runs import CONFIG, METRICS, PLOTS, lower_is_better, read_metrics, read_monitor, read_summary

EXPLODE = 10.0
MIN_EPOCHS_AFTER_BEST = 2
NOISE = 0.1
STEEP = 0.5
PLOT = Path(PLOTS) / "diagnosis.png"

ADVICE = {
    "diverged": "learning rate too high: lower trainer.lr (e.g. 10x), or pick it with trainer.lr=find",
    "over-fitting": "train fewer epochs (trainer.epochs={epoch}), or regularise: more data augmentation, "
                    "weight decay (trainer.wd), dropout",
    "under-fitting": "train more epochs (trainer.epochs) or at a higher lr; use less regularisation "
                     "(weight decay, dropout, augmentation)",
    "still improving": "train longer (more trainer.epochs): the valid loss was still falling steeply",
    "looks fine": "nothing to fix by these rules; compare runs with fxp runs --sort METRIC",
    "no epochs": "no epoch finished: nothing to diagnose yet",
}


def finish(run) -> None:
    "A run's diagnosis as it ends (`fxp.runs.Run(finish=...)`), whatever its status; never in the way of its summary."
    if not read_metrics(run.path):
        return
    try:
        run.info["diagnosis"] = diagnose(run.path, status=run.status)
        plot(run.path, run.info["diagnosis"], run.path / PLOT)
    except Exception as e:  # the run's own outcome matters more than its diagnosis
        run.info["diagnosis"] = {"error": f"{type(e).__name__}: {e}"}


# --- the rules -------------------------------------------------------------------------------------------------


def diagnose(run_dir: Path, status: str | None = None) -> dict:
    """The run's verdict, the epoch it happened at, what to try, and every finding (JSON-able).

    `status` overrides summary.json's, for a caller that diagnoses a run before its summary is final.
    """
    run_dir = Path(run_dir)
    rows = [r for r in read_metrics(run_dir) if isinstance(r.get("epoch"), float)]
    status = status or read_summary(run_dir).get("status")
    metric, lower = main_metric(run_dir, rows)
    divergence = diverged(rows, status)  # a diverged run's curves say nothing more
    findings = [divergence] if divergence else [f for f in (over_fitting(rows, metric, lower), under_fitting(rows),
                                                            still_improving(rows)) if f]
    if not findings:
        findings = [finding("looks fine", _epoch(rows[-1]), "none of the rules holds") if rows
                    else finding("no epochs", None, f"{METRICS} has no rows")]
    top = findings[0]
    return dict(verdict=top["verdict"], epoch=top["epoch"], advice=top["advice"], metric=metric,
                epochs=len(rows), curves=curves(rows, metric), findings=findings)


def finding(verdict: str, epoch: int | None, evidence: str) -> dict:
    return dict(verdict=verdict, epoch=epoch, advice=ADVICE[verdict].format(epoch=epoch), evidence=evidence)


def main_metric(run_dir: Path, rows: list[dict]) -> tuple[str, bool]:
    "The metric over-fitting is judged on, and whether lower is better."
    monitor = read_monitor(run_dir) if (run_dir / CONFIG).is_file() else None
    names = rows[0] if rows else {}
    for name in ([monitor.metric] if monitor else []) + ["error_rate", "valid_loss"]:
        if name in names:
            return name, lower_is_better(name, monitor)
    return "valid_loss", True


def diverged(rows: list[dict], status: str | None) -> dict | None:
    "The first epoch with a non-finite loss or an exploding valid loss; else the epoch a `diverged` run stopped in."
    lowest = math.inf
    for r in rows:
        train, valid = r.get("train_loss"), r.get("valid_loss")
        if not (_finite(train) and _finite(valid)):
            return finding("diverged", _epoch(r), f"train_loss {train}, valid_loss {valid} at epoch {_epoch(r)}")
        reference = lowest if lowest < math.inf else train
        if valid > EXPLODE * reference:
            what = "its lowest so far" if lowest < math.inf else "the training loss"
            return finding("diverged", _epoch(r), f"valid_loss {valid:.4g} at epoch {_epoch(r)}, over "
                                                  f"{EXPLODE:g}x {what} ({reference:.4g})")
        lowest = min(lowest, valid)
    if status == "diverged":
        epoch = _epoch(rows[-1]) + 1 if rows else 1
        return finding("diverged", epoch, f"the loss became NaN or infinite in epoch {epoch} (status diverged)")
    return None


def over_fitting(rows: list[dict], metric: str, lower: bool) -> dict | None:
    "The main metric's best epoch, if the metric then got clearly and lastingly worse."
    values = [r.get(metric) for r in rows]
    if len(values) < 1 + MIN_EPOCHS_AFTER_BEST or not all(map(_finite, values)):
        return None
    sign = 1 if lower else -1  # sign * value: lower is better
    b = min(range(len(values)), key=lambda i: sign * values[i])
    tolerance = NOISE * (max(values) - min(values))
    worse = [sign * (v - values[b]) for v in values[-2:]]
    if len(values) - 1 - b < MIN_EPOCHS_AFTER_BEST or min(worse) <= tolerance:
        return None
    best, last = _epoch(rows[b]), _epoch(rows[-1])
    return finding("over-fitting", best, f"{metric} best {values[b]:.4g} at epoch {best}, {values[-1]:.4g} at "
                                         f"epoch {last}")


def under_fitting(rows: list[dict]) -> dict | None:
    "Training loss above valid loss at every epoch."
    pairs = [(r.get("train_loss"), r.get("valid_loss")) for r in rows]
    if not pairs or not all(_finite(t) and _finite(v) and t > v for t, v in pairs):
        return None
    (t0, v0), (t1, v1) = pairs[0], pairs[-1]
    return finding("under-fitting", _epoch(rows[-1]), f"train_loss above valid_loss at every epoch "
                                                      f"({t0:.4g} > {v0:.4g} first, {t1:.4g} > {v1:.4g} last)")


def still_improving(rows: list[dict]) -> dict | None:
    "The valid loss's last drop, against its average drop per epoch over the run."
    valid = [r.get("valid_loss") for r in rows]
    if len(valid) < 2 or not all(map(_finite, valid)):
        return None
    last_drop, average_drop = valid[-2] - valid[-1], (valid[0] - valid[-1]) / (len(valid) - 1)
    if last_drop <= 0 or average_drop <= 0 or last_drop < STEEP * average_drop:
        return None
    return finding("still improving", _epoch(rows[-1]), f"valid_loss fell {last_drop:.4g} in the last epoch "
                                                        f"({valid[-2]:.4g} -> {valid[-1]:.4g}); "
                                                        f"{average_drop:.4g} per epoch on average")


def curves(rows: list[dict], metric: str) -> str:
    "Each loss and the main metric from the first epoch to the last, in a line."
    if not rows:
        return ""
    first, last = rows[0], rows[-1]
    names = dict.fromkeys(["train_loss", "valid_loss", metric])
    return ", ".join(f"{k} {first.get(k, math.nan):.4g} -> {last.get(k, math.nan):.4g}" for k in names
                     if isinstance(first.get(k), float) and isinstance(last.get(k), float))


def _finite(v) -> bool:
    return isinstance(v, float) and math.isfinite(v)


def _epoch(row: dict) -> int:
    return int(row["epoch"])


# --- plot -------------------------------------------------------------------------------------------------


def plot(run_dir: Path, diagnosis: dict, dest_png: Path) -> None:
    "Train/valid loss and the main metric per epoch, the diagnosed epoch marked, the verdict in the title."
    from matplotlib.ticker import MaxNLocator

    from fxp.plots import plt, save

    rows = read_metrics(run_dir)
    if not rows:
        return
    epochs = [r["epoch"] for r in rows]
    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for name in ("train_loss", "valid_loss"):
        loss_ax.plot(epochs, [_plottable(r.get(name)) for r in rows], marker="o", label=name)
    if _spans_decades([r.get(k) for r in rows for k in ("train_loss", "valid_loss")]):
        loss_ax.set_yscale("log")  # an exploding loss would flatten the rest of the curve
    metric = diagnosis["metric"]
    metric_ax.plot(epochs, [_plottable(r.get(metric)) for r in rows], marker="o", color="C2", label=metric)
    for ax in (loss_ax, metric_ax):
        if diagnosis["epoch"] is not None:
            ax.axvline(diagnosis["epoch"], color="red", linestyle="--", label=f"{diagnosis['verdict']} "
                                                                              f"(epoch {diagnosis['epoch']})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend()
    at = f" at epoch {diagnosis['epoch']}" if diagnosis["epoch"] is not None else ""
    fig.suptitle(f"{diagnosis['verdict']}{at}\n{diagnosis['advice']}", fontsize=10)
    save(fig, Path(dest_png))


def _plottable(v) -> float:
    return v if _finite(v) else math.nan


def _spans_decades(values) -> bool:
    positive = [v for v in values if _finite(v) and v > 0]
    return bool(positive) and max(positive) > 100 * min(positive)
