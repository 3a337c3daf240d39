"""Where a run's time goes beyond metrics.csv's data_s and step_s, and what its model costs: `trainer.profile=N`'s
torch.profiler trace of N training steps (profile/: a Chrome trace that Perfetto and TensorBoard's PyTorch profiler
plugin open, and the table of the top ops), and the model's size for summary.json and `fxp show` (its parameters, and
for one input item its multiply-accumulates, counted by torch's FlopCounterMode)."""
from __future__ import annotations

import logging

import torch
from fastai.callback.core import Callback
from fastai.torch_core import rank_distrib

from fxp.callbacks import _active
from fxp.runs import PROFILE, TOP_OPS, TRACE
from fxp.writer import write_atomic

log = logging.getLogger("fxp")
TOP_ROWS = 30  # ops in top_ops.txt
# what the model takes whose one item has one cost: an image, a spectrogram. A text's cost grows with its length, a
# table's or a (user, item) pair's model is mostly embedding lookups, which multiply nothing: parameters only
ONE_ITEM = ("image", "audio")


class Profile(Callback):
    """torch.profiler over `steps` training steps of the step's first epoch, after one step of warm-up (its one-time
    costs: cuDNN's autotuning, compilation); each step from the end of the one before, so the wait for its batch is in
    it. Written as the last step ends, or with the steps the epoch had: profile/ of the step's folder. Rank 0 only."""
    order = 61  # a step ends after metrics.csv's timing of it (60)

    def __init__(self, steps: int):
        self.steps, self.prof, self.taken, self.written = steps, None, 0, None

    def before_train(self):
        if self.written is None and self.prof is None and _active(self) and not rank_distrib():
            from torch.profiler import ProfilerActivity, profile, schedule

            self.cuda = self.dls.device is not None and torch.device(self.dls.device).type == "cuda"
            activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if self.cuda else [])]
            self.prof = profile(activities=activities, on_trace_ready=self.write,
                                schedule=schedule(wait=0, warmup=1, active=self.steps, repeat=1))
            self.prof.start()

    def after_batch(self):
        if self.prof is not None and self.training:
            self.taken += 1
            self.prof.step()
            if self.written is not None:
                self.stop()

    def after_train(self):
        self.stop()

    def after_fit(self):
        self.stop()

    def stop(self):
        if self.prof is not None:
            prof, self.prof = self.prof, None
            prof.stop()  # mid-way: writes the steps taken (none if only the warm-up step ran)
            if self.written is None:
                self.written = {"steps": 0}
                log.warning("trainer.profile: the first epoch had one training batch (the warm-up): nothing traced")

    def write(self, prof) -> None:
        steps = self.taken - 1
        folder = self.path / PROFILE
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / TRACE, lambda f: prof.export_chrome_trace(str(f)))
        sort = "self_device_time_total" if self.cuda else "self_cpu_time_total"
        head = (f"torch.profiler: {steps} training steps of stage {getattr(self.learn, 'stage', 1)}, epoch "
                f"{self.epoch + 1}, after one of warm-up; each from the end of the step before (its batch's wait "
                f"included). Sorted by {sort}. Timeline: {TRACE} (ui.perfetto.dev, or TensorBoard's PyTorch "
                f"profiler plugin on this folder)\n\n")
        write_atomic(folder / TOP_OPS, head + prof.key_averages().table(sort_by=sort, row_limit=TOP_ROWS) + "\n")
        self.written = {"steps": steps, "trace": f"{PROFILE}/{TRACE}", "top_ops": f"{PROFILE}/{TOP_OPS}"}
        log.info(f"trainer.profile: {steps} training steps traced into {folder}")

    def step_done(self, folder) -> dict:
        "summary.json's `profile`: the steps traced and the files (fxp.train.fit asks each callback)."
        return {"profile": self.written} if self.written is not None else {}


def callbacks(tr) -> list:
    return [Profile(tr.profile)] if tr.profile else []


def model_size(learn, input_kind: str) -> dict:
    """The model's parameters (`params`; `trainable`: those with a gradient as the learner is built, a pretrained
    body frozen) and, for a kind whose input item has one size (ONE_ITEM), the multiply-accumulates of a forward
    pass on one item of the valid set (`macs`, with its `input` shape)."""
    params = list(learn.model.parameters())
    size = dict(params=sum(p.numel() for p in params), trainable=sum(p.numel() for p in params if p.requires_grad))
    if input_kind in ONE_ITEM:
        try:
            size.update(macs(learn.model, one_input(learn.dls)))
        except Exception as e:  # a count the run does not need: it never stops one
            log.warning(f"the model's multiply-accumulates were not counted ({type(e).__name__}: {e})")
    return size


def one_input(dls) -> tuple:
    "The inputs of the valid set's first item, as a batch of one (one item decoded); every random state left as it was."
    from fxp.show import untouched

    dl = dls.valid
    with untouched(dl):
        b = dl.new(bs=1).one_batch()
    n = getattr(dls, "n_inp", 1 if len(b) == 1 else len(b) - 1)
    return tuple(x.as_subclass(torch.Tensor) for x in b[:n])


def macs(model, xb: tuple) -> dict:
    """Multiply-accumulates of one forward pass in eval mode: half of FlopCounterMode's count, which counts each
    matrix product and convolution (a multiply and an add per MAC) and nothing elementwise."""
    from torch.utils.flop_counter import FlopCounterMode

    device, training = next(model.parameters()).device, model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(*(x.to(device) for x in xb))
    finally:
        model.train(training)
    return dict(macs=counter.get_total_flops() // 2, input=list(xb[0].shape[1:]))
