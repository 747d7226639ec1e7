"""The validation scores the trainer reports and picks best.pt by: L1/PSNR/SSIM of the generator
that export would ship (the EMA one when kept) on real pairs, or, for two unrelated domains
without pairs, the mean cycle errors A -> B -> A and B -> A -> B (in [0, 1] image units)."""

from __future__ import annotations

import torch

from .data import iter_batches
from .metrics import evaluate


def validation_scores(model, val_data, limit: int, device: torch.device) -> dict[str, float]:
    """`val_*` scores of `model` on the first `limit` items of `val_data`."""
    batches = iter_batches(val_data, range(min(limit, len(val_data))))
    if not getattr(val_data, "paired", True):  # two unrelated domains: no target to compare with
        return _cycle_errors(model, batches, device)
    g = model.inference_G
    was_training = g.training
    g.eval()
    try:
        with model.autocast():  # the precision training runs in
            means, _ = evaluate(g, batches, device)
    finally:
        g.train(was_training)
    return {f"val_{k}": v for k, v in means.items()}


def _cycle_errors(model, batches, device: torch.device) -> dict[str, float]:
    sums, n = {"cycle_A": 0.0, "cycle_B": 0.0}, 0
    for batch in batches:
        size = batch["input"].shape[0]
        errors = model.cycle_errors(batch["input"].to(device), batch["target"].to(device))
        for k, v in errors.items():
            sums[k] += v * size
        n += size
    return {f"val_{k}": v / max(n, 1) for k, v in sums.items()}
