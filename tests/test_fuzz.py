"""No input gives a traceback (issue 11 item 5): property-based tests (hypothesis) feed `fxp train ... --cfg job`
override lists drawn from the real key space (the composed config of `fxp train --cfg job`, every kind's task
schema, the groups and their choices) and its neighbours (typos, wrong types, empty values, unicode, huge and
negative numbers, lists where scalars belong, keys that do not exist, `+key=`, `++key=`, `~key`, `${nope}`,
`${oc.env:X}`, malformed syntax); and the arguments of `predict`, `runs`, `diagnose`, `reproduce` (and `resume`
where it exists) their paths, flags and junk. Each answer: exit 0 or 2, no "Traceback", an error in one line.

In-process (conftest.run_fxp), derandomized with no example database, so CI sees the same examples every time:
FXP_FUZZ_EXAMPLES=N sets the examples per test (CI: 250 + 250 for train, 150 for the other commands);
FXP_FUZZ_REPORT=FILE appends each test's counts (examples, exit codes) as a JSON line.
"""
from __future__ import annotations

import collections
import functools
import json
import os
import shutil
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from omegaconf import OmegaConf

from conftest import run_fxp
from fxp import config, dispatch, precheck
from fxp.cli import COMMANDS

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("FXP_FUZZ_EXAMPLES", "0"))


def fuzz_settings(ci_examples: int):
    return settings(max_examples=EXAMPLES or ci_examples, derandomize=True, database=None, deadline=None,
                    suppress_health_check=list(HealthCheck))


# --- the key space -------------------------------------------------------------------------------------------------


def flat(node, prefix: str = "") -> list[str]:
    "Every key path of a plain container (list items by index)."
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    out = []
    for k, v in items:
        key = f"{prefix}{k}"
        out.append(key)
        out += flat(v, f"{key}.")
    return out


def schema_keys(schema, prefix: str) -> list[str]:
    "Every field of a dataclass schema, nested ones included."
    import typing

    hints, out = typing.get_type_hints(schema), []
    for f in fields(schema):
        out.append(f"{prefix}{f.name}")
        inner = [a for a in (typing.get_args(hints[f.name]) or (hints[f.name],)) if is_dataclass(a)]
        if inner:
            out += schema_keys(inner[0], f"{prefix}{f.name}.")
    return out


def flat_values(node, prefix: str = ""):
    "(key, value) for each leaf of a plain container."
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        if isinstance(v, (dict, list)) and v:
            yield from flat_values(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


@functools.cache  # composed on first use: collecting the suite (this module deselected too) composes nothing
def key_space() -> list[str]:
    keys = flat(OmegaConf.to_container(precheck.compose([])))
    for kind in dispatch.kinds():
        keys += schema_keys(dispatch.kind_module(kind).Task, "task.")
    keys += ["hydra.run.dir", "hydra.sweep.dir", "hydra.job.chdir", "hydra.verbose", "hydra.job.name"]
    return sorted(set(keys))


GROUPS = {g: list(config.choices(g)) for g in config.GROUPS}

VALUES = ["", "null", "abc", "true", "false", "0", "1", "-1", "2", "0.5", "1e-3", "-1e9", "1e308", "1e999", "nan",
          "inf", "-inf", "99999999999999999999", "[]", "[1]", "[1,2]", "[0,0]", "[1,2,3]", "[a,b]", "{}", "{a:1}",
          "[[1]]", "[{}]", "[{policy:fit}]", "é✓ünï", "😀", "${nope}", "${oc.env:NOPE}", "${oc.env:HOME}",
          "${trainer.bs}", "${oc.env:NOPE,3}", "'quoted'", '"x"', "[1,", "{a", "a,b", "1,2", "x=y", "'", "\\",
          "range(1,3)", "choice(a,b)", "interval(0,1)", "glob(*)", " ", "\t", "a\nb", "/nonexistent", ".", "..",
          "fit", "fine_tune", "find", "cuda", "bf16", "squish", "max", "valid_loss", "accuracy", "${now:%Y}",
          "${oc.decode:'3'}", "'2'", "yes", "on"]

values = st.one_of(st.sampled_from(VALUES), st.integers(-10**20, 10**20).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr),
                   st.text(st.characters(blacklist_characters="\x00"), max_size=8))


def typo(key: str, i: int, c: str) -> str:
    "One edit of `key`: a character dropped, doubled or replaced."
    i %= len(key)
    return [key[:i] + key[i + 1:], key[:i] + key[i] + key[i:], key[:i] + c + key[i + 1:]][i % 3] or key


known_keys = st.deferred(lambda: st.sampled_from(key_space()))
keys = st.one_of(
    known_keys,
    known_keys.map(lambda k: f"{k}.foo"),
    st.builds(typo, known_keys, st.integers(0, 50), st.sampled_from("x._0é")),
    st.text(st.characters(blacklist_characters="\x00"), max_size=10),
)

def hydra_value(v) -> str:
    "A value as an override writes it."
    if isinstance(v, list):
        return "[" + ",".join(map(hydra_value, v)) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{hydra_value(x)}" for k, x in v.items()) + "}"
    return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def neighbours(v) -> list:
    "The value itself and values near it: what a user would plausibly type."
    if isinstance(v, bool) or v is None:
        return [v, not v, 2, "${now:%Y}"] if isinstance(v, bool) else [v, 1]
    if isinstance(v, (int, float)):
        return [v, v * 2, v / 2, type(v)(0), -v, v + 1, "${now:%Y}", 1e308]
    return [v]


@functools.cache
def defaults() -> dict:
    "Each leaf of the default config with its value."
    return dict(flat_values(OmegaConf.to_container(precheck.compose([]))))


plain_overrides = st.deferred(lambda: st.sampled_from(sorted(defaults())).flatmap(
    lambda k: st.sampled_from(neighbours(defaults()[k])).map(lambda v: f"{k}={hydra_value(v)}")))
key_overrides = st.one_of(
    plain_overrides,
    st.builds(lambda p, k, v: f"{p}{k}={v}", st.sampled_from(["", "", "", "+", "++"]), keys, values))
group_overrides = st.one_of(
    st.builds(lambda g, c: f"{g}={c}", st.sampled_from(["task", "model", "trainer", "logger"]),
              st.one_of(st.sampled_from([c for g in GROUPS.values() for c in g]), values)),
    st.builds(lambda c: f"+experiment={c}", st.one_of(st.sampled_from(GROUPS["experiment"]), values)),
    st.builds(lambda g, c: f"{g}={c}", st.sampled_from(["hydra/launcher", "hydra/sweeper", "hydra/job_logging"]),
              st.sampled_from(["basic", "joblib", "nope", ""])),
)
odd_overrides = st.one_of(
    st.builds(lambda k: f"~{k}", keys),
    st.builds(lambda k, v: f"~{k}={v}", keys, values),
    keys,  # a key with no value
    st.sampled_from(["=5", "==", "=", "-m", "--info", "--run", "-c", "--cfg", "hydra", "--resolve", "--package",
                     "trainer", "--frobnicate", "-x", "--config-name=nope", "--experimental-rerun", "/nonexistent",
                     "--shell-completion", "--hydra-help"]),
)


def check(args: list[str], cwd: Path, counts: collections.Counter) -> None:
    r = run_fxp(*args, cwd=cwd)
    counts[r.returncode] += 1
    assert r.returncode in (0, 2), f"fxp {args!r}\n{r}"
    assert "Traceback" not in r.stdout + r.stderr, f"fxp {args!r}\n{r}"
    if r.returncode == 2:
        assert len(r.err_lines) == 1 and r.err_lines[0].startswith("fxp: error:"), f"fxp {args!r}\n{r}"


def report(name: str, counts: collections.Counter) -> None:
    if os.environ.get("FXP_FUZZ_REPORT"):
        with open(os.environ["FXP_FUZZ_REPORT"], "a") as f:
            f.write(json.dumps({"test": name, "examples": sum(counts.values()), "exit_codes": dict(counts)}) + "\n")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def test_train_key_overrides(workdir):
    "Overrides of keys of the real config and their neighbours, with their values and theirs."
    counts = collections.Counter()

    @fuzz_settings(100)
    @given(st.lists(key_overrides, min_size=1, max_size=3))
    def run(overrides):
        check(["train", *overrides, "--cfg", "job"], workdir, counts)

    run()
    report("train key overrides", counts)


def test_train_groups_removals_and_malformed(workdir):
    "Group choices (real and not), removals, keys without values, flags, malformed syntax, mixed with key overrides."
    counts = collections.Counter()

    @fuzz_settings(120)
    @given(st.lists(st.one_of(group_overrides, odd_overrides, key_overrides), min_size=1, max_size=4))
    def run(overrides):
        check(["train", *overrides, "--cfg", "job"], workdir, counts)

    run()
    report("train groups, removals, malformed", counts)


# --- the other commands -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def places(digits_run, workdir) -> dict:
    "Paths to hand the commands: a completed run (a copy), a folder of runs, an empty folder, files of a few kinds."
    root = workdir / "places"
    run = root / "outputs" / "digits" / "run"
    shutil.copytree(digits_run, run)
    (root / "empty").mkdir()
    (root / "file.txt").write_text("not a run\n")
    (root / "rows.csv").write_text("a,b\n1,2\n")
    image = root / "digit.png"
    from PIL import Image

    Image.new("L", (8, 8), 255).save(image)
    broken = root / "outputs" / "digits" / "broken"
    shutil.copytree(digits_run, broken)
    (broken / "summary.json").write_text("{not json")
    (broken / "config.yaml").write_text(": : :\n")
    return {"RUN": str(run), "OUT": str(root / "outputs"), "EMPTY": str(root / "empty"), "FILE": str(root / "file.txt"),
            "CSV": str(root / "rows.csv"), "IMAGE": str(image), "BROKEN": str(broken), "NONE": str(root / "nope")}


FLAGS = {"predict": ["--json", "--top", "--user", "--help", "--threshold", "--bs"],
         "runs": ["--sort", "--task", "--status", "--json", "--help", "accuracy", "completed", "digits"],
         "diagnose": ["--json", "--no-plot", "--help"],
         "reproduce": ["--list", "--from", "--help"],
         "resume": ["--retry-failed", "--help", "--extend"]}
JUNK = st.one_of(st.sampled_from(["--", "-", "--frobnicate", "-x", "=", "--json=1", "--extend=-1", "--extend", "abc",
                                  "-1", "0", "1e999", "é✓", "${nope}"]),
                 st.text(st.characters(blacklist_characters="\x00"), max_size=6))


def command_args(command: str, places: dict):
    "An argument list for `command`: paths, its flags, preset names, junk, in any order."
    place = st.sampled_from(sorted(places)).map(places.get)
    flag = st.sampled_from(FLAGS[command])
    bits = [place, flag, JUNK]
    if command == "reproduce":
        bits.append(st.sampled_from(GROUPS["experiment"] + ["nope", ""]))
    if command == "resume":  # never a positive --extend: that trains (its own tests do)
        bits = [place, st.sampled_from(["--retry-failed", "--help", "--extend=-1", "--extend=abc", "--bogus"]),
                st.sampled_from(["-1", "abc", "", "é"])]
    return st.lists(st.one_of(*bits), max_size=4)


OTHER = [c for c in ("predict", "runs", "diagnose", "reproduce", "resume") if c in COMMANDS]


def test_other_commands_arguments(places, workdir):
    counts = collections.Counter()
    cwd = Path(places["OUT"]).parent

    @fuzz_settings(150)
    @given(st.sampled_from(OTHER).flatmap(lambda c: command_args(c, places).map(lambda a: [c, *a])))
    def run(args):
        if args[0] == "reproduce" and len(args) > 1 and args[1] in GROUPS["experiment"]:
            args = [*args, "--cfg", "job"]  # a real preset would train: print its config instead
        check(args, cwd, counts)

    run()
    report("predict/runs/diagnose/reproduce/resume arguments", counts)


def validated(overrides: list[str]):
    "The config a run of `overrides` would get (as precheck.precheck validates it), or None where it is refused."
    from fxp.errors import ConfigError

    try:
        try:
            composed = precheck.compose(overrides)
        except precheck.NullNode:
            overrides = precheck.with_nodes(overrides)
            composed = precheck.compose(overrides)
        return config.validate(composed, overrides)
    except ConfigError:
        return None


def same(a, b) -> bool:
    "Equal values of the same kind (an int for a float aside): typing `a` by the schema changed nothing."
    if isinstance(a, dict) or isinstance(b, dict):
        return isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) or isinstance(b, list):
        return isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
    return (type(a) is type(b) or numbers) and (a == b or a != a and b != b)


def test_accepted_values_are_what_the_run_reads(workdir):
    """A config that validation accepts holds each value as its schema types it: the run reads `trainer.accumulate`
    as an int, not the text an interpolation gives (issue 30 item 7: a TypeError after the run folder was claimed),
    `trainer.scale_lr` as a boolean, not a 2 that typing would call true."""
    from fxp.schema import Config

    @fuzz_settings(30)
    @given(st.lists(plain_overrides, min_size=1, max_size=3))
    def run(overrides):
        cfg = validated(overrides)
        if cfg is None:
            return
        as_run = OmegaConf.to_container(cfg, resolve=True)
        rest = {k: v for k, v in as_run.items() if k != "task"}
        typed = OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(Config), rest), resolve=True)
        assert same(rest, {k: v for k, v in typed.items() if k != "task"}), f"{overrides} reach the run untyped"

    run()
