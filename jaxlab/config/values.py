"""Typed values: a field's annotation parses command-line text (`parse_value`) and checks the values
a section is built with (`_check_types`), so a float for `n_heads` or a string for `lr` is refused
with the field's name before any validation or training code sees it.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any

from jaxlab.errors import ConfigError

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def parse_value(key: str, text: str, hint: Any) -> Any:
    """Parse `text` as a value of the field's annotated type; errors name `key`."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and text.strip().lower() in ("none", "null"):
            return None
        inner = [a for a in args if a is not type(None)]
        return parse_value(key, text, inner[0])
    if hint is bool:
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ConfigError(key, f"expected a boolean, got {text!r}", ["true", "false"])
    if hint is int:
        try:
            as_float = float(text)
        except ValueError:
            raise ConfigError(key, f"expected an integer, got {text!r}") from None
        if not as_float.is_integer():
            raise ConfigError(key, f"expected an integer, got {text!r}")
        return int(as_float)
    if hint is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(key, f"expected a number, got {text!r}") from None
    if hint is str:
        return text
    if origin is tuple:
        body = text.strip()
        if body.startswith("["):
            try:
                items = json.loads(body)
            except json.JSONDecodeError:
                raise ConfigError(key, f"expected a list like [1, 2], got {text!r}") from None
            items = [json.dumps(i) if not isinstance(i, str) else i for i in items]
        else:
            items = [i for i in body.split(",") if i.strip()]
        elem = args[0] if args else str
        return tuple(parse_value(key, i, elem) for i in items)
    if hint is Any:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    raise ConfigError(key, f"cannot be set from the command line (type {hint})")


def _check_types(obj: Any) -> None:
    """Reject values of the wrong type early (a float for n_heads, a string for lr, ...)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        hint = hints[f.name]
        value = getattr(obj, f.name)
        if not _is_instance(value, hint):
            name = f"{obj.section}.{f.name}" if getattr(obj, "section", "") else f.name
            raise ConfigError(name, f"expected {_type_name(hint)}, got {value!r}")


def _is_instance(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_is_instance(value, a) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is tuple:
        return isinstance(value, tuple)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def type_text(hint: Any) -> str:
    """A field's annotation as text: `int`, `int | None`, `tuple[float, ...]`."""
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _field_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]
