"""What a `data.source` names: the official pix2pix datasets (where they live, their image
counts), archives, and the short dataset name that MLflow experiments and registered models
carry. The download stage fetches from here; the retrain flow asks the same place whether a
source changed, so a dataset's URL is built in one place only."""

from __future__ import annotations

import os
import re

DEFAULT_BASE_URL = "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets"
# Images per split in the official archives; None = split present, count not pinned.
OFFICIAL = {
    "facades": {"train": 400, "val": 100, "test": 106},
    "cityscapes": {"train": 2975, "val": 500},
    "maps": {"train": 1096, "val": 1098},
    "edges2shoes": {"train": 49825, "val": 200},
    "edges2handbags": {"train": 138567, "val": 200},
    "night2day": {"train": None, "val": None, "test": None},
}
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip", ".tar.bz2", ".tar.xz")


def official_url(name: str, base_url: str | None = None) -> str:
    """The archive of an official dataset: under `base_url`, else the mirror in
    P2P_DATASETS_URL when set, else the public pix2pix location."""
    base = base_url or os.environ.get("P2P_DATASETS_URL", DEFAULT_BASE_URL)
    return f"{base.rstrip('/')}/{name}.tar.gz"


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def is_archive(path) -> bool:
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def dataset_name(source: str) -> str:
    """A short name for a data source: MLflow experiment `<name>`, model `pix2pix-<name>`."""
    base = source.rstrip("/").split("?")[0].rsplit("/", 1)[-1]
    for suffix in ARCHIVE_SUFFIXES:
        base = base.removesuffix(suffix)
    return re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-") or "dataset"
