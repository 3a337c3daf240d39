"""trainer.bs=auto, out-of-memory recovery and trainer.precision=auto (fxp.batchsize, fxp.precision).

The selection rules are tested on fake measurements (a training-step callable, a memory reader); the CPU path and the
recovery (through an injected out-of-memory error, FXP_INJECT_OOM) on real runs; the CUDA probe where a GPU is."""
import threading

import pytest
import torch

from conftest import assert_one_line_error, metrics_rows, mnist_subset, need_data, newest_run, run_fxp, summary
from fxp import batchsize, precision
from fxp.batchsize import GIB, Plan, between, by_memory, by_speed, candidates
from fxp.errors import FxpError

# --- the rules, on fake measurements --------------------------------------------------------------------------------


def test_candidates_double_from_two_or_the_step_and_stop_at_the_training_set():
    assert candidates(709) == [2, 4, 8, 16, 32, 64, 128, 256, 512]
    assert candidates(709, step=24) == [24, 48, 96, 192, 384]
    assert candidates(709, lo=16, hi=256) == [16, 32, 64, 128, 256]
    assert candidates(100, step=24, lo=16, hi=256) == [24, 48, 96]
    assert candidates(1) == [] and candidates(20, step=24) == []
    assert between(96, 192, 24) == 144 and between(96, 120, 24) is None


def fake_device(fits_up_to: int, gb_per_item: float = 0.01):
    """A device whose training step at size n runs out of memory above `fits_up_to` items and otherwise peaks at
    n × `gb_per_item` GiB: (train, peak, the sizes tried)."""
    tried, last = [], {}

    def train(n):
        tried.append(n)
        if n > fits_up_to:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        last["peak"] = n * gb_per_item * GIB
        return 0.1

    return train, lambda: last["peak"], tried


def test_memory_rule_keeps_the_largest_size_under_the_fraction(monkeypatch):
    freed = []
    monkeypatch.setattr(batchsize, "free_memory", lambda: freed.append(True))
    train, peak, tried = fake_device(fits_up_to=10_000)
    found = by_memory(train, peak, limit=0.85 * GIB, sizes=candidates(709), top=709)
    assert found["chosen"] == 64 and tried == [2, 4, 8, 16, 32, 64, 128]  # 128 peaks at 1.28 GiB: the doubling ends
    assert found["tried"][-1] == {"bs": 128, "peak_mem_gb": 1.28, "result": "over mem_fraction"}
    assert found["peak_mem_gb"] == 0.64 and "128 over mem_fraction" in found["reason"] and not freed


def test_memory_rule_stops_at_out_of_memory_and_frees_it(monkeypatch):
    freed = []
    monkeypatch.setattr(batchsize, "free_memory", lambda: freed.append(True))
    train, peak, tried = fake_device(fits_up_to=100)
    found = by_memory(train, peak, limit=80 * GIB, sizes=candidates(709), top=709)
    assert found["chosen"] == 64 and tried[-1] == 128 and freed == [True]
    assert found["tried"][-1] == {"bs": 128, "result": "out of memory"}


def test_memory_rule_with_a_step_searches_between_the_last_fit_and_the_first_failure(monkeypatch):
    monkeypatch.setattr(batchsize, "free_memory", lambda: None)
    train, peak, tried = fake_device(fits_up_to=130)
    found = by_memory(train, peak, limit=80 * GIB, sizes=candidates(709, 24), top=709, step=24)
    assert tried == [24, 48, 96, 192, 144, 120] and found["chosen"] == 120


def test_memory_rule_never_goes_above_the_training_set(monkeypatch):
    train, peak, tried = fake_device(fits_up_to=10_000)
    found = by_memory(train, peak, limit=80 * GIB, sizes=candidates(100, 8), top=100, step=8)
    assert found["chosen"] == 96 and max(tried) == 96 and "the training set has 100 items" in found["reason"]
    assert by_memory(*fake_device(10_000)[:2], limit=80 * GIB, sizes=candidates(100), top=100)["chosen"] == 64


def test_memory_rule_says_what_to_change_when_nothing_fits(monkeypatch):
    monkeypatch.setattr(batchsize, "free_memory", lambda: None)
    with pytest.raises(FxpError, match=r"a batch of 2 does not fit: its training step ran out of memory") as e:
        by_memory(*fake_device(fits_up_to=1)[:2], limit=80 * GIB, sizes=candidates(709), top=709)
    assert "trainer.mem_fraction" in str(e.value) and "trainer.precision=bf16" in str(e.value)
    with pytest.raises(FxpError, match=r"a batch of 2 does not fit: its training step peaked at 2.00 GiB"):
        by_memory(*fake_device(10_000, gb_per_item=1)[:2], limit=1 * GIB, sizes=candidates(709), top=709)


def test_memory_rule_lets_other_errors_through():
    def train(n):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes"):
        by_memory(train, lambda: 0, limit=GIB, sizes=[2, 4], top=709)


def test_speed_rule_keeps_the_smallest_size_near_the_fastest():
    seconds = {16: 0.05, 32: 0.06, 64: 0.08, 128: 0.15, 256: 0.29}  # items/s: 320, 533, 800, 853, 883
    found = by_speed(lambda n: seconds[n], [16, 32, 64, 128, 256])
    assert found["chosen"] == 64 and [t["bs"] for t in found["tried"]] == [16, 32, 64, 128, 256]
    assert found["peak_mem_gb"] is None and "256: 882.8" in found["reason"]
    slow = by_speed(lambda n: {16: 1.0, 32: 2.5}[n], [16, 32, 64])  # no larger size once a step takes 2 s
    assert [t["bs"] for t in slow["tried"]] == [16, 32] and slow["chosen"] == 16


def test_out_of_memory_errors_are_told_apart():
    assert batchsize.is_oom(torch.OutOfMemoryError("CUDA out of memory"))
    assert batchsize.is_oom(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert not batchsize.is_oom(RuntimeError("expected scalar type Half but found Float"))


def oom(bs: int, lr_scale: float = 1.0):
    return batchsize.OutOfMemory("train", 1, 2, bs, lr_scale, "OutOfMemoryError: CUDA out of memory")


@pytest.mark.parametrize("scale_lr, factor", [(True, 0.25), (False, 0.5)])
def test_halving_records_the_change_and_the_lr_factor(scale_lr, factor):
    from types import SimpleNamespace

    info = {}
    plan = Plan(SimpleNamespace(bs="auto", scale_lr=scale_lr), info)
    assert plan.sized("train", None) is None  # bs=auto: probed
    assert plan.sized("train", {"bs": 64, "lr_scale": 1.0}).bs == 64  # fxp resume: the checkpoint's size
    line = plan.halve(oom(64, 0.5))
    assert info["bs_changes"] == [{"step": "train", "stage": 1, "epoch": 2, "from": 64, "to": 32,
                                   "lr_scale": factor,
                                   "error": "OutOfMemoryError: CUDA out of memory"}]
    assert "batch size 32" in line and (("× 0.25" in line) == scale_lr)
    sized = plan.sized("train", {"bs": 64, "lr_scale": 0.5})  # the halving wins over the older checkpoint
    assert (sized.bs, sized.probes) == (32, False)
    plan.halve(oom(3))  # an odd size: floored at 2, the rate scaled as the batch
    assert (info["bs_changes"][-1]["to"], info["bs_changes"][-1]["lr_scale"]) == (2, 2 / 3 if scale_lr else 1.0)
    with pytest.raises(FxpError, match=r"out of memory at batch size 2 \(stage 1 epoch 2: .*nothing smaller trains"):
        plan.halve(oom(2))


# --- precision=auto's check -----------------------------------------------------------------------------------------


def test_fp16_check_passes_rounding_and_refuses_overflow_and_drift():
    out32 = torch.tensor([[1.0, -2.0, 3.0]])
    assert precision.fp16_differs(out32, out32.half() * 1.001, torch.tensor(0.5)) is None
    assert "loss of inf" in precision.fp16_differs(out32, out32.half(), torch.tensor(float("inf")))
    assert "not finite" in precision.fp16_differs((out32,), (torch.tensor([[1.0, float("nan"), 3]]),), 0.5)
    assert "differed from fp32's by 33%" in precision.fp16_differs(out32, torch.tensor([[1.0, -2.0, 2.0]]), 0.5)


def test_auto_precision_on_the_cpu_is_fp32_with_its_reason():
    chosen = precision.choose(learn=None, device=torch.device("cpu"))
    assert chosen == {"chosen": "fp32", "reason": "fastai's mixed precision autocasts on CUDA only: the cpu trains "
                                                  "in fp32"}


def tiny_learner(loss_func=None):
    "A fastai learner on 32 random rows (4 features, 2 classes), quiet."
    from fastai.callback.progress import ProgressCallback
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner
    from torch import nn

    from fxp.data import TensorDL, Tensors

    g = torch.Generator().manual_seed(0)
    ds = Tensors(torch.randn(32, 4, generator=g), torch.randint(0, 2, (32,), generator=g))
    dls = DataLoaders(TensorDL(ds, bs=8, shuffle=True), TensorDL(ds, bs=8))
    learn = Learner(dls, nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2)),
                    loss_func=loss_func or nn.CrossEntropyLoss())
    learn.remove_cb(ProgressCallback)
    learn.logger = lambda *_: None
    return learn


def test_nan_loss_under_fp16_names_the_epoch_and_the_precisions():
    from fxp.callbacks import DivergenceGuard
    from fxp.errors import Diverged

    learn = tiny_learner(loss_func=lambda out, y: out.sum() * float("nan"))
    learn.add_cb(DivergenceGuard()).to_fp16()
    with pytest.warns(UserWarning), pytest.raises(Diverged) as e:  # CUDA's autocast and grad scaler, off on a CPU
        learn.fit(1)
    assert str(e.value) == ("loss became nan in stage 1 epoch 1 under fp16 mixed precision; train in bf16 where the "
                            "GPU has it (trainer.precision=bf16) or in fp32 (trainer.precision=fp32), or lower the "
                            "learning rate (trainer.lr=...)")


def test_a_probe_inside_unchanged_leaves_the_learner_as_it_was():
    learn = tiny_learner()
    learn.fit(1)
    weights = {k: v.clone() for k, v in learn.model.state_dict().items()}
    opt = [{k: v.clone() for k, v in s.items() if torch.is_tensor(v)} for s in learn.opt.state_dict()["state"]]
    expected = torch.get_rng_state()
    with batchsize.unchanged(learn):
        learn.fit(2, lr=1.0)
    assert all(torch.equal(v, learn.model.state_dict()[k]) for k, v in weights.items())
    assert all(torch.equal(v, s[k]) for o, s in zip(opt, learn.opt.state_dict()["state"]) for k, v in o.items())
    assert torch.equal(torch.get_rng_state(), expected)


def test_the_cuda_probe_trains_at_each_size_and_reads_its_peak(monkeypatch):
    "probe()'s CUDA rule with real training steps (on the CPU) and fake memory readings: a GiB an item, 10 GiB in all."
    from types import SimpleNamespace

    learn = tiny_learner()
    dl = learn.dls.train
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: None)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=10 * GIB))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "a GPU")
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: learn.dls.train.bs * GIB)
    found = batchsize.probe(learn, SimpleNamespace(bs_step=None, mem_fraction=0.85), torch.device("cuda"))
    assert found["chosen"] == 8 and [t["bs"] for t in found["tried"]] == [2, 4, 8, 16]  # 16 GiB > 8.5 GiB
    assert found["device"] == "a GPU, 10.0 GiB × mem_fraction 0.85" and learn.dls.train is dl
    assert learn.train_iter == batchsize.STEPS  # the last size's steps ran (fastai counts them per fit)


def test_auto_batch_size_needs_one_process():
    from hydra import compose, initialize_config_module

    from fxp import config
    from fxp.errors import ConfigError

    refused = {("trainer.bs=auto", "trainer.devices=2"): "trainer.bs=auto probes one process's memory, but this run "
               "has 2 processes", ("trainer.mem_fraction=0",): r"trainer.mem_fraction=0.0 is not valid: give a number "
               r"in \(0, 1\]"}
    for overrides, says in refused.items():
        with initialize_config_module("fxp.conf", version_base="1.3"), pytest.raises(ConfigError, match=says):
            config.validate(compose("config", overrides=list(overrides)))


# --- real runs on the CPU -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory):
    """A digits run with bs=auto and precision=auto (CPU) stopped after the first of its 2 epochs, then resumed: its
    folder, the size chosen as it stopped, the output of its start and of its resume."""
    from test_resume import interrupt_after

    cwd = tmp_path_factory.mktemp("auto_run")
    with interrupt_after(1):
        r = run_fxp("train", "trainer.bs=auto", "trainer.precision=auto", "trainer.epochs=2", "trainer.plots=false",
                    cwd=cwd)
    assert r.returncode == 130, r
    run = newest_run(cwd)
    chosen = summary(run)["bs_auto"]["chosen"]
    resumed = run_fxp("resume", run, cwd=cwd)
    assert resumed.returncode == 0, resumed
    return run, chosen, r, resumed


@pytest.mark.slow
def test_auto_batch_size_records_what_it_tried_and_chose(auto_run):
    run, _, r, _ = auto_run
    s = summary(run)
    found = s["bs_auto"]
    assert [t["bs"] for t in found["tried"]] == [16, 32, 64, 128, 256]  # digits: 1437 training items
    assert all(t["items_s"] > 0 for t in found["tried"]) and found["device"] == "cpu"
    assert found["chosen"] in (16, 32, 64, 128, 256) and s["bs"] == found["chosen"]
    assert s["precision"]["chosen"] == "fp32" and "CUDA only" in s["precision"]["reason"]
    assert f"bs=auto: {found['chosen']} (cpu: " in r.stdout and r.stdout.count("precision: fp32 (") == 1
    assert s["status"] == "completed" and s["final_metrics"]["accuracy"] > 0.5  # 0.1 by chance


@pytest.mark.slow
def test_auto_batch_size_trains_as_the_size_it_chose(auto_run, tmp_path):
    "The probe leaves no trace: the run equals one given the chosen size (and fp32)."
    run, _, _, _ = auto_run
    r = run_fxp("train", f"trainer.bs={summary(run)['bs']}", "trainer.epochs=2", "trainer.plots=false", cwd=tmp_path)
    assert r.returncode == 0, r
    assert metrics_rows(newest_run(tmp_path))[0]["train_loss"] == metrics_rows(run)[0]["train_loss"]


@pytest.mark.slow
def test_a_saved_auto_run_batches_at_the_size_it_trained(auto_run):
    "fxp val, export and clean rebuild the run's loaders: at the size it ended at, not at 'auto'; fxp resume probes."
    from fxp import resume, saved

    run = auto_run[0]
    assert saved.open_run(run, "fxp val").config([]).trainer.bs == summary(run)["bs"]
    assert saved.open_run(run, "fxp clean").batched(saved.open_run(run, "fxp clean").written).trainer.bs > 1
    assert resume.saved_config(run, [], None).trainer.bs == "auto"


@pytest.mark.slow
def test_a_resumed_auto_run_goes_on_at_its_size(auto_run):
    "fxp resume takes the size from the checkpoint: no second probe, which could pick another."
    run, chosen, _, r = auto_run
    s = summary(run)
    assert "bs=auto" not in r.stdout and s["status"] == "completed" and s["bs"] == chosen == s["bs_auto"]["chosen"]
    assert [row["epoch"] for row in metrics_rows(run)] == ["1", "2"]


def event_writers() -> set:
    "TensorBoard's writer threads alive in this process: one per event file not yet closed."
    return {t for t in threading.enumerate() if type(t).__name__ == "_AsyncWriterThread"}


@pytest.mark.slow
def test_out_of_memory_halves_the_batch_and_goes_on(tmp_path, monkeypatch):
    """The run goes on from epoch 1's checkpoint at half the batch; TensorBoard's event file of the fit that failed is
    closed (the retry opens its own) and the events read back as one curve."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv(batchsize.INJECT, "epoch:2")
    writers = event_writers()
    r = run_fxp("train", "trainer.epochs=3", "trainer.scale_lr=true", "trainer.stages=[{policy: fit}]",
                "trainer.save_best=false", "trainer.plots=false", "logger=tensorboard", cwd=tmp_path)
    assert r.returncode == 0, r
    run = newest_run(tmp_path)
    s = summary(run)
    assert s["status"] == "completed" and s["bs"] == 32
    assert [(c["from"], c["to"], c["epoch"], c["lr_scale"]) for c in s["bs_changes"]] == [(64, 32, 2, 0.5)]
    rows = metrics_rows(run)
    assert [row["epoch"] for row in rows] == ["1", "2", "3"]  # continuous: epoch 2 retrained once, from epoch 1
    assert [float(row["lr"]) for row in rows] == [0.01, 0.005, 0.005]  # a fit stage's constant lr, halved
    line = "out of memory at batch size 64 (stage 1 epoch 2); going on from the last checkpoint at batch size 32"
    assert line in r.stdout and line in (run / "train.log").read_text()
    assert s["final_metrics"]["accuracy"] > 0.9
    assert event_writers() == writers  # the failed fit's writer too: its thread was left running
    events = EventAccumulator(str(run / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("accuracy")] == [1, 2, 3]


def test_out_of_memory_at_a_batch_of_two_fails_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv(batchsize.INJECT, "epoch:1")
    r = run_fxp("train", "trainer.bs=2", "trainer.epochs=1", cwd=tmp_path)
    assert_one_line_error(r, "out of memory at batch size 2 (stage 1 epoch 1", "nothing smaller trains")
    assert summary(newest_run(tmp_path))["status"] == "failed"


@pytest.mark.slow
def test_a_stage_with_larger_images_probes_again(tmp_path):
    "Progressive resizing probes again, on the learner as it stands (put back as it was: the unit test above)."
    mnist_subset(tmp_path / "tiny", n=8)
    r = run_fxp("train", "task=mnist", "data.path=tiny", "task.size=16", "trainer.bs=auto",
                "trainer.stages=[{epochs: 1}, {epochs: 1, size: 20}]", "trainer.plots=false", cwd=tmp_path)
    assert r.returncode == 0, r
    s = summary(newest_run(tmp_path))
    assert s["bs_auto"]["chosen"] == 16 and s["bs"] == 16  # 16 training images: the one size there is
    assert [(p["stage"], p["chosen"]) for p in s["bs_auto"]["resized"]] == [(2, 16)]
    assert "bs=auto: 16 for stage 2's larger images" in r.stdout and s["epochs"] == 2


@pytest.mark.slow
def test_auto_batch_size_on_mnist_tiny(tmp_path):
    "The done-when line: fxp train task=mnist data.path=.../mnist_tiny trainer.bs=auto trainer.epochs=1 (no plots)."
    r = run_fxp("train", "task=mnist", f"data.path={need_data('mnist_tiny')}", "trainer.bs=auto", "trainer.epochs=1",
                "trainer.plots=false", cwd=tmp_path)
    assert r.returncode == 0, r
    s = summary(newest_run(tmp_path))
    assert [t["bs"] for t in s["bs_auto"]["tried"]] == [16, 32, 64, 128, 256] and s["bs"] == s["bs_auto"]["chosen"]
    # the size is the fastest one measured, so a loaded machine may choose 256: 3 steps in the epoch, accuracy 0.63
    # (0.95 at 128); a run that did not learn stays at the majority share
    assert s["final_metrics"]["accuracy"] > s["baselines"]["accuracy"]["value"] + 0.1, s


# --- on a GPU -------------------------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_cuda_probe_fits_memory_and_picks_a_precision(tmp_path):
    r = run_fxp("train", "trainer.device=cuda", "trainer.bs=auto", "trainer.precision=auto", "trainer.epochs=1",
                cwd=tmp_path)
    assert r.returncode == 0, r
    s = summary(newest_run(tmp_path))
    found = s["bs_auto"]
    assert found["chosen"] == max(t["bs"] for t in found["tried"] if "result" not in t) == s["bs"]
    assert 0 < found["peak_mem_gb"] and "mem_fraction 0.85" in found["device"]
    expected = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else ("fp16", "fp32")
    assert s["precision"]["chosen"] in expected and s["precision"]["reason"]


@pytest.mark.gpu
def test_cuda_probe_says_what_to_change_when_nothing_fits(tmp_path):
    r = run_fxp("train", "trainer.device=cuda", "trainer.bs=auto", "trainer.mem_fraction=1e-9", cwd=tmp_path)
    assert_one_line_error(r, "a batch of 2 does not fit", "trainer.mem_fraction")


@pytest.mark.gpu
def test_fp16_agrees_with_fp32_on_a_small_cnn(tmp_path):
    from hydra import compose, initialize_config_module

    from fxp import config, dispatch, train

    with initialize_config_module("fxp.conf", version_base="1.3"):
        cfg = config.validate(compose("config", overrides=["trainer.device=cuda"]))
    step = dispatch.steps(dispatch.kind_module(cfg.task.kind), cfg)[0]
    device = train.setup(cfg)
    learn = step.learner(step.dls(train.StepContext(device, tmp_path, tmp_path, {})), None)
    assert precision.fp16_differs(*precision.outputs(learn)) is None


@pytest.mark.gpu
def test_free_memory_leaves_no_autocast_behind():
    torch.autocast("cuda", dtype=torch.float16).__enter__()  # as a forward pass that ran out of memory leaves it
    batchsize.free_memory()
    assert not torch.is_autocast_enabled("cuda")
