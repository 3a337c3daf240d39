"""`fxp compare` and `fxp report` on the shared 2-job digits sweep (trainer.seed=1,2): the numbers they print are
metrics.csv's, only the keys that differ are listed, and the pages load in headless Chromium without console errors,
fetch nothing, and every image renders."""
from __future__ import annotations

import json
import re
import shutil

import pytest

from browser import page
from conftest import assert_one_line_error, metrics_rows, run_fxp
from fxp.console import number
from fxp.diagnose import diagnose


@pytest.fixture(scope="module")
def sweep(digits_sweep, tmp_path_factory):
    "A copy of the shared sweep's folder (reports are written into it), and its job folders."
    folder = tmp_path_factory.mktemp("reports") / digits_sweep[0].parent.name
    shutil.copytree(digits_sweep[0].parent, folder)
    return folder, [folder / j.name for j in digits_sweep]


@pytest.fixture(scope="module")
def tab():
    "One headless Chromium page for the module; `load(file)` opens a page and returns what the checks need."
    with page() as t:
        requests = []
        t.on("request", lambda r: requests.append(r.url))

        def load(file):
            t.console_errors.clear()
            requests.clear()
            t.goto(file.as_uri())
            t.wait_for_load_state("load")
            widths = t.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
            return dict(errors=list(t.console_errors), widths=widths, text=t.inner_text("body"),
                        fetched=[u for u in requests if not u.startswith(("file:", "data:"))],
                        alts=t.eval_on_selector_all("img", "imgs => imgs.map(i => i.alt)"))
        yield load


def renders(shown: dict, at_least: int) -> None:
    assert shown["errors"] == [] and shown["fetched"] == []
    assert len(shown["widths"]) >= at_least and all(w > 0 for w in shown["widths"]), shown["widths"]


@pytest.mark.slow  # trains (a sweep or a run)
def test_compare_prints_deltas_to_the_first_run_and_only_the_keys_that_differ(sweep, tmp_path, tab):
    folder, jobs = sweep
    html = tmp_path / "cmp.html"
    r = run_fxp("compare", folder, "--members", "--html", html, cwd=tmp_path)  # seeds of one recipe: each its own
    assert r.returncode == 0, r
    first, second = (metrics_rows(j)[-1] for j in jobs)
    delta = float(second["accuracy"]) - float(first["accuracy"])
    rows = rf"accuracy\s.*0 trainer\.seed=1.*\n.*1 trainer\.seed=2\s.*{re.escape(number(delta))}"
    assert re.search(rows, r.stdout), r
    assert "trainer.seed" in r.stdout and "trainer.epochs" not in r.stdout.split("config keys that differ")[1]
    shown = tab(html)
    renders(shown, 1)
    assert "trainer.seed" in shown["text"] and number(delta) in shown["text"]


@pytest.mark.slow  # trains (a sweep or a run)
def test_compare_takes_run_folders_and_refuses_what_is_not_one(sweep, tmp_path):
    _, jobs = sweep
    r = run_fxp("compare", *jobs, cwd=tmp_path)  # they differ only in their seed: one line, their mean (issue 29)
    assert r.returncode == 0 and "0,1 trainer.seed=1,2" in r.stdout and "(n=2)" in r.stdout, r
    assert_one_line_error(run_fxp("compare", jobs[0], cwd=tmp_path), "give two run folders or more")
    assert_one_line_error(run_fxp("compare", jobs[0], tmp_path, cwd=tmp_path), "is not a run folder")
    assert_one_line_error(run_fxp("compare", *jobs, "--html", tmp_path / "no" / "x.html", cwd=tmp_path),
                          "cannot write")


@pytest.mark.slow  # trains (a sweep or a run)
def test_run_report_has_metrics_diagnosis_plots_and_config(sweep, tab):
    job = sweep[1][0]
    r = run_fxp("report", job, cwd=job)
    assert r.returncode == 0, r
    shown = tab(job / "report.html")
    renders(shown, 3)
    assert {"plots/loss_curves.png", "plots/confusion_matrix.png"} <= set(shown["alts"])
    assert diagnose(job)["verdict"] in shown["text"] and "trainer.seed=1" in shown["text"]
    assert number(float(metrics_rows(job)[-1]["accuracy"])) in shown["text"]
    assert "kind: classification" in shown["text"]  # config.yaml
    assert not list(job.glob("*.tmp"))


@pytest.mark.slow  # trains (a sweep or a run)
def test_sweep_report_sorts_jobs_by_the_monitor_and_plots_each_swept_key(sweep, tab):
    folder, jobs = sweep
    r = run_fxp("report", folder, cwd=folder)
    assert r.returncode == 0, r
    shown = tab(folder / "report.html")
    renders(shown, 2)
    assert "trainer.seed against accuracy" in shown["alts"]
    best = {j.name: max(float(row["accuracy"]) for row in metrics_rows(j)) for j in jobs}
    order = sorted(best, key=best.get, reverse=True)
    jobs = shown["text"].split("Jobs", 1)[1]
    assert jobs.index(f"trainer.seed={int(order[0]) + 1}") < jobs.index(f"trainer.seed={int(order[1]) + 1}")


def test_report_refuses_a_folder_that_is_no_run(tmp_path):
    assert_one_line_error(run_fxp("report", tmp_path, cwd=tmp_path), "is not a run or sweep folder")


@pytest.mark.slow  # trains (a sweep or a run)
def test_compare_and_report_read_run_folders_without_torch(sweep):
    from test_imports import loaded_after

    folder, jobs = sweep
    for argv in (["compare", str(jobs[0]), str(jobs[1])], ["report", str(folder)]):
        code, modules = loaded_after(argv)
        assert code == 0 and "torch" not in modules and "fastai" not in modules, argv


def test_run_report_shows_the_per_class_numbers_of_training_and_of_fxp_val(digits_run, tmp_path):
    "Precision and recall of each digit: at the end of training (summary.json) and from the newest fxp val."
    run = tmp_path / digits_run.name
    shutil.copytree(digits_run, run)
    assert run_fxp("val", run, cwd=tmp_path).returncode == 0
    assert run_fxp("report", run, cwd=tmp_path).returncode == 0
    page = (run / "report.html").read_text()
    trained = page.split("Per class (validation split, end of training)")[1].split("</table>")[0]
    evaluated = page.split("Per class (fxp val ")[1].split("</table>")[0]
    for section in (trained, evaluated):
        assert "<th>precision</th><th>recall</th><th>support</th>" in section
        assert section.count("<tr>") == 11  # the header and the ten digits
    result = json.loads(next((run / "eval").glob("*/metrics.json")).read_text())
    assert f"<td>{number(result['evaluation']['per_class']['7']['recall'])}</td>" in evaluated
