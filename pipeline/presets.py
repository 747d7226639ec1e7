"""Named presets for the classic pix2pix tasks, as the paper trained them, plus the pair
builders: each is the set of params.yaml keys it sets, nothing else.

Pick one with `preset:` in params.yaml (`dvc exp run -S preset=facades`): the preset's values
replace the defaults for every stage, and a key you set in params.yaml (or with -S) to
anything other than its default keeps your value (pipeline/config.py). What each preset is
for, how long it trains and the `list / show / apply` commands live in pipeline/ops/presets.py,
outside the stages' code, so rewording a description re-runs nothing.
"""

from __future__ import annotations

from typing import Any

from pix2pix.errors import ConfigError

# Paper settings shared by all tasks (Isola et al. 2017, section 6.2 and the reference code).
PAPER = {
    "data.load_size": 286,
    "data.crop_size": 256,
    "data.preprocess": "resize_and_crop",
    "data.flip": True,
    "data.input_nc": 3,
    "data.output_nc": 3,
    "data.pairs.builder": "none",
    "model.ngf": 64,
    "model.ndf": 64,
    "model.netD": "patch",
    "model.n_layers_D": 3,
    "model.norm": "batch",
    "model.dropout": 0.5,
    "train.lr": 0.0002,
    "train.beta1": 0.5,
    "train.gan_mode": "vanilla",
    "train.lambda_l1": 100.0,
}


def _official(source: str, direction: str, batch: int, epochs: int, decay: int, **extra) -> dict[str, Any]:
    return {
        **PAPER,
        "data.source": source,
        "data.direction": direction,
        "train.batch_size": batch,
        "train.epochs": epochs,
        "train.epochs_decay": decay,
        **extra,
    }


def _builder(builder: str, **extra) -> dict[str, Any]:
    # data.source is left alone: point it at your folder of photos (synthetic = generated ones).
    return {
        **PAPER,
        "data.pairs.builder": builder,
        "data.pairs.size": 256,
        "data.direction": "AtoB",
        "train.batch_size": 4,
        "train.epochs": 25,
        "train.epochs_decay": 25,
        **extra,
    }


# CycleGAN (Zhu et al. 2017) as the reference trains it: the cyclegan recipe's networks and losses.
CYCLEGAN = {
    "model.kind": "unpaired",
    "model.netG": "resnet_9blocks",
    "model.norm": "instance",
    "model.dropout": 0.0,
    "train.gan_mode": "lsgan",
}


def _unpaired(source: str, direction: str, **extra) -> dict[str, Any]:
    return _official(source, direction, 1, 100, 100, **CYCLEGAN, **extra)


PRESETS: dict[str, dict[str, Any]] = {
    # 200 epochs at batch 1 for the small datasets, as in the paper.
    "facades": _official("facades", "BtoA", 1, 100, 100),
    "maps_aerial2map": _official("maps", "AtoB", 1, 100, 100),
    "maps_map2aerial": _official("maps", "BtoA", 1, 100, 100),
    "cityscapes": _official("cityscapes", "BtoA", 1, 100, 100),
    # The large datasets: a few epochs at batch 4.
    "edges2shoes": _official("edges2shoes", "AtoB", 4, 8, 7),
    "edges2handbags": _official("edges2handbags", "AtoB", 4, 8, 7),
    "night2day": _official("night2day", "AtoB", 4, 9, 8),
    # Unpaired (CycleGAN): two official unpaired datasets, and a paired set split apart (no pair
    # is ever seen together; evaluate still scores against the real test pairs: what pairs buy).
    "horse2zebra": _unpaired("horse2zebra", "AtoB"),
    "monet2photo": _unpaired("monet2photo", "AtoB"),
    "facades_unpaired": _unpaired("facades", "BtoA", **{"data.pairs_apart": True}),
    # Pairs built from your own photos (pipeline/data/builders.py).
    "colorization": _builder("grayscale", **{"data.input_nc": 1}),
    "sketch2photo": _builder("edges"),
    "superres": _builder("downscale", **{"data.pairs.downscale.factor": 4}),
    "denoise": _builder("noise"),
}


class PresetError(ConfigError):
    """An unknown preset name."""


def get(name: str) -> dict[str, Any]:
    """The dotted keys and values preset `name` sets."""
    if name not in PRESETS:
        raise PresetError(f"preset: unknown preset {name!r}; choose none or one of {', '.join(PRESETS)}")
    return PRESETS[name]


def lookup(tree: dict, dotted: str) -> Any:
    """`tree["a"]["b"]` for "a.b"."""
    for key in dotted.split("."):
        tree = tree[key]
    return tree


def assign(tree: dict, dotted: str, value: Any) -> None:
    """Set "a.b" in a nested dict, making the sections on the way that are missing."""
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
    for dotted, value in get(name).items():
        assign(params, dotted, value)
    return params
