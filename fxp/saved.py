"""A saved run, opened once by the commands that use what it trained without training it (`fxp predict`, `val`,
`export`, `serve`, `clean`, `resume`): `SavedRun` reads each part when first asked, each failure one line naming the
command: its config as written, or validated as it is now with the few overrides the command takes; its kind; its
summary; its exported learner (loaded only once its SHA-256 matches the run's record, or with --trust); and labelled
items of the data run through that learner's own pipeline.

The learner's pipeline, not a rebuilt one: the class vocabulary, a tabular model's Categorify codes and Normalize
statistics are the training run's, whatever data the items come from (a new folder in the same layout has its own
classes order and its own column statistics, which the model never saw).
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path

from fxp.errors import ConfigError, FxpError, check_writable
from fxp.runs import CONFIG, MODEL, PICKLES, first_line, read_json, read_summary
from fxp.writer import sha256

# What a command on a saved run may change (a name ending in `.`: every key under it): where the data is and how it is
# laid out, and how it is batched. Never what the model is or how it was trained (model.*, trainer.lr, ...): those
# are the run's; and never task.kind.
TAKES = ("data.", "task.", "trainer.bs", "trainer.num_workers", "trainer.device")
SPLITS = ("valid", "test")  # test: every labelled item of the data (new data held out as a whole)


def open_run(path: Path, command: str, trust: bool = False, writes: bool = False) -> SavedRun:
    """The run folder `path` if it holds an exported learner (and, if the command `writes` its results there, can be
    written); else one line. fastai's import-time notes are silenced from here on."""
    import warnings

    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*")  # fastai's import-time jit use
    path = Path(path)
    if not (path / MODEL).is_file():
        raise FxpError(f"{command}: no {MODEL} in {path}: give the folder of a completed run (fxp runs lists them)")
    if writes:
        check_writable(path, command)
    return SavedRun(path, command, trust)


class SavedRun:
    "A run folder as `command` uses it; `trust`: load its model.pkl even if it is not the file the run recorded."

    def __init__(self, path: Path, command: str, trust: bool = False):
        self.path, self.command, self.trust = Path(path), command, trust

    @cached_property
    def written(self):
        """config.yaml as the run wrote it (resolved), not validated (fxp predict needs no training data); one line if
        it is missing, unreadable or not a run's config."""
        from omegaconf import DictConfig, OmegaConf

        f = self.path / CONFIG
        if not f.is_file():
            raise FxpError(f"{self.command}: no {CONFIG} in {self.path}: the run's kind and task come from it; give "
                           f"the folder of a completed run (fxp runs lists them)")
        try:
            cfg = OmegaConf.load(f)
        except Exception as e:  # not YAML, not UTF-8
            raise FxpError(f"{self.command}: {f} cannot be read ({type(e).__name__}: {first_line(e)})") from None
        kind = OmegaConf.select(cfg, "task.kind", default=None) if isinstance(cfg, DictConfig) else None
        if not isinstance(kind, str):
            raise FxpError(f"{self.command}: {f} has no task.kind (it is not a run's {CONFIG}); give the folder of a "
                           f"completed run")
        return cfg

    @cached_property
    def kind(self):
        "The module of the run's task kind."
        from fxp import dispatch

        return dispatch.kind_module(self.written.task.kind)

    @cached_property
    def summary(self) -> dict:
        return read_summary(self.path)

    @cached_property
    def learn(self):
        "The run's exported learner on the CPU, loaded once (`load`: only the file the run recorded, or --trust)."
        return load(self.path / MODEL, self.command, self.trust)

    def learner(self, dev):
        "The run's exported learner on `dev`, quiet: no progress bar, no epoch lines."
        from fastai.callback.progress import ProgressCallback

        learn = self.learn
        if dev.type != "cpu":
            learn.model.to(dev)
            learn.dls.to(dev)
        learn.remove_cb(ProgressCallback)
        learn.logger = lambda *_: None
        return learn

    def config(self, overrides: list[str] = (), takes: tuple[str, ...] = TAKES):
        """The run's config merged into today's schema with `overrides` (keys under `takes`) applied, validated; one
        line naming the key if it does not validate (a moved data folder: the data.path= that fixes it)."""
        from omegaconf import OmegaConf

        from fxp import config
        from fxp.schema import Config

        config.register()
        try:
            cfg = OmegaConf.merge(config.schema_node(Config), self.written)
        except Exception as e:  # a key today's schema lacks, a value of the wrong type
            raise ConfigError(f"{self.command}: {self.path / CONFIG} no longer validates ({config.one_line(e)}); "
                              f"train the run anew with this fxp") from None
        for o in overrides:
            self._apply(cfg, o, takes)
        if taken("trainer.bs", takes):  # a command that batches the run's data
            self.batched(cfg)
        try:
            return config.validate(cfg)
        except ConfigError as e:
            fix = f" (if the data moved: {self.command} {self.path} data.path=NEW)" if "data.path" in str(e) else ""
            raise ConfigError(f"{self.command}: {e}{fix}") from None

    def batched(self, cfg):
        """`cfg` with trainer.bs=auto as a number, for a command that batches data without training: the size the run
        ended its training at (summary.json's `bs`), else the schema's default (any size gives the same results)."""
        from fxp.schema import Trainer

        if cfg.trainer.bs == "auto":
            bs = self.summary.get("bs")
            cfg.trainer.bs = bs if isinstance(bs, int) and bs >= 2 else Trainer.bs
        return cfg

    def _apply(self, cfg, override: str, takes: tuple[str, ...]) -> None:
        "One override of a key the command takes (`logger=NAME`: the group's YAML, as fxp train composes it)."
        from omegaconf import OmegaConf

        from fxp import config

        try:
            parsed = config.parse_override(override)
        except ConfigError as e:
            raise ConfigError(f"{self.command}: {e}") from None
        key = parsed.key_or_group
        if not taken(key, takes):
            raise ConfigError(f"{self.command}: {override!r}: {self.command} takes only {listed(takes)} (not "
                              f"task.kind): the rest would change what the run computes (train anew to change {key})")
        try:
            if key == "logger":
                cfg.logger = loggers(parsed.value(), self.command)
            else:
                OmegaConf.update(cfg, key, parsed.value(), merge=True)
        except ConfigError:
            raise
        except Exception as e:  # a value of the wrong type for the schema
            raise ConfigError(f"{self.command}: {config.one_line(e)}") from None

    def one_learner(self, cannot: str) -> None:
        """The run's kind trains one learner on one data set (`dls` + `learner`), which a saved run's data is rebuilt
        for; else one line, `cannot` saying what the command takes. Asked before the config is validated: the kind is
        the reason, not the data folder it no longer finds."""
        if not hasattr(self.kind, "dls"):
            raise FxpError(f"{self.command}: {self.written.task.kind} runs train in steps (several learners); they "
                           f"{cannot}")


def taken(key: str, takes: tuple[str, ...]) -> bool:
    "Whether `key` is one of `takes` (a name ending in `.`: any key under it); task.kind never is."
    return key != "task.kind" and any(key == t or (t.endswith(".") and key.startswith(t)) for t in takes)


def listed(takes: tuple[str, ...]) -> str:
    "The keys a command takes, as its help and errors show them: `data.*, trainer.bs`."
    return ", ".join(t + "*" if t.endswith(".") else t for t in takes)


def one_learner_kinds() -> list[str]:
    "The kinds whose saved runs `SavedRun.one_learner` takes: those that give `dls` (a saved run's data is rebuilt)."
    from fxp import dispatch

    return [k for k in dispatch.kinds() if hasattr(dispatch.kind_module(k), "dls")]


def loggers(value, command: str):
    "`logger=NAME`, `logger=[A,B]` or `logger=null` as `fxp train` composes it: the chosen YAMLs merged."
    from omegaconf import OmegaConf

    from fxp import config

    names = [] if value is None else [value] if isinstance(value, str) else list(value)
    choices = config.choices("logger")
    out = OmegaConf.create({})
    for name in names:
        if name not in choices:
            raise ConfigError(f"{command}: unknown logger {name!r}; choose from: {', '.join(choices)}")
        out = OmegaConf.merge(out, OmegaConf.load(config.conf_dir() / "logger" / f"{name}.yaml"))
    return out


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


def labelled(learn, kind, cfg, split: str, dev, run_dir: Path, limit: int | None = None):
    """The learner with loaders over the data `cfg` points at: its training split and the `split` to evaluate
    (valid: the validation split; test: every item; its first `limit`), each run through the learner's own pipeline
    with labels."""
    dls = build_loaders(kind, cfg, dev, run_dir)
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


def build_loaders(kind, cfg, dev, run_dir: Path):
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
