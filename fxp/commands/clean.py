"""`fxp clean RUN_DIR [--top N]`: the items a run's model gets most wrong (lesson 2: top losses before cleaning), as
RUN_DIR/clean/top_losses.csv with an empty action column to fill (keep, delete, relabel:LABEL) and a contact sheet of
their images. The next run takes the CSV as data.exclude= and data.relabel=; the files on disk are never touched.
"""
from __future__ import annotations

from pathlib import Path

from fxp.console import console
from fxp.errors import FxpError

TOP, FOLDER, CSV, SHEET = 25, "clean", "top_losses.csv", "top_losses.png"
SHEET_MAX = 100  # images on the contact sheet (the CSV lists every one of --top)
HELP = f"""usage: fxp clean RUN_DIR [--top N] [--trust]

The training and validation items a run's model (RUN_DIR/model.pkl) gets most wrong, highest loss first: written to
RUN_DIR/{FOLDER}/{CSV} (file, split, label, predicted, probability, loss, and an empty action column) and a contact
sheet RUN_DIR/{FOLDER}/{SHEET} (the first {SHEET_MAX}). Fill the action column (keep, delete or relabel:LABEL),
then train again with
  data.exclude=RUN_DIR/{FOLDER}/{CSV}   items marked delete left out (every listed item when none is marked)
  data.relabel=RUN_DIR/{FOLDER}/{CSV}   items marked relabel:LABEL trained as LABEL
The image files are never moved or changed. Image classification runs on image files (folders, regex, csv sources).

arguments:
  RUN_DIR      a completed run folder
  --top N      how many items ({TOP})
  --trust      load a model.pkl that does not match the hash the run recorded (it runs any code it holds)
  -h, --help   show this help
"""


def main(args: list[str]) -> int:
    if "-h" in args or "--help" in args:
        print(HELP, end="")
        return 0
    run_dir, top = _args([a for a in args if a != "--trust"])
    from fxp import dispatch, saved

    run = saved.open_run(run_dir, "fxp clean", "--trust" in args, writes=True)
    cfg = run.written
    why = dispatch.not_cleanable(cfg)
    if why:
        raise FxpError(f"fxp clean: {run_dir} cannot be cleaned: {why}")
    rows, images = top_losses(run.learn, run.batched(cfg), top)
    write(rows, images, run_dir / FOLDER)
    _print(rows, run_dir / FOLDER)
    return 0


def _args(args: list[str]) -> tuple[Path, int]:
    usage = "usage: fxp clean RUN_DIR [--top N]"
    top, rest = TOP, list(args)
    if "--top" in rest:
        i = rest.index("--top")
        value = rest[i + 1] if i + 1 < len(rest) else ""
        if not value.isdigit() or int(value) < 1:
            raise FxpError(f"fxp clean: --top takes a whole number of items ≥ 1, not {value!r}; {usage}")
        top = int(value)
        del rest[i:i + 2]
    if len(rest) != 1 or rest[0].startswith("-"):
        raise FxpError(usage)
    return Path(rest[0]), top


def top_losses(learn, cfg, top: int):
    """The `top` items of the run's data (both splits, read as the run read them: its exclusions and relabels) with the
    highest loss under the run's model: rows for the CSV, and the images as the model saw them."""
    import torch

    from fxp import dispatch, train  # noqa: F401  (train: fastai imported with its import-time warnings silenced)
    from fxp.vision import valid_items

    dls = dispatch.kind_module(cfg.task.kind).dls(cfg, torch.device("cpu"))
    vocab, scored = learn.dls.vocab, []
    for split, items in (("train", dls.train.items), ("valid", dls.valid.items)):
        dl = learn.dls.test_dl(items, with_labels=True)  # the validation transforms: no augmentation
        probs, targs, losses = learn.get_preds(dl=dl, with_loss=True)
        rows = (r for _, r in items.iterrows()) if hasattr(items, "iloc") else items
        scored += [dict(file=dls.item_key(item), split=split, label=str(vocab[int(t)]),
                        predicted=str(vocab[p.argmax().item()]), probability=round(p.max().item(), 4),
                        loss=round(float(loss), 4), action="", at=(dl, i))
                   for i, (item, p, t, loss) in enumerate(zip(rows, probs, targs, losses))]
    worst = sorted(scored, key=lambda r: -r["loss"])[:top]
    images = [valid_items(dl, [i])[0] for dl, i in (r["at"] for r in worst[:SHEET_MAX])]
    return worst, images  # the CSV takes CLEAN_COLS of each row (not `at`: where the item is)


def write(rows: list[dict], images: list, folder: Path) -> None:
    "The CSV and the contact sheet (each image titled: file, label → prediction, loss), each written whole."
    import pandas as pd

    from fxp.data import CLEAN_COLS
    from fxp.plots import image_grid
    from fxp.writer import write_atomic

    folder.mkdir(exist_ok=True)
    df = pd.DataFrame(rows, columns=list(CLEAN_COLS))
    write_atomic(folder / CSV, df.to_csv(index=False))
    titles = [f"{r['file']}\n{r['label']} → {r['predicted']} (p {r['probability']:.2f})\nloss {r['loss']:.2f}"
              for r in rows[:len(images)]]
    image_grid(images, titles, folder / SHEET, ncols=5)


def _print(rows: list[dict], folder: Path) -> None:
    from rich.table import Table

    table = Table(title=f"top {len(rows)} losses")
    for col in ("file", "split", "label", "predicted", "probability", "loss"):
        table.add_column(col, justify="right" if col in ("probability", "loss") else "left", overflow="fold")
    for r in rows:
        table.add_row(r["file"], r["split"], r["label"], r["predicted"], f"{r['probability']:.3f}", f"{r['loss']:.3f}")
    out = console()
    out.print(table)
    for line in (f"list: {folder / CSV} (fill its action column: keep, delete or relabel:LABEL)",
                 f"contact sheet: {folder / SHEET}",
                 f"next run: fxp train ... data.exclude={folder / CSV} data.relabel={folder / CSV}"):
        out.print(line, highlight=False, soft_wrap=True)
