"""`fxp predict RUN_DIR INPUT... [--OPTION VALUE...] [--json]`: the run's exported learner (CPU) predicts.

Inputs are what the kind takes (image files or folders, texts, a CSV of rows); options go to the kind's `predict`
as keyword arguments (collab's `--user 42 --top 10`), each checked against what it accepts.
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path

from fxp.commands import console
from fxp.errors import FxpError
from fxp.runs import CONFIG, MODEL

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
    if not (run_dir / MODEL).is_file():
        raise FxpError(f"no {MODEL} in {run_dir}: give the folder of a completed run (see outputs/)")
    from fxp import dispatch, saved

    cfg = run_config(run_dir)
    kind = dispatch.kind_module(cfg.task.kind)
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
    learn = saved.load(run_dir / MODEL, "fxp predict", "--trust" in args)
    rows = predict_rows(kind, learn, cfg, inputs, options, run_dir, max_pixels)
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        _print_rows(rows)
    return 0


def predict_rows(kind, learn, cfg, inputs: list, options: dict, run_dir: Path,
                 max_pixels: int | None = None) -> list[dict]:
    """The kind's rows for `inputs` (fxp predict, fxp serve), each image checked against the run's pixel budget first;
    an input the kind did not foresee: one line, not a traceback."""
    from fxp.dispatch import declared

    if declared(kind, "INPUT") == "image":
        check_pixels(image_inputs(inputs), pixel_budget(learn, max_pixels))
        resize_to_training_size(learn)
    try:
        return kind.predict(learn, cfg, inputs, **options)
    except FxpError:
        raise
    except Exception as e:
        raise FxpError(f"predicting with {run_dir} failed: {type(e).__name__}: "
                       f"{(str(e).strip().splitlines() or [''])[0]}") from e


# --- the pixel budget: an image is refused by its header, before it is decoded (a 164 KB PNG can hold 13000x13000
# zeros: 500 MB decoded as RGB, gigabytes more through a model that sees it whole) ------------------------------------

SIDE = 16  # an input may be this many times the training size on each side (it is resized to that size)
MIN_PIXELS = 2048 * 2048  # the budget's floor
MAX_PIXELS = 4096 * 4096  # its ceiling: about 50 MB decoded as RGB
UNSIZED_PIXELS = 1024 * 1024  # the budget of a run of an earlier fxp trained at its images' own size (task.size=null),
# which records no size: its model sees an input whole


class TooLarge(FxpError):
    "An input image over the run's pixel budget (fxp serve answers 413)."


def pixel_budget(learn, given: int | None = None) -> int:
    "`given`, else SIDE times the training size on each side, within MIN_PIXELS..MAX_PIXELS."
    if given is not None:
        return given
    size = training_size(learn)
    return UNSIZED_PIXELS if size is None else min(MAX_PIXELS, max(MIN_PIXELS, SIDE**2 * size[0] * size[1]))


def training_size(learn) -> tuple[int, int] | None:
    """The (w, h) the model trained at: its validation pipeline's Resize (task.size, a last stage's size), else the
    images' own size recorded at export (fxp.train.export); None for a run of an earlier fxp without either."""
    resize = _resize(learn)
    return tuple(resize.size) if resize is not None else getattr(learn, "input_size", None)


def _resize(learn):
    from fastai.vision.augment import Resize

    return next((t for t in getattr(getattr(learn.dls.valid, "after_item", None), "fs", []) if isinstance(t, Resize)),
                None)


def resize_to_training_size(learn) -> None:
    """A run trained at its images' own size sees an input squished to that size (as its Resize would, whole: points
    and masks map back to the input's pixels), not at whatever size it comes."""
    from fastai.vision.augment import Resize, ResizeMethod

    size = getattr(learn, "input_size", None)
    if size is not None and _resize(learn) is None:
        learn.dls.valid.after_item.add(Resize((size[1], size[0]), method=ResizeMethod.Squish))


def image_inputs(inputs: list) -> list[Path]:
    "The files among `inputs`, folders expanded to their images (what is not there is the kind's to report)."
    from fxp.data import image_files

    paths = [Path(i) for i in inputs]
    return [f for p in paths for f in (image_files(p) if p.is_dir() else [p] if p.is_file() else [])]


def check_pixels(files: list[Path], budget: int) -> None:
    "Each image of `files` has at most `budget` pixels by its header (nothing decoded); else one line naming it."
    for f in files:
        image_format(f, f.name, budget)


def image_format(source, name: str, budget: int) -> str | None:
    """The format of the image `source` (a path or a binary file; png, jpeg, ...) by its header, which gives its size:
    over `budget` pixels is one line naming `name`. None if it is not an image (the kind's predict names it)."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, never decoded
            with Image.open(source) as im:
                (w, h), fmt = im.size, (im.format or "png").lower()
        size = f"{w}x{h} pixels ({w * h / 1e6:.1f} megapixels)"
    except Image.DecompressionBombError:  # over Pillow's own limit, far above any budget
        w, h, fmt, size = Image.MAX_IMAGE_PIXELS, 2, None, f"over {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels"
    except Exception:
        return None
    if w * h > budget:
        raise TooLarge(f"{name} is {size}; this run takes images of at most {budget / 1e6:.1f} megapixels "
                       f"(--max-pixels N changes the limit)")
    return fmt


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


def run_config(run_dir: Path):
    "The run's config.yaml (written resolved), or one line saying what is wrong with it."
    from omegaconf import DictConfig, OmegaConf

    f = run_dir / CONFIG
    if not f.is_file():
        raise FxpError(f"fxp predict: no {CONFIG} in {run_dir}: the run's kind and task come from it; give the "
                       f"folder of a completed run (fxp runs lists them)")
    try:
        cfg = OmegaConf.load(f)
    except Exception as e:  # not YAML, not UTF-8
        raise FxpError(f"fxp predict: {f} cannot be read ({type(e).__name__}: "
                       f"{(str(e).strip().splitlines() or [''])[0]})") from None
    kind = OmegaConf.select(cfg, "task.kind", default=None) if isinstance(cfg, DictConfig) else None
    if not isinstance(kind, str):
        raise FxpError(f"fxp predict: {f} has no task.kind (it is not a run's {CONFIG}); give the folder of a "
                       f"completed run")
    return cfg


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
