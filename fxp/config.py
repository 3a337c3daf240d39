"""The config tree and validation, before anything heavy is imported: the packaged groups and presets, the
registration of the schemas (fxp.schema) with Hydra, and `validate`, which types `cfg.task` by its kind."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fxp.checks import check_in, check_lr, check_stages
from fxp.errors import ConfigError
from fxp.schema import Config

PRECISIONS = ("fp32", "fp16", "bf16")
DEVICES = ("auto", "cpu", "cuda")
GROUPS = ("task", "model", "trainer", "logger", "experiment")


def _store_schemas() -> None:
    "The root schema, and each kind's task schema as `kind/<name>`, which task YAMLs take as their base."
    from fxp import dispatch

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
    check_in("task.monitor.mode", task.monitor.mode, ("min", "max"))
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
    check_in("trainer.precision", t.precision, PRECISIONS)
    check_in("trainer.device", t.device, DEVICES)
    check_lr("trainer.lr", t.lr)
    if t.bs < 1 or t.epochs < 0:
        raise ConfigError(f"trainer.bs must be ≥ 1 and trainer.epochs ≥ 0 (got bs={t.bs}, epochs={t.epochs})")
    check_stages("trainer.stages", t.stages)


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
