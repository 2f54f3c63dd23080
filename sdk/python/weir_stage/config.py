"""The stage's own config table, read from the host.

The host config gives each stage of a pipeline a table::

    [[routes.stages]]
    name = "prompt-guard"
    path = "prompt_guard.wasm"
    config = { max_chars = 8000, deny = ["ignore previous"], strict = true }

The host renders every value as a string: strings as they are, everything else as JSON. So
:func:`get` returns ``"8000"`` for ``max_chars``; the typed readers parse it and raise
:class:`ConfigError` (naming the key) when the value does not parse. An exception that escapes a
phase fails the stage with its message, so there is no need to catch it.

.. code-block:: python

    max_chars = weir.config.get_int("max_chars", 8000)
    deny = weir.config.get_json("deny", [])
    strict = weir.config.get_bool("strict", False)
    greeting = weir.config.get("greeting", "Be brief.")
"""

from __future__ import annotations

import json
from typing import Any, Optional, TypeVar

from wit_world.imports import host

__all__ = ["ConfigError", "get", "get_int", "get_float", "get_bool", "get_json"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value that is set but does not parse as the stage expects."""

    def __init__(self, key: str, expected: str, value: str, reason: str = "") -> None:
        self.key = key
        self.expected = expected
        self.value = value
        self.reason = reason
        detail = f" ({reason})" if reason else ""
        super().__init__(f"stage config `{key}`: expected {expected}, got `{value}`{detail}")


def get(key: str, default: Optional[str] = None) -> Optional[str]:
    """The raw value of ``key`` as the host renders it, or ``default`` when it is not set."""
    value = host.config_get(key)
    return default if value is None else value


def get_int(key: str, default: Optional[int] = None) -> Optional[int]:
    """``key`` as an integer, or ``default`` when unset; :class:`ConfigError` when not one."""
    raw = host.config_get(key)
    if raw is None:
        return default
    try:
        return int(raw.strip())
    except ValueError as err:
        raise ConfigError(key, "an integer", raw, str(err)) from None


def get_float(key: str, default: Optional[float] = None) -> Optional[float]:
    """``key`` as a number, or ``default`` when unset; :class:`ConfigError` when not one."""
    raw = host.config_get(key)
    if raw is None:
        return default
    try:
        return float(raw.strip())
    except ValueError as err:
        raise ConfigError(key, "a number", raw, str(err)) from None


def get_bool(key: str, default: Optional[bool] = None) -> Optional[bool]:
    """``key`` as a boolean (``true`` / ``false``, in any case), or ``default`` when unset;
    :class:`ConfigError` otherwise."""
    raw = host.config_get(key)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    raise ConfigError(key, "true or false", raw)


def get_json(key: str, default: Any = None) -> Any:
    """``key`` parsed as JSON (lists, tables, numbers, ...), or ``default`` when unset.

    A bare string that is not valid JSON reads as itself, so ``greeting = "hi"`` gives
    ``"hi"`` either way.
    """
    raw = host.config_get(key)
    if raw is None:
        return default
    try:
        return json.loads(raw)
    except ValueError:
        return raw
