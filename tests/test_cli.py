"The `fxp` front: help, version, tasks, unknown commands, and what the light commands import."
import json
import subprocess
import sys
from importlib.metadata import version

import pytest

from conftest import assert_one_line_error, fxp_command, run_installed, subprocess_env
from fxp import __version__, config

LIGHT_IMPORTS = """
import json, sys
from fxp.cli import main
try:
    code = main({argv!r})
except SystemExit as e:
    code = e.code
print("RESULT", json.dumps({{"code": code, "torch": "torch" in sys.modules, "fastai": "fastai" in sys.modules}}),
      file=sys.stderr)
"""


def heavy_modules_after(argv: list[str]) -> dict:
    "Run `fxp.cli.main(argv)` in a fresh interpreter; its exit code and whether torch/fastai got imported."
    p = subprocess.run([sys.executable, "-c", LIGHT_IMPORTS.format(argv=argv)], capture_output=True, text=True,
                       timeout=60)
    line = next(ln for ln in p.stderr.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


@pytest.mark.parametrize("argv", [["--help"], ["tasks"], ["--version"],
                                  pytest.param(["train", "--help"], marks=pytest.mark.slow),  # Hydra composes it all
                                  ["train", "trainer.epoch=3"], ["train", "task=nope"]])
def test_light_commands_do_not_import_torch_or_fastai(argv):
    res = heavy_modules_after(argv)
    assert res == {"code": res["code"], "torch": False, "fastai": False}
    assert res["code"] == (2 if argv[-1] in ("trainer.epoch=3", "task=nope") else 0)


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_every_command(fxp, flag):
    r = fxp(flag)
    assert r.returncode == 0, r
    for cmd in ("train", "lr-find", "predict", "tasks"):
        assert f"\n  {cmd} " in r.stdout, f"{cmd} missing from fxp {flag}"


def test_no_arguments_prints_usage(fxp):
    r = fxp()
    assert r.returncode == 0, r
    assert r.stdout.startswith("usage: fxp")


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(fxp, flag):
    r = fxp(flag)
    assert r.returncode == 0, r
    assert r.stdout.strip() == f"fxp {__version__}"
    assert version("fxp") == __version__  # the installed distribution is this package


@pytest.mark.parametrize("command", ["fxp", "python -m fxp"])
def test_the_installed_command_and_python_dash_m_fxp_work(tmp_path, command):
    "The console script and `python -m fxp`, each in its own process, from a folder outside the repository."
    cmd = fxp_command() if command == "fxp" else [sys.executable, "-m", "fxp"]
    p = subprocess.run([*cmd, "--version"], cwd=tmp_path, capture_output=True, text=True,
                       env=subprocess_env(tmp_path), timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"fxp {__version__}"


def test_unknown_command_exits_2_naming_the_commands(fxp):
    r = fxp("trian")
    line = assert_one_line_error(r, "'trian'", "train", "predict", "tasks")
    assert "lr-find" in line


def test_tasks_lists_every_choice_of_every_group(fxp):
    r = fxp("tasks")
    assert r.returncode == 0, r
    for group in config.GROUPS:
        names = config.choices(group)
        assert names, f"conf/{group}/ has no YAML"
        for name in names:
            assert f"{group}={name}" in r.stdout


def test_tasks_prints_one_line_per_choice_with_its_description(fxp):
    r = fxp("tasks")
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    for group in config.GROUPS:
        for name, doc in config.choices(group).items():
            assert doc, f"conf/{group}/{name}.yaml has no one-line '# ...' description"
            mine = [ln for ln in lines if ln.split() and ln.split()[0] == f"{group}={name}"]
            assert len(mine) == 1 and doc in mine[0], f"{group}={name}: {mine}"
    n_choices = sum(len(config.choices(g)) for g in config.GROUPS)
    assert len([ln for ln in lines if ln.strip()]) == n_choices


def test_train_cfg_job_prints_the_composed_config_without_training(fxp):
    r = fxp("train", "task=pets", "model=resnet18", "trainer.bs=7", "--cfg", "job")
    assert r.returncode == 0, r
    assert "arch: torchvision.models.resnet18" in r.stdout
    assert "bs: 7" in r.stdout
    assert "pat:" in r.stdout
    assert not (r.cwd / "outputs").exists()


def test_predict_without_a_run_folder_is_one_line(fxp, tmp_path):
    r = fxp("predict", tmp_path / "nowhere", tmp_path / "x.png")
    assert_one_line_error(r, "model.pkl", "nowhere")


def test_predict_without_inputs_prints_its_usage(fxp, tmp_path):
    r = fxp("predict", tmp_path)
    assert_one_line_error(r, "fxp predict RUN_DIR INPUT")



@pytest.mark.parametrize("line, expected", [("fxp train trainer.e", {"trainer.epochs="}),
                                            ("fxp train task=p", {"task=pets"})])
def test_tab_completion_of_train_overrides(tmp_path, line, expected):
    "Hydra's bash completion script asks `fxp -sc query=bash` with the typed line in COMP_LINE."
    env = {**subprocess_env(tmp_path), "COMP_LINE": line}
    r = run_installed("-sc", "query=bash", cwd=tmp_path, env=env)
    assert r.returncode == 0, r
    assert expected <= set(r.stdout.split()), r.stdout


def test_completion_script_installs_for_fxp(fxp):
    r = fxp("train", "-sc", "install=bash")
    assert r.returncode == 0, r
    assert "complete -o nospace -o default -F hydra_bash_completion fxp" in r.stdout
