"""`fxp card RUN_DIR [data.path=DIR]`: MODEL_CARD.md beside the run's model (fxp.card): the task and a fingerprint of
its data, the recipe, the metrics as summary.json has them with their baselines, the diagnosis, the export bench,
intended use and limitations, and how to load each exported format."""
from __future__ import annotations

from pathlib import Path

from fxp import card, saved
from fxp.commands import Parser, saved_run_arguments
from fxp.console import console
from fxp.errors import ConfigError


def parser() -> Parser:
    p = Parser(prog="fxp card", description="Write MODEL_CARD.md beside a run's model: task, data fingerprint, recipe, "
                                            "metrics with baselines, diagnosis, export bench, limitations, loading.")
    return saved_run_arguments(p, "where the data is, if it moved (for its fingerprint): data.path=DIR")


def main(args: list[str]) -> int:
    opts = parser().parse_intermixed_args(args)
    run = saved.open_run(Path(opts.run_dir), "fxp card", opts.trust, writes=True)
    cfg, note = config(run, opts.overrides)
    console().print(f"wrote {card.write(run, cfg, note)}")
    return 0


def config(run, overrides: list[str]):
    """(the run's config validated with `overrides`, None), or (None, why the data has no fingerprint): a run in steps,
    or data that moved (no override given: the card is written without it)."""
    if not hasattr(run.kind, "dls"):
        return None, "not computed for a run in steps (several learners, each with its data)"
    try:
        return run.config(overrides), None
    except ConfigError as e:
        if overrides:
            raise
        return None, f"the data could not be read: {e}"
