"""The environment the operations hand to the tools they start (dvc, prefect, mlflow, moto):
this one, with this interpreter's folder first on PATH (so stages run with our `python`) and
the tools' telemetry off."""

from __future__ import annotations

import os
import sys
from pathlib import Path

QUIET = {"MLFLOW_DISABLE_TELEMETRY": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DVC_NO_ANALYTICS": "1"}


def tool_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **QUIET, **extra}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return env
