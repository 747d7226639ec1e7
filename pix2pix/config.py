"""Typed configuration for the pix2pix library.

Three sections mirror the `data`, `model` and `train` sections of a grouped params file.
Every field carries its help text (and its choices, where it has them) as metadata, so the
CLI's flags and the error messages come from one place. `build_section` turns a mapping
into a section strictly: an unknown key or a value of the wrong type is a `ConfigError`
with one line that names the key and says what would be accepted.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .config_values import build_section
from .errors import ConfigError

# Tiled inference (pix2pix.tiling): the pixels one network pass may see (1024 x 1024 fits), and
# the pixels neighbouring tiles share. Here, torch-free, so the CLI's --help shows them at once.
TILE_MEGAPIXELS = 1.1
TILE_OVERLAP = 128

__all__ = ["Config", "ConfigError", "DataConfig", "ModelConfig", "TrainConfig", "build_section", "option", "require"]

DIRECTIONS = ("AtoB", "BtoA")
PREPROCESS = ("resize_and_crop", "crop", "resize", "none")
NORMS = ("batch", "instance", "none")
GENERATORS = ("unet", "resnet_9blocks", "resnet_6blocks")
DISCRIMINATORS = ("patch", "pixel")
GAN_MODES = ("vanilla", "lsgan", "hinge")
KINDS = ("paired", "unpaired")
SWITCH = ("auto", "true", "false")
# The test and validation metrics (pix2pix/metrics.py computes them) and which way is better.
HIGHER_IS_BETTER = {"l1": False, "psnr": True, "ssim": True}
METRIC_NAMES = tuple(HIGHER_IS_BETTER)  # the one list (evaluation, tags, the promotion gate, best.pt)
# Keys a pipeline params.yaml keeps in its `data` section to say where the images come from.
# The library is handed a folder instead, so `pix2pix --config params.yaml` skips them.
SOURCE_KEYS = ("source", "synthetic", "split", "pairs")


def option(default: Any, help: str, choices: tuple | None = None, **metadata: Any):
    """A dataclass field with its help text (and choices) attached for the CLI and errors."""
    meta = {"help": help, **({"choices": choices} if choices else {}), **metadata}
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


def require(ok: bool, key: str, message: str) -> None:
    """A ConfigError naming `key` unless `ok`."""
    if not ok:
        raise ConfigError(f"{key}: {message}")


def check_choices(obj: Any, section: str) -> None:
    """Every field with `choices` metadata holds one of them."""
    for f in fields(obj):
        choices = f.metadata.get("choices")
        value = getattr(obj, f.name)
        if choices and value not in choices:
            raise ConfigError(f"{section}.{f.name}: got {value!r}; choose one of {', '.join(map(str, choices))}")


def patch_receptive_fields(n_layers: int, num_D: int = 1) -> list[int]:
    """Receptive field of one output unit of each scale of a (multi-scale) PatchGAN, in pixels of
    the full-resolution input: 70, 141, 283 for the 70x70 PatchGAN at 1, 1/2, 1/4 resolution."""
    rf, jump = 1, 1
    for stride in [2] * n_layers + [1, 1]:  # 4x4 convs: n strided, then two of stride 1
        rf += 3 * jump
        jump *= stride
    fields = [rf]
    for _ in range(num_D - 1):  # back through one more 3x3 stride-2 average pooling
        fields.append((fields[-1] - 1) * 2 + 3)
    return fields


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


@dataclass
class DataConfig:
    direction: str = option("AtoB", "AtoB: the left half (or A/ folder) is the input; BtoA: the right half", DIRECTIONS)
    load_size: int = option(286, "images are resized to this, then randomly cropped to crop_size")
    crop_size: int = option(256, "network input size, a power of two >= 32 (sets the U-Net depth)")
    preprocess: str = option("resize_and_crop", "how training images reach crop_size (evaluation resizes)", PREPROCESS)
    flip: bool = option(True, "random horizontal flip, applied to both halves alike")
    input_nc: int = option(3, "input channels: 1 = grayscale, 3 = RGB", (1, 3))
    output_nc: int = option(3, "output channels: 1 = grayscale, 3 = RGB", (1, 3))
    cache: bool = option(True, "keep decoded images in memory (fast epochs on small datasets)")
    pairs_apart: bool = option(
        False,
        "model.kind unpaired on a paired dataset: its pairs are split apart (the A sides of one half, the B "
        "sides of the other), so no pair is ever seen together; validation still scores against real pairs",
    )

    def validate(self) -> DataConfig:
        s = "data"
        check_choices(self, s)
        require(
            self.crop_size >= 32 and _is_power_of_two(self.crop_size),
            f"{s}.crop_size",
            f"got {self.crop_size!r}; use a power of two >= 32 (e.g. 64, 128, 256)",
        )
        require(self.load_size > 0, f"{s}.load_size", f"got {self.load_size!r}; use a positive integer")
        if self.preprocess in ("resize_and_crop", "crop"):
            require(
                self.load_size >= self.crop_size,
                f"{s}.load_size",
                f"{self.load_size} is smaller than data.crop_size {self.crop_size}; set load_size >= crop_size",
            )
        return self


@dataclass
class ModelConfig:
    kind: str = option(
        "paired",
        "paired: pix2pix (cGAN + L1 on aligned pairs); unpaired: CycleGAN (two generators and discriminators, "
        "cycle and identity L1) on two unrelated folders",
        KINDS,
    )
    netG: str = option(
        "unet",
        "generator: unet (the paper's; depth from crop_size) or a ResNet with 9 or 6 residual blocks "
        "(the reference's; usually with norm: instance)",
        GENERATORS,
    )
    ngf: int = option(64, "generator filters in the first layer")
    ndf: int = option(64, "discriminator filters in the first layer")
    netD: str = option(
        "patch", "discriminator: patch (n_layers_D=3 -> 70x70 receptive field) or pixel (1x1)", DISCRIMINATORS
    )
    n_layers_D: int = option(3, "strided layers of the patch discriminator (3 = 70x70)")
    num_D: int = option(
        1, "PatchGANs at full, 1/2, 1/4 ... resolution (pix2pixHD's multi-scale discriminator); 1 = the paper's"
    )
    lambda_feat: float = option(
        0.0,
        "weight of discriminator feature matching (L1 between D's features of real and fake pairs, "
        "pix2pixHD: 10); 0 = off",
    )
    spectral_norm: bool = option(False, "spectral normalisation of every discriminator convolution")
    norm: str = option("batch", "normalisation layers", NORMS)
    dropout: float = option(
        0.5, "dropout in the three innermost U-Net decoder blocks (in every ResNet block); 0 disables it"
    )
    init_gain: float = option(0.02, "std of the N(0, gain) weight init")

    def validate(self) -> ModelConfig:
        s = "model"
        check_choices(self, s)
        for name in ("ngf", "ndf", "n_layers_D", "num_D"):
            v = getattr(self, name)
            require(v > 0, f"{s}.{name}", f"got {v!r}; use a positive integer")
        require(self.lambda_feat >= 0, f"{s}.lambda_feat", f"got {self.lambda_feat!r}; use a value >= 0 (0 = off)")
        if self.netD != "patch":
            require(self.num_D == 1, f"{s}.num_D", f"{self.num_D} scales need netD: patch, got {self.netD}")
            require(self.lambda_feat == 0, f"{s}.lambda_feat", f"feature matching needs netD: patch, got {self.netD}")
        require(0.0 <= self.dropout < 1.0, f"{s}.dropout", f"got {self.dropout!r}; use a value in [0, 1)")
        require(self.init_gain > 0, f"{s}.init_gain", f"got {self.init_gain!r}; use a positive number")
        return self


@dataclass
class TrainConfig:
    epochs: int = option(100, "epochs at the initial learning rate")
    epochs_decay: int = option(100, "epochs of linear decay to zero after that")
    budget_minutes: float = option(
        0.0,
        "train for this much wall-clock time instead of a number of epochs: the LR stays constant for the "
        "share epochs / (epochs + epochs_decay) of it, then decays linearly to zero at its end; 0 = off",
    )
    batch_size: int = option(1, "pairs per step")
    lr: float = option(2e-4, "Adam learning rate of the generator (and of the discriminator unless lr_D is set)")
    lr_D: float | None = option(None, "Adam learning rate of the discriminator; null = lr")
    beta1: float = option(0.5, "Adam beta1")
    beta2: float = option(0.999, "Adam beta2")
    gan_mode: str = option("vanilla", "adversarial loss", GAN_MODES)
    lambda_l1: float = option(100.0, "weight of the L1 loss against the GAN loss")
    lambda_ssim: float = option(
        0.0, "paired: weight of an SSIM loss, lambda x (1 - SSIM(output, target)) on [0, 1] images; 0 = off"
    )
    lambda_l1_coarse: float = option(
        0.0,
        "paired: weight of an L1 loss between output and target each average-pooled over l1_coarse_factor "
        "squared pixels: colour and layout weighted without pulling fine texture towards a blurry average; 0 = off",
    )
    l1_coarse_factor: int = option(4, "paired: the pooling window (and stride) of lambda_l1_coarse, in pixels")
    lambda_A: float = option(10.0, "unpaired: weight of the cycle loss A -> B -> A")
    lambda_B: float = option(10.0, "unpaired: weight of the cycle loss B -> A -> B")
    lambda_identity: float = option(
        0.5,
        "unpaired: weight of the identity loss (G(b) ~ b, F(a) ~ a), relative to lambda_A/B; needs input_nc "
        "= output_nc; 0 = off",
    )
    pool_size: int = option(50, "unpaired: past generated images the discriminators also see; 0 = no pool")
    ema: float = option(
        0.0,
        "decay of an exponential moving average of the generator's weights, updated after every step "
        "(warmed up: min(decay, (1 + n) / (10 + n)) at update n) and used for validation, samples and "
        "export (e.g. 0.999); 0 = off",
    )
    seed: int = option(0, "seed of the weight init, data order, augmentation and dropout")
    device: str = option("auto", "auto (cuda, then cpu), cpu, cuda, cuda:1, ...")
    amp: str = option(
        "auto",
        "mixed precision; auto = bf16 on CUDA (fp16 + GradScaler without bf16) and on CPUs with "
        "native bf16 (AMX, AVX512-BF16), fp32 on other CPUs; true = bf16 on every CPU too; false = fp32",
        SWITCH,
        switch=True,
    )
    channels_last: str = option(
        "auto", "NHWC memory format; auto = on CUDA and for bf16 on CPUs with AMX", SWITCH, switch=True
    )
    cudnn_benchmark: bool = option(True, "CUDA: time the conv algorithms once for the fixed size")
    pin_memory: bool = option(True, "CUDA: page-locked batches copied with non_blocking=True")
    compile: bool = option(False, "torch.compile G and D (minutes of compiling; pays off on long GPU runs)")
    retain_memory: bool = option(True, "CPU: glibc keeps freed memory (no page faults every step)")
    flush_denormal: bool = option(True, "CPU: denormal floats count as zero (x86 is slow on them)")
    sync_batchnorm: bool = option(True, "under torchrun on CUDA: BatchNorm statistics over all ranks")
    num_workers: int | str = option(
        "auto",
        "DataLoader workers; auto = 0 while the decoded training set fits in memory (data.cache), "
        "else half the cores (at most 8); workers decode every item and keep no cache",
    )
    best_metric: str = option("l1", "validation metric that chooses best.pt", tuple(HIGHER_IS_BETTER))
    best_window: int = option(
        3,
        "best.pt is the checkpoint where the mean of the last N validations of best_metric was best "
        "(one validation is a noisy sample)",
    )
    log_every: int = option(10, "steps between loss reports to callbacks")
    sample_every: int = option(100, "steps between sample grids")
    checkpoint_every: int = option(0, "steps between checkpoints; 0 = once per epoch only")
    keep_checkpoints: int = option(2, "epoch checkpoints kept besides last.pt")

    def validate(self) -> TrainConfig:
        s = "train"
        for name in ("amp", "channels_last"):
            if isinstance(getattr(self, name), bool):  # TrainConfig(amp=True) in code
                setattr(self, name, "true" if getattr(self, name) else "false")
        check_choices(self, s)
        require(
            self.num_workers == "auto" or isinstance(self.num_workers, int),
            f"{s}.num_workers",
            f"got {self.num_workers!r}; use auto or an integer >= 0",
        )
        for name in ("epochs", "epochs_decay", "num_workers", "checkpoint_every", "keep_checkpoints"):
            v = getattr(self, name)
            if name == "num_workers" and v == "auto":
                continue
            require(v >= 0, f"{s}.{name}", f"got {v!r}; use an integer >= 0")
        require(self.epochs + self.epochs_decay > 0, f"{s}.epochs", "epochs + epochs_decay must be at least 1")
        require(
            self.budget_minutes >= 0,
            f"{s}.budget_minutes",
            f"got {self.budget_minutes!r}; use minutes > 0, or 0 for off",
        )
        for name in ("batch_size", "log_every", "sample_every", "best_window", "l1_coarse_factor"):
            v = getattr(self, name)
            require(v > 0, f"{s}.{name}", f"got {v!r}; use a positive integer")
        require(self.lr > 0, f"{s}.lr", f"got {self.lr!r}; use a positive learning rate")
        require(
            self.lr_D is None or self.lr_D > 0, f"{s}.lr_D", f"got {self.lr_D!r}; use a positive rate, or null for lr"
        )
        for name in ("beta1", "beta2"):
            v = getattr(self, name)
            require(0.0 <= v < 1.0, f"{s}.{name}", f"got {v!r}; use a value in [0, 1)")
        for name in (
            "lambda_l1",
            "lambda_ssim",
            "lambda_l1_coarse",
            "lambda_A",
            "lambda_B",
            "lambda_identity",
            "pool_size",
        ):
            v = getattr(self, name)
            require(v >= 0, f"{s}.{name}", f"got {v!r}; use a value >= 0")
        require(0.0 <= self.ema < 1.0, f"{s}.ema", f"got {self.ema!r}; use a decay in [0, 1), e.g. 0.999, or 0 for off")
        require(
            self.device == "auto" or self.device == "cpu" or self.device.startswith(("cuda", "mps")),
            f"{s}.device",
            f"got {self.device!r}; use auto, cpu, cuda or cuda:N",
        )
        return self


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> Config:
        self.data.validate()
        self.model.validate()
        self.train.validate()
        self._check_scales()
        self._check_coarse()
        self._check_kind()
        return self

    def _check_coarse(self) -> None:
        t, size = self.train, self.data.crop_size
        require(
            t.lambda_l1_coarse == 0 or t.l1_coarse_factor <= size // 2,
            "train.l1_coarse_factor",
            f"{t.l1_coarse_factor} pools a {size}-pixel crop to less than 2 x 2; use at most {size // 2}",
        )

    def _check_kind(self) -> None:
        d, m, t = self.data, self.model, self.train
        if m.kind == "paired":
            require(not d.pairs_apart, "data.pairs_apart", "splits pairs apart for model.kind unpaired; set it false")
            return
        require(
            m.lambda_feat == 0,
            "model.lambda_feat",
            "feature matching compares real and fake pairs, which unpaired training has not; set it to 0",
        )
        for key, loss in (("lambda_ssim", "the SSIM loss"), ("lambda_l1_coarse", "the coarse L1 loss")):
            require(
                getattr(t, key) == 0,
                f"train.{key}",
                f"{loss} compares an output with its target, which unpaired training has not; set it to 0",
            )
        require(
            t.lambda_identity == 0 or d.input_nc == d.output_nc,
            "train.lambda_identity",
            f"the identity loss feeds B images to the A -> B generator, which needs as many channels in as out "
            f"(data.input_nc {d.input_nc}, data.output_nc {d.output_nc}); set train.lambda_identity 0",
        )

    def _check_scales(self) -> None:
        """Every scale of a multi-scale discriminator must see at least its receptive field."""
        m = self.model
        if m.netD != "patch" or m.num_D == 1:
            return
        own = patch_receptive_fields(m.n_layers_D, 1)[0]
        for k in range(1, m.num_D):
            side = self.data.crop_size // 2**k
            require(
                side >= own,
                "model.num_D",
                f"{m.num_D} scales at crop_size {self.data.crop_size}: scale {k + 1} sees {side}x{side} pixels, "
                f"less than the discriminator's {own}x{own} receptive field; use num_D <= {k} or a smaller n_layers_D",
            )

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Config:
        """Build from `{"data": {...}, "model": {...}, "train": {...}}`, strictly: an unknown
        key inside a section is an error; sections other than these three are not read."""
        d = d or {}
        return cls(
            data=build_section(DataConfig, d.get("data"), "data"),
            model=build_section(ModelConfig, d.get("model"), "model"),
            train=build_section(TrainConfig, d.get("train"), "train"),
        ).validate()
