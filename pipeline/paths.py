"""Where the pipeline keeps things. DVC runs stages from the project root, so the paths are
relative to the working directory; `P2P_PARAMS` points at another params file (tests use it)."""

from __future__ import annotations

import os
from pathlib import Path

RAW = Path("data/raw")
PAIRS = Path("data/pairs")
MANIFEST = PAIRS / "manifest.csv"
REJECTED = PAIRS / "rejected.csv"
CHECKPOINTS = Path("models/checkpoints")
EXPORT = Path("models/export")
MODEL_CARD = EXPORT / "model_card.json"
METRICS = Path("metrics")
REPORTS = Path("reports")
EVAL_JSON = METRICS / "eval.json"


def params_path() -> Path:
    return Path(os.environ.get("P2P_PARAMS", "params.yaml"))
