"""The embedded default dataset: synthetic facades, generated offline and deterministically.

Each example is a side-by-side A|B image like the official facades set: A (left) is a
rendered "photo" of a building front, B (right) its label map in flat class colours. The
default direction is BtoA (labels -> photo), as pix2pix trains facades.

Photos are rendered from the layout with per-class textures (brick courses, plaster grain,
glass with sky reflections and frames, wood grain), a lighting gradient, per-image colour
variation and sensor noise, so a model must learn structure and texture, not a lookup table.
The same (seed, split, index) always gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# Label colours (B side), loosely following the CMP facade palette.
CLASSES = {
    "sky": (0, 0, 170),
    "wall_plaster": (0, 85, 255),
    "wall_brick": (0, 170, 255),
    "cornice": (0, 255, 255),
    "window": (255, 85, 0),
    "door": (170, 0, 0),
    "balcony": (170, 255, 85),
    "shop": (255, 255, 0),
}

SPLITS = ("train", "val", "test")


def _texture(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """Smooth random field in [-1, 1]: upsampled coarse noise (cheap stand-in for Perlin)."""
    ch, cw = max(2, int(h / scale)), max(2, int(w / scale))
    coarse = rng.standard_normal((ch, cw)).astype(np.float32)
    img = Image.fromarray(coarse).resize((w, h), Image.BICUBIC)
    arr = np.asarray(img, dtype=np.float32)
    return arr / (np.abs(arr).max() + 1e-6)


def _layout(rng: np.random.Generator, size: int) -> np.ndarray:
    """Class index map (H x W) of one facade; indices follow the CLASSES order."""
    names = list(CLASSES)
    cls = {n: i for i, n in enumerate(names)}
    s = size
    m = np.full((s, s), cls["sky"], dtype=np.uint8)
    sky_h = int(rng.uniform(0.05, 0.3) * s)
    left = int(rng.uniform(0.0, 0.15) * s)
    right = s - int(rng.uniform(0.0, 0.15) * s)
    wall = cls["wall_brick"] if rng.random() < 0.5 else cls["wall_plaster"]
    m[sky_h:, left:right] = wall
    cornice_h = max(1, int(rng.uniform(0.02, 0.05) * s))
    m[sky_h : sky_h + cornice_h, left:right] = cls["cornice"]

    floors = int(rng.integers(3, 6))
    cols = int(rng.integers(2, 5))
    has_shop = rng.random() < 0.4
    top = sky_h + cornice_h + int(0.03 * s)
    bottom = s
    floor_h = (bottom - top) / floors
    col_w = (right - left) / cols
    win_w = rng.uniform(0.35, 0.6) * col_w
    win_h = rng.uniform(0.4, 0.65) * floor_h
    door_col = int(rng.integers(0, cols))
    for f in range(floors):
        y0 = int(top + f * floor_h + (floor_h - win_h) * 0.4)
        ground = f == floors - 1
        if ground and has_shop:
            m[int(top + f * floor_h + 0.15 * floor_h) : bottom, left + int(0.05 * s) : right - int(0.05 * s)] = cls["shop"]
            continue
        for c in range(cols):
            x0 = int(left + c * col_w + (col_w - win_w) / 2)
            if ground and c == door_col:
                dw = int(min(col_w * 0.7, win_w * 1.3))
                dx = int(left + c * col_w + (col_w - dw) / 2)
                m[int(top + f * floor_h + 0.2 * floor_h) : bottom, dx : dx + dw] = cls["door"]
                continue
            m[y0 : y0 + int(win_h), x0 : x0 + int(win_w)] = cls["window"]
        if not ground and f > 0 and rng.random() < 0.45:  # a balcony row under this floor's windows
            by = y0 + int(win_h)
            bh = max(2, int(0.12 * floor_h))
            m[by : by + bh, left + int(0.04 * s) : right - int(0.04 * s)] = np.where(
                m[by : by + bh, left + int(0.04 * s) : right - int(0.04 * s)] == cls["window"], cls["window"], cls["balcony"]
            )
    return m


def _render(rng: np.random.Generator, m: np.ndarray) -> np.ndarray:
    """Photo (H x W x 3 float in [0, 1]) for a class map."""
    names = list(CLASSES)
    s = m.shape[0]
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    photo = np.zeros((s, s, 3), dtype=np.float32)
    jitter = lambda base, amount=0.04: np.clip(np.array(base) + rng.uniform(-amount, amount, 3), 0, 1)  # noqa: E731

    def paint(name: str, rgb: np.ndarray) -> None:
        mask = m == names.index(name)
        photo[mask] = rgb[mask] if rgb.ndim == 3 else rgb

    # Sky: vertical gradient from pale to deeper blue.
    sky_top, sky_bottom = jitter((0.45, 0.62, 0.85)), jitter((0.78, 0.86, 0.95))
    paint("sky", sky_top * (1 - yy[..., None]) + sky_bottom * yy[..., None])
    # Brick: reddish courses with mortar lines, laid from the top of the wall (so the label
    # map determines where they fall), each course offset by half a brick.
    course = max(3, s // 16)
    wall_rows = np.nonzero((m == names.index("wall_brick")).any(axis=1))[0]
    wall_cols = np.nonzero((m == names.index("wall_brick")).any(axis=0))[0]
    top = wall_rows[0] if len(wall_rows) else 0
    left = wall_cols[0] if len(wall_cols) else 0
    rows, cols = np.mgrid[0:s, 0:s]
    row_in_wall = rows - top
    offset = (row_in_wall // course % 2) * (course * 3 // 2)
    mortar = (row_in_wall % course == 0) | ((cols - left + offset) % (course * 3) == 0)
    brick = jitter((0.62, 0.32, 0.24))[None, None, :] * (1 + 0.08 * _texture(rng, s, s, 3)[..., None])
    brick = np.where(mortar[..., None], jitter((0.78, 0.74, 0.68), 0.03)[None, None, :], brick)
    paint("wall_brick", brick)
    # Plaster: pale, with a soft blotchy grain.
    plaster = jitter((0.86, 0.8, 0.66))[None, None, :] * (1 + 0.06 * _texture(rng, s, s, 6)[..., None])
    paint("wall_plaster", plaster)
    paint("cornice", jitter((0.93, 0.92, 0.88), 0.03)[None, None, :] * (0.85 + 0.15 * _texture(rng, s, s, 8)[..., None]))
    # Windows: dark glass with a diagonal sky reflection, and a light frame at their edges.
    glass = jitter((0.16, 0.22, 0.3), 0.04)[None, None, :] + 0.18 * np.clip(1 - np.abs(xx - yy - 0.1) * 6, 0, 1)[..., None]
    paint("window", glass)
    win = m == names.index("window")
    edge = win & ~(np.roll(win, 1, 0) & np.roll(win, -1, 0) & np.roll(win, 1, 1) & np.roll(win, -1, 1))
    photo[edge] = jitter((0.92, 0.92, 0.9), 0.03)
    # Door: wood with vertical grain; shop front: bright glass; balcony: dark iron railing.
    wood = jitter((0.4, 0.24, 0.12), 0.04)[None, None, :] * (1 + 0.2 * np.sin(xx * s * 1.7 + 2 * _texture(rng, s, s, 4))[..., None])
    paint("door", wood)
    paint("shop", jitter((0.55, 0.6, 0.62))[None, None, :] + 0.15 * yy[..., None])
    rail = (np.arange(s)[None, :] % max(2, s // 40) == 0) | (np.arange(s)[:, None] % max(3, s // 20) == 0)
    paint("balcony", np.where(rail[..., None], 0.12, 0.3) * np.ones((s, s, 3), np.float32))

    # Sunlight from the upper left (direction and strength vary a little), then sensor noise.
    angle = np.pi / 4 + rng.uniform(-0.4, 0.4)
    strength = rng.uniform(0.12, 0.22)
    light = 1.0 - strength * (np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5))
    photo = photo * light[..., None]
    photo += rng.normal(0, 0.015, photo.shape).astype(np.float32)
    return np.clip(photo, 0, 1)


def facade(seed: int, size: int) -> tuple[Image.Image, Image.Image]:
    """(photo, labels) for one seed, each size x size RGB."""
    rng = np.random.default_rng(seed)
    m = _layout(rng, size)
    palette = np.array(list(CLASSES.values()), dtype=np.uint8)
    labels = Image.fromarray(palette[m], mode="RGB")
    photo = Image.fromarray((_render(rng, m) * 255).round().astype(np.uint8), mode="RGB")
    return photo, labels


def generate(
    out_dir: Path | str,
    counts: dict[str, int],
    size: int = 64,
    seed: int = 0,
    photos_only: bool = False,
    unpaired: bool = False,
) -> dict[str, int]:
    """Write `out_dir/<split>/<n>.png` A|B images (A photo, B labels); returns counts written.

    `photos_only` writes just the photos (size x size), as ordinary pictures for the pair
    builders (pipeline/data/builders.py). `unpaired` writes two unrelated domains in the
    reference's unaligned layout: `<split>A/` photos of the even-numbered facades and `<split>B/`
    label maps of the odd-numbered ones (no photo has its own label map on the other side)."""
    out_dir = Path(out_dir)
    written = {}
    for split_index, split in enumerate(SPLITS):
        n = int(counts.get(split, 0))
        if n <= 0:
            continue
        folder = out_dir / split
        if unpaired:
            _write_domains(out_dir, split, split_index, n, size, seed)
            written[split] = n
            continue
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            photo, labels = facade(seed * 1_000_003 + split_index * 100_003 + i, size)
            if photos_only:
                photo.save(folder / f"{i + 1}.png", optimize=False)
                continue
            combined = Image.new("RGB", (2 * size, size))
            combined.paste(photo, (0, 0))
            combined.paste(labels, (size, 0))
            combined.save(folder / f"{i + 1}.png", optimize=False)
        written[split] = n
    return written


def _write_domains(out_dir: Path, split: str, split_index: int, n: int, size: int, seed: int) -> None:
    a, b = out_dir / f"{split}A", out_dir / f"{split}B"
    a.mkdir(parents=True, exist_ok=True)
    b.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        photo, _ = facade(seed * 1_000_003 + split_index * 100_003 + 2 * i, size)
        _, labels = facade(seed * 1_000_003 + split_index * 100_003 + 2 * i + 1, size)
        photo.save(a / f"photo_{i + 1}.png", optimize=False)
        labels.save(b / f"labels_{i + 1}.png", optimize=False)
