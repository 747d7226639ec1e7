"""Inference: translate images with a loaded generator (`pix2pix.loading.load_runner`).

Images of any size work: a small one is padded (reflect) up to the network's multiple of
2**depth, translated in one pass and cropped back; one over the tile budget is translated in
overlapping, blended tiles in bounded memory (`pix2pix.tiling`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .errors import ImageError
from .images import IMAGE_EXTENSIONS, list_images, open_image, to_channels
from .loading import GeneratorRunner
from .tiling import DEFAULT_OVERLAP, DEFAULT_TILE_MEGAPIXELS, translate_array


def to_array(img: Image.Image, channels: int) -> np.ndarray:
    """Any PIL image as upright uint8 H x W x `channels`."""
    arr = np.asarray(to_channels(img, channels))
    return arr[..., None] if arr.ndim == 2 else arr


def from_array(arr: np.ndarray) -> Image.Image:
    """uint8 H x W x C (C = 1 or 3) as an L or RGB image."""
    return Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr, mode="L" if arr.shape[-1] == 1 else "RGB")


def translate(
    runner: GeneratorRunner,
    img: Image.Image,
    tile_megapixels: float = DEFAULT_TILE_MEGAPIXELS,
    overlap: int = DEFAULT_OVERLAP,
) -> Image.Image:
    """Translate one PIL image of any size and mode; returns an 8-bit RGB or L image."""
    return from_array(translate_array(runner, to_array(img, runner.input_nc), tile_megapixels, overlap))


def predict_paths(
    runner: GeneratorRunner,
    source: Path,
    dest: Path,
    tile_megapixels: float = DEFAULT_TILE_MEGAPIXELS,
    overlap: int = DEFAULT_OVERLAP,
) -> list[Path]:
    """Translate one image file, or every image in a folder, into `dest`.

    For a single file, `dest` may be a file path (with an image suffix) or a folder.
    """
    source, dest = Path(source), Path(dest)
    if source.is_dir():
        inputs = list_images(source)
        if not inputs:
            raise ImageError(f"{source}: no images found; point predict at an image or a folder of images")
    elif source.is_file():
        inputs = [source]
    else:
        raise ImageError(f"{source}: no such file or folder; check the path")
    single_file_out = source.is_file() and dest.suffix.lower() in IMAGE_EXTENSIONS
    written = []
    for src in inputs:
        out = dest if single_file_out else dest / f"{src.stem}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        translate(runner, open_image(src), tile_megapixels, overlap).save(out)
        written.append(out)
    return written
