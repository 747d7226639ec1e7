"""Translate images of any size in bounded memory: overlapping tiles, blended smoothly.

One network pass sees at most `tile_megapixels` (padded up to the network's size multiple).
A larger image is cut into square tiles that overlap by `overlap` pixels; each output tile is
weighted by a ramp that falls linearly to zero across the overlap (flat at the image's own
borders), and the weights of neighbouring tiles sum to one, so there is no seam to see.

Tiles agree on brightness because the network runs in eval mode: BatchNorm uses its fixed
running statistics. InstanceNorm has none, so for eager (checkpoint) generators the statistics
of every InstanceNorm layer are measured once on the whole image (downscaled to at most
CALIBRATION_TILES tiles' pixels) and then held fixed for every tile (`frozen_instance_norm`):
every tile is normalised alike, so no tile is brighter than its neighbour. That is exact when
the whole image fits the calibration budget and an approximation beyond it (the statistics of
a downscaled image); exported files (TorchScript, ONNX) normalise each tile by its own.

Memory: the input stays uint8; output is accumulated in float32 one row of tiles at a time
(rows finished are written to the uint8 result), so the extra memory is about
3 x tile x width floats, not the whole image in float.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .config import TILE_MEGAPIXELS as DEFAULT_TILE_MEGAPIXELS
from .config import TILE_OVERLAP as DEFAULT_OVERLAP

CALIBRATION_TILES = 4  # InstanceNorm statistics are measured on up to this many tiles' pixels


def tile_side(tile_megapixels: float, multiple: int) -> int:
    """The largest square tile side (a multiple of `multiple`) within the pixel budget."""
    side = int(math.sqrt(tile_megapixels * 1e6) // multiple) * multiple
    return max(side, multiple)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of `tile` pixels covering [0, length), neighbours overlapping by
    at least `overlap`; the last tile ends at the border."""
    if length <= tile:
        return [0]
    stride = max(tile - overlap, 1)
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def ramp(size: int, overlap: int, ramp_start: bool, ramp_end: bool) -> np.ndarray:
    """1-D blend weights: rising over the first `overlap` pixels and falling over the last,
    on the sides that meet another tile; neighbours at stride size-overlap sum to 1."""
    w = np.ones(size, dtype=np.float32)
    i = np.arange(size, dtype=np.float32)
    if overlap > 0 and ramp_start:
        w = np.minimum(w, (i + 1) / (overlap + 1))
    if overlap > 0 and ramp_end:
        w = np.minimum(w, (size - i) / (overlap + 1))
    return w


def _to_input(arr: np.ndarray) -> torch.Tensor:
    """uint8 H x W x C -> float 1 x C x H x W in [-1, 1]."""
    return torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1)[None].float().div(127.5).sub(1.0)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad the bottom/right of N x C x H x W up to multiples of `multiple`; also (H, W)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    # Reflection needs the pad to be smaller than the side; beyond that repeat the border.
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (h, w)


def run_padded(runner, arr: np.ndarray) -> np.ndarray:
    """One network pass over a uint8 H x W x C array: float32 H x W x C_out in [0, 1]."""
    h, w = arr.shape[:2]
    y = runner(pad_to_multiple(_to_input(arr), runner.multiple)[0])[0, :, :h, :w]
    return y.float().add(1.0).mul(0.5).clamp(0.0, 1.0).permute(1, 2, 0).numpy()


def _to_uint8(y: np.ndarray) -> np.ndarray:
    return np.round(y * 255.0).astype(np.uint8)


def translate_array(
    runner, arr: np.ndarray, tile_megapixels: float = DEFAULT_TILE_MEGAPIXELS, overlap: int = DEFAULT_OVERLAP
) -> np.ndarray:
    """Translate a uint8 H x W x C image of any size: uint8 H x W x C_out.

    An image whose padded size fits the budget goes through in one pass (exactly the untiled
    result); a larger one in overlapping tiles."""
    h, w = arr.shape[:2]
    m = runner.multiple
    if math.ceil(h / m) * m * math.ceil(w / m) * m <= tile_megapixels * 1e6:
        return _to_uint8(run_padded(runner, arr))
    tile = tile_side(tile_megapixels, m)
    overlap = min(overlap, tile // 2)
    with _frozen_statistics(runner, arr, tile_megapixels):
        return _tiled(runner, arr, tile, overlap)


def _tiled(runner, arr: np.ndarray, tile: int, overlap: int) -> np.ndarray:
    h, w = arr.shape[:2]
    channels = runner.output_nc
    out = np.empty((h, w, channels), dtype=np.uint8)
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    # The float accumulator covers rows [top, top + len(acc)) and only the current row of tiles.
    top, acc, wsum = 0, np.zeros((0, w, channels), np.float32), np.zeros((0, w, 1), np.float32)
    for r, y0 in enumerate(ys):
        th = min(tile, h - y0)
        done = y0 - top  # rows above this row of tiles are final: no later tile reaches them
        if done > 0:
            out[top:y0] = _to_uint8(acc[:done] / wsum[:done])
            acc, wsum, top = acc[done:], wsum[done:], y0
        grow = y0 + th - (top + len(acc))
        if grow > 0:
            acc = np.concatenate([acc, np.zeros((grow, w, channels), np.float32)])
            wsum = np.concatenate([wsum, np.zeros((grow, w, 1), np.float32)])
        wy = ramp(th, overlap, r > 0, r < len(ys) - 1)
        for c, x0 in enumerate(xs):
            tw = min(tile, w - x0)
            y = run_padded(runner, arr[y0 : y0 + th, x0 : x0 + tw])
            weight = wy[:, None, None] * ramp(tw, overlap, c > 0, c < len(xs) - 1)[None, :, None]
            acc[y0 - top : y0 - top + th, x0 : x0 + tw] += y * weight
            wsum[y0 - top : y0 - top + th, x0 : x0 + tw] += weight
    out[top:] = _to_uint8(acc / wsum)
    return out


# --- InstanceNorm held fixed across tiles (eager generators only) ---------------------------


@contextlib.contextmanager
def frozen_instance_norm(module: nn.Module, calibration: torch.Tensor):
    """Within the block, every InstanceNorm2d of `module` normalises with the per-channel mean
    and variance it saw on `calibration` (one forward pass), not with each input's own."""
    norms = [m for m in module.modules() if isinstance(m, nn.InstanceNorm2d) and not m.track_running_stats]
    if not norms:
        yield
        return
    stats: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}

    def record(m, inputs):
        x = inputs[0].float()
        stats[m] = (x.mean(dim=(2, 3), keepdim=True), x.var(dim=(2, 3), unbiased=False, keepdim=True))

    handles = [m.register_forward_pre_hook(record) for m in norms]
    with torch.no_grad():
        module(calibration)
    for h in handles:
        h.remove()

    def fixed(m):
        def forward(x):
            mean, var = stats[m]
            y = (x - mean.to(x.dtype)) * torch.rsqrt(var.to(x.dtype) + m.eps)
            if m.affine:
                y = y * m.weight[None, :, None, None] + m.bias[None, :, None, None]
            return y

        return forward

    for m in norms:
        m.forward = fixed(m)
    try:
        yield
    finally:
        for m in norms:
            del m.forward  # back to the class's forward


@contextlib.contextmanager
def _frozen_statistics(runner, arr: np.ndarray, tile_megapixels: float):
    module = getattr(runner, "module", None)
    if module is None or not any(isinstance(m, nn.InstanceNorm2d) for m in module.modules()):
        yield
        return
    h, w = arr.shape[:2]
    scale = min(1.0, math.sqrt(CALIBRATION_TILES * tile_megapixels * 1e6 / (h * w)))
    if scale < 1:  # downscaled in uint8 (Pillow's box filter): never the whole image in float
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        arr = np.asarray(Image.fromarray(arr.squeeze(-1) if arr.shape[-1] == 1 else arr).resize(size, Image.BOX))
        arr = arr[..., None] if arr.ndim == 2 else arr
    small, _ = pad_to_multiple(_to_input(arr), runner.multiple)
    with frozen_instance_norm(module, small.to(runner.device)):
        yield
