"""The config tree and validation, before anything heavy is imported: the packaged groups and presets, listed from
their YAML without parsing it; `register`, which tells Hydra and OmegaConf about the schemas (fxp.schema), each kind's
task schema, the presets and fxp's resolvers; and `validate`, which types `cfg.task` by its kind.

Importing this module does no work: Hydra, OmegaConf and the kinds load when a config is composed or validated.
"""
from __future__ import annotations

import functools
import secrets
from importlib.util import find_spec
from pathlib import Path

from fxp.errors import ConfigError

PRECISIONS = ("fp32", "fp16", "bf16")
DEVICES = ("auto", "cpu", "cuda")
GROUPS = ("task", "model", "trainer", "logger", "experiment")


@functools.cache
def register() -> None:
    """What fxp's configs need from Hydra's ConfigStore and OmegaConf, once per process, before the first compose.

    The root schema; each kind's task schema as `kind/<name>`, which task YAMLs take as their base; the presets of
    experiments/ as the group `experiment` (`+experiment=NAME`); the resolvers `fxp_uid` and `fxp_direction`.
    Called by the package of the config tree (`pkg://fxp.conf`), which Hydra imports when it first reads it: so
    any compose, a launcher's worker process included, finds them.
    """
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from fxp import dispatch
    from fxp.schema import Config

    # A few random characters after the timestamp: two runs started in the same second get their own folders.
    OmegaConf.register_new_resolver("fxp_uid", lambda: secrets.token_hex(3), use_cache=True, replace=True)
    # Optuna's direction from a task's monitor mode, so a search maximises accuracy and minimises a loss.
    OmegaConf.register_new_resolver("fxp_direction", lambda mode: {"max": "maximize", "min": "minimize"}[mode],
                                    replace=True)
    cs = ConfigStore.instance()
    cs.store(name="fxp_schema", node=Config)
    for kind in dispatch.kinds():
        cs.store(group="kind", name=kind, node=dispatch.kind_module(kind).Task)
    for path in sorted(experiments_dir().glob("*.yaml")):
        cs.store(group="experiment", name=path.stem, node=OmegaConf.load(path), package="_global_")


def conf_dir() -> Path:
    "The packaged config tree, found without importing its package (which registers the schemas)."
    return _package_dir("fxp.conf")


def experiments_dir() -> Path:
    "The packaged experiment presets (the repo's experiments/ folder)."
    return _package_dir("fxp.experiments")


def _package_dir(name: str) -> Path:
    return Path(find_spec(name).submodule_search_locations[0])


def choices(group: str) -> dict[str, str]:
    "Options of a config group with their one-line descriptions (the YAML's first comment), without imports."
    folder = experiments_dir() if group == "experiment" else conf_dir() / group
    return {p.stem: _first_comment(p) for p in sorted(folder.glob("*.yaml"), key=lambda p: p.stem)}  # Hydra's order


def _first_comment(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def validate(cfg):
    "Type `cfg.task` by its kind and check the values a schema type cannot; raise ConfigError with one line."
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from fxp import dispatch
    from fxp.checks import check_in

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
    from fxp.checks import check_in, check_lr, check_stages

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

