"""Batch translation as a Prefect flow: a registered model over a folder or an S3 prefix.

    python -m pipeline.ops.batch run --model models:/pix2pix-facades@champion \\
        --input DIR|s3://bucket/prefix --output DIR|s3://bucket/prefix [--shards 2]
    python -m pipeline.ops.batch deploy --pool pix2pix     # shards as flow runs of a work pool

`pix2pix-translate` (1) resolves the model once — an alias or version of the registry
(`models:/NAME@ALIAS`, `models:/NAME/VERSION`) or a file — and downloads that version's ONNX
generator and drift reference; every shard uses that same version, whatever the alias points to
later; (2) brings an S3 prefix's objects to a local staging folder (only what is new or
changed); (3) runs the shards of `pix2pix.translate` — as parallel processes on this machine,
or, with `deployment`, as `pix2pix-translate-shard` flow runs that any worker of the pool picks
up (workers that see the same folders, as for retraining); (4) merges them into results.csv and
drift.json (+ drift.png), uploads outputs and reports back to S3 when the output is a prefix,
logs the batch to MLflow (experiment `pix2pix-translate`) and to Prefect (a progress artifact
while it runs, a summary and a drift table at the end). Drift ends the flow run in a
COMPLETED state named "Drift detected" (a warning, not a failure), and with `on_drift=retrain`
starts the retrain deployment.

Re-running a job resumes it: what results.csv records for the same input and model version is
skipped. A user error (a missing alias, an empty or unreachable prefix, an output that cannot be
written) ends the run FAILED with one line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import chdir, contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

# Absolute imports: Prefect workers load this file as a script (the deployment's entrypoint).
from pipeline.ops.env import tool_env
from pipeline.ops.s3 import is_s3, stage_inputs, upload_outputs
from pipeline.ops.states import one_line_errors
from pix2pix.errors import Pix2PixError, first_line
from pix2pix.translate import TranslateJob, finish, plan, prepare, run_shard
from pix2pix.translate_records import RESULTS, count_recorded

FLOW = "pix2pix-translate"
SHARD_FLOW = "pix2pix-translate-shard"
EXPERIMENT = "pix2pix-translate"


class BatchError(Pix2PixError, RuntimeError):
    """A batch job cannot run: its model, input or output."""


# --- the model, resolved once ----------------------------------------------------------------


@contextmanager
def project_store(root: Path) -> Iterator[Any]:
    """The mlflow module pointed at the project's store, with the project as working folder (a
    sqlite store keeps its artifacts beside it); MLflow's URI and the folder are put back after,
    so nothing leaks into the caller (a worker, a test)."""
    import mlflow

    from pipeline.tracking.run import connect

    saved = os.environ.get("MLFLOW_TRACKING_URI")
    with chdir(root):
        try:
            yield connect(root)
        finally:
            mlflow.set_tracking_uri(saved)


def resolve_model(model: str, root: Path, cache: Path) -> dict[str, str]:
    """{"path": local ONNX (or checkpoint) file, "id": what results record, "version"}.

    `models:/NAME@ALIAS` and `models:/NAME/VERSION` are looked up in the project's registry
    (MLFLOW_TRACKING_URI when set) and downloaded once into `cache`."""
    if not model.startswith("models:/"):
        path = Path(model).expanduser().resolve()
        if not path.is_file():
            raise BatchError(f"{model}: no such model file; pass a file or models:/NAME@ALIAS")
        return {"path": str(path), "id": "", "version": ""}
    from mlflow.exceptions import MlflowException

    from pipeline.tracking.run import shown_uri, tracking_uri

    spec = model.removeprefix("models:/")
    name, sep, alias = spec.partition("@")
    version = None if sep else name.rpartition("/")[2]
    name = name if sep else name.rpartition("/")[0]
    with project_store(root) as mlflow:
        client = mlflow.MlflowClient()
        try:
            mv = client.get_model_version_by_alias(name, alias) if sep else client.get_model_version(name, version)
        except MlflowException as e:
            raise BatchError(
                f"{model}: no such registered model version or alias in {shown_uri(tracking_uri(root))} "
                f"({first_line(e)}); list them in the MLflow UI or on the model page"
            ) from None
        target = cache / f"{name}-v{mv.version}"
        if not any(target.rglob("generator.onnx")):
            mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{mv.version}", dst_path=str(target))
    onnx = next(target.rglob("generator.onnx"), None)
    if onnx is None:
        raise BatchError(f"{model} (version {mv.version}) has no generator.onnx; export it with ONNX")
    return {"path": str(onnx), "id": f"models:/{name}/{mv.version}", "version": str(mv.version)}


# --- shards ----------------------------------------------------------------------------------


@task
@one_line_errors
def shard_in_process(job: dict, index: int, count: int) -> dict:
    """One shard as its own process on this machine (parallel with the other shards' tasks)."""
    code = (
        "import json, sys; from pix2pix.translate import TranslateJob, run_shard; "
        "print(json.dumps(run_shard(TranslateJob(**json.loads(sys.argv[1])), int(sys.argv[2]), int(sys.argv[3]))))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(job), str(index), str(count)],
        env=tool_env(), capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        raise BatchError(f"shard {index + 1}/{count} failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@task
@one_line_errors
def shard_on_pool(deployment: str, job: dict, index: int, count: int) -> dict:
    """One shard as a flow run of the shard deployment: any worker of its pool runs it."""
    from prefect.deployments import run_deployment

    run = run_deployment(
        f"{SHARD_FLOW}/{deployment}", parameters={"job": job, "index": index, "count": count}, timeout=None
    )
    if not run.state.is_completed():
        raise BatchError(f"shard {index + 1}/{count} (flow run {run.name}) ended {run.state.name}: {run.state.message}")
    # The counts travel in the state's message: a result would need storage both machines see.
    return json.loads(run.state.message)


@flow(name=SHARD_FLOW)
@one_line_errors
def translate_shard(job: dict, index: int, count: int) -> Any:
    """One shard of a batch job: the pool's workers run these. Ends COMPLETED with its counts
    as the state's message (JSON)."""
    from prefect.states import Completed

    counts = run_shard(TranslateJob(**job), index, count)
    get_run_logger().info("shard %d/%d: %s", index + 1, count, counts)
    return Completed(message=json.dumps(counts), data=counts)


# --- the job ---------------------------------------------------------------------------------


def log_to_mlflow(root: Path, summary: dict, out: Path) -> str | None:
    """One run per batch in the `pix2pix-translate` experiment: counts, rate, drift statistics
    and the reports as artifacts. Returns the run id, or None when tracking is unavailable."""
    from pipeline.tracking.run import ensure_experiment, warn_tracking

    try:
        with (
            project_store(root) as mlflow,
            mlflow.start_run(
                experiment_id=ensure_experiment(mlflow, EXPERIMENT), run_name=f"translate {summary['model']}"
            ) as run,
        ):
            mlflow.log_params({k: summary[k] for k in ("model", "input", "output", "shards")})
            mlflow.log_metrics(
                {k: float(summary[k]) for k in ("total", "ok", "failed", "translated", "images_per_s")}
                | {"drift": float(summary["drift"])}
            )
            report = json.loads((out / "drift.json").read_text())
            for name, entry in report.get("statistics", {}).items():
                if "ks" in entry:
                    mlflow.log_metrics({f"drift_ks_{name}": entry["ks"], f"drift_p_{name}": entry["p_value"]})
            mlflow.set_tags({"drift": str(summary["drift"]).lower(), "model_version": summary.get("version", "")})
            for name in (RESULTS, "drift.json", "drift.png"):
                if (out / name).is_file():
                    mlflow.log_artifact(str(out / name))
            return run.info.run_id
    except Exception as e:  # noqa: BLE001 - the outputs on disk stay valid
        warn_tracking("batch logging", e)
        return None


def _prefect_reports(summary: dict, out: Path) -> None:
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    lines = [f"| {k} | {summary[k]} |" for k in ("model", "input", "output", "total", "ok", "failed", "images_per_s")]
    verdict = "**drift detected**" if summary["drift"] else "no drift detected"
    create_markdown_artifact(
        key="translate-summary",
        markdown="\n".join(["# Batch translation", "", "| | |", "|---|---|", *lines, "", verdict]),
        description=f"{summary['ok']}/{summary['total']} translated",
    )
    report = json.loads((out / "drift.json").read_text())
    rows = [{"statistic": k, **v} for k, v in report.get("statistics", {}).items()]
    if rows:
        create_table_artifact(key="translate-drift", table=rows, description=report.get("test", ""))


def _watch(job: TranslateJob, futures: list, total: int, started: float) -> None:
    """Progress in the logs and a Prefect progress artifact until every shard is done."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    logger = get_run_logger()
    artifact = create_progress_artifact(progress=0.0, key="translate-progress", description="images recorded")
    while True:
        running = [f for f in futures if not f.state.is_final()]
        done, failed = count_recorded(job)
        rate = done / max(time.perf_counter() - started, 1e-9)
        logger.info("translate: %d/%d recorded, %d failed (%.2f images/s)", done, total, failed, rate)
        update_progress_artifact(artifact, progress=min(100.0, 100.0 * done / max(total, 1)))
        if not running:
            return
        time.sleep(3)


@flow(name=FLOW, log_prints=True)
@one_line_errors
def translate_batch(
    model: str,
    input: str,
    output: str,
    shards: int = 2,
    project: str = ".",
    deployment: str | None = None,
    tile_megapixels: float = 1.1,
    max_megapixels: float = 150.0,
    on_drift: str = "warn",
    retrain_deployment: str = "pix2pix-retrain/pix2pix-retrain",
) -> Any:
    """Translate `input` (folder or s3:// prefix) into `output` with `model`, in `shards`."""
    from prefect.states import Completed

    logger = get_run_logger()
    if on_drift not in ("warn", "retrain"):
        raise BatchError(f"on_drift={on_drift!r}: choose warn or retrain")
    root = Path(project).resolve()
    local_out = Path(output) if not is_s3(output) else root / ".translate-work" / output.removeprefix("s3://")
    local_out = local_out.resolve()
    work = local_out / ".translate"
    resolved = resolve_model(model, root, work / "models")
    logger.info("model %s -> %s", model, resolved["id"] or resolved["path"])
    local_in = str(Path(input).resolve()) if not is_s3(input) else input
    if is_s3(input):
        staged = root / ".translate-work" / "inputs" / input.removeprefix("s3://")
        logger.info("%s: %d objects staged in %s", input, stage_inputs(input, staged), staged)
        local_in = str(staged)
    cores = os.cpu_count() or 1
    job = prepare(
        TranslateJob(
            model=resolved["path"], input=local_in, output=str(local_out), model_id=resolved["id"],
            workers=1, threads=max(1, cores // max(shards, 1)), tile_megapixels=tile_megapixels,
            max_megapixels=max_megapixels,
        )
    )  # fmt: skip
    items, refused = plan(job)
    started = time.perf_counter()
    job_dict = asdict(job)
    if deployment:
        futures = [shard_on_pool.submit(deployment, job_dict, i, shards) for i in range(shards)]
    else:
        futures = [shard_in_process.submit(job_dict, i, shards) for i in range(shards)]
    _watch(job, futures, len(items) + len(refused), started)
    counts = {"translated": 0, "skipped": 0, "failed": 0}
    for f in futures:
        for k, v in f.result().items():  # a failed shard raises its one line here
            counts[k] += v
    summary: dict[str, Any] = {**counts, **finish(job)}
    seconds = time.perf_counter() - started
    summary.update(
        model=job.model_id, version=resolved["version"], input=input, output=output, shards=shards,
        seconds=round(seconds, 2), images_per_s=round(counts["translated"] / seconds, 3) if seconds else 0.0,
    )  # fmt: skip
    if is_s3(output):
        summary["uploaded"] = upload_outputs(local_out, output)
    summary["mlflow_run_id"] = log_to_mlflow(root, summary, local_out)
    _prefect_reports(summary, local_out)
    logger.info("translate: %s", json.dumps(summary))
    if not summary["drift"]:
        return summary
    drifted = json.loads((local_out / "drift.json").read_text()).get("drifted", [])
    logger.warning("drift: the inputs differ from the training inputs in %s (see drift.json)", ", ".join(drifted))
    if on_drift == "retrain":
        from prefect.deployments import run_deployment

        summary["retrain_flow_run"] = str(run_deployment(retrain_deployment, timeout=0).id)
    return Completed(name="Drift detected", message=f"drift in {', '.join(drifted)}", data=summary)


def deploy(project: Path, name: str, pool: str) -> str:
    """Register the shard flow on a work pool: `translate_batch(deployment=name)` sends shards there."""
    source = translate_shard.from_source(source=str(project), entrypoint="pipeline/ops/batch.py:translate_shard")
    return str(source.deploy(name=name, work_pool_name=pool, build=False, push=False, print_next_steps=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.ops.batch", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="translate a folder or S3 prefix now")
    run.add_argument("--model", required=True, help="models:/NAME@ALIAS, models:/NAME/VERSION or a model file")
    run.add_argument("--input", required=True, help="folder or s3://bucket/prefix")
    run.add_argument("--output", required=True, help="folder or s3://bucket/prefix")
    run.add_argument("--shards", type=int, default=2)
    run.add_argument("--project", default=".", help="project folder: its registry (default: current)")
    run.add_argument("--deployment", help="send shards to this pix2pix-translate-shard deployment's pool")
    run.add_argument("--on-drift", choices=("warn", "retrain"), default="warn")
    dep = sub.add_parser("deploy", help="register the shard flow on a work pool (team stack: PREFECT_API_URL set)")
    dep.add_argument("--project", default=".")
    dep.add_argument("--name", default="shards")
    dep.add_argument("--pool", default=os.environ.get("P2P_WORK_POOL", "pix2pix"))
    args = parser.parse_args(argv)
    if args.command == "deploy":
        deployment_id = deploy(Path(args.project).resolve(), args.name, args.pool)
        print(f"deployment {SHARD_FLOW}/{args.name} ({deployment_id}) on work pool {args.pool}")
        return 0
    try:
        summary = translate_batch(
            model=args.model, input=args.input, output=args.output, shards=args.shards,
            project=args.project, deployment=args.deployment, on_drift=args.on_drift,
        )  # fmt: skip
    except Pix2PixError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
