"""Stage 2: validate every pair in data/raw/ and write data/pairs/manifest.csv (+ rejected.csv).

No image is copied: the manifest names each pair's file(s) in data/raw, and the library's
dataset reads the halves straight from there. Layouts understood (inside data/raw/ or each of
its train/val/test folders): side-by-side A|B images (`combined`: A is the left half), or A/
and B/ folders with matching file names (`separate`).
A dataset with its own train/val/test folders keeps them; otherwise pairs are assigned to
splits by `data.split` ratios with a fixed seed.

Unpaired data (for `model.kind: unpaired`) comes in the reference's unaligned layout:
`trainA/ trainB/` (+ `valA/ valB/`, `testA/ testB/`), as the official CycleGAN archives hold it.
Each image is then one row of layout `unpaired`, its domain saying which of a_path / b_path
names it; a dataset without held-out domain folders has each domain's images assigned to splits
by the same ratios. Files that cannot be used are listed in
rejected.csv with a reason (and in the manifest with status `rejected`); the stage fails only
when no usable pair remains.

Validation runs on every core and reads only what it must: the header (format, size,
decompression-bomb limit) and the file's last bytes; a JPEG without its end-of-image marker or
a PNG without IEND (a truncated download) is decoded in full to find out whether it is usable.
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from pix2pix.errors import ImageError
from pix2pix.images import combined_half_size, list_images, match_by_name, open_image

from ..config import SplitConfig, load_config
from ..data.hashing import sha256
from ..data.manifest import COLUMNS
from ..paths import PAIRS, RAW
from ..stage import StageError, run_stage

SPLITS = ("train", "val", "test")
MIN_SIDE = 16  # pixels per half; smaller images carry no usable structure
# The bytes a complete file ends with; without them the file is decoded to see if it is whole.
END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82"}
EXIF_ORIENTATION = 0x0112


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


def upright_size(path: Path) -> tuple[int, int]:
    """(width, height) as the image will be used (EXIF rotation applied), from its header;
    a file that does not end as a complete one of its format is decoded in full."""
    img = open_image(path, decode=False)
    with img:
        w, h = img.size
        marker = END_MARKERS.get(img.format or "")
        if marker is None or not _ends_with(path, marker):
            open_image(path)  # raises ImageError for a truncated or corrupt file
        if img.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8):  # rotated by 90 degrees
            w, h = h, w
    return w, h


def _ends_with(path: Path, marker: bytes) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - len(marker) - 2))
        tail = f.read()
    return tail.rstrip(b"\x00\r\n").endswith(marker)


def checked_half_size(a: Path, b: Path | None) -> tuple[int, int]:
    """(width, height) of one half of a pair, or raise ImageError with the reason."""
    if b is None:
        half = combined_half_size(a, *upright_size(a))
        sizes = {"A": half, "B": half}
    else:
        sizes = {"A": upright_size(a), "B": upright_size(b)}
    for side, (w, h) in sizes.items():
        if min(w, h) < MIN_SIDE:
            raise ImageError(
                f"{a if side == 'A' or b is None else b}: {side} is too small ({w}x{h}, need at least "
                f"{MIN_SIDE}x{MIN_SIDE})"
            )
    return sizes["A"]


def inspect(job: tuple[Path, Path | None, Path]) -> dict:
    """One pair's manifest fields (status ok), or its rejection (status rejected + path, reason)."""
    a, b, raw = job
    try:
        w, h = checked_half_size(a, b)
    except ImageError as e:
        text = str(e)
        bad = b if b is not None and text.startswith(f"{b}: ") else a
        reason = text[len(str(bad)) + 2 :] if text.startswith(f"{bad}: ") else text
        return {"status": "rejected", "path": str(bad), "reason": reason}
    return {
        "status": "ok",
        "layout": "combined" if b is None else "separate",
        "a_path": a.relative_to(raw).as_posix(),
        "b_path": "" if b is None else b.relative_to(raw).as_posix(),
        "width": w,
        "height": h,
        "sha256": sha256(a) if b is None else sha256(a) + ":" + sha256(b),
    }


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


def inspect_all(jobs: list[tuple[Path, Path | None, Path]]) -> list[dict]:
    """`inspect` over every pair, on every core the process may use."""
    workers = min(len(os.sched_getaffinity(0)), max(1, len(jobs) // 64))
    if workers <= 1:
        return [inspect(job) for job in jobs]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(inspect, jobs, chunksize=max(1, min(256, len(jobs) // (workers * 8)))))


def domain_folders(raw: Path) -> dict[tuple[str, str], Path]:
    """{(split, domain): folder} of an unaligned dataset (trainA/, trainB/, testA/ ...); {} otherwise."""
    return {(s, d): raw / f"{s}{d}" for s in SPLITS for d in "AB" if (raw / f"{s}{d}").is_dir()}


def inspect_image(job: tuple[Path, Path]) -> dict:
    """One unpaired image's manifest fields (status ok), or its rejection."""
    path, raw = job
    try:
        w, h = upright_size(path)
        if min(w, h) < MIN_SIDE:
            raise ImageError(f"{path}: too small ({w}x{h}, need at least {MIN_SIDE}x{MIN_SIDE})")
    except ImageError as e:
        text = str(e)
        return {"status": "rejected", "path": str(path), "reason": text.removeprefix(f"{path}: ")}
    return {"status": "ok", "width": w, "height": h, "sha256": sha256(path)}


def build_unpaired(raw: Path, folders: dict[tuple[str, str], Path], ratios: SplitConfig):
    """The manifest of an unaligned dataset: one row per image of either domain."""
    if not {("train", "A"), ("train", "B")} <= set(folders):
        missing = next(f"train{d}" for d in "AB" if ("train", d) not in folders)
        raise StageError(f"{raw / missing}: missing; an unpaired dataset needs trainA/ and trainB/ folders of images")
    held_out = any(s != "train" for s, _ in folders)
    found = []
    for (split, domain), folder in sorted(folders.items()):
        images = list_images(folder)
        splits = [split] * len(images) if held_out else assign_splits([p.name for p in images], ratios)
        found += [(s, domain, p) for s, p in zip(splits, images, strict=True)]
    rows, rejected = [], []
    for (split, domain, path), result in zip(found, inspect_all_images([(p, raw) for _, _, p in found]), strict=True):
        if result["status"] == "rejected":
            rejected.append({"path": result.pop("path"), "reason": result.pop("reason")})
        rel = path.relative_to(raw).as_posix()
        rows.append({
            "id": f"{path.parent.name}-{path.stem}", "split": split, "layout": "unpaired",
            "a_path": rel if domain == "A" else "", "b_path": rel if domain == "B" else "", **result,
        })  # fmt: skip
    manifest = pd.DataFrame(rows, columns=COLUMNS)
    manifest[["width", "height"]] = manifest[["width", "height"]].astype("Int64")
    return manifest, pd.DataFrame(rejected, columns=["path", "reason"])


def inspect_all_images(jobs: list[tuple[Path, Path]]) -> list[dict]:
    workers = min(len(os.sched_getaffinity(0)), max(1, len(jobs) // 64))
    if workers <= 1:
        return [inspect_image(job) for job in jobs]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(inspect_image, jobs, chunksize=max(1, min(256, len(jobs) // (workers * 8)))))


def build(raw: Path, ratios: SplitConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(manifest with one row per candidate pair, rejected files with reasons)."""
    folders = domain_folders(raw)
    if folders:
        return build_unpaired(raw, folders, ratios)
    rejected: list[dict] = []
    own_splits = [s for s in SPLITS if (raw / s).is_dir()]
    groups = [(s, raw / s) for s in own_splits] if own_splits else [(None, raw)]
    found = []
    for split, folder in groups:
        for name, a, b in candidates(folder, rejected):
            found.append((split, name, a, b))
    if not own_splits:
        splits = assign_splits([name for _, name, _, _ in found], ratios)
        found = [(s, name, a, b) for s, (_, name, a, b) in zip(splits, found, strict=True)]
    rows = []
    for (split, name, a, b), result in zip(found, inspect_all([(a, b, raw) for _, _, a, b in found]), strict=True):
        if result["status"] == "rejected":
            rejected.append({"path": result.pop("path"), "reason": result.pop("reason")})
            result.update(
                layout="combined" if b is None else "separate",
                a_path=a.relative_to(raw).as_posix(),
                b_path="" if b is None else b.relative_to(raw).as_posix(),
            )
        rows.append({"id": f"{split}-{name}" if own_splits else name, "split": split, **result})
    manifest = pd.DataFrame(rows, columns=COLUMNS)
    manifest[["width", "height"]] = manifest[["width", "height"]].astype("Int64")
    return manifest, pd.DataFrame(rejected, columns=["path", "reason"])


def main() -> None:
    ratios = load_config().data.split
    if not RAW.is_dir():
        raise StageError(f"{RAW}: missing; run the download stage first (dvc repro download)")
    staging = PAIRS.with_name(PAIRS.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        manifest, rejects = build(RAW, ratios)
        rejects.to_csv(staging / "rejected.csv", index=False)
        usable = manifest[manifest["status"] == "ok"]
        if (usable["layout"] == "unpaired").any():
            for domain, column in (("A", "a_path"), ("B", "b_path")):
                if not ((usable["split"] == "train") & (usable[column] != "")).any():
                    raise StageError(
                        f"{RAW}: no usable training images in domain {domain} (train{domain}/); "
                        f"add images there (reasons for rejected ones in {staging / 'rejected.csv'})"
                    )
        if usable.empty:
            raise StageError(
                f"{RAW}: no usable image pairs ({len(rejects)} rejected, reasons in "
                f"{staging / 'rejected.csv'}); fix the data or data.source"
            )
        if not (usable["split"] == "train").any():
            raise StageError(
                f"{RAW}: no training pairs after validation; add data to the train split or lower data.split ratios"
            )
        manifest.to_csv(staging / "manifest.csv", index=False)
    except BaseException:
        if (staging / "rejected.csv").is_file():  # keep the reasons where the user can read them
            PAIRS.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(staging / "rejected.csv", PAIRS.parent / "rejected.csv")
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(PAIRS, ignore_errors=True)
    staging.rename(PAIRS)
    counts = usable["split"].value_counts().reindex(list(SPLITS), fill_value=0)
    summary = ", ".join(f"{s} {counts[s]}" for s in SPLITS)
    note = f"; {len(rejects)} rejected (reasons in {PAIRS / 'rejected.csv'})" if len(rejects) else ""
    what = "unpaired images (domains A and B)" if (usable["layout"] == "unpaired").any() else "pairs"
    print(f"split: {len(usable)} {what} ({summary}) in {RAW}{note}")


if __name__ == "__main__":
    run_stage(main)
