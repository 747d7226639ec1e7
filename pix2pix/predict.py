"""Inference: translate images with a loaded generator (`pix2pix.loading.load_runner`).

Images of any size work: the input is padded (reflect) up to the network's multiple of
2**depth, translated, and cropped back to its own size.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from .data import IMAGE_EXTENSIONS, list_images, open_image, pil_to_uint8, to_channels, to_image_range, to_unit_range
from .errors import ImageError
from .loading import GeneratorRunner


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad the bottom/right of N x C x H x W up to multiples of `multiple`."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    # Reflection needs the pad to be smaller than the side; beyond that repeat the border.
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (h, w)


def translate(runner: GeneratorRunner, img: Image.Image) -> Image.Image:
    """Translate one PIL image of any size and mode; returns an 8-bit RGB or L image."""
    x = to_unit_range(pil_to_uint8(to_channels(img, runner.input_nc))).unsqueeze(0)
    padded, (h, w) = pad_to_multiple(x, runner.multiple)
    y = runner(padded)[..., :h, :w]
    y = to_image_range(y.float())[0].mul(255).round().to(torch.uint8)
    mode = "L" if y.shape[0] == 1 else "RGB"
    arr = y.permute(1, 2, 0).squeeze(-1).numpy()
    return Image.fromarray(arr, mode=mode)


def predict_paths(runner: GeneratorRunner, source: Path, dest: Path) -> list[Path]:
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
        translate(runner, open_image(src)).save(out)
        written.append(out)
    return written
