"""The pieces the kinds share, in-process on data generated here: the schema bases (fxp.schema Split, Listed, Images),
their checks, the one table reader (fxp.data.read_table), CSV-listed images, the splitter choice, and the display
helpers (input channels, valid-item re-reading, min-max scaling, the confusion matrix)."""
from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from fxp import data
from fxp.checks import check_values
from fxp.errors import ConfigError, FxpError

IMAGE_KINDS = {"classification": "crop", "multilabel": "crop", "segmentation": "squish", "regression": "squish"}


def task(kind: str, **over):
    return OmegaConf.merge(OmegaConf.structured(importlib.import_module(f"fxp.tasks.{kind}").Task), over)


def one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


# --- schema bases and their checks ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, resize_method", IMAGE_KINDS.items())
def test_image_kinds_extend_the_bases_with_their_own_defaults(kind, resize_method):
    t = task(kind)
    assert (t.kind, t.valid_pct, t.split_seed, t.size, t.pad_mode, t.aug) == (kind, 0.2, 42, None, "reflection", None)
    assert t.resize_method == resize_method
    listed = kind != "segmentation"  # segmentation finds its images in folders, not in a label file
    assert all((k in t) == listed for k in ("folder", "fn_col", "suff", "valid_col"))
    assert list(t)[:5] == ["kind", "url", "local", "metrics", "monitor"]  # TaskBase's keys first


def test_gan_has_the_split_only_with_its_own_valid_pct():
    t = task("gan")
    assert (t.valid_pct, t.split_seed) == (0.1, 42) and "resize_method" not in t and "fn_col" not in t


def check_task(t) -> None:
    "fxp.checks.check_values on a config holding the task `t` (as `task`)."
    check_values(OmegaConf.create({"task": t}))


@pytest.mark.parametrize("key, value", [("valid_pct", 0.0), ("valid_pct", 1.5), ("resize_method", "stretch"),
                                        ("pad_mode", "wrap")])
def test_the_bases_declare_what_their_keys_take(key, value):
    with pytest.raises(ConfigError) as e:
        check_task(task("segmentation", **{key: value}))
    assert f"task.{key}=" in one_line(e) and str(value) in one_line(e)


def test_a_kind_declares_its_own_choices_and_ranges_beside_the_bases():
    check_task(task("regression"))
    with pytest.raises(ConfigError, match="task.target='pixels' is not valid; choose from: points, scalars"):
        check_task(task("regression", target="pixels"))
    check_task(task("multilabel"))
    with pytest.raises(ConfigError, match=r"task.thresh=1.0 is not valid: give a number in \(0, 1\)"):
        check_task(task("multilabel", thresh=1.0))


# --- the one table reader ---------------------------------------------------------------------------------------


def test_read_table_checks_columns_by_name_position_and_list(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,c\n1,2,3\n4,5,6\n")
    df = data.read_table(path, "task.csv", {"task.fn_col": "a", "task.y_cols": [1, "c"], "task.valid_col": None})
    assert list(df.columns) == ["a", "b", "c"] and len(df) == 2
    for cols, said in [({"task.fn_col": "z"}, "task.fn_col='z'"), ({"task.fn_col": 3}, "task.fn_col=3"),
                       ({"task.y_cols": ["b", "y"]}, "task.y_cols: 'y'")]:
        with pytest.raises(FxpError) as e:
            data.read_table(path, "task.csv", cols)
        assert one_line(e) == f"{said} is not a column of t.csv; its columns are: a, b, c"


@pytest.mark.parametrize("text, says", [
    (None, "file not found: {path}; set task.csv= (relative to data.path) or data.path="),
    ("", "{path} has no rows; fill it or set task.csv="),
    ("a,b\n", "{path} has no rows; fill it or set task.csv="),
    (b"a,b\n\xe9t\xe9,1\n", "{path} is not utf-8 text; save it as utf-8"),
    ('a,b\n"1,2\n', "cannot read {path} (ParserError: "),
])
def test_read_table_says_what_is_wrong_with_the_file(tmp_path, text, says):
    path = tmp_path / "t.csv"
    if text is not None:
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(FxpError) as e:
        data.read_table(path, "task.csv")
    assert one_line(e).startswith(says.format(path=path)), e.value


def test_read_table_options_and_their_keys(tmp_path):
    path = tmp_path / "u.data"
    path.write_bytes("1\t10\t5\n2\t\xe9\t4\n".encode("latin-1"))
    df = data.read_table(path, "task.ratings", {"task.user_col": "user"}, names=["user", "item"], sep="\t",
                         encoding="latin-1")
    assert list(df.columns) == ["user", "item"] and df.item[1] == "\xe9"
    with pytest.raises(FxpError, match="is not utf-8 text; set task.encoding= \\(e.g. latin-1\\)"):
        data.read_table(path, "task.ratings", names=["user", "item"], sep="\t", encoding_key="task.encoding")
    with pytest.raises(FxpError, match=r"task.user_col='user' is not a column of u.data; its columns are: "
                                       r"1\t10\t5 \(one column only: check the separator, task.sep=\)"):
        data.read_table(path, "task.ratings", {"task.user_col": "user"}, sep_key="task.sep", encoding="latin-1")


def test_an_input_file_is_named_as_an_input(tmp_path):
    with pytest.raises(FxpError) as e:
        data.read_table(tmp_path / "rows.csv", None)
    assert one_line(e) == f"input not found: {tmp_path / 'rows.csv'}"


# --- images a CSV lists, the splitter ---------------------------------------------------------------------------


@pytest.fixture
def listing(tmp_path):
    "Six 8x8 PNGs under ims/ (a.png is garbage) and a CSV listing them by stem, with a label and an is_valid column."
    (tmp_path / "ims").mkdir()
    for i, name in enumerate("abcdef"):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / "ims" / f"{name}.png")
    (tmp_path / "ims" / "a.png").write_bytes(b"not a png")
    rows = "".join(f"{n},{'xy'[i % 2]},{i >= 4}\n" for i, n in enumerate("abcdef"))
    (tmp_path / "labels.csv").write_text("name,label,is_valid\n" + rows)
    return tmp_path, task("classification", source="csv", folder="ims", suff=".png", valid_col="is_valid")


def test_listed_rows_drop_unreadable_images_and_read_the_rest(listing):
    root, t = listing
    df = data.read_listing(root / "labels.csv", t, "task.csv", {"task.label_col": t.label_col})
    with pytest.raises(FxpError, match=f"unreadable or corrupt image: {root / 'ims' / 'a.png'}.*data.skip_bad=true"):
        data.listed_rows(df, t, root, "labels.csv", skip_bad=False)
    kept, get_x, bad = data.listed_rows(df, t, root, "labels.csv", skip_bad=True)
    assert list(kept.name) == list("bcdef") and bad == [str(root / "ims" / "a.png")]
    assert get_x(kept.iloc[0]) == str(root / "ims" / "b.png")
    assert data.col_name(df, t.fn_col) == "name" and data.col_name(df, "label") == "label"


def test_a_listed_image_that_is_missing_is_one_line(listing):
    root, t = listing
    (root / "ims" / "c.png").unlink()
    with pytest.raises(FxpError) as e:
        data.listed_images(["b", "c"], t, root, "labels.csv", skip_bad=True)
    assert one_line(e).startswith(f"1 image files listed in labels.csv are missing, e.g. {root / 'ims' / 'c.png'}")


def test_read_listing_needs_the_valid_col_when_set(listing):
    root, t = listing
    t.valid_col = "valid"
    with pytest.raises(FxpError, match="task.valid_col='valid' is not a column of labels.csv"):
        data.read_listing(root / "labels.csv", t, "task.csv", {})


def test_splitter_is_the_valid_col_or_a_seeded_random_split(listing):
    root, t = listing
    df = data.read_listing(root / "labels.csv", t, "task.csv", {})
    assert [list(s) for s in data.splitter(t, t.valid_col)(df)] == [[0, 1, 2, 3], [4, 5]]
    items = list(range(50))
    train, valid = data.splitter(t)(items)
    assert len(valid) == 10 and sorted(train + valid) == items  # valid_pct 0.2 of them
    assert (train, valid) == data.splitter(t)(items) != data.splitter(task("classification", split_seed=1))(items)


# --- display helpers --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def learn():
    "A linear classifier on 40 in-memory 1x4x4 images of two classes (fxp's TensorDL loaders)."
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(40, 1, 4, 4, generator=g) * 7 - 3, torch.arange(40) % 2
    dls = data.tensor_dls(x, y, list(range(30, 40)), vocab=["even", "odd"], bs=8, device=torch.device("cpu"))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    return Learner(dls, model, loss_func=CrossEntropyLossFlat())


def test_n_channels_and_valid_items_from_memory(learn):
    from fxp.vision import n_channels, valid_items

    assert n_channels(learn.dls) == 1
    ims = valid_items(learn.dls.valid, [0, 3])
    assert len(ims) == 2 and torch.equal(ims[1], learn.dls.valid.dataset.tensors[0][3])


def test_valid_items_re_read_from_files(listing):
    from fastai.data.block import CategoryBlock, DataBlock
    from fastai.vision.data import ImageBlock

    from fxp.vision import valid_items

    root, t = listing
    df = data.read_listing(root / "labels.csv", t, "task.csv", {})
    df, get_x, _ = data.listed_rows(df, t, root, "labels.csv", skip_bad=True)
    block = DataBlock((ImageBlock, CategoryBlock), get_x=get_x, get_y=lambda r: r["label"],
                      splitter=data.splitter(t, t.valid_col))
    dl = block.dataloaders(df, bs=2, device=torch.device("cpu")).valid
    ims = valid_items(dl, [1, 0])
    assert [tuple(im.shape) for im in ims] == [(3, 8, 8)] * 2
    assert [im[0, 0, 0].item() for im in ims] == [200, 160]  # the red of f.png and e.png, before batch transforms


@pytest.mark.parametrize("shape, shown", [((3, 5, 4), (5, 4, 3)), ((1, 5, 4), (5, 4)), ((5, 4), (5, 4))])
def test_displayable_scales_to_0_1_channels_last(shape, shown):
    from fxp.plots import displayable

    im = displayable(torch.linspace(-3, 9, torch.Size(shape).numel()).view(shape))
    assert tuple(im.shape) == shown and im.min().item() == 0 and im.max().item() == pytest.approx(1, abs=1e-6)
    assert displayable(torch.full(shape, 2.0)).abs().max().item() == 0  # flat: no division by zero


def test_confusion_matrix_saves_the_plot_and_returns_the_interpretation(learn, tmp_path):
    from fxp.plots import confusion_matrix

    interp = confusion_matrix(learn, tmp_path / "plots" / "confusion_matrix.png")
    assert (tmp_path / "plots" / "confusion_matrix.png").stat().st_size > 0
    assert interp.confusion_matrix().sum() == 10 and len(interp.top_losses(3)[1]) == 3


@pytest.mark.slow  # a fresh interpreter importing torch and fastai: 4-5 s of CPU
def test_text_can_use_the_shared_pieces_without_torchvision():
    code = ("import sys, fxp.data, fxp.plots, fastai.interpret, fxp.tasks.text; "
            "assert 'torchvision' not in sys.modules, 'torchvision imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
