"""`fxp predict RUN_DIR INPUT... [--OPTION VALUE...] [--json]`: the run's exported learner (CPU) predicts.

Inputs are what the kind takes (image files or folders, texts, a CSV of rows); options go to the kind's `predict`
as keyword arguments (collab's `--user 42 --top 10`), each checked against what it accepts.
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path

from fxp.console import console
from fxp.errors import FxpError

HELP = """usage: fxp predict RUN_DIR INPUT... [--OPTION VALUE...] [--tta] [--json] [--trust]

Predict with a run's exported model (RUN_DIR/model.pkl, on the CPU) and print a table, one row per input.

arguments:
  RUN_DIR          a completed run folder (outputs/<task>/<stamp>; fxp runs lists them)
  INPUT...         what the run's kind takes: image files or folders of images, texts (quoted), a CSV of rows
                   (tabular), a CSV of user,item pairs (collab)
  --OPTION VALUE   an option of the kind's predict, e.g. collab: --user 42 --top 10; classification: --top 3
                   (the 3 likeliest classes with their probabilities)
  --tta            test-time augmentation (image runs): average the predictions over augmented copies (seeded)
  --max-pixels N   the largest image accepted, in pixels (default: 16 times the run's training size on each side,
                   from 2048x2048 to 4096x4096), refused before it is decoded; the model sees it at the training size
  --json           print a JSON list of dicts instead of the table
  --trust          load a model.pkl that does not match the hash the run recorded (it runs any code it holds)
  -h, --help       show this help

examples:
  fxp predict outputs/digits/<stamp> digit.png
  fxp predict outputs/imdb/<stamp> "a film I would watch again"
"""


def main(args: list[str]) -> int:
    if "-h" in args or "--help" in args:
        print(HELP, end="")
        return 0
    as_json = "--json" in args
    run_dir, inputs, options = _predict_args([a for a in args if a not in ("--json", "--tta", "--trust")])
    max_pixels = _pixels(options.pop("max_pixels")) if "max_pixels" in options else None
    from fxp import saved
    from fxp.predicting import predict_rows

    run = saved.open_run(run_dir, "fxp predict", "--trust" in args)
    cfg, kind = run.written, run.kind
    accepted = [p for p in inspect.signature(kind.predict).parameters if p not in ("learn", "cfg", "inputs")]
    unknown = [o for o in options if o not in accepted]
    if unknown:
        takes = ", ".join(f"--{o}" for o in accepted) or "no options"
        raise FxpError(f"fxp predict: --{unknown[0]} is not an option of {cfg.task.kind} runs (it takes {takes})")
    if "--tta" in args:
        if "tta" not in accepted:
            raise FxpError(f"fxp predict: --tta: a {cfg.task.kind} run has no test-time augmentation (image "
                           f"classifiers have)")
        options["tta"] = True
        from fastai.torch_core import set_seed

        set_seed(cfg.trainer.seed)  # the augmented copies are random: the same call gives the same numbers
    rows = predict_rows(kind, run.learn, cfg, inputs, options, run_dir, max_pixels)
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        _print_rows(rows)
    return 0


def _pixels(value: str) -> int:
    if not str(value).isdigit() or int(value) < 1:
        raise FxpError(f"fxp predict: --max-pixels {value}: give a whole number of pixels (e.g. --max-pixels 4000000)")
    return int(value)


def _predict_args(args: list[str]) -> tuple[Path, list[str], dict[str, str]]:
    "RUN_DIR, the inputs, and `--key value` options as a dict."
    positional, options, i = [], {}, 0
    while i < len(args):
        if args[i].startswith("--") and len(args[i]) > 2:
            if i + 1 == len(args):
                raise FxpError(f"fxp predict: {args[i]} needs a value")
            options[args[i][2:].replace("-", "_")] = args[i + 1]
            i += 2
        else:
            positional.append(args[i])
            i += 1
    if len(positional) + len(options) < 2:
        raise FxpError("usage: fxp predict RUN_DIR INPUT... [--OPTION VALUE...] [--json] (inputs: what the "
                       "run's kind takes: image files or folders, texts, a CSV of rows)")
    return Path(positional[0]), positional[1:], options


def _cell(value) -> str:
    "Table text for a value: a dict (e.g. class shares) as `key value` pairs."
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return str(value)


def _print_rows(rows: list[dict]) -> None:
    from rich.table import Table

    table = Table()
    for key in rows[0] if rows else []:
        table.add_column(key, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(v) for v in row.values()))
    console().print(table)  # piped: each cell (a path, a mask file) on one line
