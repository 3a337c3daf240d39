"`fxp diagnose RUN_DIR`: the run's verdict by the course's rules (fxp.diagnose), what to try, and plots/diagnosis.png."
from __future__ import annotations

import json
from pathlib import Path

from fxp.commands import Parser
from fxp.diagnose import PLOT, TIME_FINDINGS, diagnose, plot
from fxp.errors import RUN_COPY, FxpError, check_writable
from fxp.runs import METRICS, SUMMARY


def main(args: list[str]) -> int:
    p = Parser(prog="fxp diagnose", description="Say whether a run diverged, over- or under-fit, or should train "
                                                "longer (the fastai course's rules), and what to try.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (outputs/<task>/<stamp>)")
    p.add_argument("--json", action="store_true", help="print the diagnosis as JSON")
    p.add_argument("--no-plot", action="store_true", help=f"do not write RUN_DIR/{PLOT.as_posix()}")
    opts = p.parse_args(args)
    run_dir = Path(opts.run_dir)
    if not ((run_dir / METRICS).is_file() or (run_dir / SUMMARY).is_file()):
        raise FxpError(f"fxp diagnose: {run_dir} is not a run folder (no {METRICS} or {SUMMARY}); give one "
                       f"from fxp runs, e.g. outputs/<task>/<stamp>")
    diagnosis = diagnose(run_dir)
    dest = None if opts.no_plot or not diagnosis["epochs"] else run_dir / PLOT
    if dest is not None:
        check_writable(run_dir, "fxp diagnose", f"give --no-plot, or {RUN_COPY}")
        plot(run_dir, diagnosis, dest)
    if opts.json:
        print(json.dumps(diagnosis, indent=2))
    else:
        report(run_dir, diagnosis, dest)
    return 0


def report(run_dir: Path, diagnosis: dict, plot_path: Path | None) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console(highlight=False, soft_wrap=True)
    at = f" at epoch {diagnosis['epoch']}" if diagnosis["epoch"] is not None else ""
    console.print(f"[bold]{escape(str(run_dir))}[/]: [bold magenta]{escape(diagnosis['verdict'])}[/]{at} "
                  f"({_epochs(diagnosis['epochs'])}, main metric {escape(diagnosis['metric'])})")
    console.print(f"  what to try: {escape(diagnosis['advice'])}")
    if diagnosis["curves"]:
        console.print(f"  curves: {escape(diagnosis['curves'])}")
    for f in diagnosis["findings"]:
        epoch = f" (epoch {f['epoch']})" if f["epoch"] is not None else ""
        console.print(f"  - {f['verdict']}{epoch}: {escape(f['evidence'])}")
        if f["verdict"] in TIME_FINDINGS and f is not diagnosis["findings"][0]:
            console.print(f"    what to try: {escape(f['advice'])}")
    if plot_path is not None:
        console.print(f"plot: {escape(str(plot_path))}")


def _epochs(n: int) -> str:
    return f"{n} epoch" + "s" * (n != 1)
