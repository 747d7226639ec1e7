"""Image files of a paired dataset, torch-free (Pillow and NumPy only): what a pair is, how
files are found, opened with one-line errors, turned upright into 8-bit RGB/L, and cut into
their A and B halves. The split stage validates thousands of files with these alone, so it
starts without importing torch; :mod:`pix2pix.data` builds the training tensors on them.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Pair:
    """One training example: a combined A|B image (b is None) or two separate files.

    `size` (width, height of one half), when known (a manifest has it), lets a dataset plan
    its memory without opening the files.
    """

    a: Path
    b: Path | None = None
    size: tuple[int, int] | None = None

    @property
    def name(self) -> str:
        return self.a.stem


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if is_image_file(p))


def open_image(path: Path, decode: bool = True, data: bytes | None = None) -> Image.Image:
    """Open and (unless decode=False: header only) decode an image, turning every Pillow
    failure into a one-line ImageError that names `path`. With `data`, the file's bytes
    already read (a batch job hashes and decodes one read)."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x MAX_IMAGE_PIXELS; refuse those too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path if data is None else io.BytesIO(data))
            if decode:
                img.load()
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found; check the path") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{path}: image is too large to decode safely ({e}); downscale it or remove it") from None
    except UnidentifiedImageError:
        raise ImageError(
            f"{path}: not a readable image (unknown or corrupt format); re-export it as PNG/JPEG or remove it"
        ) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{path}: cannot decode image ({e}); re-export it as PNG/JPEG or remove it") from None
    return img


def to_channels(img: Image.Image, channels: int) -> Image.Image:
    """Upright 8-bit RGB (channels=3) or L (channels=1) from any Pillow mode.

    EXIF orientation is applied; transparency is composited over white; 16/32-bit and float
    grayscale are rescaled to 8 bits; CMYK, palette and YCbCr go through Pillow's conversions.
    """
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max(initial=0.0)), 255.0)
        arr = np.clip(arr, 0.0, top) * (255.0 / top)
        img = Image.fromarray(np.round(arr).astype(np.uint8), mode="L")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("L" if channels == 1 else "RGB")


def combined_half_size(path: Path, width: int, height: int) -> tuple[int, int]:
    """(width, height) of one half of a combined A|B image of the given size, or an ImageError:
    the one place that says such an image is twice as wide as it is high."""
    if width != 2 * height:
        raise ImageError(
            f"{path}: a combined A|B image must be twice as wide as it is high, got {width}x{height}; "
            "fix the image or use separate A/ and B/ folders"
        )
    return width // 2, height


def open_halves(pair: Pair) -> tuple[Image.Image, Image.Image]:
    """The (A, B) images of a pair, upright; a combined A|B image is cut at half its width."""
    if pair.b is not None:
        return open_image(pair.a), open_image(pair.b)
    img = ImageOps.exif_transpose(open_image(pair.a))
    half, h = combined_half_size(pair.a, *img.size)
    return img.crop((0, 0, half, h)), img.crop((half, 0, 2 * half, h))


def match_by_name(a_dir: Path, b_dir: Path) -> tuple[list[Pair], list[Path]]:
    """Same-stem files of A/ and B/ as pairs (sorted), and the files that have no partner."""
    a_files = {p.stem: p for p in list_images(a_dir)}
    b_files = {p.stem: p for p in list_images(b_dir)}
    lonely = [a_files.get(stem) or b_files[stem] for stem in sorted(a_files.keys() ^ b_files.keys())]
    return [Pair(a_files[s], b_files[s]) for s in sorted(a_files.keys() & b_files.keys())], lonely
