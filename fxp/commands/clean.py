"""`fxp clean RUN_DIR [--top N]`: the items a run's model gets most wrong (lesson 2: top losses before cleaning), as
RUN_DIR/clean/top_losses.csv with an empty action column to fill (keep, delete, relabel:LABEL), a contact sheet of
their images (spectrograms for sound) and a page with each item's file beside its row. The next run takes the CSV as
data.exclude= and data.relabel=; the files on disk are never touched.
"""
from __future__ import annotations

from pathlib import Path

from fxp.console import console
from fxp.errors import FxpError

TOP, FOLDER, CSV, SHEET, PAGE = 25, "clean", "top_losses.csv", "top_losses.png", "top_losses.html"
SHEET_MAX = 100  # images on the contact sheet (the CSV lists every one of --top)
HELP = f"""usage: fxp clean RUN_DIR [--top N] [--trust]

The training and validation items a run's model (RUN_DIR/model.pkl) gets most wrong, highest loss first: written to
RUN_DIR/{FOLDER}/{CSV} (file, split, label, predicted, probability, loss, and an empty action column) and a contact
sheet RUN_DIR/{FOLDER}/{SHEET} (the first {SHEET_MAX}; spectrograms for sound), and RUN_DIR/{FOLDER}/{PAGE}, each
row beside its file to view or play. Fill the action column (keep, delete or relabel:LABEL), then train again with
  data.exclude=RUN_DIR/{FOLDER}/{CSV}   items marked delete left out (every listed item when none is marked)
  data.relabel=RUN_DIR/{FOLDER}/{CSV}   items marked relabel:LABEL trained as LABEL
The files are never moved or changed. Image classification runs on image files (folders, regex, csv sources) and
single-label audio runs.

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
    from fxp.data import data_path

    run = saved.open_run(run_dir, "fxp clean", "--trust" in args, writes=True)
    cfg = run.written
    why = dispatch.not_cleanable(cfg)
    if why:
        raise FxpError(f"fxp clean: {run_dir} cannot be cleaned: {why}")
    rows, images = top_losses(run.learn, run.batched(cfg), top)
    write(rows, images, run_dir / FOLDER)
    write_page(rows, data_path(cfg), run_dir / FOLDER)  # the folder the lists' names are relative to
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
    highest loss under the run's model: rows for the CSV, and the items as the model saw them (the contact sheet)."""
    import torch

    from fxp import dispatch, train  # noqa: F401  (train: fastai imported with its import-time warnings silenced)

    kind = dispatch.kind_module(cfg.task.kind)
    dls = kind.dls(cfg, torch.device("cpu"))
    vocab, scored = learn.dls.vocab, []
    for split, dl, names, picture in (kind.clean_items if hasattr(kind, "clean_items") else image_items)(learn, dls):
        probs, targs, losses = learn.get_preds(dl=dl, with_loss=True)
        scored += [dict(file=name, split=split, label=str(vocab[int(t)]), predicted=str(vocab[p.argmax().item()]),
                        probability=round(p.max().item(), 4), loss=round(float(loss), 4), action="", at=(picture, i))
                   for i, (name, p, t, loss) in enumerate(zip(names, probs, targs, losses))]
    worst = sorted(scored, key=lambda r: -r["loss"])[:top]
    pictures = [picture(i) for picture, i in (r["at"] for r in worst[:SHEET_MAX])]
    return worst, pictures  # the CSV takes CLEAN_COLS of each row (not `at`: where the item is)


def image_items(learn, dls) -> list:
    "Image files: each split's items through the learner's test_dl (its validation transforms), named by dls.item_key."
    from functools import partial

    out = []
    for split, items in (("train", dls.train.items), ("valid", dls.valid.items)):
        dl = learn.dls.test_dl(items, with_labels=True)  # the validation transforms: no augmentation
        rows = (r for _, r in items.iterrows()) if hasattr(items, "iloc") else items
        out.append((split, dl, [dls.item_key(item) for item in rows], partial(_image, dl)))
    return out


def _image(dl, i: int):
    from fxp.vision import valid_items

    return valid_items(dl, [i])[0]


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


def write_page(rows: list[dict], root: Path, folder: Path) -> None:
    "The list as a page: each item beside its row, to look at or listen to (the file itself: an <img>, an <audio>)."
    from fxp import reports

    cells = [[("html", media(root / r["file"])), r["file"], r["split"], r["label"], r["predicted"],
              f"{r['probability']:.3f}", f"{r['loss']:.3f}"] for r in rows]
    body = [f"<p>{reports.esc(root)}: the items the model gets most wrong, highest loss first. Mark them in "
            f"{reports.esc(folder / CSV)}'s action column (keep, delete or relabel:LABEL).</p>",
            reports.table(["item", "file", "split", "label", "predicted", "probability", "loss"], cells, (1, 2, 3, 4))]
    reports.write(folder / PAGE, reports.page(f"top {len(rows)} losses", body), "fxp clean")


def media(path: Path) -> str:
    "A file as the page shows it, by its type: a player for a sound, the picture for an image, else nothing."
    import mimetypes

    from fxp.reports import esc

    what, uri = (mimetypes.guess_type(path.name)[0] or "").split("/")[0], esc(path.resolve().as_uri())
    if what == "audio":
        return f'<audio controls preload="none" src="{uri}"></audio>'
    return f'<img src="{uri}" alt="{esc(path.name)}" style="max-width:128px;margin:0">' if what == "image" else ""


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
                 f"contact sheet: {folder / SHEET}", f"page (view or play each item): {folder / PAGE}",
                 f"next run: fxp train ... data.exclude={folder / CSV} data.relabel={folder / CSV}"):
        out.print(line, highlight=False, soft_wrap=True)
