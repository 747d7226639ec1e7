"""Named presets for the classic pix2pix tasks, as the paper trained them, plus the pair builders.

Pick one with `preset:` in params.yaml (`dvc exp run -S preset=facades`): the preset's values
replace the defaults for every stage, and a key you set in params.yaml (or with -S) to
anything other than its default keeps your value (pipeline/params.py). To see every key of a
preset in params.yaml and edit from there, write it into the file:

    python -m pipeline.presets list            # what there is
    python -m pipeline.presets show facades    # the keys it sets
    python -m pipeline.presets apply facades   # write them into params.yaml (comments kept)
"""

from __future__ import annotations

import argparse
import io
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pix2pix.errors import ConfigError

# Paper settings shared by all tasks (Isola et al. 2017, section 6.2 and the reference code).
PAPER = {
    "data.load_size": 286, "data.crop_size": 256, "data.preprocess": "resize_and_crop", "data.flip": True,
    "data.input_nc": 3, "data.output_nc": 3, "data.pairs.builder": "none",
    "model.ngf": 64, "model.ndf": 64, "model.netD": "patch", "model.n_layers_D": 3, "model.norm": "batch",
    "model.dropout": 0.5, "train.lr": 0.0002, "train.beta1": 0.5, "train.gan_mode": "vanilla", "train.lambda_l1": 100.0,
}
# Measured throughput of our trainer at 256x256 (benchmarks/README.md), for the time estimates.
CPU_IMAGES_PER_S = 1.1  # the project's 2-core reference CPU, batch 1


@dataclass(frozen=True)
class Preset:
    task: str
    values: dict[str, Any]
    train_images: int | None  # pairs in the training split; None = your photos

    @property
    def epochs(self) -> int:
        return self.values["train.epochs"] + self.values["train.epochs_decay"]

    def hours(self, images_per_s: float = CPU_IMAGES_PER_S) -> float:
        """Training time; for builder presets, per 1,000 photos."""
        return (self.train_images or 1000) * self.epochs / images_per_s / 3600


def _official(task: str, source: str, direction: str, batch: int, epochs: int, decay: int, images: int, **extra) -> Preset:
    values = {**PAPER, "data.source": source, "data.direction": direction, "train.batch_size": batch,
              "train.epochs": epochs, "train.epochs_decay": decay, **extra}
    return Preset(task, values, images)


def _builder(task: str, builder: str, **extra) -> Preset:
    # data.source is left alone: point it at your folder of photos (synthetic = generated ones).
    values = {**PAPER, "data.pairs.builder": builder, "data.pairs.size": 256, "data.direction": "AtoB",
              "train.batch_size": 4, "train.epochs": 25, "train.epochs_decay": 25, **extra}
    return Preset(task, values, None)


PRESETS: dict[str, Preset] = {
    # 200 epochs at batch 1 for the small datasets, as in the paper.
    "facades": _official("labels -> facade photo (CMP Facades)", "facades", "BtoA", 1, 100, 100, 400),
    "maps_aerial2map": _official("aerial photo -> map (Google Maps)", "maps", "AtoB", 1, 100, 100, 1096),
    "maps_map2aerial": _official("map -> aerial photo (Google Maps)", "maps", "BtoA", 1, 100, 100, 1096),
    "cityscapes": _official("semantic labels -> street photo (Cityscapes)", "cityscapes", "BtoA", 1, 100, 100, 2975),
    # The large datasets: a few epochs at batch 4.
    "edges2shoes": _official("edges -> shoe photo (UT Zappos50K)", "edges2shoes", "AtoB", 4, 8, 7, 49825),
    "edges2handbags": _official("edges -> handbag photo (Amazon handbags)", "edges2handbags", "AtoB", 4, 8, 7, 138567),
    "night2day": _official("night -> day (webcam time-lapses)", "night2day", "AtoB", 4, 9, 8, 17823),
    # Pairs built from your own photos (pipeline/builders.py).
    "colorization": _builder("grayscale -> colour photo", "grayscale", **{"data.input_nc": 1}),
    "sketch2photo": _builder("Canny edge sketch -> photo", "edges"),
    "superres": _builder("4x downscaled -> full-resolution photo", "downscale", **{"data.pairs.downscale.factor": 4}),
    "denoise": _builder("noisy, JPEG-damaged -> clean photo", "noise"),
}


class PresetError(ConfigError):
    """An unknown preset name."""


def get(name: str) -> Preset:
    if name not in PRESETS:
        raise PresetError(f"preset: unknown preset {name!r}; choose none or one of {', '.join(PRESETS)}")
    return PRESETS[name]


def _set(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for key in parents:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[leaf] = value


def apply(params: dict, name: str | None = None) -> dict:
    """`params` with the named preset's (or `params["preset"]`'s) values written over it."""
    name = name if name is not None else params.get("preset") or "none"
    if name == "none":
        return params
    for dotted, value in get(name).values.items():
        _set(params, dotted, value)
    return params


def write_into_params(path: Path, name: str) -> None:
    """Write the preset's values into a params file, keeping its comments and order."""
    from ruamel.yaml import YAML

    from pix2pix.checkpoint import atomic_write_text

    yaml = YAML()
    yaml.preserve_quotes = True
    doc = yaml.load(path.read_text())
    apply(doc, name)
    doc["preset"] = "none"  # the values are now in the file itself
    out = io.StringIO()
    yaml.dump(doc, out)
    atomic_write_text(path, out.getvalue())


def _duration(p: Preset, images_per_s: float) -> str:
    h = p.hours(images_per_s)
    text = f"~{h * 60:.0f} min" if h < 1 else f"~{h:.0f} h" if h < 48 else f"~{h / 24:.0f} days"
    return text + (" per 1,000 photos" if p.train_images is None else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.presets", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    listing = sub.add_parser("list", help="the presets, what they train and how long it takes")
    listing.add_argument("--images-per-s", type=float, default=CPU_IMAGES_PER_S,
                         help="your machine's 256x256 training rate (benchmarks/train_speed.py); default: the reference 2-core CPU")
    show = sub.add_parser("show", help="the keys a preset sets")
    show.add_argument("name")
    use = sub.add_parser("apply", help="write a preset's values into params.yaml")
    use.add_argument("name")
    use.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = ap.parse_args(argv)
    try:
        if args.cmd == "list":
            for name, p in PRESETS.items():
                v = p.values
                print(f"{name:16s} {p.task:45s} {p.epochs:3d} epochs, batch {v['train.batch_size']}, {_duration(p, args.images_per_s)}")
        elif args.cmd == "show":
            for key, value in get(args.name).values.items():
                print(f"{key}: {value}")
        else:
            get(args.name)
            if not args.params.is_file():
                raise PresetError(f"{args.params}: not found; run from the project root or pass --params")
            write_into_params(args.params, args.name)
            print(f"{args.params}: preset {args.name} written ({len(get(args.name).values)} keys); run: dvc repro")
    except PresetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
