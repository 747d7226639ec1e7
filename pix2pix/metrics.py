"""Image-quality metrics on [0, 1] images: L1, PSNR and SSIM (torchmetrics), and a sharpness
ratio that needs no pretrained network: the outputs' high-frequency energy over the targets'
(1.0 = as sharp as the real images; a blurry average scores far below 1)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from .config import HIGHER_IS_BETTER, METRIC_NAMES  # noqa: F401 (the one list lives in config)
from .data import to_image_range


def ssim(fake: torch.Tensor, real: torch.Tensor, reduction: str | None = "elementwise_mean") -> torch.Tensor:
    """SSIM of [0, 1] images (torchmetrics, 11x11 Gaussian window): what evaluation reports and
    what the SSIM loss (pix2pix.losses.ssim_loss) trains for. Differentiable."""
    # torchmetrics (with scipy and matplotlib: 2-4 s) loads when a score is computed, not when
    # this module is imported: export, predict and the page import it for the names only.
    from torchmetrics.functional.image import structural_similarity_index_measure

    return structural_similarity_index_measure(fake, real, data_range=1.0, reduction=reduction)


def per_image_metrics(fake: torch.Tensor, real: torch.Tensor) -> dict[str, torch.Tensor]:
    """Metrics for each image of a batch; inputs in [0, 1], shape N x C x H x W."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    fake, real = fake.float().clamp(0, 1), real.float().clamp(0, 1)
    dims = (1, 2, 3)
    return {
        "l1": (fake - real).abs().mean(dim=dims),
        "psnr": peak_signal_noise_ratio(fake, real, data_range=1.0, reduction="none", dim=dims),
        "ssim": ssim(fake, real, reduction="none"),
    }


_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def high_frequency_energy(images: torch.Tensor) -> torch.Tensor:
    """Per image: the mean squared 3x3 Laplacian of its luminance (N x C x H x W in [0, 1])."""
    x = images.float().clamp(0, 1)
    if x.shape[1] == 3:
        x = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    kernel = _LAPLACIAN.to(x.device).view(1, 1, 3, 3)
    return torch.nn.functional.conv2d(x, kernel).pow(2).mean(dim=(1, 2, 3))


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
    energy = {"fake": 0.0, "real": 0.0}
    for batch in batches:
        fake, real = to_image_range(generator(batch["input"].to(device))), to_image_range(batch["target"].to(device))
        scores = per_image_metrics(fake, real)
        energy["fake"] += float(high_frequency_energy(fake).sum())
        energy["real"] += float(high_frequency_energy(real).sum())
        for i, name in enumerate(batch["name"]):
            rows.append({"name": name, **{k: float(v[i]) for k, v in scores.items()}})
    if not rows:
        raise ValueError("evaluate: no images to evaluate")
    means = {k: sum(r[k] for r in rows) / len(rows) for k in METRIC_NAMES}
    means["sharpness"] = energy["fake"] / max(energy["real"], 1e-12)  # over the split, not a mean of ratios
    return means, rows


@torch.no_grad()
def unpaired_scores(
    g: Callable[[torch.Tensor], torch.Tensor],
    f: Callable[[torch.Tensor], torch.Tensor],
    domain_a: Iterable[tuple[str, torch.Tensor]],
    domain_b: Iterable[tuple[str, torch.Tensor]],
    device: torch.device | str = "cpu",
    identity: bool = True,
    names: tuple[str, str] = ("A", "B"),
) -> tuple[dict[str, float], list[dict]]:
    """What an unpaired model (G: A -> B, F: B -> A) can be judged on without pairs, in [0, 1]
    image units: the cycle errors mean |F(G(a)) - a| (cycle_A) and |G(F(b)) - b| (cycle_B),
    and with `identity` (same channels in and out) how much each generator changes an image of
    its own output domain, mean |G(b) - b| (identity_B) and |F(a) - a| (identity_A).
    `domain_a` / `domain_b`: (name, image batch in [-1, 1]) items of G's input and output
    domains, which `names` calls A and B (("B", "A") for a model trained BtoA, so that the keys
    name the folders). Returns (means, rows)."""
    rows: list[dict] = []
    for domain, items, forward, back in ((names[0], domain_a, g, f), (names[1], domain_b, f, g)):
        for name, x in items:
            x = x.to(device)
            cycle = (back(forward(x)).float() - x).abs().flatten(1).mean(1) / 2
            row = {"domain": domain, "cycle": cycle}
            if identity:
                row["identity"] = (back(x).float() - x).abs().flatten(1).mean(1) / 2
            for i, n in enumerate(name):
                rows.append({"name": n, "domain": domain, **{k: float(v[i]) for k, v in row.items() if k != "domain"}})
    means = {}
    for domain in sorted(names):
        own = [r for r in rows if r["domain"] == domain]
        if not own:
            raise ValueError(f"unpaired_scores: no images of domain {domain}")
        means[f"cycle_{domain}"] = sum(r["cycle"] for r in own) / len(own)
        if identity:
            means[f"identity_{domain}"] = sum(r["identity"] for r in own) / len(own)
    return means, rows
