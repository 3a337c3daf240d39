"""`fxp report RUN | SWEEP_DIR | GROUP_DIR`: a self-contained report.html in the folder. A run's: its metrics (with
baselines), curves, diagnosis, the kind's plots, config and overrides. A sweep's: the jobs sorted by the monitored
metric, each swept hyperparameter against it, the jobs' curves overlaid and the config keys that differ. A group's (a
cross-validation): each metric's mean ± std beside its members' values, the curves as a mean with a band."""
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
    is_run,
    is_sweep,
    read_config,
    read_jobs,
    read_metrics,
    read_overrides,
    read_run,
    read_summary,
)

REPORT = "report.html"


def main(args: list[str]) -> int:
    p = Parser(prog="fxp report", description=f"Write a self-contained {REPORT} into a run or sweep folder "
                                              f"(images inside it: it opens offline).")
    p.add_argument("folder", metavar="RUN|SWEEP_DIR", help="a run folder or a sweep folder (fxp runs lists them)")
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
        fig = reports.curves([folder], [folder.name])
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
    """A group's page (a cross-validation's folds, fxp.cv): each final metric's mean ± std (n) beside every member's
    value and the baseline, each metric's curve as the members' mean with its band and their final values as points,
    the members one a row; then the group's overrides and config."""
    from fxp import plots

    group, summary, row = groups.read(folder), read_summary(folder), read_run(folder, folder.parent)
    members = [m for m in group["members"] if is_run(folder / m)]
    runs = {m: read_run(folder / m, folder) for m in members}
    finals = [runs[m]["final_metrics"] for m in members]
    base = reports.group_baselines([read_summary(folder / m) for m in members])
    cells = [[name, groups.cell(entry, 4), *(number(f.get(name)) for f in finals), baseline_cell(base, name)]
             for name, entry in groups.summarize([f for f in finals if f]).items()]
    body = [f"<p>{esc(folder)}<br>{esc(group['kind'])} of {len(group['members'])}: status {esc(row['status'])}, "
            f"{(row['wall_time_s'] or 0):.1f} s</p>",
            "<h2>Metrics (final)</h2>", table(["metric", "mean ± std (n)", *members, "baseline"], cells)]
    fig = plots.group_curves([read_metrics(folder / m) for m in members], members)
    body += ["<h2>Curves</h2>", image(reports.figure_uri(fig), "curves")] if fig is not None else []
    monitor = row["metric"]
    body += ["<h2>Members</h2>", table(["run", "status", "valid items", f"final {monitor}", f"best {monitor}",
                                         "epochs"],
                                        [[m, runs[m]["status"], read_summary(folder / m).get("items_valid", ""),
                                          number(runs[m]["final"]), number(runs[m]["best"]), runs[m]["epochs"]]
                                         for m in members], (1,))]
    body += ["<h2>Overrides</h2>", f"<pre>{esc(' '.join(read_overrides(folder)) or '(none: the defaults)')}</pre>",
             f"<h2>Config ({CONFIG})</h2>", f"<pre>{esc(_text(folder / CONFIG))}</pre>"]
    return f"fxp report: {summary.get('task') or row['task']} {group['kind']} {folder.name}", body


def sweep_report(folder: Path) -> tuple[str, list[str]]:
    jobs = read_jobs(folder)
    if not jobs:
        raise FxpError(f"fxp report: the sweep {folder} has no job folders yet")
    metric, mode = jobs[0]["metric"], jobs[0]["mode"]
    scored = sorted((j for j in jobs if j["best"] is not None), key=lambda j: j["best"], reverse=mode == "max")
    ordered = scored + [j for j in jobs if j["best"] is None]
    sweep = reports.swept(jobs)
    rows = [[j["run"], j["status"], " ".join(j["overrides"]), number(j["best"]), number(j["final"]), j["epochs"],
             f"{(j['wall_time_s'] or 0):.1f}"] for j in ordered]
    body = [f"<p>{esc(folder)}<br>{len(jobs)} jobs, sorted by their best {esc(metric)} ({mode})</p>",
            "<h2>Jobs</h2>", table(["job", "status", "overrides", f"best {metric}", f"final {metric}", "epochs",
                                    "seconds"], rows, (1, 2))]
    if sweep:
        body.append(f"<h2>Swept hyperparameters against {esc(metric)}</h2>")
        for key, values in sweep.items():
            body.append(image(reports.figure_uri(reports.against(jobs, key, values)), f"{key} against {metric}"))
    body += reports.study_figures(folder)
    runs = [folder / j["run"] for j in jobs]
    body += reports.comparison(runs) if len(runs) > 1 else []
    return f"fxp report: sweep {folder.name}", body


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return "(unreadable)"
