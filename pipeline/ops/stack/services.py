"""The team stack's services, one record each: how it starts and stops, how its health is
read, and what it needs running first. Adding a service is adding one record to SERVICES."""

from __future__ import annotations

import asyncio
import base64
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from pix2pix.files import atomic_write_text

from .. import processes
from ..env import tool_env
from .settings import (
    Settings,
    auth_credentials,
    client_env,
    is_loopback,
    pg_password_env,
    postgres_url,
    read_state,
    record,
    s3_credentials,
    secrets_of,
    stop_recorded,
    worker_names,
)
from .storage import postgres_status, process_up, s3_status, start_postgres, start_s3, stop_postgres, stop_s3

ZOMBIE_AUTOMATION = "pix2pix: crash flow runs whose heartbeats stopped"


# -- MLflow ------------------------------------------------------------------------------------
def _mlflow_env(s: Settings) -> dict[str, str]:
    key, secret = s3_credentials(s)
    env = {
        **tool_env(),
        **pg_password_env(s),
        "MLFLOW_S3_ENDPOINT_URL": s.s3_url,
        "AWS_ACCESS_KEY_ID": key,
        "AWS_SECRET_ACCESS_KEY": secret,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    # Each request takes a database connection (the login check too): SQLAlchemy's default pool
    # (5 + 10 overflow) ran dry with 20 clients downloading models at once. Per server worker.
    env.setdefault("MLFLOW_SQLALCHEMYSTORE_POOL_SIZE", "20")
    env.setdefault("MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW", "30")
    if s.auth:
        creds = auth_credentials(s)
        ini = s.dir / "mlflow-auth.ini"
        atomic_write_text(
            ini,
            "[mlflow]\ndefault_permission = READ\n"
            f"database_uri = {postgres_url(s, 'mlflow_auth')}\n"
            f"admin_username = {creds['MLFLOW_TRACKING_USERNAME']}\n"
            f"admin_password = {creds['MLFLOW_TRACKING_PASSWORD']}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            # Each login check is a deliberately slow password hash (scrypt, ~0.15 s of CPU): without
            # the cache every request pays it. A changed password may pass until the entry expires.
            f"auth_cache_ttl_seconds = {s.auth_cache_s}\n",
        )
        ini.chmod(0o600)
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(ini)
        # CSRF protection of the login app; one stable key, or sessions break across restarts.
        env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", secrets_of(s)["flask_secret"])
    return env


def _start_mlflow(s: Settings) -> None:
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        s.host,
        "--port",
        str(s.mlflow_port),
        "--workers",
        "2",
        "--backend-store-uri",
        postgres_url(s, "mlflow"),
        "--artifacts-destination",
        f"s3://{s.bucket}/mlartifacts",
        "--serve-artifacts",
    ]
    if s.auth:
        cmd += ["--app-name", "basic-auth"]
    if not is_loopback(s.host):
        cmd += ["--allowed-hosts", "*"]  # reachable by any name; the login keeps strangers out
    log = s.logs / "mlflow.log"
    pid = processes.start(cmd, log, _mlflow_env(s))
    record(s, "mlflow", pid, log, s.mlflow_url)
    processes.wait_until(
        lambda: processes.http_ok(f"{s.mlflow_url}/health"), 240, "the MLflow tracking server", log, pid
    )


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
    pid = processes.start(
        [sys.executable, "-m", "prefect", "server", "start", "--host", s.host, "--port", str(s.prefect_port)],
        log,
        _prefect_server_env(s),
    )
    record(s, "prefect", pid, log, s.prefect_api)
    processes.wait_until(
        lambda: processes.http_ok(f"{s.prefect_api}/health", _auth_header(s)), 240, "the Prefect server", log, pid
    )
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
            await client.create_automation(
                AutomationCore(
                    name=ZOMBIE_AUTOMATION,
                    trigger=EventTrigger(
                        match={"prefect.resource.id": "prefect.flow-run.*"},
                        after={"prefect.flow-run.heartbeat"},
                        expect={
                            "prefect.flow-run.heartbeat",
                            "prefect.flow-run.Completed",
                            "prefect.flow-run.Failed",
                            "prefect.flow-run.Cancelled",
                            "prefect.flow-run.Crashed",
                        },
                        for_each={"prefect.resource.id"},
                        posture=Posture.Proactive,
                        threshold=1,
                        within=timedelta(seconds=s.zombie_after_s),
                    ),
                    actions=[
                        ChangeFlowRunState(
                            state="CRASHED",
                            message=f"no heartbeat for {s.zombie_after_s} s: its worker or machine stopped",
                        )
                    ],
                )
            )


def worker_env(s: Settings) -> dict[str, str]:
    return {
        **tool_env(),
        **client_env(s),
        "PREFECT_HOME": str(s.dir / "prefect-worker"),
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(s.heartbeat_s),
    }


def _start_workers(s: Settings) -> None:
    state = read_state(s)
    for i in range(1, s.workers + 1):
        name = f"worker-{i}"
        if processes.alive(state.get(name, {}).get("pid")):
            continue
        log = s.logs / f"{name}.log"
        pid = processes.start(
            [
                sys.executable,
                "-m",
                "prefect",
                "worker",
                "start",
                "--pool",
                s.pool,
                "--type",
                "process",
                "--name",
                f"{socket.gethostname()}-{name}",
            ],
            log,
            worker_env(s),
            cwd=s.dir,
        )
        record(s, name, pid, log, s.pool)
    for i in range(1, s.workers + 1):
        name = f"worker-{i}"
        entry = read_state(s)[name]
        log = Path(entry["log"])
        processes.wait_until(
            lambda log=log: log.is_file() and "started!" in log.read_text(errors="replace"),
            120,
            name,
            log,
            entry["pid"],
        )


def _stop_workers(s: Settings) -> None:
    for name in worker_names(s):
        stop_recorded(s, name)


# -- health ------------------------------------------------------------------------------------


def _mlflow_status(s: Settings) -> str:
    up = process_up(s, "mlflow", f"{s.mlflow_url}/health")
    return f"up {s.mlflow_url}" + (" (login required)" if s.auth else "") if up else "down"


def _prefect_status(s: Settings) -> str:
    up = process_up(s, "prefect", f"{s.prefect_api}/health", _auth_header(s))
    return f"up {s.prefect_api}" + (" (auth string required)" if s.auth else "") if up else "down"


def _workers_status(s: Settings) -> str:
    state = read_state(s)
    running = [n for n in worker_names(s) if processes.alive(state[n]["pid"])]
    if not s.workers:
        return "none configured"
    return (
        f"up {len(running)}/{s.workers} on pool {s.pool}"
        if len(running) >= s.workers
        else f"down ({len(running)}/{s.workers} running)"
    )


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
    Service("postgres", start_postgres, stop_postgres, postgres_status),
    Service("s3", start_s3, stop_s3, s3_status),
    Service("mlflow", _start_mlflow, lambda s: stop_recorded(s, "mlflow"), _mlflow_status, needs=("postgres", "s3")),
    Service("prefect", _start_prefect, lambda s: stop_recorded(s, "prefect"), _prefect_status, needs=("postgres",)),
    # Workers start one by one and keep the ones that run: nothing to clear first.
    Service("workers", _start_workers, _stop_workers, _workers_status, needs=("prefect",), restartable=False),
)
BY_NAME = {service.name: service for service in SERVICES}
