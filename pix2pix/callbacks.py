"""The trainer's reporting interface.

The trainer calls these hooks; it knows nothing about where the numbers go. `pipeline/`
plugs MLflow in through a subclass, the CLI saves sample grids to disk, and tests record them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


class Callback:
    """Override any subset. All hooks run on the process that owns logging (rank 0)."""

    def on_train_start(self, info: dict[str, Any]) -> None:
        """info: config dict, device, parameter counts, dataset sizes, start step/epoch."""

    def on_step(self, step: int, logs: dict[str, float]) -> None:
        """Every `train.log_every` steps: G_GAN, G_L1, D_real, D_fake, lr, images_per_sec."""

    def on_samples(self, step: int, grid: torch.Tensor) -> None:
        """Every `train.sample_every` steps and at the end: rows of fixed validation inputs,
        outputs and targets, as a float C x H x W tensor in [0, 1]."""

    def on_epoch_end(self, epoch: int, step: int, metrics: dict[str, float]) -> None:
        """After each epoch: validation l1/psnr/ssim (empty when there is no validation set)."""

    def on_checkpoint(self, path: Path, step: int) -> None:
        """After a checkpoint file is complete on disk."""

    def on_train_end(self, summary: dict[str, Any]) -> None:
        """Once, whether training finished, reached max_steps or was interrupted."""


class CallbackList(Callback):
    def __init__(self, callbacks=()):
        self.callbacks = list(callbacks)

    def on_train_start(self, info):
        for c in self.callbacks:
            c.on_train_start(info)

    def on_step(self, step, logs):
        for c in self.callbacks:
            c.on_step(step, logs)

    def on_samples(self, step, grid):
        for c in self.callbacks:
            c.on_samples(step, grid)

    def on_epoch_end(self, epoch, step, metrics):
        for c in self.callbacks:
            c.on_epoch_end(epoch, step, metrics)

    def on_checkpoint(self, path, step):
        for c in self.callbacks:
            c.on_checkpoint(path, step)

    def on_train_end(self, summary):
        for c in self.callbacks:
            c.on_train_end(summary)


class SampleSaver(Callback):
    """Writes each sample grid to `folder/step_XXXXXXX.png` and `folder/latest.png`."""

    def __init__(self, folder: Path | str):
        self.folder = Path(folder)

    def on_samples(self, step, grid):
        from torchvision.utils import save_image

        self.folder.mkdir(parents=True, exist_ok=True)
        save_image(grid, self.folder / f"step_{step:07d}.png")
        save_image(grid, self.folder / "latest.png")
