"""Bad input never gets a traceback (issue 17 items 7-10, 12; issue 16 items 2, 3): values that used to pass
validation and crash later are refused before anything loads; keys however they are added; a key under a null node
makes the node; data errors of the classification kind; Hydra's flags and keys; Ctrl-C and a closed pipe.
Each: exit 2 (130 for Ctrl-C) and one line, or a warning line and the run goes on.
"""
import os
import signal
import subprocess
import time

import pytest
import yaml
from PIL import Image

from conftest import assert_one_line_error, fxp_command, mnist_subset, newest_run, run_fxp, subprocess_env, summary
from fxp import checks, schema
from fxp.errors import ConfigError


def no_run_folder(r):
    assert not (r.cwd / "outputs").exists(), "a config error made a run folder"


# --- item 7: ranges, list lengths and shapes, declared once in fxp.schema -----------------------------------------


@pytest.mark.parametrize("override, key", [
    ("trainer.bs=1", "trainer.bs"),  # batch norm needs two items per batch
    ("trainer.moms=[1]", "trainer.moms"),
    ("trainer.moms=[0.9,0.8,1.5]", "trainer.moms"),
    ("trainer.stages.0.pct_start=2", "trainer.stages.0.pct_start"),
    ("task.size=[0,0]", "task.size"),
    ("task.size=[28,28,3]", "task.size"),
    ("task.size=1.5", "task.size"),
    ("trainer.lr=-1", "trainer.lr"),
    ("trainer.lr=[0,1e-3]", "trainer.lr"),
    ("trainer.stages.0.epochs=-1", "trainer.stages.0.epochs"),
    ("trainer.wd=-0.1", "trainer.wd"),
    ("trainer.seed=-1", "trainer.seed"),
    ("trainer.num_workers=1000000", "trainer.num_workers"),
    ("trainer.early_stopping.patience=-1", "trainer.early_stopping.patience"),
    ("trainer.profile=101", "trainer.profile=101 is not valid"),  # a trace too large to open
    ("task.valid_pct=0", "task.valid_pct"),
    ("trainer.stages=[{size:0}]", "trainer.stages.0.size"),
])
def test_out_of_range_values_are_refused_before_anything_loads(fxp, override, key):
    r = fxp("train", override)
    assert_one_line_error(r, key)
    no_run_folder(r)


@pytest.mark.parametrize("override, key", [("++trainer.foo=1", "foo"), ("+trainer.foo=1", "foo"), ("+foo=1", "foo"),
                                           ("++data.x=1", "x"), ("+trainer.stages.0.polcy=fit", "polcy"),
                                           ("++task.sizee=3", "sizee")])
def test_unknown_keys_are_refused_however_they_are_added(fxp, override, key):
    line = assert_one_line_error(fxp("train", override, "--cfg", "job"), key)
    assert "valid keys" in line


def test_a_kinds_own_stage_list_is_checked_too():
    "The declarations are per schema node, so task.lm_stages (text) is checked like trainer.stages, with no new code."
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"task": OmegaConf.structured(schema.Trainer(stages=[schema.Stage(pct_start=3.0)]))})
    with pytest.raises(ConfigError, match=r"task\.stages\.0\.pct_start=3\.0"):
        checks.check_values(cfg)


def test_a_subclass_that_redeclares_a_field_keeps_its_declaration():
    from dataclasses import dataclass, field

    @dataclass
    class Task(schema.Split):
        valid_pct: float = field(default=0.1)  # another default, no metadata

    assert checks.declared_values(Task)["valid_pct"].interval == "(0, 1)"


def declared_task_keys() -> list[tuple[str, str]]:
    "(kind, key) of every task key whose schema field declares what it takes (fxp.schema.valid), for every kind."
    from fxp import dispatch

    return [(k, key) for k in dispatch.kinds() for key in checks.declared_values(dispatch.kind_module(k).Task)]


def refused(v: schema.Valid, default):
    "A value `v` does not take: out of its interval (each item of a list), or no choice of its words."
    if not v.interval:
        return ["bogus"] if isinstance(default, list) else "bogus"
    lo, hi, lo_open, _ = checks._bounds(v.interval)
    bad = (lo if lo_open else lo - 1) if lo > -float("inf") else hi + 1
    bad = int(bad) if float(bad).is_integer() else bad  # an int field (a list of them) takes no float
    return [bad] * v.items if v.items else bad


@pytest.mark.parametrize("kind, key", declared_task_keys())
def test_every_kind_s_declared_keys_refuse_what_they_do_not_take(kind, key):
    "A kind declares its keys' ranges and choices once (valid() beside the default): one line names the key."
    from omegaconf import OmegaConf

    from fxp import dispatch

    schema_class = dispatch.kind_module(kind).Task
    task, v = OmegaConf.structured(schema_class), checks.declared_values(schema_class)[key]
    task[key] = refused(v, OmegaConf.to_container(task)[key])
    with pytest.raises(ConfigError) as e:
        checks.check_values(OmegaConf.create({"task": task}))
    line = str(e.value)
    assert "\n" not in line and line.startswith(f"task.{key}") and "is not valid" in line, line
    assert ("choose from: " + ", ".join(v.choices)) in line if v.choices and not v.interval else "give " in line


@pytest.mark.parametrize("override", ["task.metrics.0=[]", "task.metrics=[1,2]", "task.metrics.0=''"])
def test_metrics_that_are_neither_names_nor_nodes_are_refused(fxp, override):
    r = fxp("train", override)
    assert_one_line_error(r, "task.metrics.")
    no_run_folder(r)


@pytest.mark.parametrize("override, key", [("model.arch=abc", "model.arch"), ("model.net=abc", "model.net"),
                                           ("logger.csv=[]", "logger.csv"), ("+trainer.cbs.x=null", "trainer.cbs.x"),
                                           ("trainer.stages.0.freeze=5", "trainer.stages.0.freeze")])
def test_what_the_run_builds_has_its_form_before_anything_loads(fxp, override, key):
    r = fxp("train", override)
    assert_one_line_error(r, key)
    no_run_folder(r)


@pytest.mark.parametrize("override, key", [("model.arch=nope.arch", "model.arch"),
                                           ("model.net._target_=nope.net", "model.net"),
                                           ("model.net.channels=-1", "model.net"),
                                           ("+trainer.cbs.x={_target_:nope}", "trainer.cbs.x"),
                                           ("task.metrics.0={_target_:nope}", "task.metrics")])
def test_what_a_config_node_names_that_cannot_be_built_is_one_line(fxp, override, key):
    "Found once the run builds it (importing it needs torch): exit 2, naming the key, the run marked failed."
    r = fxp("train", override, "trainer.epochs=1")
    assert_one_line_error(r, key)
    assert summary(newest_run(r.cwd))["status"] == "failed"


def test_digits_valid_pct_that_leaves_a_class_out_of_a_split_is_one_line(fxp):
    r = fxp("train", "task.valid_pct=0.999", "trainer.epochs=1")
    assert_one_line_error(r, "task.valid_pct=0.999")


# --- issue 16 item 2: a key that changes nothing ------------------------------------------------------------------


def test_trainer_epochs_that_every_stage_overrides_is_an_error_naming_the_stage_keys(fxp):
    r = fxp("train", "trainer=lesson1", "trainer.epochs=3", "--cfg", "job")
    assert_one_line_error(r, "trainer.epochs=3", "changes nothing", "trainer.stages.0.epochs",
                          "trainer.stages.1.epochs")


def test_trainer_lr_that_every_stage_overrides_is_an_error(fxp):
    assert_one_line_error(fxp("train", "trainer=ulmfit", "task=imdb", "trainer.lr=1e-3", "--cfg", "job"),
                          "trainer.lr=1e-3", "trainer.stages.3.lr")


def test_trainer_keys_that_some_stage_uses_are_accepted(fxp):
    assert fxp("train", "trainer=lesson1", "trainer.lr=3e-3", "--cfg", "job").returncode == 0  # stage 0 has no lr
    assert fxp("train", "trainer=lesson1", "trainer.stages.0.epochs=1", "--cfg", "job").returncode == 0


# --- issue 16 item 3: a frozen random body --------------------------------------------------------------------


@pytest.mark.parametrize("trainer, what", [("lesson1", "freeze: true"), ("fine_tune", "fine_tune")])
def test_pretrained_false_with_a_frozen_first_stage_warns_in_one_line(fxp, trainer, what):
    r = fxp("train", "task=pets", "model=resnet18", "model.pretrained=false", f"trainer={trainer}", "--cfg", "job")
    assert r.returncode == 0, r
    assert len(r.err_lines) == 1 and r.err_lines[0].startswith("fxp: warning: model.pretrained=false"), r
    assert "trainer.stages.0" in r.err_lines[0] and what in r.err_lines[0]


@pytest.mark.parametrize("overrides", [["model.pretrained=true"], ["model.pretrained=false", "trainer=default"],
                                       ["model=small_cnn"]])
def test_no_warning_when_the_body_has_weights_or_is_trained_whole(fxp, overrides):
    r = fxp("train", "task=pets", "model=resnet18", *overrides, "--cfg", "job")
    assert r.returncode == 0 and not r.err_lines, r


# --- item 8: a key under a null node -----------------------------------------------------------------------------


def test_a_key_under_a_null_node_makes_the_node_from_its_schema(fxp):
    r = fxp("train", "task=mnist", "task.aug.max_rotate=5", "--cfg", "job")
    assert r.returncode == 0, r
    aug = yaml.safe_load(r.stdout)["task"]["aug"]
    assert aug["max_rotate"] == 5 and aug["max_zoom"] == schema.Aug.max_zoom  # the rest: the schema's defaults


@pytest.mark.slow
def test_a_key_under_a_null_node_in_a_sweep_gets_the_node_before_it():
    "What Hydra's app then reads (sys.argv): the node made before the first key under it, for every job alike."
    from fxp import precheck

    args = precheck.precheck(["-m", "task=mnist,digits", "task.aug.max_rotate=5,6", "trainer.epochs=1"])
    assert args == ["-m", "task=mnist,digits", "+node=task.aug", "task.aug.max_rotate=5,6", "trainer.epochs=1"]
    assert precheck.precheck(["task=pets", "trainer.bs=8"]) == ["task=pets", "trainer.bs=8"]


@pytest.mark.slow
def test_the_made_node_reaches_the_run(fxp, tmp_path):
    root = mnist_subset(tmp_path / "tiny", n=4)
    r = fxp("train", "task=mnist", f"data.path={root}", "task.aug.max_rotate=5", "task.size=28", "trainer.bs=4",
            "trainer.epochs=1")
    assert r.returncode == 0, r
    cfg = yaml.safe_load((newest_run(tmp_path) / "config.yaml").read_text())
    assert cfg["task"]["aug"]["max_rotate"] == 5


def test_a_key_under_a_null_node_without_a_schema_says_to_set_it_whole(fxp):
    r = fxp("train", "task=pets", "model=resnet18", "model.net.n_out=3")
    assert_one_line_error(r, "model.net")


# --- item 9: data errors of the classification kind ---------------------------------------------------------------


def test_missing_train_folder_names_it(fxp, tmp_path):
    root = mnist_subset(tmp_path / "tiny", n=4, splits=("valid",))
    r = fxp("train", "task=mnist", f"data.path={root}", "trainer.bs=2", "trainer.epochs=1")
    assert_one_line_error(r, f"{root}/train/", "task.train=")


def test_a_class_only_in_valid_names_the_class_and_its_folder(fxp, tmp_path):
    root = mnist_subset(tmp_path / "tiny", n=4)
    for f in (root / "train" / "7").iterdir():
        f.unlink()
    (root / "train" / "7").rmdir()
    r = fxp("train", "task=mnist", f"data.path={root}", "trainer.bs=2", "trainer.epochs=1")
    assert_one_line_error(r, "class '7'", f"{root}/valid/7")


def test_images_of_mixed_sizes_name_a_file_and_task_size(fxp, tmp_path):
    root = mnist_subset(tmp_path / "tiny", n=4)
    odd = sorted((root / "train" / "7").iterdir())[1]
    Image.open(odd).resize((32, 30)).save(odd)
    r = fxp("train", "task=mnist", f"data.path={root}", "trainer.bs=2", "trainer.epochs=1")
    assert_one_line_error(r, str(odd), "32x30", "task.size=")


def test_a_class_only_in_the_valid_rows_of_a_csv(fxp, tmp_path):
    root = mnist_subset(tmp_path / "tiny", n=3, splits=("train",))
    rows = ["name,label,is_valid"] + [f"train/{c}/{f.name},{c},{c == '7'}" for c in ("3", "7")
                                      for f in sorted((root / "train" / c).iterdir())]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    r = fxp("train", "task=csv_images", f"data.path={root}", "task.fn_col=name", "task.label_col=label",
            "task.valid_col=is_valid", "model=small_cnn", "trainer=default", "task.size=28", "trainer.bs=2",
            "trainer.epochs=1")
    assert_one_line_error(r, "class '7'", "is_valid")


# --- item 10: removals, bare values, interpolations, output folders, Ctrl-C, a closed pipe ---------------------------


@pytest.mark.parametrize("args, mentions", [
    (["~data"], ["~data"]),
    (["~task"], ["task=NAME", "digits"]),
    (["=5"], ["'=5'"]),
    (["trainer.precision=${oc.env:NOPE}"], ["trainer.precision", "NOPE"]),
    (["task.resize_method=${nope}"], ["task.resize_method", "nope"]),
    (["trainer.bs=${oc.env:HOME}"], ["trainer.bs"]),
])
def test_removals_bare_values_and_interpolations_are_one_line(fxp, args, mentions):
    r = fxp("train", *args)
    assert_one_line_error(r, *mentions)
    no_run_folder(r)


def test_a_run_folder_under_a_regular_file(fxp, tmp_path):
    (tmp_path / "afile").write_text("x")
    r = fxp("train", f"hydra.run.dir={tmp_path / 'afile' / 'run'}")
    assert_one_line_error(r, str(tmp_path / "afile"), "hydra.run.dir=")


def test_outputs_as_a_regular_file(fxp, tmp_path):
    (tmp_path / "outputs").write_text("x")
    assert_one_line_error(fxp("train"), "outputs")


def test_a_read_only_output_folder(fxp, tmp_path, monkeypatch):
    "A read-only mount (os.access says no; as root, chmod does not show it)."
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(tmp_path) else real(p, mode))
    assert_one_line_error(fxp("train"), "read-only", str(tmp_path))


@pytest.mark.parametrize("args, mentions", [
    (["--experimental-rerun", "/nonexistent"], ["--experimental-rerun", "/nonexistent"]),
    (["hydra.foo=1"], ["hydra.foo"]),  # item 12 from here
    (["--config-name=nope"], ["--config-name=nope"]),
    (["--frobnicate"], ["--frobnicate"]),
    (["--cfg", "nope"], ["--cfg"]),
    (["-m", "trainer.seed=1,2", "--cfg", "job"], ["-m"]),
])
def test_hydra_flags_and_keys_are_one_line_with_the_prefix(fxp, args, mentions):
    r = fxp("train", *args)
    assert_one_line_error(r, *mentions)
    assert "usage:" not in r.stdout + r.stderr


def test_ctrl_c_before_the_job_starts_is_exit_130(fxp, monkeypatch):
    from fxp import precheck

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(precheck, "compose", interrupted)
    assert_one_line_error(fxp("train"), "interrupted", code=130)


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.3, 0.6, 1.0])
def test_ctrl_c_in_the_first_second_of_the_installed_command(tmp_path, delay):
    p = subprocess.Popen([*fxp_command(), "train"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=subprocess_env(tmp_path))
    time.sleep(delay)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "Traceback" not in out + err and err.strip().splitlines()[-1].startswith("fxp: error: interrupted"), err


def test_help_into_a_closed_pipe_is_quiet(tmp_path):
    r, w = os.pipe()
    os.close(r)
    p = subprocess.run([*fxp_command(), "--help"], stdout=w, stderr=subprocess.PIPE, text=True, timeout=60,
                       env=subprocess_env(tmp_path))
    os.close(w)
    assert p.returncode == 0 and p.stderr == "", p.stderr


def test_a_bad_value_in_a_sweep_fails_before_any_job_runs(tmp_path):
    r = run_fxp("train", "-m", "trainer.bs=8,1", cwd=tmp_path)
    assert_one_line_error(r, "trainer.bs=1")
    assert not (tmp_path / "outputs").exists()


# --- issue 30 item 7: what fuzzing left, each one line before the run folder is claimed ------------------------------


@pytest.mark.parametrize("args, mentions", [
    (["task.aug.max_rotate=5", "task.aug=${nope}"], ["task.aug", "nope"]),
    (["trainer.accumulate=${now:%Y}"], ["trainer.accumulate", "text, not an integer", "oc.decode"]),
    (["trainer.stages.0.epochs=${now:%Y}"], ["trainer.stages.0.epochs", "not an integer"]),
    (["trainer.lr=1e308"], ["trainer.lr", "up to 10000"]),
    (["trainer.stages.0.lr=[1e-3,1e308]"], ["trainer.stages.0.lr", "up to 10000"]),
    (["data.skip_bad=${now:%Y}"], ["data.skip_bad", "not true or false"]),
    (["trainer.scale_lr=2"], ["trainer.scale_lr=2", "a number, not true or false"]),
    (["+node=task.aug", "task.aug.do_flip=1"], ["task.aug.do_flip", "not true or false"]),
    (["~hydraa.sweep.dir"], ["hydraa.sweep.dir"]),  # not Hydra's key: composed (and refused) with the others
])
def test_fuzz_leftovers_are_one_line_before_the_run_folder(fxp, args, mentions):
    r = fxp("train", "trainer.epochs=1", *args)
    assert_one_line_error(r, *mentions)
    no_run_folder(r)


@pytest.mark.parametrize("package", ["model.nope", "model.net.channels.0=16"])
def test_a_package_that_is_no_key_is_one_line(fxp, package):
    "`--cfg job --package KEY` shows part of the config; a KEY OmegaConf cannot even parse was a traceback."
    assert_one_line_error(fxp("train", "--cfg", "job", "--package", package), f"--package {package}", "no such key")


def test_an_interpolation_decoded_to_its_type_is_taken(fxp):
    r = fxp("train", "trainer.accumulate=${oc.decode:'2'}", "trainer.scale_lr=true", "--cfg", "job", "--resolve")
    assert r.returncode == 0, r
    assert "accumulate: 2" in r.stdout


def test_rows_of_a_csv_without_a_label_are_counted_and_named(fxp, tmp_path):
    "Empty label cells are not a class 'nan' (issue 30 item 11): how many rows have none, and which."
    root = mnist_subset(tmp_path / "tiny", n=3, splits=("train",))
    files = [f"train/{c}/{f.name}" for c in ("3", "7") for f in sorted((root / "train" / c).iterdir())]
    rows = ["name,label"] + [f"{f},{'' if i in (1, 4) else f.split('/')[1]}" for i, f in enumerate(files)]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    r = fxp("train", "task=csv_images", f"data.path={root}", "task.fn_col=name", "task.label_col=label",
            "task.valid_pct=0.5", "model=small_cnn", "trainer=default", "task.size=28", "trainer.bs=2",
            "trainer.epochs=1")
    line = assert_one_line_error(r, "2 of the 6 rows", "labels.csv", "'label'", "task.label_col", files[1], "row 2",
                                 files[4], "row 5")
    assert "nan" not in line


def test_a_ctrl_c_a_library_turned_into_its_own_error_is_still_an_interrupt(monkeypatch, capsys):
    "OmegaConf's cleanup, hit by Ctrl-C inside a `with`, raised a ConfigKeyError chained to the KeyboardInterrupt."
    from fxp import cli

    def route(argv):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise KeyError("'NoneType' object has no attribute '_invalidate_flags_cache'") from None

    monkeypatch.setattr(cli, "route", route)
    assert cli.main(["train"]) == 130
    assert capsys.readouterr().err.strip() == "fxp: error: interrupted"
