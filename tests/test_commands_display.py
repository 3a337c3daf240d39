"""What the tables show (issue 16 items 8, 11, 12): user text as is (no rich markup eaten), numbers with
significant digits, the baselines fxp computes beside the metric, the epoch model.pkl holds, lr-find runs marked,
failed runs with their error. Run folders are written here as fxp.runs writes them."""
import json
from types import SimpleNamespace

import pytest
import yaml

from fxp import apps
from fxp.commands import predict, reproduce
from fxp.commands import runs as runlist

METRICS = "stage,epoch,train_loss,valid_loss,accuracy,lr,time\n1,1,0.9,0.8,0.5,0.001,1.0\n1,2,0.7,0.6,0.6,0.001,1.0\n"


def write_run(folder, overrides=(), task="digits", metric="accuracy", mode="max", **summary):
    folder.mkdir(parents=True)
    cfg = {"task": {"kind": "classification", "monitor": {"metric": metric, "mode": mode}}, "trainer": {"seed": 1}}
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
    assert runlist.main([str(a) for a in args]) == 0
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
    apps.report(SimpleNamespace(path=run))
    out = capsys.readouterr().out
    assert "[bold]x[/bold]" in out and "[fbeta]" in out
