"""The GPU path (issue 26 item 5): what only a CUDA device shows. Marked `gpu`: skipped where torch sees none (CI);
`bash bench/gpu_check.sh` runs them (`-m gpu`) on a machine with one. Each trains a small set for seconds there."""
import json

import pytest

from conftest import metrics_rows, need_data, newest_run, run_fxp, summary
from fxp import diagnose

pytestmark = pytest.mark.gpu


def trained(tmp_path, *overrides: str):
    "A completed run of `fxp train trainer.device=cuda OVERRIDES` in tmp_path: its folder."
    r = run_fxp("train", "trainer.device=cuda", *overrides, cwd=tmp_path)
    assert r.returncode == 0, r
    run = newest_run(tmp_path)
    assert summary(run)["device"].startswith("cuda"), summary(run)
    return run


@pytest.mark.parametrize("speedups", [
    ("trainer.precision=bf16", "trainer.channels_last=true"),
    ("trainer.precision=fp16",),  # fastai's GradScaler
    ("trainer.precision=bf16", "trainer.compile=true"),
], ids=["bf16-channels-last", "fp16", "bf16-compile"])
def test_digits_learns_with_each_speedup(tmp_path, speedups):
    s = summary(trained(tmp_path, *speedups))
    assert s["status"] == "completed" and s["best_metrics"]["accuracy"] >= 0.95, s


def test_the_time_split_on_cuda_adds_up_and_files_decoded_every_batch_are_input_bound(tmp_path):
    "The Recorder's loss copy each batch waits for the device: step_s holds the GPU's work, data_s the loader's."
    mnist = need_data("mnist_tiny")
    run = trained(tmp_path, "task=mnist", f"data.path={mnist}", "data.cache=off", "trainer.epochs=2")
    for r in metrics_rows(run):
        data, step, time = (float(r[k]) for k in ("data_s", "step_s", "time"))
        assert 0 < step and 0 <= data and data + step <= time, r
    assert "input-bound" in [f["verdict"] for f in diagnose.diagnose(run)["findings"]]


def test_a_cuda_trace_holds_the_kernels_and_the_table_sorts_by_device_time(tmp_path):
    mnist = need_data("mnist_tiny")
    run = trained(tmp_path, "task=mnist", f"data.path={mnist}", "trainer.epochs=1", "trainer.profile=3")
    events = json.loads((run / "profile" / "train.pt.trace.json").read_text())["traceEvents"]
    assert any(e.get("cat") == "kernel" for e in events), "no CUDA kernel in the trace"
    top = (run / "profile" / "top_ops.txt").read_text()
    assert "3 training steps" in top and "self_device_time_total" in top and "CUDA" in top


def test_macs_do_not_depend_on_the_device(tmp_path):
    cpu = summary(trained_on(tmp_path / "cpu", "cpu"))["model_size"]
    cuda = summary(trained_on(tmp_path / "cuda", "cuda"))["model_size"]
    assert cpu == cuda and cpu["macs"] > 0, (cpu, cuda)


def trained_on(folder, device: str):
    folder.mkdir()
    r = run_fxp("train", f"trainer.device={device}", "trainer.epochs=1", cwd=folder)
    assert r.returncode == 0, r
    return newest_run(folder)
