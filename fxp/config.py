"""Config schemas (Hydra ConfigStore dataclasses) and validation, before anything heavy is imported.

The trainer and its stages are struct-typed at compose time, so `trainer.epoch=3` fails with the valid keys.
`task` is typed by its kind: each `fxp/tasks/<kind>.py` declares a `Task` dataclass (light imports only) that
`validate` merges the composed task into.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fxp.errors import ConfigError

POLICIES = ("fit_one_cycle", "fine_tune", "fit")
PRECISIONS = ("fp32", "fp16", "bf16")
DEVICES = ("auto", "cpu", "cuda")
GROUPS = ("task", "model", "trainer", "logger", "experiment")


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
    lr: Any = 1e-3
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


def _store_schemas() -> None:
    "The root schema, and each kind's task schema as `kind/<name>`, which task YAMLs take as their base."
    from fxp import dispatch  # the kind modules import TaskBase from here, so this runs after it is defined

    cs = ConfigStore.instance()
    cs.store(name="fxp_schema", node=Config)
    for kind in dispatch.kinds():
        cs.store(group="kind", name=kind, node=dispatch.kind_module(kind).Task)
    for path in sorted(experiments_dir().glob("*.yaml")):  # `+experiment=NAME`: presets live in experiments/
        cs.store(group="experiment", name=path.stem, node=OmegaConf.load(path), package="_global_")


def conf_dir() -> Path:
    "The packaged config tree."
    return Path(str(resources.files("fxp.conf")))


def experiments_dir() -> Path:
    "The packaged experiment presets (the repo's experiments/ folder)."
    return Path(str(resources.files("fxp.experiments")))


def choices(group: str) -> dict[str, str]:
    "Options of a config group with their one-line descriptions (the YAML's first comment), without imports."
    folder = experiments_dir() if group == "experiment" else conf_dir() / group
    return {p.stem: _first_comment(p) for p in sorted(folder.glob("*.yaml"), key=lambda p: p.stem)}  # Hydra's order


def _first_comment(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def validate(cfg: DictConfig) -> DictConfig:
    "Type `cfg.task` by its kind and check the values a schema type cannot; raise ConfigError with one line."
    from fxp import dispatch

    kind = dispatch.kind_module(cfg.task.kind)
    try:
        # a plain container: `+task.key=...` force-adds keys to the typed node, a fresh merge still rejects them
        task = OmegaConf.merge(OmegaConf.structured(kind.Task), OmegaConf.to_container(cfg.task))
    except OmegaConfBaseException as e:
        raise ConfigError(one_line(e, prefix="task.")) from None
    _check_in("task.monitor.mode", task.monitor.mode, ("min", "max"))
    _check_trainer(cfg.trainer)
    out = OmegaConf.create(OmegaConf.to_container(cfg))
    out.task = task
    kind.check(out)  # after the trainer's checks: a kind may rely on them, and sees the model too
    if cfg.data.path:
        path = Path(cfg.data.path).expanduser().resolve()
        if not path.exists():
            raise ConfigError(f"data.path={cfg.data.path} does not exist (looked for {path}); "
                              f"point data.path= at a local copy of the dataset")
        out.data.path = str(path)  # config.yaml records where the data was, whatever the working directory
    return out


def _check_trainer(t) -> None:
    _check_in("trainer.precision", t.precision, PRECISIONS)
    _check_in("trainer.device", t.device, DEVICES)
    _check_lr("trainer.lr", t.lr)
    if t.bs < 1 or t.epochs < 0:
        raise ConfigError(f"trainer.bs must be ≥ 1 and trainer.epochs ≥ 0 (got bs={t.bs}, epochs={t.epochs})")
    check_stages("trainer.stages", t.stages)


def check_stages(key: str, stages) -> None:
    "A list of stages (the trainer's, or a kind's own step, e.g. task.lm_stages) that fit_stage can run."
    if not stages:
        raise ConfigError(f"{key} is empty: give at least one stage, e.g. [{{policy: fit_one_cycle}}]")
    for i, s in enumerate(stages):
        _check_in(f"{key}.{i}.policy", s.policy, POLICIES)
        _check_lr(f"{key}.{i}.lr", s.lr)
        if not (s.freeze is None or isinstance(s.freeze, (bool, int))):
            raise ConfigError(f"{key}.{i}.freeze={s.freeze!r} is not valid: give true (freeze the body), "
                              f"false (unfreeze) or a negative count of trainable groups (-2: freeze_to(-2))")


IMAGE_CHOICES = {"resize_method": ("crop", "pad", "squish"), "pad_mode": ("zeros", "reflection", "border")}


def check_choices(task, choices: dict) -> None:
    "Each `task.<key>` is one of `choices[key]`, or one line naming the valid ones."
    for key, allowed in choices.items():
        _check_in(f"task.{key}", task[key], allowed)


def _check_in(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not valid; choose from: {', '.join(map(str, allowed))}")


def _check_lr(key: str, lr) -> None:
    ok = (lr is None or lr == "find" or _is_number(lr)
          or (OmegaConf.is_list(lr) or isinstance(lr, list)) and len(lr) == 2 and all(map(_is_number, lr)))
    if not ok:
        raise ConfigError(f"{key}={lr!r} is not a learning rate: give a number (3e-3), "
                          f"a [lo, hi] pair for discriminative rates, or 'find'")


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def one_line(e: Exception, prefix: str = "") -> str:
    "Hydra/OmegaConf's multi-line errors as one line naming the key (under `prefix`), and the valid keys."
    cause = e.__cause__ or e
    text = str(e) if cause is e else f"{e}\n{cause}"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("    ")]
    msg = "; ".join(ln.rstrip(".") for ln in lines if not ln.startswith("To append"))
    key = getattr(cause, "full_key", None)
    if key and f"{prefix}{key}" not in msg:
        msg = f"{prefix}{key}: {msg}"
    schema = getattr(cause, "object_type", None)
    if "not in" in msg and hasattr(schema, "__dataclass_fields__"):
        msg += f"; valid keys: {', '.join(schema.__dataclass_fields__)}"
    elif "not in" in msg:
        msg += "; `fxp train --cfg job` shows every key"
    return msg


_store_schemas()
