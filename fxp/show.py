"""See the data first (lesson 1's `show_batch`, fastbook ch. 5's `dblock.summary`): a training batch after its
transforms, as fastai shows it, saved as a PNG before training, and the summary of how the DataBlock made it.

Drawing the batch leaves the run as it would have been: every random generator (Python's, numpy's, torch's) and the
training loader's own shuffling generator are put back, so a seeded run's results do not change.
"""
from __future__ import annotations

import io
import logging
import random
import sys
import textwrap
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

from fxp.plots import plt, save, save_current

log = logging.getLogger("fxp")
BATCH, DATABLOCK = "batch.png", "datablock.txt"


def batch_png(dls, dest: Path, max_n: int = 9) -> None:
    "A training batch of `dls` as fastai's show_batch shows it (pictures, or a table for text and tabular) in `dest`."
    dl = dls.train
    with untouched(dl):
        b = dl.one_batch()
        if hasattr(dl.dataset, "tensors"):  # fxp's in-memory loaders (digits, word streams): no fastai types
            return tensors_png(b, getattr(dl.dataset, "vocab", None), dest, max_n)
        plt.close("all")
        with captured_tables() as tables, redirect_stdout(io.StringIO()):  # fastai prints what it cannot draw
            dl.show_batch(b=b, max_n=max_n)
            if not tables and not plt.gcf().axes:  # a language model's texts: printed, one by one
                tables.append(samples_table(dl, b, max_n))
    if tables:
        table_png(tables[0], dest)
    else:
        save_current(dest)


def samples_table(dl, b, max_n: int):
    "The decoded items of batch `b` as a DataFrame: one row per item, a column per part (input, target)."
    import pandas as pd

    _, _, samples = dl.show_batch(b=b, max_n=max_n, show=False)
    names = ["input", "target", *(f"part {i}" for i in range(2, 9))]
    return pd.DataFrame([[str(v) for v in s] for s in samples], columns=names[:len(samples[0])])


@contextmanager
def untouched(dl):
    "Random draws inside (a batch's shuffle and augmentations) leave no trace on the generators or on `dl`'s order."
    from fastai.torch_core import get_random_states, set_random_states

    states, rng = get_random_states(), getattr(dl, "rng", None)
    rng_state = rng.getstate() if rng is not None else None
    texts = getattr(getattr(dl, "items", None), "idxs", None)  # fastai's LMDataLoader shuffles its texts in place
    order = list(texts) if texts is not None else None
    try:
        yield
    finally:
        set_random_states(**states)
        if rng is not None:
            dl.rng = random.Random()
            dl.rng.setstate(rng_state)
        if order is not None:
            texts[:] = order  # in place: the texts' lengths are indexed by the same list
            dl.make_chunks()


def guarded_batch_png(dls, dest: Path) -> None:
    "batch.png, or a warning in train.log if this data cannot be shown: a picture never stops a run."
    try:
        batch_png(dls, dest)
    except Exception as e:  # any data fastai cannot show (a GAN's noise): the run goes on without the picture
        plt.close("all")
        log.warning("plots/%s not drawn (%s: %s); training goes on", BATCH, type(e).__name__, e)


@contextmanager
def captured_tables():
    "fastai's display_df (text and tabular show_batch print a DataFrame) collecting the DataFrames instead."
    from fastai import torch_core

    tables, original = [], torch_core.display_df
    users = [m for m in list(sys.modules.values()) if getattr(m, "display_df", None) is original]
    for m in users:
        m.display_df = tables.append
    try:
        yield tables
    finally:
        for m in users:
            m.display_df = original


def table_png(df, dest: Path, width: int = 60) -> None:
    "A DataFrame as a picture: one row per item, long cells (a text) wrapped at `width` characters."
    df = df.reset_index(drop=True)
    cells = [["\n".join(textwrap.wrap(str(v), width)) or str(v) for v in row] for row in df.itertuples(index=False)]
    lines = [max(c.count("\n") + 1 for c in row) for row in cells]
    col_chars = [max(max((len(ln) for c in col for ln in c.split("\n")), default=1), len(str(h)))
                 for h, col in zip(df.columns, zip(*cells))]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.09 * sum(col_chars) + 1), 0.3 + 0.2 * (sum(lines) + len(lines))))
    ax.axis("off")
    table = ax.table(cellText=cells, colLabels=[str(c) for c in df.columns], loc="upper center", cellLoc="left",
                     colWidths=[c / sum(col_chars) for c in col_chars])
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    for (r, _), cell in table.get_celld().items():
        cell.set_height(0.2 * ((lines[r - 1] if r else 1) + 0.6) / (0.3 + 0.2 * (sum(lines) + len(lines))))
    save(fig, dest)


def tensors_png(b, vocab, dest: Path, max_n: int) -> None:
    "A batch of plain tensors: images titled with their label, or word ids as words (a language model's stream)."
    from fxp.plots import image_grid

    x, y = (t[:max_n].cpu() for t in b[:2])
    words = (lambda ids: " ".join(str(vocab[i]) for i in ids.tolist())) if vocab is not None else str
    if x.ndim == 4:  # images or spectrograms; a multi-label target is a 0/1 row: its labels
        labels = [words(v.nonzero().flatten() if v.ndim else v.reshape(1)) for v in y]
        return image_grid(list(x), labels, dest)
    import pandas as pd

    table_png(pd.DataFrame({"input": [words(r) for r in x], "next words": [words(r) for r in y]}), dest)


def datablock_summary(dls) -> str:
    """How the data was made: fastai's DataBlock.summary (each step from a source item to a batch) where the kind
    built a DataBlock, else the sizes and a batch's shapes."""
    out = io.StringIO()
    with redirect_stdout(out), untouched(dls.train):
        if not _block_summary(dls):
            _batch_summary(dls)
    return "\n".join(_short(line) for line in out.getvalue().splitlines()) + "\n"


def _block_summary(dls) -> bool:
    "Print fastai's DataBlock.summary of the kind's block; False where there is none or fastai's summary stops."
    block = getattr(dls, "block", None)
    if block is None:
        return False
    try:
        block.summary(dls.source, bs=4)
        return True
    except Exception as e:  # fastai's summary cannot collate some blocks (a language model's streams)
        print(f"(fastai's DataBlock.summary stopped: {type(e).__name__}: {str(e).splitlines()[0]})\n")
        return False


def _batch_summary(dls) -> None:
    b = dls.train.one_batch()
    print(f"training items: {len(dls.train_ds)}, valid items: {len(dls.valid_ds)}, batch size {dls.train.bs}")
    for i, t in enumerate(b):
        print(f"batch[{i}]: {type(t).__name__} {tuple(getattr(t, 'shape', ()))} {getattr(t, 'dtype', '')}")


def _short(line: str, width: int = 300) -> str:
    "A line cut at `width` characters (fastai prints the whole source list: a thousand file names)."
    return line if len(line) <= width else f"{line[:width]} ... ({len(line) - width} more characters)"
