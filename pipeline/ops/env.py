"""The tools the operations start (dvc, git, prefect, mlflow, moto, PostgreSQL): the environment
they get - this one, with this interpreter's folder first on PATH (so stages run with our
`python`) and the tools' telemetry off - and the line of their output a one-line error quotes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

QUIET = {"MLFLOW_DISABLE_TELEMETRY": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DVC_NO_ANALYTICS": "1"}


def tool_error(output: str) -> str:
    """What a failed tool said: its last ERROR line (dvc), else its last line."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR")] or lines or ["no output"]
    return errors[-1].removeprefix("ERROR:").strip()[:400]


def tool_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **QUIET, **extra}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return env
