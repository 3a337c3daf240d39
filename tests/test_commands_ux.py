"""What a user sees from the commands (issue 16 items 9 and 12): each command's own --help, tab completion of
command names and of `fxp lr-find` overrides."""
import pytest

from conftest import assert_one_line_error, copy_exported, run_fxp, subprocess_env
from fxp import config

HELP = [("predict", "usage: fxp predict RUN_DIR INPUT"), ("reproduce", "usage: fxp reproduce NAME"),
        ("runs", "usage: fxp runs"), ("diagnose", "usage: fxp diagnose"), ("tasks", "usage: fxp tasks"),
        ("val", "usage: fxp val"), ("export", "usage: fxp export"), ("serve", "usage: fxp serve"),
        ("compare", "usage: fxp compare"), ("report", "usage: fxp report"), ("clean", "usage: fxp clean"),
        ("cache", "usage: fxp cache"), ("explain", "usage: fxp explain")]
# Hydra's help (seconds each: Hydra composes every group's options): each command once, one flag each
HYDRA_HELP = [pytest.param(*p, marks=pytest.mark.slow) for p in (("lr-find", "fxp lr-find: compose a config", "-h"),
                                                             ("train", "fxp train: compose a config", "--help"))]


@pytest.mark.parametrize("command, says, flag", [(c, s, f) for c, s in HELP for f in ("--help", "-h")] + HYDRA_HELP)
def test_every_command_has_its_own_help(tmp_path, command, says, flag):
    r = run_fxp(command, flag, cwd=tmp_path)
    assert r.returncode == 0, r
    assert r.stdout.lstrip().startswith(says), r.stdout[:300]
    assert command == "train" or "fxp train:" not in r.stdout
    assert command != "lr-find" or "lr_find.png" in r.stdout
    if command in ("train", "lr-find"):  # Hydra's help: each config group with its options
        for group in config.GROUPS:
            assert f"{group}: {', '.join(config.choices(group))}" in r.stdout
    assert not (tmp_path / "outputs").exists()


def test_the_main_help_points_to_command_help(tmp_path):
    r = run_fxp("--help", cwd=tmp_path)
    assert "COMMAND --help" in r.stdout


def complete(tmp_path, line: str) -> set[str]:
    env = {**subprocess_env(tmp_path), "COMP_LINE": line}
    r = run_fxp("-sc", "query=bash", cwd=tmp_path, env=env)
    assert r.returncode == 0, r
    return set(r.stdout.split())


@pytest.mark.parametrize("line, expected", [
    ("fxp tr", {"train"}),
    ("fxp ", {"train", "lr-find", "predict", "reproduce", "runs", "diagnose", "tasks"}),
    ("fxp r", {"reproduce", "runs"}),
    ("fxp lr-find trainer.e", {"trainer.epochs="}),
    ("fxp lr-find task=p", {"task=pets", "task=planet"}),
    ("fxp train trainer.e", {"trainer.epochs="}),
    ("fxp runs ", set()),  # the shell completes file names
])
def test_tab_completion(tmp_path, line, expected):
    got = complete(tmp_path, line)
    assert expected <= got if expected else got == set(), got
    if line.count(" ") == 1:
        assert not any(c.endswith((".", "=")) for c in got), got  # command names, not overrides


def test_fish_completion_gets_one_command_a_line(tmp_path):
    env = {**subprocess_env(tmp_path), "COMP_LINE": "fxp r"}
    r = run_fxp("-sc", "query=fish", cwd=tmp_path, env=env)
    assert r.returncode == 0, r
    assert r.stdout.split("\n")[:2] == ["reproduce", "resume"] or r.stdout.split("\n")[:2] == ["reproduce", "runs"]


# --- one override parser: fxp train's pre-check and the commands on a saved run say the same ------------------------


@pytest.mark.parametrize("override", ["data.path=runs(2)", "=5"])
def test_a_bad_override_is_the_same_line_for_every_command(tmp_path, override):
    """`fxp train` and `fxp val` (a saved run) parse overrides with one parser: the same line, the command's name
    before it (the quoting that fixes a value Hydra reads as syntax; the KEY=VALUE form)."""
    run = copy_exported(tmp_path, "classification") / "classification"
    train = assert_one_line_error(run_fxp("train", override, cwd=tmp_path))
    val = assert_one_line_error(run_fxp("val", str(run), override, cwd=tmp_path))
    assert val == train.replace("fxp: error: ", "fxp: error: fxp val: ", 1)
