"""The config machinery every command uses: dataclass fields with help text, building a
dataclass from a nested dict (unknown keys are errors; renamed keys name their new place),
``key=value`` overrides, and the one YAML loader (:func:`load_yaml`, with ``quick`` sections).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml


def field_help(default: Any, help: str, **kwargs) -> Any:
    """A dataclass field with ``help`` text in its metadata (mutable defaults are copied)."""
    if isinstance(default, (dict, list)):

        def copy() -> Any:
            return type(default)(default)

        return dataclasses.field(default_factory=copy, metadata={"help": help}, **kwargs)
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


class ConfigError(ValueError):
    """A config value or override that cannot be used, with the key that is wrong."""


# dict <-> dataclass


def _check_value(path: str, tp: Any, value: Any) -> Any:
    """Coerce ``value`` to the annotated type ``tp`` where that is unambiguous, else raise."""
    if isinstance(tp, str):
        tp = eval(tp, vars(typing) | {"Path": Path}, {})  # annotations are strings (PEP 563)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_value(path, option, value)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: {value!r} fits none of {tp}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML reads "1e-4" as a string
            except ValueError:
                pass
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    if tp in (dict, list) or origin in (dict, list):
        want = origin or tp
        if isinstance(value, want):
            return value
        raise ConfigError(f"{path}: expected a {want.__name__}, got {value!r}")
    return value


def from_dict(cls: type, data: dict, path: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict; unknown keys are errors (typos never pass)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    where = f"{path}." if path else ""
    renamed = getattr(cls, "RENAMED_KEYS", {})
    for key in sorted(unknown & set(renamed)):
        raise ConfigError(f"config key {where}{key} was {renamed[key]}")
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {sorted(where + k for k in unknown)}; "
            f"valid keys here: {sorted(fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        f = fields[name]
        key = f"{path}.{name}" if path else name
        default = _dataclass_default(f)
        if default is not None:
            if value is not None and not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a mapping, got {value!r}")
            # a partial section keeps the recipe's own defaults for the keys it leaves out
            kwargs[name] = from_dict(
                type(default), {**dataclasses.asdict(default), **(value or {})}, key
            )
        else:
            kwargs[name] = _check_value(key, f.type, value)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{path or 'config'}: {err}") from err


def _dataclass_default(f: dataclasses.Field) -> Any:
    """The default instance of a nested-section field (None for a plain field)."""
    if f.default_factory is dataclasses.MISSING:
        return None
    default = f.default_factory()
    return default if dataclasses.is_dataclass(default) else None


def section_default(cls: type, **defaults: Any) -> Any:
    """A nested-section field whose defaults differ from ``cls``'s own, e.g. the calibration
    recipe's ``optim = section_default(OptimConfig, lr=1e-5)``."""
    return dataclasses.field(default_factory=lambda: cls(**defaults))


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides to a nested dict (values parsed as YAML)."""
    data = yaml.safe_load(yaml.safe_dump(data))  # deep copy
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (e.g. loss.name=jsd)")
        key, raw = item.split("=", 1)
        key = key.strip().lstrip("-")
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {err}") from err
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if node.get(part) is None:
                node[part] = {}
            if not isinstance(node[part], dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = node[part]
        node[parts[-1]] = value
    return data


def read_yaml_mapping(path: str | os.PathLike) -> dict:
    """The top-level mapping of a YAML file; a missing file, bad YAML or a non-mapping is a
    :class:`ConfigError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def load_yaml(
    cls: type,
    path: str | os.PathLike | None = None,
    overrides: list[str] | None = None,
    quick: bool = False,
) -> Any:
    """Build config class ``cls`` from a YAML file (or its defaults when ``path`` is None),
    then apply ``key=value`` overrides. The one loader of every command.

    ``quick`` replaces the file by its ``quick`` section: a mapping of replaced top-level keys,
    or the path of a whole config file (relative to this file, else to the working directory).
    A ``quick`` key is never passed on to ``cls``.
    """
    data: dict = {} if path is None else read_yaml_mapping(path)
    if quick:
        section = data.get("quick")
        if section is None:
            raise ConfigError(f"{path} has no quick section")
        if isinstance(section, str):
            quick_path = Path(path).parent / section  # type: ignore[arg-type]
            quick_path = quick_path if quick_path.is_file() else Path(section)
            if not quick_path.is_file():
                raise ConfigError(f"{path}: quick config file not found: {section}")
            data = read_yaml_mapping(quick_path)
        elif isinstance(section, dict):
            data = {**data, **section}
        else:
            raise ConfigError(f"{path}: quick must be a mapping or a file name, got {section!r}")
    data.pop("quick", None)
    return from_dict(cls, apply_overrides(data, overrides or []))


def save_config(config: Any, path: str | os.PathLike) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False), encoding="utf-8")
