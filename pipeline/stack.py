"""The team stack on one machine: PostgreSQL, an S3-compatible object store, an MLflow
tracking server (runs and registry in PostgreSQL, artifacts in the bucket, served through the
server), a Prefect server on PostgreSQL with a process work pool and its workers.

    python -m pipeline.stack up [SERVICE ...]     # start what is not running (all by default)
    python -m pipeline.stack down [SERVICE ...]   # stop (the bucket is saved to disk first)
    python -m pipeline.stack status               # one line per service; exit 1 if one is down
    python -m pipeline.stack env                  # the client settings, as `export` lines
    python -m pipeline.stack connect [--project]  # make the bucket this workspace's DVC remote

Services: postgres, s3, mlflow, prefect, workers. Everything lives in one folder (P2P_STACK_DIR,
default ./.stack): the PostgreSQL data folder, the bucket's saved contents, logs, process ids
and generated secrets; `up` after `down` finds the data where it was.

A real deployment points the same code at its own servers instead: P2P_POSTGRES_URL (an
existing PostgreSQL; the stack creates its databases there) and P2P_S3_ENDPOINT + AWS_* (real
S3, MinIO, Ceph RGW) replace the local PostgreSQL and moto. Clients need only the URLs
`env` prints; credentials come from the environment and never enter git.

No one in who doesn't belong: the servers bind 127.0.0.1 unless P2P_STACK_HOST says otherwise,
and on any other address (or with P2P_STACK_AUTH=true) the tracking server requires a login
(MLflow's basic-auth app; admin = MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD) and the
Prefect server an auth string (PREFECT_API_AUTH_STRING, "user:password"). PostgreSQL and the
local object store (moto, which checks no credentials) always stay on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ipaddress
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from pix2pix.checkpoint import atomic_write_text

from . import processes

SERVICES = ("postgres", "s3", "mlflow", "prefect", "workers")
DATABASES = ("mlflow", "mlflow_auth", "prefect")
ZOMBIE_AUTOMATION = "pix2pix: crash flow runs whose heartbeats stopped"
LOOPBACK = "127.0.0.1"


class StackError(RuntimeError):
    """The stack cannot do what was asked; the message says why and what to do."""


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise StackError(f"{name}={value!r} is not a whole number") from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Settings:
    """Where things run, from the environment (defaults: everything local, loopback only)."""

    dir: Path
    host: str
    auth: bool
    postgres_url: str | None  # an existing server: postgresql://user[:password]@host:port
    postgres_data: Path
    postgres_port: int
    s3_endpoint: str | None  # an existing object store
    s3_port: int
    bucket: str
    mlflow_port: int
    prefect_port: int
    workers: int
    pool: str
    heartbeat_s: int
    zombie_after_s: int

    @classmethod
    def from_env(cls, project: Path | None = None) -> "Settings":
        root = Path(os.environ.get("P2P_STACK_DIR") or (project or Path.cwd()) / ".stack").resolve()
        host = os.environ.get("P2P_STACK_HOST", LOOPBACK)
        auth_setting = os.environ.get("P2P_STACK_AUTH", "auto").lower()
        if auth_setting not in ("auto", "true", "false"):
            raise StackError(f"P2P_STACK_AUTH={auth_setting!r}: use auto, true or false")
        auth = auth_setting == "true" or not _is_loopback(host)
        if auth_setting == "false" and not _is_loopback(host):
            raise StackError(f"P2P_STACK_HOST={host} is reachable from other machines: authentication cannot be turned off there (unset P2P_STACK_AUTH)")
        heartbeat = _env_int("P2P_HEARTBEAT_SECONDS", 30)
        return cls(
            dir=root,
            host=host,
            auth=auth,
            postgres_url=os.environ.get("P2P_POSTGRES_URL") or None,
            postgres_data=Path(os.environ.get("P2P_POSTGRES_DATA") or root / "postgres").resolve(),
            postgres_port=_env_int("P2P_POSTGRES_PORT", 55432),
            s3_endpoint=os.environ.get("P2P_S3_ENDPOINT") or None,
            s3_port=_env_int("P2P_S3_PORT", 59000),
            bucket=os.environ.get("P2P_S3_BUCKET", "pix2pix"),
            mlflow_port=_env_int("P2P_MLFLOW_PORT", 5000),
            prefect_port=_env_int("P2P_PREFECT_PORT", 4200),
            workers=_env_int("P2P_STACK_WORKERS", 1),
            pool=os.environ.get("P2P_WORK_POOL", "pix2pix"),
            heartbeat_s=heartbeat,
            zombie_after_s=_env_int("P2P_ZOMBIE_SECONDS", 3 * heartbeat),
        )

    # -- addresses clients use --------------------------------------------------------------
    @property
    def client_host(self) -> str:
        return LOOPBACK if self.host in ("0.0.0.0", "::") else self.host

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.client_host}:{self.mlflow_port}"

    @property
    def prefect_api(self) -> str:
        return f"http://{self.client_host}:{self.prefect_port}/api"

    @property
    def s3_url(self) -> str:
        return self.s3_endpoint or f"http://{LOOPBACK}:{self.s3_port}"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"


# -- secrets: generated once, kept in the stack folder (mode 600), or given by the environment --
def _secrets(s: Settings) -> dict[str, str]:
    path = s.dir / "secrets.json"
    saved = json.loads(path.read_text()) if path.is_file() else {}
    wanted = {"postgres_password": 18, "s3_secret": 18, "flask_secret": 32}
    if set(wanted) - set(saved):
        saved = {"s3_key": "p2p-local", **{k: secrets.token_urlsafe(n) for k, n in wanted.items()}, **saved}
        s.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(saved))
        path.chmod(0o600)
    return saved


def s3_credentials(s: Settings) -> tuple[str, str]:
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        return key, secret
    if s.s3_endpoint:
        raise StackError(f"P2P_S3_ENDPOINT={s.s3_endpoint} needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment")
    saved = _secrets(s)
    return saved["s3_key"], saved["s3_secret"]


def auth_credentials(s: Settings) -> dict[str, str]:
    """MLflow admin login and Prefect auth string (required when auth is on)."""
    if not s.auth:
        return {}
    needed = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PREFECT_API_AUTH_STRING")
    missing = [k for k in needed if not os.environ.get(k)]
    if missing:
        raise StackError(f"authentication is on (P2P_STACK_HOST={s.host}, P2P_STACK_AUTH={os.environ.get('P2P_STACK_AUTH', 'auto')}): "
                         f"set {', '.join(missing)} in the environment (PREFECT_API_AUTH_STRING as user:password)")
    if ":" not in os.environ["PREFECT_API_AUTH_STRING"]:
        raise StackError("PREFECT_API_AUTH_STRING must look like user:password")
    return {k: os.environ[k] for k in needed}


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


def postgres_url(s: Settings, database: str, driver: str = "postgresql") -> str:
    """URL of `database`; the stack's own password travels in PGPASSWORD, not in the URL."""
    if s.postgres_url:
        base = s.postgres_url.rstrip("/")
        scheme, rest = base.split("://", 1)
        return f"{driver}://{rest}/{database}"
    return f"{driver}://p2p@{LOOPBACK}:{s.postgres_port}/{database}"


def _pg_password_env(s: Settings) -> dict[str, str]:
    return {} if s.postgres_url else {"PGPASSWORD": _secrets(s)["postgres_password"]}


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
        os.write(fd, _secrets(s)["postgres_password"].encode())
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

    env_password = _pg_password_env(s).get("PGPASSWORD")
    try:
        conn = psycopg2.connect(postgres_url(s, "postgres"), password=env_password) if env_password else psycopg2.connect(postgres_url(s, "postgres"))
    except psycopg2.OperationalError as e:
        raise StackError(f"cannot connect to PostgreSQL at {postgres_url(s, 'postgres')}: {str(e).strip().splitlines()[0]}") from None
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
        pid = processes.start([sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(s.s3_port)], log, _base_env())
        _record(s, "s3", pid, log, s.s3_url)
        processes.wait_until(lambda: processes.http_ok(f"{s.s3_url}/moto-api/"), 60, "the object store (moto)", log, pid)
        _ensure_bucket(s)
        _restore_bucket(s)
    else:
        _ensure_bucket(s)


# -- MLflow ------------------------------------------------------------------------------------
def _mlflow_env(s: Settings) -> dict[str, str]:
    key, secret = s3_credentials(s)
    env = {**_base_env(), **_pg_password_env(s), "MLFLOW_S3_ENDPOINT_URL": s.s3_url, "AWS_ACCESS_KEY_ID": key,
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
        env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", _secrets(s)["flask_secret"])
    return env


def _start_mlflow(s: Settings) -> None:
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", s.host, "--port", str(s.mlflow_port), "--workers", "2",
           "--backend-store-uri", postgres_url(s, "mlflow"), "--artifacts-destination", f"s3://{s.bucket}/mlartifacts",
           "--serve-artifacts"]
    if s.auth:
        cmd += ["--app-name", "basic-auth"]
    if not _is_loopback(s.host):
        cmd += ["--allowed-hosts", "*"]  # reachable by any name; the login keeps strangers out
    log = s.logs / "mlflow.log"
    pid = processes.start(cmd, log, _mlflow_env(s))
    _record(s, "mlflow", pid, log, s.mlflow_url)
    processes.wait_until(lambda: processes.http_ok(f"{s.mlflow_url}/health"), 240, "the MLflow tracking server", log, pid)


# -- Prefect -----------------------------------------------------------------------------------
def _prefect_server_env(s: Settings) -> dict[str, str]:
    url = postgres_url(s, "prefect", "postgresql+asyncpg")
    if not s.postgres_url:  # asyncpg takes the password in the URL; it stays in this environment, off the command line
        url = url.replace("p2p@", f"p2p:{_secrets(s)['postgres_password']}@", 1)
    env = {**_base_env(), "PREFECT_HOME": str(s.dir / "prefect-server"), "PREFECT_API_DATABASE_CONNECTION_URL": url}
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
    _record(s, "prefect", pid, log, s.prefect_api)
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
    return {**_base_env(), **client_env(s), "PREFECT_HOME": str(s.dir / "prefect-worker"),
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(s.heartbeat_s)}


def _start_workers(s: Settings) -> None:
    state = _read_state(s)
    for i in range(1, s.workers + 1):
        name = f"worker-{i}"
        if processes.alive(state.get(name, {}).get("pid")):
            continue
        log = s.logs / f"{name}.log"
        pid = processes.start([sys.executable, "-m", "prefect", "worker", "start", "--pool", s.pool, "--type", "process",
                               "--name", f"{socket.gethostname()}-{name}"], log, worker_env(s), cwd=s.dir)
        _record(s, name, pid, log, s.pool)
    for i in range(1, s.workers + 1):
        name = f"worker-{i}"
        entry = _read_state(s)[name]
        log = Path(entry["log"])
        processes.wait_until(lambda: log.is_file() and "started!" in log.read_text(errors="replace"), 120, name, log, entry["pid"])


# -- state and the environment ----------------------------------------------------------------
def _base_env() -> dict[str, str]:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DVC_NO_ANALYTICS": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def client_env(s: Settings) -> dict[str, str]:
    """What a client machine sets to use this stack (credentials included when auth is on)."""
    key, secret = s3_credentials(s)
    env = {"MLFLOW_TRACKING_URI": s.mlflow_url, "PREFECT_API_URL": s.prefect_api, "P2P_S3_ENDPOINT": s.s3_url,
           "P2P_S3_BUCKET": s.bucket, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}
    env.update(auth_credentials(s))
    return env


def _read_state(s: Settings) -> dict:
    path = s.dir / "state.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _record(s: Settings, name: str, pid: int | None, log: Path, url: str) -> None:
    state = _read_state(s)
    if pid is None:
        state.pop(name, None)
    else:
        state[name] = {"pid": pid, "log": str(log), "url": url}
    s.dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(s.dir / "state.json", json.dumps(state, indent=2))


def _stop_recorded(s: Settings, name: str) -> None:
    entry = _read_state(s).get(name)
    if entry:
        processes.stop_group(entry["pid"])
        _record(s, name, None, Path(), "")


def _worker_names(s: Settings) -> list[str]:
    return sorted(k for k in _read_state(s) if k.startswith("worker-"))


def service_status(s: Settings) -> dict[str, str]:
    state = _read_state(s)
    out: dict[str, str] = {}
    if s.postgres_url:
        out["postgres"] = f"external {postgres_url(s, '')}"
    else:
        out["postgres"] = f"up 127.0.0.1:{s.postgres_port} ({s.postgres_data})" if _postgres_running(s) else "down"
    if s.s3_endpoint:
        out["s3"] = f"external {s.s3_endpoint}"
    else:
        up = processes.alive(state.get("s3", {}).get("pid")) and processes.http_ok(f"{s.s3_url}/moto-api/")
        out["s3"] = f"up {s.s3_url} bucket {s.bucket}" if up else "down"
    up = processes.alive(state.get("mlflow", {}).get("pid")) and processes.http_ok(f"{s.mlflow_url}/health")
    out["mlflow"] = f"up {s.mlflow_url}" + (" (login required)" if s.auth else "") if up else "down"
    up = processes.alive(state.get("prefect", {}).get("pid")) and processes.http_ok(f"{s.prefect_api}/health", _auth_header(s))
    out["prefect"] = f"up {s.prefect_api}" + (" (auth string required)" if s.auth else "") if up else "down"
    names = _worker_names(s)
    running = [n for n in names if processes.alive(state[n]["pid"])]
    out["workers"] = f"up {len(running)}/{s.workers} on pool {s.pool}" if running and len(running) >= s.workers else (
        f"down ({len(running)}/{s.workers} running)" if s.workers else "none configured")
    return out


STARTERS = {"postgres": _start_postgres, "s3": _start_s3, "mlflow": _start_mlflow, "prefect": _start_prefect, "workers": _start_workers}


def up(s: Settings, services: list[str] | None = None) -> dict[str, str]:
    """Start the named services (all by default) that are not running, in dependency order."""
    auth_credentials(s)  # refuse early, before anything starts, when credentials are missing
    wanted = services or list(SERVICES)
    for name in SERVICES:
        if name in wanted and not service_status(s)[name].startswith(("up", "external")):
            if name != "workers":
                _stop_recorded(s, name)  # a dead or unhealthy one: clear it first
            try:
                STARTERS[name](s)
            except (StackError, RuntimeError) as e:
                raise StackError(f"{name}: {e}") from None
    return service_status(s)


def down(s: Settings, services: list[str] | None = None) -> dict[str, str]:
    """Stop the named services (all by default), dependents first; the bucket is saved first."""
    wanted = services or list(SERVICES)
    for name in reversed(SERVICES):
        if name not in wanted:
            continue
        if name == "workers":
            for worker in _worker_names(s):
                _stop_recorded(s, worker)
        elif name == "postgres":
            _stop_postgres(s)
        else:
            if name == "s3" and not s.s3_endpoint and service_status(s)["s3"].startswith("up"):
                _save_bucket(s)
            _stop_recorded(s, name)
    return service_status(s)


def connect(s: Settings, project: Path, remote: str = "team") -> str:
    """Make s3://<bucket>/dvcstore the workspace's default DVC remote. Everything is written
    with --local (.dvc/config.local, which git ignores): endpoint and keys never reach git."""
    key, secret = s3_credentials(s)
    url = f"s3://{s.bucket}/dvcstore"
    for args in (["remote", "add", "--local", "--force", "--default", remote, url],
                 ["remote", "modify", "--local", remote, "endpointurl", s.s3_url],
                 ["remote", "modify", "--local", remote, "access_key_id", key],
                 ["remote", "modify", "--local", remote, "secret_access_key", secret]):
        r = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=project, env=_base_env(), capture_output=True, text=True)
        if r.returncode != 0:
            raise StackError(f"dvc {' '.join(args[:3])} in {project} failed: {(r.stderr or r.stdout).strip().splitlines()[-1]}")
    return url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.stack", description="the team stack on this machine (see module docs)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("up", "start services that are not running"), ("down", "stop services")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("services", nargs="*", metavar="SERVICE", help=f"any of {', '.join(SERVICES)} (default: all)")
    sub.add_parser("status", help="one line per service; exit status 1 if any is down")
    sub.add_parser("env", help="client settings as shell `export` lines:  eval \"$(python -m pipeline.stack env)\"")
    c = sub.add_parser("connect", help="use the stack's bucket as this workspace's DVC remote (written with --local)")
    c.add_argument("--project", default=".", help="the workspace (default: current folder)")
    args = parser.parse_args(argv)
    unknown = [name for name in getattr(args, "services", []) if name not in SERVICES]
    if unknown:
        parser.error(f"unknown service {', '.join(unknown)}: choose from {', '.join(SERVICES)}")
    try:
        s = Settings.from_env()
        if args.command == "env":
            import shlex

            for key, value in client_env(s).items():
                print(f"export {key}={shlex.quote(value)}")
            return 0
        if args.command == "connect":
            print(f"DVC remote 'team' = {connect(s, Path(args.project).resolve())} at {s.s3_url} (in .dvc/config.local)")
            return 0
        status = up(s, args.services) if args.command == "up" else down(s, args.services) if args.command == "down" else service_status(s)
    except StackError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for name, line in status.items():
        print(f"{name:9s}{line}")
    if args.command == "status":
        return 0 if all(v.startswith(("up", "external")) or v == "none configured" for v in status.values()) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
