import pytest
import torch
from torch import nn

from pix2pix.config import ModelConfig
from pix2pix.networks import (
    PatchDiscriminator,
    PixelDiscriminator,
    UNetGenerator,
    build_discriminator,
    build_generator,
    count_parameters,
    receptive_field,
    unet_depth,
)


@pytest.mark.parametrize("size,depth", [(32, 5), (64, 6), (128, 7), (256, 8)])
def test_unet_depth_follows_crop_size(size, depth):
    assert unet_depth(size) == depth


@pytest.mark.parametrize("bad", [16, 48, 100, 255])
def test_unet_depth_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="power of two"):
        unet_depth(bad)


@pytest.mark.parametrize("size", [32, 64, 128])
@pytest.mark.parametrize("in_nc,out_nc", [(3, 3), (1, 3), (3, 1)])
@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
def test_generator_and_discriminator_shapes(size, in_nc, out_nc, norm):
    cfg = ModelConfig(ngf=4, ndf=4, norm=norm)
    g = build_generator(cfg, in_nc, out_nc, size).eval()
    x = torch.rand(2, in_nc, size, size) * 2 - 1
    y = g(x)
    assert y.shape == (2, out_nc, size, size)
    assert y.abs().max() <= 1.0  # tanh output
    d = build_discriminator(cfg, in_nc, out_nc)
    out = d(torch.cat([x, y], 1))
    # 70x70 PatchGAN: three stride-2 convs, then two 4x4 stride-1 convs (each -1 pixel).
    assert out.shape == (2, 1, size // 8 - 2, size // 8 - 2)


def test_generator_is_fully_convolutional_on_larger_multiples():
    g = UNetGenerator(3, 3, ngf=4, num_downs=5).eval()
    assert g.multiple == 32
    assert g(torch.zeros(1, 3, 64, 96)).shape == (1, 3, 64, 96)


def test_parameter_counts_match_the_paper_networks():
    cfg = ModelConfig()
    g = build_generator(cfg, 3, 3, 256)
    d = build_discriminator(cfg, 3, 3)
    assert round(count_parameters(g) / 1e6, 1) == 54.4
    assert round(count_parameters(d) / 1e6, 2) == 2.77


def test_unet_structure_norms_dropout_and_activations():
    g = UNetGenerator(3, 3, ngf=8, num_downs=8, norm="batch", dropout=0.5)
    # No norm on the outermost (first) encoder layer or on the bottleneck.
    assert isinstance(g.down[0], nn.Conv2d)
    assert isinstance(g.down[-1][2], nn.Identity)
    assert all(isinstance(b[2], nn.BatchNorm2d) for b in list(g.down)[1:-1])
    assert all(isinstance(b[0], nn.LeakyReLU) and b[0].negative_slope == 0.2 for b in list(g.down)[1:])
    # Dropout in exactly the three innermost decoder blocks; ReLU in the decoder; Tanh out.
    with_dropout = [i for i, b in enumerate(g.up) if any(isinstance(m, nn.Dropout) for m in b)]
    assert with_dropout == [5, 6, 7]
    assert all(isinstance(b[0], nn.ReLU) for b in g.up)
    assert isinstance(g.up[0][-1], nn.Tanh)


def test_skip_connections_carry_encoder_features():
    # Zeroing the bottleneck path still leaves an input-dependent output through the skips.
    g = UNetGenerator(1, 1, ngf=4, num_downs=5, norm="none", dropout=0.0).eval()
    with torch.no_grad():
        g.up[-1][1].weight.zero_()
        a, b = g(torch.zeros(1, 1, 32, 32)), g(torch.ones(1, 1, 32, 32))
    assert not torch.allclose(a, b)


def test_weight_init_is_normal_002():
    g = build_generator(ModelConfig(ngf=32), 3, 3, 64)
    w = torch.cat([m.weight.detach().flatten() for m in g.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
    assert abs(float(w.mean())) < 1e-3
    assert float(w.std()) == pytest.approx(0.02, rel=0.05)


def _empirical_receptive_field(d: nn.Module, channels: int, size: int = 256) -> int:
    """Extent (pixels) of the input region that reaches one interior output unit."""
    with torch.no_grad():
        for m in d.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(0.01)
                if m.bias is not None:
                    m.bias.zero_()
    x = torch.zeros(1, channels, size, size, requires_grad=True)
    out = d(x)
    c = out.shape[-1] // 2
    out[0, 0, c, c].backward()
    rows = (x.grad.abs().sum(dim=(0, 1, 3)) > 0).nonzero()
    return int(rows.max() - rows.min() + 1)


@pytest.mark.parametrize("n_layers,expected", [(1, 16), (2, 34), (3, 70), (4, 142)])
def test_patchgan_receptive_field(n_layers, expected):
    d = PatchDiscriminator(6, ndf=4, n_layers=n_layers, norm="none")
    assert receptive_field(d) == expected
    assert _empirical_receptive_field(d, 6) == expected


def test_default_discriminator_is_70x70():
    d = build_discriminator(ModelConfig(norm="none"), 3, 3)
    assert _empirical_receptive_field(d, 6) == 70


def test_pixel_discriminator_is_1x1():
    d = PixelDiscriminator(6, ndf=4, norm="none")
    assert _empirical_receptive_field(d, 6, size=32) == 1
    assert d(torch.zeros(1, 6, 32, 32)).shape == (1, 1, 32, 32)
