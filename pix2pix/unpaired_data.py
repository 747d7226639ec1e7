"""Unpaired data: two unrelated domains (trainA/ + trainB/, the reference's unaligned layout and
the official CycleGAN archives, or A/ + B/ whose names and counts need not match), or a paired
set split apart so that no pair is ever seen together. Decoding, views and seeding are
pix2pix.data's, so an unpaired epoch resumes exactly like a paired one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from .config import DataConfig
from .data import (
    CachedDataset,
    decode_uint8,
    eval_view,
    pair_half_size,
    random_view,
    read_pair,
    to_unit_range,
)
from .errors import ImageError
from .images import IMAGE_EXTENSIONS, Pair, is_image_file, list_images, open_image


def discover_domains(root: Path, split: str = "train") -> tuple[list[Path], list[Path]]:
    """The A and B images of an unpaired folder: `{split}A/` + `{split}B/` (the reference's
    unaligned layout and the official CycleGAN archives), else `A/` + `B/`; names and counts need
    not match. A paired folder (A|B images, or A/ and B/ with matching names and nothing else)
    is refused with the way to train it unpaired on purpose."""
    root = Path(root)
    if not root.is_dir():
        raise ImageError(f"{root}: not a folder; point the data path at a folder with {split}A/ and {split}B/ folders")
    for a_dir, b_dir in ((root / f"{split}A", root / f"{split}B"), (root / "A", root / "B")):
        if a_dir.is_dir() or b_dir.is_dir():
            break
    else:
        paired = any(is_image_file(p) for p in root.iterdir())
        hint = (
            "this folder holds A|B pairs: train it as pairs (model.kind paired), or unpaired on purpose with "
            "data.pairs_apart true (--pairs-apart)"
            if paired
            else f"add {split}A/ and {split}B/ (or A/ and B/) folders of images"
        )
        raise ImageError(f"{root}: no {split}A/ + {split}B/ or A/ + B/ domain folders; {hint}")
    domains = []
    for folder in (a_dir, b_dir):
        images = list_images(folder) if folder.is_dir() else []
        if not images:
            state = "is empty" if folder.is_dir() else "is missing"
            raise ImageError(f"{folder}: the domain folder {state}; add images ({', '.join(IMAGE_EXTENSIONS)}) to it")
        domains.append(images)
    return domains[0], domains[1]


def split_pairs_apart(pairs: Sequence[Pair], seed: int = 0) -> tuple[list[Pair], list[Pair]]:
    """A paired set as two unrelated domains: a seeded half of the pairs gives its A sides, the
    other half its B sides, so no pair is ever seen together."""
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed)).tolist()
    if len(order) < 2:
        raise ImageError(f"{len(order)} pair(s): splitting pairs apart needs at least 2")
    half = len(order) // 2
    return [pairs[i] for i in sorted(order[:half])], [pairs[i] for i in sorted(order[half:])]


class UnpairedDataset(CachedDataset):
    """Two unrelated domains as {"input", "target", "name"} in [-1, 1], where the target is an
    image of the output domain unrelated to the input.

    Its length is the larger domain's. Item (index, seed) draws the input domain's image at
    `index` (modulo its size) and an image of the other domain at random from `seed`, each with
    its own crop and flip, so an epoch is the same straight through or resumed; an int index is
    the deterministic evaluation view (both domains at index modulo their sizes).

    Built from two lists of image files (`from_folder`), or from pairs split apart
    (`from_pairs`: the A or B half of each pair, as `direction` says)."""

    paired = False

    def __init__(self, domain_a: Sequence, domain_b: Sequence, cfg: DataConfig, train: bool = True):
        self.domains = {"A": list(domain_a), "B": list(domain_b)}
        for name, items in self.domains.items():
            if not items:
                raise ImageError(f"empty dataset: no images in domain {name}")
        super().__init__(cfg, train)
        # The input domain comes first: A for AtoB, B for BtoA.
        self.order = ("A", "B") if cfg.direction == "AtoB" else ("B", "A")

    @classmethod
    def from_folder(cls, root: Path | str, cfg: DataConfig, split: str = "train", train: bool = True):
        a, b = discover_domains(Path(root), split)
        return cls(a, b, cfg, train)

    @classmethod
    def from_pairs(cls, pairs: Sequence[Pair], cfg: DataConfig, seed: int = 0, train: bool = True):
        a, b = split_pairs_apart(pairs, seed)
        return cls([(p, "A") for p in a], [(p, "B") for p in b], cfg, train)

    @property
    def inputs(self) -> list:
        return self.domains[self.order[0]]

    @property
    def targets(self) -> list:
        return self.domains[self.order[1]]

    def __len__(self) -> int:
        return max(len(self.inputs), len(self.targets))

    def _channels(self, domain: str) -> int:
        return self.cfg.input_nc if domain == self.order[0] else self.cfg.output_nc

    def _path(self, item) -> Path:
        return item[0].a if isinstance(item, tuple) else Path(item)

    def image_sizes(self) -> Iterator[tuple[int, int, int]]:
        """(width, height, channels) of every image, from the file headers (or the manifest)."""
        for domain, items in self.domains.items():
            for item in items:
                if isinstance(item, tuple):
                    w, h = pair_half_size(item[0])
                else:
                    with open_image(item, decode=False) as img:
                        w, h = img.size
                yield w, h, self._channels(domain)

    def decoded_bytes(self) -> int:
        return sum(w * h * c for w, h, c in self.image_sizes())

    def input_arrays(self, limit: int, seed: int = 0) -> Iterator:
        """Up to `limit` input-domain images (drawn with a fixed seed) as uint8 H x W x C
        arrays: what the drift reference describes."""
        src = self.order[0]
        count = len(self.domains[src])
        chosen = sorted(torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:limit].tolist())
        for i in chosen:
            yield self.decoded(src, i).permute(1, 2, 0).numpy()

    def decoded(self, domain: str, index: int) -> torch.Tensor:
        key = (domain, index)
        if key in self._cache:
            return self._cache[key]
        item = self.domains[domain][index]
        channels = self._channels(domain)
        if isinstance(item, tuple):  # one half of a pair
            pair, half = item
            a, b = read_pair(pair, channels, channels, "AtoB")
            img = a if half == "A" else b
        else:
            img = decode_uint8(Path(item), channels)
        self._remember(key, img, img.numel())
        return img

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, seed = (key, None) if isinstance(key, int) else key
        src, dst = self.order
        i = index % len(self.domains[src])
        if self.train and seed is not None:
            gen = torch.Generator().manual_seed(seed)
            j = int(torch.randint(0, len(self.domains[dst]), (), generator=gen))
            a, _ = random_view(self.cfg, self.decoded(src, i), None, gen, self._path(self.domains[src][i]))
            b, _ = random_view(self.cfg, self.decoded(dst, j), None, gen, self._path(self.domains[dst][j]))
        else:
            j = index % len(self.domains[dst])
            a, b = eval_view(self.cfg, self.decoded(src, i)), eval_view(self.cfg, self.decoded(dst, j))
        return {"input": to_unit_range(a), "target": to_unit_range(b), "name": self._path(self.domains[src][i]).stem}
