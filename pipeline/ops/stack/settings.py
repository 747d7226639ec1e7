"""Where the team stack runs, from the environment: the settings, the generated secrets, the
credentials, the URLs clients use, and the record of the processes it started (state.json)."""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from pix2pix.errors import Pix2PixError
from pix2pix.files import atomic_write_text

from .. import processes

LOOPBACK = "127.0.0.1"


class StackError(Pix2PixError, RuntimeError):
    """The stack cannot do what was asked; the message says why and what to do."""


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise StackError(f"{name}={value!r} is not a whole number") from None


def is_loopback(host: str) -> bool:
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
    auth_cache_s: int  # MLflow keeps a checked login this long (0 = check every request)

    @classmethod
    def from_env(cls, project: Path | None = None) -> Settings:
        root = Path(os.environ.get("P2P_STACK_DIR") or (project or Path.cwd()) / ".stack").resolve()
        host = os.environ.get("P2P_STACK_HOST", LOOPBACK)
        auth_setting = os.environ.get("P2P_STACK_AUTH", "auto").lower()
        if auth_setting not in ("auto", "true", "false"):
            raise StackError(f"P2P_STACK_AUTH={auth_setting!r}: use auto, true or false")
        auth = auth_setting == "true" or not is_loopback(host)
        if auth_setting == "false" and not is_loopback(host):
            raise StackError(
                f"P2P_STACK_HOST={host} is reachable from other machines: authentication cannot be turned off "
                "there (unset P2P_STACK_AUTH)"
            )
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
            auth_cache_s=_env_int("P2P_MLFLOW_AUTH_CACHE_SECONDS", 60),
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
def secrets_of(s: Settings) -> dict[str, str]:
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
        raise StackError(
            f"P2P_S3_ENDPOINT={s.s3_endpoint} needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment"
        )
    saved = secrets_of(s)
    return saved["s3_key"], saved["s3_secret"]


def auth_credentials(s: Settings) -> dict[str, str]:
    """MLflow admin login and Prefect auth string (required when auth is on)."""
    if not s.auth:
        return {}
    needed = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PREFECT_API_AUTH_STRING")
    missing = [k for k in needed if not os.environ.get(k)]
    if missing:
        raise StackError(
            f"authentication is on (P2P_STACK_HOST={s.host}, "
            f"P2P_STACK_AUTH={os.environ.get('P2P_STACK_AUTH', 'auto')}): "
            f"set {', '.join(missing)} in the environment (PREFECT_API_AUTH_STRING as user:password)"
        )
    if ":" not in os.environ["PREFECT_API_AUTH_STRING"]:
        raise StackError("PREFECT_API_AUTH_STRING must look like user:password")
    return {k: os.environ[k] for k in needed}


def postgres_url(s: Settings, database: str, driver: str = "postgresql") -> str:
    """URL of `database`; the stack's own password travels in PGPASSWORD, not in the URL."""
    if s.postgres_url:
        base = s.postgres_url.rstrip("/")
        scheme, rest = base.split("://", 1)
        return f"{driver}://{rest}/{database}"
    return f"{driver}://p2p@{LOOPBACK}:{s.postgres_port}/{database}"


def pg_password_env(s: Settings) -> dict[str, str]:
    return {} if s.postgres_url else {"PGPASSWORD": secrets_of(s)["postgres_password"]}


def client_env(s: Settings) -> dict[str, str]:
    """What a client machine sets to use this stack (credentials included when auth is on)."""
    key, secret = s3_credentials(s)
    env = {
        "MLFLOW_TRACKING_URI": s.mlflow_url,
        "PREFECT_API_URL": s.prefect_api,
        "P2P_S3_ENDPOINT": s.s3_url,
        "P2P_S3_BUCKET": s.bucket,
        "AWS_ACCESS_KEY_ID": key,
        "AWS_SECRET_ACCESS_KEY": secret,
    }
    env.update(auth_credentials(s))
    return env


# -- what the stack started: one entry per process, in state.json ------------------------------
def read_state(s: Settings) -> dict:
    path = s.dir / "state.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def record(s: Settings, name: str, pid: int | None, log: Path, url: str) -> None:
    state = read_state(s)
    if pid is None:
        state.pop(name, None)
    else:
        state[name] = {"pid": pid, "log": str(log), "url": url}
    s.dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(s.dir / "state.json", json.dumps(state, indent=2))


def stop_recorded(s: Settings, name: str) -> None:
    entry = read_state(s).get(name)
    if entry:
        processes.stop_group(entry["pid"])
        record(s, name, None, Path(), "")


def worker_names(s: Settings) -> list[str]:
    return sorted(k for k in read_state(s) if k.startswith("worker-"))
