"""The course's techniques, each one override that changes what it claims (fxp/techniques.py): the optimizer, label
smoothing, mixup, cutmix, gradient clipping and accumulation, test-time augmentation, activation statistics.

Digits runs of 2 epochs, compared with the shared 2-epoch default run (`digits_run`: Adam, same seed)."""
from __future__ import annotations

import inspect
import json

import pytest
import torch
import yaml
from fastai.callback.core import Callback
from PIL import Image

from conftest import assert_one_line_error, metrics_rows, mnist_subset, newest_run, run_fxp, summary
from fxp.schema import OPT_HYPERS

NORMS: dict[str, list[float]] = {}  # GradNorm's record, by name


class GradNorm(Callback):
    "Records the gradients' total norm before the optimizer steps, at its `order` (GradientClip's is 11)."

    def __init__(self, record: str, order: int):
        self.record, self.order = record, order
        NORMS[record] = []

    def before_step(self):
        grads = [p.grad for p in self.learn.model.parameters() if p.grad is not None]
        NORMS[self.record].append(float(torch.norm(torch.stack([g.norm() for g in grads]))))


def train(tmp_path_factory, name: str, *overrides: str, epochs: int = 2):
    "A digits run with `overrides`, without the plots of plots/ (what the tests read are numbers, not pictures)."
    cwd = tmp_path_factory.mktemp(name)
    r = run_fxp("train", f"trainer.epochs={epochs}", "trainer.plots=false", *overrides, cwd=cwd)
    assert r.returncode == 0, r
    return newest_run(cwd)


def config(run) -> dict:
    return yaml.safe_load((run / "config.yaml").read_text())


def opt_state(run) -> list[dict]:
    "The optimizer's per-parameter state in the run's last checkpoint."
    return torch.load(run / "checkpoints" / "last.pth", map_location="cpu", weights_only=False)["opt"]["state"]


def first_train_loss(run) -> float:
    return float(metrics_rows(run)[0]["train_loss"])


@pytest.fixture(scope="module")
def sgd_run(tmp_path_factory):
    "SGD with momentum, its activations recorded (which only observes: the losses are SGD's)."
    return train(tmp_path_factory, "sgd", "trainer.opt=sgd", "trainer.mom=0.9", "trainer.activation_stats=true")


def test_each_optimizer_takes_the_hyper_parameters_fxp_gives_it():
    from fxp.techniques import OPTIMIZERS

    assert OPTIMIZERS.keys() == OPT_HYPERS.keys()
    for name, fn in OPTIMIZERS.items():
        params = inspect.signature(fn).parameters
        assert {k for k in ("mom", "sqr_mom", "eps") if k in params} == set(OPT_HYPERS[name]), name


@pytest.mark.slow
def test_sgd_trains_otherwise_than_adam(sgd_run, digits_run):
    assert config(sgd_run)["trainer"]["opt"] == "sgd" and config(sgd_run)["trainer"]["mom"] == 0.9
    assert "trainer.opt=sgd" in summary(sgd_run)["overrides"]
    assert first_train_loss(sgd_run) != pytest.approx(first_train_loss(digits_run), rel=1e-3)
    sgd, adam = opt_state(sgd_run)[0], opt_state(digits_run)[0]
    assert "grad_avg" in sgd and "sqr_avg" not in sgd  # momentum, no second moment
    assert "sqr_avg" in adam


@pytest.mark.slow
@pytest.mark.parametrize("opt", ["lamb", "ranger"])
def test_lamb_and_ranger_train_digits_to_its_floor(tmp_path_factory, opt):
    run = train(tmp_path_factory, opt, f"trainer.opt={opt}", "trainer.lr=3e-2", epochs=5)
    assert summary(run)["final_metrics"]["accuracy"] >= 0.95


def max_probability(run) -> float:
    "The mean top softmax probability of the run's model over the digits."
    from fastai.learner import load_learner
    from sklearn.datasets import load_digits

    x = torch.tensor(load_digits().images, dtype=torch.float32).unsqueeze(1) / 16
    with torch.no_grad():
        model = load_learner(run / "model.pkl", cpu=True).model.eval()
        return float(torch.softmax(model(x), 1).max(1).values.mean())


@pytest.mark.slow
def test_label_smoothing_lowers_the_top_probability(tmp_path_factory, digits_run):
    run = train(tmp_path_factory, "smooth", "task.label_smoothing=0.3")
    assert config(run)["task"]["label_smoothing"] == 0.3
    assert max_probability(run) < max_probability(digits_run) - 0.1


@pytest.mark.slow
@pytest.mark.parametrize("mix", ["trainer.mixup=0.4", "trainer.cutmix=1.0"])
def test_mixing_raises_the_early_training_loss(tmp_path_factory, digits_run, mix):
    run = train(tmp_path_factory, "mix", mix)
    assert first_train_loss(run) > first_train_loss(digits_run) + 0.05
    assert summary(run)["final_metrics"]["accuracy"] > 0.8  # mixing makes training harder, not broken


@pytest.mark.slow
def test_clip_caps_the_gradient_norm(tmp_path_factory):
    probes = [f"+trainer.cbs.{name}={{_target_: test_techniques.GradNorm, record: {name}, order: {order}}}"
              for name, order in (("before", 10), ("after", 12))]
    train(tmp_path_factory, "clip", "trainer.clip=0.5", *probes, epochs=1)
    assert max(NORMS["before"]) > 1.0  # the raw gradients are larger than the cap
    assert len(NORMS["after"]) == len(NORMS["before"]) and max(NORMS["after"]) <= 0.5 * 1.0001


@pytest.fixture(scope="module")
def accumulated(tmp_path_factory):
    return train(tmp_path_factory, "accumulate", "trainer.accumulate=4")


@pytest.mark.slow
def test_accumulation_steps_the_optimizer_once_every_n_batches(accumulated, digits_run):
    batches = opt_state(digits_run)[0]["step"]  # Adam counts its steps: one a batch without accumulation
    assert batches == 2 * 22  # 1437 training digits, 22 whole batches of 64 an epoch
    assert opt_state(accumulated)[0]["step"] == batches // 4


@pytest.mark.slow
def test_accumulation_resumes_with_the_gradients_pending_at_the_stop(accumulated, tmp_path):
    "22 batches an epoch, a step every 4: the stop after epoch 1 leaves 2 batches' gradients that the next step needs."
    from test_resume import curves, resume, stopped

    run = stopped(tmp_path, 1, "trainer.epochs=2", "trainer.accumulate=4", "trainer.plots=false")
    resume(run)
    assert curves(run) == curves(accumulated)


@pytest.mark.slow
def test_activation_stats_of_a_healthy_run(sgd_run):
    stats = summary(sgd_run)["activation_stats"]
    assert stats["layers"] == 7 and stats["collapsed"] == []  # small_cnn: 3 x (conv, BatchNorm), the linear head
    with Image.open(sgd_run / "plots" / "activation_stats.png") as im:
        assert im.width > 800


@pytest.mark.slow
def test_collapsing_activations_are_found_and_diagnosed(tmp_path_factory, fxp):
    "Lessons 10-11: a CNN without BatchNorm at too high a learning rate; most of its ReLUs end up dead."
    run = train(tmp_path_factory, "collapse", "trainer.activation_stats=true", "model.net.bn=false", "trainer.lr=0.5")
    collapsed = summary(run)["activation_stats"]["collapsed"]
    assert collapsed and all(c["near_zero"] > 0.9 for c in collapsed)
    assert {c["layer"] for c in collapsed} <= {"0.0 Conv2d", "1.0 Conv2d", "2.0 Conv2d"}
    r = fxp("diagnose", run, "--json")
    diagnosis = json.loads(r.stdout)
    assert diagnosis["verdict"] == "activations collapse"
    first = min(collapsed, key=lambda c: (c["epoch"], c["index"]))
    assert diagnosis["epoch"] == first["epoch"]
    assert diagnosis["advice"].startswith(f"activations collapse in layer {first['layer']} at epoch {first['epoch']}: "
                                          f"lower the lr")


@pytest.mark.slow
def test_the_issue_command_on_mnist(tmp_path_factory, fxp):
    """Every technique of one run at once: the issue's command on 16 images a class and split of mnist_tiny, with
    augmentation for TTA to average over, 1 epoch; no plots but activation_stats.png, which the technique draws."""
    cwd = tmp_path_factory.mktemp("mnist")
    images = mnist_subset(cwd / "mnist", n=16)
    r = run_fxp("train", "task=mnist", f"data.path={images}", "trainer.opt=sgd", "trainer.mixup=0.4",
                "task.label_smoothing=0.1", "trainer.tta=true", "trainer.activation_stats=true", "trainer.epochs=1",
                "trainer.bs=16", "task.aug.max_rotate=20", "trainer.plots=false", cwd=cwd)
    assert r.returncode == 0, r
    assert "model.pkl with test-time augmentation: accuracy" in r.stdout
    run = newest_run(cwd)
    cfg, s = config(run), summary(run)
    assert (cfg["trainer"]["opt"], cfg["trainer"]["mixup"], cfg["task"]["label_smoothing"]) == ("sgd", 0.4, 0.1)
    assert s["tta_accuracy"] + s["tta_error_rate"] == pytest.approx(1)
    assert 0 <= s["tta_accuracy"] <= 1
    assert s["activation_stats"]["layers"] == 7 and (run / "plots" / "activation_stats.png").is_file()
    images = sorted((images / "valid" / "7").glob("*.png"))[:3]
    plain, tta = (json.loads(fxp("predict", run, *images, *flag, "--json").stdout) for flag in ([], ["--tta"]))
    assert [p["input"] for p in tta] == [str(f) for f in images]
    assert [p["probability"] for p in tta] != [p["probability"] for p in plain]  # the augmented copies count


@pytest.mark.slow
def test_predict_tta_needs_an_augmented_image_run(digits_run, fxp):
    assert_one_line_error(fxp("predict", digits_run, "--tta", digits_run / "plots" / "top_losses.png"),
                          "--tta", "digits")


@pytest.mark.parametrize("overrides, mentions", [
    (["trainer.opt=adamw"], ["trainer.opt", "sgd, rmsprop"]),
    (["trainer.mixup=-0.4"], ["trainer.mixup", "≥ 0"]),
    (["trainer.accumulate=0"], ["trainer.accumulate", "≥ 1"]),
    (["trainer.clip=0"], ["trainer.clip", "> 0"]),
    (["task.label_smoothing=1"], ["task.label_smoothing", "[0, 1)"]),
    (["trainer.opt=sgd", "trainer.sqr_mom=0.9"], ["trainer.sqr_mom", "sgd has no sqr_mom"]),
    (["trainer.mixup=0.4", "trainer.cutmix=1"], ["trainer.mixup", "trainer.cutmix"]),
    (["task=adult", "trainer.mixup=0.4"], ["trainer.mixup", "tabular", "classification, multilabel"]),
    (["task=camvid", "trainer.tta=true"], ["trainer.tta=true", "segmentation"]),
    (["trainer.tta=true"], ["trainer.tta", "digits"]),
    (["task=adult", "task.label_smoothing=0.1"], ["task.label_smoothing", "a tabular task has no label_smoothing",
                                                  "classification, text tasks do"]),
])
def test_nonsense_is_one_line_naming_the_key(fxp, overrides, mentions):
    assert_one_line_error(fxp("train", *overrides), *mentions)


def test_a_momentum_that_one_cycle_overrides_is_a_warning():
    from omegaconf import OmegaConf

    from fxp.checks import mom_cycled
    from fxp.schema import Config

    cfg = OmegaConf.structured(Config)
    cfg.trainer.mom = 0.8
    assert "trainer.mom=0.8 changes nothing" in mom_cycled(cfg)
    cfg.trainer.opt = "sgd"  # no momentum by default: trainer.mom switches it on, then one-cycle cycles it
    assert mom_cycled(cfg) is None
    cfg.trainer.opt, cfg.trainer.stages[0].policy = "adam", "fit"
    assert mom_cycled(cfg) is None
