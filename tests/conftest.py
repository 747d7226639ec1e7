"""Shared fixtures: tiny generated datasets and tiny configs, so every test runs offline on CPU."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")
ROOT = Path(__file__).resolve().parents[1]
SHARED_FACADES = ROOT.parent / "shared" / "datasets" / "facades"


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """train/val/test folders of 32x32-per-half A|B synthetic facades."""
    from pipeline.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic")
    generate(root, {"train": 6, "val": 2, "test": 3}, size=32, seed=0)
    return root


def tiny_config(**train_overrides):
    """A 32x32 model small enough for many steps per second on a 2-core CPU."""
    from pix2pix.config import Config, DataConfig, ModelConfig, TrainConfig

    train = dict(epochs=1, epochs_decay=1, batch_size=2, seed=0, device="cpu", log_every=1, sample_every=1000, keep_checkpoints=0)
    train.update(train_overrides)
    return Config(
        data=DataConfig(direction="BtoA", load_size=36, crop_size=32),
        model=ModelConfig(ngf=8, ndf=8),
        train=TrainConfig(**train),
    ).validate()


def run_cli(*args, cwd=None, env=None, timeout=600):
    """Run `python -m pix2pix.cli ...` as a user would; returns CompletedProcess."""
    import subprocess

    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pix2pix.cli", *map(str, args)],
        cwd=cwd or ROOT, env=full_env, capture_output=True, text=True, timeout=timeout,
    )
