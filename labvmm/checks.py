"""Argument checks shared by the API: one helper per rule, each raising a ConfigError that names the value.

`isinstance(True, int)` holds in Python, so every integer check refuses bools explicitly:
`size=True` is a mistake, never a size of 1.
"""

from __future__ import annotations

from .errors import ConfigError


def positive_int(name: str, value, upper: int | None = None) -> int:
    """Return `value` if it is an int > 0 (not a bool) and at most `upper`; else raise ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if upper is not None and value > upper:
        raise ConfigError(f"{name} must be at most {upper}, got {value}")
    return value


def non_negative_int(name: str, value, upper: int | None = None) -> int:
    """Return `value` if it is an int >= 0 (not a bool) and at most `upper`; else raise ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")
    if upper is not None and value > upper:
        raise ConfigError(f"{name} must be at most {upper}, got {value}")
    return value


def int_in_range(name: str, value, lower: int, upper: int) -> int:
    """Return `value` if it is an int (not a bool) in [lower, upper]; else raise ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int) or not lower <= value <= upper:
        raise ConfigError(f"{name} must be an integer from {lower} to {upper}, got {value!r}")
    return value


def short_name(what: str, value, max_chars: int = 64) -> str:
    """Return `value` if it is a string of 1..max_chars printable characters; else raise ConfigError."""
    if not isinstance(value, str) or not 1 <= len(value) <= max_chars or not value.isprintable():
        raise ConfigError(f"{what} must be 1-{max_chars} printable characters, got {value!r}")
    return value
