"""The commands that are not Hydra apps, one module each, each with `main(args) -> int`; `fxp.cli` imports the one
it runs. They read run folders only through `fxp.runs`."""
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


def console(piped_width: int = 10_000):
    """A rich console that prints text as is (no markup: a `[spoiler]` in a text or `y_cols=[a,b]` in an override
    stays); styles come as rich Text. Piped: `COLUMNS` wide if set, else `piped_width` (by default wide enough for
    one line per row with whole cells, for grep and scripts)."""
    import os

    from rich.console import Console

    out = Console(markup=False)  # rich reads COLUMNS itself, on a terminal or not
    if not out.is_terminal and not os.environ.get("COLUMNS", "").isdigit():
        out.width = piped_width
    return out


def number(v) -> str:
    "A metric in a table: four significant digits (-3e-06, not -0.0000; 0.9583; 1235); `-` for none or NaN."
    import math

    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return "-"
    return f"{v:.4g}"
