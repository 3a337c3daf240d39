"""The config schemas: dataclasses that Hydra's ConfigStore holds and OmegaConf types the composed config with.

Struct-typed, so `trainer.epoch=3` fails at compose time naming the valid keys. `task` is typed by its kind: each
`fxp/tasks/<kind>.py` declares a `Task` dataclass extending `TaskBase`. What a type cannot say (a range, a list's
length, the allowed words) is declared once beside the default, as `field(metadata=valid(...))`, and checked for every
schema node by fxp.checks.check_values. Nothing here imports from fxp, so any module can read a schema without
pulling in the rest.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

PRECISIONS = ("fp32", "fp16", "bf16", "auto")
DEVICES = ("auto", "cpu", "cuda")
POLICIES = ("fit_one_cycle", "fine_tune", "fit")
PAD_MODES = ("zeros", "reflection", "border")
RESIZE_METHODS = ("crop", "pad", "squish")
MAX_SEED = 4294967295  # numpy's largest seed
SEEDS = f"[0, {MAX_SEED}]"
# the largest learning rate taken: far past divergence (a run at 1e3 diverges, and fxp diagnose says so, as lesson 1
# shows), and far below what overflows fp32 tensors in the optimizer (1e308 did, with a RuntimeError mid-training)
MAX_LR = 1e4
# fastai's optimizers (trainer.opt) and the hyper-parameters each takes beyond lr and wd (lessons 5 and 9)
INITS = ("default", "kaiming", "lsuv")  # model.init (fxp/init.py)
OPT_HYPERS = {"adam": ("mom", "sqr_mom", "eps"), "sgd": ("mom",), "rmsprop": ("mom", "sqr_mom", "eps"),
              "lamb": ("mom", "sqr_mom", "eps"), "ranger": ("mom", "sqr_mom", "eps")}


@dataclass(frozen=True)
class Valid:
    "The values a field takes beyond its type: checked by fxp.checks.check_values before anything is loaded."
    interval: str = ""  # numbers: '[1, inf)', '(0, 1)'; a bracket includes the end, a parenthesis excludes it
    items: Optional[int] = None  # a list of this many numbers ([h, w]; moms' three), each in the interval
    scalar: bool = True  # with `items`: a single number is accepted too (size: 224 or [h, w])
    whole: bool = False  # integers only
    choices: tuple = ()  # the allowed words
    why: str = ""  # said when the value is refused
    default_from: str = ""  # None here means that key's value (a stage's epochs: trainer.epochs)


def valid(interval: str = "", **kw) -> dict:
    "Field metadata declaring what the field takes (`Valid`): `field(default=64, metadata=valid('[2, inf)'))`."
    return {"valid": Valid(interval, **kw)}


SIZE = valid("[1, inf)", items=2, whole=True)  # pixels: one side, or [h, w]


@dataclass
class Stage:
    "One training step of a recipe: `policy` for `epochs` at `lr`, after optional freezing and resizing."
    policy: str = field(default="fit_one_cycle", metadata=valid(choices=POLICIES))
    epochs: Optional[int] = field(default=None, metadata=valid("[0, inf)", default_from="trainer.epochs"))
    # number, [lo, hi] (discriminative), "find", or None: trainer.lr
    lr: Any = field(default=None, metadata=valid(default_from="trainer.lr"))
    freeze: Any = None  # True: freeze the body, False: unfreeze, -n: train the last n parameter groups, None: as is
    freeze_epochs: int = field(default=1, metadata=valid("[0, inf)"))  # fine_tune only
    pct_start: Optional[float] = field(default=None, metadata=valid("[0, 1]"))  # None: fastai's default for the policy
    size: Any = field(default=None, metadata=SIZE)  # new image size (progressive resizing): int or [h, w]


@dataclass
class EarlyStopping:
    patience: Optional[int] = field(default=None, metadata=valid("[0, inf)"))  # None: off
    min_delta: float = field(default=0.0, metadata=valid("[0, inf)"))


@dataclass
class Trainer:
    # auto: the largest size whose training steps fit the device (CUDA), the fastest per item (CPU): fxp.batchsize
    bs: Any = field(default=64, metadata=valid("[2, inf)", whole=True, choices=("auto",),
                                               why="batch norm layers need two items per batch"))
    epochs: int = field(default=5, metadata=valid("[0, inf)"))
    lr: Any = 1e-2
    wd: Optional[float] = field(default=None, metadata=valid("[0, inf)"))
    moms: List[float] = field(default_factory=lambda: [0.95, 0.85, 0.95],
                              metadata=valid("[0, 1)", items=3, scalar=False, why="one-cycle's start, middle, end"))
    # auto: bf16 where the GPU has it, else fp16 if one batch agrees with fp32, else fp32 (fxp.precision)
    precision: str = field(default="fp32", metadata=valid(choices=PRECISIONS))
    channels_last: bool = False
    compile: bool = False
    seed: int = field(default=42, metadata=valid(SEEDS))
    # a seed group: the recipe trained this many times, with seeds seed, seed+1, ... (fxp.groups); 1: one run
    seeds: int = field(default=1, metadata=valid("[1, 1000]", whole=True))
    device: str = field(default="auto", metadata=valid(choices=DEVICES))
    # DataLoader worker processes; auto: none for cached or in-memory data, some for files decoded every epoch on CUDA
    num_workers: Any = field(default="auto", metadata=valid("[0, 256]", whole=True, choices=("auto",)))
    # torch's CPU threads; None: torch's default. 1 per job when jobs share cores
    num_threads: Optional[int] = field(default=None, metadata=valid("[1, 1024]"))
    # processes of one data-parallel run (DDP through torchrun's launcher, fastai's DistributedTrainer); bs is each
    # process's batch: the global batch is bs × devices × nodes
    devices: int = field(default=1, metadata=valid("[1, 1024]", whole=True))
    # machines of one DDP run, each starting `devices` processes (Slurm: hydra/launcher=slurm_ddp, a task per node)
    nodes: int = field(default=1, metadata=valid("[1, 1024]", whole=True))
    # the linear scaling rule: DDP's lr × devices × nodes (a larger global batch), and lr × 0.5 each time running out
    # of memory halves the batch (fxp.batchsize); off: lr as given
    scale_lr: bool = False
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    save_best: bool = True
    stages: List[Stage] = field(default_factory=lambda: [Stage()])
    cbs: Dict[str, Any] = field(default_factory=dict)  # extra fastai callbacks: name → `_target_` node
    # The course's techniques (fxp/techniques.py). The optimizer's hyper-parameters: None is fastai's default for it;
    # `mom` is the momentum of `fit` stages and, for sgd and rmsprop, switches momentum on (one-cycle then cycles it
    # through `moms`)
    opt: str = field(default="adam", metadata=valid(choices=tuple(OPT_HYPERS)))
    mom: Optional[float] = field(default=None, metadata=valid("[0, 1)"))
    sqr_mom: Optional[float] = field(default=None, metadata=valid("[0, 1)"))
    eps: Optional[float] = field(default=None, metadata=valid("(0, 1)"))
    mixup: float = field(default=0.0, metadata=valid("[0, inf)", why="α of Beta(α, α), the mixing weight; 0: off"))
    cutmix: float = field(default=0.0, metadata=valid("[0, inf)", why="α of Beta(α, α), the cut's area; 0: off"))
    clip: Optional[float] = field(default=None, metadata=valid("(0, inf)", why="the gradients' top norm; null: off"))
    accumulate: int = field(default=1, metadata=valid("[1, inf)", why="batches per optimizer step"))
    tta: bool = False  # test-time augmentation on the valid set after training: tta_<metric> in summary.json
    # the PNGs of plots/ (batch, loss curves, the kind's, diagnosis): false for a sweep of many small jobs, where
    # drawing them can take longer than the training; the run's numbers and `fxp report` are unchanged
    plots: bool = True
    activation_stats: bool = False  # per-layer activation statistics: plots/activation_stats.png, collapsed layers
    # torch.profiler over this many training steps of the first epoch (after one of warm-up) into the run's profile/:
    # a trace for Perfetto or TensorBoard, and top_ops.txt; 0: off
    profile: int = field(default=0, metadata=valid("[0, 100]", why="a trace of more steps is too large for Perfetto "
                                                                   "and TensorBoard to open"))
    # the data doctor's cheap checks (fxp.doctor: rare classes, unreadable files, copies across train and valid) on
    # each step's data before its first epoch, as warnings; false: off (fxp check runs them all)
    check: bool = True
    # bs=auto on CUDA: a size fits if its training step peaks under this share of the device's memory (headroom for
    # what later epochs allocate more: fragmentation, validation, another process)
    mem_fraction: float = field(default=0.85, metadata=valid("(0, 1]"))
    # bs=auto: sizes are multiples of this (doubling, then a binary search between the last that fit and the first
    # that did not); null: powers of two only
    bs_step: Optional[int] = field(default=None, metadata=valid("[1, inf)"))
    # k-fold cross-validation (fxp.cv): K runs of the recipe, each validating on one K-th of the items (the folds, drawn
    # once from trainer.seed, fxp.folds), in fold0..fold{K-1} of a cv folder with the folds' mean ± std; null: one run
    # on the task's own split
    folds: Optional[int] = field(default=None, metadata=valid("[2, inf)", whole=True))
    # the one fold a run validates on (0..folds-1): fxp sets it in each run of a cross-validation; null: every fold
    fold: Optional[int] = field(default=None, metadata=valid("[0, inf)", whole=True))


@dataclass
class Model:
    arch: Optional[str] = None  # dotted path of a fastai/torchvision architecture for vision_learner
    net: Any = None  # or a `_target_` node building the whole network (called with n_in, n_out)
    pretrained: bool = False
    kwargs: Dict[str, Any] = field(default_factory=dict)  # extra learner arguments (ps, y_range, ...)
    # a model trained from scratch starts as its layers made themselves (default), with He's normal init (kaiming) or
    # with LSUV on one training batch (lsuv, lesson 11): fxp/init.py
    init: str = field(default="default", metadata=valid(choices=INITS))


@dataclass
class Data:
    "A local copy of the task's dataset (`path`; else task.local's folder, or the task's fastai `url` downloaded once)."
    path: Optional[str] = None
    skip_bad: bool = False  # skip unreadable images (counted in summary.json) instead of stopping
    exclude: Optional[str] = None  # fxp clean's CSV: drop its rows marked delete (all its rows if none is marked)
    relabel: Optional[str] = None  # fxp clean's CSV: its rows marked relabel:LABEL get LABEL (files stay as they are)
    # decode-once image cache (fxp.imcache): auto (the user's cache folder, $FXP_CACHE_DIR to move it), off, or a DIR
    cache: str = "auto"
    # what the cache's key reads of each file beyond its path, size and mtime: a hash of its first and last 4 KiB
    # (ends), of all of it (full: every file read at each start), or nothing (stat)
    cache_verify: str = field(default="ends", metadata=valid(choices=("ends", "full", "stat")))
    # trainer.folds: a column of the task's listing (a CSV) whose rows of one value stay in one fold (a patient's scans)
    group_col: Optional[str] = None
    # trainer.folds: the file recording which fold each item is in (a cv folder's folds.json): read if it is there,
    # else the folds are drawn and written to it; null: drawn for the run alone (fxp sets it for a cross-validation)
    folds_file: Optional[str] = None


@dataclass
class Monitor:
    metric: str = "valid_loss"
    mode: str = field(default="min", metadata=valid(choices=("min", "max")))


@dataclass
class Aug:
    "fastai's aug_transforms knobs; `size` crops after the item Resize (None keeps the size)."
    size: Any = field(default=None, metadata=SIZE)
    min_scale: float = field(default=1.0, metadata=valid("(0, 1]"))
    do_flip: bool = True
    flip_vert: bool = False
    max_rotate: float = field(default=10.0, metadata=valid("[0, 360]"))
    max_lighting: float = field(default=0.2, metadata=valid("[0, 1)"))
    max_zoom: float = field(default=1.1, metadata=valid("[1, 10]"))
    max_warp: float = field(default=0.2, metadata=valid("[0, 1)"))
    pad_mode: str = field(default="reflection", metadata=valid(choices=PAD_MODES))


@dataclass
class TaskBase:
    "Keys every task has; a kind's `Task` dataclass extends it."
    kind: str = "classification"
    url: Optional[str] = None  # the dataset's fastai URLs name (PETS, MNIST_TINY, ...), used without data.path
    # a local copy's folder name under $FXP_DATA, else under ../shared/data (the working directory's), used without
    # data.path (a data set with no fastai URL: fsdd)
    local: Optional[str] = None
    metrics: List[Any] = field(default_factory=list)  # fastai.metrics names, or `_target_` nodes
    monitor: Monitor = field(default_factory=Monitor)


# Bases a kind's `Task` mixes in before TaskBase (`class Task(Images, Listed, TaskBase)`), so TaskBase's keys come
# first; a kind whose default differs re-declares the field (`resize_method: str = "squish"`).


@dataclass
class Split:
    "A random split (fastai's RandomSplitter): `valid_pct` of the items, drawn with `split_seed`."
    valid_pct: float = field(default=0.2, metadata=valid("(0, 1)"))
    split_seed: int = field(default=42, metadata=valid(SEEDS))


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
    size: Any = field(default=None, metadata=SIZE)  # item Resize: int or [h, w]; None keeps the images' size
    resize_method: str = field(default="crop", metadata=valid(choices=RESIZE_METHODS))
    pad_mode: str = field(default="reflection", metadata=valid(choices=PAD_MODES))
    aug: Optional[Aug] = None  # null: no augmentation; {}: fastai's defaults (applied to masks and points too)


@dataclass
class Smoothed:
    "Single-label classifiers: fastai's label-smoothing cross-entropy (lesson 12) at this eps; 0: plain cross-entropy."
    label_smoothing: float = field(default=0.0, metadata=valid("[0, 1)"))


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
class Sweep:
    "How a sweep (`fxp train -m`) treats its jobs (fxp.sweeps)."
    # true: the sweep stops at its first failed job (its error line printed as it fails; exit 1); false: it runs every
    # job, then exits 1 with the count of those that did not complete
    fail_fast: bool = False


@dataclass
class Config:
    task: Any = None
    data: Data = field(default_factory=Data)
    model: Model = field(default_factory=Model)
    trainer: Trainer = field(default_factory=Trainer)
    logger: Dict[str, Any] = field(default_factory=dict)
    reproduce: Optional[Reproduce] = None  # set by an experiment preset (experiments/)
    sweep: Sweep = field(default_factory=Sweep)
