"""Input | output | target comparison grids, the picture every report of this project shows."""

from __future__ import annotations

import torch
from torchvision.utils import make_grid

from .data import to_image_range


@torch.no_grad()
def comparison_grid(generator, batch: dict, device: torch.device | str = "cpu") -> torch.Tensor:
    """Rows of inputs, `generator` outputs and targets (one column per image) as a float
    3 x H x W image in [0, 1]; grayscale is shown as RGB beside colour. Eval mode is used
    for a module and its previous mode restored."""
    was_training = getattr(generator, "training", False)
    if was_training:
        generator.eval()
    try:
        fake = generator(batch["input"].to(device)).float().cpu()
    finally:
        if was_training:
            generator.train()
    rows = [to_image_range(t.float()).expand(-1, 3, -1, -1) for t in (batch["input"], fake, batch["target"])]
    return make_grid(torch.cat(rows), nrow=rows[0].shape[0], padding=2, pad_value=1.0)
