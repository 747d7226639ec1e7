"""MLflow glue: where runs go, the training callback, and the one run that train, evaluate
and export share (its id travels in models/checkpoints/mlflow_run.json, a train output).

Tracking never costs a training result: if the tracking server is unreachable at the start
or goes away during a run, a one-line warning is printed and training carries on, with
everything still written to disk by the stages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from pix2pix.callbacks import Callback
from pix2pix.checkpoint import atomic_write_text

from .params import CHECKPOINTS, PipelineConfig

RUN_FILE = CHECKPOINTS / "mlflow_run.json"


def _quiet_env() -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # Fail over to "untracked" within seconds, not MLflow's default minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def project_root(start: Path | None = None) -> Path:
    """The project folder (`start`, default the working directory), also from inside
    `dvc exp run --temp/--queue` copies."""
    cwd = (start or Path.cwd()).resolve()
    parts = cwd.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return cwd


def tracking_uri(root: Path | None = None) -> str:
    """MLFLOW_TRACKING_URI if set, else an absolute sqlite file in the project root (`root`,
    default: found from the working directory)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root(root) / 'mlflow.db'}"


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def git_info(root: Path) -> dict[str, str]:
    def git(*args: str) -> str:
        r = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        return r.stdout.strip() if r.returncode == 0 else ""

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {}
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return {"git_commit": commit, "git_dirty": str(dirty).lower()}


def warn_tracking(what: str, error: BaseException) -> None:
    first = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
    print(f"warning: MLflow {what} failed ({first}); continuing without tracking, results stay on disk", file=sys.stderr)


def connect(root: Path | None = None):
    """The mlflow module, pointed at the project's tracking store."""
    _quiet_env()
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri(root))
    return mlflow


def ensure_experiment(mlflow, name: str) -> str:
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if tracking_uri().startswith("sqlite:///"):  # artifacts beside the local database
        location = (project_root() / "mlartifacts" / name).as_uri()
    return mlflow.create_experiment(name, artifact_location=location)


def start_training_run(config: PipelineConfig, tags: dict[str, str], resume: bool):
    """Open (or, when resuming, reopen) the run for this training; returns the mlflow module,
    or None when tracking is unavailable."""
    try:
        mlflow = connect()
        previous = json.loads(RUN_FILE.read_text()) if resume and RUN_FILE.is_file() else None
        experiment = ensure_experiment(mlflow, config.dataset)
        if previous and previous.get("tracking_uri") == tracking_uri():
            run = mlflow.start_run(run_id=previous["run_id"], log_system_metrics=True)
        else:
            run = mlflow.start_run(experiment_id=experiment, log_system_metrics=True, run_name=os.environ.get("DVC_EXP_NAME"))
        mlflow.set_tags(tags)
        values = config.to_dict()
        mlflow.log_params(flatten({k: values[k] for k in ("data", "model", "train")}))
        atomic_write_text(RUN_FILE, json.dumps({"run_id": run.info.run_id, "experiment_id": experiment, "tracking_uri": tracking_uri()}))
        return mlflow
    except Exception as e:  # noqa: BLE001 - any tracking failure must not stop training
        warn_tracking("start", e)
        RUN_FILE.unlink(missing_ok=True)
        return None


def end_run(status: str = "FINISHED") -> None:
    try:
        import mlflow

        if mlflow.active_run():
            mlflow.end_run(status=status)
    except Exception as e:  # noqa: BLE001
        warn_tracking("end_run", e)


@contextmanager
def training_run(config: PipelineConfig, tags: dict[str, str], resume: bool) -> Iterator[Any]:
    mlflow = start_training_run(config, tags, resume)
    status = "FAILED"
    try:
        yield mlflow
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if mlflow is not None:
            end_run(status)


@contextmanager
def shared_run() -> Iterator[Any]:
    """Reopen the training run (for evaluate/export); yields mlflow, or None if unavailable."""
    if not RUN_FILE.is_file():
        print(f"warning: {RUN_FILE} missing (training was not tracked); not logging to MLflow", file=sys.stderr)
        yield None
        return
    info = json.loads(RUN_FILE.read_text())
    try:
        mlflow = connect()
        mlflow.set_tracking_uri(info["tracking_uri"])
        mlflow.start_run(run_id=info["run_id"])
    except Exception as e:  # noqa: BLE001
        warn_tracking("resume run", e)
        yield None
        return
    try:
        yield mlflow
    finally:
        end_run()


class MlflowCallback(Callback):
    """Streams the trainer's reports into the active MLflow run. A tracking outage never stops
    training: while the server is unreachable (restarted, redeployed) metrics are kept in
    memory and sent, in order, once it answers again; sample images of that time are skipped.
    After `outage_limit_s` seconds without an answer, tracking is given up for this run."""

    RETRY_EVERY_S = 5.0  # while down, try again at most this often (each try costs MLflow's HTTP retries)

    def __init__(self, mlflow, outage_limit_s: float | None = None):
        self.mlflow = mlflow
        self.outage_limit_s = float(os.environ.get("P2P_TRACKING_OUTAGE_S", 900)) if outage_limit_s is None else outage_limit_s
        self.pending: list[tuple[dict[str, float], int]] = []
        self.down_since: float | None = None
        self.last_try = 0.0

    def _call(self, what: str, fn, *args, **kwargs) -> None:
        if self.mlflow is None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - a tracking outage never stops training
            warn_tracking(what, e)
            self.mlflow = None

    def _log(self, metrics: dict[str, float], step: int) -> None:
        if self.mlflow is not None:
            self.pending.append((dict(metrics), step))
            self._flush()

    def _flush(self, force: bool = False) -> None:
        """Send the pending reports in order; on failure keep them (see the class docs)."""
        now = time.monotonic()
        if self.mlflow is None or not self.pending or (self.down_since is not None and not force and now - self.last_try < self.RETRY_EVERY_S):
            return
        self.last_try = now
        try:
            while self.pending:
                self.mlflow.log_metrics(self.pending[0][0], step=self.pending[0][1])
                self.pending.pop(0)
        except Exception as e:  # noqa: BLE001
            if self.down_since is None:
                self.down_since = now
                first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
                print(f"warning: MLflow unreachable ({first}); training goes on, metrics are kept and sent when it answers", file=sys.stderr)
            elif now - self.down_since > self.outage_limit_s:
                warn_tracking(f"logging (unreachable for {now - self.down_since:.0f} s, {len(self.pending)} reports dropped)", e)
                self.mlflow, self.pending = None, []
            return
        if self.down_since is not None:
            print(f"MLflow reachable again after {now - self.down_since:.0f} s: buffered metrics sent", file=sys.stderr)
            self.down_since = None

    def on_train_start(self, info):
        if self.mlflow is None:
            return
        self._call("log_params", self.mlflow.log_params, {"params_G": info["params_G"], "params_D": info["params_D"], "train_size": info["train_size"], "val_size": info["val_size"]})
        self._call("set_tags", self.mlflow.set_tags, {"device": info["device"], "precision": info["amp_dtype"]})

    # Synchronous on purpose: one log_batch per report (every train.log_every steps) measured
    # -0.6% against no tracking over 450 default steps, while MLflow's asynchronous logging
    # (synchronous=False: a background thread) measured +12.8% on 2 cores
    # (benchmarks/tracking_overhead.py). System metrics: MLflow's 10 s sampling interval.
    def on_step(self, step, logs):
        self._log(logs, step)

    def on_epoch_end(self, epoch, step, metrics):
        self._log({**metrics, "epoch": epoch}, step)

    def on_train_end(self, summary):
        self._flush(force=True)  # a last try for what an outage held back
        if self.pending:
            print(f"warning: MLflow still unreachable at the end of training: {len(self.pending)} metric reports not logged", file=sys.stderr)

    def on_samples(self, step, grid):
        if self.mlflow is not None and self.down_since is None:
            image = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            try:
                self.mlflow.log_image(image, key="samples", step=step, synchronous=True)
            except Exception as e:  # noqa: BLE001 - a picture is not worth stopping for
                print(f"warning: MLflow sample image at step {step} not logged ({str(e).strip()[:200]})", file=sys.stderr)
