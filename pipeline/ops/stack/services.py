"""The team stack's services, one record each: how it starts and stops, how its health is
read, and what it needs running first. Adding a service is adding one record to SERVICES."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Callable

from pix2pix.errors import first_line
from pix2pix.files import atomic_write_text

from .. import processes
from ..env import tool_env
from .settings import (
    LOOPBACK, Settings, StackError, auth_credentials, client_env, is_loopback, pg_password_env, postgres_url,
    read_state, record, s3_credentials, secrets_of, stop_recorded, worker_names,
)

DATABASES = ("mlflow", "mlflow_auth", "prefect")
ZOMBIE_AUTOMATION = "pix2pix: crash flow runs whose heartbeats stopped"


# -- PostgreSQL --------------------------------------------------------------------------------
def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    raise StackError(f"PostgreSQL's {name} was not found: install the server (Debian: apt-get install postgresql) or set P2P_POSTGRES_URL to an existing server")


def _as_postgres_user(cmd: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the `postgres` user then."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _prepare_pgdata(s: Settings) -> None:
    data = s.postgres_data
    data.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
        data.chmod(0o700)
        if subprocess.run(_as_postgres_user(["test", "-w", str(data)]), capture_output=True).returncode != 0:
            raise StackError(f"PostgreSQL runs as user postgres, which cannot reach {data}: set P2P_POSTGRES_DATA to a folder it can reach")


def _postgres_running(s: Settings) -> bool:
    if s.postgres_url:
        return True
    pidfile = s.postgres_data / "postmaster.pid"
    return pidfile.is_file() and processes.alive(int(pidfile.read_text().split()[0])) and processes.port_open(LOOPBACK, s.postgres_port)


def _start_postgres(s: Settings) -> None:
    if s.postgres_url:
        _create_databases(s)
        return
    _prepare_pgdata(s)
    data = s.postgres_data
    if not (data / "PG_VERSION").is_file():
        fd, name = tempfile.mkstemp(prefix="p2p-initpw-")  # outside the data folder, which must start empty
        pwfile = Path(name)
        os.write(fd, secrets_of(s)["postgres_password"].encode())
        os.close(fd)
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres", "postgres")
        r = subprocess.run(_as_postgres_user([_pg_bin("initdb"), "-D", str(data), "-U", "p2p", "--auth=scram-sha-256",
                                              f"--pwfile={pwfile}", "-E", "UTF8"]), capture_output=True, text=True)
        pwfile.unlink(missing_ok=True)
        if r.returncode != 0:
            raise StackError(f"initdb {data} failed: {(r.stderr or r.stdout).strip().splitlines()[-1]}")
    # Room for both MLflow workers' pools (tracking and login stores) and Prefect's.
    options = f"-c listen_addresses={LOOPBACK} -p {s.postgres_port} -c unix_socket_directories='' -c max_connections=300"
    r = subprocess.run(_as_postgres_user([_pg_bin("pg_ctl"), "-D", str(data), "-l", str(data / "server.log"), "-o", options, "-w", "-t", "60", "start"]),
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise StackError(f"PostgreSQL did not start: {(r.stderr or r.stdout).strip().splitlines()[-1]} (log: {data / 'server.log'})")
    _create_databases(s)


def _create_databases(s: Settings) -> None:
    import psycopg2

    env_password = pg_password_env(s).get("PGPASSWORD")
    try:
        conn = psycopg2.connect(postgres_url(s, "postgres"), password=env_password) if env_password else psycopg2.connect(postgres_url(s, "postgres"))
    except psycopg2.OperationalError as e:
        raise StackError(f"cannot connect to PostgreSQL at {postgres_url(s, 'postgres')}: {first_line(e)}") from None
    conn.autocommit = True
    with conn.cursor() as cur:
        for name in DATABASES:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()


def _stop_postgres(s: Settings) -> None:
    if s.postgres_url or not (s.postgres_data / "postmaster.pid").is_file():
        return
    subprocess.run(_as_postgres_user([_pg_bin("pg_ctl"), "-D", str(s.postgres_data), "-m", "fast", "-w", "stop"]), capture_output=True)

# -- the object store --------------------------------------------------------------------------
def s3_client(s: Settings):
    import boto3

    key, secret = s3_credentials(s)
    return boto3.client("s3", endpoint_url=s.s3_url, aws_access_key_id=key, aws_secret_access_key=secret,
                        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))


def _ensure_bucket(s: Settings) -> None:
    client = s3_client(s)
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if s.bucket not in existing:
        client.create_bucket(Bucket=s.bucket)


def _snapshot(s: Settings) -> Path:
    return s.dir / "s3" / s.bucket


def _save_bucket(s: Settings) -> None:
    """moto keeps objects in memory: write them to the stack folder before it stops."""
    client = s3_client(s)
    target = _snapshot(s)
    staging = target.with_name(target.name + ".saving")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=s.bucket):
        for obj in page.get("Contents", []):
            dest = staging / obj["Key"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(s.bucket, obj["Key"], str(dest))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def _restore_bucket(s: Settings) -> None:
    saved = _snapshot(s)
    if not saved.is_dir():
        return
    client = s3_client(s)
    for path in sorted(saved.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), s.bucket, path.relative_to(saved).as_posix())


def _start_s3(s: Settings) -> None:
    if not s.s3_endpoint:
        log = s.logs / "s3.log"
        pid = processes.start([sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(s.s3_port)], log, tool_env())
        record(s, "s3", pid, log, s.s3_url)
        processes.wait_until(lambda: processes.http_ok(f"{s.s3_url}/moto-api/"), 60, "the object store (moto)", log, pid)
        _ensure_bucket(s)
        _restore_bucket(s)
    else:
        _ensure_bucket(s)

# -- MLflow ------------------------------------------------------------------------------------
def _mlflow_env(s: Settings) -> dict[str, str]:
    key, secret = s3_credentials(s)
    env = {**tool_env(), **pg_password_env(s), "MLFLOW_S3_ENDPOINT_URL": s.s3_url, "AWS_ACCESS_KEY_ID": key,
           "AWS_SECRET_ACCESS_KEY": secret, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    # Each request takes a database connection (the login check too): SQLAlchemy's default pool
    # (5 + 10 overflow) ran dry with 20 clients downloading models at once. Per server worker.
    env.setdefault("MLFLOW_SQLALCHEMYSTORE_POOL_SIZE", "20")
    env.setdefault("MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW", "30")
    if s.auth:
        creds = auth_credentials(s)
        ini = s.dir / "mlflow-auth.ini"
        atomic_write_text(ini, "[mlflow]\ndefault_permission = READ\n"
                               f"database_uri = {postgres_url(s, 'mlflow_auth')}\n"
                               f"admin_username = {creds['MLFLOW_TRACKING_USERNAME']}\n"
                               f"admin_password = {creds['MLFLOW_TRACKING_PASSWORD']}\n"
                               "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
        ini.chmod(0o600)
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(ini)
        # CSRF protection of the login app; one stable key, or sessions break across restarts.
        env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", secrets_of(s)["flask_secret"])
    return env


def _start_mlflow(s: Settings) -> None:
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", s.host, "--port", str(s.mlflow_port), "--workers", "2",
           "--backend-store-uri", postgres_url(s, "mlflow"), "--artifacts-destination", f"s3://{s.bucket}/mlartifacts",
           "--serve-artifacts"]
    if s.auth:
        cmd += ["--app-name", "basic-auth"]
    if not is_loopback(s.host):
        cmd += ["--allowed-hosts", "*"]  # reachable by any name; the login keeps strangers out
    log = s.logs / "mlflow.log"
    pid = processes.start(cmd, log, _mlflow_env(s))
    record(s, "mlflow", pid, log, s.mlflow_url)
    processes.wait_until(lambda: processes.http_ok(f"{s.mlflow_url}/health"), 240, "the MLflow tracking server", log, pid)

# -- Prefect -----------------------------------------------------------------------------------
def _prefect_server_env(s: Settings) -> dict[str, str]:
    url = postgres_url(s, "prefect", "postgresql+asyncpg")
    if not s.postgres_url:  # asyncpg takes the password in the URL; it stays in this environment, off the command line
        url = url.replace("p2p@", f"p2p:{secrets_of(s)['postgres_password']}@", 1)
    env = {**tool_env(), "PREFECT_HOME": str(s.dir / "prefect-server"), "PREFECT_API_DATABASE_CONNECTION_URL": url}
    env.pop("PREFECT_API_URL", None)
    if s.auth:
        env["PREFECT_SERVER_API_AUTH_STRING"] = auth_credentials(s)["PREFECT_API_AUTH_STRING"]
    return env


def _auth_header(s: Settings) -> dict[str, str]:
    if not s.auth:
        return {}
    token = base64.b64encode(auth_credentials(s)["PREFECT_API_AUTH_STRING"].encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _start_prefect(s: Settings) -> None:
    log = s.logs / "prefect.log"
    pid = processes.start([sys.executable, "-m", "prefect", "server", "start", "--host", s.host, "--port", str(s.prefect_port)],
                          log, _prefect_server_env(s))
    record(s, "prefect", pid, log, s.prefect_api)
    processes.wait_until(lambda: processes.http_ok(f"{s.prefect_api}/health", _auth_header(s)), 240, "the Prefect server", log, pid)
    asyncio.run(_configure_prefect(s))


async def _configure_prefect(s: Settings) -> None:
    """The process work pool, and the automation that marks a flow run CRASHED when its
    heartbeats stop (its worker was killed or its machine died)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    updates = {PREFECT_API_URL: s.prefect_api}
    if s.auth:
        updates[PREFECT_API_AUTH_STRING] = auth_credentials(s)["PREFECT_API_AUTH_STRING"]
    with temporary_settings(updates=updates):
        async with get_client() as client:
            try:
                await client.create_work_pool(WorkPoolCreate(name=s.pool, type="process"))
            except ObjectAlreadyExists:
                pass
            for old in await client.read_automations_by_name(ZOMBIE_AUTOMATION):
                await client.delete_automation(old.id)
            await client.create_automation(AutomationCore(
                name=ZOMBIE_AUTOMATION,
                trigger=EventTrigger(
                    match={"prefect.resource.id": "prefect.flow-run.*"},
                    after={"prefect.flow-run.heartbeat"},
                    expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                            "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
                    for_each={"prefect.resource.id"},
                    posture=Posture.Proactive,
                    threshold=1,
                    within=timedelta(seconds=s.zombie_after_s),
                ),
                actions=[ChangeFlowRunState(state="CRASHED", message=f"no heartbeat for {s.zombie_after_s} s: its worker or machine stopped")],
            ))


def worker_env(s: Settings) -> dict[str, str]:
    return {**tool_env(), **client_env(s), "PREFECT_HOME": str(s.dir / "prefect-worker"),
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(s.heartbeat_s)}


def _start_workers(s: Settings) -> None:
    state = read_state(s)
    for i in range(1, s.workers + 1):
        name = f"worker-{i}"
        if processes.alive(state.get(name, {}).get("pid")):
            continue
        log = s.logs / f"{name}.log"
        pid = processes.start([sys.executable, "-m", "prefect", "worker", "start", "--pool", s.pool, "--type", "process",
                               "--name", f"{socket.gethostname()}-{name}"], log, worker_env(s), cwd=s.dir)
        record(s, name, pid, log, s.pool)
    for i in range(1, s.workers + 1):
        name = f"worker-{i}"
        entry = read_state(s)[name]
        log = Path(entry["log"])
        processes.wait_until(lambda: log.is_file() and "started!" in log.read_text(errors="replace"), 120, name, log, entry["pid"])



def _stop_workers(s: Settings) -> None:
    for name in worker_names(s):
        stop_recorded(s, name)


def _stop_s3(s: Settings) -> None:
    if not s.s3_endpoint and _s3_status(s).startswith("up"):
        _save_bucket(s)  # moto keeps the bucket in memory
    stop_recorded(s, "s3")


# -- health ------------------------------------------------------------------------------------
def _process_up(s: Settings, name: str, health_url: str, headers: dict[str, str] | None = None) -> bool:
    return processes.alive(read_state(s).get(name, {}).get("pid")) and processes.http_ok(health_url, headers)


def _postgres_status(s: Settings) -> str:
    if s.postgres_url:
        return f"external {postgres_url(s, '')}"
    return f"up 127.0.0.1:{s.postgres_port} ({s.postgres_data})" if _postgres_running(s) else "down"


def _s3_status(s: Settings) -> str:
    if s.s3_endpoint:
        return f"external {s.s3_endpoint}"
    return f"up {s.s3_url} bucket {s.bucket}" if _process_up(s, "s3", f"{s.s3_url}/moto-api/") else "down"


def _mlflow_status(s: Settings) -> str:
    up = _process_up(s, "mlflow", f"{s.mlflow_url}/health")
    return f"up {s.mlflow_url}" + (" (login required)" if s.auth else "") if up else "down"


def _prefect_status(s: Settings) -> str:
    up = _process_up(s, "prefect", f"{s.prefect_api}/health", _auth_header(s))
    return f"up {s.prefect_api}" + (" (auth string required)" if s.auth else "") if up else "down"


def _workers_status(s: Settings) -> str:
    state = read_state(s)
    running = [n for n in worker_names(s) if processes.alive(state[n]["pid"])]
    if not s.workers:
        return "none configured"
    return f"up {len(running)}/{s.workers} on pool {s.pool}" if len(running) >= s.workers else f"down ({len(running)}/{s.workers} running)"


# -- the records -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Service:
    name: str
    start: Callable[[Settings], None]  # start it (the stack has cleared a dead one first)
    stop: Callable[[Settings], None]
    status: Callable[[Settings], str]  # "up ...", "external ...", "down ..." or "none configured"
    needs: tuple[str, ...] = ()  # services that must be up first
    restartable: bool = True  # a dead or unhealthy one is cleared (stop) before start

    def running(self, s: Settings) -> bool:
        return self.status(s).startswith(("up", "external"))


SERVICES: tuple[Service, ...] = (
    Service("postgres", _start_postgres, _stop_postgres, _postgres_status),
    Service("s3", _start_s3, _stop_s3, _s3_status),
    Service("mlflow", _start_mlflow, lambda s: stop_recorded(s, "mlflow"), _mlflow_status, needs=("postgres", "s3")),
    Service("prefect", _start_prefect, lambda s: stop_recorded(s, "prefect"), _prefect_status, needs=("postgres",)),
    # Workers start one by one and keep the ones that run: nothing to clear first.
    Service("workers", _start_workers, _stop_workers, _workers_status, needs=("prefect",), restartable=False),
)
BY_NAME = {service.name: service for service in SERVICES}
