"""`fxp export RUN --bench`: which format to ship. Each format the run's model exports to (the learner itself,
TorchScript, ONNX, ONNX with int8 weights) is written as `fxp export --format` writes it, then run on the whole
validation split as the learner's pipeline makes its inputs (what model.json describes): its file size, its outputs
against the learner's (largest difference; top-class agreement, or tag agreement at the threshold), the task's main
metric through that runtime, and its latency per item at batch 1 and 32 (the median of `timed` runs after a warm-up,
on the same prepared inputs: the model alone, not the preprocessing). A format that fails is a row `failed:
<reason>`; the others go on. With a CUDA device, the torch formats get a row on it too.

The metric is fastai's, as the run computed it: each runtime's outputs (probabilities) are turned back into what the
learner's metrics take (log-probabilities for a softmax, logits for a sigmoid), which leaves every decision as it is.
"""
from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

from fxp import exporting, saved
from fxp.runs import MODEL
from fxp.writer import write_atomic

TIMED = 10  # timed runs per batch size (their median)
WARMUP = 2
BATCHES = (1, 32)
BENCH = "bench.csv"
FORMATS = ("learner", "torchscript", "onnx", "onnx-int8")


def bench(learn, cfg, run, takes: str, items: int = 32, timed: int = TIMED) -> list[dict]:
    """One row per format (and device), each format's files written under RUN/export/<format>/ (model.json's parity
    on the first `items` validation items); the learner's loaders are the run's validation split, labelled."""
    import torch

    batches = valid_batches(learn)
    model = exporting.activated(learn.model.eval().cpu(), getattr(learn.loss_func, "activation", None))
    ref = [model_outputs(model, xb) for xb, _ in batches]
    inputs = first_items(batches, min(items, sum(len(xb[0]) for xb, _ in batches)))
    judge = Judge(learn, cfg, model, batches, ref)
    threads = torch.get_num_threads()
    rows = [judge.row("learner", "cpu", run.path / MODEL, lambda xb: model_outputs(model, xb),
                      timed, threads)]
    for fmt in FORMATS[1:]:
        rows.append(judge.attempt(fmt, "cpu", lambda f=fmt: exported(learn, cfg, run, f, inputs, takes, threads),
                                  timed, threads))
    if torch.cuda.is_available():
        rows += cuda_rows(judge, run, model, timed)
    return rows


def valid_batches(learn) -> list[tuple[tuple, tuple]]:
    "The validation split's batches as (inputs, targets), plain tensors on the CPU."
    import torch

    n = learn.dls.n_inp
    plain = [tuple(t.as_subclass(torch.Tensor).cpu() for t in b) for b in learn.dls.valid]
    return [(b[:n], b[n:]) for b in plain]


def model_outputs(model, xb):
    import torch

    with torch.no_grad():
        return model(*xb).float().cpu()


def exported(learn, cfg, run, fmt: str, inputs: tuple, takes: str, threads: int):
    "Export `fmt` into RUN/export/<fmt>/ (as fxp export does) and load it: (its file, its runner)."
    import torch

    dest = run.path / exporting.EXPORT / fmt
    with torch.no_grad():
        preds = exporting.activated(learn.model, getattr(learn.loss_func, "activation", None))(*inputs).float()
    with exporting.folder_whole(dest) as tmp:
        meta = exporting.write_model(learn, cfg, run, tmp, fmt, inputs, preds, takes)
    file = dest / meta["file"]
    return file, exporting.runner(file, fmt, [i["name"] for i in meta["inputs"]], threads)


def cuda_rows(judge, run, model, timed: int) -> list[dict]:
    "The learner and the TorchScript file on the CUDA device (one row each)."
    import torch

    dev = torch.device("cuda")
    name = f"cuda ({torch.cuda.get_device_name(dev)})"
    on_gpu = copy.deepcopy(model).to(dev)

    def eager(xb):
        with torch.no_grad():
            return on_gpu(*(t.to(dev) for t in xb)).float().cpu()

    ts = run.path / exporting.EXPORT / "torchscript" / "model.pt"
    rows = [judge.row("learner", name, run.path / MODEL, eager, timed, None)]
    rows.append(judge.attempt("torchscript", name, lambda: (ts, exporting.runner(ts, "torchscript", [], device="cuda")),
                              timed, None))
    return rows


class Judge:
    "Measures a runtime against the learner on the validation batches: size, parity, metric, latency."

    def __init__(self, learn, cfg, model, batches, ref):
        self.learn, self.batches, self.ref = learn, batches, ref
        self.thresh = getattr(learn.loss_func, "thresh", None)
        self.classes = saved.classes(learn) is not None
        self.activation = exporting.activation_of(model, batches[0][0], ref[0])
        self.metric = main_metric(learn, cfg)

    def attempt(self, fmt: str, device: str, load, timed: int, threads: int | None) -> dict:
        "The row of `fmt`, loaded by `load()` → (file, runner); what fails is its row's status."
        try:
            file, run = load()
            return self.row(fmt, device, file, run, timed, threads)
        except Exception as e:
            return {"format": fmt, "device": device, "status": f"failed: {reason(e)}"}

    def row(self, fmt: str, device: str, file: Path, run, timed: int, threads: int | None) -> dict:
        import torch

        outs = [run(xb) for xb, _ in self.batches]
        out, ref = torch.cat(outs), torch.cat(self.ref)
        agree = exporting.agreement(out, ref, self.thresh) if self.classes else None
        latency = {f"ms_per_item_b{bs}": round(ms_per_item(run, self.batches, bs, timed), 4) for bs in BATCHES}
        return {"format": fmt, "device": device, "status": "ok", "size_mb": round(size_mb(file), 4),
                "max_abs_diff": float((out - ref).abs().max()), "agreement": agree,
                self.metric.name: self.score(outs), **latency, "threads": threads}

    def score(self, outs: list) -> float:
        "The main metric over `outs` (each batch's outputs), by the learner's own metric object."
        metric = copy.deepcopy(self.metric.fn)
        metric.reset()
        from fastai.torch_core import to_detach

        for out, (_, yb) in zip(outs, self.batches):
            pred = logits(out, self.activation)
            metric.accumulate(SimpleNamespace(pred=pred, yb=yb, y=yb[0] if len(yb) == 1 else yb, to_detach=to_detach,
                                              loss_func=self.learn.loss_func))
        return float(metric.value)


def main_metric(learn, cfg) -> SimpleNamespace:
    """The run's main metric (task.monitor's, else its first metric) as a fastai metric object; the valid loss where
    the run has no metric."""
    from fastai.metrics import AvgMetric

    metrics = list(learn.metrics)
    by_name = {m.name: m for m in metrics}
    fn = by_name.get(cfg.task.monitor.metric) or (metrics[0] if metrics else None)
    if fn is None:
        fn = AvgMetric(lambda pred, *yb: learn.loss_func(pred, *yb))
        return SimpleNamespace(name="valid_loss", fn=fn)
    return SimpleNamespace(name=fn.name, fn=fn)


def logits(out, activation: str):
    "What the learner's metrics take, from outputs that end in `activation`: the decisions stay the same."
    import torch

    if activation == "sigmoid":
        return torch.logit(out, eps=1e-7)
    if activation == exporting.SOFTMAX:
        return torch.log(out.clamp_min(torch.finfo(out.dtype).tiny))
    return out


def ms_per_item(run, batches, bs: int, timed: int) -> float:
    "The median of `timed` runs (after WARMUP) on a batch of `bs` validation inputs, per item, in milliseconds."
    xb = first_items(batches, bs)
    for _ in range(WARMUP):
        run(xb)
    times = []
    for _ in range(timed):
        start = time.perf_counter()
        run(xb)
        times.append(time.perf_counter() - start)
    return statistics.median(times) / bs * 1000


def first_items(batches, n: int) -> tuple:
    "The first `n` validation inputs as one batch (repeated where the split has fewer)."
    import torch

    taken, count = [], 0
    for xb, _ in batches:
        if count >= n:
            break
        taken.append(xb)
        count += len(xb[0])
    cat = [torch.cat([xb[i] for xb in taken]) for i in range(len(taken[0]))]
    return tuple(t.repeat(-(-n // len(t)), *[1] * (t.ndim - 1))[:n] for t in cat)


def size_mb(file: Path) -> float:
    return Path(file).stat().st_size / 2**20


def reason(e: Exception) -> str:
    "Why a format failed, in one line (an FxpError's own words, else the exception's type and first line)."
    from fxp.errors import FxpError

    text = exporting.first_line(e)
    return text.removeprefix("fxp export: ") if isinstance(e, FxpError) else f"{type(e).__name__}: {text}"


def columns(rows: list[dict]) -> list[str]:
    "The CSV's columns, in the order the rows first name them."
    return list(dict.fromkeys(k for r in rows for k in r))


def write_csv(rows: list[dict], path: Path) -> None:
    "bench.csv, written whole."
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns(rows), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, buf.getvalue())


def int8_line(rows: list[dict]) -> str | None:
    "What int8 weights save against float32 ONNX (size) and what they cost (the metric), if both rows are ok."
    ok = {r["format"]: r for r in rows if r["status"] == "ok" and r["device"] == "cpu"}
    if "onnx" not in ok or "onnx-int8" not in ok:
        return None
    fp32, int8 = ok["onnx"], ok["onnx-int8"]
    metric = columns(rows)[columns(rows).index("agreement") + 1]
    change = int8[metric] - fp32[metric]
    return (f"onnx-int8: {fp32['size_mb'] / int8['size_mb']:.1f}x smaller than onnx ({fp32['size_mb']:.3g} -> "
            f"{int8['size_mb']:.3g} MB); {metric} {fp32[metric]:.4f} -> {int8[metric]:.4f} ({change:+.4f})")
