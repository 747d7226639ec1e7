"""Image data: pairs (A|B side-by-side images or A/ and B/ folders with matching names), and
what every dataset shares: decoding, the random and evaluation views, the epoch sampler and
the loaders. Two unpaired domains are pix2pix.unpaired_data's.

Every random choice (crop offset, flip) comes from a generator seeded per (run seed, epoch,
index), so an epoch's augmentations are the same whether it runs straight through or resumes
from a checkpoint half-way, and whatever the number of DataLoader workers.

Decoding goes through torchvision.io (libjpeg-turbo / libpng: 0.75 ms against Pillow's 1.08 ms
for a 512x256 JPEG, pixel-identical; TorchCodec, its announced successor, took 0.92 ms) for
the common 8-bit RGB/L JPEG and PNG files, and through Pillow for
everything else (alpha, 16-bit, palette, CMYK, EXIF rotation, other formats). Resizing is
Pillow's antialiased bicubic on uint8, as the reference pix2pix does (2.4x faster than
torchvision's bicubic on uint8 tensors).
"""

from __future__ import annotations

import os
import signal
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms.v2 import functional as TF

from .config import DataConfig
from .errors import ImageError
from .images import (  # noqa: F401 - also the names callers know from here
    IMAGE_EXTENSIONS,
    Pair,
    combined_half_size,
    is_image_file,
    list_images,
    match_by_name,
    open_halves,
    open_image,
    to_channels,
)

# Decoded images kept in memory per dataset (uint8); beyond this, images are re-read each time.
CACHE_LIMIT_BYTES = 2 * 1024**3


def pil_to_uint8(img: Image.Image) -> torch.Tensor:
    """PIL image -> uint8 tensor C x H x W."""
    return TF.pil_to_tensor(img)


# Where torchvision.io decodes exactly what Pillow + to_channels would give: plain 8-bit files.
_FAST_FORMATS = {"JPEG": {"RGB", "L"}, "PNG": {"RGB", "L"}}
_EXIF_ORIENTATION = 0x0112


def decode_uint8(path: Path, channels: int) -> torch.Tensor:
    """A whole image file as upright uint8 C x H x W with `channels` channels (1 or 3)."""
    header = open_image(path, decode=False)
    fast = header.mode in _FAST_FORMATS.get(header.format or "", ()) and (channels == 3 or header.mode == "L")
    if fast and header.format == "JPEG":
        fast = header.getexif().get(_EXIF_ORIENTATION, 1) == 1
    elif fast:  # PNG: 8 bits per sample only (Pillow reads 16-bit RGB as "RGB" too)
        fast = len(header.tile) == 1 and header.tile[0].args in ("RGB", "L")
    header.close()
    if fast:
        try:
            with warnings.catch_warnings():  # deprecated since torchvision 0.29, still the fastest
                warnings.simplefilter("ignore", DeprecationWarning)
                img = decode_image(
                    read_file(str(path)), mode=ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY
                )
            if img.dtype == torch.uint8:
                return img
        except RuntimeError:  # corrupt data: Pillow says what is wrong, in our words
            pass
    return pil_to_uint8(to_channels(open_image(path), channels))


def read_pair(pair: Pair, input_nc: int, output_nc: int, direction: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode one pair into (input, target) uint8 tensors, honouring the direction."""
    a_nc, b_nc = (input_nc, output_nc) if direction == "AtoB" else (output_nc, input_nc)
    if pair.b is not None:
        a, b = decode_uint8(pair.a, a_nc), decode_uint8(pair.b, b_nc)
    elif a_nc == b_nc:
        both = decode_uint8(pair.a, a_nc)
        a, b = _cut(both, pair.a)
    else:  # different channel counts per half: decode once in colour, convert each half
        a_img, b_img = open_halves(pair)
        a, b = pil_to_uint8(to_channels(a_img, a_nc)), pil_to_uint8(to_channels(b_img, b_nc))
    return (a, b) if direction == "AtoB" else (b, a)


def _cut(both: torch.Tensor, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The A (left) and B (right) halves of a combined image, as their own compact tensors."""
    half, _ = combined_half_size(path, both.shape[-1], both.shape[-2])
    return both[..., :half].contiguous(), both[..., half:].contiguous()


def resize_uint8(img: torch.Tensor, size: tuple[int, int] | list[int]) -> torch.Tensor:
    """uint8 C x H x W resized to (height, width) with Pillow's antialiased bicubic."""
    h, w = size
    if tuple(img.shape[-2:]) == (h, w):
        return img
    pil = TF.to_pil_image(img)
    return TF.pil_to_tensor(pil.resize((w, h), Image.Resampling.BICUBIC))


def pair_half_size(pair: Pair) -> tuple[int, int]:
    """(width, height) of one half, from the manifest when known, else from the file header."""
    if pair.size is not None:
        return pair.size
    with open_image(pair.a, decode=False) as img:
        w, h = img.size
    return (w, h) if pair.b is not None else (w // 2, h)


def discover_pairs(root: Path) -> list[Pair]:
    """Find the pairs in a folder: A/ + B/ subfolders with matching names, else A|B images."""
    root = Path(root)
    if not root.is_dir():
        raise ImageError(
            f"{root}: not a folder; point the data path at a folder of A|B images or with A/ and B/ subfolders"
        )
    a_dir, b_dir = root / "A", root / "B"
    if a_dir.is_dir() and b_dir.is_dir():
        pairs, lonely = match_by_name(a_dir, b_dir)
        if lonely:
            other = "B" if lonely[0].parent == a_dir else "A"
            raise ImageError(
                f"{lonely[0]}: has no partner with the same name in {root / other}; add it or remove this file"
            )
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


class CachedDataset(Dataset):
    """What both datasets share: decoded uint8 images kept in memory up to CACHE_LIMIT_BYTES
    (the trainer turns `cache_enabled` off when DataLoader workers decode instead), and whether
    the whole set fits (then epochs after the first decode nothing). Subclasses say how many
    bytes they decode to."""

    def __init__(self, cfg: DataConfig, train: bool):
        self.cfg = cfg
        self.train = train
        self.cache_enabled = cfg.cache
        self._cache: dict = {}
        self._cached_bytes = 0

    def decoded_bytes(self) -> int:
        raise NotImplementedError

    def fits_in_cache(self) -> bool:
        return self.cfg.cache and self.decoded_bytes() <= CACHE_LIMIT_BYTES

    def _remember(self, key, value, size: int) -> None:
        if self.cache_enabled and self._cached_bytes + size <= CACHE_LIMIT_BYTES:
            self._cache[key] = value
            self._cached_bytes += size


class PairedDataset(CachedDataset):
    """Pairs as normalised tensors in [-1, 1]: {"input", "target", "name"}.

    Indexing with an int gives the deterministic evaluation view (resize to crop_size, no
    flip); indexing with (index, seed), as :class:`EpochSampler` does, gives a random
    training view drawn from that seed.
    """

    paired = True

    def __init__(self, pairs: Sequence[Pair] | str | Path, cfg: DataConfig, train: bool = True):
        if isinstance(pairs, (str, Path)):
            self.pairs = discover_pairs(Path(pairs))
        else:  # Pair objects, or paths of combined A|B images
            self.pairs = [p if isinstance(p, Pair) else Pair(Path(p)) for p in pairs]
        if not self.pairs:
            raise ImageError("empty dataset: no pairs given")
        super().__init__(cfg, train)

    def __len__(self) -> int:
        return len(self.pairs)

    def decoded_bytes(self) -> int:
        """Memory the whole dataset takes decoded (uint8), from sizes known or read from headers."""
        channels = self.cfg.input_nc + self.cfg.output_nc
        return sum(w * h * channels for w, h in map(pair_half_size, self.pairs))

    def decoded(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(input, target) as uint8 C x H x W, decoded once and cached while memory allows."""
        if index in self._cache:
            return self._cache[index]
        a, b = read_pair(self.pairs[index], self.cfg.input_nc, self.cfg.output_nc, self.cfg.direction)
        self._remember(index, (a, b), a.numel() + b.numel())
        return a, b

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, seed = (key, None) if isinstance(key, int) else key
        a, b = self.decoded(index)
        if self.train and seed is not None:
            a, b = self._random_view(a, b, torch.Generator().manual_seed(seed), self.pairs[index])
        else:
            a, b = self._eval_view(a, b)
        return {"input": to_unit_range(a), "target": to_unit_range(b), "name": self.pairs[index].name}

    def _random_view(self, a, b, gen: torch.Generator, pair: Pair):
        return random_view(self.cfg, a, b, gen, pair.a)

    def _eval_view(self, a, b):
        return eval_view(self.cfg, a), eval_view(self.cfg, b)


def _square(img: torch.Tensor, size: int) -> torch.Tensor:
    return resize_uint8(img, (size, size))


def random_view(cfg: DataConfig, a: torch.Tensor, b: torch.Tensor | None, gen: torch.Generator, path: Path):
    """The training view of `a` and of its partner `b` (cropped and flipped alike; None for an
    unpaired image), drawn from `gen`: resize, random crop, random flip as `cfg` says."""
    if cfg.preprocess == "resize_and_crop":
        a, b = _square(a, cfg.load_size), b if b is None else _square(b, cfg.load_size)
    elif cfg.preprocess == "resize":
        a, b = _square(a, cfg.crop_size), b if b is None else _square(b, cfg.crop_size)
    elif cfg.preprocess == "crop" and b is not None and a.shape[-2:] != b.shape[-2:]:
        b = resize_uint8(b, a.shape[-2:])
    if cfg.preprocess in ("resize_and_crop", "crop"):
        h, w = a.shape[-2:]
        if h < cfg.crop_size or w < cfg.crop_size:
            raise ImageError(
                f"{path}: {w}x{h} is smaller than data.crop_size {cfg.crop_size}; lower crop_size or "
                "use preprocess=resize_and_crop"
            )
        top = int(torch.randint(0, h - cfg.crop_size + 1, (1,), generator=gen))
        left = int(torch.randint(0, w - cfg.crop_size + 1, (1,), generator=gen))
        a = TF.crop(a, top, left, cfg.crop_size, cfg.crop_size)
        b = b if b is None else TF.crop(b, top, left, cfg.crop_size, cfg.crop_size)
    if cfg.flip and torch.rand((), generator=gen) < 0.5:
        a, b = TF.horizontal_flip(a), b if b is None else TF.horizontal_flip(b)
    return a, b


def eval_view(cfg: DataConfig, img: torch.Tensor) -> torch.Tensor:
    """The deterministic evaluation view of one image (resize, or centre crop, or as it is)."""
    if cfg.preprocess == "none":
        return img
    if cfg.preprocess == "crop":
        return TF.center_crop(img, cfg.crop_size)
    return _square(img, cfg.crop_size)


def loader_workers(setting: int | str, dataset: PairedDataset) -> int:
    """DataLoader workers for `train.num_workers`: a number as given; `auto` = none while the
    decoded dataset fits in the in-memory cache (after the first epoch nothing is decoded),
    else half the cores, at most 8, so decoding overlaps compute with bounded memory."""
    if setting != "auto":
        return int(setting)
    if dataset.fits_in_cache():
        return 0
    return max(1, min(8, len(os.sched_getaffinity(0)) // 2))


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


def _worker_context():
    """DataLoader workers start from a forkserver with the data module preloaded, not as forks
    of this process: a fork inherits its threads and exit handlers (an in-process Prefect flow's,
    for one), which made forked workers exit with status 1 and abort training."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return None  # Windows: DataLoader spawns anyway
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["pix2pix.data"])
    return ctx


def _ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C / SIGTERM to the main process, which finishes its step,
    saves a checkpoint and then stops them; a worker dying first would abort that save."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def training_loader(
    dataset: Dataset, sampler: EpochSampler, batch_size: int, num_workers: int, pin_memory: bool, seed: int
) -> DataLoader:
    """The trainer's DataLoader over `sampler`'s resumable order."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        worker_init_fn=_ignore_stop_signals,
        multiprocessing_context=_worker_context() if num_workers else None,
        # Its own generator: otherwise each new iterator draws from the global RNG, and a
        # resumed run (new iterator mid-epoch) would drift from a straight one.
        generator=torch.Generator().manual_seed(seed),
    )
