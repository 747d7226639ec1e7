"""The team stack's storage: PostgreSQL (MLflow's and Prefect's databases) and the S3-compatible
object store (MLflow's artifacts, the DVC remote): starting, stopping and health of each."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pix2pix.errors import first_line

from .. import processes
from ..env import tool_env, tool_error
from .settings import (
    LOOPBACK,
    Settings,
    StackError,
    pg_password_env,
    postgres_url,
    read_state,
    record,
    s3_credentials,
    secrets_of,
    stop_recorded,
)

DATABASES = ("mlflow", "mlflow_auth", "prefect")


# -- PostgreSQL --------------------------------------------------------------------------------
def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    raise StackError(
        f"PostgreSQL's {name} was not found: install the server (Debian: apt-get install postgresql) or set "
        "P2P_POSTGRES_URL to an existing server"
    )


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
            raise StackError(
                f"PostgreSQL runs as user postgres, which cannot reach {data}: set P2P_POSTGRES_DATA to a "
                "folder it can reach"
            )


def _postgres_running(s: Settings) -> bool:
    if s.postgres_url:
        return True
    pidfile = s.postgres_data / "postmaster.pid"
    return (
        pidfile.is_file()
        and processes.alive(int(pidfile.read_text().split()[0]))
        and processes.port_open(LOOPBACK, s.postgres_port)
    )


def start_postgres(s: Settings) -> None:
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
        r = subprocess.run(
            _as_postgres_user(
                [
                    _pg_bin("initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "p2p",
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "-E",
                    "UTF8",
                ]
            ),
            capture_output=True,
            text=True,
        )
        pwfile.unlink(missing_ok=True)
        if r.returncode != 0:
            raise StackError(f"initdb {data} failed: {tool_error(r.stderr + r.stdout)}")
    # Room for both MLflow workers' pools (tracking and login stores) and Prefect's.
    options = (
        f"-c listen_addresses={LOOPBACK} -p {s.postgres_port} -c unix_socket_directories='' -c max_connections=300"
    )
    r = subprocess.run(
        _as_postgres_user(
            [
                _pg_bin("pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(data / "server.log"),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ]
        ),
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise StackError(f"PostgreSQL did not start: {tool_error(r.stderr + r.stdout)} (log: {data / 'server.log'})")
    _create_databases(s)


def _create_databases(s: Settings) -> None:
    import psycopg2

    env_password = pg_password_env(s).get("PGPASSWORD")
    try:
        conn = (
            psycopg2.connect(postgres_url(s, "postgres"), password=env_password)
            if env_password
            else psycopg2.connect(postgres_url(s, "postgres"))
        )
    except psycopg2.OperationalError as e:
        raise StackError(f"cannot connect to PostgreSQL at {postgres_url(s, 'postgres')}: {first_line(e)}") from None
    conn.autocommit = True
    with conn.cursor() as cur:
        for name in DATABASES:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()


def stop_postgres(s: Settings) -> None:
    if s.postgres_url or not (s.postgres_data / "postmaster.pid").is_file():
        return
    subprocess.run(
        _as_postgres_user([_pg_bin("pg_ctl"), "-D", str(s.postgres_data), "-m", "fast", "-w", "stop"]),
        capture_output=True,
    )


# -- the object store --------------------------------------------------------------------------
def s3_client(s: Settings):
    import boto3

    key, secret = s3_credentials(s)
    return boto3.client(
        "s3",
        endpoint_url=s.s3_url,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    )


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


def start_s3(s: Settings) -> None:
    if not s.s3_endpoint:
        log = s.logs / "s3.log"
        pid = processes.start(
            [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(s.s3_port)], log, tool_env()
        )
        record(s, "s3", pid, log, s.s3_url)
        processes.wait_until(
            lambda: processes.http_ok(f"{s.s3_url}/moto-api/"), 60, "the object store (moto)", log, pid
        )
        _ensure_bucket(s)
        _restore_bucket(s)
    else:
        _ensure_bucket(s)


def stop_s3(s: Settings) -> None:
    if not s.s3_endpoint and s3_status(s).startswith("up"):
        _save_bucket(s)  # moto keeps the bucket in memory
    stop_recorded(s, "s3")


# -- health ------------------------------------------------------------------------------------
def process_up(s: Settings, name: str, health_url: str, headers: dict[str, str] | None = None) -> bool:
    return processes.alive(read_state(s).get(name, {}).get("pid")) and processes.http_ok(health_url, headers)


def postgres_status(s: Settings) -> str:
    if s.postgres_url:
        return f"external {postgres_url(s, '')}"
    return f"up 127.0.0.1:{s.postgres_port} ({s.postgres_data})" if _postgres_running(s) else "down"


def s3_status(s: Settings) -> str:
    if s.s3_endpoint:
        return f"external {s.s3_endpoint}"
    return f"up {s.s3_url} bucket {s.bucket}" if process_up(s, "s3", f"{s.s3_url}/moto-api/") else "down"
