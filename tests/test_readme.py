"The README's test command is what CI runs, verbatim."
from pathlib import Path

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
