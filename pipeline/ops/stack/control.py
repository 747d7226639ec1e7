"""The stack's commands (python -m pipeline.ops.stack): up, down, status, env and connect, one
loop over the service records of services.py."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from ..env import tool_env, tool_error
from .services import BY_NAME, SERVICES
from .settings import Settings, StackError, auth_credentials, client_env, s3_credentials


def status(s: Settings) -> dict[str, str]:
    return {service.name: service.status(s) for service in SERVICES}


def up(s: Settings, services: list[str] | None = None) -> dict[str, str]:
    """Start the named services (all by default) and what they need, in dependency order,
    skipping those already running."""
    auth_credentials(s)  # refuse early, before anything starts, when credentials are missing
    wanted = set(services or BY_NAME)
    for service in reversed(SERVICES):  # a service's needs come before it in SERVICES
        if service.name in wanted:
            wanted.update(service.needs)
    for service in SERVICES:
        if service.name not in wanted or service.running(s):
            continue
        try:
            if service.restartable:
                service.stop(s)  # a dead or unhealthy one: clear it first
            service.start(s)
        except (StackError, RuntimeError) as e:
            raise StackError(f"{service.name}: {e}") from None
    return status(s)


def down(s: Settings, services: list[str] | None = None) -> dict[str, str]:
    """Stop the named services (all by default), dependents first."""
    wanted = set(services or BY_NAME)
    for service in reversed(SERVICES):
        if service.name in wanted:
            service.stop(s)
    return status(s)


def connect_dvc_remote(s: Settings, project: Path, remote: str = "team") -> str:
    """Make s3://<bucket>/dvcstore the workspace's default DVC remote. Everything is written
    with --local (.dvc/config.local, which git ignores): endpoint and keys never reach git.
    `--` before the values: a key may begin with "-" (token_urlsafe makes one in 64 so)."""
    key, secret = s3_credentials(s)
    url = f"s3://{s.bucket}/dvcstore"
    for args in (
        ["remote", "add", "--local", "--force", "--default", "--", remote, url],
        ["remote", "modify", "--local", "--", remote, "endpointurl", s.s3_url],
        ["remote", "modify", "--local", "--", remote, "access_key_id", key],
        ["remote", "modify", "--local", "--", remote, "secret_access_key", secret],
    ):
        r = subprocess.run(
            [sys.executable, "-m", "dvc", *args], cwd=project, env=tool_env(), capture_output=True, text=True
        )
        if r.returncode != 0:
            raise StackError(f"dvc {' '.join(args[:3])} in {project} failed: {tool_error(r.stderr + r.stdout)}")
    return url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.ops.stack", description="the team stack on this machine (see module docs)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("up", "start services that are not running"), ("down", "stop services")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("services", nargs="*", metavar="SERVICE", help=f"any of {', '.join(BY_NAME)} (default: all)")
    sub.add_parser("status", help="one line per service; exit status 1 if any is down")
    sub.add_parser("env", help='client settings as shell `export` lines:  eval "$(python -m pipeline.ops.stack env)"')
    c = sub.add_parser("connect", help="use the stack's bucket as this workspace's DVC remote (written with --local)")
    c.add_argument("--project", default=".", help="the workspace (default: current folder)")
    args = parser.parse_args(argv)
    unknown = [name for name in getattr(args, "services", []) if name not in BY_NAME]
    if unknown:
        parser.error(f"unknown service {', '.join(unknown)}: choose from {', '.join(BY_NAME)}")
    try:
        s = Settings.from_env()
        if args.command == "env":
            import shlex

            for key, value in client_env(s).items():
                print(f"export {key}={shlex.quote(value)}")
            return 0
        if args.command == "connect":
            print(
                f"DVC remote 'team' = {connect_dvc_remote(s, Path(args.project).resolve())} at {s.s3_url} (in "
                ".dvc/config.local)"
            )
            return 0
        lines = (
            up(s, args.services)
            if args.command == "up"
            else down(s, args.services)
            if args.command == "down"
            else status(s)
        )
    except StackError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for name, line in lines.items():
        print(f"{name:9s}{line}")
    if args.command == "status":
        return 0 if all(v.startswith(("up", "external")) or v == "none configured" for v in lines.values()) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
