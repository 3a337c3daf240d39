"""The documents stay true: ARCHITECTURE.md's module table names every module of the package (and none that is gone),
the links between the README, ARCHITECTURE.md and docs/ resolve (anchors too), and every `fxp ...` line of their code
blocks names a real command; a `fxp train`, `lr-find` or `show` line passes fxp's pre-check (composed and validated
in this process, nothing trained), or fails with the very error the page prints under it."""
from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from conftest import data_root
from fxp import apps, cli, config, precheck
from fxp.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = ROOT / "ARCHITECTURE.md"
PAGES = [ROOT / "README.md", ARCHITECTURE, *sorted((ROOT / "docs").glob("*.md"))]
FRONT_FLAGS = {"-h", "--help", "help", "-V", "--version", "-sc", "--shell-completion"}  # fxp.cli.route's own
HYDRA_APPS = {"train", "lr-find", "show"}  # the commands whose arguments are overrides (fxp.apps.hydra_command)
SHARED_DATA = ("../shared/data", "/work/shared/data")  # how the pages name the shared datasets
PLACEHOLDER = re.compile(r"\bDIR\b|<\w+>|^~|=~")  # a path the reader fills in: data.path=DIR, outputs/x/<run>
RUNS_FXP = re.compile(r"(\$ )?([A-Z_]+=\S* )*fxp( |$)")
READERS_FILES = ("data.exclude", "data.relabel")  # files the reader makes in a step before (fxp clean's list, marked)
SHELL_ENDS = {"|", "||", "&", "&&", ";", ">", ">>"}


def name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


# --- the module table --------------------------------------------------------------------------------------------

def package_modules() -> set[str]:
    found = {p for top in ("fxp", "hydra_plugins") for p in (ROOT / top).rglob("*.py")} | {ROOT / "conf/__init__.py"}
    return {p.relative_to(ROOT).as_posix() for p in found}


def table_modules() -> set[str]:
    "The modules in the first column of ARCHITECTURE.md's tables."
    rows = [ln.split("|")[1] for ln in ARCHITECTURE.read_text().splitlines() if ln.startswith("| `")]
    return {m for cell in rows for m in re.findall(r"`([\w/]+\.py)`", cell)}


def test_architecture_names_every_module():
    missing = sorted(package_modules() - table_modules())
    assert not missing, f"ARCHITECTURE.md's module table has no row for {', '.join(missing)}: add | `PATH` | its job |"


def test_architecture_names_no_module_that_is_gone():
    gone = sorted(table_modules() - package_modules())
    assert not gone, f"ARCHITECTURE.md's module table names {', '.join(gone)}, which no longer exist: update the rows"


# --- links ---------------------------------------------------------------------------------------------------------

def prose(page: Path) -> str:
    "The page without its fenced code blocks."
    return re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)


def anchors(page: Path) -> set[str]:
    "GitHub's ids of the page's headings: lower case, punctuation dropped, spaces as hyphens."
    titles = re.findall(r"^#+ (.+)$", prose(page), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", t.strip().lower()).replace(" ", "-") for t in titles}


def links(page: Path) -> list[str]:
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", prose(page)) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_links_resolve(page):
    broken = []
    for target in links(page):
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            broken.append(f"{target} (no file {dest})")
        elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
            broken.append(f"{target} (no heading #{anchor} in {name(dest)})")
    assert not broken, f"{name(page)} links to what is not there: {'; '.join(broken)}"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in links(ROOT / "README.md")}
    orphans = [name(p) for p in PAGES[2:] if p.resolve() not in linked]
    assert not orphans, f"README.md links to no {', '.join(orphans)}"


# --- commands ------------------------------------------------------------------------------------------------------

def blocks(page: Path) -> list[list[tuple[int, str]]]:
    """The page's fenced code blocks: (line number, line) each, a line ending in `\\` joined with the next. In a
    `text` block (a terminal's screen) the commands are the lines after a `$ ` prompt, the rest their output."""
    found, block = [], None
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if line.startswith("```"):
            block = [] if block is None else found.append(block)
            screen = line == "```text"
        elif block is not None and screen and not line.startswith("$ "):
            block.append((number, "# " + line))  # output: kept for the error a command prints
        elif block is not None:
            if block and block[-1][1].endswith("\\"):
                block[-1] = (block[-1][0], block[-1][1][:-1] + line.strip())
            else:
                block.append((number, line))
    return found


def fxp_args(line: str) -> list[str] | None:
    "The arguments of a line that runs fxp (`$ ` prompt, environment assignments and what a shell adds taken off)."
    if not RUNS_FXP.match(line):
        return None
    words = shlex.split(re.split(r"\s#", line.removeprefix("$ "), maxsplit=1)[0])
    while words[0] != "fxp":
        words.pop(0)
    ends = [i for i, w in enumerate(words) if w in SHELL_ENDS]
    return words[1:ends[0] if ends else None]


def command_lines() -> list:
    "(page:line, arguments, the error the page prints under it or None) for every fxp line of a code block."
    found = []
    for page in PAGES:
        for block in blocks(page):
            for i, (number, line) in enumerate(block):
                args = fxp_args(line)
                if args is not None:
                    after = block[i + 1][1] if i + 1 < len(block) else ""
                    error = after.removeprefix("# fxp: error: ") if after.startswith("# fxp: error: ") else None
                    found.append(pytest.param(args, error, id=f"{name(page)}:{number}"))
    return found


COMMAND_LINES = command_lines()


def test_the_pages_have_commands_to_check():
    assert len(COMMAND_LINES) > 50


@pytest.mark.parametrize("args, error", COMMAND_LINES)
def test_the_line_names_a_real_command(args, error):
    assert args and (args[0] in cli.COMMANDS or args[0] in FRONT_FLAGS), \
        f"fxp {' '.join(args)}: {args[:1]} is no command of fxp ({', '.join(cli.COMMANDS)})"


def local(args: list[str]) -> list[str]:
    "`args` with the shared datasets where this machine has them; skipped where the line needs what is not here."
    for shared in SHARED_DATA:
        args = [a.replace(shared, str(data_root())) for a in args]
    placeholders = [a for a in args if PLACEHOLDER.search(a)]
    if placeholders:
        pytest.skip(f"the line needs the reader's own files: {' '.join(placeholders)}")
    for a in args:
        key, _, value = a.partition("=")
        if key == "data.path" and not Path(value).exists():
            pytest.skip(f"data set {value} is not here (set FXP_DATA=/path/to/shared/data)")
        if key in READERS_FILES:
            pytest.skip(f"{a} is a file the reader marks by hand")
    return args


def absent_package(error: str) -> str | None:
    "The package whose absence the documented error shows, where this machine has it."
    package = re.search(r"needs the (\w+) package", error or "")
    return package and importlib.util.find_spec(package[1]) and package[1]


@pytest.mark.slow  # about 0.2 s a line on a busy CPU (a sweep's every job is composed), 20 s in all
@pytest.mark.parametrize("args, error", [p for p in COMMAND_LINES if p.values[0][:1] and p.values[0][0] in HYDRA_APPS])
def test_the_overrides_pass_the_precheck(args, error, tmp_path, monkeypatch):
    """As `fxp train` checks them before Hydra starts; a documented error that names a run folder comes from the run
    itself (after the pre-check), any other must be the pre-check's own words."""
    args = local(args[1:])
    if absent_package(error):
        pytest.skip(f"the page shows a machine without the {absent_package(error)} package; this one has it")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FXP_DATA", str(data_root()))  # the reader has the shared data sets (task.local finds them)
    config.register()
    if error is None or "(run folder" in error:
        precheck.precheck([apps._no_option(a) for a in args])
        return
    with pytest.raises(ConfigError) as e:
        precheck.precheck([apps._no_option(a) for a in args])
    assert str(e.value).startswith(error.split("...")[0].rstrip()), f"the page prints: {error}"
