"""fxp's Optuna search (`hydra/sweeper=optuna`, the sweeper plugin in hydra_plugins/fxp_optuna_sweeper): what the
sweeper, its jobs and `fxp report` share.

The study lives in the sweep folder (study.db, SQLite) unless `hydra.sweeper.storage` names another storage; it is
named `<task>-<sweep folder's name>` unless `hydra.sweeper.study_name` names it. Trial N is sweep job N: the sweeper
asks the study for trials, launches them as jobs numbered as the trials are, and tells the study how each ended from
its job folder (`outcome`); a job re-attaches to its trial through the storage (`attach`) and reports `task.monitor`
after every epoch (fxp.callbacks.TrialReport), ending as `pruned` when the study's pruner says so. Every process that
opens the study (parallel jobs too) shares it through the storage.

Light imports: Hydra's override parser and optuna are imported where a search space is read or a study opened.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from fxp import groups
from fxp.errors import ConfigError
from fxp.runs import CONFIG

SWEEPER = "hydra_plugins.fxp_optuna_sweeper.optuna_sweeper.OptunaSweeper"
STUDY_DB = "study.db"
DIRECTIONS = ("minimize", "maximize")
# How a job's status ends its trial; any other (interrupted, killed, never started) leaves the trial RUNNING, for
# `fxp resume SWEEP_DIR` to go on with
FINAL = {"completed": "COMPLETE", "pruned": "PRUNED", "failed": "FAIL", "diverged": "FAIL"}


def is_optuna(sweeper) -> bool:
    "Whether a config's `hydra.sweeper` is fxp's Optuna search."
    return str(sweeper.get("_target_")) == SWEEPER


def name(choice) -> str:
    "A sampler's or pruner's name, as the schema's Enum or its string."
    return getattr(choice, "name", None) or str(choice)


def storage_url(sweeper, sweep_dir) -> str:
    "`storage=` as given, else study.db in the sweep folder (an absolute path: the study opens from anywhere)."
    return sweeper.storage or f"sqlite:///{(Path(str(sweep_dir)) / STUDY_DB).resolve()}"


def ref(hydra) -> dict:
    """Where a sweep's study is and how it prunes: what a job needs to re-attach to its trial. `hydra`: a config's
    `hydra` node, or a job's HydraConfig."""
    sw, sweep_dir = hydra.sweeper, str(hydra.sweep.dir)
    study = sw.study_name or f"{hydra.runtime.choices.task}-{Path(sweep_dir).name}"
    return dict(study=study, storage=storage_url(sw, sweep_dir), pruner=name(sw.pruner),
                warmup_epochs=sw.warmup_epochs, startup_trials=sw.startup_trials)


def of_job(hc) -> dict | None:
    "The trial a sweep job is (its number is the job's), recorded in its summary.json; None outside fxp's search."
    from hydra.types import RunMode

    if hc.mode != RunMode.MULTIRUN or not is_optuna(hc.sweeper):
        return None
    return {**ref(hc), "trial": hc.job.num}


def storage(url: str):
    "The study's storage; on SQLite, a process waits for another's write (parallel trials) rather than failing."
    import optuna

    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}} if
                                      url.startswith("sqlite") else {})


def pruner(ref: dict):
    """The study's pruner: none, median (after `startup_trials` trials completed), successive_halving or hyperband; each
    prunes no trial before its `warmup_epochs`-th epoch has ended."""
    from optuna import pruners

    warmup = ref["warmup_epochs"]
    return {"none": pruners.NopPruner,
            "median": lambda: pruners.MedianPruner(n_startup_trials=ref["startup_trials"], n_warmup_steps=warmup),
            "successive_halving": lambda: pruners.SuccessiveHalvingPruner(min_resource=warmup),
            "hyperband": lambda: pruners.HyperbandPruner(min_resource=warmup)}[ref["pruner"]]()


def sampler(which: str, seed, space: dict):
    "TPE, random, grid (over the space's values) or CMA-ES, seeded with `seed`."
    from optuna import samplers

    if which == "grid":
        return samplers.GridSampler(grid(space), seed=seed)
    return {"tpe": samplers.TPESampler, "random": samplers.RandomSampler,
            "cmaes": samplers.CmaEsSampler}[which](seed=seed)


def attach(ref: dict):
    """The job's trial (an optuna Trial, which reports and asks whether to prune), re-attached through the storage;
    None if the study no longer runs it (told already)."""
    import optuna

    study = optuna.load_study(study_name=ref["study"], storage=storage(ref["storage"]), pruner=pruner(ref))
    frozen = next((t for t in study.get_trials(deepcopy=False) if t.number == ref["trial"]), None)
    if frozen is None or frozen.state != optuna.trial.TrialState.RUNNING:
        return None
    return optuna.trial.Trial(study, frozen._trial_id)  # optuna's own way to a trial from its id


# --- the search space ---------------------------------------------------------------------------------------------


def search(params, overrides) -> tuple[dict, list[str]]:
    """The search space (key -> optuna distribution) and the fixed overrides of `hydra.sweeper.params` and the
    command's overrides (which win over a param of the same key): choice(...) or a,b are categorical,
    range(start, stop, step) the numbers a grid sweep would take, interval(lo, hi) continuous, tag(log, ...) on a
    log scale."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    given = [f"{k}={v}" for k, v in (params or {}).items()] + list(overrides)
    try:
        parsed = OverridesParser.create().parse_overrides(given)
    except Exception as e:
        raise ConfigError(f"hydra.sweeper.params: {str(e).splitlines()[0]}") from None
    by_key = {o.get_key_element(): o for o in parsed}
    space = {k: distribution(o) for k, o in by_key.items() if o.is_sweep_override()}
    return space, [o.input_line for k, o in by_key.items() if k not in space]


def distribution(o):
    "The optuna distribution a sweep override gives."
    from hydra.core.override_parser.types import IntervalSweep, RangeSweep
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = o.value()
    log = "log" in (getattr(value, "tags", None) or set())
    if isinstance(value, IntervalSweep):
        return FloatDistribution(value.start, value.end, log=log)
    if isinstance(value, RangeSweep) and not value.shuffle:
        values = list(o.sweep_iterator())
        if not values:
            raise ConfigError(f"{o.input_line}: the range is empty")
        lo, hi, step = min(values), max(values), abs(value.step)
        if all(isinstance(v, int) for v in (lo, hi, step)):
            return IntDistribution(lo, hi, log=log, step=1 if log else step)
        return FloatDistribution(lo, hi, log=log, step=None if log else step)
    if not o.is_discrete_sweep():
        raise ConfigError(f"{o.input_line}: the Optuna search takes choice, range, interval and tag(log, ...)")
    return CategoricalDistribution(list(o.sweep_string_iterator()))


def grid(space: dict) -> dict:
    "The grid sampler's values of each key: a choice's, a range's; a continuous interval has none."
    from optuna.distributions import CategoricalDistribution

    out = {}
    for key, d in space.items():
        if isinstance(d, CategoricalDistribution):
            out[key] = list(d.choices)
        elif d.step is not None and not d.log:
            n = int(round((d.high - d.low) / d.step)) + 1
            out[key] = [d.low + i * d.step for i in range(n)]
        else:
            raise ConfigError(f"hydra.sweeper.sampler=grid takes choice(...) or range(...) values; {key} is an "
                              f"interval: give it as a choice or range, or pick another sampler")
    return out


def grid_size(space: dict) -> int:
    n = 1
    for values in grid(space).values():
        n *= len(values)
    return n


def check(config, resuming: bool = False) -> None:
    """One line for a search that cannot run, before its sweep folder is claimed: several directions, a search space
    the sampler cannot take, CMA-ES without its package, a new search whose study (in a `storage=` of its own) holds
    trials already."""
    sw = config.hydra.sweeper
    if not isinstance(sw.direction, str):
        raise ConfigError(f"hydra.sweeper.direction={list(sw.direction)}: a multi-objective search is not supported; "
                          f"give one direction: minimize or maximize")
    if sw.direction not in DIRECTIONS:
        raise ConfigError(f"hydra.sweeper.direction={sw.direction}: give minimize or maximize")
    space, _ = search(sw.params, config.hydra.overrides.task)
    if name(sw.sampler) == "grid":
        grid(space)
    if name(sw.sampler) == "cmaes" and importlib.util.find_spec("cmaes") is None:
        raise ConfigError("hydra.sweeper.sampler=cmaes needs the cmaes package: pip install 'fxp[cmaes]'")
    if sw.storage and not resuming:
        check_new(ref(config.hydra))


def check_new(ref: dict) -> None:
    "A new search's study, in a storage it shares with others (`storage=`), holds no trials yet."
    import optuna

    try:
        held = optuna.load_study(study_name=ref["study"], storage=storage(ref["storage"])).trials
    except KeyError:  # no such study: the search creates it
        return
    except Exception as e:
        why = str(e).splitlines()[0]
        raise ConfigError(f"hydra.sweeper.storage={ref['storage']} cannot be opened: {why}") from None
    if held:
        raise ConfigError(f"the study {ref['study']} in {ref['storage']} already holds {len(held)} trials; give this "
                          f"search its own hydra.sweeper.study_name, or go on with that search: fxp resume "
                          f"ITS_SWEEP_DIR")


def identity(config) -> dict:
    """What makes an Optuna search the one it is (sweep.json: `fxp resume` refuses to change it): its search space and
    fixed overrides, sampler, seed and direction. Not n_trials (a resume may ask for more)."""
    sw = config.hydra.sweeper
    space, fixed = search(sw.params, config.hydra.overrides.task)
    return {"space": {k: repr(d) for k, d in space.items()}, "fixed": fixed, "sampler": name(sw.sampler),
            "seed": sw.seed, "direction": sw.direction}


# --- a trial's outcome --------------------------------------------------------------------------------------------


def outcome(job_dir: Path) -> tuple[str, float | None] | None:
    """How a trial's job ended, as Optuna's state name and value (task.monitor's best: what the search optimises);
    None while it has not (interrupted, killed, never started)."""
    job_dir = Path(job_dir)
    if not ((job_dir / CONFIG).is_file() or groups.is_group(job_dir)):
        return None
    row = groups.row(job_dir, job_dir.parent)  # a seed group (trainer.seeds): its mean, once every seed completed
    states = {FINAL.get(m["status"]) for m in row.get("members", [row])}
    if None in states:
        return None
    state = states.pop() if len(states) == 1 else "FAIL"  # a seed group with a seed that failed or diverged
    if state == "COMPLETE" and row["best"] is None:
        return "FAIL", None  # it completed with no value of the monitored metric (not finite)
    return state, row["best"] if state == "COMPLETE" else None
