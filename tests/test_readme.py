"The README: short, opening with install and the default run, its test command what CI runs verbatim."
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _command(script: str) -> str:
    return next(ln for ln in script.splitlines() if "pytest" in ln and not ln.startswith("#"))


def test_ci_runs_the_readme_test_command():
    ci = _command((ROOT / ".ci" / "run").read_text())
    assert "pytest" in ci
    assert ci in (ROOT / "README.md").read_text().splitlines()


def test_readme_opens_with_install_and_default_run():
    readme = (ROOT / "README.md").read_text()
    assert "pip install -e . && fxp train\n" in readme


def test_readme_is_a_map_of_at_most_200_lines():
    "Features live in docs/ pages; the README says what fxp is, how to start, and where to read on."
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


@pytest.mark.slow
def test_the_offline_pets_line_trains_on_the_shared_sample(tmp_path):
    "docs/tasks.md's offline pets recipe (issue 21 item 15) runs as printed, offline, and its loss stays finite."
    import math

    from conftest import data_root, metrics_rows, need_data, newest_run, run_fxp, summary

    need_data("oxford-iiit-pet")
    line = next(ln for ln in (ROOT / "docs" / "tasks.md").read_text().splitlines()
                if ln.startswith("fxp train task=pets") and "model.pretrained=false" in ln)
    args = [a.replace("../shared/data", str(data_root())) for a in line.split("#")[0].split()[2:]]
    r = run_fxp("train", *args, "trainer.epochs=1", cwd=tmp_path)
    assert r.returncode == 0, r
    run = newest_run(tmp_path)
    assert summary(run)["status"] == "completed"
    assert all(math.isfinite(float(row["train_loss"])) for row in metrics_rows(run))
