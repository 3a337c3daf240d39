"""A light core: `fxp --version` and `fxp tasks` load neither torch, fastai nor Hydra (so no schema or preset is
registered), and fxp's own modules import each other without cycles, at module level or inside functions; the core
never imports a command, nor a command another."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"fxp": REPO / "fxp", "fxp.conf": REPO / "conf", "fxp.experiments": REPO / "experiments"}
HEAVY = ("torch", "fastai", "hydra", "omegaconf", "matplotlib", "rich", "fxp.conf")

LOADED_AFTER = """
import json, sys
import fxp.cli
try:
    code = fxp.cli.main({argv!r})
except SystemExit as e:
    code = e.code
print("RESULT", json.dumps({{"code": code, "modules": sorted(sys.modules)}}), file=sys.stderr)
"""


def loaded_after(argv: list[str]) -> tuple[int, list[str]]:
    "Run `fxp.cli.main(argv)` in a fresh interpreter: its exit code and every module loaded by then."
    p = subprocess.run([sys.executable, "-c", LOADED_AFTER.format(argv=argv)], capture_output=True, text=True,
                       timeout=60)
    line = next((ln for ln in p.stderr.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, p.stderr
    res = json.loads(line[len("RESULT "):])
    return res["code"], res["modules"]


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["tasks"]])
def test_version_help_and_tasks_load_nothing_heavy(argv):
    code, modules = loaded_after(argv)
    assert code == 0
    heavy = sorted({m.split(".")[0] if m.split(".")[0] != "fxp" else m for m in modules
                    if any(m == h or m.startswith(h + ".") for h in HEAVY)})
    assert heavy == [], f"fxp {' '.join(argv)} loaded {heavy}"


def test_version_loads_no_fxp_module_beyond_the_front():
    _, modules = loaded_after(["--version"])
    assert sorted(m for m in modules if m.split(".")[0] == "fxp") == ["fxp", "fxp.cli", "fxp.errors"]


# --- fxp's import graph ------------------------------------------------------------------------------------------


def modules() -> dict[str, Path]:
    "Every fxp module by dotted name (the config tree and the presets are packages of fxp too)."
    out = {}
    for pkg, root in PACKAGES.items():
        for f in root.rglob("*.py"):
            parts = (pkg, *f.relative_to(root).with_suffix("").parts)
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def by_name(known: set[str]) -> dict[str, set[str]]:
    "Imports by a computed name, which `ast` does not see: the CLI's commands, dispatch's kinds."
    from fxp.cli import COMMANDS

    return {"fxp.cli": {target.partition(":")[0] for target in COMMANDS.values()},
            "fxp.dispatch": {m for m in known if m.startswith("fxp.tasks.")}}


def imports(path: Path, name: str, known: set[str]) -> tuple[set[str], set[str]]:
    "The fxp modules a file imports: (at module level, i.e. when it is imported; inside functions, when they run)."
    top, inner = set(), set()
    is_pkg = path.name == "__init__.py"

    def targets(node) -> set[str]:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            base = node.module or ""
            if node.level:  # relative: from the module's package
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        out = set()
        for n in names:  # importing a.b.c imports a and a.b first
            parts = n.split(".")
            out |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & known
        return out

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                (inner if in_function else top).update(targets(child) - {name})
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text()), False)
    return top, inner


def graphs() -> tuple[dict, dict]:
    "fxp's import graph at module level, and with the imports inside functions added."
    mods = modules()
    dynamic = by_name(set(mods))
    top, full = {}, {}
    for name, path in mods.items():
        t, i = imports(path, name, set(mods))
        top[name], full[name] = t, t | i | dynamic.get(name, set())
    return top, full


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    "The strongly connected components of more than one module (Tarjan), each sorted."
    index, low, stack, on, out = {}, {}, [], set(), []

    def connect(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def test_the_graph_sees_fxps_modules_and_their_imports():
    top, full = graphs()
    assert {"fxp.cli", "fxp.apps", "fxp.config", "fxp.runs", "fxp.commands.runs", "fxp.conf"} <= set(top)
    assert "fxp.runs" in top["fxp.commands.runs"] and "fxp.config" in top["fxp.conf"]
    assert "fxp.apps" not in top["fxp.commands.reproduce"] and "fxp.apps" in full["fxp.commands.reproduce"]


def test_no_import_cycle_at_module_level():
    top, _ = graphs()
    assert cycles(top) == []


def test_no_import_cycle_counting_imports_inside_functions():
    _, full = graphs()
    assert cycles(full) == []


def test_the_front_and_the_run_folder_modules_import_no_command():
    """cli.py imports commands only by name when one runs; fxp.runs (the format and readers) and fxp.writer import no
    command, report or app, and the readers not the writer."""
    top, full = graphs()
    assert top["fxp.cli"] <= {"fxp", "fxp.errors"}
    assert full["fxp.runs"] <= {"fxp", "fxp.errors"}
    assert full["fxp.writer"] <= {"fxp", "fxp.errors", "fxp.runs"}


# --- which way the arrows point: commands build on the core, never the other way, and never on each other -------------


def written_imports() -> dict[str, set[str]]:
    """Each fxp module's imports as its source writes them, at module level or inside a function, lazily or not (not
    the CLI's imports by a command's name: routing to a command is the front's job)."""
    mods = modules()
    return {name: set().union(*imports(path, name, set(mods))) for name, path in mods.items()}


def is_command(module: str) -> bool:
    "A command's module (fxp.commands.val); fxp.commands itself is their package (Parser, saved_run_arguments)."
    return module.startswith("fxp.commands.")


def test_the_core_never_imports_a_command():
    "What two commands share lives in the core (fxp.saved, fxp.predicting, fxp.console, ...), which commands import."
    found = {m: sorted(i for i in imports if i == "fxp.commands" or is_command(i))
             for m, imports in written_imports().items() if m != "fxp.commands" and not is_command(m)}
    assert {m: i for m, i in found.items() if i} == {}


def test_a_command_imports_no_other_command():
    found = {m: sorted(i for i in imports if is_command(i) and i != m)
             for m, imports in written_imports().items() if is_command(m)}
    assert {m: i for m, i in found.items() if i} == {}


def test_the_arrow_rules_see_lazy_imports(tmp_path):
    "A command imported inside a function counts: the scan reads function bodies, not only the module's top."
    f = tmp_path / "lazy.py"
    f.write_text("def f():\n    from fxp.commands.predict import main\n")
    top, inner = imports(f, "fxp.lazy", set(modules()))
    assert "fxp.commands.predict" in inner and "fxp.commands.predict" not in top
