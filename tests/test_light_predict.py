"""`fxp predict` on a tabular or collab run loads no vision stack (fastai.vision, torchvision, fxp.vision): the
imports are most of a prediction's start-up; and `fxp cache ls` loads nothing heavy (no torch)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import subprocess_env

EXPORTED = Path(__file__).parent / "fixtures" / "exported"
LOADED_AFTER = """
import json, sys
import fxp.cli
code = fxp.cli.main({argv!r})
print("RESULT", json.dumps({{"code": code, "modules": sorted(sys.modules)}}), file=sys.stderr)
"""


def loaded_after(argv: list[str], cwd: Path) -> tuple[int, list[str]]:
    p = subprocess.run([sys.executable, "-c", LOADED_AFTER.format(argv=argv)], capture_output=True, text=True,
                       timeout=120, cwd=cwd, env=subprocess_env(cwd))
    line = next((ln for ln in p.stderr.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, p.stderr
    res = json.loads(line[len("RESULT "):])
    return res["code"], res["modules"]


@pytest.mark.slow
def test_tabular_predict_loads_no_vision_stack(tmp_path):
    run = EXPORTED / "tabular"
    code, modules = loaded_after(["predict", str(run), str(run / "rows.csv")], tmp_path)
    assert code == 0 and "fastai.tabular.learner" in modules
    assert not [m for m in modules if m.startswith(("fastai.vision", "torchvision", "fxp.vision", "fxp.imcache"))]


def test_cache_ls_loads_nothing_heavy(tmp_path):
    code, modules = loaded_after(["cache", "ls", "--dir", str(tmp_path)], tmp_path)
    assert code == 0 and not [m for m in modules if m.split(".")[0] in ("torch", "fastai", "numpy", "hydra")]
