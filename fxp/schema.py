"""The config schemas: dataclasses that Hydra's ConfigStore holds and OmegaConf types the composed config with.

Struct-typed, so `trainer.epoch=3` fails at compose time naming the valid keys. `task` is typed by its kind: each
`fxp/tasks/<kind>.py` declares a `Task` dataclass extending `TaskBase`. Nothing here imports from fxp, so any
module can read a schema without pulling in the rest.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


@dataclass
class Stage:
    "One training step of a recipe: `policy` for `epochs` at `lr`, after optional freezing and resizing."
    policy: str = "fit_one_cycle"
    epochs: Optional[int] = None  # None: trainer.epochs
    lr: Any = None  # number, [lo, hi] (discriminative), "find", or None: trainer.lr
    freeze: Any = None  # True: freeze the body, False: unfreeze, -n: train the last n parameter groups, None: as is
    freeze_epochs: int = 1  # fine_tune only
    pct_start: Optional[float] = None  # None: fastai's default for the policy
    size: Any = None  # new image size (progressive resizing): int or [h, w]


@dataclass
class EarlyStopping:
    patience: Optional[int] = None  # None: off
    min_delta: float = 0.0


@dataclass
class Trainer:
    bs: int = 64
    epochs: int = 5
    lr: Any = 1e-2
    wd: Optional[float] = None
    moms: List[float] = field(default_factory=lambda: [0.95, 0.85, 0.95])
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    seed: int = 42
    device: str = "auto"
    num_workers: int = 0
    num_threads: Optional[int] = None  # torch's CPU threads; None: torch's default. 1 per job when jobs share cores
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    save_best: bool = True
    stages: List[Stage] = field(default_factory=lambda: [Stage()])
    cbs: Dict[str, Any] = field(default_factory=dict)  # extra fastai callbacks: name → `_target_` node


@dataclass
class Model:
    arch: Optional[str] = None  # dotted path of a fastai/torchvision architecture for vision_learner
    net: Any = None  # or a `_target_` node building the whole network (called with n_in, n_out)
    pretrained: bool = False
    kwargs: Dict[str, Any] = field(default_factory=dict)  # extra learner arguments (ps, y_range, ...)


@dataclass
class Data:
    "A local copy of the task's dataset (`path`; else the task's fastai `url` is downloaded once)."
    path: Optional[str] = None
    skip_bad: bool = False  # skip unreadable images (counted in summary.json) instead of stopping


@dataclass
class Monitor:
    metric: str = "valid_loss"
    mode: str = "min"


@dataclass
class Aug:
    "fastai's aug_transforms knobs; `size` crops after the item Resize (None keeps the size)."
    size: Any = None
    min_scale: float = 1.0
    do_flip: bool = True
    flip_vert: bool = False
    max_rotate: float = 10.0
    max_lighting: float = 0.2
    max_zoom: float = 1.1
    max_warp: float = 0.2
    pad_mode: str = "reflection"


@dataclass
class TaskBase:
    "Keys every task has; a kind's `Task` dataclass extends it."
    kind: str = "classification"
    url: Optional[str] = None  # the dataset's fastai URLs name (PETS, MNIST_TINY, ...), used without data.path
    metrics: List[Any] = field(default_factory=list)  # fastai.metrics names, or `_target_` nodes
    monitor: Monitor = field(default_factory=Monitor)


# Bases a kind's `Task` mixes in before TaskBase (`class Task(Images, Listed, TaskBase)`), so TaskBase's keys come
# first; a kind whose default differs re-declares the field (`resize_method: str = "squish"`).


@dataclass
class Split:
    "A random split (fastai's RandomSplitter): `valid_pct` of the items, drawn with `split_seed`."
    valid_pct: float = 0.2
    split_seed: int = 42


@dataclass
class Listed(Split):
    "Images a label file lists: <folder>/<fn_col cell><suff>; a boolean `valid_col` marks valid rows (else valid_pct)."
    folder: Optional[str] = None  # images sub-folder of data.path
    fn_col: Any = 0  # file-name column (name or position)
    suff: str = ""  # appended to each file name (e.g. .jpg)
    valid_col: Optional[str] = None


@dataclass
class Images:
    "How image items are resized and augmented."
    size: Any = None  # item Resize: int or [h, w]; None keeps the images' size
    resize_method: str = "crop"  # crop | pad | squish
    pad_mode: str = "reflection"  # zeros | reflection | border
    aug: Optional[Aug] = None  # null: no augmentation; {}: fastai's defaults (applied to masks and points too)


@dataclass
class Reproduce:
    "What an experiment preset reproduces: a published metric, its direction, the tolerance, where it is from."
    metric: str = "valid_loss"
    published: float = 0.0
    mode: str = "min"
    tolerance: float = 0.0
    source: str = ""
    needs: List[str] = field(default_factory=list)  # gpu, pretrained, data: what the preset cannot do offline on CPU
    step: Optional[str] = None  # the published figure is a training step's (its subfolder), not the final learner's


@dataclass
class Config:
    task: Any = None
    data: Data = field(default_factory=Data)
    model: Model = field(default_factory=Model)
    trainer: Trainer = field(default_factory=Trainer)
    logger: Dict[str, Any] = field(default_factory=dict)
    reproduce: Optional[Reproduce] = None  # set by an experiment preset (experiments/)
