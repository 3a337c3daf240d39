"""How fxp prints to the terminal: a rich console that prints text as is, and a metric as a table cell. Light: rich
loads when a console is made."""
from __future__ import annotations


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
