"""The team stack for real, on 127.0.0.1: PostgreSQL, moto (S3), an MLflow tracking server
on PostgreSQL with artifacts in the bucket, a Prefect server on PostgreSQL with a process work
pool and two workers, all started by `python -m pipeline.ops.stack up` with authentication on.
Workspaces are tiny projects; retrains are deployment runs that the pool's workers execute.

The tests share one stack (module fixture); what a test needs (workspace A retrained once) is a
fixture too, so each passes on its own. The last one stops and restarts the stack.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import copy_workspace, free_port, make_project, tool_env

# One group: pytest-xdist runs these in one process, in file order, beside the rest of the suite.
pytestmark = [pytest.mark.slow, pytest.mark.server, pytest.mark.xdist_group("team-stack")]
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
MODEL = "pix2pix-synthetic"


def _postgres_missing() -> str | None:
    from pipeline.ops.stack.settings import StackError
    from pipeline.ops.stack.storage import _pg_bin

    try:
        _pg_bin("initdb")
        _pg_bin("pg_ctl")
    except StackError as e:
        return str(e)
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: PostgreSQL cannot be started as user postgres"
    return None


class Stack:
    def __init__(self, root: Path):
        self.root = root
        password = secrets.token_urlsafe(16)
        self.settings = {
            "P2P_STACK_DIR": str(root / "stack"),
            "P2P_POSTGRES_DATA": str(self._pgdata()),
            "P2P_POSTGRES_PORT": str(free_port()),
            "P2P_S3_PORT": str(free_port()),
            "P2P_MLFLOW_PORT": str(free_port()),
            "P2P_PREFECT_PORT": str(free_port()),
            "P2P_STACK_WORKERS": "2",
            "P2P_STACK_AUTH": "true",
            "MLFLOW_TRACKING_USERNAME": "admin",
            "MLFLOW_TRACKING_PASSWORD": password,
            "PREFECT_API_AUTH_STRING": f"admin:{password}",
            # Crash detection and run pick-up as fast as Prefect allows (heartbeats: 30 s at least).
            "P2P_HEARTBEAT_SECONDS": "30",
            "P2P_ZOMBIE_SECONDS": "45",
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "P2P_S3_BUCKET": "team-bucket",
            "OMP_NUM_THREADS": "1",  # several trainings share the 2 cores
        }
        self.env: dict[str, str] = {}

    def _pgdata(self) -> Path:
        # PostgreSQL runs as user `postgres` under root, which cannot enter pytest's 0700 folders.
        self.pg_parent = Path(tempfile.mkdtemp(prefix="p2p-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.pg_parent, "postgres", "postgres")
        return self.pg_parent / "data"

    def cli(self, *args: str, timeout: float = 400, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(
            [sys.executable, "-m", "pipeline.ops.stack", *args],
            env=tool_env(**self.settings),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check:
            assert r.returncode == 0, f"stack {' '.join(args)}:\n{r.stdout}\n{r.stderr}\n{self.logs()}"
        return r

    def up(self, *services: str) -> None:
        self.cli("up", *services)
        exports = self.cli("env").stdout
        self.env = dict(line.removeprefix("export ").split("=", 1) for line in exports.splitlines())
        self.env = {k: shlex.split(v)[0] for k, v in self.env.items()}

    def client_env(self, **extra) -> dict[str, str]:
        return tool_env(**{**self.settings, **self.env, **extra})

    def logs(self, tail: int = 1500) -> str:
        logs = self.root / "stack" / "logs"
        return (
            "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-tail:]}" for p in sorted(logs.glob("*.log")))
            if logs.is_dir()
            else ""
        )

    def state(self) -> dict:
        path = self.root / "stack" / "state.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    # -- Prefect, as operators and its REST API see it -------------------------------------
    def prefect(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(
            [sys.executable, "-m", "prefect", *args],
            env=self.client_env(COLUMNS="250"),
            capture_output=True,
            text=True,
            timeout=180,
        )
        if check:
            assert r.returncode == 0, f"prefect {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
        return r

    def api(self, method: str, path: str, body: dict | None = None, auth: bool = True):
        token = base64.b64encode(self.env["PREFECT_API_AUTH_STRING"].encode()).decode()
        headers = {"Content-Type": "application/json", **({"Authorization": f"Basic {token}"} if auth else {})}
        req = urllib.request.Request(
            self.env["PREFECT_API_URL"] + path,
            method=method,
            headers=headers,
            data=json.dumps(body).encode() if body is not None else None,
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"null")

    def trigger(self, deployment: str, **params) -> str:
        args = ["deployment", "run", f"pix2pix-retrain/{deployment}"]
        for key, value in params.items():
            args += ["--param", f"{key}={json.dumps(value)}"]
        out = self.prefect(*args).stdout
        return next(line.split()[-1] for line in out.splitlines() if "UUID" in line)

    def flow_run(self, run_id: str) -> dict:
        return self.api("GET", f"/flow_runs/{run_id}")

    def wait_final(self, run_id: str, timeout: float = 600) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            run = self.flow_run(run_id)
            if run["state_type"] in FINAL:
                return run
            time.sleep(2)
        pytest.fail(f"flow run {run_id} not finished after {timeout} s (state {run['state_type']})\n{self.logs()}")

    def deploy(self, project: Path, name: str) -> None:
        r = subprocess.run(
            [sys.executable, "-m", "pipeline.ops.flows", "deploy", "--project", str(project), "--name", name],
            cwd=project,
            env=self.client_env(),
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert r.returncode == 0, r.stdout + r.stderr

    def workspace(self, name: str, **params) -> Path:
        """A tiny project, git-committed, whose default DVC remote is the stack's bucket."""
        return self.connect(make_project(self.root / name, **params))

    def connect(self, project: Path) -> Path:
        """`stack connect`: the bucket becomes the workspace's default DVC remote."""
        r = subprocess.run(
            [sys.executable, "-m", "pipeline.ops.stack", "connect", "--project", str(project)],
            env=self.client_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        return project

    def mlflow_client(self):
        from mlflow import MlflowClient

        uri = self.env["MLFLOW_TRACKING_URI"]
        return MlflowClient(uri, registry_uri=uri)

    def s3_keys(self, prefix: str) -> list[str]:
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=self.env["P2P_S3_ENDPOINT"],
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        )
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=self.env["P2P_S3_BUCKET"], Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def registry_rows(self, name: str) -> list[tuple[str, int]]:
        """(name, version) of every version of `name`, from the tracking server's registry."""
        versions = self.mlflow_client().search_model_versions(f"name = '{name}'")
        return sorted((v.name, int(v.version)) for v in versions)

    def sql(self, database: str, query: str) -> str:
        """A query straight to the stack's PostgreSQL, with its own client (psql)."""
        from pipeline.ops.stack.storage import _pg_bin

        password = json.loads((self.root / "stack" / "secrets.json").read_text())["postgres_password"]
        r = subprocess.run(
            [
                _pg_bin("psql"),
                "-h",
                "127.0.0.1",
                "-p",
                self.settings["P2P_POSTGRES_PORT"],
                "-U",
                "p2p",
                "-d",
                database,
                "-At",
                "-c",
                query,
            ],
            env={"PATH": os.environ["PATH"], "PGPASSWORD": password},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    missing = _postgres_missing()
    if missing:
        pytest.skip(f"team stack needs PostgreSQL's server binaries: {missing}")
    s = Stack(tmp_path_factory.mktemp("team"))
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    try:
        s.up()
        os.environ.update({k: s.env[k] for k in saved})  # in-process MLflow clients log in too
        yield s
    finally:
        import mlflow

        mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI"))  # tests below point it at the stack
        s.cli("down", check=False, timeout=300)
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        shutil.rmtree(s.pg_parent, ignore_errors=True)


def _processes_of(state: dict) -> list[int]:
    import psutil

    pids = []
    for entry in state.values():
        try:
            p = psutil.Process(entry["pid"])
            pids += [p.pid] + [c.pid for c in p.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    return pids


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


def test_a_killed_worker_crashes_its_run_and_frees_the_workspace(stack):
    import psutil

    e = stack.workspace("ws-e", train={"epochs": 60, "epochs_decay": 60})
    stack.deploy(e, "ws-e")
    run_id = stack.trigger("ws-e")
    deadline = time.time() + 300
    while not list((e / "models/checkpoints").glob("*.pt")) and time.time() < deadline:  # training has begun
        time.sleep(1)
    assert stack.flow_run(run_id)["state_type"] == "RUNNING"
    victims = []
    for name, entry in stack.state().items():  # the workers, with everything they started
        if name.startswith("worker-"):
            p = psutil.Process(entry["pid"])
            victims += [p, *p.children(recursive=True)]
    for p in victims:
        p.kill()
    psutil.wait_procs(victims, timeout=30)
    run = stack.wait_final(run_id, timeout=300)
    assert run["state_type"] in ("CRASHED", "FAILED"), run["state_type"]
    from pipeline.ops.flows import workspace_lock

    with workspace_lock(e):  # free again: the lock died with the run's process
        pass
    stack.up("workers")
    assert "up 2/2" in stack.cli("status").stdout
    again = stack.wait_final(stack.trigger("ws-e", overrides={"train.epochs": 1, "train.epochs_decay": 1}))
    assert again["state_type"] == "COMPLETED", f"{again['state']['message']}\n{stack.logs()}"


def test_tracking_server_restart_during_training(stack):
    """Training goes on while the server restarts; metrics of the outage arrive afterwards;
    the run registers exactly one version."""
    f = stack.workspace("ws-f", train={"epochs": 40, "epochs_decay": 40, "sample_every": 40})
    env = stack.client_env()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro"],
        cwd=f,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        client = stack.mlflow_client()
        run_file = f / "models/checkpoints/mlflow_run.json"
        deadline = time.time() + 300
        while time.time() < deadline and not (
            run_file.is_file() and client.get_metric_history(json.loads(run_file.read_text())["run_id"], "G_L1")
        ):
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.5)
        run_id = json.loads(run_file.read_text())["run_id"]
        stack.cli("down", "mlflow")
        stack.cli("up", "mlflow")
        before = max(m.step for m in client.get_metric_history(run_id, "G_L1"))
        assert proc.poll() is None, "training ended before the tracking server came back: make it longer"
        out, _ = proc.communicate(timeout=900)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 0, out[-3000:]
    assert "MLflow unreachable" in out and "reachable again" in out, out[-3000:]
    steps = sorted(m.step for m in client.get_metric_history(run_id, "G_L1"))
    last_step = json.loads((f / "metrics/train/metrics.json").read_text()).get("step") or steps[-1]
    assert (
        steps == list(range(1, len(steps) + 1)) and steps[-1] >= last_step > before
    )  # nothing lost, logged after the restart
    assert client.get_run(run_id).info.status == "FINISHED"
    assert len(client.search_model_versions(f"name = '{MODEL}' and run_id = '{run_id}'")) == 1


class Relay:
    """A TCP relay to the object store that the test can cut: the store as a workspace sees it."""

    def __init__(self, target_port: int):
        self.port, self.target = free_port(), target_port
        self.server: socket.socket | None = None

    def start(self) -> None:
        self.server = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        threading.Thread(target=self._accept, args=(self.server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None


def test_object_store_down_during_push(stack):
    g = stack.workspace("ws-g")
    relay = Relay(int(stack.settings["P2P_S3_PORT"]))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "dvc",
            "remote",
            "modify",
            "--local",
            "team",
            "endpointurl",
            f"http://127.0.0.1:{relay.port}",
        ],
        cwd=g,
        env=stack.client_env(),
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    stack.deploy(g, "ws-g")
    failed = stack.wait_final(stack.trigger("ws-g"))  # the store is unreachable from the workspace
    message = failed["state"]["message"]
    assert failed["state_type"] == "FAILED" and "dvc push to remote 'team' failed" in message, message
    assert "stays registered" in message and "\n" not in message.strip(), message
    run_id = json.loads((g / "models/checkpoints/mlflow_run.json").read_text())["run_id"]
    client = stack.mlflow_client()
    [mv] = client.search_model_versions(f"name = '{MODEL}' and run_id = '{run_id}'")
    assert f"version {mv.version} of {MODEL} stays registered" in message
    relay.start()
    try:
        again = stack.wait_final(stack.trigger("ws-g"))
        assert again["state_type"] == "COMPLETED", again["state"]["message"]
        r = subprocess.run(
            [sys.executable, "-m", "dvc", "status", "--cloud"],
            cwd=g,
            env=stack.client_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0 and "are in sync" in r.stdout, r.stdout + r.stderr
    finally:
        relay.stop()
    assert len(client.search_model_versions(f"name = '{MODEL}' and run_id = '{run_id}'")) == 1


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
