"""FID and KID of generated images against real ones (torchmetrics, on torch-fidelity's
InceptionV3), when the standard Inception weights are on this machine.

Where the weights are looked for: the file you name (`evaluate.fid_weights` in the pipeline), else
torch's hub cache, where torch-fidelity keeps them once downloaded (`torch.hub.get_dir()` /
checkpoints / weights-inception-2015-12-05-6726825d.pth). `download` lets torch-fidelity fetch them
(online machines). Nothing here downloads by itself, and a missing or foreign file is one line.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import ConfigError, first_line

WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's name, in the hub cache
# Two tensors that only the FID InceptionV3 has in these shapes: the stem and the 1008-way head.
SIGNATURE = {"Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3), "fc.weight": (1008, 2048)}


def cached_weights() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def find_weights(configured: str = "") -> Path | str | None:
    """The weights file to use: `configured`, else the hub cache; "download" as given; None when
    there is none (the caller says where it looked: `looked_in`)."""
    if configured == "download":
        return configured
    path = Path(configured).expanduser() if configured else cached_weights()
    return path if path.is_file() else None


def looked_in(configured: str = "") -> str:
    return str(Path(configured).expanduser()) if configured else str(cached_weights())


def check_weights(path: Path) -> None:
    """Refuse, in one line, a file that is not the FID InceptionV3's state dict (loaded safely)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same answer
        raise ConfigError(
            f"{path}: not a readable weights file ({first_line(e)}); use the FID Inception weights"
        ) from None
    shapes = {k: tuple(state[k].shape) for k in SIGNATURE if isinstance(state, dict) and k in state}
    if shapes != SIGNATURE:
        raise ConfigError(
            f"{path}: not the FID InceptionV3 weights ({WEIGHTS_FILE}, torch-fidelity's pt_inception-2015-12-05); "
            "point evaluate.fid_weights at that file"
        )


class InceptionDistances:
    """Accumulates real and generated images ([0, 1] floats, N x C x H x W) and computes FID and KID
    on one InceptionV3 (torchmetrics' own, with these weights). KID's subsets are as large as the
    sample allows."""

    def __init__(self, weights: Path | str, num_images: int):
        from torchmetrics.image.fid import FrechetInceptionDistance, NoTrainInceptionV3
        from torchmetrics.image.kid import KernelInceptionDistance

        if weights != "download":
            check_weights(Path(weights))
        path = None if weights == "download" else str(weights)
        inception = NoTrainInceptionV3(
            name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=path
        )
        self.fid = FrechetInceptionDistance(feature=inception)
        self.kid = KernelInceptionDistance(feature=inception, subset_size=max(2, min(1000, num_images)), subsets=100)

    @torch.no_grad()
    def update(self, fake: torch.Tensor, real: torch.Tensor) -> None:
        for images, is_real in ((real, True), (fake, False)):
            # uint8 as torchmetrics makes it from [0, 1] (normalize=True): x * 255, truncated
            rgb = (images.float().clamp(0, 1).expand(-1, 3, -1, -1).cpu() * 255).byte()
            self.fid.update(rgb, real=is_real)
            self.kid.update(rgb, real=is_real)

    def compute(self) -> dict[str, float]:
        kid_mean, kid_std = self.kid.compute()
        return {"fid": float(self.fid.compute()), "kid": float(kid_mean), "kid_std": float(kid_std)}
