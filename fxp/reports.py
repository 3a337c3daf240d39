"""Runs side by side and self-contained HTML pages: what `fxp compare` and `fxp report` show, read from run folders
through fxp.runs only (no torch); and the table of results a run prints as it ends (`report`). A page has no script
and fetches nothing: its images are PNGs inside it (data URIs), so it opens offline, mailed or archived, as it was
written.
"""
from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import yaml

from fxp import groups
from fxp.console import console, number
from fxp.errors import FxpError
from fxp.groups import (
    GROUP,
    MEMBER_KEYS,
    cell,
    files,
    is_group,
    joined,
    mean_baselines,
    read as read_group,
    summarize,
    together,
)
from fxp.runs import (
    NOT_METRICS,
    PLOTS,
    TOP_LOSS,
    baseline_cell,
    baselines,
    best_metrics,
    final_metrics,
    is_run,
    is_sweep,
    job_dirs,
    lower_is_better,
    not_beaten,
    read_config,
    read_explained,
    read_json,
    read_metrics,
    read_monitor,
    read_overrides,
    read_summary,
)

# --- which runs -----------------------------------------------------------------------------------------------------


def entries_of(paths: list[str], command: str, members: bool = False) -> list[list[Path]]:
    """What to compare, each as its run folders: a run alone; a group's members together (a group folder, or runs that
    differ only in their seed: fxp.groups.together); the jobs of one sweep folder so. `members`: every run alone.
    Anything else is one line."""
    folders = [Path(p).expanduser().resolve() for p in paths]
    if len(folders) == 1 and is_sweep(folders[0]):  # its jobs that have a run folder (or a group's) yet
        folders = [d for d in job_dirs(folders[0]) if is_run(d) or group_members(d)]
    for f in folders:
        if not (f.is_dir() and (is_run(f) or is_group(f))):
            raise FxpError(f"{command}: {f} is not a run folder (no summary.json, config.yaml or metrics.csv); give "
                           f"run folders, group folders or one sweep folder (fxp runs lists them)")
    # a group folder is an entry of its own: its name as its one override keeps it out of any cluster
    clusters = together(folders, lambda f: [f"{GROUP}={f}"] if is_group(f) else read_overrides(f))
    entries = [group_members(c[0]) if is_group(c[0]) else c for c in clusters]
    empty = next((c[0] for c, e in zip(clusters, entries) if not e), None)
    if empty is not None:
        raise FxpError(f"{command}: the group {empty} has no run folders yet (fxp runs {empty} lists its members)")
    return [[f] for e in entries for f in e] if members else entries


def group_members(folder: Path) -> list[Path]:
    "A group folder's members that are run folders."
    return [folder / m for m in (read_group(folder) or {}).get("members", []) if is_run(folder / m)]


def labels(entries: list[list[Path]]) -> list[str]:
    """Short names: a sweep's jobs by number and what the sweep varied (`0 trainer.lr=0.01`), runs by folder name, a
    group by its folder's name (runs that differ only in seed: their names joined, `0,1`), with the seeds it has."""
    overrides = [joined([read_overrides(f) for f in e]) for e in entries]
    seeds = [[o for o in listed if len(e) > 1 and o.partition("=")[0] in MEMBER_KEYS]  # a group's, always shown
             for e, listed in zip(entries, overrides)]
    varied = [[*v, *(o for o in s if o not in v)] for v, s in zip(varied_overrides(overrides), seeds)]
    heads = [e[0] if len(e) == 1 else e[0].parent if is_group(e[0].parent) else None for e in entries]
    unique = len({h.name for h in heads if h is not None}) == sum(h is not None for h in heads)
    names = [",".join(f.name for f in e) if h is None else h.name if unique else f"{h.parent.name}/{h.name}"
             for e, h in zip(entries, heads)]
    return [" ".join([name, *v]) for name, v in zip(names, varied)]


def varied_overrides(overrides: list[list[str]]) -> list[list[str]]:
    "Each run's overrides that not every run has (a sweep's swept values)."
    common = set.intersection(*map(set, overrides)) if overrides else set()
    return [[o for o in os_ if o not in common] for os_ in overrides]


# --- what differs ---------------------------------------------------------------------------------------------------


def metric_table(entries: list[list[Path]]) -> list[dict]:
    """A row per metric and entry: final and best values, each with its difference to the first entry's (None for the
    first, or where either is missing); a group's are its completed members' means, with their spread
    (`final_spread`, `best_spread`: {mean, std, n})."""
    data = [_values(e) for e in entries]
    names = list(dict.fromkeys(n for final, _, _ in data for n in final))
    out = []
    for name in names:
        first_final, first_best = _mean(data[0][0].get(name)), _mean(data[0][1].get(name))
        for i, (final, best, monitor) in enumerate(data):
            f, b = final.get(name), best.get(name)
            out.append(dict(metric=name, run=i, final=_mean(f), best=_mean(b),
                            d_final=None if i == 0 else _delta(_mean(f), first_final),
                            d_best=None if i == 0 else _delta(_mean(b), first_best),
                            lower=lower_is_better(name, monitor), final_spread=f if isinstance(f, dict) else None,
                            best_spread=b if isinstance(b, dict) else None))
    return out


def _values(entry: list[Path]) -> tuple[dict, dict, object]:
    "An entry's final and best metrics (read from metrics.csv): a run's values, a group's spreads, and its monitor."
    monitor = read_monitor(entry[0])
    runs = [read_metrics(f) for f in entry]
    if len(entry) == 1:
        return final_metrics(runs[0]), best_metrics(runs[0], monitor), monitor
    done = [rows for f, rows in zip(entry, runs) if read_summary(f).get("status") == "completed"] or runs
    return (summarize([final_metrics(rows) for rows in done]),
            summarize([best_metrics(rows, monitor) for rows in done]), monitor)


def _mean(value):
    return value["mean"] if isinstance(value, dict) else value


def entry_baselines(entry: list[Path]) -> dict:
    "{metric: (value, who)}: a run's baselines (fxp.runs.baselines), a group's members' mean."
    return mean_baselines([read_summary(f) for f in entry])


def _delta(value, ref):
    ok = all(isinstance(v, float) and math.isfinite(v) for v in (value, ref))
    return value - ref if ok else None


def flat(cfg, prefix: str = "") -> dict:
    "A nested config as {dotted.key: value}."
    out = {}
    for k, v in (cfg or {}).items():
        if isinstance(v, dict) and v:
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


ABSENT = object()  # a key one run's config does not have (a logger another run chose)


def config_diff(entries: list[list[Path]]) -> dict[str, list]:
    """Only the config keys whose values differ between the entries: {key: [value in each]} (ABSENT where missing); a
    group's config is its first member's, with the list of its members' values of what they differ in (its seeds)."""
    configs = [entry_config(e) for e in entries]
    keys = list(dict.fromkeys(k for c in configs for k in c))
    values = {k: [c.get(k, ABSENT) for c in configs] for k in keys}
    return {k: v for k, v in values.items() if any(x != v[0] for x in v)}


def entry_config(entry: list[Path]) -> dict:
    configs = [flat(read_config(f)) for f in entry]
    varied = {k for c in configs for k in c if any(c2.get(k, ABSENT) != c.get(k) for c2 in configs)}
    return {**configs[0], **{k: [c.get(k) for c in configs] for k in varied}}


def shown(value) -> str:
    "A config value as YAML writes it inline (`[1, 2]`, `null`, `0.01`); `-` for a key the run does not have."
    if value is ABSENT:
        return "-"
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def swept(jobs: list[dict]) -> dict[str, list[str]]:
    "The override keys a sweep varied: {key: [value in each job]}."
    values = [dict(o.partition("=")[::2] for o in j["overrides"]) for j in jobs]
    keys = list(dict.fromkeys(k for v in values for k in v))
    return {k: [v.get(k) for v in values] for k in keys if len({v.get(k) for v in values}) > 1}


# --- figures --------------------------------------------------------------------------------------------------------


def curves(entries: list[list[Path]], names: list[str]):
    """One panel per metrics.csv column (losses and metrics), each run a line over the epochs, a group its members'
    mean with their range as a band (fxp.plots.mean_band); None without rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fxp.plots import mean_band

    runs = [[read_metrics(f) for f in e] for e in entries]
    metrics = list(dict.fromkeys(k for e in runs for rows in e if rows for k in rows[0] if k not in NOT_METRICS))
    if not metrics:
        return None
    ncols = min(len(metrics), 3)
    nrows = -(-len(metrics) // ncols)
    fig, axs = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3.5 * nrows), squeeze=False)
    for ax, metric in zip(axs.flat, metrics):
        for members, name in zip(runs, names):
            mean_band(ax, members, metric, name)
        ax.set_title(metric, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
    for ax in list(axs.flat)[len(metrics):]:
        ax.set_visible(False)
    axs.flat[0].legend(fontsize=8)
    return fig


def against(jobs: list[dict], key: str, values: list[str]):
    "A swept hyperparameter against the sweep's monitored metric (each job's best): a log axis where it spans decades."
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(v, j["best"]) for v, j in zip(values, jobs) if j["best"] is not None]
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    xs = [_float(v) for v, _ in points]
    if points and all(x is not None for x in xs):
        order = sorted(range(len(points)), key=lambda i: xs[i])
        ax.plot([xs[i] for i in order], [points[i][1] for i in order], marker="o")
        if min(xs) > 0 and max(xs) >= 10 * min(xs):
            ax.set_xscale("log")
    else:  # categories (an optimizer, a model name): in job order
        ax.plot([str(v) for v, _ in points], [y for _, y in points], marker="o", linestyle="")
    ax.set_xlabel(key)
    ax.set_ylabel(f"best {jobs[0]['metric']}" if jobs else "")
    return fig


def study_figures(folder: Path) -> list[str]:
    """An Optuna search's own section (fxp.trials; its study found through a job's summary.json, or the folder's
    study.db if the sweep was moved): the optimization history, the parameter importances, and each trial's value per
    epoch with the pruned trials marked, drawn by optuna's matplotlib functions. [] for another sweep."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import optuna

    from fxp import trials

    ref = next((s["trial"] for s in map(read_summary, job_dirs(folder)) if isinstance(s.get("trial"), dict)), None)
    if ref is None:
        return []
    own = folder / trials.STUDY_DB
    url = f"sqlite:///{own}" if own.is_file() else ref["storage"]
    try:
        study = optuna.load_study(study_name=ref["study"], storage=trials.storage(url))
    except Exception as e:
        return ["<h2>Optuna study</h2>", f"<p>{esc(ref['study'])} in {esc(url)} cannot be opened: "
                                         f"{esc(str(e).splitlines()[0] if str(e) else type(e).__name__)}</p>"]
    body = ["<h2>Optuna study</h2>", f"<p>{esc(ref['study'])}: optuna.load_study(study_name={esc(repr(ref['study']))}, "
                                     f"storage={esc(repr(url))}); pruner {esc(ref['pruner'])}</p>"]
    plots = {"optimization history": optuna.visualization.matplotlib.plot_optimization_history,
             "parameter importances": optuna.visualization.matplotlib.plot_param_importances,
             "value of each trial per epoch": intermediate_values}
    for title, plot in plots.items():
        with warnings.catch_warnings(), matplotlib.rc_context():  # optuna's are experimental; they set a style
            warnings.simplefilter("ignore")
            try:
                fig = plot(study).figure
            except Exception as e:  # too few trials (importances need two completed), a space of one value
                body.append(f"<p>no {title}: {esc(str(e).splitlines()[0] if str(e) else type(e).__name__)}</p>")
                continue
            body += [f"<h3>{title.capitalize()}</h3>", image(figure_uri(fig), title)]
    return body


def intermediate_values(study):
    "optuna's plot of each trial's intermediate values, the pruned trials' lines dashed, ending in a red cross."
    import optuna

    ax = optuna.visualization.matplotlib.plot_intermediate_values(study)
    pruned = {f"Trial{t.number}": t for t in study.get_trials(states=(optuna.trial.TrialState.PRUNED,))}
    for line in ax.get_lines():
        if line.get_label() in pruned:
            line.set_linestyle("--")
            line.set_label(f"{line.get_label()} (pruned)")
            ax.plot(line.get_xdata()[-1:], line.get_ydata()[-1:], "x", color="red", markersize=9)
    ax.set_xlabel("epoch")
    ax.legend(bbox_to_anchor=(1.05, 1), loc="upper left", borderaxespad=0.0, fontsize=8)
    return ax


def _float(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def figure_uri(fig) -> str:
    "A matplotlib figure as a PNG data URI (the figure closed)."
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def file_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def run_plots(folder: Path) -> list[Path]:
    "The PNGs a run drew (its steps' too: lm/plots), the loss curves first."
    found = sorted(folder.glob(f"{PLOTS}/*.png")) + sorted(folder.glob(f"*/{PLOTS}/*.png"))
    return sorted(found, key=lambda p: (p.parent.parent != folder, p.stem != "loss_curves"))


def top_loss_heatmaps(folder: Path) -> list[str]:
    "The heatmaps of the top losses that fxp explain drew last for the run (its newest explain/<stamp>/), side by side."
    where, rows = read_explained(folder)
    files = [where / r["heatmap"] for r in rows if r.get("why") == TOP_LOSS and r.get("heatmap")]
    files = [f for f in files if f.is_file()]
    if not files:
        return []
    shown = "".join(f'<img src="{file_uri(f)}" alt="{esc(f.name)}" style="display:inline-block;width:260px;margin:0">'
                    for f in files)
    return ["<h2>Where the model looks at its top losses</h2>",
            f"<p>{len(files)} heatmaps drawn by fxp explain, in {esc(where.relative_to(folder))}</p>",
            f'<div style="display:flex;flex-wrap:wrap;gap:.5em">{shown}</div>']


# --- HTML -----------------------------------------------------------------------------------------------------------

STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
td:first-child,th:first-child,td.text{text-align:left}th{background:#f3f3f3}.better{color:#070}.worse{color:#b00}
img{max-width:100%;display:block;margin:.5em 0 1.5em}pre{background:#f6f6f6;padding:1em;overflow:auto}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.5em;border-bottom:1px solid #ddd}"""


def esc(value) -> str:
    return html.escape(str(value))


def page(title: str, body: list[str]) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{STYLE}</style></head>\n<body><h1>{esc(title)}</h1>\n" + "\n".join(body) + "\n</body></html>\n")


def table(head: list[str], rows: list[list], text_cols: tuple = ()) -> str:
    "An HTML table; cells are escaped, except those given as ('html', markup)."
    def cell(i, v):
        inner = v[1] if isinstance(v, tuple) and v[0] == "html" else esc(v)
        return f'<td class="text">{inner}</td>' if i in text_cols else f"<td>{inner}</td>"
    return ("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(cell(i, v) for i, v in enumerate(r)) + "</tr>" for r in rows) + "</table>")


def image(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{esc(alt)}">'


def delta_html(d, lower: bool) -> tuple:
    "A difference to the first run, green where better, red where worse."
    if d is None:
        return ("html", "")
    better = d < 0 if lower else d > 0
    cls = "" if d == 0 else "better" if better else "worse"
    return ("html", f'<span class="{cls}">{"+" if d >= 0 else ""}{esc(number(d))}</span>')


def comparison(entries: list[list[Path]]) -> list[str]:
    """The sections of a comparison (runs, or groups of runs: `entries_of`): curves, the metrics table with deltas to
    the first, the config keys that differ."""
    names = labels(entries)
    what = "runs" if all(len(e) == 1 for e in entries) else "runs or groups (a group: its mean ± std (n))"
    body = [f"<p>{len(entries)} {what}; differences are to the first, {esc(names[0])}.</p>"]
    fig = curves(entries, names)
    if fig is not None:
        body += ["<h2>Curves</h2>", image(figure_uri(fig), "curves of every run, one panel per metric")]
    rows = [[r["metric"], names[r["run"]], value_cell(r, "final"), delta_html(r["d_final"], r["lower"]),
             value_cell(r, "best"), delta_html(r["d_best"], r["lower"])] for r in metric_table(entries)]
    body += ["<h2>Metrics</h2>", table(["metric", "run", "final", "Δ final", "best", "Δ best"], rows, (1,))]
    diff = config_diff(entries)
    body += ["<h2>Config keys that differ</h2>",
             table(["key", *names], [[k, *map(shown, v)] for k, v in diff.items()], tuple(range(1, len(names) + 1)))
             if diff else "<p>none: the runs have the same config.</p>"]
    return body


def value_cell(row: dict, which: str) -> str:
    "A metric_table row's final or best: a run's number, a group's `mean ± std (n=N)`."
    entry = row[f"{which}_spread"]
    return cell(entry) or "-" if entry is not None else number(row[which])


def per_class(folder: Path) -> list[str]:
    """The kind's per-class numbers (precision and recall, IoU and Dice): the run's validation split at the end of
    training (summary.json), and the newest `fxp val` of the run (eval/<stamp>/metrics.json) where it has some."""
    import json

    found = [("validation split, end of training", read_summary(folder).get("per_class"))]
    for dest in sorted((folder / "eval").glob("*/metrics.json"), reverse=True)[:1]:
        try:
            result = json.loads(dest.read_text())
        except (OSError, ValueError):
            continue
        what = f"fxp val {dest.parent.name}: {result.get('split')} split of {result.get('data') or 'the task data'}"
        found.append((what, result.get("evaluation", {}).get("per_class")))
    body = []
    for what, rows in found:
        if isinstance(rows, dict) and rows:
            columns = list(next(iter(rows.values())))
            cells = [[name, *(v.get(c) if c == "support" else number(v.get(c)) for c in columns)]
                     for name, v in rows.items()]
            body += [f"<h2>Per class ({esc(what)})</h2>", table(["class", *columns], cells)]
    return body


def write(dest: Path, text: str, command: str) -> Path:
    "The page written whole (temp + rename); a folder that is not there or not writable is one line."
    from fxp.errors import writing
    from fxp.writer import write_atomic

    with writing(dest, command):
        write_atomic(dest, text)
    return dest


# --- the results table a run prints as it ends (fxp train, fxp lr-find, fxp show) -----------------------------------


def report(run) -> None:
    """The final metrics as a small table, each beside its baseline where fxp computes one (a step's metrics too,
    e.g. the language model's perplexity), which epoch model.pkl holds, and where the run folder is. An lr-find run:
    its suggested learning rates."""
    from rich.cells import cell_len
    from rich.table import Table

    summary = read_summary(run.path)
    if groups.is_group(run.path):  # a cross-validation's folder (fxp.cv)
        return group_report(groups.read_group(run.path, run.path), run.path)
    if "shown" in summary:  # fxp show: the summary is printed already; where the batch is
        console().print(f"{summary['task']}: {summary['items_train']} training and {summary['items_valid']} valid "
                        f"items; a training batch: {run.path / summary['shown']}", highlight=False, soft_wrap=True)
        if isinstance(summary.get("model_size"), dict):
            console().print(size_line(summary["model_size"]), highlight=False, soft_wrap=True)
        return
    what = "lr-find " if "suggested_lrs" in summary else ""
    title = f"{summary['task']}: {what}{summary['status']} in {summary['wall_time_s']:.1f}s"
    table = Table(title=title, min_width=cell_len(title))  # rich wraps a title to its table's width: one line
    if what:
        table.add_column("suggestion")
        table.add_column("lr", justify="right")
        for name, lr in summary["suggested_lrs"].items():
            table.add_row(name, number(lr))
        notes = ["plot: plots/lr_find.png; train at one: fxp train trainer.lr=LR (trainer.lr=find: the valley)"]
    else:
        rows = metric_rows(summary)
        for col in ("metric", "final", "best", *(["baseline"] if any(r[3] for r in rows) else [])):
            table.add_column(col, justify="left" if col == "metric" else "right")
        for name, final, best, baseline in rows:
            table.add_row(name, number(final), number(best), *([baseline] if len(table.columns) == 4 else []))
        tta = ", ".join(f"{k[4:]} {number(v)}" for k, v in summary.items() if k.startswith("tta_"))
        notes = [*not_beaten(summary.get("final_metrics", {}), baselines(summary)),
                 model_line(summary, read_config(run.path)),
                 f"lr_found: {summary['lr_found']}" if "lr_found" in summary else "",
                 f"model.pkl with test-time augmentation: {tta}" if tta else ""]
    out = console()
    out.print(table)
    for line in [*filter(None, notes), f"run folder: {run.path}"]:
        out.print(line, highlight=False, soft_wrap=True)


GROUP_TITLES = {"cv": "{n}-fold cross-validation", "seeds": "{n} seeds"}  # fxp.groups.KINDS


def group_report(group: dict, folder: Path) -> None:
    """A group's numbers as it ends (fxp.groups: a row of `read_group`): each metric's final and best as mean ± std
    over its completed members, beside the baseline; each member's final value of the monitored metric; the folder."""
    from rich.cells import cell_len
    from rich.table import Table

    what = GROUP_TITLES[group["group"]].format(n=len(group["members"]))
    title = f"{group['task']}: {what}, {group['status']} in {group['wall_time_s']:.1f}s"
    table = Table(title=title, min_width=cell_len(title))
    final, best = group["spread"]["final"], group["spread"]["best"]
    base = baselines(read_json(folder / files(group["group"])[1]))
    for col in ("metric", "final", "best", *(["baseline"] if base else [])):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for name, entry in final.items():
        table.add_row(name, cell(entry), cell(best.get(name, {})), *([baseline_cell(base, name)] if base else []))
    out = console()
    out.print(table)
    means = {k: v["mean"] for k, v in final.items()}
    for line in [member_line(group), *not_beaten(means, base), f"group folder: {folder}"]:
        out.print(line, highlight=False, soft_wrap=True)


def member_line(group: dict) -> str:
    "`accuracy (final) of each seed: 42 0.9722, 43 0.9667, 44 diverged`."
    def value(m: dict) -> str:
        return number(m["final"]) if m["status"] == "completed" else m["status"]
    what = "seed" if group["group"] == "seeds" else "fold"
    shown = [f"{m['seed'] if what == 'seed' else m['run'].rsplit('/', 1)[-1]} {value(m)}" for m in group["members"]]
    return f"{group['metric']} (final) of each {what}: {', '.join(shown)}"


def metric_rows(summary: dict) -> list[tuple]:
    "(name, final, best, baseline text) for the run's metrics, then each step's (`lm perplexity`), losses aside."
    rows = []
    for step, part in [(None, summary), *((k, v) for k, v in summary.items()
                                          if isinstance(v, dict) and "final_metrics" in v)]:
        base = baselines(part)
        for name, final in part["final_metrics"].items():
            if step is not None and "loss" in name:
                continue
            value, who = base.get(name, (None, None))
            rows.append((f"{step} {name}" if step else name, final, part.get("best_metrics", {}).get(name),
                         f"{number(value)} ({who})" if value is not None else ""))
    return rows


def size_line(size: dict) -> str:
    "summary.json's model_size as a line: `model: 21.3M parameters (513k trainable), 3.68G multiply-accumulates ...`."
    if "error" in size:
        return f"model: not built ({size['error']})"
    line = f"model: {_si(size['params'])} parameters ({_si(size['trainable'])} trainable)"
    if size.get("macs") is not None:
        line += f", {_si(size['macs'])} multiply-accumulates for one {'x'.join(map(str, size['input']))} input"
    return line


def _si(n: int) -> str:
    "A count in 3 significant digits with its SI prefix: 21.3M, 513k, 3.68G."
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= factor:
            return f"{n / factor:.3g}{prefix}"
    return str(n)


def model_line(summary: dict, cfg: dict) -> str:
    "Which epoch model.pkl holds: the best by the monitored metric (trainer.save_best), else the last."
    epoch, epochs = summary.get("model_epoch"), summary.get("epochs")
    if not epoch:
        return ""
    trainer, monitor = cfg.get("trainer") or {}, (cfg.get("task") or {}).get("monitor") or {}
    if trainer.get("save_best") and monitor.get("metric"):
        return f"model.pkl: epoch {epoch} of {epochs}, the best {monitor['metric']}"
    return f"model.pkl: epoch {epoch} of {epochs}, the last"
