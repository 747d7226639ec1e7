"""The split stage's product, data/pairs/manifest.csv, as the later stages read it.

One row per candidate pair: id, split (train/val/test), layout (`combined`: one A|B file, A on
the left; `separate`: files in A/ and B/; `unpaired`: one image of domain A, in a_path, or of
domain B, in b_path), its file(s) relative to data/raw, the size of one half (or of the
image), their SHA-256 and status (`ok`, or `rejected` with the reason in rejected.csv). The
images are read straight from data/raw. Shared by train, evaluate, export, the promotion gate
and the model page, so "which pairs are the test set" is decided in one place.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pix2pix.images import Pair

from .hashing import sha256
from ..paths import MANIFEST, RAW
from ..stage import StageError

COLUMNS = ["id", "split", "layout", "a_path", "b_path", "width", "height", "sha256", "status"]


def read_manifest(path: Path = MANIFEST) -> pd.DataFrame:
    """The usable pairs (status ok) of a manifest."""
    if not path.is_file():
        raise StageError(f"{path}: missing; run the split stage first (dvc repro split)")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "status" not in table.columns:
        raise StageError(f"{path}: written by an older version (no status column); run the split stage again (dvc repro split)")
    table = table[table["status"] == "ok"].copy()
    table[["width", "height"]] = table[["width", "height"]].astype(int)
    return table


def to_pairs(rows: pd.DataFrame, root: Path = RAW) -> list[Pair]:
    """The manifest rows as Pairs whose files are under `root` (the project's data/raw)."""
    return [
        Pair(root / a, root / b if b else None, size=(int(w), int(h)))
        for a, b, w, h in zip(rows["a_path"], rows["b_path"], rows["width"], rows["height"])
    ]


def split_pairs(manifest: pd.DataFrame, split: str, root: Path = RAW) -> list[Pair]:
    """The pairs of one split (an unpaired manifest has none)."""
    rows = manifest[(manifest["split"] == split) & (manifest["layout"] != "unpaired")]
    return to_pairs(rows, root)


def is_unpaired(manifest: pd.DataFrame) -> bool:
    return bool((manifest["layout"] == "unpaired").any())


def split_domains(manifest: pd.DataFrame, split: str, root: Path = RAW) -> tuple[list[Path], list[Path]]:
    """The domain A and domain B images of one split of an unpaired manifest."""
    rows = manifest[(manifest["split"] == split) & (manifest["layout"] == "unpaired")]
    return [root / p for p in rows["a_path"] if p], [root / p for p in rows["b_path"] if p]


def held_out_split(manifest: pd.DataFrame) -> str:
    """The split models are judged on: test, or val for datasets that have no test split."""
    return "test" if (manifest["split"] == "test").any() else "val"


def data_fingerprint(path: Path = MANIFEST) -> str:
    """SHA-256 of the manifest, which lists every pair with its source file's hash."""
    return sha256(path)
