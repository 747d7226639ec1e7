import math

import pytest
import torch

from pix2pix.losses import GANLoss, discriminator_loss, l1_loss


def test_vanilla_is_bce_with_logits():
    gan = GANLoss("vanilla")
    zero = torch.zeros(1, 1, 4, 4)
    assert float(gan(zero, True)) == pytest.approx(math.log(2))
    assert float(gan(zero, False)) == pytest.approx(math.log(2))
    big = torch.full((1, 1, 2, 2), 20.0)
    assert float(gan(big, True)) == pytest.approx(0.0, abs=1e-6)
    assert float(gan(big, False)) == pytest.approx(20.0, rel=1e-4)


def test_lsgan_is_squared_error_to_targets():
    gan = GANLoss("lsgan")
    x = torch.tensor([[[[0.5, 2.0]]]])
    assert float(gan(x, True)) == pytest.approx(((0.5 - 1) ** 2 + (2 - 1) ** 2) / 2)
    assert float(gan(x, False)) == pytest.approx((0.25 + 4.0) / 2)


def test_hinge_for_discriminator_and_generator():
    gan = GANLoss("hinge")
    x = torch.tensor([[[[-2.0, 0.5, 3.0]]]])
    assert float(gan(x, True)) == pytest.approx((3.0 + 0.5 + 0.0) / 3)
    assert float(gan(x, False)) == pytest.approx((0.0 + 1.5 + 4.0) / 3)
    assert float(gan(x, True, for_discriminator=False)) == pytest.approx(-0.5)


def test_discriminator_loss_is_halved():
    gan = GANLoss("vanilla")
    total, real, fake = discriminator_loss(gan, torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))
    assert float(real) == pytest.approx(math.log(2))
    assert float(total) == pytest.approx(0.5 * (float(real) + float(fake)))


def test_l1_is_weighted():
    a, b = torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.5)
    assert float(l1_loss(a, b, 100.0)) == pytest.approx(50.0)


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="gan_mode"):
        GANLoss("wasserstein")
