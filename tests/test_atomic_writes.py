"""Every file fxp writes is written whole (issue 22 item 6): through `fxp.writer.write_atomic` (a temporary file renamed
into place) or `write_pickle`, so a kill or a full disk leaves the old file or the new one, never half of one.
A scan of fxp/'s source fails on a new in-place write; the few exceptions are listed with their reasons."""
import ast
import builtins
import errno
import json
import os
from pathlib import Path

import pytest

from conftest import copy_exported
from fxp import sweeps
from test_runlist import write_run

PACKAGE = Path(sweeps.__file__).parent
WHOLE = {"write_atomic", "write_pickle"}  # a function passed to these writes a temporary file, renamed into place
ATTR_WRITES = {"write_text", "write_bytes", "savefig", "save", "savez", "savez_compressed", "save_encoder", "dump",
               "export"}  # x.<name>(...) writes a file: Path, matplotlib, torch/numpy/PIL, json/pickle, fastai, onnx
NAME_WRITES = {"save_pickle"}  # fastcore's
TABLE_WRITES = {"to_csv", "to_json", "to_parquet", "to_pickle", "to_feather", "to_excel"}  # with a path: a write
SHUTIL_WRITES = {"copy", "copy2", "copyfile", "copytree", "move"}
OS_WRITE_FLAGS = {"O_WRONLY", "O_RDWR", "O_CREAT", "O_APPEND", "O_TRUNC"}

# (module, function, call) -> why it may write in place
ALLOWED = {
    ("writer.py", "write_atomic", "open"): "the writer itself: its temporary file",
    ("writer.py", "Run._claim", "write_text"): "config.yaml's temporary file, hard-linked into place (whole, and only "
                                             "if no other process claimed the folder first)",
    ("writer.py", "Run._claim", "open"): "the claim without hard links: config.yaml created exclusively ('x')",
    ("writer.py", "Run.write_summary", "open"): "a full disk, where write_atomic cannot: over the old summary, in its "
                                              "own blocks",
    ("writer.py", "Run.__exit__", "open"): "train.log: a log grows by appends",
    ("writer.py", "locked", "open"): "a lock file, opened to hold the lock; nothing written",
    ("distributed.py", "failure", "open"): "train.log: a rank's traceback appended",
    ("rank.py", "silent", "open"): "/dev/null: the console of a rank after the first",
    ("sweeps.py", "claim", "open"): "the sweep's claim: an empty file created exclusively ('x')",
    ("cli.py", "exit_code", "open"): "/dev/null, in place of a closed pipe",
    ("tasks/gan.py", "Crappifier.__call__", "save"): "its own temporary file, named per process (parallel jobs "
                                                     "share the cache; write_atomic's NAME.tmp is one per file), "
                                                     "renamed into place",
    ("imcache.py", "_write", "write_text"): "inside build's temporary folder, renamed into place",
    ("imcache.py", "_allocated", "open"): "inside build's temporary folder, renamed into place",
    ("imcache.py", "_allocated", "open_memmap"): "inside build's temporary folder, renamed into place",
    ("exporting.py", "write_model", "write_text"): "inside folder_whole's temporary folder, renamed into place",
    ("exporting.py", "to_onnx", "export"): "inside folder_whole's temporary folder, renamed into place",
    ("exporting.py", "to_onnx", "save"): "inside folder_whole's temporary folder, renamed into place",
    ("exporting.py", "to_torchscript", "save"): "inside folder_whole's temporary folder, renamed into place",
    ("reports.py", "figure_uri", "savefig"): "into memory (BytesIO)",
    ("preflight.py", "exported", "export"): "fxp.train.export: write_pickle (a temporary file, renamed into place)",
    ("commands/serve.py", "mask_png", "save"): "into memory (BytesIO)",
}


def called(node: ast.Call) -> str | None:
    f = node.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None


def receiver(node: ast.Call) -> str | None:
    f = node.func
    return f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else None


def opens_to_write(node: ast.Call) -> bool:
    "open(path, mode) or x.open(path, mode) with a mode that writes; os.open with a flag that writes."
    if receiver(node) == "os":
        return any(isinstance(n, ast.Attribute) and n.attr in OS_WRITE_FLAGS for a in node.args for n in ast.walk(a))
    mode = next((k.value for k in node.keywords if k.arg == "mode"), node.args[1] if len(node.args) > 1 else None)
    return isinstance(mode, ast.Constant) and isinstance(mode.value, str) and bool(set(mode.value) & set("wax+"))


def writes(node: ast.Call) -> bool:
    name, attr = called(node), isinstance(node.func, ast.Attribute)
    if name in ("open", "open_memmap"):
        return opens_to_write(node)
    if name in TABLE_WRITES:
        return bool(node.args) or any(k.arg in ("path_or_buf", "path") for k in node.keywords)  # else: a string
    if name in SHUTIL_WRITES:
        return receiver(node) == "shutil"
    return name in (ATTR_WRITES if attr else NAME_WRITES)


class Writes(ast.NodeVisitor):
    "The calls of a module that write a file in place: (function, call, line)."

    def __init__(self):
        self.scope, self.found = [], []

    def visit_FunctionDef(self, node):
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_AsyncFunctionDef = visit_ClassDef = visit_FunctionDef

    def visit_Call(self, node):
        if called(node) in WHOLE:  # what a lambda given to the writer writes is its temporary file
            for child in [node.func, *node.args, *(k.value for k in node.keywords)]:
                if not isinstance(child, ast.Lambda):
                    self.visit(child)
            return
        if writes(node):
            self.found.append((".".join(self.scope) or "<module>", called(node), node.lineno))
        self.generic_visit(node)


def in_place_writes(source: str) -> list[tuple[str, str, int]]:
    w = Writes()
    w.visit(ast.parse(source))
    return w.found


def package_writes() -> dict[tuple[str, str, str], list[int]]:
    "Every in-place write in fxp/: (module, function, call) -> its lines."
    found = {}
    for f in sorted(PACKAGE.rglob("*.py")):
        for func, call, line in in_place_writes(f.read_text()):
            found.setdefault((f.relative_to(PACKAGE).as_posix(), func, call), []).append(line)
    return found


def test_fxp_writes_no_file_in_place():
    offenders = [f"fxp/{m}:{lines[0]} {func}: {call}(...)" for (m, func, call), lines in package_writes().items()
                 if (m, func, call) not in ALLOWED]
    assert not offenders, ("written in place (a kill or a full disk leaves half a file): route these through "
                           "fxp.writer.write_atomic (or write_pickle), or add them to ALLOWED with the reason:\n"
                           + "\n".join(offenders))


def test_every_allowed_write_is_still_there():
    "A stale entry would let a new write in its place through unseen."
    assert not set(ALLOWED) - set(package_writes())


@pytest.mark.parametrize("source, found", [
    ("def f(p):\n    p.write_text('x')", [("f", "write_text", 2)]),
    ("class A:\n    def g(self, p):\n        with open(p, 'a') as f:\n            f.write('x')", [("A.g", "open", 3)]),
    ("def f(df, p):\n    df.to_csv(p, index=False)", [("f", "to_csv", 2)]),
    ("def f(m, p):\n    torch.save(m, p)", [("f", "save", 2)]),
    ("def f(p):\n    os.open(p, os.O_WRONLY | os.O_CREAT)", [("f", "open", 2)]),
    ("def f(p):\n    shutil.copy(p, 'x')", [("f", "copy", 2)]),
    # what is not a write in place: reads, text returned, the writer's temporary file
    ("def f(p):\n    open(p, 'rb'); Image.open(p); os.open(p, os.O_RDONLY)", []),
    ("def f(df):\n    return df.to_csv(index=False)", []),
    ("def f(m, p):\n    write_atomic(p, lambda tmp: torch.save(m, tmp))", []),
])
def test_the_scan_finds_in_place_writes(source, found):
    assert in_place_writes(source) == found


# --- behaviour: a write that fails midway leaves the previous file ------------------------------------------------

@pytest.fixture
def torn_writes(monkeypatch):
    """`torn_writes(folder, name)`: a file of `folder` opened for writing as `name` (or its temporary file, `name`.tmp):
    its first write puts half its data on disk, then fails as a full disk does."""
    real = builtins.open

    class Torn:
        def __init__(self, f, name):
            self.f, self.name = f, name

        def write(self, data):
            self.f.write(data[:len(data) // 2])
            self.f.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.name)

        def __getattr__(self, key):
            return getattr(self.f, key)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def tear(folder: Path, name: str):
        def opener(file, mode="r", *args, **kwargs):
            f = real(file, mode, *args, **kwargs)
            path = Path(file) if isinstance(file, (str, os.PathLike)) else None
            torn = path is not None and path.parent == folder and path.name.startswith(name) and set(mode) & set("wax+")
            return Torn(f, str(file)) if torn else f

        monkeypatch.setattr(builtins, "open", opener)

    return tear


@pytest.mark.parametrize("torn", ["sweep.csv", "best.json"])
def test_sweep_files_survive_a_write_that_fails_midway(tmp_path, torn_writes, torn):
    sweep = tmp_path / "sweep"
    write_run(sweep / "0", accuracy=(0.80, 0.90), overrides=["trainer.lr=0.01"])
    sweeps.update(sweep)
    before = {name: (sweep / name).read_bytes() for name in ("sweep.csv", "best.json")}
    assert json.loads(before["best.json"])["job"] == "0"
    write_run(sweep / "1", accuracy=(0.95, 0.97), overrides=["trainer.lr=0.1"])  # a new best: both files change
    torn_writes(sweep, torn)
    with pytest.raises(OSError) as e:
        sweeps.update(sweep)
    assert e.value.errno == errno.ENOSPC
    assert (sweep / torn).read_bytes() == before[torn]  # the previous file, whole
    assert not list(sweep.glob("*.tmp"))  # the half-written temporary file is gone too


def test_predictions_are_never_half_written(tmp_path, monkeypatch, capsys, torn_writes):
    "`fxp predict` on a full disk: one line, and no torn <name>_predictions.csv for a reader to take as the output."
    from fxp.cli import main

    run = copy_exported(tmp_path, "tabular") / "tabular"
    monkeypatch.chdir(tmp_path)  # predictions/ lands here
    out = (tmp_path / "predictions").resolve()
    torn_writes(out, "rows_predictions")
    assert main(["predict", str(run), str(run / "rows.csv")]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert not list(out.iterdir())
