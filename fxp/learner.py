"""fastai's Learner with less work per batch: the overheads the CPU benchmark (bench/cpu_default.py) measured.

fastai wraps each event name in an `L`, sorts every callback and calls each one for every event, and each call
goes through fastcore's attribute fallback. With nine callbacks and about eight events per batch that cost more
than the forward pass of the default model. Same callbacks, same order, same results; only the idle calls go.
"""
from __future__ import annotations

from fastai.callback.core import event
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from torch import Tensor


def _handles(cb, event_name: str) -> bool:
    "Whether `cb` has its own handler for `event_name` (not fastcore GetAttr's fallback to the learner)."
    return event_name in vars(cb) or getattr(type(cb), event_name, None) is not None


class FxpLearner(Learner):
    "A Learner that calls, for each event, only the callbacks handling it (the list is cached per callback set)."

    def __call__(self, event_name):
        for e in [event_name] if isinstance(event_name, str) else event_name:
            self._call_one(e)

    def _call_one(self, event_name: str):
        if event_name == "after_fit":  # fastai's Callback.__call__ resets every callback's `run` flag here
            return super()._call_one(event_name)
        for cb in self._handlers(event_name):
            cb(event_name)

    def _handlers(self, event_name: str) -> list:
        key = tuple((id(cb), cb.order) for cb in self.cbs)
        cache = self.__dict__.get("_handler_cache")
        if cache is None or cache[0] != key:
            cache = self.__dict__["_handler_cache"] = (key, {})
        if event_name not in cache[1]:
            assert hasattr(event, event_name), event_name
            cache[1][event_name] = [cb for cb in self.cbs.sorted("order") if _handles(cb, event_name)]
        return cache[1][event_name]

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_handler_cache", None)  # may hold removed callbacks: not part of an exported learner
        return state

    def _set_device(self, b):
        "Batches from in-memory loaders are already on the device: skip fastai's copy."
        dev = getattr(self.dls, "device", None)
        if dev is not None and all(isinstance(t, Tensor) and t.device == dev for t in b):
            return b
        return super()._set_device(b)


class CrossEntropyLossPlain(CrossEntropyLossFlat):
    "CrossEntropyLossFlat on plain tensors: fastai's TensorBase wrap sends every later op on the loss through Python."

    def _contiguous(self, x):
        return x.transpose(self.axis, -1).contiguous() if isinstance(x, Tensor) else x
