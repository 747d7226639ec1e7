"""The split stage's product, data/pairs/manifest.csv, as the later stages read it.

One row per usable pair: id, split (train/val/test), its image files, size, source file(s)
in data/raw and their SHA-256. Shared by train, evaluate, export and the promotion gate, so
"which pairs are the test set" is decided in one place.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pix2pix.data import Pair

from .hashing import sha256
from .params import MANIFEST, PAIRS, StageError

COLUMNS = ["id", "split", "a_path", "b_path", "width", "height", "source", "sha256"]


def read_manifest(path: Path = MANIFEST) -> pd.DataFrame:
    if not path.is_file():
        raise StageError(f"{path}: missing; run the split stage first (dvc repro split)")
    return pd.read_csv(path, dtype={"id": str})


def split_pairs(manifest: pd.DataFrame, split: str, root: Path = PAIRS) -> list[Pair]:
    rows = manifest[manifest["split"] == split]
    return [Pair(root / a, root / b) for a, b in zip(rows["a_path"], rows["b_path"])]


def held_out_split(manifest: pd.DataFrame) -> str:
    """The split models are judged on: test, or val for datasets that have no test split."""
    return "test" if (manifest["split"] == "test").any() else "val"


def data_fingerprint(path: Path = MANIFEST) -> str:
    """SHA-256 of the manifest, which lists every pair with its source file's hash."""
    return sha256(path)
