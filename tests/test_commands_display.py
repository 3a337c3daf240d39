"""What the tables show (issue 16 items 8, 11, 12): user text as is (no rich markup eaten), numbers with
significant digits, the baselines fxp computes beside the metric, the epoch model.pkl holds, lr-find runs marked,
failed runs with their error. Run folders are written here as fxp.runs writes them."""
import json
from types import SimpleNamespace

import yaml

from fxp import reports
from fxp.commands import predict, reproduce, runs as runlist

METRICS = "stage,epoch,train_loss,valid_loss,accuracy,lr,time\n1,1,0.9,0.8,0.5,0.001,1.0\n1,2,0.7,0.6,0.6,0.001,1.0\n"


def write_run(folder, overrides=(), task="digits", metric="accuracy", mode="max", save_best=True, **summary):
    folder.mkdir(parents=True)
    cfg = {"task": {"kind": "classification", "monitor": {"metric": metric, "mode": mode}},
           "trainer": {"seed": 1, "save_best": save_best}}
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    (folder / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    (folder / "metrics.csv").write_text(METRICS)
    full = dict(status="completed", task=task, overrides=list(overrides),
                final_metrics={"train_loss": 0.7, "valid_loss": 0.6, "accuracy": 0.6},
                best_metrics={"train_loss": 0.7, "valid_loss": 0.6, "accuracy": 0.6}, epochs=2, wall_time_s=3.0)
    full.update(summary)
    (folder / "summary.json").write_text(json.dumps(full))
    return folder


def runs_output(capsys, *args) -> str:
    "`fxp runs ARGS --wide`: every cell whole, a row per line (the table's width is tested in test_runlist)."
    assert runlist.main([*map(str, args), "--wide"]) == 0
    return capsys.readouterr().out


# --- 16.8: rich markup never eats user text ------------------------------------------------------------------------


def test_runs_shows_overrides_with_brackets(tmp_path, capsys):
    write_run(tmp_path / "outputs/regression/2026-01-01_10-00-00_aaaaaa", task="[csv]",
              overrides=["task.y_cols=[steering,throttle]", "model.kwargs={ps:[0.5]}"])
    out = runs_output(capsys, tmp_path / "outputs")
    assert "task.y_cols=[steering,throttle]" in out
    assert "model.kwargs={ps:[0.5]}" in out
    assert "[csv]" in out


def test_predict_table_shows_texts_with_brackets(capsys):
    predict._print_rows([{"input": "[spoiler] the ending [b]was[/b] sad", "[label]": "[neg]", "probs": {"[a]": 1}}])
    out = capsys.readouterr().out
    assert "[spoiler] the ending [b]was[/b] sad" in out
    assert "[label]" in out and "[neg]" in out and "[a] 1" in out


def test_reproduce_verdict_shows_text_with_brackets(tmp_path, capsys):
    v = dict(run=str(tmp_path / "[run]"), metric="[m]", mode="max", published=0.9, tolerance=0.05,
             source="[1] fastbook", status="completed", reached=0.91, difference=0.01, within_tolerance=True,
             wall_time_s=10.0)
    assert reproduce.print_verdict(v) == 0
    out = capsys.readouterr().out
    assert "[m] (max)" in out and "[1] fastbook" in out and "[run]" in out


def test_final_table_shows_metric_and_task_names_with_brackets(tmp_path, capsys):
    run = write_run(tmp_path / "run", task="[bold]x[/bold]", final_metrics={"[fbeta]": 0.5},
                    best_metrics={"[fbeta]": 0.5})
    reports.report(SimpleNamespace(path=run))
    out = capsys.readouterr().out
    assert "[bold]x[/bold]" in out and "[fbeta]" in out


# --- 16.12: numbers, lr-find, failed runs; which epoch model.pkl holds; 16.11: baselines ----------------------------


def report_of(run, capsys) -> str:
    reports.report(SimpleNamespace(path=run))
    return capsys.readouterr().out


def test_final_table_keeps_significant_digits(tmp_path, capsys):
    run = write_run(tmp_path / "run", final_metrics={"valid_loss": -3.0e-06, "mse": 1234.5678, "accuracy": 0.958333},
                    best_metrics={"valid_loss": -3.1e-06, "mse": 1000.0, "accuracy": float("nan")})
    out = report_of(run, capsys)
    assert "-0.0000" not in out
    assert "-3e-06" in out and "-3.1e-06" in out and "1235" in out and "0.9583" in out


def test_final_table_says_which_epoch_model_pkl_holds(tmp_path, capsys):
    best = write_run(tmp_path / "best", model_epoch=1, epochs=2)
    assert "model.pkl: epoch 1 of 2, the best accuracy" in report_of(best, capsys)
    last = write_run(tmp_path / "last", save_best=False, model_epoch=2, epochs=2)
    assert "model.pkl: epoch 2 of 2, the last" in report_of(last, capsys)


def test_final_table_shows_the_baselines_beside_the_metric(tmp_path, capsys):
    run = write_run(tmp_path / "run", accuracy_majority=0.47,
                    lm={"final_metrics": {"train_loss": 5.1, "valid_loss": 5.8, "accuracy": 0.06, "perplexity": 330.2},
                        "best_metrics": {"perplexity": 320.0}, "perplexity_unigram": 612.5})
    lines = report_of(run, capsys).splitlines()
    assert "baseline" in next(ln for ln in lines if "metric" in ln)
    accuracy = next(ln for ln in lines if "│ accuracy " in ln)
    assert "0.6" in accuracy and "0.47 (the majority label)" in accuracy
    perplexity = next(ln for ln in lines if "lm perplexity" in ln)
    assert "330.2" in perplexity and "320" in perplexity and "612.5 (unigram frequencies)" in perplexity
    assert not any("lm train_loss" in ln for ln in lines)  # a step's losses stay in its folder


def test_lr_find_table_lists_the_suggestions(tmp_path, capsys):
    run = write_run(tmp_path / "run", final_metrics={}, best_metrics={}, epochs=0,
                    suggested_lrs={"valley": 0.001445, "slide": 0.01096})
    out = report_of(run, capsys)
    assert "lr-find completed" in out and "valley" in out and "0.001445" in out and "plots/lr_find.png" in out


def test_runs_marks_show_folders_as_no_training(tmp_path, capsys):
    "fxp show's folders (a batch, the DataBlock summary) are not runs of 0 epochs."
    write_run(tmp_path / "outputs/show/digits/2026-01-01_10-00-00_bbbbbb", final_metrics={}, best_metrics={},
              epochs=0, shown="plots/batch.png")
    line = next(ln for ln in runs_output(capsys, tmp_path / "outputs").splitlines() if "bbbbbb" in ln)
    cells = [c.strip() for c in line.strip("│").split("│")]
    assert "[show]" in cells[0] and "plots/batch.png" in cells[3] and cells[6] == "-"
    assert json.loads(runs_output(capsys, tmp_path / "outputs", "--json"))[0]["kind"] == "show"


def test_runs_marks_lr_find_runs(tmp_path, capsys):
    write_run(tmp_path / "outputs/digits/2026-01-01_10-00-00_aaaaaa", final_metrics={}, best_metrics={}, epochs=0,
              suggested_lrs={"valley": 0.001445, "slide": 0.01096})
    out = runs_output(capsys, tmp_path / "outputs")
    line = next(ln for ln in out.splitlines() if "aaaaaa" in ln)
    assert "[lr-find]" in line and "suggested lr" in line and "0.001445" in line
    cells = [c.strip() for c in line.strip("│").split("│")]
    assert cells[6] == "-"  # epochs: none, not 0
    row = json.loads(runs_output(capsys, tmp_path / "outputs", "--json"))[0]
    assert row["kind"] == "lr-find" and row["suggested_lrs"]["valley"] == 0.001445


def test_runs_shows_the_first_words_of_a_failed_runs_error(tmp_path, capsys):
    error = ("FileNotFoundError: no images under /data/pets/images matching task.pat; point data.path at the "
             "folder\nsecond line")
    write_run(tmp_path / "outputs/pets/2026-01-01_10-00-00_aaaaaa", status="failed", error=error)
    out = runs_output(capsys, tmp_path / "outputs")
    assert "failed: FileNotFoundError: no images under /data/pets/images matching" in out
    assert "second line" not in out
    row = json.loads(runs_output(capsys, tmp_path / "outputs", "--json"))[0]
    assert row["error"] == error.splitlines()[0]


def test_runs_shows_the_baseline_and_the_model_epoch(tmp_path, capsys):
    write_run(tmp_path / "outputs/imdb/2026-01-01_10-00-00_aaaaaa", accuracy_majority=0.47, model_epoch=1)
    line = next(ln for ln in runs_output(capsys, tmp_path / "outputs").splitlines() if "aaaaaa" in ln)
    assert "accuracy (0.47 for the majority label)" in line
    assert "2 (model.pkl: 1)" in line
    row = json.loads(runs_output(capsys, tmp_path / "outputs", "--json"))[0]
    assert (row["baseline"], row["model_epoch"]) == (0.47, 1)


def test_error_rate_baseline_follows_from_the_majority_accuracy(tmp_path, capsys):
    write_run(tmp_path / "outputs/pets/2026-01-01_10-00-00_aaaaaa", metric="error_rate", mode="min",
              accuracy_majority=0.25, final_metrics={"error_rate": 0.1}, best_metrics={"error_rate": 0.1})
    line = next(ln for ln in runs_output(capsys, tmp_path / "outputs").splitlines() if "aaaaaa" in ln)
    assert "error_rate (0.75 for the majority label)" in line


def test_reproduce_verdict_keeps_tiny_differences(tmp_path, capsys):
    v = dict(run=str(tmp_path), metric="mse", mode="min", published=0.5, tolerance=0.01, source="s",
             status="completed", reached=0.500003, difference=3.0e-06, within_tolerance=True, wall_time_s=1.0)
    reproduce.print_verdict(v)
    out = capsys.readouterr().out
    assert "3e-06" in out and "0.0000" not in out


def test_lr_find_completion_line_is_one_line_when_piped(tmp_path, capsys):
    "Issue 21.13: the heading is the table's title, which rich wrapped to the (narrow) table's width."
    run = write_run(tmp_path / ("a_long_folder_name_" * 6) / "run", task="pets_trimaps", final_metrics={},
                    best_metrics={}, epochs=0, wall_time_s=12.25, suggested_lrs={"valley": 0.001445, "slide": 0.01})
    lines = [ln.strip() for ln in report_of(run, capsys).splitlines()]
    assert "pets_trimaps: lr-find completed in 12.2s" in lines
    assert f"run folder: {run}" in lines
