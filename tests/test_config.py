"The config tree composes in-process (Hydra's compose API) and `fxp.config.validate` types and checks it."
import math

import pytest
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from fxp import checks, config, dispatch
from fxp.errors import ConfigError

TASKS = sorted(config.choices("task"))


def cfg(*overrides: str):
    "The composed (not yet validated) config for `overrides`."
    with initialize_config_module("fxp.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


def valid(*overrides: str):
    return config.validate(cfg(*overrides))


def rejected(*overrides: str) -> str:
    "The one-line message `validate` raises for `overrides`."
    with pytest.raises(ConfigError) as e:
        valid(*overrides)
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


# --- the registry: every YAML composes and validates ---------------------------------------------------------


def test_the_registry_is_the_config_folder():
    for group in config.GROUPS:
        folder = config.experiments_dir() if group == "experiment" else config.conf_dir() / group
        files = {p.stem for p in folder.glob("*.yaml")}
        assert files and set(config.choices(group)) == files
    assert {"digits", "mnist", "pets", "csv_images"} <= set(TASKS)


def test_a_compose_shares_the_config_store_instead_of_copying_it():
    "Hydra copies its repository on each compose; a copy of the store (schemas, presets) was a quarter of a compose."
    import copy

    from hydra.core.config_store import ConfigStore
    from hydra.core.global_hydra import GlobalHydra

    cfg()
    store = ConfigStore.instance()
    with initialize_config_module("fxp.conf", version_base="1.3"):
        repository = copy.deepcopy(GlobalHydra.instance().hydra.config_loader.repository)
    assert [s.store for s in repository.sources if hasattr(s, "store")] == [store]
    assert "lesson1-pets.yaml" in store.repo["experiment"] and store is ConfigStore.instance()


def test_a_packaged_yaml_is_parsed_once_and_again_once_it_changes(tmp_path, monkeypatch):
    "Hydra parsed each YAML of the tree on every compose (a fifth of one); a file that changes is read again."
    import os

    cfg("task=pets")
    loads, load = [], OmegaConf.load
    monkeypatch.setattr(OmegaConf, "load", lambda *a, **k: loads.append(a) or load(*a, **k))
    assert cfg("task=pets", "trainer.epochs=3").trainer.epochs == 3 and loads == []

    package = tmp_path / "mine"
    package.mkdir()
    (package / "__init__.py").touch()
    monkeypatch.syspath_prepend(str(tmp_path))
    yaml = package / "config.yaml"

    def composed(epochs: int) -> int:
        yaml.write_text(f"epochs: {epochs}\n")
        os.utime(yaml, ns=(epochs, epochs))  # a new version even within the file system's clock tick
        with initialize_config_module("mine", version_base="1.3"):
            return compose("config").epochs

    assert [composed(3), composed(4), composed(12)] == [3, 4, 12]


IMAGE_KINDS = ("classification", "multilabel", "segmentation", "regression")


@pytest.mark.parametrize("task", TASKS)
def test_every_task_composes_and_validates(task):
    local = cfg(f"task={task}").task.get("local")
    if local and not config.local_copy(local).is_dir():
        pytest.skip(f"task={task}'s data set {local!r} not found at {config.local_copy(local)} (set FXP_DATA=)")
    c = valid(f"task={task}")
    assert c.task.kind in dispatch.kinds()
    assert c.task.metrics or c.task.monitor.metric.endswith("loss"), f"task {task} records no metric"
    assert c.task.monitor.mode in ("min", "max")
    assert c.trainer.stages and c.trainer.bs >= 1
    if c.task.kind in IMAGE_KINDS:
        assert (c.model.arch is None) != (c.model.net is None), "an image model has either arch or net"
    # validate typed the task by its kind: every key of the kind's schema is present
    assert set(dispatch.kind_module(c.task.kind).Task.__dataclass_fields__) <= set(c.task)


@pytest.mark.parametrize("task", TASKS)
def test_every_task_has_a_one_line_description(task):
    assert config.choices("task")[task], f"conf/task/{task}.yaml needs a first-line '# ...' description"


# models that do not fit the default task (digits, an image classifier), with a task they fit
TASK_OF_MODEL = {"awd_lstm": "imdb", "awd_lstm_tiny": "imdb", "collab_dot": "movielens", "collab_nn": "movielens",
                 "tabular": "adult", "tabular_rossmann": "rossmann", "basic_gan": "wgan", "unet_superres": "superres",
                 "unet_small": "superres", "unet_resnet18": "camvid", "unet_resnet34": "camvid"}


# every model: ~25 composes, 5 s of CPU (the tasks' own models are composed by test_every_task_composes_and_validates)
@pytest.mark.parametrize("group", [pytest.param(g, marks=pytest.mark.slow) for g in ("model", "trainer")] + ["logger"])
def test_every_choice_of_the_other_groups_composes_and_validates(group):
    for name in config.choices(group):
        task = [f"task={TASK_OF_MODEL[name]}"] if group == "model" and name in TASK_OF_MODEL else []
        c = valid(*task, f"{group}={name}")
        assert c[group] is not None


def test_default_is_digits_small_cnn_cpu_friendly():
    c = valid()
    assert c.task.source == "digits"
    assert c.model.net._target_ == "fxp.models.small_cnn" and c.model.arch is None
    assert c.trainer.precision == "fp32" and c.trainer.device == "auto"


# --- defaults picked by a task, and the command line winning -------------------------------------------------


def test_a_task_picks_its_model_and_trainer():
    pets = cfg("task=pets")
    assert pets.model.arch == "torchvision.models.resnet34" and pets.model.pretrained is True
    assert [s.freeze for s in pets.trainer.stages] == [True, False]  # lesson1: frozen, then unfrozen
    assert list(pets.trainer.stages[1].lr) == [1e-6, 1e-4]
    csv = cfg("task=csv_images")
    assert [s.policy for s in csv.trainer.stages] == ["fine_tune"]
    mnist = cfg("task=mnist")
    assert mnist.model.net._target_ == "fxp.models.small_cnn"
    for fsdd in (cfg("task=fsdd"), cfg("task=fsdd_tags")):  # 10 epochs at the default lr: measured, conf/trainer/audio
        assert fsdd.model.net._target_ == "fxp.models.audio_cnn" and fsdd.trainer.epochs == 10
        assert fsdd.trainer.lr == 1e-2


@pytest.mark.parametrize("order", ["task first", "task last"])
def test_the_command_line_beats_the_tasks_defaults(order):
    mine = ["model=resnet18", "trainer=default", "trainer.epochs=3"]
    c = valid(*(["task=pets", *mine] if order == "task first" else [*mine, "task=pets"]))
    assert c.model.arch == "torchvision.models.resnet18"
    assert [s.policy for s in c.trainer.stages] == ["fit_one_cycle"] and c.trainer.epochs == 3
    assert c.task.pat  # still the pets task


def test_model_keys_override_after_the_task_picked_the_model():
    c = valid("task=pets", "model.pretrained=false", "model=resnet18")
    assert c.model.arch == "torchvision.models.resnet18" and c.model.pretrained is False


def test_a_derived_task_inherits_and_overrides_its_parent():
    d = valid("task=donkey_csv")
    assert (d.task.fn_col, d.task.label_col, list(d.task.size)) == (1, 2, [160, 160])
    assert (d.task.resize_method, d.task.pad_mode, d.task.source) == ("pad", "zeros", "csv")


def test_task_keys_in_the_yaml_override_with_their_types():
    c = valid("task=csv_images", "task.size=28", "task.fn_col=name", "task.valid_pct=0.3")
    assert (c.task.size, c.task.fn_col, c.task.valid_pct) == (28, "name", 0.3)


@pytest.mark.parametrize("override, key, value", [("task.size=32", "size", 32), ("task.valid=val", "valid", "val"),
                                                  ("task.valid_pct=0.5", "valid_pct", 0.5)])
def test_any_schema_key_of_the_task_overrides(override, key, value):
    assert valid("task=mnist", override).task[key] == value


# --- unknown keys and wrong types fail at compose time ------------------------------------------------------


@pytest.mark.parametrize("override, key", [("trainer.epoch=3", "epoch"), ("trainer.stages.0.polcy=fit", "polcy"),
                                           ("data.pth=x", "pth"), ("model.archh=x", "archh"), ("foo=1", "foo")])
def test_unknown_keys_fail_at_compose(override, key):
    with pytest.raises(ConfigCompositionException) as e:
        cfg(override)
    assert key in str(e.value) + str(e.value.__cause__)


@pytest.mark.parametrize("override", ["trainer.accumulate=abc", "trainer.epochs=1.5", "trainer.seed=x",
                                      "trainer.channels_last=maybe", "data.skip_bad=sometimes"])
def test_wrong_types_fail_at_compose(override):
    with pytest.raises(ConfigCompositionException) as e:
        cfg(override)
    assert override.split("=")[0] in str(e.value)


@pytest.mark.parametrize("override, shown", [("trainer.bs=abc", "'abc'"), ("trainer.bs=1", "1"),
                                             ("trainer.bs=2.5", "2.5")])
def test_a_batch_size_is_a_whole_number_or_auto(override, shown):
    "trainer.bs takes a word (auto), so a wrong one fails as the config is validated, not composed."
    assert rejected(override).startswith(f"trainer.bs={shown} is not valid: give an integer ≥ 2 or auto")
    assert valid("trainer.bs=auto").trainer.bs == "auto"


def test_unknown_task_key_fails_at_validate_or_compose():
    with pytest.raises((ConfigCompositionException, ConfigError)) as e:
        valid("+task.sizee=3")
    assert "sizee" in str(e.value)


# --- learning rates, stages, precision, device --------------------------------------------------------------


@pytest.mark.parametrize("lr, expected", [("3e-3", 3e-3), ("1", 1), ("[1e-5,1e-3]", [1e-5, 1e-3]),
                                          ("find", "find")])
def test_lr_forms_accepted(lr, expected):
    c = valid(f"trainer.lr={lr}")
    got = OmegaConf.to_object(c.trainer.lr) if OmegaConf.is_list(c.trainer.lr) else c.trainer.lr
    assert got == expected


@pytest.mark.parametrize("lr", ["abc", "[1e-5]", "[1e-5,1e-4,1e-3]", "[a,b]", "true", "findd"])
def test_bad_lr_rejected_naming_the_key(lr):
    msg = rejected(f"trainer.lr={lr}")
    assert msg.startswith("trainer.lr=") and "learning rate" in msg


def test_bad_stage_lr_rejected_naming_the_stage():
    msg = rejected("trainer=lesson1", "trainer.stages.1.lr=fast")
    assert "trainer.stages.1.lr" in msg


def test_stage_freeze_takes_a_bool_or_a_group_count():
    assert valid("trainer.stages.0.freeze=-2").trainer.stages[0].freeze == -2  # ULMFiT's freeze_to(-2)
    msg = rejected("trainer=lesson1", "trainer.stages.1.freeze=maybe")
    assert msg.startswith("trainer.stages.1.freeze='maybe'") and "freeze_to" in msg


def test_stages_from_the_command_line():
    c = valid("trainer.stages=[{policy:fit,epochs:2,lr:find},"
              "{policy:fit_one_cycle,freeze:false,lr:[1e-4,1e-3],size:32}]")
    s = c.trainer.stages
    assert [x.policy for x in s] == ["fit", "fit_one_cycle"]
    assert (s[0].epochs, s[0].lr, s[1].freeze, s[1].size) == (2, "find", False, 32)
    assert list(s[1].lr) == [1e-4, 1e-3]
    assert s[0].freeze is None and s[0].freeze_epochs == 1  # schema defaults fill each stage


@pytest.mark.parametrize("override, key, allowed", [
    ("trainer.stages.0.policy=fit_two_cycle", "trainer.stages.0.policy", checks.POLICIES),
    ("trainer.precision=fp8", "trainer.precision", config.PRECISIONS),
    ("trainer.device=tpu", "trainer.device", config.DEVICES),
    ("task.monitor.mode=up", "task.monitor.mode", ("min", "max")),
])
def test_bad_choice_values_rejected_with_the_allowed_ones(override, key, allowed):
    msg = rejected(override)
    assert key in msg
    for a in allowed:
        assert a in msg


def test_empty_stages_rejected():
    assert "trainer.stages" in rejected("trainer.stages=[]")


@pytest.mark.parametrize("override, key", [("trainer.bs=0", "trainer.bs"), ("trainer.epochs=-1", "trainer.epochs")])
def test_out_of_range_numbers_rejected(override, key):
    assert key in rejected(override)


@pytest.mark.parametrize("overrides, key", [
    (["task.valid_pct=1.5"], "task.valid_pct"),
    (["task.source=web"], "task.source"),
    (["task=pets", "task.pat=null"], "task.pat"),
    (["task=csv_images", "task.resize_method=stretch"], "task.resize_method"),
    (["task=csv_images", "task.pad_mode=mirror"], "task.pad_mode"),
    (["task.kind=astrology"], "task.kind"),
])
def test_bad_task_values_rejected_naming_the_key(overrides, key):
    assert key in rejected(*overrides)


def test_missing_data_path_rejected_with_where_it_looked(tmp_path):
    missing = tmp_path / "no_such_data"
    msg = rejected("task=mnist", f"data.path={missing}")
    assert "data.path" in msg and str(missing) in msg


def test_existing_data_path_accepted(tmp_path):
    assert valid("task=mnist", f"data.path={tmp_path}").data.path == str(tmp_path)


def test_a_local_data_set_is_found_in_fxp_data_or_beside_the_working_directory(tmp_path, monkeypatch):
    "task=fsdd without data.path: $FXP_DATA/fsdd, else ../shared/data/fsdd; config.yaml records the folder found."
    (tmp_path / "mine" / "fsdd").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "fsdd").mkdir(parents=True)
    (tmp_path / "clone").mkdir()
    monkeypatch.chdir(tmp_path / "clone")
    monkeypatch.setenv("FXP_DATA", str(tmp_path / "mine"))
    assert valid("task=fsdd").data.path == str(tmp_path / "mine" / "fsdd")
    assert valid("task=fsdd", f"data.path={tmp_path}").data.path == str(tmp_path)  # data.path= wins
    assert valid("+experiment=esc50-piczak-cnn").data.path is None  # built on task=fsdd, not on fsdd's data
    monkeypatch.delenv("FXP_DATA")
    assert valid("task=fsdd_tags").data.path == str(tmp_path / "shared" / "data" / "fsdd")
    monkeypatch.chdir(tmp_path)
    msg = rejected("task=fsdd")
    assert "'fsdd' not found" in msg and str(tmp_path.parent / "shared" / "data" / "fsdd") in msg
    assert "data.path=" in msg and "FXP_DATA=" in msg


def test_validate_returns_a_new_config_and_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; from hydra import compose, initialize_config_module; from fxp import config\n"
            "with initialize_config_module('fxp.conf', version_base='1.3'):\n"
            "    c = compose('config', overrides=['task=pets'])\n"
            "v = config.validate(c); assert v.task.size == 224\n"
            "print('torch' in sys.modules, 'fastai' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("trainer", sorted(config.choices("trainer")))
def test_yaml_learning_rates_are_numbers_not_strings(trainer):
    "YAML 1.1 reads `1e-2` as a string; every shipped lr must reach fastai as a number."
    c = valid(f"trainer={trainer}")
    lrs = [c.trainer.lr] + [x for s in c.trainer.stages if s.lr is not None
                            for x in (s.lr if OmegaConf.is_list(s.lr) else [s.lr])]
    for lr in lrs:
        assert lr == "find" or (isinstance(lr, float) and math.isfinite(lr) and lr > 0), (trainer, lr)
