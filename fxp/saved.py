"""A saved run, for the commands that use its model without training it (`fxp val`, `fxp export`): its config as it
validates now with the few overrides such a command takes (where the data is, how its layout is named), its exported
learner, and labelled items of the data run through that learner's own pipeline.

The learner's pipeline, not a rebuilt one: the class vocabulary, a tabular model's Categorify codes and Normalize
statistics are the training run's, whatever data the items come from (a new folder in the same layout has its own
classes order and its own column statistics, which the model never saw).
"""
from __future__ import annotations

from pathlib import Path

from fxp.errors import ConfigError, FxpError, check_writable
from fxp.runs import CONFIG, MODEL, PICKLES, first_line, read_json
from fxp.writer import sha256

# What a command on a saved run may change: where the data is and how it is laid out, and how it is batched. Never
# what the model is or how it was trained (model.*, trainer.lr, ...): those are the run's.
TAKES = ("data.", "task.", "trainer.bs", "trainer.num_workers", "trainer.device")
SPLITS = ("valid", "test")  # test: every labelled item of the data (new data held out as a whole)


def check_run(run_dir: Path, command: str) -> Path:
    """`run_dir` if it holds an exported learner and can be written (the command's results go in it); else one line.
    fastai's import-time notes are silenced from here on."""
    import warnings

    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*")  # fastai's import-time jit use
    run_dir = Path(run_dir)
    if not (run_dir / MODEL).is_file():
        raise FxpError(f"{command}: no {MODEL} in {run_dir}: give the folder of a completed run (fxp runs lists them)")
    check_writable(run_dir, command)
    return run_dir


def one_learner(run_dir: Path, command: str, cannot: str) -> None:
    """The run's kind trains one learner on one data set (`dls` + `learner`), which a saved run's data is rebuilt for;
    else one line, `cannot` saying what the command takes. Read before the config is validated: the kind is the
    reason, not the data folder it no longer finds."""
    from fxp import dispatch
    from fxp.runs import read_config

    kind = (read_config(run_dir).get("task") or {}).get("kind")
    if not isinstance(kind, str):
        raise FxpError(f"{command}: {Path(run_dir) / CONFIG} has no task.kind; give the folder of a completed run")
    if not hasattr(dispatch.kind_module(kind), "dls"):
        raise FxpError(f"{command}: {kind} runs train in steps (several learners); they {cannot}")


def one_learner_kinds() -> list[str]:
    "The kinds whose saved runs `one_learner` takes: those that give `dls` (a saved run's data is rebuilt with it)."
    from fxp import dispatch

    return [k for k in dispatch.kinds() if hasattr(dispatch.kind_module(k), "dls")]


def config(run_dir: Path, overrides: list[str], command: str):
    """The run's config.yaml merged into today's schema with `overrides` (keys under TAKES) applied, validated; one
    line naming the key if it does not validate (a moved data folder: the data.path= that fixes it)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from fxp import config as fxp_config
    from fxp.schema import Config

    fxp_config.register()
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(Path(run_dir) / CONFIG))
    except Exception as e:  # missing, not YAML, or a key today's schema lacks
        raise FxpError(f"{command}: {Path(run_dir) / CONFIG} cannot be read as a run's config "
                       f"({fxp_config.one_line(e)})") from None
    for o in overrides:
        try:
            parsed = OverridesParser.create().parse_overrides([o])[0]
        except Exception as e:
            raise ConfigError(f"{command}: cannot parse the override {o!r} ({str(e).splitlines()[0]})") from None
        key = parsed.key_or_group or ""
        if not key.startswith(TAKES) or key == "task.kind":
            raise ConfigError(f"{command}: {o!r}: only the data and its layout can change for a trained model "
                              f"({', '.join(k + '*' if k.endswith('.') else k for k in TAKES)}; not task.kind)")
        try:
            OmegaConf.update(cfg, key, parsed.value(), merge=True)
        except Exception as e:
            raise ConfigError(f"{command}: {fxp_config.one_line(e)}") from None
    try:
        return fxp_config.validate(cfg)
    except ConfigError as e:
        fix = f" (if the data moved: {command} {run_dir} data.path=NEW)" if "data.path" in str(e) else ""
        raise ConfigError(f"{command}: {e}{fix}") from None


def device(cfg):
    "The CPU, as fxp predict, unless `trainer.device=cuda` is given (the run's `auto` picked its training device)."
    import torch

    from fxp.train import device_of

    return torch.device("cpu") if cfg.trainer.device == "auto" else device_of(cfg.trainer)


def load(path: Path, command: str = "fxp", trust: bool = False):
    """fastai's load_learner on the CPU (a model saved on a GPU loads anywhere), once the file is the one fxp wrote
    (`verified`); a file that does not unpickle (truncated, not a learner) is one line."""
    import warnings

    verified(Path(path), command, trust)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fastai's warning that pickles run code: verified said what applies
        from fastai.learner import load_learner

        try:
            return load_learner(path, cpu=True)
        except Exception as e:  # EOFError, UnpicklingError, a class that is gone: the file, not fxp
            raise FxpError(f"{command}: {path} cannot be loaded ({type(e).__name__}: {first_line(e) or 'no detail'}); "
                           f"it is damaged or not a fastai export: train the run again") from None


def verified(path: Path, command: str = "fxp", trust: bool = False) -> None:
    """Unpickling runs whatever code a pickle holds: load only the file fxp wrote, its SHA-256 as recorded in the
    folder's pickles.json (fxp.writer.write_pickle), unless `trust` (--trust). A folder without a record (an older fxp
    wrote none) gets one line of warning on stderr and loads."""
    import sys

    record = read_json(path.parent / PICKLES)
    if not record:
        print(f"fxp: warning: {path.parent} has no {PICKLES} (an older fxp's run): {path.name} is loaded unchecked; "
              f"load only runs you trust", file=sys.stderr)
        return
    if trust or sha256(path) in (record.get(path.name) or []):
        return
    raise FxpError(f"{command}: {path} is not the file fxp wrote there (its SHA-256 differs from the one in "
                   f"{PICKLES}): it was replaced or damaged, and loading a pickle runs any code it holds; train the "
                   f"run again, or add --trust if you know where the file comes from")


def learner(run_dir: Path, dev, command: str = "fxp", trust: bool = False):
    "The run's exported learner on `dev`, quiet: no progress bar, no epoch lines."
    from fastai.callback.progress import ProgressCallback

    learn = load(Path(run_dir) / MODEL, command, trust)
    if dev.type != "cpu":
        learn.model.to(dev)
        learn.dls.to(dev)
    learn.remove_cb(ProgressCallback)
    learn.logger = lambda *_: None
    return learn


def labelled(learn, kind, cfg, split: str, dev, run_dir: Path, limit: int | None = None):
    """The learner with loaders over the data `cfg` points at: its training split and the `split` to evaluate
    (valid: the validation split; test: every item; its first `limit`), each run through the learner's own pipeline
    with labels."""
    dls = _data(kind, cfg, dev, run_dir)
    if hasattr(dls.valid_ds, "tensors"):  # in-memory data (digits): the data is the run's own, encoded the same way
        if split != "valid":
            raise FxpError(f"--split {split}: this task's in-memory data has one held-out split; use --split valid")
        learn.dls = dls
        return learn
    _read_from(learn.dls, dls)
    train, valid = (_raw(dls, ds) for ds in (dls.train_ds, dls.valid_ds))
    held_out = (valid if split == "valid" else _joined(train, valid))[:limit]
    known = [str(v) for v in _vocab(learn)]
    new = [str(v) for v in _vocab(dls) if str(v) not in known]
    if known and new:
        raise FxpError(f"the data at {cfg.data.path or 'the task URL'} has the class '{new[0]}' that the run never "
                       f"learnt (its classes: {', '.join(known[:20])}); evaluate on data with the run's classes")
    loaders = [_test_dl(learn, items) for items in (train, held_out)]
    learn.dls = type(learn.dls)(*loaders, path=learn.dls.path, device=dev)
    return learn


def _data(kind, cfg, dev, run_dir: Path):
    """The kind's loaders; a kind whose `dls` takes the run's folder (word_lm generates its data there when data.path is
    not set) gets the run's, not the working directory."""
    import inspect

    if "run_path" in inspect.signature(kind.dls).parameters:
        return kind.dls(cfg, dev, run_path=Path(run_dir))
    return kind.dls(cfg, dev)


def _read_from(run_dls, dls) -> None:
    """The run's item pipelines read each item where `dls` (built on the data given now) reads it: their getters
    become those of `dls`, which a task builds on data.path (a CSV's image folder, a segmentation's mask folder; the
    run's own point at the training data, and would label new images with its masks). What was set up on the
    training data (a class vocab, a class count) stays the run's. Tables (rows, no getters) are left as they are."""
    from fastcore.foundation import L

    if not hasattr(run_dls.valid_ds, "tls"):
        return
    for run, now in zip(run_dls.valid_ds.tls, dls.valid_ds.tls):
        if len(run.tfms.fs) != len(now.tfms.fs):
            raise FxpError(f"this run's item pipeline ({run.tfms}) is not the one this fxp builds for its task "
                           f"({now.tfms}); evaluate it with the fxp version that trained it")
        run.tfms.fs = L(_mixed(run.tfms.fs, now.tfms.fs))


def _mixed(run: list, now: list) -> list:
    """`now`'s transforms, except those set up on the training data: the run's. Where the run's classes are names and
    the new data's labels are not (a CSV's 7 for a folder's '7'), the labels become names first, as the classes are
    compared (`labelled`)."""
    from fasttransform import Transform

    out = []
    for r, n in zip(run, now):
        if _set_up(r) and _names(r) and not _names(n):
            out.append(Transform(_as_names))
        out.append(r if _set_up(r) else n)
    return out


def _set_up(tfm) -> bool:
    "Whether a transform holds what it learnt from the training data (Categorize's vocab, OneHotEncode's count)."
    return hasattr(tfm, "vocab") or hasattr(tfm, "c")


def _names(tfm) -> bool:
    "Whether a transform's classes are all strings."
    vocab = getattr(tfm, "vocab", None)
    return vocab is not None and all(isinstance(v, str) for v in vocab)


def _as_names(label):
    "A label (a multi-label's list of them) as a class name: 7 → '7'."
    return [str(v) for v in label] if isinstance(label, (list, tuple)) else str(label)


def _raw(dls, ds):
    "A split's items as the learner's test_dl takes them: file paths or listing rows; a table's rows before its procs."
    rows = getattr(dls, "raw_rows", None)  # tabular: its loaders keep the CSV's rows as read, before the procs
    return rows.loc[ds.items.index] if rows is not None else ds.items


def _joined(a, b):
    "Two splits' items as one (lists of paths, or table rows)."
    if hasattr(a, "iloc"):
        import pandas as pd

        return pd.concat([a, b])
    return [*a, *b]


def _test_dl(learn, items):
    """A loader over `items` with their labels, by the learner's pipeline (a table's test_dl keeps its target column).
    The items are what the whole pipeline takes (rm_type_tfms=0): fastai would infer that from the types the run's
    getters took, which `_read_from` may have replaced (a run of a folder evaluated on a CSV listing)."""
    import inspect

    if "with_labels" in inspect.signature(learn.dls.test_dl).parameters:
        return learn.dls.test_dl(items, with_labels=True, rm_type_tfms=0)
    return learn.dls.test_dl(items)


def _vocab(obj) -> list:
    "The class names of a learner's or loaders' labels (none for regression targets)."
    vocab = getattr(getattr(obj, "dls", obj), "vocab", None)
    return list(vocab) if vocab is not None else []


def classes(learn) -> list | None:
    """The class names the model's outputs follow: its labels' vocab (a text classifier's: the second of [words,
    classes]), a segmentation's codes (held by its masks' AddMaskCodes item transform); None for regression."""
    vocab = getattr(learn.dls, "vocab", None)
    if vocab is None:
        vocab = getattr(getattr(learn.dls.valid, "after_item", None), "vocab", None)
    if vocab is not None and len(vocab) == 2 and isinstance(vocab[0], list):
        vocab = vocab[1]
    return [str(v) for v in vocab] if vocab is not None and len(vocab) else None
