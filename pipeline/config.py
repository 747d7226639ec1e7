"""The pipeline's one configuration: params.yaml, read strictly into `PipelineConfig`.

Every stage, the flows and the web tools call `load_config()`; nothing else reads
params.yaml. Unknown keys and wrong types are one-line errors naming the key. The defaults
live here, in the dataclasses; the shipped params.yaml spells out the same values (a test
keeps the two equal).

Presets (pipeline/presets.py): a preset's values replace the defaults, and every key whose
value in params.yaml differs from its default keeps the value from params.yaml (so
`dvc exp run -S preset=facades -S data.source=/my/copy` trains facades from /my/copy).

Recipes (pix2pix/recipes.py) work the same way and come first: `recipe: best` sets its
model/train keys where params.yaml holds the default, before the preset sets the task's (a
preset says the task, a recipe how to train for it: where both name a key, such as the batch
size, the recipe's value stands).

The `promotion` section belongs to the champion/challenger gate, which no stage runs: it is
kept here as given and read strictly by the gate's own schema (pipeline/tracking/promotion.py),
so rewording the gate's help or changing its defaults re-runs no stage.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from pix2pix import recipes
from pix2pix.config import (
    Config,
    ConfigError,
    DataConfig,
    ModelConfig,
    TrainConfig,
    build_section,
    check_choices,
    option,
    require,
)
from pix2pix.errors import first_line

from . import presets
from .data.sources import dataset_name
from .paths import params_path


def redefault(cls, name: str, value: Any):
    """Field `name` of library section `cls` (its help and choices) with the pipeline's default."""
    return option(value, **cls.__dataclass_fields__[name].metadata)


# -- data.* keys of the pipeline: where the images come from --------------------------------
@dataclass
class SyntheticConfig:
    size: int = option(64, "pixels per side of each half")
    train: int = option(300, "training pairs")
    val: int = option(30, "validation pairs")
    test: int = option(50, "test pairs")
    seed: int = option(0, "generator seed")
    unpaired: bool = option(
        False,
        "write two unrelated domains instead of pairs: trainA/ photos and trainB/ label maps of other facades "
        "(the reference's unaligned layout; train with model.kind unpaired)",
    )


@dataclass
class SplitConfig:
    val: float = option(0.1, "share of pairs for validation (datasets without their own split folders)")
    test: float = option(0.1, "share of pairs for the test split")
    seed: int = option(0, "seed of the assignment")


@dataclass
class EdgesConfig:
    sigma: float = option(2.0, "Gaussian smoothing before Canny: larger = fewer, longer edges")
    low: float = option(0.1, "low hysteresis threshold on the [0, 1] grayscale gradient")
    high: float = option(0.2, "high hysteresis threshold")


@dataclass
class DownscaleConfig:
    factor: int = option(4, "4 = 4x super-resolution")


@dataclass
class NoiseConfig:
    sigma: float = option(0.1, "Gaussian noise std in [0, 1] units; 0 = none")
    jpeg_quality: int = option(20, "JPEG re-encoding quality 1-95; 0 = none")


BUILDERS = ("none", "grayscale", "edges", "downscale", "noise")


@dataclass
class PairsConfig:
    builder: str = option("none", "build A|B pairs from ordinary photos (pipeline/data/builders.py)", BUILDERS)
    size: int = option(256, "photos are resized and centre-cropped to size x size")
    seed: int = option(0, "seed of the noise builder's draws")
    edges: EdgesConfig = option(EdgesConfig(), "Canny settings of the edges builder")
    downscale: DownscaleConfig = option(DownscaleConfig(), "the downscale builder")
    noise: NoiseConfig = option(NoiseConfig(), "the noise builder")

    @property
    def enabled(self) -> bool:
        return self.builder != "none"

    def validate(self) -> PairsConfig:
        s = "data.pairs"
        check_choices(self, s)
        require(self.size >= 32, f"{s}.size", f"got {self.size}; use at least 32")
        require(self.edges.sigma > 0, f"{s}.edges.sigma", f"got {self.edges.sigma}; use a positive number")
        require(
            0 <= self.edges.low <= self.edges.high,
            f"{s}.edges.low",
            f"need 0 <= low <= high, got {self.edges.low} and {self.edges.high}",
        )
        require(
            2 <= self.downscale.factor < self.size,
            f"{s}.downscale.factor",
            f"got {self.downscale.factor}; use 2 <= factor < size",
        )
        require(self.noise.sigma >= 0, f"{s}.noise.sigma", f"got {self.noise.sigma}; use a value >= 0")
        require(
            0 <= self.noise.jpeg_quality <= 95,
            f"{s}.noise.jpeg_quality",
            f"got {self.noise.jpeg_quality}; use 1-95, or 0 for none",
        )
        require(
            self.noise.sigma > 0 or self.noise.jpeg_quality > 0, f"{s}.noise", "set sigma > 0 and/or jpeg_quality > 0"
        )
        return self


# -- the library's sections, with the pipeline's defaults (small, for the synthetic set) --
@dataclass
class PipelineDataConfig(DataConfig):
    direction: str = redefault(DataConfig, "direction", "BtoA")
    load_size: int = redefault(DataConfig, "load_size", 72)
    crop_size: int = redefault(DataConfig, "crop_size", 64)
    source: str = option("synthetic", "synthetic, an official dataset name, a URL, or a local folder/archive")
    synthetic: SyntheticConfig = option(SyntheticConfig(), "the embedded generator (source: synthetic)")
    split: SplitConfig = option(SplitConfig(), "split ratios for datasets without train/val/test folders")
    pairs: PairsConfig = option(PairsConfig(), "pair builders for folders of ordinary photos")

    def library(self) -> DataConfig:
        return DataConfig(**{f.name: getattr(self, f.name) for f in fields(DataConfig)})

    def validate(self) -> PipelineDataConfig:
        super().validate()
        require(self.source.strip() != "", "data.source", "empty; use synthetic, a dataset name, a URL or a folder")
        for name in ("train", "val", "test"):
            v = getattr(self.synthetic, name)
            require(v >= 0, f"data.synthetic.{name}", f"got {v}; use an integer >= 0")
        require(self.synthetic.train > 0, "data.synthetic.train", "use at least 1 training pair")
        require(self.synthetic.size >= 16, "data.synthetic.size", f"got {self.synthetic.size}; use at least 16")
        sp = self.split
        require(
            0 <= sp.val < 1 and 0 <= sp.test < 1 and sp.val + sp.test < 1,
            "data.split",
            f"val={sp.val}, test={sp.test}; each must be in [0, 1) and their sum below 1",
        )
        self.pairs.validate()
        return self


@dataclass
class PipelineModelConfig(ModelConfig):
    ngf: int = redefault(ModelConfig, "ngf", 32)
    ndf: int = redefault(ModelConfig, "ndf", 32)


@dataclass
class PipelineTrainConfig(TrainConfig):
    epochs: int = redefault(TrainConfig, "epochs", 15)
    epochs_decay: int = redefault(TrainConfig, "epochs_decay", 15)
    batch_size: int = redefault(TrainConfig, "batch_size", 4)
    sample_every: int = redefault(TrainConfig, "sample_every", 250)


@dataclass
class EvaluateConfig:
    grid_images: int = option(6, "test images in reports/best.png and worst.png")
    # Here, not under train: choosing the checkpoint re-runs evaluate and export, never training.
    keep: str = option(
        "best",
        "the checkpoint evaluate and export use: best (models/checkpoints/best.pt, chosen on the "
        "smoothed validation score, train.best_metric / best_window; last.pt when training wrote none) or last",
        ("best", "last"),
    )
    fid_weights: str = option(
        "",
        "FID/KID Inception weights: a file, empty = torch's hub cache (where torch-fidelity keeps them), "
        "or download (online); without them FID/KID are skipped with one line saying where it looked",
    )

    def validate(self) -> EvaluateConfig:
        require(self.grid_images > 0, "evaluate.grid_images", f"got {self.grid_images}; use a positive integer")
        check_choices(self, "evaluate")
        return self


EXPORT_FORMATS = ("torchscript", "onnx")


@dataclass
class ExportConfig:
    formats: list[str] = option(
        list(EXPORT_FORMATS), "files to export: torchscript and/or onnx (onnx is what gets registered)"
    )
    reverse: bool = option(
        False,
        "unpaired models: also export the B -> A generator (models/export/reverse/) and register it as "
        "pix2pix-<dataset>-BA",
    )

    def validate(self) -> ExportConfig:
        bad = [f for f in self.formats if f not in EXPORT_FORMATS]
        require(
            not bad and bool(self.formats),
            "export.formats",
            f"got {self.formats}; use a list of {', '.join(EXPORT_FORMATS)}",
        )
        return self


@dataclass
class PipelineConfig:
    preset: str = option("none", "a named setting for a classic task (python -m pipeline.ops.presets list)")
    recipe: str = option("paper", f"a named way to train: {recipes.help_text()}")
    data: PipelineDataConfig = option(PipelineDataConfig(), "where the data comes from and how it feeds the network")
    model: PipelineModelConfig = option(PipelineModelConfig(), "the networks")
    train: PipelineTrainConfig = option(PipelineTrainConfig(), "the training run")
    evaluate: EvaluateConfig = option(EvaluateConfig(), "the evaluate stage")
    export: ExportConfig = option(ExportConfig(), "the export stage")
    promotion: dict[str, Any] = option({}, "the champion/challenger gate (read by pipeline/tracking/promotion.py)")

    def validate(self) -> PipelineConfig:
        if self.preset != "none":
            presets.get(self.preset)  # an unknown name is a one-line error listing the known ones
        recipes.get(self.recipe)
        for part in (self.data, self.model, self.train, self.evaluate, self.export):
            part.validate()
        require(isinstance(self.promotion, dict), "promotion", f"got {self.promotion!r}; expected keys such as metric:")
        return self

    def library(self) -> Config:
        """The pix2pix library's config (data/model/train without the pipeline's keys)."""
        return Config(
            data=self.data.library(),
            model=ModelConfig(**dataclasses.asdict(self.model)),
            train=TrainConfig(**dataclasses.asdict(self.train)),
        ).validate()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def dataset(self) -> str:
        """A short name for the data source: MLflow experiment `<name>`, model `pix2pix-<name>`."""
        return dataset_name(self.data.source)


# -- loading ------------------------------------------------------------------------------
def read_params_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found; run from the project root or set P2P_PARAMS")
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({first_line(e)})") from None
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected sections such as data:, model:, train:")
    return params


def with_preset(values: dict[str, Any], name: str, recipe: str = "paper") -> dict[str, Any]:
    """`values` (a full config dict) with the preset's values on every key left at its default,
    except the keys `recipe` names: a recipe value can equal the default (batch 4 is the
    pipeline's), and the preset's task setting must not undo it."""
    if name == "none":
        return values
    defaults = PipelineConfig().to_dict()
    out = copy.deepcopy(values)
    for dotted, value in presets.get(name).items():
        if dotted not in recipes.get(recipe).values and presets.lookup(out, dotted) == presets.lookup(defaults, dotted):
            presets.assign(out, dotted, value)
    return out


def with_recipe(values: dict[str, Any], name: str) -> dict[str, Any]:
    """`values` (a full config dict) with the recipe's values on every key left at its default."""
    return recipes.apply(values, name, PipelineConfig().to_dict())


def config_from_dict(params: dict[str, Any]) -> PipelineConfig:
    """Strictly built and validated, with the preset and the recipe applied (module docstring)."""
    explicit = build_section(PipelineConfig, params, "")
    merged = with_preset(with_recipe(explicit.to_dict(), explicit.recipe), explicit.preset, explicit.recipe)
    return build_section(PipelineConfig, merged, "").validate()


def load_config(path: Path | None = None) -> PipelineConfig:
    path = path or params_path()
    try:
        return config_from_dict(read_params_file(path))
    except ConfigError as e:
        message = str(e)
        raise ConfigError(message if message.startswith(f"{path}:") else f"{path}: {message}") from None
