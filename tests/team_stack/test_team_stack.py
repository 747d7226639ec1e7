"""The team stack for real, on 127.0.0.1: PostgreSQL, moto (S3), an MLflow tracking server
on PostgreSQL with artifacts in the bucket, a Prefect server on PostgreSQL with a process work
pool and two workers, all started by `python -m pipeline.ops.stack up` with authentication on.
Workspaces are tiny projects; retrains are deployment runs that the pool's workers execute.

This module: logins, a workspace's way through the stack, the registry under load, parallel
workspaces, down and up. test_team_stack_faults.py (the same stack, after this module) kills
things. What a test needs (workspace A retrained once) is a fixture, so
each passes on its own; the last one stops and restarts the stack.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import copy_workspace
from team_stack.stack import MODEL, _processes_of

pytestmark = [pytest.mark.slow, pytest.mark.server]


def test_strangers_are_refused_and_logged_in_clients_served(stack):
    import requests

    mlflow_url = stack.env["MLFLOW_TRACKING_URI"]
    search = f"{mlflow_url}/api/2.0/mlflow/experiments/search"
    assert requests.post(search, json={"max_results": 5}, timeout=10).status_code == 401
    assert (
        requests.post(search, json={"max_results": 5}, auth=("admin", "wrong-password"), timeout=10).status_code == 401
    )
    ok = requests.post(
        search, json={"max_results": 5}, auth=("admin", stack.env["MLFLOW_TRACKING_PASSWORD"]), timeout=10
    )
    assert ok.status_code == 200, ok.text
    with pytest.raises(urllib.error.HTTPError) as refused:
        stack.api("POST", "/work_pools/filter", {}, auth=False)
    assert refused.value.code == 401
    assert [p["name"] for p in stack.api("POST", "/work_pools/filter", {})] == ["pix2pix"]
    # Both servers keep their state in PostgreSQL: their schemas are there.
    assert stack.sql("mlflow", "SELECT to_regclass('public.model_versions') IS NOT NULL") == "t"
    assert stack.sql("prefect", "SELECT to_regclass('public.work_pool') IS NOT NULL") == "t"
    assert stack.sql("mlflow_auth", "SELECT username FROM users") == "admin"
    status = stack.cli("status").stdout
    assert "login required" in status and "auth string required" in status and "up 2/2" in status


@pytest.fixture(scope="module")
def workspace_a(stack) -> tuple[Path, dict]:
    """Workspace A, deployed on the pool and retrained once by a worker: (folder, its flow run)."""
    a = stack.workspace("ws-a")
    stack.deploy(a, "ws-a")
    return a, stack.wait_final(stack.trigger("ws-a"))


def test_two_workspaces_one_stack(stack, workspace_a, tmp_path):
    """A's deployment runs on a worker of the pool; the version lands in the PostgreSQL
    registry, the files in the bucket; B pulls A's outputs and serves A's champion."""
    a, run = workspace_a
    assert run["state_type"] == "COMPLETED", f"{run['state']['message']}\n{stack.logs()}"
    assert run["work_pool_name"] == "pix2pix"
    versions = stack.mlflow_client().search_model_versions(f"name = '{MODEL}'")
    card = (a / "models/export/model_card.json").read_text()
    assert stack.registry_rows(MODEL) == [(MODEL, 1)], (card, [(v.version, v.run_id, v.tags) for v in versions])
    mv = stack.mlflow_client().get_model_version(MODEL, "1")
    assert any(k.startswith("mlartifacts/") and "generator" in k for k in stack.s3_keys("mlartifacts/")), (
        "model files not in the bucket"
    )
    assert mv.source and not mv.source.startswith(("/", "file:")), mv.source
    assert stack.s3_keys("dvcstore/"), "dvc push wrote nothing to the bucket"
    assert not list((a / "mlartifacts").glob("*")) and not (a / "mlflow.db").exists()  # nothing tracked locally

    # B: a clone of A's repository on another machine (the retrain committed dvc.lock).
    b = tmp_path / "ws-b"
    subprocess.run(["git", "clone", "-q", str(a), str(b)], check=True)
    env = stack.client_env()
    for cmd in (["pipeline.ops.stack", "connect", "--project", str(b)], ["dvc", "pull", "-q"]):
        r = subprocess.run([sys.executable, "-m", *cmd], cwd=b, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "dvc", "status"], cwd=b, env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0 and "up to date" in r.stdout, r.stdout + r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "dvc", "repro"], cwd=b, env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0 and "Running stage" not in r.stdout, r.stdout + r.stderr

    import mlflow
    import numpy as np
    from PIL import Image

    from pix2pix.loading import load_runner
    from pix2pix.predict import translate

    test_file = sorted((b / "data/raw").rglob("*.png"))[0]
    image = np.ascontiguousarray(
        np.asarray(Image.open(test_file).convert("RGB"))[:, : Image.open(test_file).width // 2]
    )
    mlflow.set_tracking_uri(stack.env["MLFLOW_TRACKING_URI"])
    served = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion").predict(image[None])[0]
    from_a = np.asarray(translate(load_runner(a / "models/export/generator.onnx"), Image.fromarray(image)))
    assert served.dtype == np.uint8 and np.array_equal(served, from_a)


def test_operators_use_prefects_cli(stack, workspace_a):
    for args, expected in (
        (["deployment", "ls"], "pix2pix-retrain/ws-a"),
        (["work-pool", "ls"], "pix2pix"),
        (["flow-run", "ls"], "COMPLETED"),
        (["deployment", "inspect", "pix2pix-retrain/ws-a"], "0 3 * * 1"),
    ):
        out = stack.prefect(*args).stdout
        assert expected in out, f"prefect {' '.join(args)}:\n{out}"


def test_a_workspace_reproduced_alone_moves_to_the_stack_without_retraining(stack, reproduced, tmp_path):
    """`dvc repro` on one machine (local sqlite store, its version registered there), then
    connected to the stack: the worker's retrain finds every stage up to date, registers the
    exported model in the team registry (tagged with where it was trained), gates it and ends
    COMPLETED; the checkpoint is the one trained locally."""
    from pipeline.data.hashing import sha256

    local = stack.connect(copy_workspace(reproduced[0], stack.root / "ws-local"))
    trained_run = json.loads((local / "models/checkpoints/mlflow_run.json").read_text())["run_id"]
    last = sha256(local / "models/checkpoints/last.pt")
    kept = json.loads((local / "models/export/model_card.json").read_text())["kept"]  # the exported checkpoint
    checkpoint = sha256(local / kept["path"])
    stack.deploy(local, "ws-local")
    run = stack.wait_final(stack.trigger("ws-local"))
    assert run["state_type"] == "COMPLETED", f"{run['state']['message']}\n{stack.logs()}"
    assert sha256(local / "models/checkpoints/last.pt") == last  # not retrained
    client = stack.mlflow_client()
    moved = [
        v for v in client.search_model_versions(f"name = '{MODEL}'") if v.tags.get("checkpoint_sha256") == checkpoint
    ]
    assert len(moved) == 1, [v.tags for v in moved]
    stand_in = client.get_run(moved[0].run_id)
    assert stand_in.data.tags["trained_run_id"] == trained_run
    assert stand_in.data.tags["trained_in"].startswith("sqlite:///") and "promotion_decision" in moved[0].tags
    # The same retrain again (forced): the version is found, not registered twice.
    again = stack.wait_final(stack.trigger("ws-local", force=True))
    assert again["state_type"] == "COMPLETED", again["state"]["message"]
    assert (
        len(
            [
                v
                for v in client.search_model_versions(f"name = '{MODEL}'")
                if v.tags.get("checkpoint_sha256") == checkpoint
            ]
        )
        == 1
    )


def test_one_retrain_per_workspace_and_workspaces_in_parallel(stack):
    c, d = stack.workspace("ws-c"), stack.workspace("ws-d")
    versions_before = len(stack.registry_rows(MODEL))
    stack.deploy(c, "ws-c")
    stack.deploy(d, "ws-d")
    runs = [stack.trigger("ws-c"), stack.trigger("ws-c"), stack.trigger("ws-d")]
    finals = [stack.wait_final(r) for r in runs]
    c_states = sorted(f["state_type"] for f in finals[:2])
    assert c_states == ["COMPLETED", "FAILED"], [f["state"]["message"] for f in finals]
    refused = next(f for f in finals[:2] if f["state_type"] == "FAILED")
    assert "another retrain is already running on" in refused["state"]["message"], refused["state"]["message"]
    done_c = next(f for f in finals[:2] if f["state_type"] == "COMPLETED")
    assert finals[2]["state_type"] == "COMPLETED", finals[2]["state"]["message"]
    # C and D trained at the same time (their running intervals overlap).
    assert done_c["start_time"] < finals[2]["end_time"] and finals[2]["start_time"] < done_c["end_time"]
    assert len(stack.registry_rows(MODEL)) == versions_before + 2  # C and D each registered a version


def test_twenty_concurrent_registry_clients(stack, workspace_a):
    import mlflow
    from mlflow import MlflowClient

    from pipeline.tracking.registry import set_alias

    mlflow.set_tracking_uri(stack.env["MLFLOW_TRACKING_URI"])  # models:/ URIs resolve through the global registry URI
    source = stack.mlflow_client().get_model_version(MODEL, "1")
    logged_model = source.model_id or source.source.removeprefix(
        "models:/"
    )  # MLflow 3: versions point at a logged model
    name = "pix2pix-concurrency"
    stack.mlflow_client().create_registered_model(name)
    barrier = threading.Barrier(20)

    def client_work(i: int) -> tuple[int, str, str]:
        client = MlflowClient(stack.env["MLFLOW_TRACKING_URI"], registry_uri=stack.env["MLFLOW_TRACKING_URI"])
        barrier.wait(timeout=60)
        version = client.create_model_version(name, source.source, run_id=source.run_id, model_id=logged_model).version
        set_alias(client, name, f"client-{i}", version)
        set_alias(client, name, "latest-writer", version)  # all 20 on one alias: the product's retry
        info = mlflow.models.get_model_info(
            f"models:/{name}@client-{i}"
        )  # its MLmodel, through the alias and the artifact proxy
        return i, str(version), info.signature.inputs.to_dict()[0]["tensor-spec"]["dtype"]

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(client_work, range(20)))
    versions = sorted(int(v) for _, v, _ in results)
    assert versions == list(range(1, 21))  # none lost, none doubled
    assert [v for _, v in stack.registry_rows(name)] == versions
    client = stack.mlflow_client()
    for i, version, dtype in results:
        assert str(client.get_model_version_by_alias(name, f"client-{i}").version) == version and dtype == "uint8"
    assert str(client.get_model_version_by_alias(name, "latest-writer").version) in {v for _, v, _ in results}


def test_down_leaves_nothing_running_and_up_finds_the_data_again(stack, workspace_a):
    versions_before = stack.registry_rows(MODEL)
    keys_before = set(stack.s3_keys(""))
    pids = _processes_of(stack.state())
    assert len(pids) >= 5
    stack.cli("down")
    import psutil

    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"left running after down: {alive}"
    assert stack.cli("status", check=False).returncode == 1
    stack.up()
    assert stack.registry_rows(MODEL) == versions_before
    assert set(stack.s3_keys("")) == keys_before
    assert str(stack.mlflow_client().get_model_version_by_alias(MODEL, "champion").version) == "1"
