"""Named training recipes: the model and train keys of a way to train, nothing about the task.

`paper` is Isola et al. 2017 as the reference trains it (the library's defaults); `best` always
names the measured winner of benchmarks/quality.py (the ablation in benchmarks/README.md). As
with the pipeline's presets, a recipe sets the keys left at their defaults: a value you set to
something else keeps it (`pix2pix train` flags always win). To train with a recipe's key at its
default, use `paper` and set the other keys yourself.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError


@dataclass(frozen=True)
class Recipe:
    summary: str
    values: dict[str, Any]  # "section.key" -> value


RECIPES: dict[str, Recipe] = {
    "paper": Recipe("the paper's: U-Net, one 70x70 PatchGAN, cGAN + 100 x L1, Adam 2e-4 (the defaults)", {}),
    "best": Recipe(
        "measured best at equal time on facades and edges -> photo (benchmarks/quality.py): the paper's networks, "
        "pix2pixHD discriminator feature matching (lambda_feat 10), an SSIM term (lambda_ssim 100), L1 on 4x4-block "
        "means in place of pixel L1 (lambda_l1 0, lambda_l1_coarse 1000), batch 4 at lr 4e-4, best.pt chosen on "
        "validation SSIM",
        {
            "model.lambda_feat": 10.0,
            "train.lambda_ssim": 100.0,
            # Pixels are left to the adversarial terms; colour and layout are held at 4x4-block scale.
            "train.lambda_l1": 0.0,
            "train.lambda_l1_coarse": 1000.0,
            "train.batch_size": 4,
            "train.lr": 4e-4,
            "train.best_metric": "ssim",
        },
    ),
    "cyclegan": Recipe(
        "unpaired (CycleGAN, Zhu et al. 2017, as the reference trains it): ResNet-9 generators, instance norm, "
        "no dropout, LSGAN, cycle 10 + identity 0.5, a pool of 50 past fakes (the default of model.kind unpaired)",
        {
            "model.kind": "unpaired",
            "model.netG": "resnet_9blocks",
            "model.norm": "instance",
            "model.dropout": 0.0,
            "train.gan_mode": "lsgan",
        },
    ),
}


def default_for(kind: str | None) -> str:
    """The recipe used when none is named: the paper's for paired data, CycleGAN's for unpaired."""
    return "cyclegan" if kind == "unpaired" else "paper"


def get(name: str) -> Recipe:
    if name not in RECIPES:
        raise ConfigError(f"recipe: unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return RECIPES[name]


def help_text() -> str:
    return "; ".join(f"{name} = {r.summary}" for name, r in RECIPES.items())


def apply(
    values: dict[str, dict[str, Any]], name: str, defaults: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """`values` (sections such as {"model": {...}, "train": {...}}) with the recipe's value on
    every key still at its default in `defaults` (so a file that spells out every default, like
    the shipped params.yaml, still takes the recipe)."""
    out = copy.deepcopy(values)
    for dotted, value in get(name).values.items():
        section, key = dotted.split(".")
        keys = out.setdefault(section, {})
        if keys.get(key, defaults[section][key]) == defaults[section][key]:
            keys[key] = value
    return out
