"""Config sections as frozen dataclasses, built from plain YAML data with a key path in every error.

A section's field annotations are its schema: ``Literal[...]`` lists the allowed values, ``tuple[str, ...]``
takes a list, a nested dataclass is a subsection, and each section's ``__post_init__`` checks ranges with
:func:`require`. A field may hold one of several sections chosen by their ``name`` (the ``method`` section):
its owner lists them in a class attribute ``VARIANTS = {field: {name: section class}}``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Literal

import yaml

from jaxdfl.errors import ConfigError


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise ConfigError(f"{key_node.start_mark.name}:{line}: key {key!r} appears twice in one mapping")
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(text: str, where: str):
    """Parse YAML ``text`` (``where`` names it in errors): a bad document or a duplicate key is a
    :class:`ConfigError`."""
    loader = None
    try:
        loader = _StrictLoader(text)  # refuses non-printable characters already here
        loader.name = where
        return loader.get_single_data()
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: not valid YAML ({' '.join(str(err).split())})") from None
    finally:
        if loader is not None:
            loader.dispose()


def require(ok: bool, key: str, message: str) -> None:
    """Raise :class:`ConfigError` ``"key: message"`` unless ``ok`` (the caller's section prefixes its path)."""
    if not ok:
        raise ConfigError(f"{key}: {message}")


def plain(value):
    """Nested dicts and lists of ``value`` (dataclasses and tuples unpacked), for YAML and comparisons."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def _type_name(tp) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def _coerce(value, tp, path: str):
    """Check ``value`` against annotation ``tp`` and convert it (lists → tuples, ints → floats)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: got {value!r}; allowed: {', '.join(repr(a) for a in args)}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, path)
            except ConfigError:
                pass
        raise ConfigError(f"{path}: got {value!r}; expected {' or '.join(_type_name(a) for a in args)}")
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: got {value!r}; expected a list")
        return tuple(_coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: got {value!r}; expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: got {value!r}; expected an integer")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: got {value!r}; expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: got {value!r}; expected a string")
        return value
    raise TypeError(f"unsupported config annotation {tp!r} at {path}")


def _variant(cls, field: dataclasses.Field, data, path: str):
    """The section class a variant field holds for ``data`` (chosen by its ``name``; default: the field's)."""
    options = cls.VARIANTS[field.name]
    name = data.get("name") if isinstance(data, dict) and "name" in data else field.default_factory().name
    if not isinstance(name, str) or name not in options:
        raise ConfigError(f"{path}.name: got {name!r}; allowed: {', '.join(repr(n) for n in options)}")
    return options[name]


def build(cls, data, path: str = ""):
    """An instance of section ``cls`` from the mapping ``data`` (None = all defaults); errors name ``path``."""
    prefix = f"{path}." if path else ""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping of keys, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}'; allowed under "
                          f"{path or 'the top level'}: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    variants = getattr(cls, "VARIANTS", {})
    kwargs = {}
    for key, value in data.items():
        if key not in variants:
            kwargs[key] = _coerce(value, hints[key], f"{prefix}{key}")
            continue
        tp = _variant(cls, fields[key], value, prefix + key)
        try:
            kwargs[key] = _coerce(value, tp, f"{prefix}{key}")
        except ConfigError as err:
            if not str(err).startswith("unknown config key"):
                raise
            name = typing.get_args(typing.get_type_hints(tp)["name"])[0]
            raise ConfigError(f"{err} (with {prefix}{key}.name: {name})") from None
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"{prefix}{err}") from None


def check_path(cls, dotted: str) -> None:
    """Raise :class:`ConfigError` unless ``dotted`` names a key of section ``cls`` (every segment checked; a
    variant field accepts the keys of any of its sections)."""
    sections = [cls]
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        fields = {f.name: (section, f) for section in sections for f in dataclasses.fields(section)}
        if part not in fields:
            where = ".".join(parts[:i]) or "the top level"
            raise ConfigError(f"unknown config key '{dotted}'; allowed under {where}: {', '.join(fields)}")
        if i == len(parts) - 1:
            return
        owner, field = fields[part]
        variants = getattr(owner, "VARIANTS", {}).get(part)
        tp = typing.get_type_hints(owner)[part]
        if variants is None and not dataclasses.is_dataclass(tp):
            raise ConfigError(f"unknown config key '{dotted}': '{'.'.join(parts[:i + 1])}' is not a section")
        sections = list(dict.fromkeys(variants.values())) if variants else [tp]


__all__ = ["build", "check_path", "load_yaml", "plain", "require"]
