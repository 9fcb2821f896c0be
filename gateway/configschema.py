"""Turn parsed TOML into frozen dataclasses, naming the key of any bad value.

Every section of the configuration is a frozen dataclass; this module walks one
against a dict and builds it, so each package (billing, TV, tunnel) can declare
its own section in its own module and still get the same validation and the
same error messages ("sip.udp_port: expected an integer, got 'x'").

Constraints ride in field metadata: ``field(default=5060, metadata=bounds(1, 65535))``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

T = TypeVar("T")


class ConfigError(Exception):
    """A configuration file that cannot be used; the message names the key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem


class InvalidField(ValueError):
    """Raised by a section's ``__post_init__`` to blame one of its keys."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = key


def bounds(minimum: float | None = None, maximum: float | None = None) -> dict[str, Any]:
    """Field metadata: the value must lie in [minimum, maximum]."""
    return {"min": minimum, "max": maximum}


def load_section(cls: type[T], data: Any, path: str = "") -> T:
    """Build dataclass ``cls`` from ``data`` (a TOML table), or raise ConfigError."""
    if not isinstance(data, Mapping):
        raise ConfigError(path, f"expected a table, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    known = {name for name, f in fields.items() if f.init}
    for key in data:
        if key not in known:
            raise ConfigError(_join(path, key), _unknown_key_message(key, known))
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if not f.init:
            continue
        key = _join(path, name)
        if name in data:
            value = _convert(hints[name], data[name], key)
            _check_bounds(f, value, key)
            values[name] = value
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(key, "required key is missing")
    try:
        return cls(**values)
    except InvalidField as exc:
        # A key that already carries its full path (a cross-section check) is used as is.
        key = exc.key if "." in exc.key else _join(path, exc.key)
        raise ConfigError(key, str(exc)) from None
    except ValueError as exc:  # a cross-field check blames the whole section
        raise ConfigError(path, str(exc)) from None


def _unknown_key_message(key: str, known: set[str]) -> str:
    import difflib

    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown key{hint}; known keys: {', '.join(sorted(known))}"


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _check_bounds(f: dataclasses.Field[Any], value: Any, key: str) -> None:
    lo, hi = f.metadata.get("min"), f.metadata.get("max")
    if lo is not None and value < lo:
        raise ConfigError(key, f"must be at least {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise ConfigError(key, f"must be at most {hi}, got {value!r}")


def _convert(hint: Any, value: Any, key: str) -> Any:
    origin = get_origin(hint)
    if origin is Union or origin is types.UnionType:
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, key)
            except ConfigError as exc:
                errors.append(exc.problem)
        raise ConfigError(key, " or ".join(errors))
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            raise ConfigError(key, f"must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, list):
            raise ConfigError(key, f"expected a list, got {_describe(value)}")
        (item_type, *_rest) = get_args(hint) or (Any,)
        return tuple(_convert(item_type, item, _join(key, i)) for i, item in enumerate(value))
    if origin in (dict, Mapping) or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"expected a table, got {_describe(value)}")
        _key_type, value_type = get_args(hint) or (str, Any)
        return types.MappingProxyType({k: _convert(value_type, v, _join(key, k)) for k, v in value.items()})
    if dataclasses.is_dataclass(hint):
        return load_section(hint, value, key)  # type: ignore[arg-type]
    if hint is Any:
        return value
    if hint is Decimal:
        # TOML floats are binary; str() of one gives back the decimal the user wrote.
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConfigError(key, f"expected a decimal amount, got {_describe(value)}")
        try:
            return Decimal(str(value))
        except InvalidOperation:
            raise ConfigError(key, f"expected a decimal amount, got {value!r}") from None
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {_describe(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {_describe(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"expected a number, got {_describe(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {_describe(value)}")
        return value
    raise ConfigError(key, f"unsupported configuration type {hint!r}")  # a schema bug, not user error
