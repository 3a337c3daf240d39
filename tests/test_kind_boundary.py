"""The core and the commands ask a kind what it is (its protocol members, fxp.dispatch.Kind); they never guess it.
Read from the source (`ast`), so a new module that guesses fails here: outside fxp/tasks/, no module compares a task's
kind to a literal, reads a field that only a kind declares, or holds a name that a kind declares as its own (its
callbacks' carried state, its adversarial loss columns)."""
from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from fxp import dispatch, schema

FXP = Path(dispatch.__file__).resolve().parent
CORE = sorted(p for p in FXP.rglob("*.py") if "tasks" not in p.relative_to(FXP).parts)


def tasks() -> list[type]:
    return [dispatch.kind_module(k).Task for k in dispatch.kinds()]


def core_fields() -> set[str]:
    "The task keys fxp.schema declares: TaskBase's, and those of the bases kinds mix in (Split, Listed, Images, ...)."
    bases = {c for t in tasks() for c in t.__mro__ if c.__module__ == schema.__name__ and dataclasses.is_dataclass(c)}
    return {f.name for c in bases for f in dataclasses.fields(c)}


def own_fields() -> set[str]:
    "The task keys that only a kind declares (its Task's fields beyond fxp.schema's)."
    return {f.name for t in tasks() for f in dataclasses.fields(t)} - core_fields()


def declared_names() -> set[str]:
    "The names kinds declare as their own: callbacks whose state resume carries, that state, adversarial columns."
    out = set()
    for k in dispatch.kinds():
        module = dispatch.kind_module(k)
        for cb, state in dispatch.declared(module, "CARRIED").items():
            out |= {cb, *state}
        out |= set(dispatch.declared(module, "ADVERSARIAL"))
    return out


def _const(node, values) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in values


def _is_str(node) -> bool:
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_is_str(e) for e in node.elts)
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


class Reader:
    "What one module does with a task node: `task`, `cfg.task`, `x['task']`, `x.get('task')`, names bound to them."

    def __init__(self, tree):
        self.names = {"task"}
        bound = [n for n in ast.walk(tree) if isinstance(n, ast.Assign) and len(n.targets) == 1
                 and isinstance(n.targets[0], ast.Name)]
        for _ in range(3):  # t = cfg.task; u = t
            self.names |= {n.targets[0].id for n in bound if self.task(n.value)}

    def task(self, n) -> bool:
        return (isinstance(n, ast.Name) and n.id in self.names or isinstance(n, ast.Attribute) and n.attr == "task"
                or self.keyed(n, {"task"}))

    def keyed(self, n, keys, of=None) -> bool:
        "`n` is `x[key]` or `x.get(key)` for a key of `keys` (and `x` is a task where `of`)."
        if isinstance(n, ast.Subscript) and _const(n.slice, keys):
            return of is None or of(n.value)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "get" and n.args:
            return _const(n.args[0], keys) and (of is None or of(n.func.value))
        return False

    def kind(self, n) -> bool:
        "A task's kind: `kind`, `cfg.task.kind`, `task['kind']`, `task.get('kind')`."
        return (isinstance(n, ast.Name) and n.id == "kind" or isinstance(n, ast.Attribute) and n.attr == "kind"
                and self.task(n.value) or self.keyed(n, {"kind"}, self.task))

    def field(self, n, fields) -> str | None:
        "The field of `fields` that `n` reads of a task: `task.x`, `task['x']`, `task.get('x')`, `getattr(task, 'x')`."
        if isinstance(n, ast.Attribute) and n.attr in fields and self.task(n.value):
            return n.attr
        if self.keyed(n, fields, self.task):
            return (n.slice if isinstance(n, ast.Subscript) else n.args[0]).value
        if (isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ("getattr", "hasattr")
                and len(n.args) > 1 and self.task(n.args[0]) and _const(n.args[1], fields)):
            return n.args[1].value
        if isinstance(n, ast.Compare) and _const(n.left, fields) and any(self.task(c) for c in n.comparators):
            return n.left.value  # "source" in task
        return None


def guesses(path: Path, fields: set[str], names: set[str]) -> list[str]:
    "Where the module at `path` guesses what a kind is, one line each."
    tree = ast.parse(path.read_text())
    read, out = Reader(tree), []
    where = f"{path.relative_to(FXP.parent)}:"
    for n in ast.walk(tree):
        if isinstance(n, ast.Compare) and any(read.kind(x) for x in (n.left, *n.comparators)) and any(
                _is_str(x) for x in (n.left, *n.comparators)):
            out.append(f"{where}{n.lineno} compares the task's kind to a literal")
        elif (field := read.field(n, fields)) is not None:
            out.append(f"{where}{n.lineno} reads task.{field}, a field only a kind declares")
        elif _const(n, names):
            out.append(f"{where}{n.lineno} names {n.value!r}, which a kind declares")
    return sorted(out, key=lambda line: int(line.split(":")[1].split()[0]))


def test_the_scan_sees_what_it_looks_for():
    "Each form of guessing is caught (so an empty result below means none is there, not a blind scan)."
    src = FXP / "_probe.py"
    code = ('def f(cfg, t, kind):\n    task = cfg.task\n    a = cfg.task.kind == "text"\n    b = kind in ("gan",)\n'
            '    c = task.source\n    d = cfg["task"].get("recipe")\n    e = getattr(cfg.task, "thresh")\n'
            '    g = "gen_loss"\n    h = t.source\n    i = cfg.trainer.clip\n    j = r["kind"] == "sweep"\n')
    try:
        src.write_text(code)
        found = guesses(src, own_fields(), declared_names())
    finally:
        src.unlink()
    assert [line.split(":")[1].split(" ", 1) for line in found] == [
        ["3", "compares the task's kind to a literal"], ["4", "compares the task's kind to a literal"],
        ["5", "reads task.source, a field only a kind declares"],
        ["6", "reads task.recipe, a field only a kind declares"],
        ["7", "reads task.thresh, a field only a kind declares"], ["8", "names 'gen_loss', which a kind declares"]]


def test_own_fields_are_the_kinds_not_the_schemas():
    own = own_fields()
    assert {"source", "recipe", "thresh", "lm_stages", "procs"} <= own
    assert not own & {"kind", "url", "metrics", "monitor", "valid_pct", "size", "aug", "fn_col", "label_smoothing"}


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(FXP)))
def test_the_core_asks_the_kind_and_never_guesses(path):
    assert guesses(path, own_fields(), declared_names()) == []
