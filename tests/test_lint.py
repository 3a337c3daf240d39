"""The tree passes ruff with the rules of pyproject.toml ([tool.ruff]): 120 columns, sorted imports, no unused names.
A subprocess: ruff is a program, not a library."""
import re
import subprocess
import sys
from importlib.util import find_spec

import pytest

from conftest import REPO

pytestmark = pytest.mark.skipif(find_spec("ruff") is None,
                                reason="ruff is not installed (`pip install -e '.[test]'` installs it)")


def ruff(*args: str, text: str | None = None) -> subprocess.CompletedProcess:
    "`ruff check ARGS...` at the repository root (its pyproject.toml), no cache written into the tree."
    return subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", *args],
                          cwd=REPO, input=text, capture_output=True, text=True, timeout=120)


def test_the_tree_passes_ruff():
    p = ruff()
    assert p.returncode == 0, p.stdout + p.stderr


def test_ruff_holds_the_line_length_and_import_order():
    "A module with unsorted imports and a 121-column line fails at both; its 120-column line passes."
    fits, too_long = (f'{name} = "{"x" * 114}"' for name in ("a", "bb"))  # 120 and 121 columns
    source = "\n".join(["import sys", "import os", "", fits, too_long, "print(os, sys)", ""])
    p = ruff("--stdin-filename", "fxp/probe.py", "-", text=source)
    found = re.findall(r"^fxp/probe.py:(\d+):\d+: (\w+)", p.stdout, re.M)
    assert sorted(found) == [("1", "I001"), ("5", "E501")], p.stdout + p.stderr


def test_the_costliest_units_of_the_scheduler_are_real():
    "conftest.COSTLIEST (what xdist hands out first) names test modules and tests that exist: no stale entry."
    from conftest import COSTLIEST

    for unit in COSTLIEST:
        module, _, test = unit.partition("::")
        source = (REPO / module).read_text()
        assert not test or f"def {test.split('[')[0]}(" in source, unit
