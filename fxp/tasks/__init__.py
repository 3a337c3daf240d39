"One module per task kind; see `fxp.dispatch` for the protocol each follows."
from __future__ import annotations

import importlib


def moved(module: str, names: dict[str, str]):
    """A kind module's `__getattr__` for `names` that moved elsewhere ({name: the module it lives in now}): old runs'
    model.pkl and config.yaml still name them here. Imported when asked for, so the kind's module top stays light."""
    def __getattr__(name: str):
        if name in names:
            return getattr(importlib.import_module(names[name]), name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
