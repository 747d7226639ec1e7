"""Adversarial losses (vanilla, lsgan, hinge) for PatchGAN outputs, plus the weighted L1 term."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import GAN_MODES


class GANLoss:
    """Loss on a discriminator's raw (logit) output map.

    - vanilla: binary cross-entropy with logits (the paper's objective);
    - lsgan: least squares towards 1 (real) / 0 (fake);
    - hinge: D uses relu(1 - real) + relu(1 + fake), G uses -fake.
    """

    def __init__(self, mode: str = "vanilla"):
        if mode not in GAN_MODES:
            raise ValueError(f"unknown gan_mode {mode!r}; choose one of {', '.join(GAN_MODES)}")
        self.mode = mode

    def __call__(self, pred: torch.Tensor, target_is_real: bool, for_discriminator: bool = True) -> torch.Tensor:
        pred = pred.float()  # keep the loss in fp32 under autocast
        if self.mode == "hinge":
            if not for_discriminator:
                return -pred.mean()
            return F.relu(1.0 - pred).mean() if target_is_real else F.relu(1.0 + pred).mean()
        target = torch.ones_like(pred) if target_is_real else torch.zeros_like(pred)
        if self.mode == "lsgan":
            return F.mse_loss(pred, target)
        return F.binary_cross_entropy_with_logits(pred, target)


def discriminator_loss(
    gan: GANLoss, pred_real: torch.Tensor, pred_fake: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, real, fake); the total is halved, as in the paper, to slow D relative to G."""
    real = gan(pred_real, True)
    fake = gan(pred_fake, False)
    return 0.5 * (real + fake), real, fake


def l1_loss(fake: torch.Tensor, target: torch.Tensor, weight: float) -> torch.Tensor:
    return weight * F.l1_loss(fake.float(), target.float())
