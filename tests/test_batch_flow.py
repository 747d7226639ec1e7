"""The `pix2pix-translate` flow under Prefect's test harness: the champion of a reproduced
workspace over a folder and over an S3 prefix of a real local object store (moto), in two
shards; the version resolved once and recorded; drift flagged on shifted inputs and not on
in-distribution ones; a resumed job; one-line failures."""

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from conftest import copy_workspace, tool_env
from servers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


@pytest.fixture(scope="module")
def project(reproduced, tmp_path_factory):
    return copy_workspace(reproduced[0], tmp_path_factory.mktemp("batch-project") / "project")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """30 label images like the workspace's synthetic training inputs (32 px, the BtoA input), and
    the same darkened."""
    from pipeline.data.synthetic import generate

    root = tmp_path_factory.mktemp("batch-inputs")
    generate(root / "data", {"test": 30}, size=32, seed=11)
    fresh, dark = root / "fresh", root / "dark"
    for folder in (fresh / "a", fresh / "b", dark):
        folder.mkdir(parents=True)
    for i, path in enumerate(sorted((root / "data" / "test").glob("*.png"))):
        labels = Image.open(path).convert("RGB").crop((32, 0, 64, 32))
        labels.save(fresh / ("a" if i % 2 else "b") / f"{i:02d}.png")
        Image.eval(labels, lambda v: v // 3).save(dark / f"{i:02d}.png")
    return fresh, dark


@pytest.fixture(scope="module")
def object_store(tmp_path_factory):
    """moto's server on a free port in its own process group, with a bucket; stopped after."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=tool_env(), start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=2)
            break
        except OSError:
            time.sleep(0.3)
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update(AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test")
    import boto3

    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
    client.create_bucket(Bucket="scans")
    try:
        yield client
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _rows(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_the_champion_translates_a_folder_in_two_shards_and_finds_no_drift(project, inputs, tmp_path):
    import mlflow

    from pipeline.ops.batch import translate_batch

    fresh, _ = inputs
    out = tmp_path / "out"
    state = translate_batch(
        model="models:/pix2pix-synthetic@champion", input=str(fresh), output=str(out), shards=2,
        project=str(project), return_state=True,
    )  # fmt: skip
    summary = state.result()
    assert state.is_completed() and state.name == "Completed"
    assert summary["version"] == "1" and summary["model"] == "models:/pix2pix-synthetic/1"
    assert summary["ok"] == summary["translated"] == 30 and summary["failed"] == 0 and summary["drift"] is False
    rows = _rows(out)
    assert {r["model"] for r in rows} == {"models:/pix2pix-synthetic/1"} and len(rows) == 30
    assert Image.open(out / "a" / "01.png").size == (32, 32)
    report = json.loads((out / "drift.json").read_text())
    assert report["tested"] is True and report["drift"] is False
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    run = client.get_run(summary["mlflow_run_id"])
    assert run.data.metrics["ok"] == 30 and run.data.tags["drift"] == "false"
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"results.csv", "drift.json"}
    assert run.info.artifact_uri.startswith((project / "mlartifacts").as_uri())  # beside the project's store
    from mlflow.tracking import fluent

    assert fluent._active_experiment_id is None and "MLFLOW_EXPERIMENT_ID" not in os.environ  # nothing leaked
    again = translate_batch(
        model="models:/pix2pix-synthetic@champion", input=str(fresh), output=str(out), shards=2, project=str(project)
    )
    assert again["translated"] == 0 and again["skipped"] == 30 and again["ok"] == 30


def test_an_s3_prefix_in_and_out_with_drift_flagged(project, inputs, object_store, tmp_path):
    from pipeline.ops.batch import translate_batch

    _, dark = inputs
    for path in sorted(dark.glob("*.png")):
        object_store.upload_file(str(path), "scans", f"incoming/2026-12/{path.name}")
    state = translate_batch(
        model="models:/pix2pix-synthetic/1", input="s3://scans/incoming", output="s3://scans/translated",
        shards=2, project=str(project), return_state=True,
    )  # fmt: skip
    summary = state.result()
    assert state.is_completed() and state.name == "Drift detected" and "brightness" in state.message
    assert summary["ok"] == 30 and summary["drift"] is True and summary["uploaded"] >= 32
    keys = {o["Key"] for o in object_store.list_objects_v2(Bucket="scans", Prefix="translated/")["Contents"]}
    assert "translated/2026-12/05.png" in keys and "translated/results.csv" in keys
    report = json.loads(object_store.get_object(Bucket="scans", Key="translated/drift.json")["Body"].read())
    assert report["drift"] is True and "brightness" in report["drifted"]
    img = Image.open(
        io.BytesIO(object_store.get_object(Bucket="scans", Key="translated/2026-12/05.png")["Body"].read())
    )
    assert img.size == (32, 32)


def test_bad_jobs_end_failed_with_one_line(project, inputs, object_store, tmp_path):
    from pipeline.ops.batch import translate_batch

    fresh, _ = inputs
    cases = [
        (
            {"model": "models:/pix2pix-synthetic@nobody", "input": str(fresh)},
            "no such registered model version or alias",
        ),
        ({"model": "models:/pix2pix-synthetic/1", "input": "s3://scans/nothing-here"}, "no objects under this prefix"),
    ]
    for kwargs, expected in cases:
        state = translate_batch(output=str(tmp_path / "o"), project=str(project), return_state=True, **kwargs)
        assert state.is_failed() and expected in state.message and "\n" not in state.message, state.message


def test_drift_can_start_the_retrain_deployment(project, inputs, tmp_path):
    """`on_drift=retrain`: a batch that finds drift starts a run of the retrain deployment (a
    real one, registered on a work pool as `flows deploy` does); one without drift starts none."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    from pipeline.ops.batch import translate_batch
    from pipeline.ops.flows import deploy

    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="retrain-pool", type="process"))
    deployment_id = deploy(project, "on-drift", "retrain-pool", "0 3 * * *", 0, {}, None)
    fresh, dark = inputs
    common = {"model": "models:/pix2pix-synthetic/1", "project": str(project), "on_drift": "retrain",
              "retrain_deployment": "pix2pix-retrain/on-drift", "return_state": True}  # fmt: skip
    calm = translate_batch(input=str(fresh), output=str(tmp_path / "calm"), **common).result()
    assert calm["drift"] is False and "retrain_flow_run" not in calm
    state = translate_batch(input=str(dark), output=str(tmp_path / "dark"), **common)
    summary = state.result()
    assert state.name == "Drift detected" and summary["retrain_flow_run"]
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(summary["retrain_flow_run"])
    assert str(run.deployment_id) == deployment_id and run.parameters["project"] == str(project)
