"""pix2pix networks: the U-Net and ResNet generators and the PatchGAN / PixelGAN discriminators.

U-Net and PatchGAN as in Isola et al. 2017 (appendix 6.1.1-6.1.2): 4x4 convolutions with stride
2, LeakyReLU(0.2) in the encoder, ReLU in the decoder, skip connections between mirrored layers,
dropout in the three innermost decoder blocks, no normalisation on the first encoder layer and
on the bottleneck, and weights drawn from N(0, 0.02). The ResNet generator is the reference
repository's (Johnson et al. 2016's layout): a 7x7 stem, two stride-2 downsamplings, 6 or 9
residual blocks with reflection padding, two transposed-convolution upsamplings, a 7x7 head.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from .config import ModelConfig


def norm_layer(kind: str):
    """Return a constructor `f(channels) -> nn.Module` for the named normalisation."""
    if kind == "batch":
        return partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if kind == "instance":
        return partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    if kind == "none":
        return lambda channels: nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose batch, instance or none")


def _conv_bias(norm: str) -> bool:
    # A conv followed by BatchNorm needs no bias (BN's shift replaces it).
    return norm != "batch"


def unet_depth(crop_size: int) -> int:
    """Number of stride-2 downsamplings so that a crop_size image reaches a 1x1 bottleneck."""
    depth = int(math.log2(crop_size))
    if 2**depth != crop_size or depth < 5:
        raise ValueError(f"crop_size must be a power of two >= 32, got {crop_size}")
    return depth


class UNetGenerator(nn.Module):
    """U-Net: `num_downs` stride-2 encoder blocks mirrored by decoder blocks with skips.

    Input height and width must be multiples of ``2**num_downs`` (see :attr:`multiple`).
    """

    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        ngf: int = 64,
        num_downs: int = 8,
        norm: str = "batch",
        dropout: float = 0.5,
    ):
        super().__init__()
        if num_downs < 5:
            raise ValueError(f"num_downs must be >= 5, got {num_downs}")
        self.num_downs = num_downs
        make_norm = norm_layer(norm)
        bias = _conv_bias(norm)
        # Encoder widths: ngf, 2ngf, 4ngf, 8ngf, 8ngf, ... (capped at 8ngf).
        widths = [ngf * min(2**i, 8) for i in range(num_downs)]

        down: list[nn.Module] = [nn.Conv2d(input_nc, widths[0], 4, 2, 1, bias=bias)]
        for i in range(1, num_downs):
            innermost = i == num_downs - 1
            down.append(
                nn.Sequential(
                    nn.LeakyReLU(0.2, inplace=True),
                    nn.Conv2d(widths[i - 1], widths[i], 4, 2, 1, bias=bias),
                    nn.Identity() if innermost else make_norm(widths[i]),
                )
            )
        self.down = nn.ModuleList(down)

        # up[i] mirrors down[i]: it maps to widths[i - 1] (or output_nc for i == 0). Its input
        # is the bottleneck for the innermost block, otherwise [skip_i, up_{i+1}] concatenated.
        up: list[nn.Module] = [None] * num_downs  # type: ignore[list-item]
        for i in range(num_downs - 1, 0, -1):
            in_ch = widths[i] if i == num_downs - 1 else widths[i] * 2
            layers: list[nn.Module] = [
                nn.ReLU(inplace=True),
                nn.ConvTranspose2d(in_ch, widths[i - 1], 4, 2, 1, bias=bias),
                make_norm(widths[i - 1]),
            ]
            if dropout > 0 and i >= num_downs - 3:  # the three innermost decoder blocks
                layers.append(nn.Dropout(dropout))
            up[i] = nn.Sequential(*layers)
        up[0] = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(widths[0] * 2, output_nc, 4, 2, 1, bias=True),
            nn.Tanh(),
        )
        self.up = nn.ModuleList(up)

    @property
    def multiple(self) -> int:
        return 2**self.num_downs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = self.up[-1](skips[-1])
        for i in range(self.num_downs - 2, -1, -1):
            x = self.up[i](torch.cat([skips[i], x], dim=1))
        return x


class ResnetBlock(nn.Module):
    """x + (reflect-pad, 3x3 conv, norm, ReLU, [dropout], reflect-pad, 3x3 conv, norm)(x)."""

    def __init__(self, channels: int, norm: str, dropout: float):
        super().__init__()
        make_norm, bias = norm_layer(norm), _conv_bias(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=bias),
            make_norm(channels),
            nn.ReLU(True),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), make_norm(channels)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """ResNet generator (the reference's `resnet_9blocks` / `resnet_6blocks`): fully
    convolutional, any height and width that is a multiple of 4 (two stride-2 layers)."""

    multiple = 4

    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        ngf: int = 64,
        n_blocks: int = 9,
        norm: str = "instance",
        dropout: float = 0.0,
    ):
        super().__init__()
        make_norm, bias = norm_layer(norm), _conv_bias(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, 7, bias=bias),
            make_norm(ngf),
            nn.ReLU(True),
        ]
        for i in range(2):  # downsampling
            mult = 2**i
            layers += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, 3, 2, 1, bias=bias),
                make_norm(ngf * mult * 2),
                nn.ReLU(True),
            ]
        layers += [ResnetBlock(ngf * 4, norm, dropout) for _ in range(n_blocks)]
        for i in range(2):  # upsampling
            mult = 2 ** (2 - i)
            layers += [
                nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, 2, 1, output_padding=1, bias=bias),
                make_norm(ngf * mult // 2),
                nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PatchDiscriminator(nn.Module):
    """PatchGAN: classifies each overlapping N x N patch of the (input, output) pair.

    n_layers=3 gives the paper's 70x70 receptive field; 1 gives 16x16, 5 gives 286x286.
    """

    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 3, norm: str = "batch"):
        super().__init__()
        make_norm = norm_layer(norm)
        bias = _conv_bias(norm)
        layers: list[nn.Module] = [nn.Conv2d(input_nc, ndf, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1  # the last two convs keep the resolution
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=bias),
                make_norm(ndf * mult),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, with_features: bool = False):
        """The output map; with `with_features`, (output, the activations after each LeakyReLU):
        what feature matching compares. An argument of forward, so DDP and compile pass it on."""
        if not with_features:
            return self.model(x)
        feats = []
        for layer in self.model:
            x = layer(x)
            if isinstance(layer, nn.LeakyReLU):
                feats.append(x)
        return x, feats


class MultiscaleDiscriminator(nn.Module):
    """pix2pixHD's discriminator: `num_D` PatchGANs of the same shape, the k-th judging the pair
    downsampled k times (3x3 average pooling, stride 2), so coarse scales see global structure
    and the finest sees texture. Returns one output map per scale, finest first."""

    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 3, norm: str = "batch", num_D: int = 2):
        super().__init__()
        self.scales = nn.ModuleList(PatchDiscriminator(input_nc, ndf, n_layers, norm) for _ in range(num_D))
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    def _inputs(self, x: torch.Tensor):
        for i, d in enumerate(self.scales):
            yield d, x
            if i < len(self.scales) - 1:
                x = self.downsample(x)

    def forward(self, x: torch.Tensor, with_features: bool = False):
        """One output map per scale; with `with_features`, (outputs, one feature list per scale)."""
        if not with_features:
            return [d(xi) for d, xi in self._inputs(x)]
        outs, feats = zip(*(d(xi, True) for d, xi in self._inputs(x)), strict=True)
        return list(outs), list(feats)


class PixelDiscriminator(nn.Module):
    """1x1 PixelGAN: judges every pixel on its own (colour only, no structure)."""

    def __init__(self, input_nc: int, ndf: int = 64, norm: str = "batch"):
        super().__init__()
        make_norm = norm_layer(norm)
        self.model = nn.Sequential(
            nn.Conv2d(input_nc, ndf, 1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 1, bias=_conv_bias(norm)),
            make_norm(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def init_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """Paper init: conv weights ~ N(0, gain), norm scales ~ N(1, gain), biases 0."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return net


RESNET_BLOCKS = {"resnet_9blocks": 9, "resnet_6blocks": 6}


def build_generator(cfg: ModelConfig, input_nc: int, output_nc: int, crop_size: int) -> nn.Module:
    """`model.netG`: the U-Net (depth from the crop size) or a ResNet generator."""
    if cfg.netG in RESNET_BLOCKS:
        g: nn.Module = ResnetGenerator(input_nc, output_nc, cfg.ngf, RESNET_BLOCKS[cfg.netG], cfg.norm, cfg.dropout)
    else:
        g = UNetGenerator(input_nc, output_nc, cfg.ngf, unet_depth(crop_size), cfg.norm, cfg.dropout)
    return init_weights(g, cfg.init_gain)


def build_discriminator(cfg: ModelConfig, input_nc: int, output_nc: int) -> nn.Module:
    # D sees the input and the (real or generated) output stacked along channels.
    channels = input_nc + output_nc
    if cfg.netD == "pixel":
        d: nn.Module = PixelDiscriminator(channels, cfg.ndf, cfg.norm)
    elif cfg.num_D > 1:
        d = MultiscaleDiscriminator(channels, cfg.ndf, cfg.n_layers_D, cfg.norm, cfg.num_D)
    else:
        d = PatchDiscriminator(channels, cfg.ndf, cfg.n_layers_D, cfg.norm)
    d = init_weights(d, cfg.init_gain)
    if cfg.spectral_norm:  # after the init: it reparametrises the initialised weights
        for m in list(d.modules()):
            if isinstance(m, nn.Conv2d):
                nn.utils.parametrizations.spectral_norm(m)
    return d


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def receptive_field(net: nn.Module) -> int:
    """Receptive field (in input pixels) of one output unit of a plain conv stack."""
    rf, jump = 1, 1
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            k, s = m.kernel_size[0], m.stride[0]
            rf += (k - 1) * jump
            jump *= s
    return rf
