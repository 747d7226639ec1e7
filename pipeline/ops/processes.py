"""Long-running server processes for the team stack: each in its own process group (servers
such as uvicorn and Prefect workers start children), its output in a log file, stopped as a
group so nothing is left behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path


def start(cmd: list[str], log: Path, env: dict[str, str], cwd: Path | None = None) -> int:
    """Start `cmd` detached in a new session (its own process group); returns its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    return proc.pid


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of this process counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop_group(pgid: int | None, timeout: float = 30) -> None:
    """SIGTERM the whole group, SIGKILL what is left after `timeout` seconds."""
    if not pgid:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.time() + wait
        while time.time() < deadline:
            _reap(pgid)
            if not group_alive(pgid):
                return
            time.sleep(0.2)


def _reap(pid: int) -> None:
    try:  # our own child: collect its exit status, or it stays a zombie
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def http_ok(url: str, headers: dict[str, str] | None = None, timeout: float = 3) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as r:
            return 200 <= r.status < 300
    except OSError:  # refused, timed out, or an HTTP error status (HTTPError is an OSError)
        return False


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, log: Path | None = None, pid: int | None = None
) -> None:
    """Poll `check`; fail with the log's last line when it does not pass in time or `pid` exits."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        if pid is not None and not alive(pid):
            raise RuntimeError(f"{what} exited during start-up{last_line(log)}")
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not become ready in {timeout:.0f} s{last_line(log)}")


def last_line(log: Path | None) -> str:
    if log is None or not log.is_file():
        return ""
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return f" (see {log}: {lines[-1].strip()[:300]})" if lines else f" (see {log})"
