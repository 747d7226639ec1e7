"""Where the pipeline keeps things. DVC runs stages from the project root, so the paths are
relative to the working directory; `P2P_PARAMS` points at another params file (tests use it)."""

from __future__ import annotations

import os
import sys
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


def kept_checkpoint(keep: str) -> Path:
    """The checkpoint evaluate and export use (`evaluate.keep`): best.pt for `best` when training
    wrote one, else last.pt (and, for `best`, it says why)."""
    best, last = CHECKPOINTS / "best.pt", CHECKPOINTS / "last.pt"
    if keep == "best":
        if best.is_file():
            return best
        print(f"evaluate.keep: best, but {best} is missing (no validation split): using {last}", file=sys.stderr)
    return last


def params_path() -> Path:
    return Path(os.environ.get("P2P_PARAMS", "params.yaml"))
