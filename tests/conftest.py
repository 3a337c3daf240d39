"""Shared test helpers: where the small real datasets are, the installed `fxp` in a subprocess, run folders.

Every run a test starts lands in its own `tmp_path` (the subprocess's working directory), so tests never
see each other's `outputs/`. Subprocesses get no network (a closed proxy port) and an empty torch hub cache,
so a test can never download data or weights, whatever the machine.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
NO_NET = "http://127.0.0.1:9"  # the discard port: nothing listens, so every download fails at once


def data_root() -> Path:
    "`FXP_DATA` if set, else `<repo>/../shared/data`."
    return Path(os.environ.get("FXP_DATA") or DEFAULT_DATA).expanduser().resolve()


def need_data(name: str) -> Path:
    "The shared data set `name`, or skip the test saying where it was looked for."
    path = data_root() / name
    if not path.is_dir():
        pytest.skip(f"data set {name!r} not found at {path} (set FXP_DATA=/path/to/shared/data)")
    return path


@pytest.fixture(scope="session")
def data():
    "`data('mnist_tiny')` → its path, or the test is skipped with the reason."
    return need_data


def fxp_command() -> list[str]:
    "The installed `fxp` next to this interpreter (or on PATH), else `python -m fxp`."
    exe = shutil.which("fxp", path=str(Path(sys.executable).parent)) or shutil.which("fxp")
    return [exe] if exe else [sys.executable, "-m", "fxp"]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    cwd: Path

    @property
    def err_lines(self) -> list[str]:
        return [ln for ln in self.stderr.splitlines() if ln.strip()]

    def __str__(self) -> str:  # shown by pytest when an assertion about the result fails
        return f"rc={self.returncode}\n--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-3000:]}"


def subprocess_env(tmp: Path) -> dict:
    env = dict(os.environ)
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env[k] = NO_NET
    for k in ("no_proxy", "NO_PROXY", "COLUMNS", "PYTHONWARNINGS"):
        env.pop(k, None)
    env["TORCH_HOME"] = str(tmp / ".torch_home")  # no cached pretrained weights
    env.setdefault("OMP_NUM_THREADS", "1")  # tiny test models: a second thread only contends on a shared CPU
    return env


def run_fxp(*args: str, cwd: Path, timeout: float = 300, env: dict | None = None) -> Result:
    "Run the installed `fxp ARGS...` with `cwd` as working directory (run folders go to cwd/outputs)."
    cwd = Path(cwd)
    p = subprocess.run([*fxp_command(), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                       timeout=timeout, env=env or subprocess_env(cwd))
    return Result(p.returncode, p.stdout, p.stderr, cwd)


def start_fxp(*args: str, cwd: Path) -> subprocess.Popen:
    "Start `fxp ARGS...` without waiting (for tests of concurrent runs)."
    return subprocess.Popen([*fxp_command(), *map(str, args)], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=subprocess_env(Path(cwd)))


@pytest.fixture
def fxp(tmp_path):
    "`fxp('train', 'trainer.epochs=1')` runs the installed command in this test's tmp_path."
    def run(*args: str, cwd: Path | None = None, timeout: float = 300) -> Result:
        return run_fxp(*args, cwd=cwd or tmp_path, timeout=timeout)
    return run


def run_dirs(root: Path) -> list[Path]:
    "Every run folder (one with a summary.json) under root/outputs, oldest first."
    found = [p.parent for p in (Path(root) / "outputs").rglob("summary.json")]
    return sorted(found, key=lambda p: (p / "config.yaml").stat().st_mtime)


def newest_run(root: Path) -> Path:
    dirs = run_dirs(root)
    assert dirs, f"no run folder under {root}/outputs"
    return dirs[-1]


def summary(run: Path) -> dict:
    return json.loads((Path(run) / "summary.json").read_text())


def metrics_rows(run: Path) -> list[dict]:
    with open(Path(run) / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def assert_one_line_error(r: Result, *mentions: str, code: int = 2) -> str:
    "Bad input: exit `code`, exactly one line on stderr, no traceback, naming each of `mentions`."
    assert r.returncode == code, r
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r
    assert len(r.err_lines) == 1, r
    line = r.err_lines[0]
    assert line.startswith("fxp: error:"), r
    for m in mentions:
        assert m in line, f"{m!r} not in the error line: {line}"
    return line


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> Path:
    "One completed 2-epoch digits run, shared by the tests that only read a run folder."
    cwd = tmp_path_factory.mktemp("digits_run")
    r = run_fxp("train", "trainer.epochs=2", cwd=cwd)
    assert r.returncode == 0, r
    return newest_run(cwd)


def mnist_subset(dest: Path, n: int = 8, splits=("train", "valid")) -> Path:
    "A tiny class-folder copy of mnist_tiny (n images per class and split) under `dest`."
    src = need_data("mnist_tiny")
    for split in splits:
        for cls in ("3", "7"):
            (dest / split / cls).mkdir(parents=True)
            for f in sorted((src / split / cls).glob("*.png"))[:n]:
                shutil.copy(f, dest / split / cls / f.name)
    return dest


def pytest_collection_modifyitems(config, items):
    "Tests marked `gpu` are skipped where torch sees no CUDA device."
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if not has_cuda:
        for item in gpu_items:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)"))
