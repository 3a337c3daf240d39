"""The commands that are not Hydra apps, one module each, each with `main(args) -> int`; `fxp.cli` imports the one
it runs. They read run folders only through `fxp.runs` and `fxp.saved`, and import the core, never another command
(what two commands share lives in the core); the core never imports them (tests/test_imports.py)."""
from __future__ import annotations

import argparse

from fxp.errors import FxpError


class Parser(argparse.ArgumentParser):
    "argparse whose usage errors are one FxpError line (exit 2) instead of a usage block."

    def error(self, message):
        raise FxpError(f"{self.prog}: {message} (see {self.prog} --help)")


def saved_run_arguments(p: Parser, overrides: str) -> Parser:
    "RUN_DIR and the KEY=VALUE overrides of a command on a saved run (fxp val, fxp export); `overrides` is their help."
    p.add_argument("run_dir", metavar="RUN_DIR", help="a completed run folder (fxp runs lists them)")
    # a default, or argparse calls a `*` positional required and names it when RUN_DIR is missing
    p.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE", help=overrides)
    p.add_argument("--trust", action="store_true", help="load a model.pkl that does not match the hash the run "
                                                        "recorded (it runs any code it holds)")
    return p

