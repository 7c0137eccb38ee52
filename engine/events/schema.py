"""Checked reading of one YAML mapping into typed values, with errors a person can act on.

Each section of ``rules.yaml`` (a rule, ``mqtt``, ``webhook``, ``snapshots``) is a table of
:class:`Field` s. :func:`read_section` refuses unknown keys (with the closest known one), wrong types and
out-of-range values in a :class:`~engine.errors.ConfigError` that names the file, the section or rule,
the key, what was given and how to write it.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..errors import ConfigError

MISSING = object()


class Invalid(ValueError):
    """A value that a :class:`Field` refuses; the message says what the value must be."""


@dataclass(frozen=True)
class Field:
    """One key: how to check and convert its value, its default, and an example for the fix line."""

    check: Callable[[Any], Any]
    default: Any = MISSING
    example: str = ""


def _number(value: Any, what: str = "a number", low: float = -math.inf, low_ok: bool = True,
            high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not (value >= low if low_ok else value > low) or value > high:
        raise Invalid(f"{what}, got {value!r}")
    return float(value)


def seconds(value: Any) -> float:
    return _number(value, "a number of seconds >= 0", 0.0)


def positive_seconds(value: Any) -> float:
    return _number(value, "a number of seconds > 0", 0.0, low_ok=False)


def non_negative(value: Any) -> float:
    return _number(value, "a number >= 0", 0.0)


def quality(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
        raise Invalid(f"a whole number from 1 to 100, got {value!r}")
    return value


def fraction(value: Any) -> float:
    return _number(value, "a number from 0 to 1", 0.0, high=1.0)


def positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise Invalid(f"a whole number >= 1, got {value!r}")
    return value


def text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"a non-empty string, got {value!r}")
    return value.strip()


def flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"true or false, got {value!r}")
    return value


def names(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) and v.strip() for v in items):
        raise Invalid(f"a list of names such as [accident], got {value!r}")
    return tuple(v.strip() for v in items)


def choice(*options: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in options:
            raise Invalid(f"one of {', '.join(options)}, got {value!r}")
        return value
    return check


def points(value: Any) -> tuple[tuple[float, float], ...]:
    """A list of ``[x, y]`` pairs (numbers >= 0)."""
    if not isinstance(value, list) or not all(isinstance(p, list) and len(p) == 2 for p in value):
        raise Invalid(f"a list of [x, y] points such as [[0.1, 0.5], [0.9, 0.5], [0.5, 1.0]], got {value!r}")
    what = "a list of [x, y] points with numbers x, y >= 0 (fractions 0-1 of the frame, or pixels)"
    return tuple((_number(x, what, 0.0), _number(y, what, 0.0)) for x, y in value)


def read_section(data: Any, fields: Mapping[str, Field], where: str, path: str) -> dict[str, Any]:
    """Check ``data`` (a mapping from YAML) against ``fields``; every key of ``fields`` is in the result.

    Args:
        where: the section for messages (``rule 'accident-alert'``, ``section 'mqtt'``).
        path: the file for messages.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: {where} must be a mapping of keys to values, got {data!r}",
                          f"write {where} as 'key: value' lines ({', '.join(fields)})")
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(f"{path}: {where}: unknown key '{key}'",
                              f"{hint}the keys of {where.split(' ')[0]} are: {', '.join(fields)}")
    out: dict[str, Any] = {}
    for key, spec in fields.items():
        if key not in data or data[key] is None:
            if spec.default is MISSING:
                raise ConfigError(f"{path}: {where}: '{key}' is missing",
                                  f"add it, e.g. {key}: {spec.example}" if spec.example else f"add '{key}'")
            out[key] = spec.default
            continue
        try:
            out[key] = spec.check(data[key])
        except Invalid as e:
            example = f", e.g. {key}: {spec.example}" if spec.example else ""
            raise ConfigError(f"{path}: {where}: {key} must be {e}", f"fix the value of '{key}'{example}") from None
    return out
