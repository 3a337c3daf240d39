"""Every bad-input path of `fxp` (in-process, one through the installed command): exit code 2, one line on stderr
naming the bad key or file, no traceback on the terminal; where a run folder was made, its train.log holds the
traceback and summary.json the status.
"""
import shutil

import pytest

from conftest import assert_one_line_error, mnist_subset, newest_run, run_dirs, run_fxp, run_installed, summary
from fxp import config

# --- config errors: answered before any run folder is made -------------------------------------------------


def no_run_folder(r):
    assert not (r.cwd / "outputs").exists(), f"a config error made a run folder: {run_dirs(r.cwd)}"


def test_unknown_task_lists_the_valid_ones(fxp):
    r = fxp("train", "task=petz")
    line = assert_one_line_error(r, "'petz'")
    for task in config.choices("task"):
        assert task in line
    no_run_folder(r)


def test_unknown_model_lists_the_valid_ones(fxp):
    r = fxp("train", "model=resnet19")
    line = assert_one_line_error(r, "'resnet19'")
    for model in config.choices("model"):
        assert model in line
    no_run_folder(r)


def test_unknown_trainer_option_lists_the_valid_ones(fxp):
    r = fxp("train", "trainer=lesson9")
    line = assert_one_line_error(r, "'lesson9'")
    for name in config.choices("trainer"):
        assert name in line
    no_run_folder(r)


def test_unknown_key_lists_the_valid_keys(fxp):
    r = fxp("train", "trainer.epoch=3")
    line = assert_one_line_error(r, "trainer.epoch")
    assert "did you mean epochs;" in line and "valid keys" in line
    for key in ("bs", "epochs", "lr", "stages", "seed"):
        assert key in line.split("valid keys")[1]
    no_run_folder(r)


def test_unknown_top_level_key_lists_the_groups(fxp):
    r = fxp("train", "trainr.bs=8")
    line = assert_one_line_error(r, "trainr")
    for key in ("task", "data", "model", "trainer"):
        assert key in line.split("trainr")[-1]
    no_run_folder(r)


def test_wrong_type_names_the_key_and_value(fxp):
    r = fxp("train", "trainer.bs=abc")
    assert_one_line_error(r, "trainer.bs", "abc")
    no_run_folder(r)


@pytest.mark.parametrize("override, key", [("trainer.lr=fast", "trainer.lr"),
                                           ("trainer.precision=fp8", "trainer.precision"),
                                           ("trainer.stages.0.policy=fit_twice", "trainer.stages.0.policy"),
                                           ("trainer.device=tpu", "trainer.device")])
def test_bad_values_name_the_key(fxp, override, key):
    r = fxp("train", override)
    assert_one_line_error(r, key, override.split("=")[1])
    no_run_folder(r)


def test_missing_data_path_names_it(fxp, tmp_path):
    r = fxp("train", "task=mnist", f"data.path={tmp_path / 'mnist_nowhere'}")
    assert_one_line_error(r, "data.path", "mnist_nowhere")
    no_run_folder(r)


def test_override_that_is_not_valid_grammar_names_it(fxp):
    r = fxp("train", "trainer.lr=[1e-3")
    assert_one_line_error(r, "trainer.lr")


@pytest.mark.parametrize("args, mentions", [
    (["-m", "task=digits,digts"], ["'digts'", "digits", "mnist"]),
    (["-m", "trainer.bs=8,abc"], ["trainer.bs", "abc"]),
    (["-m", "trainer.lr=1e-3,3e-e"], ["trainer.lr", "3e-e"]),
    (["-m", "trainer.seed=1,2", "trainer.epoch=1"], ["trainer.epoch", "valid keys"]),
])
def test_sweep_value_typo_fails_before_any_job_runs(fxp, args, mentions):
    r = fxp("train", *args)
    assert_one_line_error(r, *mentions)
    no_run_folder(r)


def test_a_sweep_without_dash_m_says_to_add_it(fxp):
    r = fxp("train", "trainer.seed=1,2")
    assert_one_line_error(r, "-m")
    no_run_folder(r)


# --- data and run errors: a run folder exists, holding the traceback ----------------------------------------


def assert_failed_run(r, status: str = "failed"):
    "The run folder the error line points at: train.log has the traceback, summary.json the status and error."
    run = newest_run(r.cwd)
    assert str(run) in r.stderr, "the error names the run folder"
    log = (run / "train.log").read_text()
    assert "Traceback (most recent call last)" in log
    s = summary(run)
    assert s["status"] == status
    assert s["error"] and s["error"].splitlines()[-1] in log
    return run


def test_no_data_and_no_network_says_how_to_point_at_a_local_copy(fxp):
    r = fxp("train", "task=mnist")  # URLs.MNIST_TINY; subprocesses here have no network
    assert_one_line_error(r, "MNIST_TINY", "data.path=")
    assert_failed_run(r)


def test_missing_csv_column_lists_the_columns(fxp, tmp_path, data):
    src = data("mnist_tiny")
    (tmp_path / "labels.csv").write_text("file,digit\n" + "".join(
        f"{f.relative_to(src)},{f.parent.name}\n" for f in sorted(src.glob("train/*/*.png"))[::50]))
    r = fxp("train", "task=csv_images", f"data.path={src}", f"task.csv={tmp_path / 'labels.csv'}",
            "task.fn_col=name", "model=small_cnn", "trainer=default")
    line = assert_one_line_error(r, "'name'", "labels.csv")
    assert "file, digit" in line  # the columns it does have
    assert_failed_run(r)


def test_csv_listing_missing_files_names_one(fxp, tmp_path):
    (tmp_path / "labels.csv").write_text("name,label\na.png,x\nb.png,y\n")
    r = fxp("train", "task=csv_images", f"data.path={tmp_path}", "model=small_cnn")
    assert_one_line_error(r, "a.png", "labels.csv")
    assert_failed_run(r)


@pytest.fixture
def corrupt_folder(tmp_path, data):
    "A copy of 8 mnist_tiny images per class and split, plus one PNG of garbage bytes."
    root = mnist_subset(tmp_path / "tiny")
    bad = root / "train" / "3" / "garbage.png"
    bad.write_bytes(bytes(range(256)) * 3)
    return root, bad


@pytest.mark.parametrize("runner", [run_fxp, pytest.param(run_installed, marks=pytest.mark.slow)],
                         ids=["in-process", "installed"])
def test_corrupt_image_names_the_file_and_the_way_out(corrupt_folder, tmp_path, runner):
    "Also through the installed command: its real stderr (warnings included) is the one line, whatever torch prints."
    root, bad = corrupt_folder
    r = runner("train", "task=mnist", f"data.path={root}", "trainer.bs=4", "trainer.epochs=1", cwd=tmp_path)
    assert_one_line_error(r, str(bad), "data.skip_bad=true")
    run = assert_failed_run(r)
    assert not (run / "model.pkl").exists()


@pytest.mark.slow
def test_skip_bad_completes_and_counts_the_skipped_images(fxp, corrupt_folder):
    root, bad = corrupt_folder
    r = fxp("train", "task=mnist", f"data.path={root}", "data.skip_bad=true", "trainer.bs=4", "trainer.epochs=1")
    assert r.returncode == 0, r
    s = summary(newest_run(r.cwd))
    assert s["status"] == "completed"
    assert s["skipped_images"] == 1
    assert s["items_train"] + s["items_valid"] == 32  # the 32 good images, the bad one left out


def test_empty_validation_split(fxp, tmp_path):
    root = mnist_subset(tmp_path / "tiny", n=4, splits=("train",))  # no valid/ folder
    r = fxp("train", "task=mnist", f"data.path={root}", "trainer.bs=2", "trainer.epochs=1")
    assert_one_line_error(r, "valid split is empty")
    assert_failed_run(r)


@pytest.mark.slow
def test_batch_size_larger_than_the_training_set(fxp, tmp_path):
    root = mnist_subset(tmp_path / "tiny", n=4)  # 8 training images
    r = fxp("train", "task=mnist", f"data.path={root}", "trainer.bs=64", "trainer.epochs=1")
    assert_one_line_error(r, "trainer.bs=64")
    assert_failed_run(r)


@pytest.mark.slow
def test_nan_loss_ends_the_run_as_diverged(fxp):
    r = fxp("train", "trainer.lr=1e4", "trainer.epochs=2")  # the highest lr fxp takes: NaN within the first batches
    assert_one_line_error(r, "loss became nan", "trainer.lr")
    run = assert_failed_run(r, status="diverged")
    assert summary(run)["error"].startswith("loss became nan")
    assert not (run / "model.pkl").exists()


def test_pretrained_weights_unavailable_offline_says_pretrained_false(fxp, tmp_path, data):
    src = data("oxford-iiit-pet") / "images"
    (tmp_path / "pets" / "images").mkdir(parents=True)
    for breed in ("Abyssinian", "Bengal", "american_bulldog"):
        for f in sorted(src.glob(f"{breed}_*.jpg"))[:3]:
            shutil.copy(f, tmp_path / "pets" / "images" / f.name)
    r = fxp("train", "task=pets", f"data.path={tmp_path / 'pets'}", "model=resnet18", "trainer.bs=2")
    assert_one_line_error(r, "resnet18", "model.pretrained=false")
    assert_failed_run(r)


@pytest.mark.slow
def test_monitor_metric_not_recorded_names_the_recorded_ones(fxp):
    r = fxp("train", "task.monitor.metric=f1", "trainer.epochs=1")
    assert_one_line_error(r, "task.monitor.metric", "'f1'", "accuracy", "valid_loss")


@pytest.mark.slow
def test_cuda_asked_for_on_a_cpu_machine(fxp):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = fxp("train", "trainer.device=cuda", "trainer.epochs=1")
    assert_one_line_error(r, "trainer.device=cuda", "trainer.device=auto")


@pytest.mark.slow
def test_half_precision_on_cpu_is_one_line(fxp):
    r = fxp("train", "trainer.precision=bf16", "trainer.device=cpu", "trainer.epochs=1")
    assert_one_line_error(r, "trainer.precision=bf16", "fp32")


@pytest.mark.slow
def test_predict_on_a_missing_input(fxp, digits_run, tmp_path):
    r = fxp("predict", digits_run, tmp_path / "missing.png")
    assert_one_line_error(r, "input not found", str(tmp_path / "missing.png"))
