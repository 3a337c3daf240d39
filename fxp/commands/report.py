"""`fxp report RUN | GROUP_DIR | SWEEP_DIR`: a self-contained report.html in the folder. A run's: its metrics (with
baselines), curves, diagnosis, the kind's plots, config and overrides. A group's (a seed group, fxp.groups): each
metric's mean ± std, each member's result, each metric's curve as a mean with a band and the members' finals as points.
A sweep's: the jobs sorted by the monitored metric (its recipes over seeds by their mean), each swept hyperparameter
against it, the jobs' curves overlaid and the config keys that differ."""
from __future__ import annotations

from pathlib import Path

from fxp import groups, reports
from fxp.commands import Parser
from fxp.console import number
from fxp.errors import FxpError
from fxp.reports import esc, image, metric_rows, model_line, table
from fxp.runs import (
    CONFIG,
    baseline_cell,
    baselines,
    is_run,
    is_sweep,
    read_config,
    read_json,
    read_metrics,
    read_overrides,
    read_run,
    read_summary,
)

REPORT = "report.html"


def main(args: list[str]) -> int:
    p = Parser(prog="fxp report", description=f"Write a self-contained {REPORT} into a run or sweep folder "
                                              f"(images inside it: it opens offline).")
    p.add_argument("folder", metavar="RUN|GROUP_DIR|SWEEP_DIR", help="a run folder, a group folder (a seed group) or "
                                                                     "a sweep folder (fxp runs lists them)")
    folder = Path(p.parse_args(args).folder).expanduser().resolve()
    if folder.is_dir() and is_sweep(folder):
        title, body = sweep_report(folder)
    elif folder.is_dir() and groups.is_group(folder):
        title, body = group_report(folder)
    elif folder.is_dir() and is_run(folder):
        title, body = run_report(folder)
    else:
        raise FxpError(f"fxp report: {folder} is not a run or sweep folder (no summary.json, config.yaml, "
                       f"metrics.csv or sweep.csv); give one from fxp runs")
    dest = reports.write(folder / REPORT, reports.page(title, body), "fxp report")
    print(f"report: {dest} ({dest.stat().st_size // 1024} kB)")
    return 0


def run_report(folder: Path) -> tuple[str, list[str]]:
    from fxp.diagnose import diagnose

    summary, row = read_summary(folder), read_run(folder, folder.parent)
    facts = [f"status {row['status']}", f"{row['epochs']} epochs", f"{(row['wall_time_s'] or 0):.1f} s",
             *(f"{k} {summary[k]}" for k in ("device", "items_train", "items_valid") if k in summary)]
    body = [f"<p>{esc(folder)}<br>{esc(', '.join(facts))}</p>"]
    if summary.get("final_metrics"):
        rows = [[name, number(final), number(best), baseline] for name, final, best, baseline in metric_rows(summary)]
        body += ["<h2>Metrics</h2>", table(["metric", "final", "best", "baseline"], rows),
                 f"<p>{esc(model_line(summary, read_config(folder)))}</p>"]
    body += reports.per_class(folder)
    d = diagnose(folder)
    body += ["<h2>Diagnosis</h2>", f"<p><b>{esc(d['verdict'])}</b>: {esc(d['advice'])}</p>",
             "<ul>" + "".join(f"<li>{esc(f['verdict'])}: {esc(f['evidence'])}</li>" for f in d["findings"]) + "</ul>"]
    plots = reports.run_plots(folder)
    if not any(p.stem == "loss_curves" for p in plots):
        fig = reports.curves([[folder]], [folder.name])
        body += ["<h2>Curves</h2>", image(reports.figure_uri(fig), "curves")] if fig is not None else []
    if plots:
        body.append("<h2>Plots</h2>")
        for p in plots:
            name = p.relative_to(folder).as_posix()
            body += [f"<h3>{esc(name)}</h3>", image(reports.file_uri(p), name)]
    body += reports.top_loss_heatmaps(folder)
    overrides = read_overrides(folder)
    body += ["<h2>Overrides</h2>", f"<pre>{esc(' '.join(overrides) or '(none: the defaults)')}</pre>",
             f"<h2>Config ({CONFIG})</h2>", f"<pre>{esc(_text(folder / CONFIG))}</pre>"]
    return f"fxp report: {summary.get('task') or row['task']} run {folder.name}", body


def group_report(folder: Path) -> tuple[str, list[str]]:
    """A group's page (fxp.groups): each metric's mean ± std over its completed members, each member's result, each
    metric's curve as the members' mean with their range as a band and each one's final value as a point, its overrides
    and its first member's config."""
    from fxp.plots import group_curves

    group = groups.read_group(folder, folder)
    runs = [folder / m["run"] for m in group["members"] if is_run(folder / m["run"])]
    if not runs:
        raise FxpError(f"fxp report: the group {folder} has no run folders yet")
    noun, metric, spread = groups.NOUNS[group["group"]], group["metric"], group["spread"]
    facts = [f"{len(group['members'])} {noun}", group["status"], f"{group['wall_time_s']:.1f} s"]
    base = baselines(read_json(folder / groups.files(group["group"])[1]))
    rows = [[name, groups.cell(entry), groups.cell(spread["best"].get(name, {})), baseline_cell(base, name)]
            for name, entry in spread["final"].items()]
    members = [[m["run"], m["seed"], m["status"], number(m["final"]), number(m["best"]), m["epochs"],
                f"{(m['wall_time_s'] or 0):.1f}"] for m in group["members"]]
    body = [f"<p>{esc(folder)}<br>{esc(', '.join(facts))}</p>",
            f"<h2>Metrics: mean ± std over the {group['n']} completed {noun}</h2>",
            table(["metric", "final", "best", "baseline"], rows),
            f"<h2>Each of the {noun}</h2>",
            table(["run", "seed", "status", f"final {metric}", f"best {metric}", "epochs", "seconds"], members, (0, 2)),
            f"<h2>Curves: the mean of the {noun}, their range as a band, x each one's final value</h2>"]
    fig = group_curves([read_metrics(f) for f in runs], [f.name for f in runs])
    body += [image(reports.figure_uri(fig), f"each metric, the mean of the {noun}")] if fig is not None else []
    body += ["<h2>Overrides</h2>", f"<pre>{esc(' '.join(map(str, groups.read(folder).get('overrides') or [])))}</pre>",
             f"<h2>Config ({runs[0].name}/{CONFIG})</h2>", f"<pre>{esc(_text(runs[0] / CONFIG))}</pre>"]
    return f"fxp report: {group['group']} group {folder.name} ({group['task']})", body


def sweep_report(folder: Path) -> tuple[str, list[str]]:
    jobs = groups.jobs(folder, planned=False)
    if not jobs:
        raise FxpError(f"fxp report: the sweep {folder} has no job folders yet")
    metric, mode = jobs[0]["metric"], jobs[0]["mode"]
    scored = sorted((j for j in jobs if j["best"] is not None), key=lambda j: j["best"], reverse=mode == "max")
    ordered = scored + [j for j in jobs if j["best"] is None]
    sweep = reports.swept(jobs)
    rows = [[j["run"], j["status"], " ".join(j["overrides"]), number(j["best"]), number(j["final"]), j["epochs"],
             f"{(j['wall_time_s'] or 0):.1f}"] for j in ordered]
    body = [f"<p>{esc(folder)}<br>{len(jobs)} jobs, sorted by their best {esc(metric)} ({mode})</p>",
            *recipes(jobs, metric, mode),
            "<h2>Jobs</h2>", table(["job", "status", "overrides", f"best {metric}", f"final {metric}", "epochs",
                                    "seconds"], rows, (1, 2))]
    if sweep:
        body.append(f"<h2>Swept hyperparameters against {esc(metric)}</h2>")
        for key, values in sweep.items():
            body.append(image(reports.figure_uri(reports.against(jobs, key, values)), f"{key} against {metric}"))
    body += reports.study_figures(folder)
    entries = reports.entries_of([str(folder)], "fxp report")
    body += reports.comparison(entries) if sum(map(len, entries)) > 1 else []
    return f"fxp report: sweep {folder.name}", body


def recipes(jobs: list[dict], metric: str, mode: str) -> list[str]:
    """A sweep whose jobs are seeds of a few recipes (a sweep over trainer.seed, or with trainer.seeds): each recipe's
    mean ± std, best first (the sweep's best is chosen so: fxp.groups.best); [] for a sweep without seeds."""
    found = [g for g in groups.grouped(jobs) if g["kind"] == "group"]
    if not found:
        return []
    found.sort(key=lambda g: (g["best"] is None, -(g["best"] or 0) if mode == "max" else g["best"] or 0))
    rows = [[g["run"], g["status"], " ".join(g["overrides"]), groups.cell(g["spread"]["best"].get(metric, {})),
             groups.cell(g["spread"]["final"].get(metric, {}))] for g in found]
    return ["<h2>Recipes over seeds: their mean ± std</h2>",
            table(["jobs", "status", "overrides", f"best {metric}", f"final {metric}"], rows, (1, 2))]


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return "(unreadable)"
