"""One place that reads params.yaml and the project's paths.

DVC runs every stage from the project root, so paths are relative to the working directory.
`P2P_PARAMS` points at another params file (tests use it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml

from pix2pix.config import Config, ConfigError, DataConfig, ModelConfig, TrainConfig, section_from_dict

from .presets import PresetError, apply

# Keys of the `data` section that belong to the pipeline (where data comes from), not to
# the pix2pix DataConfig (how images are fed to the network).
PIPELINE_DATA_KEYS = ("source", "synthetic", "split", "pairs")

RAW = Path("data/raw")
PAIRS = Path("data/pairs")
MANIFEST = PAIRS / "manifest.csv"
REJECTED = PAIRS / "rejected.csv"
CHECKPOINTS = Path("models/checkpoints")
EXPORT = Path("models/export")
METRICS = Path("metrics")
REPORTS = Path("reports")


def params_path() -> Path:
    return Path(os.environ.get("P2P_PARAMS", "params.yaml"))


def load_params(path: Path | None = None) -> dict[str, Any]:
    path = path or params_path()
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found; run from the project root or set P2P_PARAMS")
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected sections such as data:, model:, train:")
    try:  # `preset: facades` replaces the keys that preset sets (pipeline/presets.py)
        return apply(params)
    except PresetError as e:
        raise ConfigError(f"{path}: {e}") from None


def section(params: dict[str, Any], name: str) -> dict[str, Any]:
    value = params.get(name) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{name}: expected a mapping of keys, got {value!r}")
    return value


def pix2pix_config(params: dict[str, Any]) -> Config:
    """The library config from the data/model/train sections (pipeline keys left out)."""
    return Config(
        data=section_from_dict(DataConfig, section(params, "data"), "data", ignore=PIPELINE_DATA_KEYS),
        model=section_from_dict(ModelConfig, section(params, "model"), "model"),
        train=section_from_dict(TrainConfig, section(params, "train"), "train"),
    ).validate()


def run_stage(main) -> None:
    """Run a stage's main(); user errors become one line on stderr and exit code 1."""
    from pix2pix.errors import USER_ERRORS

    try:
        main()
    except (*USER_ERRORS, StageError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


class StageError(RuntimeError):
    """A stage cannot go on; the message says what is wrong and how to fix it."""
