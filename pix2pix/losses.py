"""Adversarial losses (vanilla, lsgan, hinge) for PatchGAN outputs (one map, or one per scale of a
multi-scale discriminator), the weighted L1 and SSIM terms, pix2pixHD's feature-matching term and,
for the unpaired model, the cycle and identity terms."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import GAN_MODES
from .metrics import ssim


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

    def __call__(self, pred, target_is_real: bool, for_discriminator: bool = True) -> torch.Tensor:
        """`pred`: one output map, or a list of them (one per scale): the mean of their losses."""
        if isinstance(pred, (list, tuple)):
            return torch.stack([self(p, target_is_real, for_discriminator) for p in pred]).mean()
        pred = pred.float()  # keep the loss in fp32 under autocast
        if self.mode == "hinge":
            if not for_discriminator:
                return -pred.mean()
            return F.relu(1.0 - pred).mean() if target_is_real else F.relu(1.0 + pred).mean()
        target = torch.ones_like(pred) if target_is_real else torch.zeros_like(pred)
        if self.mode == "lsgan":
            return F.mse_loss(pred, target)
        return F.binary_cross_entropy_with_logits(pred, target)


def discriminator_loss(gan: GANLoss, pred_real, pred_fake) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, real, fake); the total is halved, as in the paper, to slow D relative to G."""
    real = gan(pred_real, True)
    fake = gan(pred_fake, False)
    return 0.5 * (real + fake), real, fake


def l1_loss(fake: torch.Tensor, target: torch.Tensor, weight: float) -> torch.Tensor:
    return weight * F.l1_loss(fake.float(), target.float())


def coarse_l1_loss(fake: torch.Tensor, target: torch.Tensor, factor: int, weight: float) -> torch.Tensor:
    """`weight` x L1 between `fake` and `target`, each averaged over `factor` x `factor` blocks.
    Full-resolution L1 pulls unpredictable fine texture to its blurry conditional median; at
    block level the same weight buys colour and layout (what most of test L1 is) and leaves the
    finest detail to the adversarial terms: on facades it lowered test L1 at higher sharpness
    than raising lambda_l1 did (benchmarks/README.md)."""
    pool = F.avg_pool2d
    return weight * F.l1_loss(pool(fake.float(), factor), pool(target.float(), factor))


def ssim_loss(fake: torch.Tensor, target: torch.Tensor, weight: float) -> torch.Tensor:
    """`weight` x (1 - SSIM) between the generated and the target image, both mapped from [-1, 1]
    to [0, 1] (pix2pix.metrics.ssim: the SSIM evaluation reports). L1 alone is
    blind to local contrast and structure; Zhao et al. 2017 (Loss Functions for Image Restoration
    with Neural Networks) pair it with an SSIM term for exactly that."""
    fake, target = (fake.float() + 1) / 2, (target.float() + 1) / 2
    return weight * (1.0 - ssim(fake, target))


def feature_matching_loss(real_feats, fake_feats, n_layers: int, weight: float) -> torch.Tensor:
    """pix2pixHD's discriminator feature matching: L1 between D's activations on the real and the
    generated pair, layer by layer (each weighted 4 / (n_layers + 1)) and scale by scale (each
    1 / num_D), times `weight`. The real activations are targets: no gradient flows into them.
    `real_feats` / `fake_feats`: one list of activations per scale (or one list for one scale)."""
    if real_feats and isinstance(real_feats[0], torch.Tensor):
        real_feats, fake_feats = [real_feats], [fake_feats]
    per_layer, per_scale = 4.0 / (n_layers + 1), 1.0 / len(real_feats)
    total = torch.zeros((), device=fake_feats[0][0].device)
    for real_scale, fake_scale in zip(real_feats, fake_feats, strict=True):
        for real, fake in zip(real_scale, fake_scale, strict=True):
            total = total + per_scale * per_layer * F.l1_loss(fake.float(), real.detach().float())
    return weight * total


def cycle_loss(reconstructed: torch.Tensor, real: torch.Tensor, weight: float) -> torch.Tensor:
    """CycleGAN's cycle consistency: `weight` x L1 between an image and its round trip
    (A -> B -> A or B -> A -> B)."""
    return weight * F.l1_loss(reconstructed.float(), real.float())


def identity_loss(same: torch.Tensor, real: torch.Tensor, weight: float) -> torch.Tensor:
    """CycleGAN's identity term: a generator given an image of its own output domain should
    leave it as it is (keeps colours; `weight` = lambda of that domain x lambda_identity)."""
    return weight * F.l1_loss(same.float(), real.float())
