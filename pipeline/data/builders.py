"""Pair builders: turn a folder of ordinary photos into A|B training pairs.

For several classic pix2pix tasks the input can be computed from the photo itself, so any
folder of pictures becomes paired data. `data.pairs.builder` picks one:

- grayscale: the photo's luminance -> the photo (colorization);
- edges: a Canny edge map, thin dark lines on white -> the photo (sketch to photo);
- downscale: the photo shrunk by `factor` and scaled back up -> the photo (super-resolution);
- noise: the photo with Gaussian noise and/or JPEG artefacts -> the photo (denoising).

Each photo is resized (shorter side) and centre-cropped to `size` x `size` first. Random
choices come from a generator seeded by (seed, file path), so a rebuild gives the same bytes
whatever the file order. The input lands on the side `data.direction` reads as the input, so
the model always learns built input -> photo.
"""

from __future__ import annotations

import csv
import io
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from pix2pix.images import is_image_file, open_image
from pix2pix.errors import ImageError

from ..config import PairsConfig


def square(photo: Image.Image, size: int) -> Image.Image:
    """RGB, shorter side scaled to `size`, centre-cropped to size x size."""
    return ImageOps.fit(photo.convert("RGB"), (size, size), method=Image.Resampling.BICUBIC, centering=(0.5, 0.5))


def grayscale(photo: Image.Image, cfg: PairsConfig, rng: np.random.Generator) -> Image.Image:
    return photo.convert("L").convert("RGB")  # ITU-R 601 luma, as Pillow defines L


def edges(photo: Image.Image, cfg: PairsConfig, rng: np.random.Generator) -> Image.Image:
    from skimage.feature import canny

    gray = np.asarray(photo.convert("L"), dtype=np.float64) / 255.0
    e = cfg.edges
    found = canny(gray, sigma=e.sigma, low_threshold=e.low, high_threshold=e.high)
    return Image.fromarray(np.where(found, 0, 255).astype(np.uint8)).convert("RGB")


def downscale(photo: Image.Image, cfg: PairsConfig, rng: np.random.Generator) -> Image.Image:
    small = max(1, cfg.size // cfg.downscale.factor)
    return photo.resize((small, small), Image.Resampling.BICUBIC).resize(photo.size, Image.Resampling.BICUBIC)


def noise(photo: Image.Image, cfg: PairsConfig, rng: np.random.Generator) -> Image.Image:
    n = cfg.noise
    out = photo
    if n.sigma > 0:
        x = np.asarray(photo, dtype=np.float32) / 255.0
        x = x + rng.normal(0.0, n.sigma, x.shape).astype(np.float32)
        out = Image.fromarray((np.clip(x, 0.0, 1.0) * 255.0).round().astype(np.uint8))
    if n.jpeg_quality > 0:
        buffer = io.BytesIO()
        out.save(buffer, format="JPEG", quality=n.jpeg_quality)
        out = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return out


MAKERS = {"grayscale": grayscale, "edges": edges, "downscale": downscale, "noise": noise}


def photo_rng(seed: int, relative: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(relative.encode("utf-8"))])


def build_pair(path: Path, relative: str, cfg: PairsConfig, input_left: bool) -> Image.Image:
    photo = square(open_image(path), cfg.size)
    built = MAKERS[cfg.builder](photo, cfg, photo_rng(cfg.seed, relative))
    left, right = (built, photo) if input_left else (photo, built)
    pair = Image.new("RGB", (2 * cfg.size, cfg.size))
    pair.paste(left, (0, 0))
    pair.paste(right, (cfg.size, 0))
    return pair


def build_pairs(photos: Path, out: Path, cfg: PairsConfig, direction: str = "AtoB") -> dict:
    """Write one A|B PNG per readable photo under `out` (same sub-folders, e.g. train/val/test).

    Unreadable photos are listed with their reason in `out/rejected_photos.csv`; no usable
    photo at all is an ImageError.
    """
    files = sorted(p for p in photos.rglob("*") if is_image_file(p) and not any(part.startswith(".") for part in p.relative_to(photos).parts))
    if not files:
        raise ImageError(f"{photos}: no photos found (.jpg, .png, ...); point data.source at a folder or archive of images")
    built, rejected = 0, []
    for path in files:
        relative = path.relative_to(photos).as_posix()
        try:
            pair = build_pair(path, relative, cfg, input_left=direction == "AtoB")
        except ImageError as e:
            rejected.append({"file": relative, "reason": str(e)})
            continue
        target = (out / relative).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        pair.save(target)
        built += 1
    if rejected:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "rejected_photos.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["file", "reason"])
            writer.writeheader()
            writer.writerows(rejected)
    if not built:
        raise ImageError(f"{photos}: none of the {len(files)} photos could be read (reasons in {out / 'rejected_photos.csv'})")
    return {"builder": cfg.builder, "pairs": built, "rejected": len(rejected)}
