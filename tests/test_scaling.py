"""Scaling out: a sweep on a local Ray runtime (fxp's `hydra/launcher=ray`) and the GPU and threads a local parallel
(joblib) job gets to itself. The multi-process run (trainer.devices) is tests/test_distributed.py."""
import csv
import json
import os

import pytest
from omegaconf import OmegaConf

from conftest import run_installed, subprocess_env


@pytest.mark.slow
def test_a_sweep_on_a_local_ray_runtime(tmp_path):
    "Through the installed command: Ray starts its runtime and runs each job as a task; sweep files as elsewhere."
    pytest.importorskip("ray", reason="pip install 'fxp[ray]'")
    sweep = tmp_path / "sweep"
    env = {**subprocess_env(tmp_path), "RAY_USAGE_STATS_ENABLED": "0"}
    r = run_installed("train", "-m", "hydra/launcher=ray", "trainer.seed=1,2", "trainer.epochs=1",
                      "trainer.plots=false", f"hydra.sweep.dir={sweep}", cwd=tmp_path, env=env, timeout=240)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(sweep / "sweep.csv")))
    assert [(row["job"], row["status"]) for row in rows] == [("0", "completed"), ("1", "completed")]
    assert min(float(row["final_accuracy"]) for row in rows) > 0.8
    assert json.loads((sweep / "best.json").read_text())["jobs"] == ["0", "1"]  # seeds of one recipe: their mean
    assert "sweep of 2 jobs: 2 completed" in r.stdout


JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


def hydra_job(num: int, n_jobs: int = 2, launcher: str = JOBLIB):
    "The part of a job's HydraConfig that `job_resources` reads."
    from hydra.types import RunMode

    return OmegaConf.create({"mode": RunMode.MULTIRUN, "launcher": {"_target_": launcher, "n_jobs": n_jobs},
                             "job": {"num": num}})


def job_environment(monkeypatch):
    """A copy of os.environ for the job: job_resources sets the pool variable with setdefault, which monkeypatch does
    not undo, and a later test's subprocess would inherit an empty pool (no GPU assigned)."""
    monkeypatch.setattr(os, "environ", dict(os.environ))


@pytest.mark.parametrize("pool, expected", [("0,1", ["0", "1", "0"]), ("3,5,7", ["3", "5", "7"])])
def test_each_parallel_job_gets_a_gpu_of_the_pool(monkeypatch, pool, expected):
    "Job number modulo the pool the sweep began with (CUDA_VISIBLE_DEVICES), each job's choice in its environment."
    from fxp.sweeps import GPU_POOL, job_resources

    job_environment(monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", pool)
    monkeypatch.delenv(GPU_POOL, raising=False)
    seen = []
    for num in range(3):
        got = job_resources(hydra_job(num))
        seen.append(got["CUDA_VISIBLE_DEVICES"])
        assert os.environ["CUDA_VISIBLE_DEVICES"] == got["CUDA_VISIBLE_DEVICES"]  # what the job's torch sees
    assert seen == expected


def test_threads_are_shared_and_other_launchers_get_nothing(monkeypatch):
    from fxp.sweeps import job_resources

    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(8)))
    job_environment(monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU: no assignment
    monkeypatch.delenv("FXP_GPU_POOL", raising=False)
    assert job_resources(hydra_job(0, n_jobs=2)) == {"job": 0, "num_threads": 4}
    assert job_resources(hydra_job(0, n_jobs=-1))["num_threads"] == 1  # as many jobs as cores
    assert job_resources(hydra_job(0, launcher="hydra._internal.core_plugins.basic_launcher.BasicLauncher")) == {}


def test_a_multi_node_run_meets_at_node_0(monkeypatch):
    "trainer.nodes=2 under Slurm: torchrun's static rendezvous at node 0, this node's number from SLURM_NODEID."
    from fxp import distributed
    from fxp.errors import FxpError

    cfg = OmegaConf.create({"trainer": {"nodes": 2, "devices": 4}})
    monkeypatch.setenv("SLURM_NODEID", "1")
    monkeypatch.setenv("MASTER_ADDR", "gpu-node-7")
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    assert distributed.node_rank(cfg) == 1 and distributed.wanted(cfg)
    assert distributed.rendezvous(cfg) == dict(min_nodes=2, max_nodes=2, rdzv_backend="static",
                                               rdzv_configs={"rank": 1}, rdzv_endpoint="gpu-node-7:29500",
                                               run_id="123")
    monkeypatch.delenv("MASTER_ADDR")
    monkeypatch.delenv("SLURM_JOB_NODELIST", raising=False)
    with pytest.raises(FxpError, match="hydra/launcher=slurm_ddp"):
        distributed.rendezvous(cfg)
    assert distributed.node_rank(OmegaConf.create({"trainer": {"nodes": 1, "devices": 2}})) == 0


@pytest.mark.parametrize("policy", ["fit_one_cycle", "fit"])
def test_scale_lr_multiplies_each_rate_the_fit_uses(policy):
    "trainer.scale_lr (the linear rule): the DDP callback multiplies a fit's rates, its schedule's or the optimizer's."
    import numpy as np
    from fastai.callback.core import Callback
    from fastai.test_utils import synth_learner

    from fxp import train  # noqa: F401  (fastai's fit_one_cycle patched onto Learner)
    from fxp.distributed import multiply_lr

    class Times4(Callback):
        order = 11  # fastai's DistributedTrainer's

        def before_fit(self):
            multiply_lr(self.learn, 4)

    def lrs(cbs):
        learn = synth_learner(cbs=cbs)
        getattr(learn, policy)(2, 1e-3)
        return np.array(learn.recorder.lrs)

    plain, scaled = lrs([]), lrs([Times4()])
    assert len(plain) > 1 and np.allclose(scaled, 4 * plain)


def test_the_ray_launcher_without_ray_is_one_line(monkeypatch):
    import importlib.util

    from fxp import precheck
    from fxp.errors import ConfigError

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else find_spec(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'fxp\[ray\]'"):
        precheck.check_choices(["hydra/launcher=ray"])
