"""Where the time goes and what the model costs (issue 26 item 4): metrics.csv's data_s and step_s, `fxp diagnose`'s
input-bound finding on real runs, `trainer.profile`'s trace and table, the model's size in summary.json."""
import json
import math

import pytest
import torch
from torch import nn

from conftest import metrics_rows, need_data, newest_run, run_fxp, summary
from fxp import diagnose, saved
from fxp.profiling import macs


def hand_count(model: nn.Module, x: torch.Tensor) -> int:
    "Multiply-accumulates of the convolutions and linear layers by hooks: an output value costs one per weight it sees."
    counts = []

    def hook(m, _, out):
        if isinstance(m, nn.Conv2d):
            counts.append(out.numel() * m.in_channels // m.groups * math.prod(m.kernel_size))
        elif isinstance(m, nn.Linear):
            counts.append(out.numel() * m.in_features)

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return sum(counts)


def test_macs_count_each_multiply_accumulate_of_convolutions_and_matrix_products():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 10 * 10, 5))
    assert macs(net, (torch.zeros(1, 3, 10, 10),)) == {"macs": 8 * 3 * 9 * 100 + 800 * 5, "input": [3, 10, 10]}
    assert net.training  # put back as it was


def test_summary_gives_the_model_s_parameters_and_macs_for_one_input(digits_run):
    size = summary(digits_run)["model_size"]
    model = saved.open_run(digits_run, "test").learn.model
    n = sum(p.numel() for p in model.parameters())
    assert size["params"] == size["trainable"] == n > 10_000, size
    assert size["input"] == [1, 8, 8]
    assert size["macs"] == hand_count(model, torch.zeros(1, 1, 8, 8)) > n, size  # each weight used at many pixels


def test_data_s_and_step_s_split_each_epoch_s_training_time(digits_run):
    "In-memory digits wait little for their batches: no input-bound finding, and the times are no metric."
    rows = metrics_rows(digits_run)
    for r in rows:
        data, step, time = (float(r[k]) for k in ("data_s", "step_s", "time"))
        assert 0 <= data < step and data + step <= time, r
    assert not {"data_s", "step_s"} & set(summary(digits_run)["final_metrics"])
    assert "input-bound" not in [f["verdict"] for f in diagnose.diagnose(digits_run)["findings"]]


@pytest.mark.slow
def test_image_files_decoded_every_epoch_are_input_bound_and_the_cache_is_not(tmp_path):
    """mnist_tiny's PNGs decoded at every batch (data.cache=off) keep a small CNN waiting (65% of step time here,
    epoch 2); from the decode-once cache, 10%. The first run also traces 5 steps (trainer.profile=5), in epoch 1."""
    mnist = need_data("mnist_tiny")
    common = ("train", "task=mnist", f"data.path={mnist}", "trainer.epochs=2")
    for name in ("off", "on"):
        (tmp_path / name).mkdir()
    r = run_fxp(*common, "data.cache=off", "trainer.profile=5", cwd=tmp_path / "off")
    assert r.returncode == 0, r
    off = newest_run(tmp_path / "off")
    d = diagnose.diagnose(off)
    (bound,) = [f for f in d["findings"] if f["verdict"] == "input-bound"]
    assert "data.cache=auto; now off" in bound["advice"], bound
    r = run_fxp("diagnose", off, "--no-plot", cwd=tmp_path)
    assert "input-bound (epoch 2): data is" in r.stdout, r

    trace = json.loads((off / "profile" / "train.pt.trace.json").read_text())  # Chrome's trace format
    events = trace["traceEvents"]
    assert sorted({e["name"] for e in events if e.get("name", "").startswith("ProfilerStep#")}) == [
        f"ProfilerStep#{i}" for i in range(1, 6)]
    assert any(e.get("name") == "aten::convolution_backward" and e.get("ph") == "X" for e in events)
    top = (off / "profile" / "top_ops.txt").read_text()
    assert "5 training steps" in top and "aten::convolution_backward" in top
    assert summary(off)["profile"] == {"steps": 5, "trace": "profile/train.pt.trace.json",
                                       "top_ops": "profile/top_ops.txt"}

    r = run_fxp(*common, cwd=tmp_path / "on")
    assert r.returncode == 0, r
    on = newest_run(tmp_path / "on")
    assert "input-bound" not in [f["verdict"] for f in diagnose.diagnose(on)["findings"]]
    assert not (on / "profile").exists()
