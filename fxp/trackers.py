"""Experiment trackers, opt-in (`logger=[tensorboard,mlflow,wandb]`) and never prompting: fastai callbacks that send
each metrics.csv row (after `MetricsCSV` made it) to TensorBoard, MLflow or W&B; metrics.csv stays the core's.

A tracker's run id is kept in the run folder (trackers.json), so `fxp resume` continues the same tracker run, and a
sweep's jobs find their parent (MLflow) or group (W&B) in the sweep folder's. As a run ends, `finish` gives each
tracker that started the run's files (MLflow: plots, config.yaml, summary.json, model.pkl) and its final status.
"""
from __future__ import annotations

import importlib
import logging
import math
import netrc
import os
import secrets
import time
from pathlib import Path

from hydra.utils import get_class, instantiate

from fxp.callbacks import Callback, _active  # callbacks imports fastai quietly
from fxp.errors import FxpError, building
from fxp.reports import flat
from fxp.runs import CONFIG, MODEL, PLOTS, SUMMARY, TRACKERS, best_job, read_config, read_jobs, read_json, read_summary
from fxp.writer import locked, write_atomic

log = logging.getLogger("fxp")
INSTALL = "pip install 'fxp[trackers]'"
# MLflow's default store: a dot folder, so that `fxp runs outputs` does not list the artifacts' copies as runs
LOCAL_STORE = "outputs/.mlflow"
HYDRA_SWEEP = "multirun.yaml"  # Hydra writes it in a sweep folder as the sweep starts


class Tracker(Callback):
    """Sends each epoch's metrics.csv row to a tracker; `start` once per step (as its first fit begins),
    `log` each epoch, `end` as the run ends (`finish`). A step in a subfolder (the text kind's `lm/`) prefixes its
    metrics with its folder name."""
    order = 62  # after MetricsCSV (60) has made the epoch's row
    name = package = ""

    def check(self) -> None:
        "Before the run folder is claimed: the tracker's package is there (one line with the install command if not)."
        try:
            importlib.import_module(self.package)
        except ImportError:
            raise FxpError(f"logger {self.name} needs the {self.package} package: {INSTALL} "
                           f"(or pip install {self.package})") from None

    def before_fit(self):
        if _active(self) and not getattr(self, "started", False):  # before the first epoch: not in its checkpoint's way
            self.root, self.step = run_folder(self.path)
            self.start()
            self.started = True

    def after_epoch(self):
        if not _active(self):
            return
        row = self.learn.last_row
        prefix = f"{self.step}/" if self.step else ""
        values = {f"{prefix}{k}": float(v) for k, v in row.items() if k != "epoch" and isinstance(v, (int, float))}
        self.log(values, int(row["epoch"]))

    def start(self) -> None: ...

    def log(self, values: dict, epoch: int) -> None: ...

    def end(self, run) -> None: ...


def run_folder(path: Path) -> tuple[Path, str]:
    "The run folder holding `path` (a step's subfolder or the run folder itself) and the step's folder name ('')."
    path = Path(path).resolve()
    root = next((p for p in (path, *path.parents) if (p / CONFIG).is_file()), path)
    return root, path.relative_to(root).as_posix().strip(".")


def sweep_of(root: Path) -> Path | None:
    "The sweep folder a run is a job of (Hydra's multirun.yaml beside it), else None."
    return root.parent if (root.parent / HYDRA_SWEEP).is_file() else None


def ids(folder: Path) -> dict:
    "What trackers.json of a run or sweep folder records, by tracker."
    return read_json(Path(folder) / TRACKERS)


def save_ids(folder: Path, name: str, value: dict) -> None:
    write_atomic(Path(folder) / TRACKERS, _json({**ids(folder), name: value}))


def _json(value) -> str:
    import json

    return json.dumps(value, indent=2)



# --- TensorBoard ----------------------------------------------------------------------------------------------------


class TensorBoard(Tracker):
    """Event files in the run folder's tensorboard/ (a step's in its subfolder): a scalar per metrics.csv column, the
    epoch as the step. Each fit writes its own file, opened with a purge at its first epoch, so the epochs a resumed
    run trains again replace those a killed run left (`tensorboard --logdir outputs`)."""
    name = package = "tensorboard"

    def log(self, values: dict, epoch: int) -> None:
        if getattr(self, "writer", None) is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(Path(self.path) / "tensorboard"), purge_step=epoch)
        for k, v in values.items():
            self.writer.add_scalar(k, v, epoch)
        self.writer.flush()  # a kill loses nothing logged

    def after_fit(self):
        self.release()

    def release(self):
        "The fit's event file closed: after a fit, or one that failed (fxp.train.fit; the next fit opens its own)."
        if getattr(self, "writer", None) is not None:
            self.writer.close()
            self.writer = None


# --- MLflow ---------------------------------------------------------------------------------------------------------

# else FAILED; pruned: an Optuna trial stopped early, no failure
MLFLOW_STATUS = {"completed": "FINISHED", "pruned": "KILLED", "interrupted": "KILLED", "killed": "KILLED"}


class MLflow(Tracker):
    """An MLflow run per fxp run, in the experiment named after the task: the flattened resolved config as params, a
    metric per column each epoch (the epoch as the step), the run's files as artifacts at the end. A sweep is a
    parent run with a child run per job. `tracking_uri` null: $MLFLOW_TRACKING_URI, else a local store in
    outputs/.mlflow (mlflow.db and artifacts/)."""
    name = package = "mlflow"

    def __init__(self, tracking_uri: str | None = None, experiment: str | None = None):
        self.tracking_uri, self.experiment = tracking_uri, experiment

    def start(self) -> None:
        saved = ids(self.root).get(self.name)
        if saved:  # fxp resume, or the next step of the run: the same MLflow run goes on
            self.uri, self.run_id = saved["tracking_uri"], saved["run_id"]
            self.client().update_run(self.run_id, status="RUNNING")
            return
        self.uri, artifacts = store(self.tracking_uri)
        client = self.client()
        experiment = experiment_id(client, self.experiment or read_summary(self.root).get("task") or "fxp", artifacts)
        sweep = sweep_of(self.root)
        tags = {"fxp.run_dir": str(self.root), "fxp.overrides": " ".join(read_summary(self.root).get("overrides", []))}
        if sweep is not None:
            tags["mlflow.parentRunId"] = self.parent(client, experiment, sweep)
        name = f"{sweep.name}/{self.root.name}" if sweep is not None else self.root.name
        self.run_id = client.create_run(experiment, run_name=name, tags=tags).info.run_id
        log_params(client, self.run_id, flat(read_config(self.root)))
        save_ids(self.root, self.name, dict(tracking_uri=self.uri, experiment_id=experiment, run_id=self.run_id))

    def parent(self, client, experiment: str, sweep: Path) -> str:
        "The sweep's parent run, made by its first job (the jobs may run in parallel: one makes it)."
        with locked(sweep / ".trackers.lock"):
            saved = ids(sweep).get(self.name)
            if saved:
                return saved["run_id"]
            run_id = client.create_run(experiment, run_name=sweep.name, tags={"fxp.sweep_dir": str(sweep)}).info.run_id
            save_ids(sweep, self.name, dict(tracking_uri=self.uri, experiment_id=experiment, run_id=run_id))
            return run_id

    def client(self):
        from mlflow import MlflowClient

        if getattr(self, "_client", None) is None:
            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def log(self, values: dict, epoch: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client().log_batch(self.run_id, metrics=[Metric(k, v, now, epoch) for k, v in values.items()
                                                      if math.isfinite(v)])

    def end(self, run) -> None:
        saved = ids(run.path).get(self.name)
        if not saved:  # no epoch ended: nothing was started
            return
        self.uri, self.run_id = saved["tracking_uri"], saved["run_id"]
        client = self.client()
        for f in (CONFIG, SUMMARY, MODEL):
            if (run.path / f).is_file():
                client.log_artifact(self.run_id, str(run.path / f))
        if (run.path / PLOTS).is_dir():
            client.log_artifacts(self.run_id, str(run.path / PLOTS), PLOTS)
        client.set_terminated(self.run_id, MLFLOW_STATUS.get(run.status, "FAILED"))
        sweep = sweep_of(run.path)
        if sweep is not None and ids(sweep).get(self.name):
            self.end_sweep(client, sweep, ids(sweep)[self.name]["run_id"])

    def end_sweep(self, client, sweep: Path, parent: str) -> None:
        "The parent run holds the sweep's best monitor value so far, and ends with each job (the last one's counts)."
        from mlflow.entities import Metric

        jobs = read_jobs(sweep)
        best = best_job(jobs)
        if best is not None:
            client.log_batch(parent, metrics=[Metric(f"best_{best['metric']}", best["best"], int(time.time() * 1000),
                                                     len(jobs))])
        client.set_terminated(parent, "FINISHED")


def store(tracking_uri: str | None) -> tuple[str, str | None]:
    "The tracking URI, and where artifacts go when the store is fxp's local one; that one made once, under a lock."
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri, None
    outputs = Path(LOCAL_STORE).resolve()
    uri = f"sqlite:///{outputs / 'mlflow.db'}"
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its INFO lines as it makes the database's tables
    with locked(outputs / ".mlflow.lock"):  # parallel jobs would each create the database's tables
        from mlflow import MlflowClient

        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    return uri, (outputs / "artifacts").as_uri()


def experiment_id(client, name: str, artifacts: str | None) -> str:
    "The experiment `name`, made if new (two jobs making it at once: the second finds the first's)."
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifacts and f"{artifacts}/{name}")
    except Exception:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def log_params(client, run_id: str, params: dict) -> None:
    "MLflow takes at most 100 params a call, values of at most 6000 characters."
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i:i + 100])


# --- Weights & Biases -----------------------------------------------------------------------------------------------


class WandB(Tracker):
    """A W&B run per fxp run, offline by default (its files under the run folder's wandb/; `wandb sync` uploads them),
    online only when `mode: online` is set, and then only with credentials already there (WANDB_API_KEY or `wandb
    login`): never a login prompt. A sweep's jobs share a group named after the sweep folder."""
    name = package = "wandb"

    def __init__(self, mode: str = "offline", project: str | None = None, entity: str | None = None):
        self.mode, self.project, self.entity = mode, project, entity

    def check(self) -> None:
        super().check()
        if self.mode == "online" and not wandb_credentials():
            raise FxpError("logger.wandb.mode=online needs W&B credentials (WANDB_API_KEY, or `wandb login` once); "
                           "fxp never prompts for them: set one, or keep logger.wandb.mode=offline")

    def start(self) -> None:
        import wandb

        saved = ids(self.root).get(self.name) or {}
        run_id = saved.get("id") or secrets.token_hex(4)
        if wandb.run is not None and wandb.run.id == run_id:  # the next step of this run
            self.run = wandb.run
            return
        sweep = sweep_of(self.root)
        summary = read_summary(self.root)
        self.run = wandb.init(id=run_id, resume="allow", mode=self.mode, project=self.project or summary.get("task"),
                              entity=self.entity, dir=str(self.root), config=read_config(self.root),
                              name=f"{sweep.name}/{self.root.name}" if sweep else self.root.name,
                              group=sweep.name if sweep else None, reinit="finish_previous",
                              settings=wandb.Settings(silent=True, console="off"))
        save_ids(self.root, self.name, dict(id=run_id, mode=self.mode))

    def log(self, values: dict, epoch: int) -> None:
        prefix = f"{self.step}/" if self.step else ""
        self.run.log({**values, f"{prefix}epoch": epoch})

    def end(self, run) -> None:
        import wandb

        saved = ids(run.path).get(self.name)
        if saved and wandb.run is not None and wandb.run.id == saved["id"]:
            wandb.run.summary.update({"status": run.status, **(read_summary(run.path).get("best_metrics") or {})})
            wandb.run.finish(exit_code=0 if run.status == "completed" else 1)


def wandb_credentials() -> bool:
    "An API key in the environment or in ~/.netrc for the W&B host (what `wandb login` writes)."
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


# --- as a run starts and ends ---------------------------------------------------------------------------------------


def chosen(cfg) -> list[Tracker]:
    "The trackers among the chosen loggers (others, `+logger.x._target_=...` callbacks, are left as they are)."
    out = []
    for name, node in (cfg.logger or {}).items():
        try:
            is_tracker = node is not None and issubclass(get_class(node._target_), Tracker)
        except Exception:  # not a class: building it, with the other callbacks, says what is wrong
            is_tracker = False
        if is_tracker:
            with building(f"logger.{name}"):
                out.append(instantiate(node))
    return out


def check(cfg) -> None:
    "Each chosen tracker can run (its package there; W&B online: credentials), before the run folder is claimed."
    for tracker in chosen(cfg):
        tracker.check()


def finish(run) -> None:
    """As a run ends, whatever its status (after its diagnosis, so summary.json is the one it keeps): each tracker that
    started gets the run's files and its status. A tracker that fails warns in one line; the run's outcome stands."""
    trackers = chosen(run.cfg)
    if trackers:
        run.write_summary()
    for tracker in trackers:
        try:
            tracker.end(run)
        except Exception as e:
            log.warning(f"logger {tracker.name} failed as the run ended ({type(e).__name__}: {e})")
