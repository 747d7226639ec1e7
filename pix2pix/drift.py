"""Drift of incoming images: a compact reference of the training inputs, the same statistics of
what a model receives, and a two-sample test between them.

Per image (upright uint8, as the network would see it): brightness and contrast (mean and std
of gray), mean red/green/blue and saturation (colour images), and on a centre crop of the
training crop size at native resolution — the pixels one network view covers — edge density
(share of pixels whose gradient is over 0.1) and high-frequency energy (mean absolute
Laplacian). Width and height are recorded but not tested: tiling exists so that a model can
take images larger than its training crops.

Test: scipy's two-sample Kolmogorov-Smirnov per statistic, with a Bonferroni threshold
(alpha / number of statistics), so the chance that in-distribution images raise a false alarm
is at most alpha (default 1 %). Below `min_images` nothing is tested (too little power) and
the report says so.

Torch-free: NumPy, Pillow and SciPy.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ImageError
from .files import atomic_write_text

REFERENCE_NAME = "input_reference.json"  # beside a checkpoint or an export
FORMAT = 1
DEFAULT_ALPHA = 0.01
MIN_IMAGES = 20
REFERENCE_IMAGES = 1000  # training inputs sampled into a reference
INTENSITY = ("brightness", "contrast")
COLOUR = ("mean_red", "mean_green", "mean_blue", "saturation")
TEXTURE = ("edge_density", "high_frequency")
SUMMARY_PIXELS = 1_000_000  # means over larger images use a regular subsample


def tested_statistics(channels: int) -> tuple[str, ...]:
    return INTENSITY + (COLOUR if channels == 3 else ()) + TEXTURE


def image_statistics(arr: np.ndarray, crop_size: int) -> dict[str, float]:
    """The drift statistics of one uint8 H x W x C image (C = 1 or 3)."""
    h, w, c = arr.shape
    step = max(1, int(np.ceil(np.sqrt(h * w / SUMMARY_PIXELS))))
    small = arr[::step, ::step].astype(np.float32) / 255.0
    gray = small.mean(axis=2) if c == 1 else small @ np.array([0.299, 0.587, 0.114], np.float32)
    stats = {"width": float(w), "height": float(h), "brightness": float(gray.mean()), "contrast": float(gray.std())}
    if c == 3:
        hi, lo = small.max(axis=2), small.min(axis=2)
        saturation = np.where(hi > 0, (hi - lo) / np.maximum(hi, 1e-6), 0.0)
        means = small.reshape(-1, 3).mean(axis=0)
        stats.update(
            mean_red=float(means[0]), mean_green=float(means[1]), mean_blue=float(means[2]),
            saturation=float(saturation.mean()),
        )  # fmt: skip
    top, left = max(0, (h - crop_size) // 2), max(0, (w - crop_size) // 2)
    crop = arr[top : top + crop_size, left : left + crop_size].astype(np.float32) / 255.0
    g = crop.mean(axis=2) if c == 1 else crop @ np.array([0.299, 0.587, 0.114], np.float32)
    gx, gy = np.diff(g, axis=1)[:-1, :], np.diff(g, axis=0)[:, :-1]
    stats["edge_density"] = float((np.hypot(gx, gy) > 0.1).mean()) if gx.size else 0.0
    lap = g[1:-1, 1:-1] * 4 - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    stats["high_frequency"] = float(np.abs(lap).mean()) if lap.size else 0.0
    return stats


def build_reference(images: Iterable[np.ndarray], channels: int, crop_size: int, source: str = "") -> dict[str, Any]:
    """A reference (a small JSON-able dict) from training input images (uint8 H x W x C)."""
    rows = [image_statistics(arr, crop_size) for arr in images]
    if not rows:
        raise ImageError(f"{source or 'drift reference'}: no training inputs to describe")
    names = ("width", "height") + tested_statistics(channels)
    return {
        "format": FORMAT,
        "channels": channels,
        "crop_size": crop_size,
        "count": len(rows),
        "source": source,
        "statistics": list(tested_statistics(channels)),
        "values": {n: [round(r[n], 6) for r in rows] for n in names},
    }


def reference_from_pairs(pairs: Sequence, data_cfg, limit: int = REFERENCE_IMAGES, seed: int = 0) -> dict[str, Any]:
    """The reference of a paired dataset's inputs (the A or B half, as `direction` says), from
    at most `limit` pairs drawn with a fixed seed."""
    from .images import open_halves, to_channels

    chosen = list(pairs)
    if len(chosen) > limit:
        chosen = random.Random(seed).sample(chosen, limit)

    def inputs():
        for pair in chosen:
            a, b = open_halves(pair)
            arr = np.asarray(to_channels(a if data_cfg.direction == "AtoB" else b, data_cfg.input_nc))
            yield arr[..., None] if arr.ndim == 2 else arr

    return build_reference(inputs(), data_cfg.input_nc, data_cfg.crop_size, source=f"{len(chosen)} training inputs")


def reference_of(dataset, data_cfg, limit: int = REFERENCE_IMAGES) -> dict[str, Any]:
    """The reference of a training dataset's inputs: a paired one's input halves, or an unpaired
    one's input domain (pix2pix.unpaired_data.UnpairedDataset.input_arrays)."""
    if getattr(dataset, "paired", True):
        return reference_from_pairs(dataset.pairs, data_cfg, limit)
    arrays = dataset.input_arrays(limit)
    return build_reference(arrays, data_cfg.input_nc, data_cfg.crop_size, source="training inputs (input domain)")


def write_reference(reference: Mapping[str, Any], path: Path | str) -> Path:
    return atomic_write_text(path, json.dumps(reference) + "\n")


def load_reference(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    try:
        reference = json.loads(path.read_text())
    except FileNotFoundError:
        raise ImageError(f"{path}: no drift reference here; train (or export) writes {REFERENCE_NAME}") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ImageError(f"{path}: unreadable drift reference ({e}); re-export the model") from None
    if not isinstance(reference, dict) or reference.get("format") != FORMAT or "values" not in reference:
        raise ImageError(f"{path}: not a pix2pix drift reference (format {FORMAT}); re-export the model")
    return reference


def reference_beside(model: Path | str) -> Path | None:
    """The reference file in the model file's folder, if there is one."""
    path = Path(model).parent / REFERENCE_NAME
    return path if path.is_file() else None


def drift_report(
    reference: Mapping[str, Any],
    rows: Sequence[Mapping[str, float]],
    alpha: float = DEFAULT_ALPHA,
    min_images: int = MIN_IMAGES,
) -> dict[str, Any]:
    """Kolmogorov-Smirnov per statistic between the reference and `rows` (image_statistics of
    the incoming images): {"drift": bool, "tested": bool, ...}, JSON-able."""
    from scipy.stats import ks_2samp

    names = list(reference["statistics"])
    threshold = alpha / len(names)
    report: dict[str, Any] = {
        "drift": False,
        "tested": len(rows) >= min_images,
        "count": len(rows),
        "reference_count": reference["count"],
        "test": "two-sample Kolmogorov-Smirnov (scipy.stats.ks_2samp) per statistic, Bonferroni-corrected",
        "alpha": alpha,
        "threshold": threshold,
        "min_images": min_images,
        "statistics": {},
    }
    if not report["tested"]:
        report["reason"] = f"{len(rows)} image(s): fewer than {min_images}, too few to test"
    for name in names:
        ref = np.asarray(reference["values"][name], dtype=float)
        cur = np.asarray([r[name] for r in rows if name in r], dtype=float)
        entry = {
            "reference_mean": float(ref.mean()),
            "current_mean": float(cur.mean()) if cur.size else None,
        }
        if report["tested"] and cur.size:
            result = ks_2samp(ref, cur)
            entry.update(
                ks=float(result.statistic), p_value=float(result.pvalue), drift=bool(result.pvalue < threshold)
            )
            report["drift"] = report["drift"] or entry["drift"]
        report["statistics"][name] = entry
    report["drifted"] = [n for n, e in report["statistics"].items() if e.get("drift")]
    return report
