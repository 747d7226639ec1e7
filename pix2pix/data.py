"""Paired image data: A|B side-by-side images or separate A/ and B/ folders.

Every random choice (crop offset, flip) comes from a generator seeded per (run seed, epoch,
index), so an epoch's augmentations are the same whether it runs straight through or resumes
from a checkpoint half-way, and whatever the number of DataLoader workers.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset, Sampler
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from .config import DataConfig
from .errors import ImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# Decoded images kept in memory per dataset (uint8); beyond this, images are re-read each time.
CACHE_LIMIT_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class Pair:
    """One training example: a combined A|B image (b is None) or two separate files."""

    a: Path
    b: Path | None = None

    @property
    def name(self) -> str:
        return self.a.stem


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if is_image_file(p))


def open_image(path: Path) -> Image.Image:
    """Open and fully decode an image, turning every Pillow failure into a one-line ImageError."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x MAX_IMAGE_PIXELS; refuse those too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            img.load()
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found; check the path") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{path}: image is too large to decode safely ({e}); downscale it or remove it") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not a readable image (unknown or corrupt format); re-export it as PNG/JPEG or remove it") from None
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


def pil_to_uint8(img: Image.Image) -> torch.Tensor:
    """PIL image -> uint8 tensor C x H x W."""
    return TF.pil_to_tensor(img)


def open_halves(pair: Pair) -> tuple[Image.Image, Image.Image]:
    """The (A, B) images of a pair, upright; a combined A|B image is cut at half its width."""
    if pair.b is not None:
        return open_image(pair.a), open_image(pair.b)
    img = ImageOps.exif_transpose(open_image(pair.a))
    w, h = img.size
    if w != 2 * h:
        raise ImageError(
            f"{pair.a}: a combined A|B image must be twice as wide as it is high, got {w}x{h}; "
            "fix the image or use separate A/ and B/ folders"
        )
    return img.crop((0, 0, w // 2, h)), img.crop((w // 2, 0, w, h))


def read_pair(pair: Pair, input_nc: int, output_nc: int, direction: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode one pair into (input, target) uint8 tensors, honouring the direction."""
    a_nc, b_nc = (input_nc, output_nc) if direction == "AtoB" else (output_nc, input_nc)
    a_img, b_img = open_halves(pair)
    a = pil_to_uint8(to_channels(a_img, a_nc))
    b = pil_to_uint8(to_channels(b_img, b_nc))
    return (a, b) if direction == "AtoB" else (b, a)


def match_by_name(a_dir: Path, b_dir: Path) -> tuple[list[Pair], list[Path]]:
    """Same-stem files of A/ and B/ as pairs (sorted), and the files that have no partner."""
    a_files = {p.stem: p for p in list_images(a_dir)}
    b_files = {p.stem: p for p in list_images(b_dir)}
    lonely = [a_files.get(stem) or b_files[stem] for stem in sorted(a_files.keys() ^ b_files.keys())]
    return [Pair(a_files[s], b_files[s]) for s in sorted(a_files.keys() & b_files.keys())], lonely


def discover_pairs(root: Path) -> list[Pair]:
    """Find the pairs in a folder: A/ + B/ subfolders with matching names, else A|B images."""
    root = Path(root)
    if not root.is_dir():
        raise ImageError(f"{root}: not a folder; point the data path at a folder of A|B images or with A/ and B/ subfolders")
    a_dir, b_dir = root / "A", root / "B"
    if a_dir.is_dir() and b_dir.is_dir():
        pairs, lonely = match_by_name(a_dir, b_dir)
        if lonely:
            other = "B" if lonely[0].parent == a_dir else "A"
            raise ImageError(f"{lonely[0]}: has no partner with the same name in {root / other}; add it or remove this file")
    else:
        pairs = [Pair(p) for p in list_images(root)]
    if not pairs:
        raise ImageError(
            f"{root}: no images found ({', '.join(IMAGE_EXTENSIONS)}); add A|B images or A/ and B/ subfolders"
        )
    return pairs


def aug_seed(seed: int, epoch: int, index: int) -> int:
    """A distinct, reproducible seed for one item's augmentation in one epoch."""
    return (seed * 1_000_003 + epoch * 7_919 + index) % (2**63 - 1)


class PairedDataset(Dataset):
    """Pairs as normalised tensors in [-1, 1]: {"input", "target", "name"}.

    Indexing with an int gives the deterministic evaluation view (resize to crop_size, no
    flip); indexing with (index, seed), as :class:`EpochSampler` does, gives a random
    training view drawn from that seed.
    """

    def __init__(self, pairs: Sequence[Pair] | str | Path, cfg: DataConfig, train: bool = True):
        if isinstance(pairs, (str, Path)):
            self.pairs = discover_pairs(Path(pairs))
        else:  # Pair objects, or paths of combined A|B images
            self.pairs = [p if isinstance(p, Pair) else Pair(Path(p)) for p in pairs]
        if not self.pairs:
            raise ImageError("empty dataset: no pairs given")
        self.cfg = cfg
        self.train = train
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._cached_bytes = 0

    def __len__(self) -> int:
        return len(self.pairs)

    def decoded(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(input, target) as uint8 C x H x W, decoded once and cached while memory allows."""
        if index in self._cache:
            return self._cache[index]
        a, b = read_pair(self.pairs[index], self.cfg.input_nc, self.cfg.output_nc, self.cfg.direction)
        size = a.numel() + b.numel()
        if self.cfg.cache and self._cached_bytes + size <= CACHE_LIMIT_BYTES:
            self._cache[index] = (a, b)
            self._cached_bytes += size
        return a, b

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, seed = (key, None) if isinstance(key, int) else key
        a, b = self.decoded(index)
        if self.train and seed is not None:
            a, b = self._random_view(a, b, torch.Generator().manual_seed(seed), self.pairs[index])
        else:
            a, b = self._eval_view(a, b)
        return {"input": to_unit_range(a), "target": to_unit_range(b), "name": self.pairs[index].name}

    def _resize(self, img: torch.Tensor, size: int) -> torch.Tensor:
        if img.shape[-2:] == (size, size):
            return img
        return TF.resize(img, [size, size], interpolation=InterpolationMode.BICUBIC, antialias=True)

    def _random_view(self, a, b, gen: torch.Generator, pair: Pair):
        cfg = self.cfg
        if cfg.preprocess == "resize_and_crop":
            a, b = self._resize(a, cfg.load_size), self._resize(b, cfg.load_size)
        elif cfg.preprocess == "resize":
            a, b = self._resize(a, cfg.crop_size), self._resize(b, cfg.crop_size)
        elif cfg.preprocess == "crop" and a.shape[-2:] != b.shape[-2:]:
            b = TF.resize(b, list(a.shape[-2:]), interpolation=InterpolationMode.BICUBIC, antialias=True)
        if cfg.preprocess in ("resize_and_crop", "crop"):
            h, w = a.shape[-2:]
            if h < cfg.crop_size or w < cfg.crop_size:
                raise ImageError(f"{pair.a}: {w}x{h} is smaller than data.crop_size {cfg.crop_size}; lower crop_size or use preprocess=resize_and_crop")
            top = int(torch.randint(0, h - cfg.crop_size + 1, (1,), generator=gen))
            left = int(torch.randint(0, w - cfg.crop_size + 1, (1,), generator=gen))
            a = TF.crop(a, top, left, cfg.crop_size, cfg.crop_size)
            b = TF.crop(b, top, left, cfg.crop_size, cfg.crop_size)
        if cfg.flip and torch.rand((), generator=gen) < 0.5:
            a, b = TF.horizontal_flip(a), TF.horizontal_flip(b)
        return a, b

    def _eval_view(self, a, b):
        cfg = self.cfg
        if cfg.preprocess == "none":
            return a, b
        if cfg.preprocess == "crop":
            return TF.center_crop(a, cfg.crop_size), TF.center_crop(b, cfg.crop_size)
        return self._resize(a, cfg.crop_size), self._resize(b, cfg.crop_size)


def to_unit_range(img: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return img.float().div_(127.5).sub_(1.0)


def to_image_range(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> float [0, 1] (clamped)."""
    return x.add(1.0).mul_(0.5).clamp_(0.0, 1.0)


class EpochSampler(Sampler):
    """Shuffles deterministically per (seed, epoch) and yields (index, augmentation seed).

    `start` skips the first items of the epoch, so a resumed run sees exactly the batches
    it would have seen without the interruption. With `num_replicas` > 1 each rank takes a
    strided share of the same permutation (distributed training).
    """

    def __init__(self, size: int, seed: int = 0, shuffle: bool = True, rank: int = 0, num_replicas: int = 1):
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.rank, self.num_replicas = rank, num_replicas
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _order(self) -> list[int]:
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 10_007 + self.epoch)
            order = torch.randperm(self.size, generator=gen).tolist()
        else:
            order = list(range(self.size))
        if self.num_replicas > 1:
            # Pad so every rank gets the same number of items (DDP needs equal step counts).
            per_rank = -(-self.size // self.num_replicas)
            order = (order * self.num_replicas)[: per_rank * self.num_replicas]
            order = order[self.rank :: self.num_replicas]
        return order

    def __len__(self) -> int:
        return len(self._order()) - self.start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self._order()[self.start :]:
            yield index, aug_seed(self.seed, self.epoch, index)


def iter_batches(ds: Dataset, indices=None, size: int = 8) -> Iterator[dict]:
    """Evaluation batches of `ds` (int indexing: the deterministic view), in order."""
    indices = list(range(len(ds)) if indices is None else indices)
    for j in range(0, len(indices), size):
        yield collate([ds[i] for i in indices[j : j + size]])


def collate(items: list[dict]) -> dict:
    return {
        "input": torch.stack([it["input"] for it in items]),
        "target": torch.stack([it["target"] for it in items]),
        "name": [it["name"] for it in items],
    }
