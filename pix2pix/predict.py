"""Inference: load a trained generator (checkpoint, TorchScript or ONNX) and translate images.

Images of any size work: the input is padded (reflect) up to the network's multiple of
2**depth, translated, and cropped back to its own size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from PIL import Image

from .checkpoint import load_checkpoint
from .config import Config
from .data import ImageError, list_images, open_image, pil_to_uint8, to_channels, to_image_range, to_unit_range
from .networks import UNetGenerator, build_generator


class GeneratorRunner:
    """A callable N x C x H x W tensor in [-1, 1] -> same, plus what it needs to know:
    input/output channels and the size multiple."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], input_nc: int, output_nc: int, multiple: int, config: dict):
        self.fn, self.input_nc, self.output_nc, self.multiple, self.config = fn, input_nc, output_nc, multiple, config

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def generator_from_state(state: dict) -> tuple[UNetGenerator, Config]:
    """Rebuild the generator (eval mode) from a loaded checkpoint dict."""
    cfg = Config.from_dict(state["config"])
    g = build_generator(cfg.model, cfg.data.input_nc, cfg.data.output_nc, cfg.data.crop_size)
    g.load_state_dict(state["generator"])
    return g.eval(), cfg


def generator_from_checkpoint(path: Path | str, device: str | torch.device = "cpu") -> tuple[UNetGenerator, Config]:
    """Rebuild the generator from a training checkpoint or an exported `generator.pt`."""
    g, cfg = generator_from_state(load_checkpoint(path, map_location=device))
    return g.to(device), cfg


def _enable_dropout(g: torch.nn.Module) -> None:
    for m in g.modules():
        if isinstance(m, torch.nn.Dropout):
            m.train()


def load_runner(path: Path | str, device: str | torch.device = "cpu", keep_dropout: bool = False) -> GeneratorRunner:
    """Pick the loader by file type: .onnx (onnxruntime), .ts/.torchscript, else a checkpoint."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from .export import OnnxGenerator

        ort_g = OnnxGenerator(path)
        c = ort_g.config
        return GeneratorRunner(ort_g, c["data"]["input_nc"], c["data"]["output_nc"], ort_g.multiple, c)
    if suffix in (".ts", ".torchscript"):
        from .export import load_torchscript

        module, config, multiple = load_torchscript(path, device)
        return GeneratorRunner(lambda x: module(x.to(device)).cpu(), config["data"]["input_nc"], config["data"]["output_nc"], multiple, config)
    g, cfg = generator_from_checkpoint(path, device)
    if keep_dropout:
        _enable_dropout(g)  # the paper's test-time noise: dropout stays on
    return GeneratorRunner(lambda x: g(x.to(device)).float().cpu(), cfg.data.input_nc, cfg.data.output_nc, g.multiple, cfg.to_dict())


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
    single_file_out = source.is_file() and dest.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
    written = []
    for src in inputs:
        out = dest if single_file_out else dest / f"{src.stem}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        translate(runner, open_image(src)).save(out)
        written.append(out)
    return written
