"""`hydra/sweeper=optuna` (the preset `optuna_search` builds on it): fxp's own Optuna search, on current optuna.

In place of the hydra-optuna-sweeper plugin, which pins optuna<3 and hides each trial from its job, so that no trial
could be pruned. The search space is written as that plugin's was, in `hydra.sweeper.params` or on the command line:
choice(...) or a,b (categorical), range(start, stop[, step]) (the values a grid sweep takes), interval(lo, hi)
(continuous), tag(log, ...) (on a log scale). Trial N runs as sweep job N; what the sweeper, the jobs and `fxp report`
share (the study's storage and name, samplers, pruners, a trial's outcome) is in fxp.trials. optuna is imported only
when a search runs, so Hydra's plugin scan stays light.
"""

import logging
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

log = logging.getLogger(__name__)

Sampler = Enum("Sampler", "tpe random grid cmaes")  # a name the schema refuses is one line at compose time
Pruner = Enum("Pruner", "none median successive_halving hyperband")


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.fxp_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    direction: Any = "minimize"  # or maximize (the preset follows task.monitor.mode); one direction only
    study_name: Optional[str] = None  # null: <task>-<sweep folder's name>
    storage: Optional[str] = None  # null: sqlite:///<sweep folder>/study.db; or any database URL optuna takes
    n_trials: int = 20
    n_jobs: int = 1  # trials asked at a time; with hydra/launcher=joblib they run in parallel
    sampler: Sampler = Sampler.tpe
    seed: Optional[int] = None  # the sampler's
    pruner: Pruner = Pruner.none
    warmup_epochs: int = 1  # no trial is pruned before this many of its epochs have ended
    startup_trials: int = 5  # the median pruner prunes once this many trials completed
    params: Dict[str, Any] = field(default_factory=dict)  # key: its search space (choice, range, interval, tag)


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="fxp")


class OptunaSweeper(Sweeper):
    def __init__(self, direction, n_trials, n_jobs, sampler, seed, params, **where) -> None:
        # `where` (storage, study_name, pruner and its settings): read from the config by fxp.trials.ref, as jobs do
        self.direction, self.n_trials, self.n_jobs = direction, n_trials, max(1, n_jobs)
        self.sampler, self.seed, self.params = sampler.name, seed, params
        self.config: Optional[DictConfig] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context,
                                                                task_function=task_function)

    def sweep(self, arguments: List[str]) -> None:
        "Trials until the study holds n_trials (a resumed search: its unfinished ones first), n_jobs at a time."
        import optuna

        from fxp import trials

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # fxp says what each trial did, once
        space, self.fixed = trials.search(self.params, arguments)
        study = self.study(space)
        n = min(self.n_trials, trials.grid_size(space)) if self.sampler == "grid" else self.n_trials
        self.settle(study)
        while len(study.trials) < n and not self.stopped():
            batch = [study.ask(space) for _ in range(min(self.n_jobs, n - len(study.trials)))]
            self.launch(study, batch)
        self.results(study)

    def study(self, space: dict):
        "The search's study, created in its storage (a resumed search: loaded); its name and how to open it printed."
        import optuna

        from fxp import trials

        ref = trials.ref(self.config.hydra)  # a new search's study is new: fxp.trials.check refused one with trials
        study = optuna.create_study(study_name=ref["study"], storage=trials.storage(ref["storage"]),
                                    sampler=trials.sampler(self.sampler, self.seed, space),
                                    pruner=trials.pruner(ref), direction=self.direction, load_if_exists=True)
        if study.trials and self.seed is not None:  # a resumed search: its seed moved on, or it would ask anew what
            study.sampler = trials.sampler(self.sampler, self.seed + len(study.trials), space)  # it asked first
        print(f"Optuna study {ref['study']}: optuna.load_study(study_name={ref['study']!r}, "
              f"storage={ref['storage']!r}) opens it, optuna-dashboard {ref['storage']} shows it", flush=True)
        return study

    def settle(self, study) -> None:
        """A resumed search's trials that were running when it stopped: each told how its job ended, if it did; the
        others launched again under their own numbers, each job going on from its checkpoint in its folder (resume
        mode: fxp.sweeps.before_job), or anew if it stopped before its first."""
        import optuna

        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        for t in running:
            self.tell(study, t.number)
        for batch in consecutive(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))):
            self.launch(study, batch)

    def stopped(self) -> bool:
        "Whether the sweep was stopped (Ctrl-C, SIGTERM, a failure with sweep.fail_fast): no further trial is asked."
        from fxp.sweeps import STOP

        return (Path(str(self.config.hydra.sweep.dir)) / STOP).exists()

    def launch(self, study, batch: list) -> None:
        "The trials of `batch` (consecutive numbers) as the sweep jobs of their numbers; then their outcomes told."
        overrides = [[f"{k}={v}" for k, v in t.params.items()] + self.fixed for t in batch]
        self.launcher.launch(overrides, initial_job_idx=batch[0].number)
        for t in batch:
            self.tell(study, t.number)

    def tell(self, study, number: int) -> None:
        "The study told how trial `number` ended, from its job folder; one that did not end stays running."
        import optuna

        from fxp import trials

        ended = trials.outcome(Path(str(self.config.hydra.sweep.dir)) / str(number))
        if ended is None:
            return
        state, value = ended
        try:
            study.tell(number, value, state=optuna.trial.TrialState[state])
        except RuntimeError as e:  # the grid sampler stops the study after its last point, which only optimize() may
            if "Study.stop" not in str(e):
                raise

    def results(self, study) -> None:
        "optimization_results.yaml in the sweep folder: the best trial's value and params (as the old plugin wrote)."
        import yaml

        from fxp.writer import write_atomic

        done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
        if done:
            best = study.best_trial
            text = yaml.safe_dump({"name": "optuna", "best_params": dict(best.params), "best_value": best.value})
            write_atomic(Path(str(self.config.hydra.sweep.dir)) / "optimization_results.yaml", text)


def consecutive(trials: Sequence) -> list[list]:
    "Trials in runs of consecutive numbers (each run one launch: its jobs are numbered from its first)."
    runs: list[list] = []
    for t in sorted(trials, key=lambda t: t.number):
        if runs and runs[-1][-1].number + 1 == t.number:
            runs[-1].append(t)
        else:
            runs.append([t])
    return runs
