"""Building config sections from mappings (YAML, JSON, CLI strings), strictly: an unknown key
or a value of the wrong type is a ConfigError with one line that names the key and says what
would be accepted. pix2pix.config holds the sections themselves."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from .errors import ConfigError


def build_section(cls, values: Mapping[str, Any] | None, section: str, ignore: tuple[str, ...] = ()):
    """Build dataclass `cls` from `values`: unknown keys refused, each value coerced to its
    field's annotated type (nested dataclasses, `X | None`, lists included)."""
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"{section or 'config'}: expected a mapping of keys, got {values!r}")
    known = {f.name: f for f in fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key in ignore:
            continue
        name = f"{section}.{key}" if section else key
        if key not in known:
            raise ConfigError(f"{name}: unknown key; known keys are {', '.join(known)}")
        kwargs[key] = coerce(value, hints[key], name, known[key].metadata)
    return cls(**kwargs)


def type_name(typ: Any) -> str:
    if typ is type(None):
        return "null"
    if typing.get_origin(typ) in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(typ))
    if typing.get_origin(typ) in (list, tuple):
        return f"list of {type_name(typing.get_args(typ)[0])}"
    return getattr(typ, "__name__", str(typ))


def coerce(value: Any, typ: Any, key: str, metadata: Mapping[str, Any] | None = None) -> Any:
    """`value` as type `typ`, or a ConfigError naming `key`. Strings (CLI flags, `-S k=v`)
    are parsed; a float with a fraction is never silently truncated to an int."""
    metadata = metadata or {}
    origin = typing.get_origin(typ)
    if dataclasses.is_dataclass(typ):
        return build_section(typ, value, key)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(typ)
        if value is None or (isinstance(value, str) and value.strip().lower() in ("null", "none", "~")):
            if type(None) in args:
                return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, key, metadata)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: got {value!r}; expected {type_name(typ)}")
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.strip("[]").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: got {value!r}; expected {type_name(typ)}")
        item = typing.get_args(typ)[0] if typing.get_args(typ) else Any
        items = [coerce(v, item, key) for v in value]
        return tuple(items) if origin is tuple else items
    try:
        if typ is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("true", "1", "yes", "on"):
                    return True
                if low in ("false", "0", "no", "off"):
                    return False
                raise ValueError(value)
            if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
                return bool(value)
            raise ValueError(value)
        if typ is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            if isinstance(value, str):
                value = float(value) if "." in value or "e" in value.lower() else int(value)
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError(value)
            return int(value)
        if typ is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if typ is str:
            if isinstance(value, bool) and metadata.get("switch"):  # YAML true/false
                return "true" if value else "false"
            if not isinstance(value, str):
                raise ValueError(value)
            return value
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: got {value!r}; expected a value of type {type_name(typ)}") from None
    return value
