"Plots every run gets, written as PNGs under the run's plots/ folder."
from __future__ import annotations

import math
import re
import statistics
import sys
import textwrap
import warnings
from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # runs write files; never open a window
import matplotlib.pyplot as plt
from matplotlib import font_manager

from fxp.runs import NOT_METRICS, read_metrics
from fxp.writer import write_atomic

# Fonts that draw labels in other scripts (CJK, Arabic, Devanagari...), after matplotlib's DejaVu Sans: matplotlib
# falls back through the list glyph by glyph. Only installed ones are listed (a missing one is a log line per figure).
WIDE_FONTS = ("Noto Sans", "Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans CJK KR", "WenQuanYi Zen Hei",
              "Droid Sans Fallback", "Noto Sans Arabic", "Noto Sans Hebrew", "Noto Sans Devanagari", "Noto Sans Thai",
              "Arial Unicode MS")
GLYPH = re.compile(r"Glyph (\d+) .*missing from")  # matplotlib's warning, once per character and figure
_installed = {f.name for f in font_manager.fontManager.ttflist}
plt.rcParams["font.sans-serif"] = ["DejaVu Sans", *(f for f in WIDE_FONTS if f in _installed),
                                   *plt.rcParams["font.sans-serif"][1:]]
# Titles at a fixed height: no fxp figure puts tick labels above its axes, and matplotlib's automatic placement
# measures every axis at each draw (two thirds of the time a 3x3 image grid takes to save).
plt.rcParams["axes.titley"] = 1.0


def loss_curves(run_dir: Path) -> None:
    """Each epoch's curves, one panel per scale (curve_panels), with stage boundaries marked: the language model's
    accuracy (0.06) and perplexity (300) are not drawn on one axis."""
    rows = read_metrics(run_dir)
    if not rows:
        return
    epochs = [r["epoch"] for r in rows]
    panels = curve_panels(rows)
    ncols = min(len(panels), 3)
    nrows = -(-len(panels) // ncols)
    fig, axs = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 3.8 * nrows), squeeze=False)
    for ax, names in zip(axs.flat, panels):
        for name in names:
            ax.plot(epochs, [_plottable(r.get(name)) for r in rows], marker="o", label=name)
        values = [_plottable(r.get(n)) for r in rows for n in names]
        positive = [v for v in values if v == v and v > 0]
        if positive and len(positive) == sum(v == v for v in values) and max(positive) > 100 * min(positive):
            ax.set_yscale("log")  # a loss that fell (or exploded) over decades
        for a, b in zip(rows, rows[1:]):
            if a["stage"] != b["stage"]:
                ax.axvline(a["epoch"] + 0.5, color="grey", linestyle=":")
        ax.set_xlabel("epoch")
        ax.set_title(", ".join(names), fontsize=10)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend()
    for ax in list(axs.flat)[len(panels):]:
        ax.set_visible(False)
    save(fig, Path(run_dir) / "plots" / "loss_curves.png")


def group_curves(members_metrics: list[list[dict]], labels: list[str] | None = None, band: str = "range"):
    """The curves of a group of runs (a seed group, a cross-validation's folds), given each member's metrics.csv rows
    (fxp.runs.read_metrics): a panel per metric, the members' mean at each epoch with a band (`range`: min to max;
    `std`: ± one standard deviation) and each member's final value as a point (`labels`: the members' names, in the
    legend). None if no member has a row. The figure is the caller's (to save or embed)."""
    runs = [rows for rows in members_metrics if rows]
    if not runs:
        return None
    names = list(dict.fromkeys(k for rows in runs for k in rows[0] if k not in NOT_METRICS))
    ncols = min(len(names), 3)
    nrows = -(-len(names) // ncols)
    fig, axs = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 3.8 * nrows), squeeze=False)
    for ax, name in zip(axs.flat, names):
        mean_band(ax, members_metrics, name, "mean", labels or [str(i) for i in range(len(members_metrics))], band)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7)
    for ax in list(axs.flat)[len(names):]:
        ax.set_visible(False)
    return fig


def mean_band(ax, members: list[list[dict]], metric: str, label: str, names: list[str] | None = None,
              band: str = "range") -> int:
    """The curves of `metric` in `members` (metrics.csv rows of each) on `ax`: one member's as its line; several as
    their mean at each epoch with a band (`range`: min to max; `std`: ± one standard deviation) and each one's final
    value as an x (named `<name> final` where `names` are given). Returns how many members had the metric."""
    curves = [(name, pts) for name, pts in zip(names or [None] * len(members),
                                               ([(r["epoch"], r[metric]) for r in rows if _finite(r.get(metric))]
                                                for rows in members)) if pts]
    if len(curves) == 1:
        ax.plot(*zip(*curves[0][1]), marker="o", label=label)
    elif curves:
        at: dict[float, list[float]] = {}
        for _, pts in curves:
            for x, y in pts:
                at.setdefault(x, []).append(y)
        xs = sorted(at)
        mean = [statistics.fmean(at[x]) for x in xs]
        if band == "std":
            std = [statistics.stdev(at[x]) if len(at[x]) > 1 else 0.0 for x in xs]
            lo, hi = [m - d for m, d in zip(mean, std)], [m + d for m, d in zip(mean, std)]
        else:
            lo, hi = [min(at[x]) for x in xs], [max(at[x]) for x in xs]
        (line,) = ax.plot(xs, mean, marker="o", label=f"{label} of {len(curves)}")
        ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2,
                        label="min to max" if band == "range" else "± std")
        for name, pts in curves:
            ax.plot(*pts[-1], linestyle="none", marker="x", **({"label": f"{name} final"} if name is not None
                                                               else {"color": line.get_color()}))
    return len(curves)


def _finite(v) -> bool:
    return isinstance(v, float) and math.isfinite(v)


def curve_panels(rows: list[dict]) -> list[list[str]]:
    """The curves of metrics.csv grouped by scale: train and valid loss together; the metrics whose values all lie in
    [0, 1] (accuracy, error_rate, fbeta) together; each other curve (perplexity, psnr, mse, a GAN's gen_loss and
    crit_loss) alone."""
    names = [k for k in rows[0] if k not in NOT_METRICS]
    losses = [n for n in ("train_loss", "valid_loss") if n in names]
    rest = [n for n in names if n not in losses]
    unit = [n for n in rest if "loss" not in n and _in_unit([_plottable(r.get(n)) for r in rows])]
    return [p for p in [losses, unit, *([n] for n in rest if n not in unit)] if p]


def _in_unit(values: list[float]) -> bool:
    finite = [v for v in values if v == v]
    return bool(finite) and all(0 <= v <= 1 for v in finite)


def _plottable(v) -> float:
    "A number to draw (NaN, a gap, for anything else)."
    return float(v) if isinstance(v, (int, float)) else float("nan")


def save(fig, dest: Path) -> None:
    "`fig` as the image file `dest`, written whole (a full disk leaves the old file, not a torn one); closed."
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with glyphs_noted():
            fig.tight_layout()
            # bbox_inches="tight" keeps what lies outside the axes (a legend below them); the temp file's name has no
            # image suffix, so the format is the destination's
            write_atomic(dest, lambda tmp: fig.savefig(tmp, format=dest.suffix[1:], dpi=80, bbox_inches="tight"))
    finally:
        plt.close(fig)


@contextmanager
def glyphs_noted():
    """Matplotlib's missing-glyph warnings (one per character and figure: 20 lines for a few class names) as one note
    per process naming the characters; other warnings pass through."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.filterwarnings("always", message=GLYPH.pattern)
        yield
    missing = []
    for w in caught:
        if m := GLYPH.match(str(w.message)):
            missing.append(chr(int(m[1])))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if missing:
        _note_glyphs("".join(dict.fromkeys(missing)))


_noted: list[str] = []  # the characters of the process's one note (a run saves many figures)


def _note_glyphs(chars: str) -> None:
    if _noted:
        return
    _noted.append(chars)
    print(f"fxp: note: no installed font draws some characters of the labels ({chars[:10]}); the plots show boxes "
          f"for them: install a font that has them (e.g. Noto Sans CJK: apt-get install fonts-noto-cjk)",
          file=sys.stderr)


def save_current(dest: Path) -> None:
    "Save the figure a fastai plotting method just drew."
    save(plt.gcf(), dest)


def displayable(im):
    "An image tensor (CHW or HW, any range) as imshow takes it: HWC (HW for one channel), min-max scaled to [0, 1]."
    im = im.float().cpu()
    im = (im - im.min()) / (im.max() - im.min() + 1e-8)
    return im.permute(1, 2, 0).squeeze(-1) if im.ndim == 3 else im


def confusion_matrix(learn, dest: Path):
    """fastai's confusion matrix of the validation set, saved to `dest`, a size that keeps 37 pet breeds' labels and
    counts apart; returns the interpretation (top losses)."""
    from fastai.interpret import ClassificationInterpretation

    interp = ClassificationInterpretation.from_learner(learn)
    # fastai takes a list vocab for [inputs' vocab, labels' vocab] (a text classifier's) and keeps its last item: of
    # a plain list of class names (digits' tensors) that is one name, and the matrix would be 1x1
    if isinstance(interp.vocab, str):
        interp.vocab = list(interp.dl.vocab)
    side = max(6, 2.5 + 0.3 * len(interp.vocab))
    with glyphs_noted():  # fastai lays the figure out (tight_layout): the class names are drawn here already
        interp.plot_confusion_matrix(figsize=(side, side), dpi=80)
    save_current(dest)
    return interp


def image_grid(images, titles, dest, ncols: int = 3, cmap=None, width: int = 36) -> None:
    """Save a grid of images (tensors CHW or HW, any range: each is min-max scaled) with titles, as many columns as
    images up to `ncols`; each title line wrapped at `width` characters (a planet image's list of tags)."""
    titles = ["\n".join(textwrap.fill(line, width) or line for line in str(t).split("\n")) for t in titles]
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    lines = max((t.count("\n") + 1 for t in titles), default=1)
    fig, axs = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, (3.1 + 0.16 * lines) * nrows), squeeze=False)
    for ax in axs.flat:
        ax.axis("off")
        ax.set_anchor("S")  # an image at the bottom of its cell: the room its title needs is above it
    for ax in axs.flat[n:]:
        ax.set_visible(False)
    for ax, im, title in zip(axs.flat, images, titles):
        ax.imshow(displayable(im), cmap=cmap or "gray")
        ax.set_title(title, fontsize=8)
    save(fig, dest)
