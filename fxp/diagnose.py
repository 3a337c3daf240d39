"""What a run's curves say, with the rules of the fastai course (lesson 2), and what to try: `fxp diagnose RUN_DIR`
(fxp.commands.diagnose) and every run as it ends (`finish`, into summary.json and plots/diagnosis.png).

A failed run's diagnosis is its error. Otherwise the rules, checked on metrics.csv (a row per epoch), most serious
first:
- killed (or interrupted, stale): the run stopped before its last epoch -> resume it (`fxp resume RUN_DIR`); what its
  curves say so far follows;
- diverged: a loss is NaN/inf, the valid loss jumps above EXPLODE times its lowest so far (at the first epoch:
  EXPLODE times the training loss) while the training loss did not fall every epoch, or the run stopped as
  `diverged` -> the learning rate is too high;
- valid loss unreliable: the valid loss jumps so while the training loss fell every epoch: not a learning rate too
  high (the status stays `completed`, and the words agree), but a valid split too small to measure the model;
- activations collapse: a layer's activations were nearly all near zero over an epoch (a run with
  trainer.activation_stats=true records it: summary.json's activation_stats) -> lower the lr, add BatchNorm, check the
  init (lessons 10-11);
- no better than its baseline: the main metric's last value is not better than what a predictor that never looks
  at the inputs reaches (summary.json's baselines: the majority label, the training mean, the best constant tag
  set, ...: fxp.baselines) -> the model learnt nothing usable;
- over-fitting: the main metric (task.monitor; else error_rate, else valid_loss) reached its best and then got
  clearly worse: at least MIN_EPOCHS_AFTER_BEST epochs after the best, the last two worse than the best by more
  than NOISE of the metric's range over the run -> fewer epochs, more augmentation, weight decay, dropout;
- under-fitting: training loss above valid loss at every epoch -> more epochs or a higher lr, less regularisation;
- still improving: the last epoch's valid loss drop is at least STEEP times the run's average drop per epoch ->
  train longer;
- input-bound: where the time went, not the fit. Over the epochs after each stage's first (a stage's first epoch
  holds one-time costs: the image cache built, worker processes started, compilation), the training loop waited for
  its batches (metrics.csv's data_s) at least INPUT_BOUND of its time (data_s + step_s) -> the decode-once cache,
  loader workers, lighter item transforms. A loop that keeps its device fed waits far less: 3% for digits in memory,
  10% for mnist_tiny from the cache, 65% from its PNG files (data.cache=off), on a CPU.
Several may hold; the first in that order is the verdict, all are listed (a diverged run's curves say nothing
more, so divergence is listed alone, with collapsed activations if recorded).

A GAN's curves (a run whose kind declares adversarial loss columns, its ADVERSARIAL: gen_loss and crit_loss) are
adversarial: the generator and the critic pull its
losses against each other, so the over-/under-fitting and explosion rules do not apply. What can be said: a
non-finite loss (diverged), the main metric against its baseline (superres: psnr against bicubic upsampling's), whether
the main metric improved; and that the supervised pre-training steps (step folders: gen/, critic/) are diagnosed on
their own with these rules.

Advice names keys that act: `trainer.stages.N.epochs` where the stages set their own epochs (then trainer.epochs
changes nothing), trainer.epochs for a single stage that does not.
"""
from __future__ import annotations

import math
from pathlib import Path

from fxp.runs import (
    CONFIG,
    METRICS,
    PLOTS,
    TIMES,
    baselines,
    first_line,
    lower_is_better,
    read_config,
    read_metrics,
    read_monitor,
    read_run,
    read_summary,
)

EXPLODE = 10.0
MIN_EPOCHS_AFTER_BEST = 2
NOISE = 0.1
STEEP = 0.5
INPUT_BOUND = 0.3  # data_s / (data_s + step_s) from which the loop is input-bound: its device idles a third of the time
PLOT = Path(PLOTS) / "diagnosis.png"

ADVICE = {
    "failed": "fix what the error says and run again (the traceback is in train.log)",
    "diverged": "learning rate too high: lower trainer.lr (e.g. 10x), or pick it with trainer.lr=find",
    "valid loss unreliable": "the training loss fell every epoch, so the learning rate is not too high: a valid split "
                             "of {items} is too small to measure the model; use a larger one (task.valid_pct, more "
                             "data)",
    "activations collapse": "activations collapse in layer {layer} at epoch {epoch}: lower the lr (trainer.lr), add "
                            "BatchNorm, check the init ({plot})",
    "no better than its baseline": "the model learnt nothing usable: check the labels and inputs (fxp predict on a "
                                   "few items), then train longer ({more}) or at a higher lr (trainer.lr=find)",
    "over-fitting": "train fewer epochs ({fewer}), or regularise: more data augmentation, weight decay (trainer.wd), "
                    "dropout",
    "under-fitting": "train more epochs ({more}) or at a higher lr; use less regularisation (weight decay, dropout, "
                     "augmentation)",
    "still improving": "train longer ({more}): the valid loss was still falling steeply",
    "input-bound": "the model waits for its batches: decode images once (data.cache=auto{cache}), give the loader "
                   "worker processes (trainer.num_workers=N{workers}), or lighten the item transforms",
    "looks fine": "nothing to fix by these rules; compare runs with fxp runs --sort METRIC",
    "adversarial": "a GAN's losses are adversarial, so the over- and under-fitting rules do not apply: judge the "
                   "generated images in plots/ and the main metric{steps}",
    "no epochs": "no epoch finished: nothing to diagnose yet",
}
TIME_FINDINGS = ("input-bound",)  # where the time went, not the fit: listed with their own advice under a fit verdict
STOPPED = ("killed", "interrupted", "stale")  # a run that stopped before its last epoch, and can go on
for _status in STOPPED:
    ADVICE[_status] = "resume it from its last checkpoint: fxp resume {run}"


def finish(run) -> None:
    "A run's diagnosis as it ends (`fxp.writer.Run(finish=...)`), whatever its status; never in the way of its summary."
    if not read_metrics(run.path):
        return
    try:
        run.info["diagnosis"] = diagnose(run.path, status=run.status, summary=run.info)
        if run.cfg.trainer.plots:
            plot(run.path, run.info["diagnosis"], run.path / PLOT)
    except Exception as e:  # the run's own outcome matters more than its diagnosis
        run.info["diagnosis"] = {"error": f"{type(e).__name__}: {e}"}


# --- the rules -------------------------------------------------------------------------------------------------


def diagnose(run_dir: Path, status: str | None = None, summary: dict | None = None) -> dict:
    """The run's verdict, the epoch it happened at, what to try, and every finding (JSON-able).

    `status` and `summary` (fields such as the error and the baselines) override summary.json's, for a caller that
    diagnoses a run before its summary is final.
    """
    run_dir = Path(run_dir)
    rows = [r for r in read_metrics(run_dir) if isinstance(r.get("epoch"), float)]
    summary = {**_dict(read_summary(run_dir)), **(summary or {})}
    status = status or summary.get("status")
    if status == "running":  # or its process is gone: what fxp runs says of it
        status = read_run(run_dir, run_dir.parent)["status"]
    metric, lower = main_metric(run_dir, rows)
    keys = EpochKeys(run_dir, rows)
    baseline = baselines(summary).get(metric)
    adversarial = adversarial_columns(run_dir, rows)
    if status == "failed":
        findings = [failed(rows, summary.get("error"))]
    elif adversarial:
        findings = adversarial_findings(run_dir, rows, status, metric, lower, baseline, adversarial)
    else:
        divergence = diverged(rows, status)  # a diverged run's curves say nothing more
        collapse = collapsed(summary)
        findings = [f for f in (divergence, collapse) if f] if divergence else [
            f for f in (collapse, unreliable_valid(rows, summary), below_baseline(rows, metric, lower, baseline, keys),
                        over_fitting(rows, metric, lower, keys), under_fitting(rows, keys),
                        still_improving(rows, keys)) if f]
    if status != "failed" and not any(f["verdict"] == "diverged" for f in findings):
        findings += [f for f in (input_bound(run_dir, rows),) if f]
    if status in STOPPED:
        findings.insert(0, stopped(run_dir, rows, status))
    if not findings:
        findings = [finding("looks fine", _epoch(rows[-1]), "none of the rules holds") if rows
                    else finding("no epochs", None, f"{METRICS} has no rows")]
    top = findings[0]
    return dict(verdict=top["verdict"], epoch=top["epoch"], advice=top["advice"], metric=metric,
                epochs=len(rows), curves=curves(rows, metric, baseline), findings=findings)


def finding(verdict: str, epoch: int | None, evidence: str, **advice) -> dict:
    return dict(verdict=verdict, epoch=epoch, advice=ADVICE[verdict].format(epoch=epoch, **advice), evidence=evidence)


class EpochKeys:
    """The keys that set a run's epochs, as advice names them: trainer.epochs for one stage that does not set its
    own, else `trainer.stages.N.epochs` (with stages that set their epochs, trainer.epochs changes nothing).
    A step's folder (lm/, gen/: its config is the run's, its stages the kind's) gets the step's stages, unnamed."""

    def __init__(self, run_dir: Path, rows: list[dict]):
        self.step = not (run_dir / CONFIG).is_file() and (run_dir.parent / CONFIG).is_file()
        trainer = _dict(_dict(read_config(run_dir)).get("trainer"))
        self.stages = [_dict(st) for st in trainer.get("stages") or []] if isinstance(trainer.get("stages"),
                                                                                       list) else []
        self.epochs, self.rows = trainer.get("epochs"), rows

    def _key(self, i: int) -> str:
        if not self.stages or (len(self.stages) == 1 and self.stages[0].get("epochs") is None):
            return "trainer.epochs"
        return f"trainer.stages.{i}.epochs"

    def more(self) -> str:
        "More epochs: the last stage's key, with its value now."
        if self.step:
            return "more epochs in this step's stages (fxp train --cfg job shows them)"
        i = max(len(self.stages) - 1, 0)
        now = self.stages[i].get("epochs") if self.stages else None
        now = self.epochs if now is None else now
        return f"more {self._key(i)}" + (f", now {now}" if now is not None else "")

    def fewer(self, epoch: int) -> str:
        "Stop at `epoch` (counted across stages): the key of its stage, set to its epoch within the stage."
        if self.step:
            return f"stop this step at epoch {epoch}: fewer epochs in its stages"
        row = next((r for r in self.rows if _epoch(r) == epoch), None)
        stage = _stage(row) if row is not None else None
        if stage is None or not 1 <= stage <= len(self.stages) or self._key(stage - 1) == "trainer.epochs":
            return f"trainer.epochs={epoch}"
        within = sum(1 for r in self.rows if _stage(r) == stage and _epoch(r) <= epoch)
        later = len(self.stages) - stage
        tail = f", and fewer or none of the {later} later stage{'s' * (later != 1)}" if later else ""
        return f"{self._key(stage - 1)}={within}{tail}"


def main_metric(run_dir: Path, rows: list[dict]) -> tuple[str, bool]:
    "The metric over-fitting is judged on, and whether lower is better."
    monitor = read_monitor(run_dir) if (run_dir / CONFIG).is_file() else None
    names = rows[0] if rows else {}
    for name in ([monitor.metric] if monitor else []) + ["error_rate", "valid_loss"]:
        if name in names:
            return name, lower_is_better(name, monitor)
    return "valid_loss", True


def diverged(rows: list[dict], status: str | None) -> dict | None:
    """The first epoch with a non-finite loss or an exploding valid loss (unless the training loss fell every epoch:
    then the lr is fine, `unreliable_valid`); else the epoch a `diverged` run stopped in."""
    epoch = next((e for e in (_non_finite(rows), None if _falling(rows) else _exploding(rows)) if e), None)
    if epoch is not None:
        return finding("diverged", epoch[0], epoch[1])
    if status == "diverged":
        epoch = _epoch(rows[-1]) + 1 if rows else 1
        return finding("diverged", epoch, f"the loss became NaN or infinite in epoch {epoch} (status diverged)")
    return None


def _non_finite(rows: list[dict]) -> tuple | None:
    "(epoch, evidence) of the first row with a non-finite loss."
    for r in rows:
        train, valid = r.get("train_loss"), r.get("valid_loss")
        if not (_finite(train) and _finite(valid)):
            return _epoch(r), f"train_loss {train}, valid_loss {valid} at epoch {_epoch(r)}"
    return None


def _exploding(rows: list[dict]) -> tuple | None:
    "(epoch, evidence) of the first valid loss over EXPLODE times its lowest so far (first epoch: the training loss)."
    lowest = math.inf
    for r in rows:
        train, valid = r.get("train_loss"), r.get("valid_loss")
        reference = lowest if lowest < math.inf else train
        if _finite(valid) and _finite(reference) and valid > EXPLODE * reference:
            what = "its lowest so far" if lowest < math.inf else "the training loss"
            return _epoch(r), f"valid_loss {valid:.4g} at epoch {_epoch(r)}, over {EXPLODE:g}x {what} ({reference:.4g})"
        lowest = min(lowest, valid) if _finite(valid) else lowest
    return None


def _falling(rows: list[dict]) -> bool:
    "The training loss fell at every epoch (two epochs or more, all finite)."
    train = [r.get("train_loss") for r in rows]
    return len(train) > 1 and all(map(_finite, train)) and all(b < a for a, b in zip(train, train[1:]))


def unreliable_valid(rows: list[dict], summary: dict) -> dict | None:
    "A valid loss that explodes while the training loss fell every epoch: the valid split, not the lr."
    epoch = _exploding(rows) if _falling(rows) else None
    if epoch is None:
        return None
    n = summary.get("items_valid")
    items = f"{n} item{'s' * (n != 1)}" if isinstance(n, int) else "few items"
    return finding("valid loss unreliable", epoch[0], f"{epoch[1]}, while train_loss fell every epoch "
                                                      f"({rows[0]['train_loss']:.4g} -> {rows[-1]['train_loss']:.4g})",
                   items=items)


def stopped(run_dir: Path, rows: list[dict], status: str) -> dict:
    "A run that stopped before its last epoch: where, and the command that goes on from there."
    done = f"after epoch {_epoch(rows[-1])}, its last finished epoch" if rows else "before its first epoch ended"
    return finding(status, _epoch(rows[-1]) if rows else None,
                   f"the run was {status} {done} (status {status}); its curves so far are diagnosed below",
                   run=run_dir)


def collapsed(summary: dict) -> dict | None:
    "The layer whose activations collapsed first (summary.json's activation_stats, fxp.techniques), with every other."
    stats = _dict(summary.get("activation_stats"))
    layers = [c for c in stats.get("collapsed") or [] if isinstance(c, dict) and {"layer", "epoch"} <= c.keys()]
    if not layers:
        return None
    first = min(layers, key=lambda c: (c["epoch"], c.get("index", 0)))
    evidence = "; ".join(f"{c['layer']}: {c.get('near_zero', 1):.0%} near zero from epoch {c['epoch']}" for c in layers)
    share = f"over {stats.get('near_zero_above', 0):.0%} of a layer's activations at or below 0.05: dead after a ReLU"
    return finding("activations collapse", first["epoch"], f"{evidence} ({share})", layer=first["layer"],
                   plot=stats.get("plot", "plots/activation_stats.png"))


def failed(rows: list[dict], error) -> dict:
    "A failed run: its error is the diagnosis."
    done = f"after {len(rows)} epoch{'s' * (len(rows) != 1)}" if rows else "before any epoch (no epochs)"
    return finding("failed", None, f"the run failed {done}: {first_line(error) or 'no error recorded (see train.log)'}")


def below_baseline(rows: list[dict], metric: str, lower: bool, baseline, keys: EpochKeys) -> dict | None:
    "The main metric's last value no better than the baseline fxp computed for it."
    last = rows[-1].get(metric) if rows else None
    if baseline is None or not _finite(last) or (last < baseline[0] if lower else last > baseline[0]):
        return None
    return finding("no better than its baseline", _epoch(rows[-1]),
                   f"{metric} {last:.4g} vs {baseline[0]:.4g} for {baseline[1]}", more=keys.more())


def adversarial_columns(run_dir: Path, rows: list[dict]) -> tuple:
    "The loss columns the run's kind declares adversarial (its ADVERSARIAL), if its curves hold them; else ()."
    from fxp import dispatch

    task = read_config(run_dir).get("task")
    kind = task.get("kind") if isinstance(task, dict) else None
    if not rows or not isinstance(kind, str) or kind not in dispatch.kinds():
        return ()
    columns = dispatch.declared(dispatch.kind_module(kind), "ADVERSARIAL")
    return columns if all(c in rows[0] for c in columns) else ()


def adversarial_findings(run_dir: Path, rows: list[dict], status, metric: str, lower: bool, baseline,
                         columns: tuple) -> list[dict]:
    """What a GAN's curves (its adversarial loss `columns`) can say: a non-finite loss, the main metric against its
    baseline and over the run."""
    bad = next((r for r in rows if not all(_finite(r.get(k)) for k in ("train_loss", "valid_loss", *columns)
                                           if k in r)), None)
    if bad is not None or status == "diverged":
        epoch = _epoch(bad) if bad is not None else (_epoch(rows[-1]) + 1)
        return [finding("diverged", epoch, f"a loss became NaN or infinite in epoch {epoch}")]
    first, last = rows[0].get(metric), rows[-1].get(metric)
    evidence = [", ".join(f"{c} {rows[0][c]:.4g} -> {rows[-1][c]:.4g}" for c in columns)
                + " (adversarial: not a measure of fit)"]
    if _finite(first) and _finite(last) and metric not in columns:
        better = last < first if lower else last > first
        evidence.append(f"{metric} {first:.4g} -> {last:.4g} ({'improved' if better else 'no better'})")
    if baseline is not None and _finite(last):
        beats = last < baseline[0] if lower else last > baseline[0]
        evidence.append(f"{metric} {last:.4g} vs {baseline[0]:.4g} for {baseline[1]}")
        if not beats:
            return [finding("no better than its baseline", _epoch(rows[-1]), "; ".join(evidence[1:]),
                            more="the generator's pre-training, then the GAN step")]
    steps = [p.name for p in sorted(Path(run_dir).iterdir()) if (p / METRICS).is_file()] if rows else []
    hint = (f"; its supervised pre-training steps are diagnosed on their own: "
            f"{', '.join(f'fxp diagnose {Path(run_dir) / n}' for n in steps)}") if steps else ""
    return [finding("adversarial", _epoch(rows[-1]), "; ".join(evidence), steps=hint)]


def over_fitting(rows: list[dict], metric: str, lower: bool, keys: EpochKeys) -> dict | None:
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
                                         f"epoch {last}", fewer=keys.fewer(best))


def under_fitting(rows: list[dict], keys: EpochKeys) -> dict | None:
    "Training loss above valid loss at every epoch."
    pairs = [(r.get("train_loss"), r.get("valid_loss")) for r in rows]
    if not pairs or not all(_finite(t) and _finite(v) and t > v for t, v in pairs):
        return None
    (t0, v0), (t1, v1) = pairs[0], pairs[-1]
    return finding("under-fitting", _epoch(rows[-1]), f"train_loss above valid_loss at every epoch "
                                                      f"({t0:.4g} > {v0:.4g} first, {t1:.4g} > {v1:.4g} last)",
                   more=keys.more())


def still_improving(rows: list[dict], keys: EpochKeys) -> dict | None:
    "The valid loss's last drop, against its average drop per epoch over the run."
    valid = [r.get("valid_loss") for r in rows]
    if len(valid) < 2 or not all(map(_finite, valid)):
        return None
    last_drop, average_drop = valid[-2] - valid[-1], (valid[0] - valid[-1]) / (len(valid) - 1)
    if last_drop <= 0 or average_drop <= 0 or last_drop < STEEP * average_drop:
        return None
    return finding("still improving", _epoch(rows[-1]), f"valid_loss fell {last_drop:.4g} in the last epoch "
                                                        f"({valid[-2]:.4g} -> {valid[-1]:.4g}); "
                                                        f"{average_drop:.4g} per epoch on average",
                   more=keys.more())


def input_bound(run_dir: Path, rows: list[dict]) -> dict | None:
    "The share of the training loop's time spent waiting for batches, in the epochs after each stage's first."
    later = [r for r, before in zip(rows, [None, *rows]) if before is not None and _stage(r) == _stage(before)]
    if not later or not all(_finite(r.get(t)) for r in later for t in TIMES):
        return None
    data, step = (sum(r[t] for r in later) for t in TIMES)
    if data + step <= 0 or data / (data + step) < INPUT_BOUND:
        return None
    first, last = _epoch(later[0]), _epoch(later[-1])
    epochs = f"epoch {last}" if first == last else f"epochs {first}-{last}"
    config = _dict(read_config(run_dir))
    return finding("input-bound", last, f"data is {data / (data + step):.0%} of step time ({data:.3g} s waiting "
                                        f"for batches, {step:.3g} s in forward, backward and step; {epochs})",
                   cache=_now(config, "data", "cache"), workers=_now(config, "trainer", "num_workers"))


def _now(config: dict, group: str, key: str) -> str:
    "`; now VALUE` for a key of the run's config.yaml, '' if it has none (an older run)."
    value = _dict(config.get(group)).get(key)
    return f"; now {value}" if value is not None else ""


def curves(rows: list[dict], metric: str, baseline=None) -> str:
    "Each loss and the main metric from the first epoch to the last, in a line; the metric's baseline if known."
    if not rows:
        return ""
    first, last = rows[0], rows[-1]
    names = dict.fromkeys(["train_loss", "valid_loss", metric])
    line = ", ".join(f"{k} {first.get(k, math.nan):.4g} -> {last.get(k, math.nan):.4g}" for k in names
                     if isinstance(first.get(k), float) and isinstance(last.get(k), float))
    return line + (f" ({baseline[0]:.4g} for {baseline[1]})" if baseline is not None else "")


def _finite(v) -> bool:
    return isinstance(v, float) and math.isfinite(v)


def _epoch(row: dict) -> int:
    return int(row["epoch"])


def _stage(row: dict) -> int | None:
    return int(row["stage"]) if _finite(row.get("stage")) else None


def _dict(value) -> dict:
    "A mapping read from a file, or {} if it has another shape."
    return value if isinstance(value, dict) else {}


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
