"""Seed groups (issue 29 items 2-4): `trainer.seeds=N` trains the recipe N times into a group folder; `fxp runs`,
`fxp compare` and `fxp report` show runs that differ only in their seed as one line, `mean ± std (n=N)`, each run one
flag away (--members); a sweep picks its best recipe by its mean over seeds; `fxp reproduce --seeds N` judges the mean.

Display and sweep-summary tests read run folders written here as fxp writes them (the readers are what is tested);
the real runs (slow) train digits for one epoch, and lesson4-tabular on a 1200-row slice of the shared adult file.
"""
import csv
import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import assert_one_line_error, need_data, run_fxp
from fxp import groups, plots, sweeps
from fxp.commands import compare as comparecmd, reproduce
from test_reproduce import preset_run
from test_runlist import rows_of, table_lines, write_run


def seeded_run(folder, seed, accuracy, status="completed", overrides=(), lr=0.01):
    "A run folder (test_runlist.write_run) whose config, overrides and summary carry its seed and learning rate."
    write_run(folder, status=status, accuracy=accuracy, overrides=[*overrides, f"trainer.seed={seed}"])
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    cfg["trainer"].update(seed=seed, lr=lr)
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    summary = json.loads((folder / "summary.json").read_text())
    (folder / "summary.json").write_text(json.dumps({**summary, "seed": seed}))
    return folder


def seed_group(folder, accuracies, statuses=None, overrides=("trainer.epochs=3",), lr=0.01, first=42):
    "A group folder as `fxp train trainer.seeds=N` leaves it: group.json and a member folder per seed."
    seeds = [first + i for i in range(len(accuracies))]
    for i, (seed, accuracy) in enumerate(zip(seeds, accuracies)):
        status = statuses[i] if statuses else "completed"
        seeded_run(folder / f"seed{i}", seed, accuracy, status, overrides, lr)
    record = groups.record(folder, "seeds", [f"seed{i}" for i in range(len(seeds))], seeds=seeds,
                           overrides=[*overrides, f"trainer.seeds={len(seeds)}"])
    (folder / groups.GROUP).write_text(json.dumps(record))
    return folder


GROUP = [(0.90, 0.95, 0.92), (0.90, 0.93, 0.91), (0.90, 0.96, 0.93)]  # finals 0.92, 0.91, 0.93: 0.920 ± 0.010 (n=3)


@pytest.fixture
def outputs(tmp_path):
    out = tmp_path / "outputs"
    seed_group(out / "digits/seeds/2026-01-02_10-00-00_aaaaaa", GROUP)
    write_run(out / "digits/2026-01-01_10-00-00_bbbbbb", accuracy=(0.9, 0.97))
    return out


# --- fxp runs -------------------------------------------------------------------------------------------------------


def test_fxp_runs_shows_a_seed_group_as_one_line_with_mean_std_and_n(outputs, capsys):
    rows = rows_of(capsys, outputs)
    assert [r["kind"] for r in rows] == ["group", "run"]
    group = rows[0]
    assert group["n"] == 3 and group["status"] == "completed" and group["final"] == pytest.approx(0.92)
    assert group["spread"]["final"]["accuracy"] == pytest.approx(dict(mean=0.92, std=0.01, n=3))
    assert group["best"] == pytest.approx(0.9467, abs=1e-4)  # the mean of each seed's best epoch
    assert group["overrides"] == ["trainer.epochs=3", "trainer.seeds=3"]
    line = next(ln for ln in table_lines(capsys, outputs) if "aaaaaa" in ln)
    assert "[3 seeds]" in line and "0.920 ± 0.010 (n=3)" in line and "0.947 ± 0.015 (n=3)" in line


def test_fxp_runs_members_lists_each_seed_and_a_group_folder_lists_its_members(outputs, capsys):
    runs = [r["run"] for r in rows_of(capsys, outputs, "--members")]
    assert sorted(runs) == sorted([*(f"digits/seeds/2026-01-02_10-00-00_aaaaaa/seed{i}" for i in range(3)),
                                   "digits/2026-01-01_10-00-00_bbbbbb"])
    group = outputs / "digits/seeds/2026-01-02_10-00-00_aaaaaa"
    assert [(r["run"], r["seed"], r["final"]) for r in rows_of(capsys, group)] == [
        ("seed0", 42, 0.92), ("seed1", 43, 0.91), ("seed2", 44, 0.93)]
    from fxp.commands import runs as runlist

    assert runlist.main([str(group)]) == 0
    assert "3 seeds, completed; accuracy 0.920 ± 0.010 (n=3) (final)" in capsys.readouterr().out


def test_a_group_with_a_diverged_seed_counts_only_the_completed_ones(tmp_path, capsys):
    group = seed_group(tmp_path / "g", [(0.9, 0.92), (0.9, 0.94), (0.5, float("nan"))],
                       statuses=["completed", "completed", "diverged"])
    row = groups.read_group(group, tmp_path)
    assert (row["status"], row["n"]) == ("2 completed, 1 diverged", 2)
    assert row["final"] == pytest.approx(0.93) and groups.cell(row["spread"]["final"]["accuracy"]) == \
        "0.930 ± 0.014 (n=2)"


# --- sweeps: the best recipe by its mean -----------------------------------------------------------------------------


def seed_sweep(sweep, recipes: dict) -> Path:
    "A sweep folder over trainer.lr and trainer.seed: jobs 0.. in order, each recipe's seeds 1, 2, 3."
    job = 0
    for lr, accuracies in recipes.items():
        for seed, (accuracy, status) in enumerate(accuracies, start=1):
            seeded_run(sweep / str(job), seed, (0.5, accuracy), status, [f"trainer.lr={lr}"], float(lr))
            job += 1
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    return sweep


def test_a_sweep_over_seeds_picks_the_recipe_by_its_mean_not_by_a_lucky_seed(tmp_path, capsys):
    "lr 0.01 has the luckiest job (0.99) and the worse mean (0.867); lr 0.001's seeds are steadier: 0.910 ± 0.010."
    sweep = seed_sweep(tmp_path / "outputs/multirun/2026-01-07_10-00-00_999999",
                       {"0.01": [(0.99, "completed"), (0.80, "completed"), (0.81, "completed")],
                        "0.001": [(0.90, "completed"), (0.91, "completed"), (0.92, "completed")]})
    sweeps.update(sweep)
    best = json.loads((sweep / "best.json").read_text())
    assert (best["jobs"], best["n"]) == (["3", "4", "5"], 3)
    assert best["value"] == pytest.approx(0.91) and best["std"] == pytest.approx(0.01)
    assert best["overrides"] == ["trainer.lr=0.001", "trainer.seed=1,2,3"]
    with open(sweep / "sweep.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [(r["job"], r["group"]) for r in table] == [(str(j), "0,1,2" if j < 3 else "3,4,5") for j in range(6)]
    assert float(table[0]["mean_best_accuracy"]) == pytest.approx(0.8667, abs=1e-4)
    assert float(table[0]["best_accuracy"]) == 0.99  # each job's own numbers stay
    assert "best jobs 3,4,5 (accuracy 0.910 ± 0.010 (n=3))" in sweeps.report_line(sweep)
    row = rows_of(capsys, tmp_path / "outputs")[0]
    assert (row["best_job"], row["best"]) == ("3,4,5", pytest.approx(0.91))
    assert "0.910 ± 0.010 (n=3) (jobs 3,4,5)" in table_lines(capsys, tmp_path / "outputs")[0]
    assert [(r["run"], r["n"]) for r in rows_of(capsys, sweep)] == [("0,1,2", 3), ("3,4,5", 3)]
    assert [r["run"] for r in rows_of(capsys, sweep, "--members")] == ["0", "1", "2", "3", "4", "5"]


def test_a_recipe_with_a_seed_that_did_not_complete_is_not_the_best(tmp_path):
    sweep = seed_sweep(tmp_path / "sweep", {"0.01": [(0.99, "completed"), (0.98, "completed"), (0.5, "diverged")],
                                            "0.001": [(0.90, "completed"), (0.91, "completed"), (0.92, "completed")]})
    sweeps.update(sweep)
    assert json.loads((sweep / "best.json").read_text())["jobs"] == ["3", "4", "5"]


def test_a_sweep_without_seeds_still_picks_its_best_job(tmp_path):
    sweep = tmp_path / "sweep"
    for job, accuracy in enumerate((0.9, 0.95)):
        write_run(sweep / str(job), accuracy=(0.5, accuracy), overrides=[f"trainer.lr={job}"])
    sweeps.update(sweep)
    best = json.loads((sweep / "best.json").read_text())
    assert (best["job"], best["value"]) == ("1", 0.95) and "n" not in best


def test_a_sweep_of_seed_groups_picks_the_group_by_its_mean(tmp_path):
    "trainer.seeds with -m: each job folder is a group; best.json is the job with the best mean."
    sweep = tmp_path / "sweep"
    seed_group(sweep / "0", [(0.5, 0.99), (0.5, 0.80), (0.5, 0.81)], overrides=("trainer.lr=0.01",))
    seed_group(sweep / "1", [(0.5, 0.90), (0.5, 0.91), (0.5, 0.92)], overrides=("trainer.lr=0.001",))
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    sweeps.update(sweep)
    best = json.loads((sweep / "best.json").read_text())
    assert (best["job"], best["jobs"], best["n"], best["path"]) == ("1", ["1"], 3, str(sweep / "1"))
    assert best["value"] == pytest.approx(0.91)


def test_fxp_runs_of_a_sweep_of_seed_groups_shows_a_job_per_group(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    seed_group(sweep / "0", GROUP, overrides=("trainer.lr=0.01",))
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    assert [(r["run"], r["kind"], r["n"]) for r in rows_of(capsys, sweep)] == [("0", "group", 3)]
    assert [r["run"] for r in rows_of(capsys, sweep, "-a")] == ["0/seed0", "0/seed1", "0/seed2"]


def test_an_optuna_trial_that_is_a_seed_group_is_told_its_mean_once_every_seed_ended(tmp_path):
    from fxp import trials

    done = seed_group(tmp_path / "0", GROUP)
    assert trials.outcome(done) == ("COMPLETE", pytest.approx(0.9467, abs=1e-4))
    diverged = seed_group(tmp_path / "1", GROUP, statuses=["completed", "diverged", "completed"])
    assert trials.outcome(diverged) == ("FAIL", None)
    going = seed_group(tmp_path / "2", GROUP, statuses=["completed", "interrupted", "completed"])
    assert trials.outcome(going) is None


def test_resuming_a_sweep_keeps_a_finished_seed_group_and_trains_an_unfinished_one_again(tmp_path, monkeypatch):
    monkeypatch.setenv(sweeps.RESUME, "1")
    done = seed_group(tmp_path / "0", GROUP)
    assert sweeps.before_job(done, tmp_path) == "keep"
    cut = seed_group(tmp_path / "1", GROUP, statuses=["completed", "interrupted", "completed"])
    (cut / "train.log").write_text("seed0 and seed1\n")
    assert sweeps.before_job(cut, tmp_path) == "start"
    assert sorted(p.name for p in cut.iterdir()) == ["train.unfinished-1.log"]


# --- fxp compare ------------------------------------------------------------------------------------------------------


def test_compare_shows_a_group_as_one_line_and_its_runs_with_members(outputs, capsys):
    group = outputs / "digits/seeds/2026-01-02_10-00-00_aaaaaa"
    assert comparecmd.main([str(group)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"accuracy\s+│ 2026-01-02_10-00-00_aaaaaa trainer\.seed=42,43,44\s+│ 0\.920 ± 0\.010 \(n=3\)",
                     out), out
    assert comparecmd.main([str(group), "--members"]) == 0
    out = capsys.readouterr().out
    assert "seed1 trainer.seed=43" in out and "0.91" in out and "± " not in out.split("config keys")[0]


def test_compare_two_groups_gives_the_difference_of_their_means(tmp_path, capsys):
    a = seed_group(tmp_path / "a", GROUP, lr=0.01)
    b = seed_group(tmp_path / "b", [(0.5, 0.95), (0.5, 0.96), (0.5, 0.97)], lr=0.001, overrides=("trainer.lr=0.001",))
    assert comparecmd.main([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if "0.960 ± 0.010 (n=3)" in ln and "b " in ln)
    assert "+0.04" in line  # 0.96 - 0.92: the means'
    assert re.search(r"trainer\.lr\s+│ 0\.01\s+│ 0\.001", out), out


def test_runs_given_to_compare_that_differ_only_in_seed_are_one_line(tmp_path, capsys):
    one = seeded_run(tmp_path / "one", 1, (0.5, 0.90))
    two = seeded_run(tmp_path / "two", 2, (0.5, 0.94))
    other = seeded_run(tmp_path / "other", 1, (0.5, 0.80), overrides=["trainer.lr=0.1"], lr=0.1)
    assert comparecmd.main([str(one), str(two), str(other)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"accuracy\s+│ one,two trainer\.seed=1,2\s+│ 0\.920 ± 0\.028 \(n=2\)", out), out
    assert re.search(r"trainer\.lr\s+│ 0\.01\s+│ 0\.1", out) and "trainer.seed │ [1, 2]" in out, out
    assert comparecmd.main([str(one), str(two), "-a"]) == 0
    assert "± " not in capsys.readouterr().out.split("config keys")[0]


# --- fxp report and the group curves ----------------------------------------------------------------------------------


def test_group_curves_draw_the_mean_a_band_and_each_members_final():
    import matplotlib.pyplot as plt

    members = [[{"epoch": 1.0, "accuracy": a}, {"epoch": 2.0, "accuracy": b}] for a, b in ((0.5, 0.9), (0.6, 0.8))]
    fig = plots.group_curves(members, ["seed0", "seed1"])
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["mean of 2"].get_ydata()) == pytest.approx([0.55, 0.85])
    (band,) = ax.collections
    assert band.get_paths()[0].vertices[:, 1].min() == pytest.approx(0.5)
    assert band.get_paths()[0].vertices[:, 1].max() == pytest.approx(0.9)
    assert [lines[f"seed{i} final"].get_xydata().tolist() for i in (0, 1)] == [[[2.0, 0.9]], [[2.0, 0.8]]]
    plt.close(fig)


def test_report_of_a_group_shows_the_mean_of_each_metric_each_seed_and_the_curves(outputs, fxp):
    group = outputs / "digits/seeds/2026-01-02_10-00-00_aaaaaa"
    r = fxp("report", group)
    assert r.returncode == 0, r
    page = (group / "report.html").read_text()
    assert "<td>accuracy</td><td>0.920 ± 0.010 (n=3)</td><td>0.947 ± 0.015 (n=3)</td>" in page
    assert '<td class="text">seed2</td><td>44</td><td class="text">completed</td><td>0.93</td>' in page
    assert 'alt="each metric, the mean of the seeds"' in page and not (group / "plots").exists()


# --- fxp reproduce --seeds: the verdict on the mean -------------------------------------------------------------------


def preset_group(folder, reached: list, statuses=None, published=0.785, tolerance=0.03):
    "A seed group of a preset's runs (test_reproduce.preset_run), the majority label its baseline."
    base = {"accuracy": {"value": 0.775, "by": "the majority label '<50k'"}}
    for i, value in enumerate(reached):
        run = preset_run(folder / f"seed{i}", value, published, tolerance, baselines=base, seed=42 + i)
        summary = json.loads((run / "summary.json").read_text())
        (run / "summary.json").write_text(json.dumps({**summary, "status": (statuses or ["completed"] * 3)[i]}))
    names = [f"seed{i}" for i in range(len(reached))]
    (folder / groups.GROUP).write_text(json.dumps(groups.record(folder, "seeds", names)))
    return folder


def test_the_verdict_of_a_seed_group_is_on_the_mean_with_std_n_and_each_seed(tmp_path, capsys):
    "lesson4-tabular's three seeds as its preset records them: 0.765, 0.845, 0.820 against 0.785 ± 0.03."
    v = reproduce.verdict(preset_group(tmp_path / "g", [0.765, 0.845, 0.820]))
    assert (v["reached"], v["n"]) == (pytest.approx(0.81), 3) and v["std"] == pytest.approx(0.0409, abs=1e-4)
    assert v["within_tolerance"] and v["sigmas"] == pytest.approx(0.025 / 0.0409, abs=1e-2)
    assert reproduce.print_verdict(v) == 0
    out = capsys.readouterr().out
    assert "accuracy (max), mean of 3 seeds: reached" in out and "0.8100 ± 0.0409 (n=3)" in out
    assert all(re.search(rf"│\s+{42 + i} │\s+{value:.4f} │", out) for i, value in enumerate([0.765, 0.845, 0.820]))
    assert "the mean 0.8100 lies 0.0250 above the published 0.785: 0.6 standard deviations of the 3 seeds" in out
    assert "reached: every seed completed and their mean is no worse than the published value" in out


def test_a_group_with_a_seed_that_did_not_complete_is_not_reached(tmp_path, capsys):
    v = reproduce.verdict(preset_group(tmp_path / "g", [0.80, 0.79, 0.5], statuses=["completed"] * 2 + ["diverged"]))
    assert (v["reached"], v["n"], v["within_tolerance"]) == (pytest.approx(0.795), 2, False)
    assert reproduce.print_verdict(v) == 1
    assert "not completed (2 completed, 1 diverged)" in capsys.readouterr().out


def test_the_mean_below_the_published_value_says_so(tmp_path, capsys):
    v = reproduce.verdict(preset_group(tmp_path / "g", [0.70, 0.74, 0.72]))
    reproduce.print_verdict(v)
    out = capsys.readouterr().out
    assert "the mean 0.7200 lies 0.0650 below the published 0.785: 3.2 standard deviations" in out
    assert "beyond the tolerance" in out and "NOT reached" in out


def test_from_takes_a_group_folder_and_seeds_must_be_a_number(tmp_path, fxp):
    group = preset_group(tmp_path / "g", [0.765, 0.845, 0.820])
    r = fxp("reproduce", "--from", group)
    assert r.returncode == 0 and "0.8100 ± 0.0409 (n=3)" in r.stdout, r
    assert_one_line_error(fxp("reproduce", "lesson4-tabular", "--seeds", "x"), "--seeds x", "whole number")


# --- real runs ----------------------------------------------------------------------------------------------------


@pytest.mark.slow  # imports fastai where no test before it did
def test_a_seed_that_fails_ends_the_group_with_the_runs_line_and_exit_code(fxp, tmp_path):
    "A batch larger than the data: seed 42 fails as a single run would (one line, exit 2); seed 43 never starts."
    r = fxp("train", "trainer.seeds=2", "trainer.epochs=1", "trainer.bs=100000")
    assert_one_line_error(r, "trainer.bs=100000", "seed0")
    (group,) = (tmp_path / "outputs" / "digits" / "seeds").iterdir()
    assert [m["status"] for m in groups.read_group(group, group)["members"]] == ["failed", "not started"]
    assert json.loads((group / "seeds.json").read_text())["n"] == 0


@pytest.mark.slow
def test_train_seeds_3_makes_a_group_that_runs_and_compare_show_as_one_line(tmp_path):
    r = run_fxp("train", "trainer.seeds=3", "trainer.epochs=1", "trainer.plots=false", cwd=tmp_path)
    assert r.returncode == 0, r
    (group,) = (tmp_path / "outputs" / "digits" / "seeds").iterdir()
    record = json.loads((group / "group.json").read_text())
    assert (record["kind"], record["members"], record["seeds"]) == ("seeds", ["seed0", "seed1", "seed2"], [42, 43, 44])
    for i in range(3):
        cfg = yaml.safe_load((group / f"seed{i}" / "config.yaml").read_text())
        assert (cfg["trainer"]["seed"], cfg["trainer"]["seeds"]) == (42 + i, 1)
        assert yaml.safe_load((group / f"seed{i}" / "overrides.yaml").read_text()) == [
            "trainer.epochs=1", "trainer.plots=false", f"trainer.seed={42 + i}"]
    summary = json.loads((group / "seeds.json").read_text())
    assert summary["n"] == 3 and summary["final_metrics"]["accuracy"]["mean"] > 0.5  # ten classes: chance is 0.1
    with open(group / "seeds.csv", newline="") as f:
        assert [row["seed"] for row in csv.DictReader(f)] == ["42", "43", "44"]
    cell = groups.cell(summary["final_metrics"]["accuracy"])
    assert "accuracy (final) of each seed: 42 " in r.stdout and cell in r.stdout
    shown = run_fxp("runs", cwd=tmp_path)
    lines = [ln for ln in shown.stdout.splitlines() if "seeds/" in ln]
    assert len(lines) == 1 and cell in lines[0] and "(n=3)" in cell, shown
    compared = run_fxp("compare", group, cwd=tmp_path)
    assert compared.returncode == 0, compared
    assert re.search(rf"accuracy\s+│ {group.name} trainer\.seed=42,43,44\s+│ {re.escape(cell)}", compared.stdout)


@pytest.mark.slow
def test_a_sweep_with_seeds_trains_a_group_per_job_and_summarises_it_by_its_mean(tmp_path):
    "A sweep's job with trainer.seeds is a group folder; sweep.csv and best.json carry its mean, std and n."
    sweep = tmp_path / "sweep"
    r = run_fxp("train", "-m", "trainer.seeds=2", "trainer.epochs=1", "trainer.plots=false", f"hydra.sweep.dir={sweep}",
                cwd=tmp_path)
    assert r.returncode == 0, r
    job = groups.read_group(sweep / "0", sweep)
    assert (job["n"], job["status"], [m["seed"] for m in job["members"]]) == (2, "completed", [42, 43])
    with open(sweep / "sweep.csv", newline="") as f:
        (row,) = csv.DictReader(f)
    assert (row["group"], row["n"]) == ("0", "2") and float(row["mean_best_accuracy"]) == pytest.approx(job["best"])
    best = json.loads((sweep / "best.json").read_text())
    assert (best["job"], best["n"], best["value"]) == ("0", 2, pytest.approx(job["best"]))
    assert "best job 0 (accuracy " in r.stdout and "(n=2)" in r.stdout


def adult_slice(dest: Path, rows: int = 1200) -> Path:
    "The shared adult file's first rows (lesson4-tabular validates on rows 800-999)."
    dest.mkdir()
    lines = (need_data("adult_sample") / "adult.csv").read_text().splitlines(keepends=True)[:rows + 1]
    (dest / "adult.csv").write_text("".join(lines))
    return dest


@pytest.mark.slow
def test_reproduce_seeds_3_prints_mean_std_n_each_seed_and_the_verdict(tmp_path):
    data = adult_slice(tmp_path / "adult")
    r = run_fxp("reproduce", "lesson4-tabular", "--seeds", "3", f"data.path={data}", "trainer.plots=false",
                cwd=tmp_path)
    assert r.returncode in (0, 1), r
    group = next((tmp_path / "outputs" / "reproduce" / "lesson4-tabular").iterdir())
    v = reproduce.verdict(group)
    assert v["n"] == 3 and 0.5 < v["reached"] < 1 and v["std"] > 0  # three seeds, three results
    assert f"{v['reached']:.4f} ± {v['std']:.4f} (n=3)" in r.stdout
    seeds = zip((42, 43, 44), v["members"])
    assert all(re.search(rf"│\s+{seed} │\s+{m['reached']:.4f} │", r.stdout) for seed, m in seeds)
    assert re.search(r"the mean 0\.\d{4} lies 0\.\d{4} (above|below) the published 0\.785: \d+\.\d standard "
                     r"deviations of the 3 seeds", r.stdout), r.stdout
