"""Stage 2: validate every pair in data/raw/ and write data/pairs/{A,B}/ + manifest.csv.

Layouts understood (inside data/raw/ or each of its train/val/test folders):
side-by-side A|B images, or A/ and B/ folders with matching file names.
A dataset with its own train/val/test folders keeps them; otherwise pairs are assigned to
splits by `data.split` ratios with a fixed seed. Files that cannot be used are listed in
rejected.csv with a reason; the stage fails only when no usable pair remains.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from pix2pix.data import Pair, list_images, match_by_name, open_halves, to_channels
from pix2pix.errors import ImageError

from .hashing import sha256
from .manifest import COLUMNS
from .params import PAIRS, RAW, SplitConfig, StageError, load_config, run_stage

SPLITS = ("train", "val", "test")
MIN_SIDE = 16  # pixels per half; smaller images carry no usable structure


def candidates(folder: Path, rejected: list[dict]) -> list[tuple[str, Path, Path | None]]:
    """(name, a_or_combined, b_or_None) for each example in one folder."""
    a_dir, b_dir = folder / "A", folder / "B"
    if a_dir.is_dir() and b_dir.is_dir():
        pairs, lonely = match_by_name(a_dir, b_dir)
        for path in lonely:
            rejected.append({"path": str(path), "reason": "no file with the same name in the other folder (A/ vs B/)"})
        return [(p.name, p.a, p.b) for p in pairs]
    seen: dict[str, Path] = {}
    out = []
    for p in list_images(folder):
        if p.stem in seen:
            rejected.append({"path": str(p), "reason": f"duplicate name: {seen[p.stem].name} has the same stem"})
            continue
        seen[p.stem] = p
        out.append((p.stem, p, None))
    return out


def load_halves(a: Path, b: Path | None):
    """(A, B) as RGB images, or raise ImageError with the reason."""
    a_img, b_img = (to_channels(im, 3) for im in open_halves(Pair(a, b)))
    for side, im in (("A", a_img), ("B", b_img)):
        if min(im.size) < MIN_SIDE:
            raise ImageError(f"{side} is too small ({im.size[0]}x{im.size[1]}, need at least {MIN_SIDE}x{MIN_SIDE})")
    return a_img, b_img


def _reason(e: ImageError, path: Path) -> str:
    """The error text without the leading path (the CSV has its own path column)."""
    text = str(e)
    return text[len(str(path)) + 2 :] if text.startswith(f"{path}: ") else text


def assign_splits(names: list[str], ratios: SplitConfig) -> list[str]:
    """Deterministic train/val/test assignment by ratio (order-independent of file listing)."""
    val, test = ratios.val, ratios.test
    order = np.random.default_rng(ratios.seed).permutation(len(names))
    n_test, n_val = round(len(names) * test), round(len(names) * val)
    split = ["train"] * len(names)
    for rank, i in enumerate(order):
        if rank < n_test:
            split[i] = "test"
        elif rank < n_test + n_val:
            split[i] = "val"
    return split


def build(raw: Path, out: Path, ratios: SplitConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    rejected: list[dict] = []
    own_splits = [s for s in SPLITS if (raw / s).is_dir()]
    groups = [(s, raw / s) for s in own_splits] if own_splits else [(None, raw)]
    found = []
    for split, folder in groups:
        for name, a, b in candidates(folder, rejected):
            found.append((split, name, a, b))
    if not own_splits:
        splits = assign_splits([name for _, name, _, _ in found], ratios)
        found = [(s, name, a, b) for s, (_, name, a, b) in zip(splits, found)]
    (out / "A").mkdir(parents=True)
    (out / "B").mkdir(parents=True)
    rows = []
    for split, name, a, b in found:
        try:
            a_img, b_img = load_halves(a, b)
        except ImageError as e:
            bad = b if b is not None and str(e).startswith(f"{b}: ") else a
            rejected.append({"path": str(bad), "reason": _reason(e, bad)})
            continue
        pair_id = f"{split}-{name}" if own_splits else name
        a_path, b_path = Path("A") / f"{pair_id}.png", Path("B") / f"{pair_id}.png"
        a_img.save(out / a_path, compress_level=1)
        b_img.save(out / b_path, compress_level=1)
        rows.append(
            {
                "id": pair_id,
                "split": split,
                "a_path": a_path.as_posix(),
                "b_path": b_path.as_posix(),
                "width": a_img.size[0],
                "height": a_img.size[1],
                "source": a.relative_to(raw).as_posix(),
                "sha256": sha256(a) if b is None else sha256(a) + ":" + sha256(b),
            }
        )
    manifest = pd.DataFrame(rows, columns=COLUMNS)
    rejects = pd.DataFrame(rejected, columns=["path", "reason"])
    return manifest, rejects


def main() -> None:
    ratios = load_config().data.split
    if not RAW.is_dir():
        raise StageError(f"{RAW}: missing; run the download stage first (dvc repro download)")
    staging = PAIRS.with_name(PAIRS.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        manifest, rejects = build(RAW, staging, ratios)
        rejects.to_csv(staging / "rejected.csv", index=False)
        if manifest.empty:
            raise StageError(f"{RAW}: no usable image pairs ({len(rejects)} rejected, reasons in {staging / 'rejected.csv'}); fix the data or data.source")
        if not (manifest["split"] == "train").any():
            raise StageError(f"{RAW}: no training pairs after validation; add data to the train split or lower data.split ratios")
        manifest.to_csv(staging / "manifest.csv", index=False)
    except BaseException:
        if (staging / "rejected.csv").is_file():  # keep the reasons where the user can read them
            PAIRS.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(staging / "rejected.csv", PAIRS.parent / "rejected.csv")
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(PAIRS, ignore_errors=True)
    staging.rename(PAIRS)
    counts = manifest["split"].value_counts().reindex(list(SPLITS), fill_value=0)
    summary = ", ".join(f"{s} {counts[s]}" for s in SPLITS)
    note = f"; {len(rejects)} rejected (reasons in {PAIRS / 'rejected.csv'})" if len(rejects) else ""
    print(f"split: {len(manifest)} pairs ({summary}){note}")


if __name__ == "__main__":
    run_stage(main)
