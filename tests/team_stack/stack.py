"""The team stack for the tests: one real stack (PostgreSQL, moto, MLflow and Prefect servers,
workers), started by `python -m pipeline.ops.stack up` with authentication on, and the clients
the tests drive it with. Imported by this folder's conftest and test modules; not a test module.
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
from pathlib import Path

import pytest

from conftest import make_project, tool_env
from servers import free_port

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


def running_stack(tmp_path_factory):
    """The body of the folder's `stack` fixture (conftest.py): up, yielded, then down."""
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
