"""A saved run's learner predicting new inputs, as `fxp predict` and `fxp serve` do: the kind's `predict`, each image
checked first against the run's pixel budget (measured by its header, never decoded), and sized as the model trained.
"""
from __future__ import annotations

from pathlib import Path

from fxp.errors import FxpError


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
