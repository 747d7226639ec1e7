"""Typed configuration for the pix2pix library.

Three sections mirror the `data`, `model` and `train` sections of a grouped params file.
Every value is checked when a section is built, and a bad one raises `ConfigError` with a
single line that names the key and says what would be accepted.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, Mapping


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and the fix."""


DIRECTIONS = ("AtoB", "BtoA")
PREPROCESS = ("resize_and_crop", "crop", "resize", "none")
NORMS = ("batch", "instance", "none")
DISCRIMINATORS = ("patch", "pixel")
GAN_MODES = ("vanilla", "lsgan", "hinge")
SWITCH = ("auto", "true", "false")


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def _choice(section: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    _check(value in choices, f"{section}.{name}", f"got {value!r}; choose one of {', '.join(choices)}")


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


@dataclass
class DataConfig:
    direction: str = "AtoB"  # AtoB: left half (or A/ folder) is the input
    load_size: int = 286  # images are resized to this, then randomly cropped
    crop_size: int = 256  # network input size (a power of two >= 32)
    preprocess: str = "resize_and_crop"
    flip: bool = True  # random horizontal flip, applied to both halves alike
    input_nc: int = 3  # 1 = grayscale, 3 = RGB
    output_nc: int = 3
    cache: bool = True  # keep decoded images in memory (fast epochs on small datasets)

    def validate(self) -> "DataConfig":
        s = "data"
        _choice(s, "direction", self.direction, DIRECTIONS)
        _choice(s, "preprocess", self.preprocess, PREPROCESS)
        _check(
            isinstance(self.crop_size, int) and self.crop_size >= 32 and _is_power_of_two(self.crop_size),
            f"{s}.crop_size",
            f"got {self.crop_size!r}; use a power of two >= 32 (e.g. 64, 128, 256)",
        )
        _check(isinstance(self.load_size, int) and self.load_size > 0, f"{s}.load_size", f"got {self.load_size!r}; use a positive integer")
        if self.preprocess in ("resize_and_crop", "crop"):
            _check(
                self.load_size >= self.crop_size,
                f"{s}.load_size",
                f"{self.load_size} is smaller than data.crop_size {self.crop_size}; set load_size >= crop_size",
            )
        for name in ("input_nc", "output_nc"):
            _check(getattr(self, name) in (1, 3), f"{s}.{name}", f"got {getattr(self, name)!r}; use 1 (grayscale) or 3 (RGB)")
        return self


@dataclass
class ModelConfig:
    ngf: int = 64  # generator filters in the first layer
    ndf: int = 64  # discriminator filters in the first layer
    netD: str = "patch"  # patch (n_layers_D=3 -> 70x70) or pixel (1x1)
    n_layers_D: int = 3
    norm: str = "batch"
    dropout: float = 0.5  # in the three innermost decoder blocks; 0 disables it
    init_gain: float = 0.02  # std of the N(0, gain) weight init

    def validate(self) -> "ModelConfig":
        s = "model"
        _choice(s, "netD", self.netD, DISCRIMINATORS)
        _choice(s, "norm", self.norm, NORMS)
        for name in ("ngf", "ndf", "n_layers_D"):
            v = getattr(self, name)
            _check(isinstance(v, int) and v > 0, f"{s}.{name}", f"got {v!r}; use a positive integer")
        _check(0.0 <= self.dropout < 1.0, f"{s}.dropout", f"got {self.dropout!r}; use a value in [0, 1)")
        _check(self.init_gain > 0, f"{s}.init_gain", f"got {self.init_gain!r}; use a positive number")
        return self


@dataclass
class TrainConfig:
    epochs: int = 100  # epochs at the initial learning rate
    epochs_decay: int = 100  # epochs of linear decay to zero after that
    batch_size: int = 1
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    gan_mode: str = "vanilla"
    lambda_l1: float = 100.0
    seed: int = 0
    device: str = "auto"  # auto (cuda, then cpu), cpu, cuda, cuda:1, ...
    amp: bool = True  # mixed precision on CUDA: bf16 where supported, else fp16 + GradScaler
    channels_last: str = field(default="auto", metadata={"switch": True})  # auto = on CUDA only
    cudnn_benchmark: bool = True  # CUDA: pick the fastest conv algorithms for the fixed size
    pin_memory: bool = True  # CUDA: page-locked batches copied with non_blocking=True
    compile: bool = False  # torch.compile G and D (minutes of compiling; pays off on long GPU runs)
    retain_memory: bool = True  # CPU: glibc keeps freed memory (no page faults every step)
    flush_denormal: bool = True  # CPU: denormal floats count as zero (x86 is slow on them)
    sync_batchnorm: bool = True  # under torchrun on CUDA: BatchNorm statistics over all ranks
    num_workers: int = 0  # DataLoader workers; 0 keeps the two-core CPU for compute
    log_every: int = 10  # steps between loss reports to callbacks
    sample_every: int = 100  # steps between sample grids
    checkpoint_every: int = 0  # steps between checkpoints; 0 = once per epoch only
    keep_checkpoints: int = 2  # epoch checkpoints kept besides last.pt

    def validate(self) -> "TrainConfig":
        s = "train"
        _choice(s, "gan_mode", self.gan_mode, GAN_MODES)
        if isinstance(self.channels_last, bool):
            self.channels_last = "true" if self.channels_last else "false"
        _choice(s, "channels_last", self.channels_last, SWITCH)
        for name in ("epochs", "epochs_decay", "num_workers", "checkpoint_every", "keep_checkpoints"):
            v = getattr(self, name)
            _check(isinstance(v, int) and v >= 0, f"{s}.{name}", f"got {v!r}; use an integer >= 0")
        _check(self.epochs + self.epochs_decay > 0, f"{s}.epochs", "epochs + epochs_decay must be at least 1")
        for name in ("batch_size", "log_every", "sample_every"):
            v = getattr(self, name)
            _check(isinstance(v, int) and v > 0, f"{s}.{name}", f"got {v!r}; use a positive integer")
        _check(self.lr > 0, f"{s}.lr", f"got {self.lr!r}; use a positive learning rate")
        for name in ("beta1", "beta2"):
            v = getattr(self, name)
            _check(0.0 <= v < 1.0, f"{s}.{name}", f"got {v!r}; use a value in [0, 1)")
        _check(self.lambda_l1 >= 0, f"{s}.lambda_l1", f"got {self.lambda_l1!r}; use a value >= 0")
        _check(
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

    def validate(self) -> "Config":
        self.data.validate()
        self.model.validate()
        self.train.validate()
        return self

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "Config":
        """Build from `{"data": {...}, "model": {...}, "train": {...}}`; other sections are ignored."""
        d = d or {}
        return cls(
            data=section_from_dict(DataConfig, d.get("data"), "data"),
            model=section_from_dict(ModelConfig, d.get("model"), "model"),
            train=section_from_dict(TrainConfig, d.get("train"), "train"),
        ).validate()


def section_from_dict(cls, values: Mapping[str, Any] | None, section: str, ignore: tuple[str, ...] = ()):
    """Build one dataclass section, refusing unknown keys and coercing obvious types."""
    values = dict(values or {})
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key in ignore:
            continue
        if key not in known:
            raise ConfigError(f"{section}.{key}: unknown key; known keys are {', '.join(known)}")
        kwargs[key] = _coerce(value, known[key], f"{section}.{key}")
    return cls(**kwargs)


def _coerce(value: Any, f: dataclasses.Field, key: str) -> Any:
    typ = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if typ == "bool":
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("true", "1", "yes", "on"):
                    return True
                if low in ("false", "0", "no", "off"):
                    return False
                raise ValueError(value)
            if isinstance(value, (bool, int)):
                return bool(value)
            raise ValueError(value)
        if typ == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if typ == "float":
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if typ == "str":
            if isinstance(value, bool) and f.metadata.get("switch"):  # YAML true/false
                return "true" if value else "false"
            if not isinstance(value, str):
                raise ValueError(value)
            return value
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: got {value!r}; expected a value of type {typ}") from None
    return value
