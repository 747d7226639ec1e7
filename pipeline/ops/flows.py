"""Prefect flows: scheduled retraining with a champion/challenger promotion gate.

    python -m pipeline.ops.flows run [--force] [-S train.epochs=50 ...]     # one run, temporary server
    python -m pipeline.ops.flows serve --cron "0 3 * * 1" [--poll-minutes 30] # scheduled deployment

`retrain` (1) fingerprints the data source and params and returns "skipped" when nothing
changed since the last successful run (unless `force`); (2) runs the DVC pipeline
(`dvc repro`, or `dvc exp run -n NAME -S ...` with overrides) with retries, streaming stage
output into Prefect's logs; (3) runs the promotion gate on the version the export stage
registered (registering the export first when it was registered in another tracking store, as
after a workspace moves to the team server); (4) publishes: `dvc push` to the workspace's
default DVC remote (when it has one), then (for plain `dvc repro` runs; experiment runs stay
DVC experiments) commits dvc.lock, params.yaml and the small metrics files DVC keeps in git,
and pushes that commit where the branch has an upstream, so another machine can `git pull &&
dvc pull` (pipeline/ops/publish.py); (5) returns a summary. Only one retrain runs per workspace
at a time. A run with nothing new still publishes, so a push that failed last time (object
store down) is made up.

    python -m pipeline.ops.flows deploy --pool pix2pix [--cron ...] [--poll-minutes N]  # team stack

`deploy` registers the retrain flow of this workspace as a deployment on a Prefect work pool
(pipeline/ops/stack starts a server, the pool and workers); a worker of the pool runs it.

A user error (a busy workspace, a registry that does not answer, a failed push) ends the flow
run FAILED with one line naming the cause and the fix, never a traceback.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import chdir, contextmanager
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

# Absolute imports: Prefect workers load this file as a script (the deployment's entrypoint).
from pipeline.data.sources import is_url, source_url
from pipeline.ops.env import tool_env
from pipeline.ops.publish import publish
from pipeline.ops.states import one_line_errors, result_of
from pipeline.paths import MODEL_CARD
from pix2pix.errors import Pix2PixError, first_line

STATE_FILE = ".retrain/state.json"
LOCK_FILE = ".retrain/lock"
DEPLOYMENT = "pix2pix-retrain"


class RetrainBusy(Pix2PixError, RuntimeError):
    """Another retrain holds this workspace."""


class RegistryError(Pix2PixError, RuntimeError):
    """The tracking server or registry refused the gate; the message names the fix."""


class PipelineFailed(Pix2PixError, RuntimeError):
    """`dvc repro` (or `dvc exp run`) failed; the message ends with its last lines."""


@contextmanager
def workspace_lock(root: Path) -> Iterator[None]:
    """An exclusive, non-blocking lock: a second retrain on the same workspace is refused."""
    path = root / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise RetrainBusy(
                f"another retrain is already running on {root} (lock {path} held by pid {holder}); wait for "
                "it to finish"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _source_fingerprint(source: str, root: Path) -> str:
    """Cheap change detector for the data source (no full download or hashing)."""
    if source == "synthetic":
        return "synthetic"
    if is_url(source) or "/" not in source and not (root / source).exists():
        url = source_url(source) or source
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=20) as r:
                return (
                    f"{url}|{r.headers.get('ETag')}|{r.headers.get('Last-Modified')}|{r.headers.get('Content-Length')}"
                )
        except OSError:
            return url  # unreachable: cannot tell, so only params changes (or force) retrain
    path = Path(source.removeprefix("file://")).expanduser()
    path = path if path.is_absolute() else root / path
    if path.is_file():
        st = path.stat()
        return f"{path}|{st.st_size}|{st.st_mtime_ns}"
    if path.is_dir():
        h = hashlib.sha256()
        for p in sorted(path.rglob("*")):
            if p.is_file():
                st = p.stat()
                h.update(f"{p.relative_to(path)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return h.hexdigest()
    return f"missing:{path}"


@task
@one_line_errors
def fingerprint(root: str, overrides: dict[str, Any]) -> str:
    """Data source + params.yaml + overrides, as one hash. Reading params.yaml checks it, the
    gate's section included, before hours of training."""
    from pipeline.config import load_config
    from pipeline.tracking.promotion import gate_settings

    rootp = Path(root)
    params_text = (rootp / "params.yaml").read_text()
    config = load_config(rootp / "params.yaml")
    gate_settings(config.promotion)
    source = str(overrides.get("data.source") or config.data.source)
    h = hashlib.sha256()
    for part in (_source_fingerprint(source, rootp), params_text, json.dumps(overrides, sort_keys=True)):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def dvc_command(overrides: dict[str, Any], run_name: str | None) -> list[str]:
    if not overrides and not run_name:
        return [sys.executable, "-m", "dvc", "repro"]
    cmd = [sys.executable, "-m", "dvc", "exp", "run"]
    if run_name:
        cmd += ["-n", run_name]
    for key, value in overrides.items():
        cmd += ["-S", f"{key}={value}"]
    return cmd


@task(retries=2, retry_delay_seconds=30)
@one_line_errors
def run_pipeline(root: str, overrides: dict[str, Any], run_name: str | None) -> None:
    """Run the DVC pipeline, streaming its output into the flow's logs."""
    logger = get_run_logger()
    cmd = dvc_command(overrides, run_name)
    logger.info("running: %s", " ".join(cmd[2:]))
    proc = subprocess.Popen(
        cmd, cwd=root, env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        if line:
            logger.info(line)
            tail = (tail + [line])[-5:]
    if proc.wait() != 0:
        raise PipelineFailed(f"pipeline failed (exit {proc.returncode}): {' | '.join(tail)}")


@task
@one_line_errors
def promotion_gate(root: str) -> dict:
    """Gate the version the export stage registered, in the tracking store in force. An export
    registered in another store (the workspace was reproduced before it moved to the team
    server) is registered in this one first: same files, no retraining."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from pipeline.config import load_config
    from pipeline.data.manifest import read_manifest
    from pipeline.paths import MANIFEST, RAW
    from pipeline.tracking.promotion import frozen_test_pairs, gate_settings, promote
    from pipeline.tracking.registry import register_export
    from pipeline.tracking.run import connect, shown_uri, tracking_uri

    rootp = Path(root)
    config = load_config(rootp / "params.yaml")
    gate = gate_settings(config.promotion)
    card = json.loads((rootp / MODEL_CARD).read_text())
    saved_uri = os.environ.get("MLFLOW_TRACKING_URI")
    store = None
    try:
        with chdir(rootp):  # the project's own store and paths, whatever the worker's folder
            store = shown_uri(tracking_uri())
            registered = card.get("registered_model")
            if "onnx" in card["files"] and (not registered or registered.get("tracking_uri") != store):
                registered = register_export(config, card)  # idempotent: a retried run reuses the version
                if registered is None:
                    raise RegistryError(
                        f"could not register {rootp / MODEL_CARD} in {store}: check MLFLOW_TRACKING_URI and that "
                        "the tracking server answers, then run the retrain again (the exported files are kept)"
                    )
            if not registered:
                return {
                    "promoted": False,
                    "reason": "no ONNX export to register (export.formats); nothing to promote",
                    "model": None,
                }
            pairs = frozen_test_pairs(read_manifest(MANIFEST), card["params"]["data"]["direction"], RAW)
            decision = promote(
                connect(), registered["name"], registered["version"], pairs, gate.metric, gate.min_improvement
            )
    except MlflowException as e:
        raise RegistryError(
            f"the registry at {store} refused the promotion gate ({first_line(e)}); check MLFLOW_TRACKING_URI "
            "and the server's permissions, then run the retrain again"
        ) from None
    finally:
        mlflow.set_tracking_uri(saved_uri)  # connect() pointed mlflow at this project; do not leak it
    get_run_logger().info("promotion: %s", decision.reason)
    return {**decision.to_dict(), "model": registered}


def _state(root: Path) -> dict:
    path = root / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


@flow(name="pix2pix-retrain", log_prints=True)
@one_line_errors
def retrain(
    project: str = ".",
    overrides: dict[str, Any] | None = None,
    force: bool = False,
    run_name: str | None = None,
    retries: int = 2,
) -> dict:
    """Retrain when data or params changed, then gate the new model version.

    `retries`: how often a failed pipeline run is retried (transient failures)."""
    from pix2pix.config import METRIC_NAMES
    from pix2pix.files import atomic_write_text

    root = Path(project).resolve()
    overrides = dict(overrides or {})
    with workspace_lock(root):
        fp = result_of(fingerprint, str(root), overrides)
        if not force and _state(root).get("fingerprint") == fp:
            published = result_of(
                publish, str(root), _state(root).get("summary", {}).get("model"), commit=not (overrides or run_name)
            )
            return {
                "decision": "skipped",
                "reason": "nothing new: data and params unchanged since the last successful run (force=True "
                "retrains anyway)",
                "published": published,
            }
        result_of(run_pipeline.with_options(retries=retries), str(root), overrides, run_name)
        card = json.loads((root / MODEL_CARD).read_text())
        gate = result_of(promotion_gate, str(root))
        run_info = root / "models/checkpoints/mlflow_run.json"
        summary = {
            "decision": "promoted" if gate["promoted"] else "kept champion",
            "reason": gate["reason"],
            "run_id": json.loads(run_info.read_text())["run_id"] if run_info.is_file() else None,
            "model": gate.pop("model"),  # registered in the store in force
            "metrics": {k: card["eval"][k] for k in METRIC_NAMES} if card.get("eval") else {},
            "gate": gate,
        }
        atomic_write_text(root / STATE_FILE, json.dumps({"fingerprint": fp, "summary": summary}, indent=2))
        summary["published"] = result_of(publish, str(root), summary["model"], commit=not (overrides or run_name))
    return summary


def _parse_overrides(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"-S expects key=value, got {item!r}")
        out[key] = value
    return out


def deploy(
    project: Path, name: str, pool: str, cron: str, poll_minutes: int, overrides: dict[str, Any], run_name: str | None
) -> str:
    """Register this workspace's retrain flow on a work pool; its workers run it from here
    (process workers on machines that see this folder). Returns the deployment's id."""
    from datetime import timedelta

    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

    schedules = [CronSchedule(cron=cron)] + (
        [IntervalSchedule(interval=timedelta(minutes=poll_minutes))] if poll_minutes else []
    )
    source = retrain.from_source(source=str(project), entrypoint="pipeline/ops/flows.py:retrain")
    return str(
        source.deploy(
            name=name,
            work_pool_name=pool,
            schedules=schedules,
            build=False,
            push=False,
            print_next_steps=False,
            parameters={"project": str(project), "overrides": overrides, "run_name": run_name},
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.ops.flows", description="Prefect retraining flows")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one retrain now (Prefect starts a temporary local server if none is set)")
    serve = sub.add_parser("serve", help="serve a scheduled retrain deployment (Ctrl-C or SIGTERM to stop)")
    dep = sub.add_parser(
        "deploy", help="register a scheduled retrain deployment on a work pool (team stack: PREFECT_API_URL set)"
    )
    for p in (run, serve, dep):
        p.add_argument("--project", default=".", help="project folder (default: current)")
        p.add_argument(
            "-S", "--set", action="append", default=[], metavar="KEY=VALUE", help="params override, as dvc exp run -S"
        )
        p.add_argument("--run-name", help="DVC experiment name for the run")
    run.add_argument("--force", action="store_true", help="retrain even if nothing changed")
    for p in (serve, dep):
        p.add_argument("--name", default=DEPLOYMENT, help="deployment name")
        p.add_argument("--cron", default="0 3 * * 1", help="retrain schedule (default: Mondays 03:00)")
        p.add_argument("--poll-minutes", type=int, default=0, help="also check for new data every N minutes (0: off)")
    dep.add_argument("--pool", default=os.environ.get("P2P_WORK_POOL", "pix2pix"), help="work pool (default: pix2pix)")
    args = parser.parse_args(argv)
    overrides = _parse_overrides(args.set)
    project = str(Path(args.project).resolve())
    if args.command == "run":
        try:
            summary = retrain(project=project, overrides=overrides, force=args.force, run_name=args.run_name)
        except Pix2PixError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(json.dumps(summary, indent=2))
        return 0
    if args.command == "deploy":
        deployment_id = deploy(
            Path(project), args.name, args.pool, args.cron, args.poll_minutes, overrides, args.run_name
        )
        print(
            f"deployment pix2pix-retrain/{args.name} ({deployment_id}) on work pool {args.pool}: "
            f"prefect deployment run pix2pix-retrain/{args.name}"
        )
        return 0
    retrain.serve(
        name=args.name,
        cron=args.cron,
        interval=args.poll_minutes * 60 if args.poll_minutes else None,
        parameters={"project": project, "overrides": overrides, "run_name": args.run_name},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
