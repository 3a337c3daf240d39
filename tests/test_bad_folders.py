"""Run folders with damaged files (issue 17 item 11): `fxp runs` flags a bad folder and lists the others;
`fxp predict`, `fxp reproduce --from` and `fxp diagnose` on one folder answer in one line, never a traceback."""
import json
import shutil

import pytest

from conftest import REPO, assert_one_line_error, run_fxp
from fxp.runs import STATUSES
from test_commands_display import write_run

BAD_SUMMARIES = {
    "null": "null",
    "list": "[1, 2]",
    "string": '"completed"',
    "number": "3",
    "truncated": '{"status": "comp',
    "not-utf8": b'{"status": "\xff\xfe"}',
    "mistyped": json.dumps(dict(status=["completed"], task=3, overrides="x", final_metrics="high", best_metrics=[1],
                                epochs="two", wall_time_s="3s", model_epoch="1", suggested_lrs=[1], error=7,
                                accuracy_majority="x", lm=[])),
    "mistyped-values": json.dumps(dict(status="completed", task=None, overrides=[1, None],
                                       final_metrics={"accuracy": "x", "valid_loss": True}, best_metrics=None,
                                       epochs=2.5, wall_time_s=None, suggested_lrs={"valley": "x"}, model_epoch=1.5)),
}


def write(path, content):
    path.write_bytes(content if isinstance(content, bytes) else content.encode())


@pytest.fixture
def outputs(tmp_path):
    "A good run, then one folder per kind of damage."
    out = tmp_path / "outputs"
    write_run(out / "digits/2026-01-01_00-00-00_good00")
    for i, (name, text) in enumerate(BAD_SUMMARIES.items(), 1):
        write(write_run(out / f"digits/2026-01-02_00-00-{i:02d}_{name}") / "summary.json", text)
    write(write_run(out / "digits/2026-01-03_00-00-00_cfgutf8") / "config.yaml", b"task: \xff\xfe\n")
    write(write_run(out / "digits/2026-01-03_00-00-01_cfgyaml") / "config.yaml", "task: [unclosed\n")
    write(write_run(out / "digits/2026-01-03_00-00-02_cfglist") / "config.yaml", "- a\n- b\n")
    bad_csv = write_run(out / "digits/2026-01-03_00-00-03_csvutf8")
    write(bad_csv / "metrics.csv", b"stage,epoch,accuracy\n1,1,\xff\xfe\n1,2,0.5,extra\n")
    write(bad_csv / "summary.json", json.dumps({"status": "running", "task": "digits"}))
    write(write_run(out / "digits/2026-01-03_00-00-04_ovrutf8") / "overrides.yaml", b"\xff\xfe")
    return out


def test_runs_lists_every_folder_and_flags_the_bad_ones(outputs, tmp_path):
    r = run_fxp("runs", outputs, "--json", cwd=tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r
    rows = {row["run"].rsplit("_", 1)[1]: row for row in json.loads(r.stdout)}
    assert set(rows) == {"good00", *BAD_SUMMARIES, "cfgutf8", "cfgyaml", "cfglist", "csvutf8", "ovrutf8"}
    assert rows["good00"]["status"] == "completed" and rows["good00"]["error"] is None
    for name in ("null", "list", "string", "number", "truncated", "not-utf8"):
        assert rows[name]["status"] == "incomplete" and "unreadable summary.json" in rows[name]["error"], rows[name]
        assert rows[name]["best"] == 0.6  # read from metrics.csv, as a run without its summary
    for name in ("cfgutf8", "cfgyaml", "cfglist"):
        assert "unreadable config.yaml" in rows[name]["error"], rows[name]
    assert rows["mistyped"]["status"] == "incomplete" and rows["mistyped"]["task"] == "digits"
    assert rows["mistyped-values"]["epochs"] == 0 and rows["mistyped-values"]["model_epoch"] is None


def test_runs_table_and_sort_survive_bad_folders(outputs, tmp_path):
    r = run_fxp("runs", outputs, cwd=tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r
    assert "good00" in r.stdout and max(map(len, r.stdout.splitlines())) <= 120, r
    statuses = [line.split("│")[-2].split()[0] for line in r.stdout.splitlines() if line.startswith("│ digits/")]
    assert statuses and all(s.rstrip(":") in STATUSES for s in statuses), statuses  # each status word whole
    r = run_fxp("runs", outputs, "--wide", cwd=tmp_path)
    assert "unreadable summary.json: a JSON null" in r.stdout, r
    for args in (["--sort", "accuracy"], ["--status", "incomplete"], ["--task", "digits"]):
        r = run_fxp("runs", outputs, *args, cwd=tmp_path)
        assert r.returncode == 0 and "Traceback" not in r.stderr, (args, r)


def test_a_sweep_with_a_bad_job_is_listed(outputs, tmp_path):
    sweep = outputs / "multirun/2026-01-05_00-00-00_sweep0"
    write_run(sweep / "0")
    write(write_run(sweep / "1") / "summary.json", "null")
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    r = run_fxp("runs", outputs, "--json", cwd=tmp_path)
    assert r.returncode == 0, r
    row = next(row for row in json.loads(r.stdout) if row["kind"] == "sweep")
    assert row["jobs"] == 2 and row["best_job"] == "0"
    r = run_fxp("runs", sweep, cwd=tmp_path)
    assert r.returncode == 0 and "unreadable summary.json" in r.stdout, r


# --- commands on one folder: one line -------------------------------------------------------------------------------

EXPORTED = REPO / "tests/fixtures/exported/classification-digits"


@pytest.fixture
def predict_run(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(EXPORTED, run)
    return run


@pytest.mark.parametrize("damage, says", [
    (None, "config.yaml"),
    (b"task: [unclosed\n", "config.yaml"),
    (b"\xff\xfe\x00", "config.yaml"),
    (b"- a\n- b\n", "config.yaml"),
    (b"task: {}\n", "task.kind"),
])
def test_predict_on_a_damaged_config_is_one_line(predict_run, tmp_path, damage, says):
    if damage is None:
        (predict_run / "config.yaml").unlink()
    else:
        write(predict_run / "config.yaml", damage)
    r = run_fxp("predict", predict_run, predict_run / "digit3.png", cwd=tmp_path)
    assert_one_line_error(r, says, str(predict_run))


def preset_run(tmp_path):
    "A run folder as `fxp reproduce NAME` leaves it: config.yaml with its reproduce block, summary.json."
    run = write_run(tmp_path / "run", final_metrics={"accuracy": 0.8}, best_metrics={"accuracy": 0.8})
    cfg = {"task": {"kind": "tabular", "monitor": {"metric": "accuracy", "mode": "max"}}, "trainer": {"seed": 1},
           "reproduce": {"metric": "accuracy", "mode": "max", "published": 0.83, "tolerance": 0.05,
                         "source": "fastbook ch. 1", "needs": []}}
    (run / "config.yaml").write_text(json.dumps(cfg))  # JSON is YAML
    return run


def test_reproduce_from_a_good_run_still_works(tmp_path):
    r = run_fxp("reproduce", "--from", preset_run(tmp_path), cwd=tmp_path)
    assert r.returncode == 0 and "within tolerance" in r.stdout, r


@pytest.mark.parametrize("file, damage, says", [
    ("config.yaml", b"reproduce: [unclosed\n", "config.yaml"),
    ("config.yaml", b"\xff\xfe", "config.yaml"),
    ("config.yaml", b"reproduce: 3\n", "reproduce"),
    ("config.yaml", b"reproduce: {metric: accuracy}\n", "reproduce"),
    ("summary.json", b'{"status": "compl', "summary.json"),
    ("summary.json", b"null", "summary.json"),
    ("summary.json", b'{"status": "completed", "final_metrics": "x"}', "summary.json"),
])
def test_reproduce_from_a_damaged_run_is_one_line(tmp_path, file, damage, says):
    run = preset_run(tmp_path)
    write(run / file, damage)
    r = run_fxp("reproduce", "--from", run, cwd=tmp_path)
    assert_one_line_error(r, says, str(run))


@pytest.mark.parametrize("name", list(BAD_SUMMARIES))
def test_diagnose_on_a_damaged_summary_does_not_crash(tmp_path, name):
    run = write_run(tmp_path / "run")
    write(run / "summary.json", BAD_SUMMARIES[name])
    r = run_fxp("diagnose", run, "--no-plot", cwd=tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r
