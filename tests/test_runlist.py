"`fxp runs`: the table of run folders (built here like fxp.runs writes them, and real ones), filters, sort, sweeps."
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import yaml
from rich.cells import cell_len

from conftest import assert_one_line_error, run_fxp
from fxp.commands import runs as runlist
from fxp.errors import FxpError
from fxp.runs import NOT_METRICS

COLUMNS = ["stage", "epoch", "train_loss", "valid_loss", "accuracy", "error_rate", "lr", "time"]


def write_run(folder, task="digits", status="completed", accuracy=(0.90, 0.95, 0.94), overrides=(),
              monitor=("accuracy", "max"), wall=12.5, summary=True, metrics=True):
    "A run folder as fxp.runs writes it: config.yaml, overrides.yaml, metrics.csv (accuracy per epoch), summary.json."
    folder.mkdir(parents=True)
    cfg = {"task": {"kind": "classification", "monitor": {"metric": monitor[0], "mode": monitor[1]}},
           "trainer": {"seed": 42}}
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    (folder / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    rows = [dict(stage=1, epoch=i + 1, train_loss=1.0 / (i + 1), valid_loss=1 - a, accuracy=a, error_rate=1 - a,
                 lr=1e-3, time=2.0) for i, a in enumerate(accuracy)]
    if metrics and rows:
        lines = [",".join(COLUMNS)] + [",".join(str(r[c]) for c in COLUMNS) for r in rows]
        (folder / "metrics.csv").write_text("\n".join(lines) + "\n")
    if summary:
        done = status not in ("running",)  # a running run's summary.json is the one written at its start
        final = {k: v for k, v in rows[-1].items() if k not in NOT_METRICS} if rows and done else {}
        best = ({"train_loss": min(r["train_loss"] for r in rows), "valid_loss": min(r["valid_loss"] for r in rows),
                 "accuracy": max(accuracy), "error_rate": min(r["error_rate"] for r in rows)}
                if rows and done else {})
        (folder / "summary.json").write_text(json.dumps(dict(
            status=status, task=task, overrides=list(overrides), final_metrics=final, best_metrics=best,
            epochs=len(rows) if done else 0, wall_time_s=wall if done else 0.1, seed=42)))
    return folder


def age(folder, seconds):
    "Make every file of a run look `seconds` old (a run whose process died long ago)."
    past = time.time() - seconds
    for p in [folder, *folder.rglob("*")]:
        os.utime(p, (past, past))


@pytest.fixture
def outputs(tmp_path):
    "An outputs/ tree with every kind of run folder fxp runs must show."
    out = tmp_path / "outputs"
    write_run(out / "digits/2026-01-01_10-00-00_aaaaaa", accuracy=(0.90, 0.97, 0.96), overrides=["trainer.epochs=3"])
    write_run(out / "digits/2026-01-02_10-00-00_bbbbbb", status="failed", accuracy=(0.50,), wall=3.0,
              overrides=["trainer.bs=7"])
    write_run(out / "pets/2026-01-03_10-00-00_cccccc", task="pets", summary=False, metrics=False)  # half-written
    write_run(out / "mnist/2026-01-04_10-00-00_dddddd", task="mnist", status="running", accuracy=(0.8, 0.85))
    age(write_run(out / "mnist/2026-01-05_10-00-00_eeeeee", task="mnist", status="running", accuracy=(0.7,)),
        seconds=3 * 3600)
    write_run(out / "digits/2026-01-06_10-00-00_ffffff", status="diverged", accuracy=(0.6, float("nan")),
              overrides=["trainer.lr=10"])
    sweep = out / "multirun/2026-01-07_10-00-00_999999"
    for job, (lr, acc, status) in enumerate([("0.001", (0.80, 0.88), "completed"),
                                             ("0.01", (0.90, 0.98), "completed"),
                                             ("1.0", (0.30, 0.99), "diverged")]):  # a diverged job is never best
        write_run(sweep / str(job), status=status, accuracy=acc, overrides=["trainer.epochs=2", f"trainer.lr={lr}"])
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    return out


LONG = ["data.path=/home/someone/datasets/oxford-iiit-pet/images", "model=resnet34", "trainer.epochs=4",
        "trainer.lr=find", "task.size=224", "trainer.bs=32", "trainer.mixup=0.4", "task.aug.max_rotate=10",
        "task.label_smoothing=0.1", "trainer.tta=true", "trainer.opt=ranger", "trainer.wd=0.01"]


@pytest.fixture
def long_outputs(tmp_path):
    """Runs as a user's outputs/ holds them: one with many overrides (a 250-character cell), its baseline and the
    epoch model.pkl holds, a failed one, a sweep: at 120 columns, the columns' floors do not all fit."""
    out = tmp_path / "outputs"
    write_run(out / "digits/2026-01-01_10-00-00_aaaaaa", overrides=["trainer.epochs=3"])
    many = write_run(out / "pets/2026-01-02_10-00-00_gggggg", task="pets", overrides=["task=pets", *LONG], wall=80.0)
    summary = json.loads((many / "summary.json").read_text())  # its baseline and model.pkl's epoch in their cells
    (many / "summary.json").write_text(json.dumps({**summary, "accuracy_majority": 0.1, "model_epoch": 2}))
    failed = write_run(out / "pets/2026-01-03_10-00-00_hhhhhh", task="pets", status="failed", accuracy=(0.5,))
    summary = json.loads((failed / "summary.json").read_text())
    summary["error"] = "FileNotFoundError: no images under /data/pets/images matching task.pat; point data.path at it"
    (failed / "summary.json").write_text(json.dumps(summary))
    for job, (lr, status) in enumerate([("0.001", "completed"), ("0.01", "completed"), ("1.0", "diverged")]):
        write_run(out / "multirun/2026-01-04_10-00-00_999999" / str(job), status=status,
                  overrides=["trainer.epochs=2", f"trainer.lr={lr}"])
    (out / "multirun/2026-01-04_10-00-00_999999/multirun.yaml").write_text("hydra: {}\n")
    return out


def rows_of(capsys, *args) -> list[dict]:
    assert runlist.main([*map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def table_lines(capsys, *args) -> list[str]:
    "The table's rows of `fxp runs ARGS --wide` (piped: a row per line, every cell whole)."
    assert runlist.main([*map(str, args), "--wide"]) == 0
    return [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("│")]


def test_table_shows_each_run_newest_first(outputs, capsys):
    lines = table_lines(capsys, outputs)
    order = ["999999", "ffffff", "eeeeee", "dddddd", "cccccc", "bbbbbb", "aaaaaa"]
    assert [next(h for h in order if h in ln) for ln in lines] == order
    completed = next(ln for ln in lines if "aaaaaa" in ln)
    cells = [c.strip() for c in completed.strip("│").split("│")]
    assert cells == ["digits/2026-01-01_10-00-00_aaaaaa", "digits", "trainer.epochs=3", "accuracy", "0.96", "0.97",
                     "3", "12.5s", "completed"]


def test_every_status_shows_including_half_written_and_dead_runs(outputs, capsys):
    status = {r["run"].split("_")[-1]: r["status"] for r in rows_of(capsys, outputs)}
    assert status == {"aaaaaa": "completed", "bbbbbb": "failed", "cccccc": "incomplete", "dddddd": "running",
                      "eeeeee": "stale", "ffffff": "diverged", "999999": "2 completed, 1 diverged"}


def test_json_parses_as_strict_json_with_the_documented_fields(outputs, capsys):
    assert runlist.main([str(outputs), "--json"]) == 0
    text = capsys.readouterr().out
    rows = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    for r in rows:
        assert {"run", "kind", "task", "overrides", "metric", "mode", "final", "best", "epochs", "wall_time_s",
                "status", "started", "best_metrics"} <= set(r)
    by_run = {r["run"].split("_")[-1]: r for r in rows}
    assert by_run["ffffff"]["final"] is None and by_run["ffffff"]["best"] == 0.6  # NaN final: null, not NaN
    assert by_run["cccccc"]["task"] == "pets" and by_run["cccccc"]["epochs"] == 0  # from its folder
    running = by_run["dddddd"]  # summary.json has nothing yet: read from metrics.csv
    assert (running["epochs"], running["final"], running["best"]) == (2, 0.85, 0.85)


def test_a_sweep_is_one_row_with_its_best_completed_job(outputs, capsys):
    sweeps = [r for r in rows_of(capsys, outputs) if r["kind"] == "sweep"]
    assert len(sweeps) == 1
    s = sweeps[0]
    assert (s["jobs"], s["best_job"], s["best"], s["metric"]) == (3, "1", 0.98, "accuracy")
    assert s["overrides"] == ["trainer.epochs=2", "trainer.lr=0.001,0.01,1.0"]
    assert s["job_status"] == {"completed": 2, "diverged": 1}
    line = next(ln for ln in table_lines(capsys, outputs) if "999999" in ln)
    assert "[3 jobs]" in line and "0.98 (job 1)" in line and "trainer.lr=0.001,0.01,1.0" in line


def test_runs_of_a_sweep_dir_lists_its_jobs(outputs, capsys):
    sweep = outputs / "multirun/2026-01-07_10-00-00_999999"
    rows = rows_of(capsys, sweep)
    assert [(r["run"], r["status"], r["best"]) for r in rows] == [
        ("0", "completed", 0.88), ("1", "completed", 0.98), ("2", "diverged", 0.99)]
    assert runlist.main([str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "3 jobs, best job 1 (accuracy 0.98)" in out


@pytest.mark.parametrize("columns", ["120", "200", None])
def test_run_ids_never_wrap_and_the_table_fits_the_width(long_outputs, capsys, monkeypatch, columns):
    "Issue 21.10: at 120 and 200 columns, and piped (COLUMNS, else 120): run ids whole, long overrides cut with …"
    if columns:
        monkeypatch.setenv("COLUMNS", columns)
    runs = [r["run"] for r in rows_of(capsys, long_outputs)]
    assert runlist.main([str(long_outputs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(map(cell_len, lines)) <= int(columns or runlist.PIPED_WIDTH)
    for run in runs:
        assert sum(run in ln for ln in lines) == 1, f"{run} is not whole on one line"
    long_row = next(ln for ln in lines if "gggggg" in ln)
    assert "│ data" in long_row and long_row.count("…") == 1 and "trainer.wd=0.01" not in long_row
    assert not any("trainer.wd=0.01" in ln for ln in lines)  # cut, not wrapped onto the row's next lines
    assert "completed" in long_row and any("1 diverged" in ln for ln in lines)  # the others wrap at spaces


def test_where_the_floors_do_not_fit_columns_are_left_out_before_words_fold(tmp_path, capsys):
    "A reproduce run's long id and a baseline beside its metric at 120 columns: epochs is left out, and said so."
    run = write_run(tmp_path / "outputs/reproduce/lesson4-tabular/2026-12-06_18-11-33_1e7ae8", task="adult",
                    overrides=["+experiment=lesson4-tabular", "data.path=/data/adult_sample"])
    summary = json.loads((run / "summary.json").read_text())
    summary["baselines"] = {"accuracy": {"value": 0.775, "by": "the majority label '<50k'"}}
    (run / "summary.json").write_text(json.dumps(summary))
    assert runlist.main([str(tmp_path / "outputs")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(map(cell_len, lines)) <= runlist.PIPED_WIDTH
    cells = [c.strip() for c in next(ln for ln in lines if "1e7ae8" in ln).split("│")[1:-1]]
    assert cells[0].endswith("1e7ae8") and "accuracy" in cells and "completed" in cells, cells  # words whole
    assert lines[-1] == "left out for the width: epochs (--wide shows every column)"
    assert runlist.main([str(tmp_path / "outputs"), "--wide"]) == 0
    assert "epochs" in capsys.readouterr().out


def test_wide_shows_every_override_and_piped_keeps_a_row_per_line(long_outputs, capsys):
    lines = table_lines(capsys, long_outputs)
    assert len(lines) == 4  # a row per run or sweep
    assert " ".join(LONG) in next(ln for ln in lines if "gggggg" in ln)
    assert "task.pat; point ..." in next(ln for ln in lines if "hhhhhh" in ln)  # the error's first words


def test_filters_by_task_and_status(outputs, capsys):
    assert {r["run"].split("_")[-1] for r in rows_of(capsys, outputs, "--task", "mnist")} == {"dddddd", "eeeeee"}
    assert {r["run"].split("_")[-1] for r in rows_of(capsys, outputs, "--status", "diverged")} == {"ffffff",
                                                                                                    "999999"}
    assert {r["run"].split("_")[-1] for r in rows_of(capsys, outputs, "--task", "digits", "--status", "failed")} \
        == {"bbbbbb"}


def test_no_match_says_what_there_is(outputs, capsys):
    assert runlist.main([str(outputs), "--task", "planet"]) == 0
    out = capsys.readouterr().out
    assert "no runs" in out and "--task planet" in out and "digits, mnist, pets" in out
    assert rows_of(capsys, outputs, "--task", "planet") == []


@pytest.mark.parametrize("metric, expected", [
    ("accuracy", ["999999", "aaaaaa", "dddddd", "eeeeee", "ffffff", "bbbbbb", "cccccc"]),  # max first; none last
    ("valid_loss", ["999999", "aaaaaa", "dddddd", "eeeeee", "ffffff", "bbbbbb", "cccccc"]),  # a loss: min first
])
def test_sort_by_a_metric_best_first(outputs, capsys, metric, expected):
    rows = rows_of(capsys, outputs, "--sort", metric)
    assert [r["run"].split("_")[-1] for r in rows] == expected
    values = [r["best_metrics"].get(metric) for r in rows if r["best_metrics"].get(metric) is not None]
    assert values == sorted(values, reverse=metric == "accuracy")


def test_sort_follows_the_monitor_mode(tmp_path, capsys):
    "A metric monitored with mode=min sorts ascending whatever its name."
    for name, acc in (("2026-01-01_00-00-00_000001", (0.5,)), ("2026-01-02_00-00-00_000002", (0.9,))):
        write_run(tmp_path / "t" / name, accuracy=acc, monitor=("accuracy", "min"))
    assert [r["best"] for r in rows_of(capsys, tmp_path, "--sort", "accuracy")] == [0.5, 0.9]


def test_unknown_sort_metric_names_the_known_ones(outputs):
    with pytest.raises(FxpError, match="no run under .* has a metric 'acc'; choose from: accuracy, error_rate"):
        runlist.main([str(outputs), "--sort", "acc"])


def test_missing_dir_is_an_error_and_an_empty_one_a_hint(tmp_path, capsys):
    with pytest.raises(FxpError, match="no folder .*nowhere.*fxp runs DIR"):
        runlist.main([str(tmp_path / "nowhere")])
    (tmp_path / "empty").mkdir()
    assert runlist.main([str(tmp_path / "empty")]) == 0
    assert "no runs in" in capsys.readouterr().out and rows_of(capsys, tmp_path / "empty") == []


def test_bad_option_is_one_line(outputs):
    with pytest.raises(FxpError, match="fxp runs: argument --status: invalid choice: 'done'"):
        runlist.main([str(outputs), "--status", "done"])


def test_default_dir_is_outputs(outputs, capsys, monkeypatch):
    monkeypatch.chdir(outputs.parent)
    assert len(rows_of(capsys)) == 7


def test_reading_a_hundred_runs_is_fast(tmp_path, capsys):
    for i in range(100):
        write_run(tmp_path / "outputs/digits" / f"2026-01-01_10-{i // 60:02d}-{i % 60:02d}_{i:06x}",
                  accuracy=(0.5, 0.6 + i / 1000))
    t0 = time.perf_counter()
    rows = rows_of(capsys, tmp_path / "outputs")
    seconds = time.perf_counter() - t0
    assert len(rows) == 100 and rows[0]["best"] == pytest.approx(0.699)  # newest first
    assert seconds < 2.0, f"{seconds:.2f}s for 100 runs"


IMPORTS = """
import json, sys
import fxp.cli
from fxp.commands import runs as runlist
code = runlist.main([sys.argv[1]])
print("RESULT", json.dumps({"code": code, "torch": "torch" in sys.modules, "fastai": "fastai" in sys.modules}),
      file=sys.stderr)
"""


def test_runs_does_not_import_torch_or_fastai(outputs):
    p = subprocess.run([sys.executable, "-c", IMPORTS, str(outputs)], capture_output=True, text=True, timeout=60)
    line = next(ln for ln in p.stderr.splitlines() if ln.startswith("RESULT "))
    assert json.loads(line[len("RESULT "):]) == {"code": 0, "torch": False, "fastai": False}, p.stderr


def test_fxp_runs_command(outputs, tmp_path):
    r = run_fxp("runs", "--json", cwd=tmp_path)  # ./outputs by default
    assert r.returncode == 0, r
    assert len(json.loads(r.stdout)) == 7
    r = run_fxp("runs", outputs / "multirun/2026-01-07_10-00-00_999999", cwd=tmp_path)
    assert r.returncode == 0 and "best job 1" in r.stdout, r
    assert_one_line_error(run_fxp("runs", "--sort", "nope", cwd=tmp_path), "--sort", "'nope'", "accuracy")
    assert_one_line_error(run_fxp("runs", tmp_path / "nowhere", cwd=tmp_path), "nowhere")


@pytest.mark.slow
def test_real_runs_and_sweep(tmp_path, digits_run, digits_sweep):
    """A real digits run and a real 2-job sweep (the shared ones, copied): both listed; the sweep varies only the seed,
    so its best is its one recipe, by the mean of its jobs (issue 29), as best.json says; --members lists the jobs."""
    shutil.copytree(digits_run, tmp_path / "outputs" / "digits" / digits_run.name)
    shutil.copytree(digits_sweep[0].parent, tmp_path / "outputs" / "multirun" / digits_sweep[0].parent.name)
    rows = {r["kind"]: r for r in json.loads(_runs_json(tmp_path, tmp_path / "outputs"))}
    assert set(rows) == {"run", "sweep"}
    assert rows["run"]["status"] == "completed" and rows["run"]["epochs"] == 2 and rows["run"]["task"] == "digits"
    assert rows["run"]["best"] > 0.5  # ten classes: chance is 0.1
    sweep_dir = tmp_path / "outputs" / rows["sweep"]["run"]
    assert rows["sweep"]["jobs"] == 2 and rows["sweep"]["overrides"] == ["trainer.seed=1,2", "trainer.epochs=1"]
    assert json.loads((sweep_dir / "best.json").read_text())["job"] == rows["sweep"]["best_job"]
    (recipe,) = json.loads(_runs_json(tmp_path, sweep_dir))
    assert (recipe["run"], recipe["kind"], recipe["n"]) == ("0,1", "group", 2)
    jobs = json.loads(_runs_json(tmp_path, sweep_dir, "--members"))
    assert [j["run"] for j in jobs] == ["0", "1"]
    assert rows["sweep"]["best"] == pytest.approx(sum(j["best"] for j in jobs) / 2) == recipe["best"]


@pytest.mark.slow  # a real sweep (the session's digits_sweep, which only slow tests build otherwise)
def test_a_sweep_stopped_between_jobs_shows_the_jobs_it_never_started(tmp_path, digits_sweep, capsys):
    "Issue 30.10: the real 2-job sweep (`trainer.seed=1,2`) as a kill before its last job leaves it: no folder 1."
    sweep = shutil.copytree(digits_sweep[0].parent, tmp_path / "outputs" / "multirun" / digits_sweep[0].parent.name)
    shutil.rmtree(sweep / "1")
    row = rows_of(capsys, tmp_path / "outputs")[0]
    assert (row["jobs"], row["jobs_started"], row["status"]) == (2, 1, "1 completed, 1 not started")
    assert row["overrides"] == ["trainer.seed=1,2", "trainer.epochs=1"]  # the sweep's, not only job 0's
    assert "[1 of 2 jobs]" in table_lines(capsys, tmp_path / "outputs")[0]
    jobs = rows_of(capsys, sweep, "--members")  # one recipe over two seeds: a row of its own each
    assert [(j["run"], j["status"], j["overrides"]) for j in jobs] == [
        ("0", "completed", ["trainer.seed=1", "trainer.epochs=1"]),
        ("1", "not started", ["trainer.seed=2", "trainer.epochs=1"])]
    assert [r["run"] for r in rows_of(capsys, sweep, "--status", "not started", "--members")] == ["1"]
    (recipe,) = rows_of(capsys, sweep)
    assert (recipe["run"], recipe["status"], recipe["n"]) == ("0,1", "1 completed, 1 not started", 1)


def test_a_sweeper_that_counts_its_trials_records_how_many(tmp_path, capsys):
    "Optuna's trials pick their values as they run: the record (from the composed config) has their number only."
    from fxp.precheck import compose
    from fxp.sweeps import plan, record

    cfg = compose(["hydra/sweeper=optuna_search", "hydra.sweeper.n_trials=5"], hydra=True)
    assert plan(cfg) == {"jobs": 5}
    sweep = tmp_path / "sweep"
    for job in range(2):
        write_run(sweep / str(job), overrides=[f"trainer.lr=0.00{job + 1}"])
    record(sweep, cfg)
    row = rows_of(capsys, tmp_path)[0]
    assert (row["jobs"], row["status"]) == (5, "2 completed, 3 not started")
    assert row["overrides"] == ["trainer.lr=0.001,0.002"]


def _runs_json(cwd, folder, *options) -> str:
    "`fxp runs FOLDER --json`."
    r = run_fxp("runs", folder, "--json", *options, cwd=cwd)
    assert r.returncode == 0, r
    return r.stdout
