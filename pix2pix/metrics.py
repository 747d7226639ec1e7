"""Image-quality metrics on [0, 1] images: L1, PSNR and SSIM (torchmetrics)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from .data import to_image_range

# The one list of test metrics (evaluation, tags, the promotion gate) and which way is better.
HIGHER_IS_BETTER = {"l1": False, "psnr": True, "ssim": True}
METRIC_NAMES = tuple(HIGHER_IS_BETTER)


def per_image_metrics(fake: torch.Tensor, real: torch.Tensor) -> dict[str, torch.Tensor]:
    """Metrics for each image of a batch; inputs in [0, 1], shape N x C x H x W."""
    fake, real = fake.float().clamp(0, 1), real.float().clamp(0, 1)
    dims = (1, 2, 3)
    return {
        "l1": (fake - real).abs().mean(dim=dims),
        "psnr": peak_signal_noise_ratio(fake, real, data_range=1.0, reduction="none", dim=dims),
        "ssim": structural_similarity_index_measure(fake, real, data_range=1.0, reduction="none"),
    }


@torch.no_grad()
def evaluate(
    generator: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[dict],
    device: torch.device | str = "cpu",
) -> tuple[dict[str, float], list[dict]]:
    """Run the generator over batches of {"input", "target", "name"} in [-1, 1].

    Returns (mean metrics, one row per image with its name and metrics).
    """
    rows: list[dict] = []
    for batch in batches:
        fake = generator(batch["input"].to(device))
        scores = per_image_metrics(to_image_range(fake), to_image_range(batch["target"].to(device)))
        for i, name in enumerate(batch["name"]):
            rows.append({"name": name, **{k: float(v[i]) for k, v in scores.items()}})
    if not rows:
        raise ValueError("evaluate: no images to evaluate")
    means = {k: sum(r[k] for r in rows) / len(rows) for k in METRIC_NAMES}
    return means, rows
