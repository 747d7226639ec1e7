"""What a `data.source` names: the official pix2pix and CycleGAN datasets (where they live,
their image counts), archives, and the short dataset name that MLflow experiments and registered models
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
# The official unpaired (CycleGAN) datasets: zip archives of trainA/ trainB/ testA/ testB/.
# Counts are not pinned (None: each folder must be there and hold images).
CYCLEGAN_BASE_URL = "http://efrosgans.eecs.berkeley.edu/cyclegan/datasets"
CYCLEGAN = {
    name: {"trainA": None, "trainB": None, "testA": None, "testB": None}
    for name in (
        "horse2zebra", "monet2photo", "summer2winter_yosemite", "apple2orange", "vangogh2photo", "cezanne2photo",
        "ukiyoe2photo", "maps", "iphone2dslr_flower",
    )  # fmt: skip
}
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip", ".tar.bz2", ".tar.xz")


def official_url(name: str, base_url: str | None = None) -> str:
    """The archive of an official dataset: under `base_url`, else the mirror in
    P2P_DATASETS_URL when set, else the public pix2pix location."""
    base = base_url or os.environ.get("P2P_DATASETS_URL", DEFAULT_BASE_URL)
    return f"{base.rstrip('/')}/{name}.tar.gz"


def cyclegan_url(name: str, base_url: str | None = None) -> str:
    """The zip of an official CycleGAN dataset: under `base_url`, else the mirror in
    P2P_CYCLEGAN_DATASETS_URL when set, else the public CycleGAN location."""
    base = base_url or os.environ.get("P2P_CYCLEGAN_DATASETS_URL", CYCLEGAN_BASE_URL)
    return f"{base.rstrip('/')}/{name}.zip"


def cyclegan_name(source: str) -> str | None:
    """The CycleGAN dataset a source names: `horse2zebra`, or `cyclegan:maps` (pix2pix has a
    `maps` of its own, which the plain name keeps meaning)."""
    name = source.removeprefix("cyclegan:")
    if name in CYCLEGAN and (source.startswith("cyclegan:") or source not in OFFICIAL):
        return name
    return None


def source_url(source: str) -> str | None:
    """Where an official dataset's archive is (None for other sources)."""
    if source in OFFICIAL:
        return official_url(source)
    name = cyclegan_name(source)
    return cyclegan_url(name) if name else None


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def is_archive(path) -> bool:
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def dataset_name(source: str) -> str:
    """A short name for a data source: MLflow experiment `<name>`, model `pix2pix-<name>`."""
    base = source.removeprefix("cyclegan:").rstrip("/").split("?")[0].rsplit("/", 1)[-1]
    for suffix in ARCHIVE_SUFFIXES:
        base = base.removesuffix(suffix)
    return re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-") or "dataset"
