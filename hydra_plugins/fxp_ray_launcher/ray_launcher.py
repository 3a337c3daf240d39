"""`hydra/launcher=ray`: each sweep job a Ray task, on a local Ray runtime (started for the sweep, stopped after it) or
on an existing cluster (`hydra/launcher=ray_cluster`, or `hydra.launcher.init.address=HOST:PORT`).

fxp's own thin launcher over `ray` (pip install 'fxp[ray]'), in place of the hydra-ray-launcher plugin: that one pins
cloudpickle<3, which the joblib that Hydra's joblib launcher needs refuses (joblib>=1.5 requires cloudpickle>=3).
Ray is imported only when a sweep runs on it, so Hydra's plugin scan stays light.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


@dataclass
class RayLauncherConf:
    _target_: str = "hydra_plugins.fxp_ray_launcher.ray_launcher.RayLauncher"
    # ray.init's arguments: address null starts a local runtime; "auto" or HOST:PORT joins a running cluster
    init: Dict[str, Any] = field(default_factory=lambda: {"address": None, "include_dashboard": False})
    # ray.remote's arguments for each job: what one job reserves (num_cpus, num_gpus, memory, ...)
    remote: Dict[str, Any] = field(default_factory=lambda: {"num_cpus": 1})


ConfigStore.instance().store(group="hydra/launcher", name="ray", node=RayLauncherConf, provider="fxp")


class RayLauncher(Launcher):
    def __init__(self, init: DictConfig, remote: DictConfig) -> None:
        self.init, self.remote = init, remote
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        "Every job as a Ray task at once; Ray runs as many together as the cluster's resources allow."
        import ray

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        started = not ray.is_initialized()
        if started:
            ray.init(**{k: v for k, v in OmegaConf.to_container(self.init, resolve=True).items() if v is not None},
                     log_to_driver=True)
        job = ray.remote(**OmegaConf.to_container(self.remote, resolve=True))(_run_job)
        refs = []
        for idx, overrides in enumerate(job_overrides, initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = f"ray_{idx}"
                sweep_config.hydra.job.num = idx
            refs.append(job.remote(self.hydra_context, sweep_config, self.task_function, Singleton.get_state()))
        try:
            return ray.get(refs)
        finally:
            if started:
                ray.shutdown()


def _run_job(hydra_context, sweep_config, task_function, singleton_state) -> JobReturn:
    "One job in a Ray worker, as Hydra's own launchers run it: its folder, its logging, its config."
    from hydra.core.hydra_config import HydraConfig

    setup_globals()
    Singleton.set_state(singleton_state)
    HydraConfig.instance().set_config(sweep_config)
    return run_job(hydra_context=hydra_context, task_function=task_function, config=sweep_config,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
