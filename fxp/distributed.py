"""`trainer.devices=N`: one run over N processes, data-parallel (DDP) through fastai's DistributedTrainer (the
callback `learn.distrib_ctx()` adds: Accelerate's `Accelerator` wraps the model in DistributedDataParallel,
DistributedDL gives each process its share of every epoch, and fastai gathers the validation predictions and losses
of all processes, so every rank sees the metrics of the whole validation set and decides early stopping and the best
epoch alike).

The job's own process (`fxp train`, `fxp resume`) keeps the run: it claims the folder, holds its summary and status,
and, in place of fxp.train.train (`launcher`, which fxp.apps picks), hands the training to torchrun's launcher
(torch.distributed.run's `elastic_launch`), which starts the N ranks (`python -m fxp.rank SPEC`) and stops them all as
soon as one fails: the run ends `failed` with that rank's line, never a hang. Each rank (fxp.rank) trains the run
through fxp.train as one process would, with its config made the rank's (`as_rank`): its own device, the DDP callback
on every fit (`callback`: fastai's DistributedTrainer and `trainer.scale_lr`), no tracker on the ranks after the first
(fxp.rank silences their console too). Rank 0 alone writes into the run folder (metrics.csv, checkpoints, model.pkl,
plots, train.log lines; fxp's callbacks check fastai's rank_distrib) and alone concludes the run (`alone`); the other
ranks only train. Backends: NCCL on CUDA (a GPU per rank), gloo on CPU.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from fxp.errors import FxpError

JOB, INFO = "job.json", "info.json"  # the ranks' spec and rank 0's summary fields, in a temporary folder


def world_size() -> int:
    "How many processes train this run: torchrun's WORLD_SIZE in a rank, else 1."
    return int(os.environ.get("WORLD_SIZE", 1))


def rank() -> int:
    return int(os.environ.get("RANK", 0))


def wanted(cfg) -> bool:
    "Whether this process is the one that launches the ranks of a run over several processes."
    return cfg.trainer.devices * cfg.trainer.nodes > 1 and "WORLD_SIZE" not in os.environ


def node_rank(cfg) -> int:
    "Which machine of a multi-node run this is (Slurm's SLURM_NODEID): node 0's job holds the run, the others follow."
    return int(os.environ.get("SLURM_NODEID", 0)) if cfg.trainer.nodes > 1 else 0


def rendezvous(cfg) -> dict:
    """How the ranks meet (torchrun's launch settings): on one machine, at a free local port; over several, at node
    0's address (MASTER_ADDR, else the first host of the Slurm job) and MASTER_PORT (29500), each node's ranks
    numbered after the nodes before it (torchrun's static rendezvous: global rank 0 is on node 0, with the run)."""
    nodes = cfg.trainer.nodes
    if nodes == 1:
        return dict(min_nodes=1, max_nodes=1, rdzv_backend="c10d", rdzv_endpoint="localhost:0",
                    run_id=f"fxp-{os.getpid()}")
    head = os.environ.get("MASTER_ADDR") or first_host()
    return dict(min_nodes=nodes, max_nodes=nodes, rdzv_backend="static", rdzv_configs={"rank": node_rank(cfg)},
                rdzv_endpoint=f"{head}:{os.environ.get('MASTER_PORT', '29500')}",
                run_id=os.environ.get("SLURM_JOB_ID", "fxp"))


def first_host() -> str:
    "The first machine of the Slurm job (`scontrol show hostnames $SLURM_JOB_NODELIST`)."
    import subprocess

    nodelist = os.environ.get("SLURM_JOB_NODELIST")
    if not nodelist:
        raise FxpError("trainer.nodes>1 runs under Slurm (fxp train -m hydra/launcher=slurm_ddp ...) or with "
                       "MASTER_ADDR (node 0's address) and SLURM_NODEID (this node's number) set on every node")
    hosts = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True).stdout
    return hosts.split()[0]


def launcher(cfg, run, resume: bool = False) -> None:
    """What trains a run over several processes in the job's process, in place of fxp.train.train: `launch` on the
    device trainer.device names (the ranks resume if `run.resume` says so)."""
    from fxp.train import check_device

    launch(cfg, run, check_device(cfg.trainer))


def launch(cfg, run, device) -> None:
    """Train `cfg` over `trainer.devices` processes on this machine (fxp.rank each), on `device`'s type; `run` (held by
    this process) receives rank 0's summary fields and the world size; a failed rank is one FxpError line (its
    traceback appended to train.log)."""
    from omegaconf import OmegaConf
    from torch.distributed.elastic.multiprocessing.api import DefaultLogsSpecs, SignalException
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from fxp.writer import write_atomic

    n = cfg.trainer.devices * cfg.trainer.nodes
    check_devices(cfg.trainer, device)
    with tempfile.TemporaryDirectory(prefix="fxp-ddp-") as tmp:
        spec = Path(tmp)
        job = dict(cfg=OmegaConf.to_container(cfg, resolve=True), path=str(run.path), resume=run.resume)
        write_atomic(spec / JOB, json.dumps(job, default=str))
        config = LaunchConfig(nproc_per_node=cfg.trainer.devices, max_restarts=0, monitor_interval=0.1,
                              logs_specs=DefaultLogsSpecs(log_dir=str(spec / "logs")), **rendezvous(cfg))
        with quiet_launcher(), rank_threads(cfg.trainer):
            try:
                elastic_launch(config, sys.executable)("-m", "fxp.rank", str(spec))
            except SignalException:  # Ctrl-C or SIGTERM: the agent stopped the ranks; the run is interrupted
                raise KeyboardInterrupt from None
            except Exception as e:  # ChildFailedError, or the launcher's own failure
                raise FxpError(failure(spec, run.path, e)) from None
        if (spec / INFO).is_file():  # rank 0's machine
            run.info.update(json.loads((spec / INFO).read_text()))
    run.info.update(world_size=n, global_bs=cfg.trainer.bs * n)


def check_devices(tr, device) -> None:
    """Accelerate is installed (fastai's DistributedTrainer runs on it); N processes a machine on CUDA need N GPUs there
    (one each); on CPU any N works (gloo), sharing the cores."""
    import importlib.util

    import torch

    if importlib.util.find_spec("accelerate") is None:
        raise FxpError(f"trainer.devices={tr.devices} trains through Accelerate, which is not installed: "
                       f"pip install 'fxp[dist]' (or pip install accelerate)")

    if device.type == "cuda" and torch.cuda.device_count() < tr.devices:
        raise FxpError(f"trainer.devices={tr.devices} but {torch.cuda.device_count()} CUDA device(s) here; "
                       f"lower trainer.devices, or trainer.device=cpu for processes on the CPU")


def check_steps(cfg) -> None:
    "One learner: a kind that trains several one after the other (steps) does so in one process."
    from fxp import dispatch

    steps = dispatch.steps(dispatch.kind_module(cfg.task.kind), cfg)
    if len(steps) > 1:
        raise FxpError(f"trainer.devices={cfg.trainer.devices}: a {cfg.task.kind} task trains {len(steps)} learners "
                       f"one after the other, which fxp runs in one process; use trainer.devices=1")


@contextmanager
def rank_threads(tr):
    """OMP_NUM_THREADS for the ranks, unless set: trainer.num_threads, else this machine's cores shared among its ranks.
    What Accelerate sets on CPU without it, but with a warning from each rank."""
    if os.environ.get("OMP_NUM_THREADS"):
        yield
        return
    os.environ["OMP_NUM_THREADS"] = str(tr.num_threads or max(1, (os.cpu_count() or 1) // tr.devices))
    try:
        yield
    finally:
        del os.environ["OMP_NUM_THREADS"]


@contextmanager
def quiet_launcher():
    "torchrun's agent logs each start and stop (each of its modules with its own logger); fxp says what matters."
    import torch.distributed.elastic.agent.server.api  # noqa: F401  (its loggers exist from here)

    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
               if name.startswith("torch.distributed.elastic")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def failure(spec: Path, run_path: Path, e: Exception) -> str:
    "The line of the rank that failed first (its traceback into train.log), else the launcher's own."
    from fxp.runs import LOG

    errors = sorted((json.loads(f.read_text()) for f in spec.glob("error.*.json")), key=lambda e: e["time"])
    if not errors:
        return f"the ranks of this run stopped ({type(e).__name__}: {str(e).strip().splitlines()[0]})"
    first = errors[0]  # the others most likely failed because it did (a peer gone)
    with open(run_path / LOG, "a") as f:
        f.write(first["traceback"])
    return f"rank {first['rank']} of {world_of(spec)}: {first['line']}"


def world_of(spec: Path) -> int:
    tr = json.loads((spec / JOB).read_text())["cfg"]["trainer"]
    return tr["devices"] * tr["nodes"]


# --- in a rank (fxp.rank runs one) --------------------------------------------------------------------------------


def as_rank(cfg) -> None:
    """`cfg` made this rank's: one learner (`check_steps`), its device (on CUDA, the GPU of its local rank), fastai's
    DistributedTrainer on every fit (trainer.cbs.ddp: `callback`), and on the ranks after the first, no tracker (rank
    0 logs the run)."""
    from omegaconf import open_dict

    from fxp.train import check_device

    check_steps(cfg)
    cfg.trainer.device = str(device(check_device(cfg.trainer)))
    with open_dict(cfg):
        cfg.trainer.cbs["ddp"] = {"_target_": f"{__name__}.callback", "device": cfg.trainer.device,
                                  "scale_lr": cfg.trainer.scale_lr}
        if rank():
            cfg.logger = {}


def device(device):
    "This rank's device: on CUDA, the GPU of its local rank (set as the current one, as NCCL needs)."
    import torch

    if device.type != "cuda" or world_size() == 1:
        return device
    local = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.cuda.set_device(local)
    return local


def alone() -> bool:
    """After the fits: the ranks part, and rank 0 goes on as the one process it now is (export, evaluation and plots
    gather nothing from ranks that are gone). True in the process that goes on."""
    import torch.distributed as dist

    if world_size() == 1:
        return True
    dist.barrier()
    dist.destroy_process_group()
    if rank():
        return False
    os.environ["WORLD_SIZE"] = "1"  # fastai's num_distrib(): what its get_preds gathers across
    return True


def callback(device: str, scale_lr: bool = False):
    """The callback of every fit in a rank (trainer.cbs.ddp, which `as_rank` adds): the learner trains data-parallel
    through fastai's DistributedTrainer; `scale_lr`: at the fit's learning rates times the number of processes."""
    import torch

    device_type = torch.device(device).type  # SyncBatchNorm: CUDA only
    return _trainer_class()(sync_bn=device_type == "cuda", cpu=device_type == "cpu", scale_lr=scale_lr)


@functools.cache
def _trainer_class():
    "The DDP callback; a function, so that fastai loads only in a rank."
    from fastai.distributed import DistributedDL, DistributedTrainer

    class GlooDL(DistributedDL):
        "fastai's DistributedDL, whose epoch order goes from rank 0 to the others over any backend (fastai's: NCCL)."

        def _broadcast(self, t, rank):
            import torch

            if torch.distributed.get_backend() == "nccl":
                return super()._broadcast(t, rank)
            t = torch.LongTensor(t)
            torch.distributed.broadcast(t, rank)
            return t.tolist()

    class Trainer(DistributedTrainer):
        "fastai's DistributedTrainer (what `learn.distrib_ctx()` adds), its loaders GlooDL, `scale_lr` applied."

        def __init__(self, scale_lr: bool = False, **kwargs):
            super().__init__(**kwargs)
            self.scale_lr = scale_lr

        def before_fit(self):
            super().before_fit()
            if self.scale_lr and not hasattr(self.learn, "lr_finder"):  # the finder's sweep stays as it is
                multiply_lr(self.learn, world_size())

        def _wrap_dl(self, dl):
            return dl if isinstance(dl, DistributedDL) else GlooDL(dl, device=self.learn.dls.device)

    return Trainer


def multiply_lr(learn, n: int) -> None:
    """`trainer.scale_lr`, the linear scaling rule for an n times larger global batch: this fit's learning rates times
    `n` (each parameter group's), as its schedule (fit_one_cycle's ParamScheduler) or the optimizer (a plain fit) has
    them. Called as the fit begins, after fastai has set them."""
    from fastai.callback.schedule import ParamScheduler

    sched = next((cb for cb in learn.cbs if isinstance(cb, ParamScheduler) and "lr" in cb.scheds), None)
    if sched is not None:
        lr = sched.scheds["lr"]
        sched.scheds["lr"] = lambda pct: lr(pct) * n
    else:
        learn.opt.set_hypers(lr=[h["lr"] * n for h in learn.opt.hypers])
