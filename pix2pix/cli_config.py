"""Every config field as a command-line flag (its help text and choices; booleans as
--x/--no-x), and the Config a command line means: `--config FILE` (YAML or JSON, strict), then
the recipe on every key still at its default, then the flags over both."""

from __future__ import annotations

import argparse
import json
import typing
from dataclasses import fields
from pathlib import Path

from . import recipes
from .config import SOURCE_KEYS, Config, ConfigError, DataConfig, ModelConfig, TrainConfig
from .config_values import build_section, type_name
from .errors import first_line

SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config field, with the field's help and choices; booleans as --x/--no-x."""
    parser.add_argument(
        "--config",
        type=Path,
        help="YAML/JSON file with data/model/train sections (e.g. params.yaml); flags override it",
    )
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(f"{section} options")
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            flag = f"--{f.name.replace('_', '-')}"
            text = f"{f.metadata.get('help', '')} (default: {f.default})"
            kwargs: dict = {"dest": f"{section}.{f.name}", "default": None, "help": text}
            if hints[f.name] is bool:
                group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
                continue
            choices = f.metadata.get("choices")
            if choices:
                kwargs["choices"] = [str(c) for c in choices]
                kwargs["metavar"] = "{" + ",".join(map(str, choices)) + "}"
            else:
                kwargs["metavar"] = type_name(hints[f.name]).upper()
            group.add_argument(flag, **kwargs)


def read_config_file(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text()
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
    else:
        try:
            import yaml
        except ImportError:
            raise ConfigError(f"{path}: reading YAML needs PyYAML (pip install pyyaml), or pass a .json file") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({first_line(e)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected data:, model: and train: sections")
    preset = data.get("preset")
    if preset not in (None, "none"):
        raise ConfigError(
            f"{path}: preset: {preset} is a pipeline setting the pix2pix CLI does not apply; "
            f"write it into the file first (python -m pipeline.ops.presets apply {preset}) or set preset: none"
        )
    return data


def config_from_args(args: argparse.Namespace) -> Config:
    """The file's data/model/train sections (strict), the recipe (--recipe, else the file's
    `recipe:`) on every key still at its default, then the flags over both."""
    base = read_config_file(args.config) if args.config else {}
    where = f"{args.config}: " if args.config else ""
    values = {}
    for section, cls in SECTIONS.items():
        values[section] = dict(base.get(section) or {})
        if section == "data":  # a pipeline params.yaml also says where its data comes from
            values[section] = {k: v for k, v in values[section].items() if k not in SOURCE_KEYS}
        try:
            build_section(cls, values[section], section)  # the file alone: errors name the file
        except ConfigError as e:
            raise ConfigError(f"{where}{e}") from None
    try:
        kind = getattr(args, "model.kind", None) or values["model"].get("kind")
        recipe = args.recipe or base.get("recipe") or recipes.default_for(kind)
        values = recipes.apply(values, str(recipe), Config().to_dict())
    except ConfigError as e:
        raise ConfigError(f"{'' if args.recipe else where}{e}") from None
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            flag = getattr(args, f"{section}.{f.name}")
            if flag is not None:
                values[section][f.name] = flag
    return Config(**{name: build_section(cls, values[name], name) for name, cls in SECTIONS.items()}).validate()
