"""Shared test helpers: where the small real datasets are, `fxp` run in-process or as the installed command,
run folders.

Most tests run `fxp` in this process (`run_fxp`, the `fxp` fixture): `fxp.cli.main(argv)` as the installed command
calls it, with the working directory, environment and output of a subprocess, and torch, fastai and Hydra imported
once per worker instead of once per command. `run_installed` / `start_fxp` start the installed command in a
subprocess, for what only a process boundary shows (signals, what gets imported, the console script itself, Hydra
launchers that start processes).

Every run a test starts lands in its own `tmp_path` (the run's working directory), so tests never see each other's
`outputs/`. Runs get no network (a closed proxy port) and an empty torch hub cache, so a test can never download
data or weights, whatever the machine; torch uses one thread (tiny models; a second thread only contends on a
shared CPU).
"""
from __future__ import annotations

import ast
import csv
import functools
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
import warnings
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

# A suite started in the background (nohup, `&` in a script) inherits SIGINT ignored, and so would every fxp it
# starts; the Ctrl-C tests need the fxp a user's terminal starts. A Python handler here is reset to the default in
# the children.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported in this process (as in subprocesses)
THREADS = int(os.environ["OMP_NUM_THREADS"])
REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
NO_NET = "http://127.0.0.1:9"  # the discard port: nothing listens, so every download fails at once


EXPORTED = Path(__file__).parent / "fixtures" / "exported"  # ready runs of every kind, from earlier fxp versions


def copy_exported(dest: Path, *names: str) -> Path:
    "Copies of the ready runs `names` of tests/fixtures/exported under `dest` (commands write into a run's folder)."
    for name in names:
        shutil.copytree(EXPORTED / name, dest / name)
    return dest


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
    "The environment of a test's fxp run, in-process or not: no network, no cached weights, one torch thread."
    env = dict(os.environ)
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env[k] = NO_NET
    for k in ("no_proxy", "NO_PROXY", "COLUMNS", "PYTHONWARNINGS"):
        env.pop(k, None)
    env["TORCH_HOME"] = str(tmp / ".torch_home")  # no cached pretrained weights
    env["FXP_CACHE_DIR"] = str(tmp / ".fxp_cache")  # decoded images (fxp.imcache) stay in the test's folder
    env.setdefault("OMP_NUM_THREADS", "1")  # tiny test models: a second thread only contends on a shared CPU
    return env


@pytest.fixture(autouse=True)
def no_columns(monkeypatch):
    "Tables printed in this process are as wide as a pipe's (COLUMNS, as in subprocess_env, is the test's to set)."
    monkeypatch.delenv("COLUMNS", raising=False)


def run_fxp(*args: str, cwd: Path, timeout: float = 300, env: dict | None = None) -> Result:
    """`fxp ARGS...` in this process: `fxp.cli.main` with `cwd` as working directory, the environment a subprocess
    would get (`env`, else `subprocess_env(cwd)`), stdout and stderr captured, the exit code returned.

    What the command changes in the process is put back afterwards: cwd, environment, sys.argv, the logging
    handlers Hydra installs (train.log), the SIGTERM/SIGINT handlers, torch's thread count. Uncaught exceptions
    become exit code 1 with the traceback on stderr, as in a subprocess. Warnings are left to pytest (reported in
    its summary, not on the captured stderr), deprecations ignored as a fresh interpreter does; the real stderr of
    the command is checked through `run_installed`. `timeout` is the subprocess runner's (not enforced here).
    """
    from fxp.cli import main

    cwd = Path(cwd)
    out, err = io.StringIO(), io.StringIO()
    with (_process_state(cwd, env or subprocess_env(cwd)), warnings.catch_warnings(), redirect_stdout(out),
          redirect_stderr(err)):
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.filterwarnings("ignore", category=category)
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:
            code = exit_code(e.code)
        except Exception:  # what the interpreter would print for an uncaught exception
            traceback.print_exc()
            code = 1
    return Result(code, out.getvalue(), err.getvalue(), cwd)


def exit_code(code) -> int:
    "The exit status the interpreter gives `SystemExit(code)`."
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)
    return 1


@contextmanager
def _process_state(cwd: Path, env: dict):
    "Run with `cwd` and `env`; afterwards restore what a command may change in the process."
    saved_env, saved_cwd, argv, saved_argv = dict(os.environ), os.getcwd(), sys.argv, sys.argv[:]
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_signals = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    os.environ.clear()
    os.environ.update(env)
    _forget_proxies()
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        _forget_proxies()
        argv[:] = saved_argv  # the CLI rebinds sys.argv for Hydra: the original list, as it was
        sys.argv = argv
        for h in root.handlers[:]:  # Hydra's job logging: a FileHandler on this run's train.log
            if h not in saved_handlers:
                root.removeHandler(h)
                h.close()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        for s, handler in saved_signals.items():
            signal.signal(s, handler)
        if "torch" in sys.modules:  # trainer.num_threads sets torch's threads for the process
            sys.modules["torch"].set_num_threads(THREADS)
        if "hydra.core.hydra_config" in sys.modules:  # the last job's Hydra config is no config outside a job
            sys.modules["hydra.core.hydra_config"].HydraConfig.instance().cfg = None


def _forget_proxies() -> None:
    "urllib's shared opener reads the proxy variables once: drop it, so the next download sees the current ones."
    if "urllib.request" in sys.modules:
        sys.modules["urllib.request"].install_opener(None)


def run_installed(*args: str, cwd: Path, timeout: float = 300, env: dict | None = None) -> Result:
    """The installed `fxp ARGS...` in a subprocess, `cwd` as working directory: for what only a process shows
    (signals, imports, the console script, exit codes of the interpreter)."""
    cwd = Path(cwd)
    p = subprocess.run([*fxp_command(), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                       timeout=timeout, env=env or subprocess_env(cwd))
    return Result(p.returncode, p.stdout, p.stderr, cwd)


def start_fxp(*args: str, cwd: Path) -> subprocess.Popen:
    "Start `fxp ARGS...` without waiting (for tests of concurrent runs)."
    return subprocess.Popen([*fxp_command(), *map(str, args)], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=subprocess_env(Path(cwd)))


def forked(cwd: Path, *args: str, console: str = "console.txt", errors: str | None = None) -> int:
    """`fxp ARGS` (run_fxp) in a forked child of this process, in `cwd`, its output (stdout, then stderr, as it ends)
    in `cwd/console`, its stderr in `cwd/errors` instead if given; its pid. For a separate process where the
    interpreter's start is not what is tested: torch and fastai are imported already, so the child starts in a blink
    and pays no imports (POSIX only)."""
    warmed()
    pid = os.fork()
    if pid == 0:  # the child: run, then leave without any of pytest's teardown
        code = 1
        try:
            fd = os.open(Path(cwd) / console, os.O_WRONLY | os.O_CREAT)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            r = run_fxp(*args, cwd=cwd)
            os.write(fd, (r.stdout if errors else r.stdout + r.stderr).encode())
            if errors:
                (Path(cwd) / errors).write_text(r.stderr)
            code = r.returncode
        finally:
            os._exit(code)
    return pid


@functools.cache
def warmed() -> None:
    """One run of no epoch in this process, once: what a run imports as it goes (fastai, torchvision, Hydra's plugins,
    4.8 CPU-s) is then imported here, so the children `forked` starts pay none of it whichever test forks first."""
    with tempfile.TemporaryDirectory() as cwd:
        r = run_fxp("train", "trainer.epochs=0", "trainer.plots=false", cwd=Path(cwd))
    assert r.returncode == 0, r


@pytest.fixture
def fxp(tmp_path):
    "`fxp('train', 'trainer.epochs=1')` runs fxp (in-process) in this test's tmp_path."
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


class Figures:
    "The figures fxp.plots.save is given during a run, by file name (`seen`): what its plots drew, to read back."

    def __init__(self, mp: pytest.MonkeyPatch):
        from fxp import plots

        self.seen, original = {}, plots.save

        def save(fig, dest, *a, **kw):
            self.seen[Path(dest).name] = fig
            return original(fig, dest, *a, **kw)

        mp.setattr(plots, "save", save)  # image_grid's too: it lives in fxp.plots


@pytest.fixture(scope="session")
def digits_figures(tmp_path_factory) -> tuple[Path, dict]:
    "One completed 2-epoch digits run and the figures its plots drew (`Figures`), shared by the tests that read them."
    cwd = tmp_path_factory.mktemp("digits_run")
    with pytest.MonkeyPatch.context() as mp:
        figures = Figures(mp)
        r = run_fxp("train", "trainer.epochs=2", cwd=cwd)
    assert r.returncode == 0, r
    return newest_run(cwd), figures.seen


@pytest.fixture(scope="session")
def digits_run(digits_figures) -> Path:
    "One completed 2-epoch digits run, shared by the tests that only read a run folder."
    return digits_figures[0]


def fsdd_subset(dest: Path, per_class: int = 12, extra: tuple = ()) -> Path:
    """A labels.csv in `dest` listing `per_class` recordings of each digit (a third of them valid) of the shared fsdd,
    by absolute path (task.folder=/), and the `extra` (file, digit) rows."""
    import pandas as pd

    root = need_data("fsdd")
    df = pd.read_csv(root / "labels.csv").groupby("digit").head(per_class).copy()
    df["fname"] = [str(root / f) for f in df.fname]
    df["is_valid"] = [i % 3 == 0 for i in range(len(df))]
    rows = [{"fname": str(f), "digit": d, "speaker": "x", "tags": f"{d} x", "is_valid": False} for f, d in extra]
    dest.mkdir(parents=True, exist_ok=True)
    pd.concat([df, pd.DataFrame(rows)]).to_csv(dest / "labels.csv", index=False)
    return dest


AUDIO_TINY = ("task.folder=/", "trainer.bs=16", "task.duration=0.8")


@pytest.fixture(scope="session")
def fsdd_run(tmp_path_factory) -> Path:
    """One small fsdd run (12 clips of each digit, 12 epochs), shared by the tests that read an audio run. Its best
    accuracy was 0.625-0.725 at trainer.seed 42 and 1-5 (floor 0.5 in test_audio; 6 epochs: 0.35-0.6, under it at 4 of
    8 seeds)."""
    cwd = tmp_path_factory.mktemp("fsdd_run")
    data = fsdd_subset(cwd / "data")
    r = run_fxp("train", "task=fsdd", f"data.path={data}", "trainer.epochs=12", *AUDIO_TINY, cwd=cwd)
    assert r.returncode == 0, r
    return newest_run(cwd)


# and data.path= the fixture's 60 clips; no plots (its tests read numbers: they cost these jobs half their time)
AUDIO_SWEEP = ("task=fsdd", "trainer.epochs=2", "trainer.plots=false", *AUDIO_TINY)


@pytest.fixture(scope="session")
def fsdd_sweep(tmp_path_factory) -> tuple[Path, list[Path]]:
    """A 2-job sweep of 2-epoch fsdd runs on 60 clips (trainer.lr=3e-3,1e-2), logged to TensorBoard besides metrics.csv
    (no plots): its data folder and job folders, shared by the tests of sweeps, trackers and resume on audio runs."""
    cwd = tmp_path_factory.mktemp("fsdd_sweep")
    data = fsdd_subset(cwd / "data", per_class=6)
    r = run_fxp("train", "-m", *AUDIO_SWEEP, f"data.path={data}", "trainer.lr=3e-3,1e-2", "logger=[csv,tensorboard]",
                cwd=cwd)
    assert r.returncode == 0, r
    return data, sorted(cwd.glob("outputs/multirun/*/[0-9]"))


@pytest.fixture(scope="session")
def digits_sweep(tmp_path_factory) -> list[Path]:
    "The two job folders of one completed sweep, `fxp train -m trainer.seed=1,2 trainer.epochs=1`."
    cwd = tmp_path_factory.mktemp("digits_sweep")
    r = run_fxp("train", "-m", "trainer.seed=1,2", "trainer.epochs=1", cwd=cwd)
    assert r.returncode == 0, r
    return sorted(run_dirs(cwd))


def mnist_subset(dest: Path, n: int = 8, splits=("train", "valid")) -> Path:
    "A tiny class-folder copy of mnist_tiny (n images per class and split) under `dest`."
    src = need_data("mnist_tiny")
    for split in splits:
        for cls in ("3", "7"):
            (dest / split / cls).mkdir(parents=True)
            for f in sorted((src / split / cls).glob("*.png"))[:n]:
                shutil.copy(f, dest / split / cls / f.name)
    return dest


# The units that keep a worker busy longest: a module that shares a run (its tests go as one unit) or one test, with
# the seconds it takes: its tests' wall time summed (a per-test plugin, 2026-12-07, `bash .ci/run` on a fresh clone,
# idle cores), which counts the processes it waits on that are not its children (Ray's, Accelerate's ranks). xdist
# hands these out first, the costliest first, so that none starts last and keeps one worker busy while the other has
# finished; then the rest in xdist's order (the most tests first). Re-measure as they change.
COSTLIEST = {
    "tests/tasks/test_text.py": 59,
    "tests/test_sweep_resume.py": 41,
    "tests/test_fuzz.py": 38,
    "tests/test_reproduce.py::test_every_cpu_preset_reaches_its_published_value[fastbook-08-movielens-nn]": 25,
    "tests/test_distributed.py": 24,
    "tests/test_serve.py": 21,
    "tests/test_scaling.py::test_a_sweep_on_a_local_ray_runtime": 20,
    "tests/test_runs.py": 17,
    "tests/test_reproduce.py::test_every_cpu_preset_reaches_its_published_value[fastbook-08-movielens]": 17,
    "tests/tasks/test_gan.py": 16,
    "tests/test_resume.py": 15,
    "tests/test_exportbench.py": 14,
    "tests/tasks/test_image_data.py": 14,
    "tests/test_folds.py": 12,
    "tests/test_kill.py::test_killed_at_random_moments_loses_nothing_and_resumes_to_the_same_metrics": 11,
}


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """`-n N`: the tests of a module that trains a shared run (a module-scoped fixture) go to one worker as one unit,
    so the run is trained once, not on each worker; xdist hands out the COSTLIEST units first, then such units (the
    most tests first), then the other tests one by one."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedRunScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::")[0]
            return module if shares_a_run(config.rootpath / module) else nodeid

        def _assign_work_unit(self, node) -> None:
            "The costliest unit left goes next (the first of xdist's queue where none is listed)."
            unit = max(self.workqueue, key=lambda scope: COSTLIEST.get(scope, 0))
            self.workqueue.move_to_end(unit, last=False)
            super()._assign_work_unit(node)

    return SharedRunScheduling(config, log)


@functools.cache
def shares_a_run(path: Path) -> bool:
    """Whether a test module defines a module-scoped fixture (`@pytest.fixture(scope="module")`)."""
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError, ValueError):
        return False
    return any(isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "fixture"
               and any(k.arg == "scope" and getattr(k.value, "value", None) == "module" for k in node.keywords)
               for node in ast.walk(tree))


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


@contextmanager
def tmpfs(folder: Path, size: str):
    "A `size` tmpfs mounted at `folder` (root only): a file system that fills up; skips where it cannot be mounted."
    folder.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs (a full file system) needs root")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True,
                       text=True)
    if p.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)
