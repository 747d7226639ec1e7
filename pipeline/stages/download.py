"""Stage 1: put a dataset into data/raw/.

`data.source` chooses it:
- `synthetic` (default): the embedded offline generator (pipeline/data/synthetic.py);
- an official pix2pix dataset by name (facades, cityscapes, maps, edges2shoes,
  edges2handbags, night2day): downloaded from the public pix2pix location (or the mirror in
  `P2P_DATASETS_URL`), checked for file counts per split and, for facades, per-file SHA-256;
- an official CycleGAN (unpaired) dataset by name (horse2zebra, monet2photo,
  summer2winter_yosemite, apple2orange, ...; `cyclegan:maps` for its maps): the zip from the
  public CycleGAN location (or `P2P_CYCLEGAN_DATASETS_URL`), checked for its trainA/ trainB/
  testA/ testB/ folders;
- an http(s):// or file:// URL of a .tar.gz/.tgz/.tar/.zip archive;
- a local folder or archive path.

With `data.pairs.builder` set (grayscale, edges, downscale, noise) the source is read as
ordinary photos and each becomes an A|B pair whose input is built from it (pipeline/data/builders.py).

Downloads stream with a progress bar, retry, and resume from a partial file when the server
allows ranges. Archives are extracted only if no member escapes the target folder. The new
data/raw/ is assembled beside the old one and swapped in at the end, so a failure never
leaves a half-written dataset behind.
"""

from __future__ import annotations

import shutil
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from pix2pix.images import is_image_file

from ..config import SyntheticConfig, load_config
from ..data import synthetic
from ..data.builders import build_pairs
from ..data.hashing import sha256
from ..data.sources import CYCLEGAN, OFFICIAL, cyclegan_name, cyclegan_url, is_archive, is_url, official_url
from ..paths import RAW
from ..stage import StageError, run_stage

CHECKSUMS = Path(__file__).parents[1] / "data" / "checksums"
CACHE = Path("data/.download-cache")


# -- fetching -------------------------------------------------------------------------------
def fetch(url: str, dest: Path, retries: int = 4, timeout: float = 60.0, progress: bool = True) -> Path:
    """Download `url` to `dest`, resuming `dest.part` where the server supports ranges."""
    from tqdm.auto import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(1, retries + 1):
        have = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status = getattr(response, "status", None) or 200
                if have and status != 206:  # no range support: start over
                    have = 0
                length = response.headers.get("Content-Length")
                total = have + int(length) if length else None
                with (
                    open(part, "ab" if have else "wb") as f,
                    tqdm(
                        total=total,
                        initial=have,
                        unit="B",
                        unit_scale=True,
                        desc=dest.name,
                        disable=not progress,
                        leave=False,
                    ) as bar,
                ):
                    while chunk := response.read(1 << 20):
                        f.write(chunk)
                        bar.update(len(chunk))
            if total is not None and part.stat().st_size != total:
                raise OSError(f"incomplete download: {part.stat().st_size} of {total} bytes")
            part.replace(dest)
            return dest
        except urllib.error.HTTPError as e:
            if e.code == 416:  # range past the end: the partial file is already complete
                part.replace(dest)
                return dest
            if e.code < 500 or attempt == retries:
                raise StageError(
                    f"{url}: download failed (HTTP {e.code} {e.reason}); check the URL or data.source"
                ) from None
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            if attempt == retries:
                reason = getattr(e, "reason", e)
                raise StageError(
                    f"{url}: download failed after {retries} tries ({reason}); check the network or use a "
                    "local copy as data.source"
                ) from None
        time.sleep(min(2**attempt, 30) * 0.5)
    raise AssertionError("unreachable")


# -- archives -------------------------------------------------------------------------------
def _unsafe_member(name: str) -> bool:
    p = PurePosixPath(name.replace("\\", "/"))
    return p.is_absolute() or ".." in p.parts or (len(name) > 1 and name[1] == ":")


def safe_extract(archive: Path, target: Path) -> None:
    """Extract a tar or zip archive; refuse absolute paths, `..`, links and device files."""
    target.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                for info in z.infolist():
                    is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
                    if _unsafe_member(info.filename) or is_link:
                        raise StageError(
                            f"{archive}: refusing member {info.filename!r} that would escape the target "
                            "folder (absolute path, '..' or link)"
                        )
                z.extractall(target)
            return
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for m in members:
                if _unsafe_member(m.name) or m.issym() or m.islnk() or m.isdev():
                    raise StageError(
                        f"{archive}: refusing member {m.name!r} that would escape the target folder (absolute "
                        "path, '..', link or device)"
                    )
            tar.extractall(target, members=members, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as e:
        raise StageError(
            f"{archive}: not a readable .tar.gz/.zip archive ({e}); re-download it or check data.source"
        ) from None


def _flatten_single_folder(folder: Path) -> None:
    """Archives usually hold one top folder (facades/...): move its content up."""
    entries = [p for p in folder.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir():
        inner = entries[0]
        tmp = folder / f".flatten-{inner.name}"
        inner.rename(tmp)
        for child in tmp.iterdir():
            child.rename(folder / child.name)
        tmp.rmdir()


# -- verification ---------------------------------------------------------------------------
def verify_checksums(folder: Path, sums_file: Path) -> int:
    """Check every `<sha256>  <relative path>` line; returns the number of files checked."""
    checked = 0
    for line in sums_file.read_text().splitlines():
        if not line.strip():
            continue
        digest, rel = line.split(maxsplit=1)
        rel = rel.strip().lstrip("*").removeprefix("./")
        path = folder / rel
        if not path.is_file():
            raise StageError(
                f"{path}: missing from the dataset (listed in {sums_file.name}); the download is incomplete, "
                "delete data/.download-cache and retry"
            )
        if sha256(path) != digest:
            raise StageError(
                f"{path}: SHA-256 does not match {sums_file.name}; the file is corrupt or was changed, delete "
                "data/.download-cache and retry"
            )
        checked += 1
    return checked


def verify_counts(folder: Path, expected: dict[str, int | None], name: str) -> dict[str, int]:
    counts = {}
    for split, want in expected.items():
        d = folder / split
        n = sum(1 for p in d.iterdir() if is_image_file(p)) if d.is_dir() else 0
        if n == 0 or (want is not None and n != want):
            raise StageError(
                f"{d}: {name} should have {want if want is not None else 'some'} {split} images, found {n}; "
                f"the archive is incomplete or not {name}"
            )
        counts[split] = n
    return counts


# -- the stage ------------------------------------------------------------------------------
def materialise(
    source: str,
    target: Path,
    synthetic_cfg: SyntheticConfig,
    base_url: str | None = None,
    progress: bool = True,
    photos_only: bool = False,
) -> dict:
    """Fill `target` (an empty folder) from `source` (official datasets from `base_url`, default
    P2P_DATASETS_URL or the public location); returns a description for logs."""
    info: dict = {"source": source}
    if source == "synthetic":
        s = synthetic_cfg
        counts = {"train": s.train, "val": s.val, "test": s.test}
        info["counts"] = synthetic.generate(
            target, counts, size=s.size, seed=s.seed, photos_only=photos_only, unpaired=s.unpaired
        )
        return info
    if source in OFFICIAL:
        url = official_url(source, base_url)
        archive = fetch(url, CACHE / f"{source}.tar.gz", progress=progress)
        safe_extract(archive, target)
        _flatten_single_folder(target)
        info["counts"] = verify_counts(target, OFFICIAL[source], source)
        sums = CHECKSUMS / f"{source}.sha256"
        if sums.is_file():
            info["checksums_verified"] = verify_checksums(target, sums)
        info["url"] = url
        return info
    unpaired = cyclegan_name(source)
    if unpaired:
        url = cyclegan_url(unpaired, base_url)
        archive = fetch(url, CACHE / f"cyclegan-{unpaired}.zip", progress=progress)
        safe_extract(archive, target)
        _flatten_single_folder(target)
        info["counts"] = verify_counts(target, CYCLEGAN[unpaired], unpaired)
        info["url"] = url
        return info
    if is_url(source) or source.startswith("file://"):
        name = PurePosixPath(urllib.request.url2pathname(source.split("?")[0].split("/")[-1])).name or "dataset.tar.gz"
        if not is_archive(name):
            raise StageError(f"data.source={source}: a URL must point at a .tar.gz, .tgz, .tar or .zip archive")
        archive = fetch(source, CACHE / name, progress=progress)
        safe_extract(archive, target)
        _flatten_single_folder(target)
        return info
    path = Path(source).expanduser()
    if path.is_dir():
        shutil.copytree(path, target, dirs_exist_ok=True, symlinks=False)
    elif path.is_file() and is_archive(path):
        safe_extract(path, target)
        _flatten_single_folder(target)
    else:
        known = ", ".join(["synthetic", *OFFICIAL, *(n for n in CYCLEGAN if n not in OFFICIAL)])
        raise StageError(
            f"data.source={source!r}: not a known dataset ({known}), a URL, or an existing folder/archive; "
            "fix data.source in params.yaml"
        )
    # A dataset that ships its own SHA256SUMS is checked against it.
    if (target / "SHA256SUMS").is_file():
        info["checksums_verified"] = verify_checksums(target, target / "SHA256SUMS")
    return info


def main() -> None:
    data = load_config().data
    source = data.source
    RAW.parent.mkdir(parents=True, exist_ok=True)
    staging = RAW.with_name(RAW.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    pairs = data.pairs
    photos = RAW.with_name(RAW.name + ".photos")
    try:
        if pairs.enabled:  # the source is ordinary photos: fetch them, then build A|B pairs
            shutil.rmtree(photos, ignore_errors=True)
            photos.mkdir()
            info = materialise(source, photos, data.synthetic, photos_only=True)
            info["built"] = build_pairs(photos, staging, pairs, data.direction)
        else:
            info = materialise(source, staging, data.synthetic)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(photos, ignore_errors=True)
    shutil.rmtree(RAW, ignore_errors=True)
    staging.rename(RAW)
    files = sum(1 for p in RAW.rglob("*") if p.is_file())
    print(f"download: {source} -> {RAW} ({files} files; {info})")


if __name__ == "__main__":
    run_stage(main)
