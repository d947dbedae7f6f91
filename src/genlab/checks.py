"""Argument checks in one place, with one message style: ``<name> must be <rule>, got <value>``.

Every model, network and entry point validates its settings through these, so a wrong override
always reads the same way and names the key to fix (e.g. ``model.latent_dim``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from genlab.errors import ConfigError


def require(ok: bool, name: str, rule: str, value: Any) -> None:
    """Raise ``ConfigError("<name> must be <rule>, got <value>")`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{name} must be {rule}, got {value!r}")


def positive_int(name: str, value: Any) -> int:
    """``value`` if it is a positive integer (not a bool).

    Raises:
        ConfigError: naming ``name``, with an example override.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r} (e.g. {name}=16)")
    return value


def bounded_int(name: str, value: Any, limit: int, what: str, strict: bool = False) -> int:
    """``value`` if it is a positive integer ``<= limit`` (``< limit`` when ``strict``).

    Raises:
        ConfigError: naming ``name``, ``limit`` and ``what`` the limit counts (e.g. "features").
    """
    positive_int(name, value)
    if value > limit or (strict and value == limit):
        bound = f"< {limit}" if strict else f"<= {limit}"
        raise ConfigError(f"{name}={value} is too large: it must be {bound}, the number of {what}")
    return value


def positive(name: str, value: Any) -> float:
    """``float(value)`` if it is a number ``> 0``. Raises: ConfigError."""
    require(_is_number(value) and value > 0, name, "positive", value)
    return float(value)


def non_negative(name: str, value: Any) -> float:
    """``float(value)`` if it is a number ``>= 0``. Raises: ConfigError."""
    require(_is_number(value) and value >= 0, name, ">= 0", value)
    return float(value)


def one_of(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices``.

    Raises:
        ConfigError: ``unknown <name>=<value>; choose one of (...)``.
    """
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"unknown {name}={value!r}; choose one of {choices}")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value  # NaN fails
