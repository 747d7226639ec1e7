"""MLflow runs: where they go, and the one run that train, evaluate and export share (its id
and store travel in models/checkpoints/mlflow_run.json, a train output).

The store is always the one in force (MLFLOW_TRACKING_URI, else the project's sqlite file).
When training ran in another store - a workspace reproduced on one machine, then connected
to the team's tracking server - evaluate and export log into a run of the current store that
stands in for the training run (tagged with where it was trained), found again by those tags
on every later stage run, so the model reaches the current registry without retraining.

Tracking never costs a training result: if the tracking server is unreachable at the start
or goes away during a run, a one-line warning is printed and training carries on, with
everything still written to disk by the stages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pix2pix.errors import first_line
from pix2pix.files import atomic_write_text

from ..config import PipelineConfig
from ..paths import CHECKPOINTS

RUN_FILE = CHECKPOINTS / "mlflow_run.json"
TRAINED_RUN_TAG, TRAINED_STORE_TAG = "trained_run_id", "trained_in"  # on a stand-in run


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


def shown_uri(uri: str) -> str:
    """A tracking URI fit for tags and logs: any user:password in it is left out."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None and parts.username is None:
        return uri
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))


def warn_tracking(what: str, error: BaseException) -> None:
    print(
        f"warning: MLflow {what} failed ({first_line(error)}); continuing without tracking, results stay on disk",
        file=sys.stderr,
    )


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
            run = mlflow.start_run(
                experiment_id=experiment, log_system_metrics=True, run_name=os.environ.get("DVC_EXP_NAME")
            )
        mlflow.set_tags(tags)
        values = config.to_dict()
        mlflow.log_params(flatten({k: values[k] for k in ("data", "model", "train")}))
        atomic_write_text(
            RUN_FILE,
            json.dumps({"run_id": run.info.run_id, "experiment_id": experiment, "tracking_uri": tracking_uri()}),
        )
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


def stand_in_run(mlflow, info: dict, experiment_name: str) -> str:
    """The run of the current store that stands in for a training run of another store
    (`info`: mlflow_run.json): the one tagged with it, or a new one, made once."""
    experiment = ensure_experiment(mlflow, experiment_name)
    trained = {TRAINED_RUN_TAG: info["run_id"], TRAINED_STORE_TAG: shown_uri(info["tracking_uri"])}
    query = " and ".join(f"tags.{k} = '{v}'" for k, v in trained.items())
    found = mlflow.search_runs([experiment], filter_string=query, max_results=1, output_format="list")
    if found:
        return found[0].info.run_id
    run = mlflow.MlflowClient().create_run(experiment, tags=trained, run_name=f"evaluated-{info['run_id'][:8]}")
    print(
        f"MLflow: training run {info['run_id']} is in {trained[TRAINED_STORE_TAG]}, not in "
        f"{shown_uri(tracking_uri())}; "
        f"logging into run {run.info.run_id} there instead",
        file=sys.stderr,
    )
    return run.info.run_id


@contextmanager
def shared_run(config: PipelineConfig) -> Iterator[Any]:
    """Reopen the training run in the store in force (evaluate, export), or the run that stands
    in for it there (module docs); yields mlflow, or None when tracking is unavailable."""
    if not RUN_FILE.is_file():
        print(f"warning: {RUN_FILE} missing (training was not tracked); not logging to MLflow", file=sys.stderr)
        yield None
        return
    info = json.loads(RUN_FILE.read_text())
    try:
        mlflow = connect()
        same_store = info.get("tracking_uri") == tracking_uri()
        run_id = info["run_id"] if same_store else stand_in_run(mlflow, info, config.dataset)
        mlflow.start_run(run_id=run_id)
        if not same_store:
            values = config.to_dict()
            mlflow.log_params(flatten({k: values[k] for k in ("data", "model", "train")}))
    except Exception as e:  # noqa: BLE001
        warn_tracking("resume run", e)
        yield None
        return
    try:
        yield mlflow
    finally:
        end_run()
