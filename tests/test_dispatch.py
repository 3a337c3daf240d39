"""The kind protocol (fxp.dispatch): every kind checked in milliseconds, steps as data, model.kwargs against the
learner factories; loggers and extra callbacks as extension points that cannot break a run."""
from __future__ import annotations

import csv
import dataclasses
import types

import pytest
from fastai.callback.core import Callback
from omegaconf import OmegaConf

from conftest import assert_one_line_error, newest_run, run_fxp
from fxp import dispatch
from fxp.errors import ConfigError
from fxp.schema import TaskBase


@pytest.mark.parametrize("kind", dispatch.kinds())
def test_every_kind_follows_the_protocol(kind):
    module = dispatch.kind_module(kind)
    assert dataclasses.is_dataclass(module.Task) and issubclass(module.Task, TaskBase)
    assert module.Task().kind == kind
    assert hasattr(module, "steps") or (callable(module.dls) and callable(module.learner))


def fake_kind(**functions) -> types.ModuleType:
    "A kind module with every protocol function, then `functions` replacing (None: removing) some."
    module = types.ModuleType("fxp.tasks.fake")
    module.Task = type("Task", (TaskBase,), {})
    defaults = dict(check=lambda cfg: None, factories=lambda cfg: [], evaluate=lambda learn, cfg: {},
                    baseline=lambda learn, cfg: {}, plots=lambda learn, cfg, dest, evaluation: None,
                    predict=lambda learn, cfg, inputs: [],
                    dls=lambda cfg, device: None, learner=lambda cfg, dls: None)
    for name, fn in {**defaults, **functions}.items():
        if fn is not None:
            setattr(module, name, fn)
    return module


def test_a_complete_fake_kind_passes():
    assert dispatch.check_protocol(fake_kind()).__name__ == "fxp.tasks.fake"


@pytest.mark.parametrize("missing", ["evaluate", "baseline", "plots", "predict", "factories", "check", "dls"])
def test_a_kind_missing_a_function_fails_in_one_line(missing):
    with pytest.raises(ConfigError) as e:
        dispatch.check_protocol(fake_kind(**{missing: None}))
    msg = str(e.value)
    assert "\n" not in msg and f"{missing}(" in msg and "fxp.tasks.fake" in msg


def test_a_kind_with_wrong_parameters_is_named():
    with pytest.raises(ConfigError, match=r"plots\(learn, cfg, dest, evaluation\), not plots\(learn, cfg, dest\)"):
        dispatch.check_protocol(fake_kind(plots=lambda learn, cfg, dest: None))


def test_a_kind_with_steps_needs_no_dls_or_learner():
    dispatch.check_protocol(fake_kind(dls=None, learner=None, steps=lambda cfg: []))
    with pytest.raises(ConfigError, match=r"learner\(cfg, dls\)"):
        dispatch.check_protocol(fake_kind(learner=None))


@pytest.mark.parametrize("name, value, says", [
    ("INPUT", "video", "INPUT as one of image, text, table, pairs, audio (not 'video')"),
    ("TECHNIQUES", ("mixup", "dropout"), "TECHNIQUES as a tuple of fxp.checks.TECHNIQUES' keys"),
    ("TECHNIQUES", "tta", "TECHNIQUES as a tuple"),
    ("CARRIED", {"GANTrainer": "gen_loss"}, "CARRIED as a dict of callback class names to tuples of attribute names"),
    ("ADVERSARIAL", ["gen_loss"], "ADVERSARIAL as a tuple of metrics.csv column names"),
    ("not_cleanable", lambda: None, "not_cleanable(cfg), not not_cleanable()"),
])
def test_a_kind_s_declarations_are_checked_like_its_functions(name, value, says):
    "What a kind declares beyond its functions (fxp.dispatch.OPTIONAL) is checked when it loads: one line naming it."
    with pytest.raises(ConfigError) as e:
        dispatch.check_protocol(fake_kind(**{name: value}))
    msg = str(e.value)
    assert "\n" not in msg and "fxp.tasks.fake" in msg and says in msg, msg


def test_what_a_kind_leaves_undeclared_takes_the_default():
    kind = dispatch.check_protocol(fake_kind(INPUT="pairs"))
    assert dispatch.declared(kind, "INPUT") == "pairs"
    assert (dispatch.declared(kind, "TECHNIQUES"), dispatch.declared(kind, "CARRIED")) == ((), {})


@pytest.mark.parametrize("kind", dispatch.kinds())
def test_every_kind_declares_its_input(kind):
    "fxp predict, serve and export ask the kind what its model takes; every kind of fxp says."
    assert dispatch.declared(dispatch.kind_module(kind), "INPUT") in dispatch.INPUTS


def task_cfg(kind: str, **task):
    module = dispatch.kind_module(kind)
    return OmegaConf.create({"task": OmegaConf.merge(OmegaConf.structured(module.Task), task),
                             "model": {"arch": None, "net": None, "kwargs": {}}})


def test_one_learner_kinds_get_one_default_step():
    (step,) = dispatch.steps(dispatch.kind_module("classification"), task_cfg("classification"))
    assert step.name == "train" and step.folder is None and step.stages is None


def test_text_steps_language_model_then_classifier(tmp_path):
    text = dispatch.kind_module("text")
    lm, clf = dispatch.steps(text, task_cfg("text"))
    assert (lm.name, lm.folder, clf.name, clf.folder) == ("lm", "lm", "classifier", None)
    assert lm.stages is not None and lm.monitor.metric == "perplexity"
    (tmp_path / "encoder.pth").touch()
    (tmp_path / "vocab.pkl").touch()
    (only,) = dispatch.steps(text, task_cfg("text", encoder=str(tmp_path)))  # an earlier run's encoder: no LM step
    assert only.name == "classifier"


def test_superres_steps_export_the_generator():
    steps = dispatch.steps(dispatch.kind_module("gan"), task_cfg("gan", recipe="superres"))
    assert [(s.name, s.folder, s.exports) for s in steps] == [("gen", "gen", True), ("critic", "critic", False),
                                                             ("gan", None, False)]
    (wgan,) = dispatch.steps(dispatch.kind_module("gan"), task_cfg("gan", recipe="wgan"))
    assert wgan.folder is None


@pytest.mark.parametrize("kind,bad,good", [("classification", "lin_ftr", "lin_ftrs"),
                                           ("collab", "n_factor", "n_factors"), ("tabular", "layer", "layers"),
                                           ("segmentation", "self_attn", "self_attention")])
def test_model_kwargs_are_checked_against_the_learner_factory(kind, bad, good):
    cfg = task_cfg(kind)
    cfg.model.arch = "torchvision.models.resnet18" if kind in ("classification", "segmentation") else None
    cfg.model.kwargs = {bad: 1}
    with pytest.raises(ConfigError) as e:
        dispatch.check_kwargs(dispatch.kind_module(kind), cfg)
    assert f"model.kwargs.{bad} is not an argument of" in str(e.value) and "\n" not in str(e.value)
    cfg.model.kwargs = {good: 1}
    dispatch.check_kwargs(dispatch.kind_module(kind), cfg)  # the right spelling passes


def test_y_range_in_model_kwargs_points_to_the_task():
    cfg = task_cfg("collab")
    cfg.model.kwargs = {"y_range": [0, 5]}
    with pytest.raises(ConfigError, match="task.y_range"):
        dispatch.check_kwargs(dispatch.kind_module("collab"), cfg)


# --- loggers and callbacks: extension points ------------------------------------------------------------------


class Boom(Callback):
    "A logger whose service is down: it fails at every epoch."
    def after_epoch(self):
        raise ConnectionError("tracking server unreachable")


QUICK = ("trainer.epochs=2", "trainer.bs=256")


def metric_rows(run) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
@pytest.mark.parametrize("loggers", ["logger=null", "logger=[csv]", "+logger.boom._target_=test_dispatch.Boom"])
def test_no_logger_choice_breaks_the_run(tmp_path, loggers):
    r = run_fxp("train", *QUICK, loggers, cwd=tmp_path)
    assert r.returncode == 0, r
    run = newest_run(tmp_path)
    assert len(metric_rows(run)) == 2  # metrics.csv is the core's, whatever the loggers
    if "boom" in loggers:
        log = (run / "train.log").read_text()
        assert log.count("logger boom failed in after_epoch") == 1 and "the run goes on" in log


@pytest.mark.slow
def test_extra_fastai_callbacks_from_the_command_line(tmp_path):
    r = run_fxp("train", *QUICK, "+trainer.cbs.clip._target_=fastai.callback.training.GradientClip",
                "+trainer.cbs.clip.max_norm=0.5", cwd=tmp_path)
    assert r.returncode == 0, r
    cfg = OmegaConf.load(newest_run(tmp_path) / "config.yaml")
    assert cfg.trainer.cbs.clip == {"_target_": "fastai.callback.training.GradientClip", "max_norm": 0.5}


def test_a_misspelled_model_kwarg_fails_before_data_loads(tmp_path):
    r = run_fxp("train", "+model.kwargs.chanels=[8,16]", cwd=tmp_path)
    assert_one_line_error(r, "model.kwargs.chanels")
