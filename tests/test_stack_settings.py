"""The team stack's settings and its refusals, without starting anything."""

import subprocess
import sys

import pytest

from pipeline.ops.stack.settings import Settings, StackError, auth_credentials, client_env, postgres_url

from conftest import tool_env

CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PREFECT_API_AUTH_STRING")


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for key in (
        *CREDENTIALS,
        "P2P_STACK_HOST",
        "P2P_STACK_AUTH",
        "P2P_POSTGRES_URL",
        "P2P_S3_ENDPOINT",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("P2P_STACK_DIR", str(tmp_path / "stack"))
    return monkeypatch


def test_loopback_by_default_without_login(clean_env):
    s = Settings.from_env()
    assert s.host == "127.0.0.1" and not s.auth
    env = client_env(s)
    assert (
        env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000" and env["PREFECT_API_URL"] == "http://127.0.0.1:4200/api"
    )
    assert not set(CREDENTIALS) & set(env)
    assert postgres_url(s, "mlflow") == "postgresql://p2p@127.0.0.1:55432/mlflow"  # the password travels in PGPASSWORD


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "pix2pix.example.org"])
def test_any_other_address_requires_credentials(clean_env, host):
    clean_env.setenv("P2P_STACK_HOST", host)
    s = Settings.from_env()
    assert s.auth
    with pytest.raises(StackError, match="MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD, PREFECT_API_AUTH_STRING"):
        auth_credentials(s)
    clean_env.setenv("P2P_STACK_AUTH", "false")
    with pytest.raises(StackError, match="authentication cannot be turned off"):
        Settings.from_env()
    clean_env.delenv("P2P_STACK_AUTH")
    for key, value in zip(CREDENTIALS, ("admin", "s3cret-s3cret", "admin-no-colon"), strict=True):
        clean_env.setenv(key, value)
    with pytest.raises(StackError, match="user:password"):
        auth_credentials(s)
    clean_env.setenv("PREFECT_API_AUTH_STRING", "admin:s3cret-s3cret")
    assert client_env(s)["PREFECT_API_AUTH_STRING"] == "admin:s3cret-s3cret"


def test_external_servers_replace_the_local_ones(clean_env):
    clean_env.setenv("P2P_POSTGRES_URL", "postgresql://team:pw@db.internal:5432")
    clean_env.setenv("P2P_S3_ENDPOINT", "https://minio.internal:9000")
    s = Settings.from_env()
    assert postgres_url(s, "prefect", "postgresql+asyncpg") == "postgresql+asyncpg://team:pw@db.internal:5432/prefect"
    with pytest.raises(StackError, match="needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        client_env(s)
    clean_env.setenv("AWS_ACCESS_KEY_ID", "k")
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", "v")
    assert client_env(s)["P2P_S3_ENDPOINT"] == "https://minio.internal:9000"


def test_up_refuses_before_starting_anything(tmp_path):
    env = tool_env(P2P_STACK_DIR=str(tmp_path / "stack"), P2P_STACK_HOST="0.0.0.0")
    for key in CREDENTIALS:
        env.pop(key, None)
    r = subprocess.run(
        [sys.executable, "-m", "pipeline.ops.stack", "up"], env=env, capture_output=True, text=True, timeout=60
    )
    assert (
        r.returncode == 1
        and r.stderr.startswith("error: authentication is on (P2P_STACK_HOST=0.0.0.0")
        and len(r.stderr.splitlines()) == 1
    )
    assert not (tmp_path / "stack" / "state.json").exists()


def test_a_secret_that_begins_with_a_dash_reaches_the_dvc_remote(clean_env, tmp_path):
    """token_urlsafe begins one secret in 64 with "-", which dvc's argument parser took for an
    option (a CI run's three fault tests failed on it); the values now follow `--`."""
    from pipeline.ops.stack.control import connect_dvc_remote

    clean_env.setenv("P2P_S3_ENDPOINT", "http://127.0.0.1:9")
    clean_env.setenv("AWS_ACCESS_KEY_ID", "-key")
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", "-AQLOePEgtSg-CVE4")
    project = tmp_path / "ws"
    project.mkdir()
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=project, check=True, env=tool_env(), capture_output=True)
    assert connect_dvc_remote(Settings.from_env(), project) == "s3://pix2pix/dvcstore"
    local = (project / ".dvc" / "config.local").read_text()
    assert "secret_access_key = -AQLOePEgtSg-CVE4" in local and "access_key_id = -key" in local
